"""Binary silhouettes (masks of (H, W), rows top to bottom): their holes and boundaries."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dibr_core.checks import check_tensor

__all__ = ["enclosed_holes", "fill_holes", "silhouette_boundary"]


def _foreground(fn: str, mask: torch.Tensor) -> torch.Tensor:
    """(H, W) bool CPU foreground of a float (> 0.5) or bool mask, checked under ``fn``'s name."""
    check_tensor(fn, "mask", mask, ("H", "W"), None, None)
    fg = mask.detach().cpu()
    return fg if fg.dtype == torch.bool else fg > 0.5


def _border_background(bg: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: the background pixels ``bg`` connected (4-neighbourhood) to the image border."""
    reach = torch.zeros_like(bg)
    reach[0, :], reach[-1, :], reach[:, 0], reach[:, -1] = bg[0, :], bg[-1, :], bg[:, 0], bg[:, -1]
    cross = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    while True:
        grown = (F.conv2d(reach.float()[None, None], cross, padding=1)[0, 0] > 0) & bg
        if torch.equal(grown, reach):
            return reach
        reach = grown


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: ``mask`` (float, foreground > 0.5, or bool) with its holes filled (the
    background regions that do not reach the image border, 4-connected; see
    :func:`enclosed_holes`)."""
    return ~_border_background(~_foreground("fill_holes", mask))


def silhouette_boundary(mask: torch.Tensor) -> torch.Tensor:
    """(N, 2) float64 NDC centres (x right, y up) of the boundary pixels of an (H, W) mask
    (float, foreground > 0.5, or bool; rows top to bottom): foreground pixels with a background
    4-neighbour or on the image's edge, in row-major order."""
    fg = _foreground("silhouette_boundary", mask)
    H, W = fg.shape
    p = F.pad(fg[None, None].float(), (1, 1, 1, 1))[0, 0] > 0.5
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    r, c = torch.nonzero(fg & ~inner, as_tuple=True)
    return torch.stack([-1.0 + (2.0 * c.double() + 1.0) / W, 1.0 - (2.0 * r.double() + 1.0) / H], dim=1)


def enclosed_holes(mask: torch.Tensor, min_pixels: int = 1) -> torch.Tensor:
    """(H, W) int64 labels of the holes of a silhouette: 4-connected background regions (mask
    <= 0.5) that do not touch the image border, numbered 1, 2, ... (0 elsewhere); regions of
    fewer than ``min_pixels`` pixels get 0.

    Args:
        mask: (H, W) float or bool silhouette.
    """
    bg = ~_foreground("enclosed_holes", mask)
    H, W = bg.shape
    reach = _border_background(bg)
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
