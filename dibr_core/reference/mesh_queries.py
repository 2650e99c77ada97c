"""Torch twins of the C++ mesh queries (``dibr_core/csrc/mesh_cpu.cpp``): generalised winding
numbers, intersecting face pairs and ray distances.

They are the oracle of the tests and the fallback when the extension is not built;
:mod:`dibr_core.mesh_queries` checks the arguments and picks the backend, these functions take
checked float64 CPU tensors. They return the same values as the kernels (the face pairs exactly,
the distances to rounding), but search differently: the pairs come from a uniform grid here and a
sweep in C++.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch

__all__ = ["winding_numbers_reference", "intersecting_face_pairs_reference", "ray_distances_reference"]


def winding_numbers_reference(v: torch.Tensor, faces: torch.Tensor, q: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """(V, 3) float64 vertices, (F, 3) faces, (P, 3) float64 points -> (P,) float64 winding numbers
    (van Oosterom-Strackee solid angles summed over the faces, divided by 4 pi), ``chunk`` points
    per block."""
    tri = v[faces.long()]                                       # (F, 3, 3)
    out = []
    for s in range(0, q.shape[0], chunk):
        d = tri[None] - q[s:s + chunk, None, None, :]           # (p, F, 3, 3)
        a, b, c = d[:, :, 0], d[:, :, 1], d[:, :, 2]
        la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
        det = (a * torch.cross(b, c, dim=-1)).sum(-1)
        den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
        out.append((2.0 * torch.atan2(det, den)).sum(dim=1) / (4.0 * math.pi))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def _segments_hit_triangles(p0: torch.Tensor, p1: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """(N, 3) segment ends, (N, 3, 3) triangles -> (N,) bool: the closed segment crosses the
    triangle's interior (Moller-Trumbore with the parameter in [0, 1]; parallel -> False)."""
    d = p1 - p0
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = torch.cross(d, e2, dim=-1)
    det = (e1 * p).sum(-1)
    scale = e1.norm(dim=-1) * e2.norm(dim=-1) * d.norm(dim=-1)
    ok = det.abs() > 1e-12 * scale.clamp_min(1e-300)
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    s = p0 - tri[:, 0]
    u = (s * p).sum(-1) * inv
    q = torch.cross(s, e1, dim=-1)
    v = (d * q).sum(-1) * inv
    t = (e2 * q).sum(-1) * inv
    return ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t >= 0) & (t <= 1)


