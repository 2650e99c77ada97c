"""Repair of inside-out pockets in closed triangle meshes (the deformed-sphere decoder's defect).

A decoded sphere can fold where a thin part (a rifle barrel, a display panel) is thinner than
the decoder's accuracy: the two sheets of the part pass through each other, and the region
between them becomes inside-out (generalised winding number -1 instead of +1). Silhouettes
cannot see this, so 2D supervision never corrects it. This module finds such pockets quickly
and removes them while moving the surface as little as possible.

* :func:`intersecting_face_pairs`: pairs of faces that intersect other than at a shared corner
  (bounding boxes paired through a uniform grid, then edge-triangle segment tests).
* :func:`inverted_faces_fast`: the test of :func:`dibr_core.gen_metrics.inverted_faces` with
  a handful of winding-number queries instead of one per face. The front-side winding number
  can only change across an intersection curve, and such curves lie on intersecting faces; so
  the faces that intersect nothing fall into edge-connected components of constant front
  winding, each evaluated once (at its largest face), and the intersecting faces and the
  faces of sharp folds (neighbours turned more than 120 degrees) are evaluated one by one. It
  can differ from the brute-force test only where another sheet passes closer to a clean face
  than the front offset (1e-4 of the diagonal) without touching it; the tests and fuzz runs
  found no such case, and the eval keeps the brute-force test as the judge.
* :func:`untangle`: repeats until no face is inverted (or ``max_iters``): every vertex whose
  front side lies in a pocket is moved along its normal across the pocket, to where the opposite
  sheet was, plus a small margin (both sheets move, so they swap and the pocket turns into
  ordinary inside of the same thickness); vertices whose way across is long (not a thin fold)
  stay; a pocket where no vertex can move (a flipped sliver of faces, the tip of a crossed
  spike) is removed by Laplacian smoothing of its faces' vertices and their one-ring.

All functions take one mesh, (V, 3) vertices and (F, 3) faces of a closed surface, work in
float64 on the CPU and are deterministic. The mesh queries (winding numbers, intersecting
pairs, and the repair's rays) run in the C++ kernels of ``dibr_core/csrc/mesh_cpu.cpp`` when the
extension is built and in torch otherwise (``backend="reference"``); the tests
compare the two.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from dibr_core.backend import extension, resolve_cpu_op
from dibr_core.gen_metrics import winding_numbers
from dibr_core.mesh import edge_face_adjacency

__all__ = ["intersecting_face_pairs", "inverted_faces_fast", "untangle", "UntangleReport", "FRONT_EPS"]

FRONT_EPS = 1e-4          # front-point offset, times the bounding-box diagonal (as gen_metrics)


def _check(fn: str, vertices: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"{fn}(): vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"{fn}(): faces must have shape (F, 3), got {tuple(faces.shape)}")
    f = faces.detach().long().cpu()
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= vertices.shape[0]):
        raise ValueError(f"{fn}(): faces index outside [0, {vertices.shape[0]})")
    return vertices.detach().double().cpu(), f


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


def _intersecting_pairs(v: torch.Tensor, f: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "cpu":
        mod = extension()
        assert mod is not None
        pairs: torch.Tensor = mod.intersecting_face_pairs(v.contiguous(), f.contiguous())
        return pairs
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
    v, f = _check("intersecting_face_pairs", vertices, faces)
    return _intersecting_pairs(v, f, resolve_cpu_op("intersecting_face_pairs", backend))


def _components(n_faces: int, adjacency: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Connected components of the faces over edges whose two faces are both ``keep``:
    (F,) int64 labels (the smallest face index of the component)."""
    a, b = adjacency[:, 0], adjacency[:, 1]
    use = keep[a] & keep[b]
    a, b = a[use], b[use]
    label = torch.arange(n_faces)
    while True:
        m = torch.minimum(label[a], label[b])
        new = label.clone()
        new.scatter_reduce_(0, a, m, reduce="amin")
        new.scatter_reduce_(0, b, m, reduce="amin")
        new = new[new]                                       # pointer jumping
        if torch.equal(new, label):
            return label
        label = new


