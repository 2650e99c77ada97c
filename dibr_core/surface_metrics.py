"""Surface metrics of a mesh against a target mesh, in the same frame: area sampling, nearest
distances, the symmetric Chamfer distance in percent of the target's bounding-box diagonal and
the mean dihedral angle (the roughness measure). Used by the reconstruction benchmark
(:mod:`dibr_core.eval.fit`), the 3D metrics (:mod:`dibr_core.eval.metrics3d`) and the Blender
main job's held-out judgement."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from dibr_core.mesh import edge_face_adjacency, face_normals

__all__ = ["sample_surface", "nearest_points", "nearest_distances", "chamfer_percent", "mean_dihedral_angle"]


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n: int,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(n, 3) points sampled uniformly by area: face ~ area, then
    ``(1 - sqrt(r1)) a + sqrt(r1) (1 - r2) b + sqrt(r1) r2 c``.

    Args:
        vertices: (V, 3) float tensor; faces: (F, 3) int tensor; generator: torch RNG (CPU).
    """
    v = torch.as_tensor(vertices)
    f = torch.as_tensor(faces).long()
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = 0.5 * torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    if not bool(area.sum() > 0):
        raise ValueError("sample_surface(): the mesh has zero area")
    fi = torch.multinomial(area.double().cpu(), n, replacement=True, generator=generator).to(v.device)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64).to(device=v.device, dtype=v.dtype)
    s1, r2 = r[:, :1].sqrt(), r[:, 1:]
    return (1 - s1) * a[fi] + s1 * (1 - r2) * b[fi] + s1 * r2 * c[fi]


def nearest_points(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> Tuple[torch.Tensor, torch.Tensor]:
    """((N,) Euclidean distance, (N,) int64 index) of the nearest point of dst (M, 3) to each of
    src (N, 3) (the first one on ties), ``chunk`` rows of src at a time."""
    dist, index = [], []
    for s in range(0, src.shape[0], chunk):
        m = torch.cdist(src[s:s + chunk][None], dst[None], compute_mode="donot_use_mm_for_euclid_dist")[0].min(dim=1)
        dist.append(m.values)
        index.append(m.indices)
    return torch.cat(dist), torch.cat(index)


def nearest_distances(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(N,) Euclidean distance from each of src (N, 3) to its nearest point of dst (M, 3)."""
    return nearest_points(src, dst, chunk)[0]


def mean_dihedral_angle(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Mean angle in radians between the unit normals of the two faces of every interior edge.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int (manifold).
    """
    _, adj = edge_face_adjacency(faces)
    n = face_normals(vertices.double()[None], faces, unit=True)[0]
    cos = (n[adj[:, 0]] * n[adj[:, 1]]).sum(-1).clamp(-1.0, 1.0)
    return float(torch.acos(cos).mean())


def chamfer_percent(pred_v: torch.Tensor, pred_f: torch.Tensor, gt_v: torch.Tensor, gt_f: torch.Tensor,
                    points: int = 5000, seed: int = 0) -> float:
    """Symmetric Chamfer distance in percent of the target's bounding-box diagonal."""
    g = torch.Generator().manual_seed(seed)
    p = sample_surface(pred_v.double(), pred_f, points, generator=g)
    q = sample_surface(gt_v.double(), gt_f, points, generator=g)
    diag = float((gt_v.max(0).values - gt_v.min(0).values).norm())
    d = (nearest_distances(p, q).mean() + nearest_distances(q, p).mean()) / 2
    return 100.0 * float(d) / diag
