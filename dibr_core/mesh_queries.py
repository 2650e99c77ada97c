"""Geometric queries on one closed triangle mesh: generalised winding numbers, inside-out
(inverted) faces, intersecting face pairs and ray distances.

Each query has C++ kernels (``dibr_core/csrc/mesh_cpu.cpp``, float64 on the CPU, no CUDA kernel)
and a torch twin in :mod:`dibr_core.reference.mesh_queries`; ``backend="auto"`` runs the kernels
when the extension is built, ``"cpu"`` demands them and ``"reference"`` runs the twin. Inputs may
live on any device; the queries compute on float64 CPU copies. The repair of inside-out pockets
(:mod:`dibr_core.mesh_repair`) and the generator's validity metric
(:mod:`dibr_core.eval.gen_metrics`) both use these.

* A face is *inverted* when the point just in front of it (its centroid moved by ``eps`` times
  the mesh's bounding-box diagonal along its unit normal) has a generalised winding number
  below -0.5, i.e. the face's front side lies in an inside-out region of the surface. A closed,
  consistently oriented surface without self-intersections has winding numbers in {0, 1} only;
  unions of outward-oriented closed parts (the procedural data) never go below 0.
"""
from __future__ import annotations

from typing import Tuple

import torch

from dibr_core.backend import extension, resolve_cpu_op
from dibr_core.reference.mesh_queries import (intersecting_face_pairs_reference, ray_distances_reference,
                                              winding_numbers_reference)

__all__ = ["FRONT_EPS", "winding_numbers", "front_points", "inverted_faces", "intersecting_face_pairs",
           "self_intersecting_faces",
           "ray_distances"]

FRONT_EPS = 1e-4          # front-point offset, times the bounding-box diagonal


