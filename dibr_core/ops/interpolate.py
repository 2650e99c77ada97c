"""``interpolate``: per-pixel attributes from per-vertex (or per-corner) attributes."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from dibr_core import backend as _backend
from dibr_core.checks import check_index_range, check_tensor
from dibr_core.ops.determinism import deterministic_enabled
from dibr_core.ops.first_order import first_order_only
from dibr_core.ops.rasterize import Fragments
from dibr_core.reference import interpolate_reference


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
    covered = (face_idx >= 0).unsqueeze(-1)
    if face_vertices_w.shape[1] == 0:  # no faces: every pixel is background
        return torch.zeros_like(bary)
    idx = face_idx.clamp(min=0).reshape(B, H * W, 1).expand(-1, -1, 3)
    # Background pixels gathered face 0's w: replace it by 1 so that it cannot give 0 / 0.
    wk = torch.where(covered, torch.gather(face_vertices_w, 1, idx).view(B, H, W, 3), torch.ones_like(bary))
    q = bary / wk
    s = q.sum(-1, keepdim=True)
    s = torch.where(covered, s, torch.ones_like(s))
    return torch.where(covered, q / s, torch.zeros_like(q))


class _InterpolateFn(torch.autograd.Function):
    """The compiled kernels (interpolate_fwd / interpolate_bwd) on the inputs' device, CPU or CUDA."""

    @staticmethod
    def forward(ctx: Any, attr: torch.Tensor, bary: torch.Tensor, faces: Optional[torch.Tensor],
                face_idx: torch.Tensor) -> torch.Tensor:
        mod = _backend.extension()
        assert mod is not None
        ctx.save_for_backward(attr, bary, faces, face_idx)
        out: torch.Tensor = mod.interpolate_fwd(attr, faces, face_idx, bary)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        attr, bary, faces, face_idx = ctx.saved_tensors
        mod = _backend.extension()
        assert mod is not None
        need_attr, need_bary = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        g_attr, g_bary = mod.interpolate_bwd(grad.contiguous(), attr, faces, face_idx, bary, need_attr, need_bary,
                                             deterministic_enabled())
        g_attr = first_order_only("interpolate", g_attr if need_attr else None, attr, bary, grad)
        g_bary = first_order_only("interpolate", g_bary if need_bary else None, attr, bary, grad)
        return g_attr, g_bary, None, None


def interpolate(
    attributes: torch.Tensor,
    fragments: Fragments,
    faces: Optional[torch.Tensor] = None,
    *,
    face_vertices_w: Optional[torch.Tensor] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Interpolate attributes at every pixel: ``I = sum_k w_k u_k`` over the pixel's face corners.

    Args:
        attributes: per-vertex values (B, V, D) when ``faces`` is given, else per-corner values
            (B, F, 3, D) (Kaolin's ``face_features``). Gradients flow to them and, through the
            weights, to the corners' image positions.
        fragments: the output of :func:`rasterize`.
        faces: (F, 3) or (B, F, 3) int64 vertex indices of the rasterized faces, optional.
        face_vertices_w: (B, F, 3) clip-space w per corner, optional: when given the weights are
            made perspective-correct (right for textures); when omitted they stay linear in
            screen space, as in DIB-R and Kaolin.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        (B, H, W, D) float, 0 on background pixels. Second-order gradients: reference backend only.

    Raises:
        ValueError: when the faces (or per-corner attributes) are not the F faces the fragments
            were rasterized from, or ``fragments.face_idx`` holds an index outside [-1, F);
            ValueError, TypeError: on other bad shapes or dtypes.
    """
    fn = "interpolate"
    dims: Dict[str, int] = {}
    if not isinstance(fragments, Fragments):
        raise TypeError(f"{fn}(): fragments must be the Fragments of rasterize(), got {type(fragments).__name__}")
    face_idx = check_tensor(fn, "fragments.face_idx", fragments.face_idx, ("B", "H", "W"), dims, torch.int64)
    dev = face_idx.device
    bary = check_tensor(fn, "fragments.bary", fragments.bary, ("B", "H", "W", 3), dims, "float", dev)
    B = dims["B"]
    if faces is None:
        check_tensor(fn, "attributes", attributes, ("B", "F", 3, "D"), dims, "float", dev)
        attr = attributes.reshape(B, -1, attributes.shape[-1])
    else:
        check_tensor(fn, "attributes", attributes, ("B", "V", "D"), dims, "float", dev)
        if faces.dim() == 3:
            check_tensor(fn, "faces", faces, ("B", "F", 3), dims, "int", dev)
        else:
            check_tensor(fn, "faces", faces, ("F", 3), dims, "int", dev)
        check_index_range(fn, "faces", faces, dims["V"], "vertices")
        faces = faces.long().contiguous()
        attr = attributes
    # face_idx indexes the faces: it must come from rasterizing exactly these F faces.
    n_faces = dims["F"]
    what = "attributes" if faces is None else "faces"
    if fragments.num_faces is not None and fragments.num_faces != n_faces:
        shown = attributes.shape if faces is None else faces.shape
        raise ValueError(f"{fn}(): {what} has F={n_faces} faces (shape {tuple(shown)}) but the fragments come "
                         f"from rasterizing {fragments.num_faces} faces; they must be the same faces")
    if fragments.num_faces is None or dev.type == "cpu":  # hand-built fragments, or a cheap check
        check_index_range(fn, "fragments.face_idx", face_idx, n_faces, f"faces in {what}", lower=-1)
    attr = attr.to(bary.dtype)
    if face_vertices_w is not None:
        check_tensor(fn, "face_vertices_w", face_vertices_w, ("B", "F", 3), dims, "float", dev)
        bary = perspective_correct(bary, fragments.face_idx, face_vertices_w.to(bary.dtype))
    which = _backend.resolve(fn, backend, dev)
    if which == "reference":
        return interpolate_reference(attr, faces, face_idx, bary)
    out: torch.Tensor = _InterpolateFn.apply(attr.contiguous(), bary.contiguous(), faces, face_idx.contiguous())
    return out
