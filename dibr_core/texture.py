"""Texture lookup with OpenGL UVs, bilinear or nearest filtering and repeat or clamp wrapping.

UVs follow the OpenGL convention: ``u`` grows to the right, ``v = 0`` is the *bottom* of the
texture and ``v = 1`` its top. The texture tensor is stored image-style, row 0 at the top, so the
continuous texel coordinates are ``x = u * Wt`` and ``y = (1 - v) * Ht``; texel ``(i, j)`` has
its centre at ``((j + 0.5) / Wt, 1 - (i + 0.5) / Ht)`` in UV (like ``align_corners=False``).

``grid_sample`` is not used because it has no repeat mode; the texels are gathered with index
operations, so autograd gives gradients to the texture (accumulated deterministically on the
CPU) and, in bilinear mode, to the UVs.
"""
from __future__ import annotations

from typing import Dict, Literal, Tuple

import torch

from dibr_core.checks import check_same_dtype, check_tensor

__all__ = ["sample_texture"]

FilterMode = Literal["bilinear", "nearest"]
WrapMode = Literal["repeat", "clamp"]


def _wrap_index(idx: torch.Tensor, size: int, wrap: str) -> torch.Tensor:
    if wrap == "repeat":
        return torch.remainder(idx, size)
    return idx.clamp(0, size - 1)


def _gather(flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``flat`` (Bt, Ht*Wt, C) with Bt in {1, B}; ``idx`` (B, P) int64 -> (B, P, C)."""
    if flat.shape[0] == 1:
        return flat[0][idx]
    batch = torch.arange(idx.shape[0], device=idx.device)[:, None]
    return flat[batch, idx]


def sample_texture(
    texture: torch.Tensor,
    uv: torch.Tensor,
    mode: FilterMode = "bilinear",
    wrap: WrapMode = "repeat",
) -> torch.Tensor:
    """Look up a batch of textures at UV coordinates.

    Bilinear: ``x = u * Wt - 0.5``, ``x0 = floor(x)``, ``fx = x - x0`` (same for ``y`` with
    ``(1 - v) * Ht - 0.5``); the four texels ``(x0 | x0 + 1, y0 | y0 + 1)`` are blended with the
    weights ``(1 - fx | fx) * (1 - fy | fy)``. Sampling at a texel centre returns that texel.
    Nearest: the texel ``(floor(u * Wt), floor((1 - v) * Ht))``; the UVs get no gradient.
    Out-of-range texel indices are wrapped modulo the size (``"repeat"``) or clamped to
    ``[0, size - 1]`` (``"clamp"``). With ``"repeat"``, ``v = 0`` lies on the boundary between the
    bottom row and (the next tile's) top row; with ``"clamp"`` it gives the bottom row.

    Args:
        texture: (Bt, C, Ht, Wt) float, with ``Bt == B`` or ``Bt == 1`` (shared by the batch).
        uv: (B, H, W, 2) or (B, N, 2) float, same dtype and device as ``texture``.
        mode: ``"bilinear"`` or ``"nearest"``.
        wrap: ``"repeat"`` or ``"clamp"``.

    Returns:
        (B, H, W, C) or (B, N, C) float: the sampled values, channels last.

    Raises:
        ValueError: on bad shapes, non-finite values, an empty texture, mismatched batch sizes or
            an unknown ``mode`` / ``wrap``.
        TypeError: on non-float inputs or mismatched dtypes.
    """
    fn = "sample_texture"
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"{fn}(): mode must be 'bilinear' or 'nearest', got {mode!r}")
    if wrap not in ("repeat", "clamp"):
        raise ValueError(f"{fn}(): wrap must be 'repeat' or 'clamp', got {wrap!r}")
    tdims: Dict[str, int] = {}
    check_tensor(fn, "texture", texture, shape=("Bt", "C", "Ht", "Wt"), dims=tdims, dtype="float", finite=True)
    if tdims["Ht"] == 0 or tdims["Wt"] == 0:
        raise ValueError(f"{fn}(): texture is empty, got shape {tuple(texture.shape)}")
    udims: Dict[str, int] = {}
    if isinstance(uv, torch.Tensor) and uv.dim() == 3:
        check_tensor(fn, "uv", uv, shape=("B", "N", 2), dims=udims, dtype="float", finite=True, device=texture.device)
    else:
        check_tensor(fn, "uv", uv, shape=("B", "H", "W", 2), dims=udims, dtype="float", finite=True, device=texture.device)
    check_same_dtype(fn, texture=texture, uv=uv)
    bt, b = tdims["Bt"], udims["B"]
    if bt != b and bt != 1:
        raise ValueError(
            f"{fn}(): texture batch size {bt} must equal the uv batch size {b} or be 1, "
            f"got texture {tuple(texture.shape)} and uv {tuple(uv.shape)}"
        )

    c, ht, wt = tdims["C"], tdims["Ht"], tdims["Wt"]
    out_shape: Tuple[int, ...] = tuple(uv.shape[:-1]) + (c,)
    flat = texture.permute(0, 2, 3, 1).reshape(bt, ht * wt, c)
    pts = uv.reshape(b, -1, 2)
    x = pts[..., 0] * wt
    y = (1.0 - pts[..., 1]) * ht

    if mode == "nearest":
        ix = _wrap_index(torch.floor(x).long(), wt, wrap)
        iy = _wrap_index(torch.floor(y).long(), ht, wrap)
        return _gather(flat, iy * wt + ix).reshape(out_shape)

    x = x - 0.5
    y = y - 0.5
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    fx = (x - x0f)[..., None]
    fy = (y - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()
    ix0 = _wrap_index(x0, wt, wrap)
    ix1 = _wrap_index(x0 + 1, wt, wrap)
    iy0 = _wrap_index(y0, ht, wrap)
    iy1 = _wrap_index(y0 + 1, ht, wrap)
    t00 = _gather(flat, iy0 * wt + ix0)
    t01 = _gather(flat, iy0 * wt + ix1)
    t10 = _gather(flat, iy1 * wt + ix0)
    t11 = _gather(flat, iy1 * wt + ix1)
    top = t00 * (1.0 - fx) + t01 * fx
    bottom = t10 * (1.0 - fx) + t11 * fx
    return (top * (1.0 - fy) + bottom * fy).reshape(out_shape)
