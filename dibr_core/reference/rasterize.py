"""Reference rasterizer (pure PyTorch, autograd backward)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from dibr_core.reference.common import barycentric, chunk_size, chunks, in_box, pixel_grid


def rasterize_reference(
    face_vertices_image: torch.Tensor,
    face_vertices_z: torch.Tensor,
    height: int,
    width: int,
    valid_faces: Optional[torch.Tensor] = None,
    multiplier: float = 1000.0,
    eps: float = 1e-8,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest face per pixel and its barycentric weights.

    Args:
        face_vertices_image: (B, F, 3, 2) float, NDC corners.
        face_vertices_z: (B, F, 3) float, depth key per corner (larger = closer).
        height, width: image size H, W.
        valid_faces: (B, F) bool or None; faces that may be drawn.
        multiplier: NDC scale for the coverage arithmetic.
        eps: sign-preserving area epsilon (scaled units).

    Returns:
        face_idx: (B, H, W) int64, -1 on background.
        bary: (B, H, W, 3) float, 0 on background; differentiable w.r.t. face_vertices_image.
    """
    B, F = face_vertices_image.shape[:2]
    dev, dt = face_vertices_image.device, face_vertices_image.dtype
    px, py = pixel_grid(height, width, dt, dev, multiplier)
    n_pix = height * width
    face_idx = torch.full((B, n_pix), -1, dtype=torch.int64, device=dev)
    neg_inf = torch.tensor(float("-inf"), dtype=dt, device=dev)
    with torch.no_grad():
        for b in range(B if F > 0 else 0):
            v = face_vertices_image[b].detach() * multiplier  # (F, 3, 2)
            z = face_vertices_z[b].detach()
            ok_face = torch.ones(F, dtype=torch.bool, device=dev)
            if valid_faces is not None:
                ok_face = valid_faces[b].bool()
            for p0, p1 in chunks(n_pix, chunk_size(F)):
                cx, cy = px[p0:p1], py[p0:p1]
                box = in_box(v, cx, cy, 0.0) & ok_face[None, :]
                w, s = barycentric(v[None], cx[:, None], cy[:, None], eps)  # (P, F, 3)
                inside = box & (s != 0) & (w >= 0).all(-1)
                zz = w[..., 0] * z[None, :, 0] + w[..., 1] * z[None, :, 1] + w[..., 2] * z[None, :, 2]
                zz = torch.where(inside & ~torch.isnan(zz), zz, neg_inf)
                best, idx = zz.max(dim=1)
                face_idx[b, p0:p1] = torch.where(best > neg_inf, idx, torch.full_like(idx, -1))
    covered = face_idx >= 0  # (B, P)
    bary = face_vertices_image.new_zeros(B, n_pix, 3)
    if bool(covered.any()):
        bi, pi = covered.nonzero(as_tuple=True)
        fi = face_idx[bi, pi]
        v_sel = face_vertices_image[bi, fi] * multiplier  # (N, 3, 2)
        w_sel, _ = barycentric(v_sel, px[pi], py[pi], eps)
        bary = bary.index_put((bi, pi), w_sel)
    elif face_vertices_image.requires_grad:  # nothing covered: stay on the graph (zero gradient), as the kernels do
        bary = bary + 0 * face_vertices_image.sum()
    return face_idx.view(B, height, width), bary.view(B, height, width, 3)
