"""Automatic UVs for meshes that have none: axis-aligned charts, projected and shelf-packed.

:func:`auto_uvs` groups faces into charts by their normal's nearest axis direction (one of
``+x, -x, +y, -y, +z, -z``) and connectivity (faces sharing an edge), projects each chart onto
its axis plane, and packs the charts into the unit square with a margin between them, all at one
scale, so every chart has the same texel density up to the projection's foreshortening: a face
whose normal makes the angle ``theta`` with its axis keeps the fraction ``cos(theta)`` of its area,
and ``theta <= arccos(1 / sqrt(3))`` (54.7 degrees), so the per-face area ratio stays within a
factor ``sqrt(3)`` of the undistorted one. Faces of a chart whose projection would overlap another
face of the same chart are moved to charts of their own, so no two UV triangles overlap
(:func:`uv_overlap_pairs` finds overlaps). numpy on the CPU; meant for meshes of up to some
tens of thousands of faces.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch

from dibr_core.checks import check_index_range, check_positive, check_tensor
from dibr_core.remesh import _components

__all__ = ["auto_uvs", "uv_charts", "uv_overlap_pairs"]

# Axis directions and, for each, two tangents (t1, t2) with t1 x t2 = the axis, so that a face
# facing the axis keeps its counter-clockwise winding in UV.
_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
_TANGENTS = np.array([
    [[0, 1, 0], [0, 0, 1]], [[0, -1, 0], [0, 0, 1]],
    [[0, 0, 1], [1, 0, 0]], [[0, 0, -1], [1, 0, 0]],
    [[1, 0, 0], [0, 1, 0]], [[-1, 0, 0], [0, 1, 0]],
], dtype=np.float64)


def _check_mesh(fn: str, vertices: torch.Tensor, faces: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    dims: Dict[str, int] = {}
    check_tensor(fn, "vertices", vertices, ("V", 3), dims, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), dims, "int", vertices.device)
    if dims["V"] == 0 or dims["F"] == 0:
        raise ValueError(f"{fn}(): the mesh is empty (V={dims['V']}, F={dims['F']})")
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    return vertices.detach().cpu().double().numpy(), faces.detach().cpu().long().numpy()


def uv_charts(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Chart index of each face: faces sharing an edge whose normals have the same nearest axis
    direction are in one chart.

    Args:
        vertices: (V, 3) float. faces: (F, 3) int.

    Returns:
        (F,) int64 chart ids ``0 .. K - 1``.
    """
    v, f = _check_mesh("uv_charts", vertices, faces)
    return torch.from_numpy(_charts(v, f)[0])


