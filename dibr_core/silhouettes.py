"""Binary silhouettes (masks of (H, W), rows top to bottom): their holes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dibr_core.checks import check_tensor

__all__ = ["enclosed_holes"]


def enclosed_holes(mask: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """(H, W) int64 labels of the holes of a silhouette: 4-connected background regions (mask
    <= 0.5) that do not touch the image border, numbered 1, 2, ... (0 elsewhere); regions of
    fewer than ``min_pixels`` pixels get 0.

    Args:
        mask: (H, W) float or bool silhouette.
    """
    check_tensor("enclosed_holes", "mask", mask, ("H", "W"), None, None)
    bg = (mask.detach().float().cpu() <= 0.5)
    H, W = bg.shape
    # background reached from the border, grown one 4-neighbourhood step at a time
    reach = torch.zeros_like(bg)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = bg[0, :], bg[-1, :], bg[:, 0], bg[:, -1]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    while True:
        grown = (F.conv2d(reach.float()[None, None], cross, padding=1)[0, 0] > 0) & bg
        if torch.equal(grown, reach):
            break
        reach = grown
    hole = bg & ~reach
    # label the holes: each pixel takes the largest label among its 4-neighbours in the hole
    label = torch.where(hole, torch.arange(1, H * W + 1, dtype=torch.float32).reshape(H, W), torch.zeros(H, W))
    while True:
        p = F.pad(label[None, None], (1, 1, 1, 1))[0, 0]
        nb = torch.stack([label, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]).amax(0)
        new = torch.where(hole, nb, label)
        if torch.equal(new, label):
            break
        label = new
    ids, inverse, counts = torch.unique(label.long(), return_inverse=True, return_counts=True)
    keep = (ids > 0) & (counts >= min_pixels)
    renum = torch.zeros_like(ids)
    renum[keep] = torch.arange(1, int(keep.sum()) + 1)
    return renum[inverse]
