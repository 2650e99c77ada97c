"""Reference DIB-R soft silhouette (pure PyTorch, autograd backward)."""
from __future__ import annotations

from typing import Optional

import torch

from dibr_core.reference.common import chunk_size, chunks, in_box, pixel_grid

_EDGES = ((0, 1), (1, 2), (2, 0))


def boundary_dist2_all(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor, eps: float, sentinel: float) -> torch.Tensor:
    """Six candidate squared distances (3 edges, then 3 corners).

    Args:
        v: (..., 3, 2) scaled corners; px, py broadcastable to v[..., 0, 0].
    Returns:
        (..., 6): edge k joins corner k and k+1; an edge whose perpendicular foot falls
        outside the segment (or of zero length) gets `sentinel`; otherwise
        up^2 / (|e|^2 + eps) with up = (p - v1) x e, the same arithmetic as the kernel header.
    """
    out = []
    for i, j in _EDGES:
        x1, y1 = v[..., i, 0], v[..., i, 1]
        x2, y2 = v[..., j, 0], v[..., j, 1]
        ex = x2 - x1
        ey = y2 - y1
        dx = px - x1
        dy = py - y1
        len2 = ex * ex + ey * ey
        dot = dx * ex + dy * ey
        up = dx * ey - dy * ex
        d = up * up / (len2 + eps)
        outside = ~(len2 > 0) | (dot < 0) | (dot > len2)
        out.append(torch.where(outside, torch.full_like(d, sentinel), d))
    for k in range(3):
        dx = px - v[..., k, 0]
        dy = py - v[..., k, 1]
        out.append(dx * dx + dy * dy)
    return torch.stack(out, dim=-1)


def soft_mask_reference(
    face_vertices_image: torch.Tensor,
    face_idx: torch.Tensor,
    sigmainv: float = 7000.0,
    boxlen: float = 0.02,
    knum: int = 30,
    multiplier: float = 1000.0,
    valid_faces: Optional[torch.Tensor] = None,
    eps: float = 1e-7,
) -> torch.Tensor:
    """DIB-R soft mask: 1 on covered pixels, 1 - prod(1 - exp(-sigmainv d^2)) elsewhere.

    Args:
        face_vertices_image: (B, F, 3, 2) float NDC corners.
        face_idx: (B, H, W) int64 from the rasterizer; pixels >= 0 are covered.
        sigmainv, boxlen, knum, multiplier: see ``dibr_core.soft_mask``.
        valid_faces: (B, F) bool or None: faces that may be candidates.
        eps: added to squared edge lengths (scaled units).
    Returns:
        (B, H, W) float, differentiable w.r.t. face_vertices_image.
    """
    B, F = face_vertices_image.shape[:2]
    H, W = face_idx.shape[1:]
    dev, dt = face_vertices_image.device, face_vertices_image.dtype
    px, py = pixel_grid(H, W, dt, dev, multiplier)
    grow = boxlen * multiplier
    sentinel = 4.0 * multiplier * multiplier
    inv = sigmainv / (multiplier * multiplier)
    out = []
    for b in range(B):
        covered = face_idx[b].reshape(-1) >= 0
        mask_b = torch.where(covered, torch.ones_like(px), torch.zeros_like(px))
        pix = (~covered).nonzero(as_tuple=True)[0]
        ok_face = valid_faces[b].bool() if valid_faces is not None else torch.ones(F, dtype=torch.bool, device=dev)
        vals = []
        for p0, p1 in chunks(int(pix.numel()), chunk_size(F)):
            sel = pix[p0:p1]
            cx, cy = px[sel], py[sel]
            with torch.no_grad():
                v = face_vertices_image[b].detach() * multiplier
                cand = in_box(v, cx, cy, grow) & ok_face[None, :]
                rank = cand.cumsum(dim=1)
                cand = cand & (rank <= knum)
                order = torch.where(cand, torch.arange(F, device=dev)[None, :], torch.full_like(rank, F))
                k = min(knum, F)
                cf = order.sort(dim=1).values[:, :k]  # (P, K), F = padding
                has = cf < F
                cf_safe = torch.where(has, cf, torch.zeros_like(cf))
                d6 = boundary_dist2_all(v[cf_safe], cx[:, None], cy[:, None], eps, sentinel)
                typ = d6.argmin(dim=-1, keepdim=True)
            vg = face_vertices_image[b][cf_safe] * multiplier  # (P, K, 3, 2), with grad
            d = boundary_dist2_all(vg, cx[:, None], cy[:, None], eps, sentinel).gather(-1, typ).squeeze(-1)
            prob = torch.exp(-inv * d)
            prob = torch.where(has, prob, torch.zeros_like(prob))
            vals.append(1 - torch.prod(1 - prob, dim=1))
        if vals:
            mask_b = mask_b.index_put((pix,), torch.cat(vals))
        out.append(mask_b.view(H, W))
    res = torch.stack(out) if out else face_vertices_image.new_zeros(0, H, W)
    if face_vertices_image.requires_grad and not res.requires_grad:
        # No uncovered pixel had a candidate: keep the output on the graph (zero gradient), as the kernels do.
        res = res + 0 * face_vertices_image.sum()
    return res
