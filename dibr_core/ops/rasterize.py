"""``rasterize``: nearest face per pixel and barycentric weights, with DIB-R's analytic backward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch

from dibr_core import backend as _backend
from dibr_core.checks import as_index, check_positive, check_scaled_range, check_tensor, describe
from dibr_core.ops.determinism import deterministic_enabled
from dibr_core.ops.first_order import first_order_only
from dibr_core.reference import rasterize_reference


@dataclass(frozen=True)
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    Attributes:
        face_idx: (B, H, W) int64. Concretely, ``face_idx[b, i, j] = f`` means face f of mesh b
            is the nearest drawn face at the centre of pixel row i (0 = top), column j; -1 means
            no face covers it.
        bary: (B, H, W, 3) float, the barycentric weights of that face's corners at the pixel
            centre (screen-space, as DIB-R); 0 on background. Differentiable w.r.t. the face
            corners' image positions.
        num_faces: F, the number of faces rasterized (None when unknown, e.g. for fragments
            built by hand): :func:`interpolate` checks its attributes against it.
    """

    face_idx: torch.Tensor
    bary: torch.Tensor
    num_faces: Optional[int] = None

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool: pixels covered by a face."""
        return self.face_idx >= 0

    def detach(self) -> "Fragments":
        return Fragments(self.face_idx, self.bary.detach(), self.num_faces)


class _RasterizeFn(torch.autograd.Function):
    """The compiled kernels (rasterize_fwd / rasterize_bwd) on the inputs' device, CPU or CUDA."""

    @staticmethod
    def forward(ctx: Any, fvi: torch.Tensor, fvz: torch.Tensor, valid: Optional[torch.Tensor], height: int,
                width: int, multiplier: float, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
        mod = _backend.extension()
        assert mod is not None
        face_idx, bary = mod.rasterize_fwd(fvi, fvz, valid, height, width, multiplier, eps)
        ctx.save_for_backward(fvi, face_idx)
        ctx.params = (multiplier, eps)
        ctx.mark_non_differentiable(face_idx)
        return face_idx, bary

    @staticmethod
    def backward(ctx: Any, _g_idx: Optional[torch.Tensor], g_bary: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        fvi, face_idx = ctx.saved_tensors
        mod = _backend.extension()
        assert mod is not None
        multiplier, eps = ctx.params
        grad = mod.rasterize_bwd(g_bary.contiguous(), fvi, face_idx, multiplier, eps, deterministic_enabled())
        return first_order_only("rasterize", grad, fvi, g_bary), None, None, None, None, None, None


def rasterize(
    face_vertices_image: torch.Tensor,
    face_vertices_z: torch.Tensor,
    height: int,
    width: int,
    valid_faces: Optional[torch.Tensor] = None,
    *,
    multiplier: float = 1000.0,
    eps: float = 1e-8,
    backend: str = "auto",
) -> Fragments:
    """Find the nearest drawn face at every pixel centre (DIB-R's rasterization).

    All tensors must share one device and one float dtype (float32 or float64). A face covers a
    pixel when the pixel centre lies in its half-open bounding box and its barycentric weights
    are all >= 0 (edges inclusive). Among covering faces the one with the largest depth key,
    interpolated linearly in screen space, wins; ties go to the lower face index. Zero-area
    faces are never drawn. Both windings are drawn: cull back faces through ``valid_faces``.

    Args:
        face_vertices_image: (B, F, 3, 2) float, corner positions in NDC (x right, y up,
            [-1, 1] spans the image).
        face_vertices_z: (B, F, 3) float, a depth key per corner where larger means closer
            (DIB-R passes camera-space z, which is negative in front of the camera).
        height: H, image rows.
        width: W, image columns.
        valid_faces: (B, F) bool, optional: faces that may be drawn.
        multiplier: scale applied to NDC for the coverage arithmetic (DIB-R: 1000).
        eps: sign-preserving epsilon added to twice the signed area, in scaled units
            (recommended 1e-10 .. 1e-6; raise it if gradients explode on slivers).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        :class:`Fragments` with ``face_idx`` (B, H, W), ``bary`` (B, H, W, 3) and ``num_faces`` F.
        Gradients flow from ``bary`` to ``face_vertices_image``; ``face_vertices_z`` only selects
        faces. Second-order gradients: the reference backend only (autograd); through the C++ and
        CUDA kernels, differentiating a gradient taken with ``create_graph=True`` raises.

    Raises:
        ValueError, TypeError: on bad shapes, dtypes or parameters, NaN/Inf coordinates, or
            coordinates beyond ``max(|x|, 1) * multiplier <= 1e9`` in float32 (``1e75`` in
            float64), where the arithmetic would overflow.
    """
    fn = "rasterize"
    dims: Dict[str, int] = {}
    check_tensor(fn, "face_vertices_image", face_vertices_image, ("B", "F", 3, 2), dims, "float")
    dev = face_vertices_image.device
    which = _backend.resolve(fn, backend, dev)
    # The C++ CPU kernels check face_vertices_z for NaN/Inf themselves (same message), without an extra pass.
    check_tensor(fn, "face_vertices_z", face_vertices_z, ("B", "F", 3), dims, face_vertices_image.dtype, dev,
                 finite=which != "cpu")
    if valid_faces is not None:
        check_tensor(fn, "valid_faces", valid_faces, ("B", "F"), dims, "bool", dev)
    h, w = as_index(height), as_index(width)
    if h is None or w is None or h <= 0 or w <= 0:
        raise ValueError(f"{fn}(): height and width must be positive ints, got {describe(height)} x {describe(width)}")
    height, width = h, w
    check_positive(fn, "multiplier", multiplier)
    check_positive(fn, "eps", eps, allow_zero=True)
    check_scaled_range(fn, "face_vertices_image", face_vertices_image, multiplier)
    if which == "reference":
        face_idx, bary = rasterize_reference(
            face_vertices_image, face_vertices_z, height, width, valid_faces, float(multiplier), float(eps)
        )
    else:
        valid_u8 = valid_faces.to(torch.uint8).contiguous() if valid_faces is not None else None
        face_idx, bary = _RasterizeFn.apply(
            face_vertices_image.contiguous(), face_vertices_z.contiguous(), valid_u8, height, width,
            float(multiplier), float(eps),
        )
    return Fragments(face_idx, bary, int(face_vertices_image.shape[1]))