def _pairs_within_groups(n: int, count: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """For sorted entries where entry ``k`` is followed by ``count[k]`` entries of its group:
    every (k, later entry) as two (P,) index tensors."""
    first = torch.repeat_interleave(torch.arange(n), count)
    offset = torch.arange(first.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return first, first + 1 + offset


def _box_pairs(lo: torch.Tensor, hi: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pairs ``i < j`` of overlapping boxes ((F, 3) corners) from a uniform grid: every box is
    entered in the cells it covers (cell side: twice the median box size, at least 1/8 of the
    largest, so no box covers more than 9 cells per axis), boxes sharing a cell are candidates,
    and candidates are kept when their boxes overlap."""
    n = lo.shape[0]
    ext = (hi - lo).max(dim=1).values
    h = max(2.0 * float(ext.median()), float(ext.max()) / 8.0, 1e-12)
    origin = lo.min(dim=0).values
    c0 = torch.floor((lo - origin) / h).long()
    span = torch.floor((hi - origin) / h).long() - c0 + 1                   # (F, 3) cells per axis
    count = span.prod(dim=1)
    face = torch.repeat_interleave(torch.arange(n), count)
    local = torch.arange(face.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    sx, sy = span[face, 0], span[face, 1]
    cell = c0[face] + torch.stack([local % sx, (local // sx) % sy, local // (sx * sy)], dim=1)
    dims = cell.max(dim=0).values + 1
    key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    key, order = torch.sort(key, stable=True)
    face = face[order]
    group_end = torch.searchsorted(key, key, right=True)
    first, second = _pairs_within_groups(key.numel(), group_end - torch.arange(key.numel()) - 1)
    a, b = face[first], face[second]
    i, j = torch.minimum(a, b), torch.maximum(a, b)
    overlap = ((lo[i] <= hi[j]) & (lo[j] <= hi[i])).all(dim=1)
    pair_key = torch.unique(i[overlap] * n + j[overlap])
    return pair_key // n, pair_key % n


def intersecting_face_pairs_reference(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(V, 3) float64 vertices, (F, 3) int64 faces -> (P, 2) int64 pairs ``i < j`` of faces that
    intersect other than at a shared corner, sorted (faces sharing an edge are not tested)."""
    tri = v[f]                                               # (F, 3, 3)
    lo, hi = tri.min(dim=1).values, tri.max(dim=1).values    # (F, 3)
    n = f.shape[0]
    if n < 2:
        return torch.zeros(0, 2, dtype=torch.long)
    i, j = _box_pairs(lo, hi)
    pairs = torch.stack([i, j], dim=1)
    if pairs.numel() == 0:
        return pairs
    fa, fb = f[pairs[:, 0]], f[pairs[:, 1]]
    same = fa[:, :, None] == fb[:, None, :]                  # (P, 3, 3) corner equalities
    n_shared = same.flatten(1).sum(dim=1)
    keep = n_shared <= 1                                     # edge neighbours only touch
    pairs, same, n_shared = pairs[keep], same[keep], n_shared[keep]
    if pairs.numel() == 0:
        return pairs
    # Plane test: faces with all corners of one (but a shared one) strictly on one side of the
    # other's plane cannot intersect beyond their shared corner.
    ta, tb = tri[pairs[:, 0]], tri[pairs[:, 1]]
    separated = torch.zeros(pairs.shape[0], dtype=torch.bool)
    for a, b, b_shared in ((ta, tb, same.any(dim=1)), (tb, ta, same.any(dim=2))):
        normal = torch.cross(a[:, 1] - a[:, 0], a[:, 2] - a[:, 0], dim=-1)
        side = ((b - a[:, :1]) * normal[:, None]).sum(-1)                   # (P, 3)
        separated |= ((side > 0) | b_shared).all(dim=1) | ((side < 0) | b_shared).all(dim=1)
    pairs, same, n_shared = pairs[~separated], same[~separated], n_shared[~separated]
    ta, tb = ta[~separated], tb[~separated]
    # Disjoint faces intersect when one of the six edges crosses the other face. Faces sharing
    # one corner s always touch at s; they intersect beyond it when the edge opposite s in
    # one face crosses the other face (their intersection is a segment from s to that edge).
    in_a, in_b = same.any(dim=2), same.any(dim=1)            # (P, 3) corner is shared
    hit = torch.zeros(pairs.shape[0], dtype=torch.bool)
    for a, b, shared in ((ta, tb, in_a), (tb, ta, in_b)):
        for k in range(3):
            k1 = (k + 1) % 3
            opposite_ok = ~(shared[:, k] | shared[:, k1])    # the edge avoids the shared corner
            crosses = _segments_hit_triangles(a[:, k], a[:, k1], b)
            hit |= crosses & (opposite_ok | (n_shared == 0))
    return pairs[hit]                                        # sorted, as _box_pairs gives them


def ray_distances_reference(v: torch.Tensor, f: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                            skip_vertex: torch.Tensor) -> torch.Tensor:
    """(R, 3) origins and unit directions, (R,) vertex whose faces each ray skips (-1: none) ->
    (R,) distance to the nearest face hit in front of the origin (inf where none)."""
    tri = v[f]
    exclude = (f[None] == skip_vertex[:, None, None]).any(dim=-1)          # (R, F)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]                  # (F, 3)
    p = torch.cross(dirs[:, None].expand(-1, tri.shape[0], -1), e2[None].expand(dirs.shape[0], -1, -1), dim=-1)
    det = (e1[None] * p).sum(-1)                                           # (R, F)
    ok = det.abs() > 1e-18
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    s = origins[:, None] - tri[None, :, 0]
    u = (s * p).sum(-1) * inv
    q = torch.cross(s, e1[None].expand_as(s), dim=-1)
    w = (dirs[:, None] * q).sum(-1) * inv
    t = (e2[None] * q).sum(-1) * inv
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0) & ~exclude
    return torch.where(hit, t, torch.full_like(t, math.inf)).min(dim=1).values
