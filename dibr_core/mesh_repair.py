"""Repair of inside-out pockets in closed triangle meshes (the deformed-sphere decoder's defect).

A decoded sphere can fold where a thin part (a rifle barrel, a display panel) is thinner than
the decoder's accuracy: the two sheets of the part pass through each other, and the region
between them becomes inside-out (generalised winding number -1 instead of +1). Silhouettes
cannot see this, so 2D supervision never corrects it. This module finds such pockets quickly
and removes them while moving the surface as little as possible.

* :func:`inverted_faces_fast`: the test of :func:`dibr_core.mesh_queries.inverted_faces` with
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
pairs, and the repair's rays) come from :mod:`dibr_core.mesh_queries`: the C++ kernels of
``dibr_core/csrc/mesh_cpu.cpp`` when the extension is built and their torch twins otherwise
(``backend="reference"``); the tests compare the two.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch

from dibr_core.backend import resolve_cpu_op
from dibr_core.mesh import edge_face_adjacency
from dibr_core.mesh_queries import (FRONT_EPS, check_mesh, front_points, intersecting_face_pairs, ray_distances,
                                    winding_numbers)

__all__ = ["inverted_faces_fast", "untangle", "UntangleReport", "FRONT_EPS"]


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


def _inverted_fast(v: torch.Tensor, f: torch.Tensor, adjacency: torch.Tensor, backend: str) -> torch.Tensor:
    n_faces = f.shape[0]
    front, length = front_points(v, f)
    ok = length > 1e-12
    pairs = intersecting_face_pairs(v, f, backend=backend)
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
    :func:`dibr_core.mesh_queries.inverted_faces` defines them, from one winding-number query per
    clean component and per intersecting face (see the module docstring).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int, a closed manifold surface.
        backend: ``"auto"``, ``"cpu"`` (C++ kernels) or ``"reference"`` (torch).
    """
    fn = "inverted_faces_fast"
    v, f = check_mesh(fn, vertices, faces)
    _, adjacency = edge_face_adjacency(f)
    return _inverted_fast(v, f, adjacency, resolve_cpu_op(fn, backend))


def _vertex_normals(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    tri = v[f]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)   # area-weighted
    acc = torch.zeros_like(v)
    for k in range(3):
        acc.index_add_(0, f[:, k], n)
    return acc / acc.norm(dim=-1, keepdim=True).clamp_min(1e-300)


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
    v0, f = check_mesh(fn, vertices, faces)
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
            t = ray_distances(v, f, v[pocket], normals[pocket], pocket, backend=use)
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
