"""Reference attribute interpolation (pure PyTorch, autograd backward)."""
from __future__ import annotations

from typing import Optional

import torch


def interpolate_reference(attr: torch.Tensor, faces: Optional[torch.Tensor], face_idx: torch.Tensor,
                          bary: torch.Tensor) -> torch.Tensor:
    """Per-pixel attributes: ``sum_k bary_k attr[corner k of the pixel's face]``.

    Args:
        attr: (B, V, D) float, per-vertex attributes; per-corner ones (B, F * 3, D) when
            ``faces`` is None (corner k of face f is row 3 f + k).
        faces: (F, 3) or (B, F, 3) int64 vertex indices, or None.
        face_idx: (B, H, W) int64, the face of each pixel (-1: background).
        bary: (B, H, W, 3) float, the pixel's weights of its face's corners.

    Returns:
        (B, H, W, D), 0 on background pixels.
    """
    B, H, W = face_idx.shape
    D = attr.shape[-1]
    n_faces = attr.shape[1] // 3 if faces is None else faces.shape[-2]
    if n_faces == 0:  # every pixel is background
        return (bary.sum(-1, keepdim=True) * attr.sum()).mul(0).expand(B, H, W, D).contiguous()
    fidx = face_idx.clamp(min=0).reshape(B, H * W)
    if faces is None:
        vidx = fidx[..., None] * 3 + torch.arange(3, device=fidx.device)
    elif faces.dim() == 2:
        vidx = faces[fidx]
    else:
        vidx = torch.gather(faces, 1, fidx[..., None].expand(-1, -1, 3))
    corners = torch.gather(attr, 1, vidx.reshape(B, H * W * 3, 1).expand(-1, -1, D)).view(B, H, W, 3, D)
    # Background pixels gathered face 0's corners: zero them (not multiply by 0, which keeps a NaN).
    corners = torch.where((face_idx >= 0)[..., None, None], corners, torch.zeros_like(corners))
    return (corners * bary.unsqueeze(-1)).sum(dim=3)
