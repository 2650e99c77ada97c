"""3D metrics for single-image reconstruction: voxel IoU, Chamfer distance and F-score.

Conventions (docs/data-and-models.md section 4, dibr-algorithm.md section 8):

* Voxel grids are ``(res, res, res)`` bool over the cube [-0.5, 0.5]^3, indexed ``[ix, iy, iz]``
  (voxel ``i`` along an axis has its centre at ``(i + 0.5) / res - 0.5``). Prediction and ground
  truth must be given in the same object frame; nothing is re-centred here.
* Point metrics use **Euclidean** (not squared) nearest-neighbour distances. Both point sets must
  be expressed in the same frame, normalised so the *reference* (ground-truth) bounding box has
  diagonal 1 (:func:`normalize_unit_diagonal`); the thresholds ``tau`` are then fractions of the
  reference diagonal (tau = 0.01 and 0.02 by default).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _np(x: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Voxelisation
# ----------------------------------------------------------------------------------------------

def mark_surface_voxels(vertices: ArrayLike, faces: ArrayLike, res: int = 32) -> np.ndarray:
    """(res, res, res) bool: voxels of [-0.5, 0.5]^3 that the triangles pass through.

    Each triangle is covered by a barycentric lattice whose spacing along every edge is at most
    half a voxel (so no voxel crossed by more than a sliver of the triangle is missed); the voxels
    holding a lattice point are marked. This reproduces binvox's conservative surface marking
    closely (not exactly: a triangle that only clips a voxel corner can be missed). Points outside
    the cube are ignored.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
    """
    v = _np(vertices)
    f = _np(faces, np.int64)
    occ = np.zeros((res, res, res), dtype=bool)
    if f.shape[0] == 0:
        return occ
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    longest = np.maximum(np.maximum(np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1)),
                         np.linalg.norm(a - c, axis=1))
    steps = np.maximum(1, np.ceil(longest * res * 2.0)).astype(np.int64)   # spacing <= voxel / 2
    for m in np.unique(steps):
        sel = steps == m
        i, j = np.meshgrid(np.arange(m + 1), np.arange(m + 1), indexing="ij")
        keep = (i + j) <= m
        wb, wc = (i[keep] / m)[None, :, None], (j[keep] / m)[None, :, None]       # (1, K, 1)
        pts = a[sel][:, None] * (1 - wb - wc) + b[sel][:, None] * wb + c[sel][:, None] * wc  # (Fm, K, 3)
        idx = np.floor((pts.reshape(-1, 3) + 0.5) * res).astype(np.int64)
        ok = ((idx >= 0) & (idx < res)).all(axis=1)
        idx = idx[ok]
        occ[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return occ


def winding_numbers_z(vertices: ArrayLike, faces: ArrayLike, res: int = 32) -> np.ndarray:
    """(res, res, res) int: winding number of the mesh around each voxel centre.

    Computed by casting a ray from every voxel centre towards +Z and summing the signed crossings
    (+1 where the ray leaves through a face whose outward normal has n_z > 0, -1 where it enters).
    For a closed, outward-oriented mesh this is the exact winding number: 1 inside, 0 outside,
    and for a union of overlapping closed parts the number of parts containing the centre. The
    ray columns are offset by ~1e-7 (irrational multiples) so that rays do not hit edges or
    vertices of axis-aligned geometry exactly. Vectorised over (face, column) pairs.
    """
    v = _np(vertices)
    f = _np(faces, np.int64)
    wind = np.zeros((res, res, res + 1), dtype=np.int64)
    if f.shape[0] == 0:
        return wind[..., :res]
    c = (np.arange(res) + 0.5) / res - 0.5
    cx = c + 1.0e-7 * np.sqrt(2.0)
    cy = c + 1.0e-7 * np.sqrt(3.0)
    a, b, d = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    nz = (b[:, 0] - a[:, 0]) * (d[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (d[:, 0] - a[:, 0])   # 2x signed xy area
    fsel = np.abs(nz) > 1e-15
    a, b, d, nz = a[fsel], b[fsel], d[fsel], nz[fsel]
    # Column index ranges of each face's xy bounding box.
    lo = np.minimum(np.minimum(a, b), d)
    hi = np.maximum(np.maximum(a, b), d)
    i0 = np.clip(np.ceil((lo[:, 0] + 0.5) * res - 0.5 - 1e-6), 0, res).astype(np.int64)
    i1 = np.clip(np.floor((hi[:, 0] + 0.5) * res - 0.5 + 1e-6), -1, res - 1).astype(np.int64)
    j0 = np.clip(np.ceil((lo[:, 1] + 0.5) * res - 0.5 - 1e-6), 0, res).astype(np.int64)
    j1 = np.clip(np.floor((hi[:, 1] + 0.5) * res - 0.5 + 1e-6), -1, res - 1).astype(np.int64)
    ni, nj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    count = ni * nj
    fid = np.repeat(np.arange(count.shape[0]), count)                       # (P,) one per pair
    if fid.shape[0] == 0:
        return wind[..., :res]
    start = np.cumsum(count) - count
    local = np.arange(fid.shape[0]) - start[fid]
    ci = i0[fid] + local // nj[fid]
    cj = j0[fid] + local % nj[fid]
    px, py = cx[ci], cy[cj]
    A, B, D = a[fid], b[fid], d[fid]
    # Barycentric coordinates of the column (px, py) in the projected triangle.
    w_b = ((px - A[:, 0]) * (D[:, 1] - A[:, 1]) - (py - A[:, 1]) * (D[:, 0] - A[:, 0])) / nz[fid]
    w_d = ((B[:, 0] - A[:, 0]) * (py - A[:, 1]) - (B[:, 1] - A[:, 1]) * (px - A[:, 0])) / nz[fid]
    w_a = 1.0 - w_b - w_d
    hit = (w_a >= 0) & (w_b >= 0) & (w_d >= 0)
    z = w_a * A[:, 2] + w_b * B[:, 2] + w_d * D[:, 2]
    sign = np.where(nz[fid] > 0, 1, -1)
    # Voxels k with centre z_k < z_hit see the crossing: k < k0 = #centres below z_hit.
    k0 = np.clip(np.ceil((z + 0.5) * res - 0.5), 0, res).astype(np.int64)
    np.add.at(wind, (ci[hit], cj[hit], k0[hit]), sign[hit])
    # winding[k] = sum over crossings with k0 > k: suffix sum of the difference array.
    suffix = np.cumsum(wind[..., ::-1], axis=-1)[..., ::-1]
    return suffix[..., 1:]


def voxelize_mesh(vertices: ArrayLike, faces: ArrayLike, res: int = 32, mark_surface: bool = True) -> np.ndarray:
    """(res, res, res) bool occupancy of a closed mesh over [-0.5, 0.5]^3, indexed [ix, iy, iz].

    Choice: a voxel is occupied if the mesh's winding number at its centre is >= 1
    (:func:`winding_numbers_z`; exact for closed outward-oriented meshes, including unions of
    overlapping closed parts, where parity would fail), OR, when ``mark_surface`` (default), if the
    surface passes through it (:func:`mark_surface_voxels`, binvox-like conservatism for parts
    thinner than a voxel). The procedural ground truth (:func:`dibr_core.data.shapes.occupancy`)
    uses the same surface marking.

    Args:
        vertices: (V, 3) in the object frame (same frame as the ground truth); faces: (F, 3)
            counter-clockwise seen from outside.
    """
    occ = winding_numbers_z(vertices, faces, res) >= 1
    if mark_surface:
        occ |= mark_surface_voxels(vertices, faces, res)
    return occ


def iou_3d(a: ArrayLike, b: ArrayLike) -> float:
    """``|a and b| / (|a or b| + 1e-8)`` of two bool grids of the same shape."""
    x, y = _np(a, np.bool_), _np(b, np.bool_)
    if x.shape != y.shape:
        raise ValueError(f"iou_3d(): grids must have the same shape, got {x.shape} and {y.shape}")
    return float(np.logical_and(x, y).sum() / (np.logical_or(x, y).sum() + 1e-8))


# ----------------------------------------------------------------------------------------------
# Points
# ----------------------------------------------------------------------------------------------

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


def normalize_unit_diagonal(points_or_vertices: torch.Tensor,
                            reference_bbox: Tuple[torch.Tensor, torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """Map (..., 3) points with the frame that sends ``reference_bbox`` to a unit-diagonal box
    centred at 0: ``(p - centre) / |max - min|``.

    Args:
        points_or_vertices: (..., 3).
        reference_bbox: ``(min (3,), max (3,))``, or a (N, 3) point set whose bbox is used.
            Pass the *ground truth's* bbox for both prediction and GT so they share one frame.
    """
    p = torch.as_tensor(points_or_vertices)
    if isinstance(reference_bbox, torch.Tensor):
        lo, hi = reference_bbox.min(dim=0).values, reference_bbox.max(dim=0).values
    else:
        lo, hi = torch.as_tensor(reference_bbox[0]), torch.as_tensor(reference_bbox[1])
    lo, hi = lo.to(p), hi.to(p)
    diag = (hi - lo).norm()
    if not bool(diag > 0):
        raise ValueError("normalize_unit_diagonal(): the reference bounding box is degenerate")
    return (p - (lo + hi) / 2) / diag


def nearest_distances(src: torch.Tensor, dst: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(N,) Euclidean distance from each of src (N, 3) to its nearest point of dst (M, 3)."""
    out = []
    for s in range(0, src.shape[0], chunk):
        out.append(torch.cdist(src[s:s + chunk][None], dst[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
                   .min(dim=1).values)
    return torch.cat(out)


def chamfer_and_fscore(pred_pts: torch.Tensor, gt_pts: torch.Tensor,
                       thresholds: Sequence[float] = (0.01, 0.02)) -> Dict[str, float]:
    """Chamfer distance and F-scores between two point sets in the same normalised frame.

    ``d1`` = pred -> GT nearest distances, ``d2`` = GT -> pred (Euclidean, not squared).
    ``chamfer = (mean d1 + mean d2) / 2``; for each tau, ``precision = mean(d1 <= tau)``,
    ``recall = mean(d2 <= tau)``, ``F = 2PR / (P + R + 1e-8)``.

    Args:
        pred_pts: (N, 3); gt_pts: (M, 3), e.g. 2,500 area samples each.
    Returns:
        ``{"chamfer": ..., "precision@tau": ..., "recall@tau": ..., "fscore@tau": ...}`` with tau
        formatted with ``:g`` (e.g. ``"fscore@0.01"``).
    """
    p = torch.as_tensor(pred_pts).double()
    g = torch.as_tensor(gt_pts).double()
    if p.dim() != 2 or p.shape[-1] != 3 or g.dim() != 2 or g.shape[-1] != 3 or p.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError(f"chamfer_and_fscore(): need (N, 3) and (M, 3) point sets, got {tuple(p.shape)} and "
                         f"{tuple(g.shape)}")
    d1, d2 = nearest_distances(p, g), nearest_distances(g, p)
    out = {"chamfer": float((d1.mean() + d2.mean()) / 2)}
    for tau in thresholds:
        P = float((d1 <= tau).double().mean())
        R = float((d2 <= tau).double().mean())
        out[f"precision@{tau:g}"] = P
        out[f"recall@{tau:g}"] = R
        out[f"fscore@{tau:g}"] = 2 * P * R / (P + R + 1e-8)
    return out
