"""Carving a closed mesh by the background of one view, through its volume.

A see-through pixel of a picture says that nothing lies on its ray. :func:`carve_view_volume`
applies that to a closed mesh: it voxelises the mesh, empties every voxel whose centre projects
onto background of the mask in the given view (only the mask's enclosed holes, with
``holes_only``), and extracts the boundary of what is left as a new closed, consistently
oriented surface (:func:`marching_tetrahedra` on a lightly smoothed occupancy). Unlike
:func:`dibr_core.carve.carve_view_holes`, which cuts a hole only where the surface covers it
with one clean two-sheet membrane, this cuts every hole, whatever the surface does inside it;
the price is a new, voxel-resolution surface (remesh it before a fit) and parts thinner than
about a voxel are lost.

:func:`marching_tetrahedra` extracts the level set of a scalar field on a regular grid through
the Freudenthal (Kuhn) split of every cell into six tetrahedra around its main diagonal; the
split is the same in every cell, so neighbouring cells agree on their shared faces, there are no
ambiguous cases, and the level set of a field whose samples avoid the level is a closed
2-manifold (per connected part). numpy on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch

from dibr_core.camera import Camera
from dibr_core.carve import _project
from dibr_core.checks import check_tensor
from dibr_core.remesh import _components
from dibr_core.silhouettes import _foreground, enclosed_holes
from dibr_core.voxels import voxelize_mesh

__all__ = ["VolumeCarve", "carve_view_volume", "marching_tetrahedra"]

# The six tetrahedra of a unit cell (corner bits: x = 1, y = 2, z = 4), each the path from corner
# 0 to corner 7 along one order of the three axes.
_TETS = np.array([[0, 1, 3, 7], [0, 1, 5, 7], [0, 2, 3, 7], [0, 2, 6, 7], [0, 4, 5, 7], [0, 4, 6, 7]],
                 dtype=np.int64)
_CORNERS = np.array([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=np.int64)  # (8, 3)


def marching_tetrahedra(field: np.ndarray, level: float = 0.5) -> Tuple[np.ndarray, np.ndarray]:
    """The level set ``field == level`` of an (Nx, Ny, Nz) grid of samples, the region above the
    level being inside: ((V, 3) float64 vertices in grid units (sample (i, j, k) at (i, j, k)),
    (F, 3) int64 faces, counter-clockwise seen from outside). Each vertex lies on a grid edge of
    the Freudenthal split, placed by linear interpolation; vertices are shared between the faces
    that meet there. Samples equal to ``level`` count as outside."""
    f = np.asarray(field, dtype=np.float64)
    if f.ndim != 3 or min(f.shape) < 2:
        raise ValueError(f"marching_tetrahedra(): field must be (Nx, Ny, Nz) with each side >= 2, got {f.shape}")
    inside = f > level
    nx, ny, nz = f.shape
    # Cells with both inside and outside corners.
    cell_in = np.zeros((nx - 1, ny - 1, nz - 1), dtype=np.int64)
    for c in range(8):
        dx, dy, dz = _CORNERS[c]
        cell_in += inside[dx:nx - 1 + dx, dy:ny - 1 + dy, dz:nz - 1 + dz]
    cells = np.argwhere((cell_in > 0) & (cell_in < 8))                      # (C, 3)
    if cells.shape[0] == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    corner = cells[:, None, :] + _CORNERS[None]                             # (C, 8, 3)
    gid = (corner[..., 0] * ny + corner[..., 1]) * nz + corner[..., 2]      # (C, 8) flat sample ids
    tet = gid[:, _TETS].reshape(-1, 4)                                      # (T, 4)
    flat, ins = f.reshape(-1), inside.reshape(-1)
    t_in = ins[tet]                                                         # (T, 4)
    n_in = t_in.sum(axis=1)
    faces_out: List[Tuple[np.ndarray, Tuple[np.ndarray, ...], Tuple[np.ndarray, ...]]] = []
    edge_a: List[np.ndarray] = []
    edge_b: List[np.ndarray] = []

    def edge_ids(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        edge_a.append(lo)
        edge_b.append(hi)
        return lo * flat.shape[0] + hi

    for count in (1, 2, 3):
        sel = n_in == count
        if not sel.any():
            continue
        t, ti = tet[sel], t_in[sel]
        ins_c: List[Tuple[np.ndarray, ...]]
        out_c: List[Tuple[np.ndarray, ...]]
        order = np.argsort(~ti, axis=1, kind="stable")                      # inside corners first
        s = np.take_along_axis(t, order, axis=1)
        if count == 2:
            # Quad on edges (i0, o0), (i0, o1), (i1, o1), (i1, o0).
            q = [edge_ids(s[:, 0], s[:, 2]), edge_ids(s[:, 0], s[:, 3]), edge_ids(s[:, 1], s[:, 3]),
                 edge_ids(s[:, 1], s[:, 2])]
            tris = [np.stack([q[0], q[1], q[2]], 1), np.stack([q[0], q[2], q[3]], 1)]
            ins_c = [(s[:, 0], s[:, 1]), (s[:, 0], s[:, 1])]
            out_c = [(s[:, 2], s[:, 3]), (s[:, 2], s[:, 3])]
        else:
            lone = 0 if count == 1 else 3                                   # the corner on its own side
            others = [k for k in range(4) if k != lone]
            tris = [np.stack([edge_ids(s[:, lone], s[:, k]) for k in others], 1)]
            side_a: Tuple[np.ndarray, ...] = (s[:, lone],)
            side_b: Tuple[np.ndarray, ...] = tuple(s[:, k] for k in others)
            ins_c, out_c = ([side_a], [side_b]) if count == 1 else ([side_b], [side_a])
        for tri, ic, oc in zip(tris, ins_c, out_c):
            faces_out.append((tri, ic, oc))
    ea, eb = np.concatenate(edge_a), np.concatenate(edge_b)
    keys, first = np.unique(ea * flat.shape[0] + eb, return_index=True)
    a, b = ea[first], eb[first]
    fa, fb = flat[a], flat[b]
    w = np.clip((level - fa) / np.where(fb != fa, fb - fa, 1.0), 1e-3, 1.0 - 1e-3)
    pa = np.stack(np.unravel_index(a, f.shape), 1).astype(np.float64)
    pb = np.stack(np.unravel_index(b, f.shape), 1).astype(np.float64)
    verts = pa + w[:, None] * (pb - pa)
    all_faces = []
    for tri, ic, oc in faces_out:
        fi = np.searchsorted(keys, tri)                                     # (n, 3) vertex ids
        # Orient each triangle so that its normal points from the inside corners to the outside ones.
        cin = np.mean([np.stack(np.unravel_index(x, f.shape), 1) for x in ic], axis=0)
        cout = np.mean([np.stack(np.unravel_index(x, f.shape), 1) for x in oc], axis=0)
        p0, p1, p2 = verts[fi[:, 0]], verts[fi[:, 1]], verts[fi[:, 2]]
        n = np.cross(p1 - p0, p2 - p0)
        flip = np.einsum("ij,ij->i", n, cout - cin) < 0
        fi[flip] = fi[flip][:, [0, 2, 1]]
        all_faces.append(fi)
    faces = np.concatenate(all_faces).astype(np.int64)
    return verts, faces


@dataclass(frozen=True)
class VolumeCarve:
    """The result of :func:`carve_view_volume`.

    Attributes:
        vertices: (V', 3) float32 the new surface's vertices, in the input's frame.
        faces: (F', 3) int64, counter-clockwise seen from outside.
        removed_voxels: occupied voxels emptied by the carve.
        occupied_voxels: occupied voxels before it.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    removed_voxels: int
    occupied_voxels: int


def _blur3(x: np.ndarray, w: float) -> np.ndarray:
    """Separable [w, 1 - 2w, w] smoothing of a 3D array along each axis (zero outside)."""
    for ax in range(3):
        p = np.pad(x, [(1, 1) if a == ax else (0, 0) for a in range(3)])
        lo = np.take(p, np.arange(0, x.shape[ax]), axis=ax)
        hi = np.take(p, np.arange(2, x.shape[ax] + 2), axis=ax)
        x = (1.0 - 2.0 * w) * x + w * (lo + hi)
    return x


def carve_view_volume(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, mask: torch.Tensor,
                      res: int = 96, holes_only: bool = True, min_pixels: int = 4,
                      smooth: float = 0.15, margin: int = 0, min_part_faces: int = 0) -> VolumeCarve:
    """Empty the voxels of a closed mesh that project onto background in one view and return the
    surface of what is left.

    Args:
        vertices: (V, 3) float. The grid spans [-0.5, 0.5]^3 (a unit-diagonal object's frame) when
            the mesh lies inside it, else a cube about the mesh with voxels of the same size.
        faces: (F, 3) int, closed and counter-clockwise seen from outside.
        camera: one camera (batch 1) of the view.
        mask: (H, W) silhouette in that view (float, foreground > 0.5, or bool), rows top to bottom.
        res: voxels per unit length (per side of the [-0.5, 0.5]^3 grid).
        holes_only: carve only the mask's enclosed holes (background not connected to the
            border, at least ``min_pixels`` pixels), not its outside.
        smooth: weight of each neighbour in the [w, 1 - 2w, w] smoothing of the occupancy along
            each axis before the level set is taken at 0.5 (0: a voxel staircase).
        margin: background pixels within this many pixels (8-neighbourhood steps) of the
            foreground are not carved (a view a little off does not cut thin parts away).
        min_part_faces: connected parts of the new surface with fewer faces are dropped (crumbs
            of the cut); its vertices are then those the kept faces use.
    """
    fn = "carve_view_volume"
    check_tensor(fn, "vertices", vertices, ("V", 3), None, None)
    check_tensor(fn, "faces", faces, ("F", 3), None, None)
    fg = _foreground(fn, mask)
    if camera.batch_size != 1:
        raise ValueError(f"{fn}(): camera must hold one view, got a batch of {camera.batch_size}")
    if not isinstance(res, int) or isinstance(res, bool) or res < 4:
        raise ValueError(f"{fn}(): res must be an int >= 4, got {res!r}")
    if not 0.0 <= smooth < 1.0 / 3.0:
        raise ValueError(f"{fn}(): smooth must be in [0, 1/3), got {smooth!r}")
    v = vertices.detach().cpu().double().numpy()
    # The grid: [-0.5, 0.5]^3 at res voxels per side when the mesh lies in it; else a cube about the
    # mesh's bounding box with voxels of the same size (nothing of the mesh is clipped).
    centre, side, n = np.zeros(3), 1.0, res
    if v.size and np.abs(v).max() > 0.5:
        lo, hi = v.min(axis=0), v.max(axis=0)
        centre = (lo + hi) / 2.0
        side = float((hi - lo).max()) * (1.0 + 2.0 / res)
        n = max(4, int(math.ceil(res * side)))
    occ = voxelize_mesh((v - centre) / side, faces.detach().cpu().long().numpy(), n)
    bad = enclosed_holes(fg, min_pixels) > 0 if holes_only else ~fg
    if margin > 0:
        near = torch.nn.functional.max_pool2d(fg.float()[None, None], 2 * margin + 1, 1, margin)[0, 0] > 0.5
        bad = bad & ~near
    H, W = fg.shape
    idx = np.argwhere(occ)                                                   # (N, 3)
    centres = ((idx + 0.5) / n - 0.5) * side + centre
    px = _project(centres, camera, H, W)[0]
    col = np.clip(np.floor(px[:, 0]), 0, W - 1).astype(np.int64)
    row = np.clip(np.floor(px[:, 1]), 0, H - 1).astype(np.int64)
    cut = bad.numpy()[row, col]
    carved = occ.copy()
    carved[tuple(idx[cut].T)] = False
    field = _blur3(np.pad(carved.astype(np.float64), 2), smooth) if smooth > 0 else np.pad(carved, 2).astype(float)
    verts, tris = marching_tetrahedra(field, 0.5)
    if min_part_faces > 0 and tris.shape[0]:
        part = _components(verts.shape[0], tris.reshape(-1), tris[:, [1, 2, 0]].reshape(-1))[tris[:, 0]]
        tris = tris[np.bincount(part)[part] >= min_part_faces]
        used = np.unique(tris)
        remap = np.full(verts.shape[0], -1, dtype=np.int64)
        remap[used] = np.arange(used.shape[0])
        verts, tris = verts[used], remap[tris]
    # Grid units (padded by 2, sample (i) at voxel centre i - 2) to the object frame.
    out = ((verts - 2.0 + 0.5) / n - 0.5) * side + centre
    return VolumeCarve(torch.from_numpy(out.astype(np.float32)), torch.from_numpy(tris),
                       int(cut.sum()), int(occ.sum()))
