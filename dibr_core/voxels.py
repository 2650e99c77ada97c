"""Voxelisation of triangle meshes over the cube [-0.5, 0.5]^3: surface marking, winding numbers at
voxel centres, occupancy.

Grids are ``(res, res, res)`` over [-0.5, 0.5]^3, indexed ``[ix, iy, iz]`` (voxel ``i`` along an
axis has its centre at ``(i + 0.5) / res - 0.5``); nothing is re-centred here. The procedural
data's ground truth (:func:`dibr_core.data.shapes.occupancy`) and the predictor's evaluation
(:mod:`dibr_core.eval.metrics3d`) both voxelise with these functions.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["ArrayLike", "as_array", "mark_surface_voxels", "winding_numbers_z", "voxelize_mesh"]

ArrayLike = np.ndarray | torch.Tensor


def as_array(x: ArrayLike, dtype: type = np.float64) -> np.ndarray:
    """A numpy array of ``dtype`` from an array or a tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


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
    v = as_array(vertices)
    f = as_array(faces, np.int64)
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
    v = as_array(vertices)
    f = as_array(faces, np.int64)
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