def _front_points(v: torch.Tensor, f: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    tri = v[f]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    length = n.norm(dim=-1)
    diag = float((v.max(dim=0).values - v.min(dim=0).values).norm())
    unit = n / length.clamp_min(1e-300)[:, None]
    return tri.mean(dim=1) + FRONT_EPS * max(diag, 1e-12) * unit, length


def _inverted_fast(v: torch.Tensor, f: torch.Tensor, adjacency: torch.Tensor, backend: str) -> torch.Tensor:
    n_faces = f.shape[0]
    front, length = _front_points(v, f)
    ok = length > 1e-12
    pairs = _intersecting_pairs(v, f, backend)
    dirty = torch.zeros(n_faces, dtype=torch.bool)
    dirty[pairs.reshape(-1)] = True
    dirty |= ~ok                      # a degenerate face cannot represent its component
    # Folds (neighbours turned more than 120 degrees against each other) can hide an
    # intersection between faces sharing an edge or let a front point cross the neighbour:
    # their faces are queried one by one too.
    unit = front.new_zeros(n_faces, 3)
    tri = v[f]
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    unit[ok] = normal[ok] / length[ok, None]
    a, b = adjacency[:, 0], adjacency[:, 1]
    fold = (unit[a] * unit[b]).sum(-1) < -0.5
    dirty[a[fold]] = True
    dirty[b[fold]] = True
    label = _components(n_faces, adjacency, ~dirty)
    # one query per clean component (at its largest face) plus one per dirty face
    best = torch.zeros(n_faces, dtype=length.dtype).scatter_reduce_(0, label, length, reduce="amax")
    idx = torch.arange(n_faces)
    is_best = (length == best[label]) & ~dirty
    rep = torch.full((n_faces,), n_faces, dtype=torch.long).scatter_reduce_(
        0, label[is_best], idx[is_best], reduce="amin")
    clean_reps = torch.unique(rep[label[~dirty]])
    queries = torch.cat([clean_reps, idx[dirty]])
    w = torch.zeros(n_faces, dtype=torch.float64)
    w[queries] = winding_numbers(v, f, front[queries], backend=backend)
    w_face = w.clone()
    w_face[~dirty] = w[rep[label[~dirty]]]
    return ok & (w_face < -0.5)


def inverted_faces_fast(vertices: torch.Tensor, faces: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """(F,) bool: faces whose front side lies in an inside-out region, as
    :func:`dibr_core.gen_metrics.inverted_faces` defines them, from one winding-number query per
    clean component and per intersecting face (see the module docstring).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int, a closed manifold surface.
        backend: ``"auto"``, ``"cpu"`` (C++ kernels) or ``"reference"`` (torch).
    """
    fn = "inverted_faces_fast"
    v, f = _check(fn, vertices, faces)
    _, adjacency = edge_face_adjacency(f)
    return _inverted_fast(v, f, adjacency, resolve_cpu_op(fn, backend))


def _vertex_normals(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    tri = v[f]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)   # area-weighted
    acc = torch.zeros_like(v)
    for k in range(3):
        acc.index_add_(0, f[:, k], n)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def _ray_distance(v: torch.Tensor, f: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                  skip_vertex: torch.Tensor, backend: str) -> torch.Tensor:
    """(R, 3) origins and unit directions, (R,) vertex whose faces each ray skips -> (R,)
    distance to the nearest face hit in front of the origin (inf where none)."""
    if backend == "cpu":
        mod = extension()
        assert mod is not None
        out: torch.Tensor = mod.ray_distances(v.contiguous(), f.contiguous(), origins.contiguous(),
                                              dirs.contiguous(), skip_vertex.contiguous())
        return out
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


@dataclass(frozen=True)
class UntangleReport:
    """What :func:`untangle` did: ``inverted_before`` / ``inverted_after`` faces, ``iterations``
    run, ``moved`` vertices and the largest move ``max_move`` (in the mesh's units)."""

    inverted_before: int
    inverted_after: int
    iterations: int
    moved: int
    max_move: float

    @property
    def valid(self) -> bool:
        return self.inverted_after == 0


def untangle(vertices: torch.Tensor, faces: torch.Tensor, max_iters: int = 10, margin: float = 0.05,
             max_step: float = 0.06, smooth_steps: int = 3,
             backend: str = "auto") -> Tuple[torch.Tensor, UntangleReport]:
    """Remove inside-out pockets from a closed surface (see the module docstring).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int, a closed manifold surface, outward-oriented.
        max_iters: passes of (detect, move) at most.
        margin: each pocket vertex moves ``(1 + margin)`` times its distance across the pocket.
        max_step: a pocket vertex whose way across is longer than ``max_step`` times the
            bounding-box diagonal does not move (it is not crossing a thin fold).
        smooth_steps: Laplacian steps for a pocket that holds no vertex.
        backend: mesh queries by the C++ kernels (``"auto"`` when built, or ``"cpu"``) or by
            the torch ``"reference"`` path; both give the same decisions.

    Returns:
        ``(vertices, report)``: (V, 3) repaired vertices in the input's dtype and device (the
        input itself when nothing was inverted; otherwise a new tensor without gradient: the
        repair is a discrete edit, not a differentiable op), and an :class:`UntangleReport`.
    """
    fn = "untangle"
    if max_iters < 0 or margin < 0 or max_step <= 0 or smooth_steps < 1:
        raise ValueError(f"{fn}(): need max_iters >= 0, margin >= 0, max_step > 0, smooth_steps >= 1, "
                         f"got {max_iters}, {margin}, {max_step}, {smooth_steps}")
    v0, f = _check(fn, vertices, faces)
    use = resolve_cpu_op(fn, backend)
    _, adjacency = edge_face_adjacency(f)
    v = v0.clone()
    n_verts = v.shape[0]
    inv = _inverted_fast(v, f, adjacency, use)
    before = int(inv.sum())
    it = 0
    while bool(inv.any()) and it < max_iters:
        it += 1
        normals = _vertex_normals(v, f)
        cand = torch.unique(f[inv].reshape(-1))
        diag = float((v.max(dim=0).values - v.min(dim=0).values).norm())
        w = winding_numbers(v, f, v[cand] + FRONT_EPS * max(diag, 1e-12) * normals[cand], backend=use)
        pocket = cand[w < -0.5]
        if pocket.numel():
            t = _ray_distance(v, f, v[pocket], normals[pocket], pocket, use)
            # A far hit is not the opposite sheet of a thin fold (the tip of a crossed spike
            # looks along the spike): such vertices wait for their neighbours or the smoothing.
            near = torch.isfinite(t) & (t <= max_step * diag)
            pocket, t = pocket[near], t[near]
        if pocket.numel():
            v[pocket] += (t * (1.0 + margin))[:, None] * normals[pocket]
        else:
            sel = torch.zeros(n_verts, dtype=torch.bool)
            sel[f[inv].reshape(-1)] = True
            sel[f[sel[f].any(dim=1)].reshape(-1)] = True
            ones = torch.ones(f.shape[0], dtype=v.dtype)
            degree = torch.zeros(n_verts, dtype=v.dtype)
            for k in range(3):
                degree.index_add_(0, f[:, k], 2 * ones)
            start = v.clone()
            for _ in range(smooth_steps):
                acc = torch.zeros_like(v)
                for a in range(3):
                    for b in range(3):
                        if a != b:
                            acc.index_add_(0, f[:, a], v[f[:, b]])
                v[sel] = (acc / degree[:, None])[sel]
            # no vertex travels further than max_step (smoothing would pull in a spike's tip)
            d = v - start
            scale = (max_step * diag / d.norm(dim=-1).clamp_min(1e-300)).clamp(max=1.0)
            v.copy_(start + d * scale[:, None])
        inv = _inverted_fast(v, f, adjacency, use)
    moves = (v - v0).norm(dim=-1)
    report = UntangleReport(before, int(inv.sum()), it, int((moves > 0).sum()),
                            float(moves.max()) if moves.numel() else 0.0)
    if it == 0:
        return vertices, report
    return v.to(dtype=vertices.dtype, device=vertices.device), report
