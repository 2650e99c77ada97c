"""``soft_mask``: DIB-R's distance-based soft silhouette with an exact, stable backward."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from dibr_core import backend as _backend
from dibr_core.checks import check_positive, check_scaled_range, check_tensor
from dibr_core.ops.determinism import deterministic_enabled
from dibr_core.ops.first_order import first_order_only
from dibr_core.reference import soft_mask_reference

EDGE_EPS = 1e-7


class _SoftMaskFn(torch.autograd.Function):
    """The compiled kernels (soft_mask_fwd / soft_mask_bwd(_recompute)) on the inputs' device, CPU or CUDA."""

    @staticmethod
    def forward(ctx: Any, fvi: torch.Tensor, face_idx: torch.Tensor, valid: Optional[torch.Tensor], sigmainv: float,
                boxlen: float, knum: int, multiplier: float) -> torch.Tensor:
        mod = _backend.extension()
        assert mod is not None
        keep = bool(ctx.needs_input_grad[0])
        res = mod.soft_mask_fwd(fvi, face_idx, valid, sigmainv, boxlen, knum, multiplier, EDGE_EPS, keep)
        ctx.recompute = len(res) == 1  # CUDA keeps no records: its backward recomputes the candidates
        if keep:
            if ctx.recompute:
                ctx.save_for_backward(fvi, face_idx, valid)
            else:
                # Candidate records of the uncovered pixels that have candidates (for the backward).
                ctx.save_for_backward(fvi, face_idx, *res[1:])
        ctx.params = (sigmainv, multiplier, boxlen, knum)
        out: torch.Tensor = res[0]
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        mod = _backend.extension()
        assert mod is not None
        sigmainv, multiplier, boxlen, knum = ctx.params
        if ctx.recompute:
            fvi, face_idx, valid = ctx.saved_tensors
            g = mod.soft_mask_bwd_recompute(grad.contiguous(), fvi, face_idx, valid, sigmainv, boxlen, knum, multiplier,
                                            EDGE_EPS, deterministic_enabled())
            return first_order_only("soft_mask", g, fvi, grad), None, None, None, None, None, None
        fvi, face_idx, offsets, pixel, face, typ, prob = ctx.saved_tensors
        g = mod.soft_mask_bwd(grad.contiguous(), fvi, face_idx, sigmainv, multiplier, EDGE_EPS, offsets, pixel, face,
                              typ, prob)
        return first_order_only("soft_mask", g, fvi, grad), None, None, None, None, None, None


def soft_mask(
    face_vertices_image: torch.Tensor,
    face_idx: torch.Tensor,
    *,
    sigmainv: float = 7000.0,
    boxlen: float = 0.02,
    knum: int = 30,
    multiplier: float = 1000.0,
    valid_faces: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """DIB-R soft silhouette.

    A covered pixel (``face_idx >= 0``) gets 1 with no gradient. Any other pixel gets
    ``A = 1 - prod_j (1 - exp(-sigmainv * d_j^2))`` over its candidate faces: the first ``knum``
    faces, in face order, whose bounding box grown by ``boxlen`` on each side holds the pixel
    centre; d_j is the NDC distance from the pixel centre to face j's boundary. Back-facing
    faces are candidates too (as in DIB-R); exclude faces with ``valid_faces``.

    Args:
        face_vertices_image: (B, F, 3, 2) float, corners in NDC.
        face_idx: (B, H, W) int64, from :func:`rasterize`.
        sigmainv: sharpness in 1/NDC^2 (default 7000: 0.5 at 0.01 NDC from an edge);
            recommended 3e3 .. 3e4, scaled up with resolution for a fixed halo in pixels.
        boxlen: candidate box growth in NDC (default 0.02; recommended 0.02 .. 0.2).
        knum: maximum candidates per pixel (default 30; recommended 20 .. 100).
        multiplier: NDC scale for the arithmetic (DIB-R: 1000).
        valid_faces: (B, F) bool, optional: faces that may be candidates.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        (B, H, W) float in [0, 1], differentiable w.r.t. ``face_vertices_image`` (second order:
        reference backend only, as for :func:`rasterize`).

    Raises:
        ValueError, TypeError: on bad shapes, dtypes or parameters, NaN/Inf coordinates, or
            coordinates beyond the range :func:`rasterize` documents.
    """
    fn = "soft_mask"
    dims: Dict[str, int] = {}
    check_tensor(fn, "face_vertices_image", face_vertices_image, ("B", "F", 3, 2), dims, "float")
    dev = face_vertices_image.device
    which = _backend.resolve(fn, backend, dev)
    check_tensor(fn, "face_idx", face_idx, ("B", "H", "W"), dims, torch.int64, dev)
    if valid_faces is not None:
        check_tensor(fn, "valid_faces", valid_faces, ("B", "F"), dims, "bool", dev)
    check_positive(fn, "sigmainv", sigmainv)
    check_positive(fn, "boxlen", boxlen, allow_zero=True)
    check_positive(fn, "multiplier", multiplier)
    check_scaled_range(fn, "face_vertices_image", face_vertices_image, multiplier)
    if not isinstance(knum, int) or knum < 1 or knum > 4096:
        raise ValueError(f"{fn}(): knum must be an int in [1, 4096], got {knum!r}")
    if which == "reference":
        return soft_mask_reference(
            face_vertices_image, face_idx, float(sigmainv), float(boxlen), knum, float(multiplier), valid_faces, EDGE_EPS
        )
    valid_u8 = valid_faces.to(torch.uint8).contiguous() if valid_faces is not None else None
    out: torch.Tensor = _SoftMaskFn.apply(
        face_vertices_image.contiguous(), face_idx.contiguous(), valid_u8, float(sigmainv), float(boxlen), knum,
        float(multiplier),
    )
    return out