def check_mesh(fn: str, vertices: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(V, 3) vertices and (F, 3) faces with indices in range -> float64 and int64 CPU copies
    (no copy when they are already), else ValueError naming ``fn``."""
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{fn}(): vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{fn}(): faces must have shape (F, 3), got {tuple(faces.shape)}")
    f = faces.detach().long().cpu()
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= vertices.shape[0]):
        raise ValueError(f"{fn}(): faces index outside [0, {vertices.shape[0]})")
    return vertices.detach().double().cpu(), f


def winding_numbers(vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor,
                    chunk: int = 256, backend: str = "auto") -> torch.Tensor:
    """Generalised winding numbers of a triangle mesh at query points (van Oosterom-Strackee
    solid angles summed over the faces, divided by 4 pi).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int, counter-clockwise seen from outside;
        points: (P, 3) float.
        chunk: query points per block of the reference path.
        backend: ``"auto"`` (the C++ kernel when the extension is built), ``"cpu"`` or
            ``"reference"`` (the torch twin); there is no CUDA kernel, the C++ kernel computes
            on CPU copies.

    Returns:
        (P,) float64 (on the CPU with the C++ kernel): about 1 inside and 0 outside a closed
        outward-oriented surface.
    """
    fn = "winding_numbers"
    if vertices.dim() != 2 or vertices.shape[1] != 3 or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"{fn}(): vertices and points must have shape (N, 3), got {tuple(vertices.shape)} "
                         f"and {tuple(points.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{fn}(): faces must have shape (F, 3), got {tuple(faces.shape)}")
    v = vertices.detach().double()
    q = points.detach().double()
    if resolve_cpu_op(fn, backend) == "cpu":
        mod = extension()
        assert mod is not None
        return mod.winding_numbers(v.cpu().contiguous(), faces.detach().long().cpu().contiguous(), q.cpu().contiguous())
    return winding_numbers_reference(v, faces, q, chunk)


def front_points(vertices: torch.Tensor, faces: torch.Tensor,
                 eps: float = FRONT_EPS) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each face's centroid moved ``eps`` times the bounding-box diagonal along its unit normal.

    Args:
        vertices: (V, 3) float64; faces: (F, 3) int64 (unchecked).
    Returns:
        ``(points, length)``: (F, 3) front points and (F,) twice the face areas (degenerate
        faces, length about 0, keep their centroid).
    """
    tri = vertices[faces]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    length = n.norm(dim=-1)
    diag = float((vertices.max(dim=0).values - vertices.min(dim=0).values).norm())
    unit = n / length.clamp_min(1e-300)[:, None]
    return tri.mean(dim=1) + eps * max(diag, 1e-12) * unit, length


def inverted_faces(vertices: torch.Tensor, faces: torch.Tensor, eps: float = FRONT_EPS,
                   backend: str = "auto") -> torch.Tensor:
    """(F,) bool: faces whose front side lies in an inside-out region (winding number < -0.5 at
    the centroid moved ``eps`` x bbox diagonal along the normal), one query per face (the
    judge of validity; :func:`dibr_core.mesh_repair.inverted_faces_fast` is the fast twin).
    Degenerate faces are not counted as inverted. ``backend`` as :func:`winding_numbers`."""
    v = vertices.detach().double()
    front, length = front_points(v, faces.long(), eps)
    ok = length > 1e-12
    w = winding_numbers(v, faces, front, backend=backend).to(ok.device)
    return ok & (w < -0.5)


def intersecting_face_pairs(vertices: torch.Tensor, faces: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Pairs of faces that intersect other than at a shared corner (faces sharing an edge are
    not tested: on a closed surface they only touch along it).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
        backend: ``"auto"``, ``"cpu"`` (the C++ kernel: a sweep along the longest axis) or
            ``"reference"`` (torch: a uniform grid); both give the same pairs.

    Returns:
        (P, 2) int64 face indices ``(i, j)`` with ``i < j``, sorted by ``i`` then ``j``.
    """
    fn = "intersecting_face_pairs"
    v, f = check_mesh(fn, vertices, faces)
    if resolve_cpu_op(fn, backend) == "cpu":
        mod = extension()
        assert mod is not None
        pairs: torch.Tensor = mod.intersecting_face_pairs(v.contiguous(), f.contiguous())
        return pairs
    return intersecting_face_pairs_reference(v, f)


def self_intersecting_faces(vertices: torch.Tensor, faces: torch.Tensor, backend: str = "auto") -> int:
    """Number of faces that intersect another face other than at a shared corner or edge (the
    faces of :func:`intersecting_face_pairs`, each counted once).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
    """
    pairs = intersecting_face_pairs(vertices, faces, backend=backend)
    return int(torch.unique(pairs.reshape(-1)).numel())


def ray_distances(vertices: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                  skip_vertex: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Distance along each ray to the nearest face it hits in front of its origin.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
        origins, dirs: (R, 3) ray origins and unit directions.
        skip_vertex: (R,) int, a vertex whose faces the ray ignores (its own), or -1.
        backend: ``"auto"``, ``"cpu"`` (C++ kernel) or ``"reference"`` (torch).

    Returns:
        (R,) float64 on the CPU, ``inf`` where the ray hits nothing.
    """
    fn = "ray_distances"
    v, f = check_mesh(fn, vertices, faces)
    r = origins.shape[0]
    if origins.shape != (r, 3) or dirs.shape != (r, 3) or skip_vertex.shape != (r,):
        raise ValueError(f"{fn}(): origins and dirs must have shape (R, 3) and skip_vertex (R,), got "
                         f"{tuple(origins.shape)}, {tuple(dirs.shape)} and {tuple(skip_vertex.shape)}")
    o = origins.detach().double().cpu()
    d = dirs.detach().double().cpu()
    skip = skip_vertex.detach().long().cpu()
    if resolve_cpu_op(fn, backend) == "cpu":
        mod = extension()
        assert mod is not None
        out: torch.Tensor = mod.ray_distances(v.contiguous(), f.contiguous(), o.contiguous(), d.contiguous(),
                                              skip.contiguous())
        return out
    return ray_distances_reference(v, f, o, d, skip)
