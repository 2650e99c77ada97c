"""Reference methods the evaluations compare against: the category-mean shape (the thresholded
mean occupancy of a category's train shapes, meshed by its exposed voxel faces) and the category
medoid (the train shape with the highest mean occupancy IoU to the others). Both use the
category label, which the evaluated models do not get; the predictor's evaluation
(:mod:`dibr_core.eval.predictor`) uses both, the generator's (:mod:`dibr_core.eval.generator`)
the category mean."""
from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch

__all__ = ["Mesh", "medoid_index", "mean_occupancy", "leave_one_out_means", "voxel_boundary_mesh"]

Mesh = Tuple[torch.Tensor, torch.Tensor]          # (V, 3) float32, (F, 3) int64


def medoid_index(occupancies: Sequence[np.ndarray]) -> int:
    """Index of the grid with the highest mean IoU to the other grids (ties: the first)."""
    n = len(occupancies)
    if n == 0:
        raise ValueError("medoid_index(): no grids")
    if n == 1:
        return 0
    flat = torch.from_numpy(np.stack([np.asarray(o, dtype=bool).reshape(-1) for o in occupancies])).double()
    inter = flat @ flat.T
    sizes = flat.sum(dim=1)
    union = sizes[:, None] + sizes[None, :] - inter
    iou = inter / (union + 1e-8)
    iou.fill_diagonal_(0.0)
    return int(torch.argmax(iou.sum(dim=1) / (n - 1)))


def mean_occupancy(occupancies: Sequence[np.ndarray]) -> np.ndarray:
    """The category-mean shape: (R, R, R) bool, voxels occupied in at least half of the grids."""
    return np.mean(np.stack([np.asarray(o, dtype=np.float64) for o in occupancies]), axis=0) >= 0.5


def leave_one_out_means(occupancies: Sequence[np.ndarray]) -> List[np.ndarray]:
    """For each grid, the category mean (:func:`mean_occupancy`) of the OTHER grids: (R, R, R) bool
    each, so a grid is never compared with a mean that contains it (for small sets, such as the
    real-model set, where a full mean would include the answer). Needs at least 2 grids."""
    n = len(occupancies)
    if n < 2:
        raise ValueError(f"leave_one_out_means(): need at least 2 grids, got {n}")
    return [mean_occupancy([o for j, o in enumerate(occupancies) if j != i]) for i in range(n)]


def voxel_boundary_mesh(occupancy: np.ndarray) -> Mesh:
    """The exposed faces of an (R, R, R) bool grid over [-0.5, 0.5]^3 (axis i = coordinate i) as a
    triangle mesh: (V, 3) float32 vertices (unshared, 4 per square), (F, 3) int64 faces (2 per square)."""
    occ = np.asarray(occupancy, dtype=bool)
    R = occ.shape[0]
    pad = np.pad(occ, 1)
    quads: List[np.ndarray] = []
    for axis in range(3):
        for side in (-1, 1):
            nb = np.roll(pad, -side, axis=axis)[1:-1, 1:-1, 1:-1]
            idx = np.argwhere(occ & ~nb).astype(np.float64)             # (Q, 3) voxel indices
            if len(idx) == 0:
                continue
            u, w = [a for a in range(3) if a != axis]
            base = idx.copy()
            base[:, axis] += 1.0 if side > 0 else 0.0
            corners = np.repeat(base[:, None, :], 4, axis=1)            # (Q, 4, 3)
            corners[:, 1, u] += 1.0
            corners[:, 2, u] += 1.0
            corners[:, 2, w] += 1.0
            corners[:, 3, w] += 1.0
            if (u, w) != ((axis + 1) % 3, (axis + 2) % 3):
                side = -side
            # Counter-clockwise seen from outside (outward normals): reverse the -side quads.
            quads.append(corners if side > 0 else corners[:, ::-1])
    if not quads:
        return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)
    q = np.concatenate(quads) / R - 0.5                                 # (Q, 4, 3)
    verts = torch.from_numpy(q.reshape(-1, 3).astype(np.float32))
    o = np.arange(len(q))[:, None] * 4
    faces = np.concatenate([o + np.array([0, 1, 2]), o + np.array([0, 2, 3])], axis=0)
    return verts, torch.from_numpy(faces.astype(np.int64))