def _charts(v: np.ndarray, f: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    p = v[f]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    axis = np.argmax(n @ _AXES.T, axis=1)
    nf = f.shape[0]
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e.sort(axis=1)
    owner = np.tile(np.arange(nf), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, owner = e[order], owner[order]
    same = np.all(e[1:] == e[:-1], axis=1)
    a, b = owner[:-1][same], owner[1:][same]
    keep = axis[a] == axis[b]
    return np.unique(_components(nf, a[keep], b[keep]), return_inverse=True)[1], axis


def _tri_overlap(ta: np.ndarray, tb: np.ndarray, tol: float) -> np.ndarray:
    """(N, 3, 2) pairs of triangles -> (N,) bool: do they overlap by more than ``tol`` along every
    edge normal (separating axis test)? Triangles that only share an edge or a corner do not."""
    out = np.ones(ta.shape[0], dtype=bool)
    for tri in (ta, tb):
        for k in range(3):
            d = tri[:, (k + 1) % 3] - tri[:, k]
            nrm = np.stack([-d[:, 1], d[:, 0]], axis=1)
            nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)
            pa = np.einsum("nkc,nc->nk", ta, nrm)
            pb = np.einsum("nkc,nc->nk", tb, nrm)
            gap = np.minimum(pa.max(1), pb.max(1)) - np.maximum(pa.min(1), pb.min(1))
            out &= gap > tol
    return out


# Candidate pairs tested per batch in _overlaps (bounds its memory).
_PAIR_BATCH = 1 << 18


def _overlaps(t: np.ndarray, tol: float) -> np.ndarray:
    """(P, 2) sorted index pairs of the (F, 3, 2) triangles ``t`` that overlap (see
    :func:`_tri_overlap`): a sweep along u finds the pairs whose boxes overlap, all at once, and
    the separating-axis test runs on them in batches."""
    lo, hi = t.min(axis=1), t.max(axis=1)
    order = np.argsort(lo[:, 0], kind="stable")
    lo_s, hi_s, t_s = lo[order], hi[order], t[order]
    n = len(order)
    # for each i, the candidates are i + 1 .. j_end[i] - 1 (their u ranges start before i's ends)
    j_end = np.maximum(np.searchsorted(lo_s[:, 0], hi_s[:, 0] - tol, side="left"), np.arange(n) + 1)
    count = j_end - np.arange(n) - 1
    total = np.cumsum(count)
    pairs: List[np.ndarray] = []
    start = 0
    while start < n:
        # a run of rows whose candidates fit in one batch (at least one row)
        done = int(total[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(total, done + _PAIR_BATCH, side="right")))
        c = count[start:stop]
        if c.sum():
            i = np.repeat(np.arange(start, stop), c)
            first = np.repeat(np.cumsum(c) - c, c)
            j = i + 1 + (np.arange(int(c.sum())) - first)
            keep = (lo_s[j, 1] < hi_s[i, 1] - tol) & (hi_s[j, 1] > lo_s[i, 1] + tol)
            i, j = i[keep], j[keep]
            if i.size:
                hit = _tri_overlap(t_s[i], t_s[j], tol)
                if hit.any():
                    pairs.append(np.stack([i[hit], j[hit]], axis=1))
        start = stop
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = order[np.concatenate(pairs)]
    return np.sort(p, axis=1).astype(np.int64)


def uv_overlap_pairs(face_uvs: torch.Tensor, tol: float = 1e-9) -> torch.Tensor:
    """Pairs of faces whose UV triangles overlap by more than ``tol`` (UV units) in every
    direction; faces that only share an edge or a corner are not reported.

    Args:
        face_uvs: (F, 3, 2) float.
        tol: overlap tolerance in UV units (>= 0).

    Returns:
        (P, 2) int64 face index pairs ``(i, j)`` with ``i < j``.
    """
    check_tensor("uv_overlap_pairs", "face_uvs", face_uvs, ("F", 3, 2), None, "float", finite=True)
    check_positive("uv_overlap_pairs", "tol", tol, allow_zero=True)
    return torch.from_numpy(_overlaps(face_uvs.detach().cpu().double().numpy(), float(tol)))


def _shelf_pack(sizes: np.ndarray, scale: float, margin: float) -> Tuple[bool, np.ndarray]:
    """Place boxes ``sizes * scale`` (K, 2), tallest first, on shelves in the unit square with
    ``margin`` around each; returns whether they fit and the (K, 2) lower-left corners."""
    order = np.argsort(-sizes[:, 1], kind="stable")
    pos = np.zeros_like(sizes)
    x, y, shelf = margin, margin, 0.0
    for k in order:
        w, h = sizes[k] * scale
        if x + w + margin > 1.0 and x > margin:
            y += shelf + margin
            x, shelf = margin, 0.0
        if x + w + margin > 1.0 or y + h + margin > 1.0:
            return False, pos
        pos[k] = (x, y)
        x += w + margin
        shelf = max(shelf, h)
    return True, pos


def auto_uvs(vertices: torch.Tensor, faces: torch.Tensor, margin: float = 1.0 / 128) -> torch.Tensor:
    """UVs for a mesh without any: charts by normal direction, projected and packed.

    Charts come from :func:`uv_charts`; each is projected orthographically onto its axis plane
    (winding kept counter-clockwise), turned so it is wider than tall, and the charts are packed
    on shelves into ``[0, 1]^2`` at the largest common scale that fits (bisection), with
    ``margin`` UV units between charts and around the border. Leave at least twice the island
    padding you will use (:func:`dibr_core.texture_bake.pad_texture_islands`) in margin, e.g.
    ``margin = 2 * pixels / texture_size``.

    Args:
        vertices: (V, 3) float. faces: (F, 3) int, counter-clockwise seen from outside.
        margin: gap between charts and around the border, in UV units, in [0, 0.25).

    Returns:
        (F, 3, 2) per-corner UVs in ``[0, 1]``, ``vertices``' dtype and device.
    """
    fn = "auto_uvs"
    v, f = _check_mesh(fn, vertices, faces)
    check_positive(fn, "margin", margin, allow_zero=True)
    if margin >= 0.25:
        raise ValueError(f"{fn}(): margin must be below 0.25 (UV units), got {margin!r}")
    chart, axis = _charts(v, f)
    p = v[f]                                                   # (F, 3, 3)
    tang = _TANGENTS[axis]                                     # (F, 2, 3)
    uv = np.einsum("fkc,fdc->fkd", p, tang)                    # (F, 3, 2)
    # Split off the faces whose projection overlaps another face of their chart.
    nxt = int(chart.max()) + 1
    for c in range(nxt):
        idx = np.nonzero(chart == c)[0]
        if idx.size < 2:
            continue
        pairs = _overlaps(uv[idx], 1e-12 * max(1.0, float(np.abs(uv[idx]).max())))
        for face in np.unique(idx[pairs[:, 1]]) if pairs.size else []:
            chart[face] = nxt
            nxt += 1
    chart = np.unique(chart, return_inverse=True)[1]
    k = int(chart.max()) + 1
    lo = np.full((k, 2), np.inf)
    hi = np.full((k, 2), -np.inf)
    np.minimum.at(lo, chart, uv.min(axis=1))
    np.maximum.at(hi, chart, uv.max(axis=1))
    uv = uv - lo[chart][:, None, :]
    sizes = hi - lo
    turn = sizes[:, 1] > sizes[:, 0]
    t = turn[chart]
    # A quarter turn (u, v) -> (h - v, u) keeps the winding.
    uv[t] = np.stack([sizes[chart[t], 1][:, None] - uv[t][..., 1], uv[t][..., 0]], axis=-1)
    sizes[turn] = sizes[turn][:, ::-1]
    sizes = np.maximum(sizes, 1e-12)
    lo_s, hi_s = 0.0, (1.0 - 2 * margin) / float(sizes.max())
    best = np.zeros_like(sizes)
    for _ in range(40):
        mid = 0.5 * (lo_s + hi_s)
        ok, pos = _shelf_pack(sizes, mid, margin)
        if ok:
            lo_s, best = mid, pos
        else:
            hi_s = mid
    if lo_s == 0.0:
        raise ValueError(f"{fn}(): {k} charts do not fit in the unit square with margin {margin}; lower the margin")
    out = uv * lo_s + best[chart][:, None, :]
    return torch.from_numpy(np.clip(out, 0.0, 1.0)).to(device=vertices.device, dtype=vertices.dtype)
