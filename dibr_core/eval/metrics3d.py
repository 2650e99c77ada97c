"""3D metrics for single-image reconstruction: voxel IoU, Chamfer distance and F-score.

Conventions (docs/data-and-models.md section 4, dibr-algorithm.md section 8):

* Voxel grids are ``(res, res, res)`` bool over the cube [-0.5, 0.5]^3, indexed ``[ix, iy, iz]``
  (voxel ``i`` along an axis has its centre at ``(i + 0.5) / res - 0.5``), as
  :mod:`dibr_core.voxels` makes them. Prediction and ground truth must be given in the same
  object frame; nothing is re-centred here.
* Point metrics use **Euclidean** (not squared) nearest-neighbour distances. Both point sets must
  be expressed in the same frame, normalised so the *reference* (ground-truth) bounding box has
  diagonal 1 (:func:`normalize_unit_diagonal`); the thresholds ``tau`` are then fractions of the
  reference diagonal (tau = 0.01 and 0.02 by default).
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch

from dibr_core.surface_metrics import nearest_distances, sample_surface
from dibr_core.voxels import ArrayLike, as_array

__all__ = ["iou_3d", "sample_surface", "normalize_unit_diagonal", "nearest_distances", "chamfer_and_fscore"]


def iou_3d(a: ArrayLike, b: ArrayLike) -> float:
    """``|a and b| / (|a or b| + 1e-8)`` of two bool grids of the same shape."""
    x, y = as_array(a, np.bool_), as_array(b, np.bool_)
    if x.shape != y.shape:
        raise ValueError(f"iou_3d(): grids must have the same shape, got {x.shape} and {y.shape}")
    return float(np.logical_and(x, y).sum() / (np.logical_or(x, y).sum() + 1e-8))


# ----------------------------------------------------------------------------------------------
# Points
# ----------------------------------------------------------------------------------------------

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
