"""``interpolate``: per-pixel attributes from per-corner attributes and barycentric weights."""
from __future__ import annotations

from typing import Dict, Optional

import torch

from dibr_core.checks import check_tensor
from dibr_core.ops.rasterize import Fragments


def perspective_correct(bary: torch.Tensor, face_idx: torch.Tensor, face_vertices_w: torch.Tensor) -> torch.Tensor:
    """Turn screen-space weights into perspective-correct ones.

    Args:
        bary: (B, H, W, 3) screen-space weights.
        face_idx: (B, H, W) int64.
        face_vertices_w: (B, F, 3) clip-space w of each corner (-z_cam for a perspective
            camera, 1 for an orthographic one), positive.
    Returns:
        (B, H, W, 3): w_k / W_k normalised to sum 1 (0 on background).
    """
    B, H, W, _ = bary.shape
    idx = face_idx.clamp(min=0).view(B, H * W, 1).expand(-1, -1, 3)
    wk = torch.gather(face_vertices_w, 1, idx).view(B, H, W, 3)
    q = bary / wk
    s = q.sum(-1, keepdim=True)
    covered = (face_idx >= 0).unsqueeze(-1)
    s = torch.where(covered, s, torch.ones_like(s))
    return torch.where(covered, q / s, torch.zeros_like(q))


def interpolate(
    face_features: torch.Tensor,
    fragments: Fragments,
    face_vertices_w: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Interpolate per-corner features at every pixel: ``I = sum_k w_k u_k``.

    Args:
        face_features: (B, F, 3, D) float, any attribute per face corner (colours, UVs,
            normals...); gradients flow to it and, through the weights, to the corners' positions.
        fragments: the output of :func:`rasterize` for the same faces.
        face_vertices_w: (B, F, 3), optional clip-space w per corner: when given the weights are
            made perspective-correct (right for textures); when omitted they stay linear in
            screen space, as in DIB-R and Kaolin.

    Returns:
        (B, H, W, D) float, 0 on background pixels.
    """
    fn = "interpolate"
    dims: Dict[str, int] = {}
    B, H, W = fragments.face_idx.shape
    dims["B"] = B
    check_tensor(fn, "face_features", face_features, ("B", "F", 3, "D"), dims, "float", fragments.bary.device)
    bary = fragments.bary
    if face_vertices_w is not None:
        check_tensor(fn, "face_vertices_w", face_vertices_w, ("B", "F", 3), dims, "float", bary.device)
        bary = perspective_correct(bary, fragments.face_idx, face_vertices_w.to(bary.dtype))
    D = face_features.shape[-1]
    idx = fragments.face_idx.clamp(min=0).view(B, H * W, 1, 1).expand(-1, -1, 3, D)
    corners = torch.gather(face_features.to(bary.dtype), 1, idx).view(B, H, W, 3, D)
    out = (corners * bary.unsqueeze(-1)).sum(dim=3)
    return out
