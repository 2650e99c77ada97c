"""Texture lookup with OpenGL UVs: nearest, bilinear or mip-mapped (trilinear) filtering, repeat or
clamp wrapping.

UVs follow the OpenGL convention: ``u`` grows to the right, ``v = 0`` is the *bottom* of the
texture and ``v = 1`` its top. The texture tensor is stored image-style, row 0 at the top, so the
continuous texel coordinates are ``x = u * Wt`` and ``y = (1 - v) * Ht``; texel ``(i, j)`` has
its centre at ``((j + 0.5) / Wt, 1 - (i + 0.5) / Ht)`` in UV (like ``align_corners=False``).

``grid_sample`` is not used because it has no repeat mode; the texels are gathered with index
operations, so autograd gives gradients to the texture (accumulated deterministically on the
CPU) and, in bilinear and mipmap modes, to the UVs.

Mip-mapping (``mode="mipmap"``) prefilters the texture so that texels smaller than a pixel do not
alias: :func:`mip_pyramid` halves the texture level by level with 2 x 2 box averages (gradients
flow back to the base level), and each sample blends bilinear lookups in the two levels around its
level of detail ``lod`` (level 0 is the texture itself, level ``k`` has texels ``2^k`` times
wider). :func:`face_texture_lod` gives a per-face ``lod`` from the face's screen and UV triangles.
"""
from __future__ import annotations

from typing import Dict, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F_nn

from dibr_core.checks import check_same_dtype, check_tensor

__all__ = ["face_texture_lod", "mip_pyramid", "pixel_lod", "sample_texture"]

FilterMode = Literal["bilinear", "nearest", "mipmap"]
WrapMode = Literal["repeat", "clamp"]
LodRule = Literal["max", "area"]


def _wrap_index(idx: torch.Tensor, size: int, wrap: str) -> torch.Tensor:
    if wrap == "repeat":
        return torch.remainder(idx, size)
    return idx.clamp(0, size - 1)


def _gather(flat: torch.Tensor, bid: Optional[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    """``flat`` (Bt, Ht*Wt, C); ``idx`` (M,) int64 texel indices; ``bid`` (M,) batch of each
    point, or None when ``Bt == 1`` -> (M, C)."""
    if bid is None:
        return flat[0][idx]
    return flat[bid, idx]


def _flat(texture: torch.Tensor) -> torch.Tensor:
    bt, c, ht, wt = texture.shape
    return texture.permute(0, 2, 3, 1).reshape(bt, ht * wt, c)


def _bilinear(flat: torch.Tensor, bid: Optional[torch.Tensor], u: torch.Tensor, v: torch.Tensor,
              ht: int, wt: int, wrap: str) -> torch.Tensor:
    """Bilinear lookup of (M,) points in one level ``flat`` (Bt, Ht*Wt, C) -> (M, C)."""
    x = u * wt - 0.5
    y = (1.0 - v) * ht - 0.5
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    fx = (x - x0f)[..., None]
    fy = (y - y0f)[..., None]
    x0, y0 = x0f.long(), y0f.long()
    ix0 = _wrap_index(x0, wt, wrap)
    ix1 = _wrap_index(x0 + 1, wt, wrap)
    iy0 = _wrap_index(y0, ht, wrap)
    iy1 = _wrap_index(y0 + 1, ht, wrap)
    t00 = _gather(flat, bid, iy0 * wt + ix0)
    t01 = _gather(flat, bid, iy0 * wt + ix1)
    t10 = _gather(flat, bid, iy1 * wt + ix0)
    t11 = _gather(flat, bid, iy1 * wt + ix1)
    top = t00 * (1.0 - fx) + t01 * fx
    bottom = t10 * (1.0 - fx) + t11 * fx
    return top * (1.0 - fy) + bottom * fy


def mip_pyramid(texture: torch.Tensor) -> List[torch.Tensor]:
    """The mip levels of a texture, from the texture itself down to 1 x 1.

    Level ``k + 1`` is level ``k`` reduced to ``(max(1, Hk // 2), max(1, Wk // 2))`` by box
    averaging (``adaptive_avg_pool2d``: the mean of each 2 x 2 block when the size is even; with
    an odd size the windows overlap by one texel). Differentiable: the gradient of every level
    reaches the base level.

    Args:
        texture: (Bt, C, Ht, Wt) float.

    Returns:
        A list of ``1 + floor(log2(max(Ht, Wt)))`` tensors (Bt, C, Hk, Wk), level 0 first.
    """
    check_tensor("mip_pyramid", "texture", texture, ("Bt", "C", "Ht", "Wt"), None, "float")
    if texture.shape[2] == 0 or texture.shape[3] == 0:
        raise ValueError(f"mip_pyramid(): texture is empty, got shape {tuple(texture.shape)}")
    levels = [texture]
    while levels[-1].shape[2] > 1 or levels[-1].shape[3] > 1:
        h, w = levels[-1].shape[2:]
        if h % 2 == 0 and w % 2 == 0:
            levels.append(F_nn.avg_pool2d(levels[-1], 2))
        else:
            levels.append(F_nn.adaptive_avg_pool2d(levels[-1], (max(1, h // 2), max(1, w // 2))))
    return levels


def sample_texture(
    texture: torch.Tensor,
    uv: torch.Tensor,
    mode: FilterMode = "bilinear",
    wrap: WrapMode = "repeat",
    lod: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Look up a batch of textures at UV coordinates.

    Bilinear: ``x = u * Wt - 0.5``, ``x0 = floor(x)``, ``fx = x - x0`` (same for ``y`` with
    ``(1 - v) * Ht - 0.5``); the four texels ``(x0 | x0 + 1, y0 | y0 + 1)`` are blended with the
    weights ``(1 - fx | fx) * (1 - fy | fy)``. Sampling at a texel centre returns that texel.
    Nearest: the texel ``(floor(u * Wt), floor((1 - v) * Ht))``; the UVs get no gradient.
    Mipmap (trilinear): ``lod`` is clamped to ``[0, L - 1]`` for the ``L`` levels of
    :func:`mip_pyramid`; with ``k = floor(lod)`` and ``t = lod - k`` the result is
    ``(1 - t) * bilinear(level k) + t * bilinear(level k + 1)``, so ``lod = 0`` is exactly the
    bilinear lookup. Gradients flow to the texture (through the pyramid), the UVs and ``lod``.
    Out-of-range texel indices are wrapped modulo the size (``"repeat"``) or clamped to
    ``[0, size - 1]`` (``"clamp"``). With ``"repeat"``, ``v = 0`` lies on the boundary between the
    bottom row and (the next tile's) top row; with ``"clamp"`` it gives the bottom row.

    Args:
        texture: (Bt, C, Ht, Wt) float, with ``Bt == B`` or ``Bt == 1`` (shared by the batch).
        uv: (B, H, W, 2) or (B, N, 2) float, same dtype and device as ``texture``.
        mode: ``"bilinear"``, ``"nearest"`` or ``"mipmap"``.
        wrap: ``"repeat"`` or ``"clamp"``.
        lod: (B, H, W) or (B, N) float level of detail per sample (``log2`` of the sample's
            footprint in base texels, e.g. from :func:`face_texture_lod` and :func:`pixel_lod`);
            required by ``"mipmap"``, not accepted by the other modes.

    Returns:
        (B, H, W, C) or (B, N, C) float: the sampled values, channels last.

    Raises:
        ValueError: on bad shapes, non-finite values, an empty texture, mismatched batch sizes,
            an unknown ``mode`` / ``wrap`` or a missing / unexpected ``lod``.
        TypeError: on non-float inputs or mismatched dtypes.
    """
    fn = "sample_texture"
    if mode not in ("bilinear", "nearest", "mipmap"):
        raise ValueError(f"{fn}(): mode must be 'bilinear', 'nearest' or 'mipmap', got {mode!r}")
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
    if mode == "mipmap":
        if lod is None:
            raise ValueError(f"{fn}(): mode 'mipmap' needs lod with shape {tuple(uv.shape[:-1])} (uv's shape without the last axis)")
        spec = ("B", "N") if uv.dim() == 3 else ("B", "H", "W")
        check_tensor(fn, "lod", lod, shape=spec, dims=udims, dtype="float", finite=True, device=texture.device)
        check_same_dtype(fn, texture=texture, lod=lod)
    elif lod is not None:
        raise ValueError(f"{fn}(): lod is only used by mode 'mipmap', got mode {mode!r}")

    c, ht, wt = tdims["C"], tdims["Ht"], tdims["Wt"]
    out_shape: Tuple[int, ...] = tuple(uv.shape[:-1]) + (c,)
    pts = uv.reshape(-1, 2)
    npts = pts.shape[0]
    bid = None if bt == 1 else torch.arange(b, device=uv.device).repeat_interleave(npts // b if b else 0)

    if mode == "nearest":
        flat = _flat(texture)
        ix = _wrap_index(torch.floor(pts[:, 0] * wt).long(), wt, wrap)
        iy = _wrap_index(torch.floor((1.0 - pts[:, 1]) * ht).long(), ht, wrap)
        return _gather(flat, bid, iy * wt + ix).reshape(out_shape)
    if mode == "bilinear":
        return _bilinear(_flat(texture), bid, pts[:, 0], pts[:, 1], ht, wt, wrap).reshape(out_shape)

    assert lod is not None
    levels = mip_pyramid(texture)
    lv = lod.reshape(-1).clamp(0.0, float(len(levels) - 1))
    k0 = torch.floor(lv).long()
    t = lv - k0.to(lv.dtype)
    out = texture.new_zeros(npts, c)
    for k, level in enumerate(levels):
        weight = torch.where(k0 == k, 1.0 - t, torch.where(k0 + 1 == k, t, torch.zeros_like(t)))
        sel = torch.nonzero(weight > 0).squeeze(1)
        if sel.numel() == 0:
            continue
        hk, wk = level.shape[2], level.shape[3]
        vals = _bilinear(_flat(level), None if bid is None else bid[sel], pts[sel, 0], pts[sel, 1], hk, wk, wrap)
        out = out.index_add(0, sel, vals * weight[sel, None])
    return out.reshape(out_shape)


def face_texture_lod(
    face_vertices_image: torch.Tensor,
    face_uvs: torch.Tensor,
    image_size: Tuple[int, int],
    texture_size: Tuple[int, int],
    rule: LodRule = "max",
) -> torch.Tensor:
    """Per-face level of detail for mip-mapped sampling.

    Each face maps its screen triangle affinely onto its UV triangle; ``J`` (2 x 2) is that
    map's Jacobian in base texels per pixel, from the corners' pixel positions (NDC scaled by
    ``W / 2``, ``H / 2``) and texel positions (UV scaled by ``Wt``, ``Ht``). With ``"max"``
    (OpenGL's rule) ``lod = log2(max(|J e_x|, |J e_y|))``, the longer of the footprint's two axes;
    at grazing angles it blurs along the short axis rather than alias along the long one. With
    ``"area"`` ``lod = 0.5 log2(|det J|)``, the ratio of the face's texel area to its pixel area:
    sharper, but it aliases where the footprint is elongated. The map is exact for screen-linear
    interpolation (``perspective_correct=False``); with perspective-correct UVs it is the face's
    average, good while faces are small on screen. The result is always finite: a face collapsed to
    a segment on screen gets a large value, a face with no UV area a very negative one (both are
    clamped by :func:`sample_texture`; zero-area faces are never drawn anyway).

    Args:
        face_vertices_image: (B, F, 3, 2) float, corner positions in NDC.
        face_uvs: (B, F, 3, 2) float, corner UVs.
        image_size: (H, W) pixels.
        texture_size: (Ht, Wt) texels of the base level.
        rule: ``"max"`` or ``"area"``.

    Returns:
        (B, F) float, ``log2`` of the footprint of one pixel in base texels.
    """
    fn = "face_texture_lod"
    if rule not in ("max", "area"):
        raise ValueError(f"{fn}(): rule must be 'max' or 'area', got {rule!r}")
    dims: Dict[str, int] = {}
    check_tensor(fn, "face_vertices_image", face_vertices_image, ("B", "F", 3, 2), dims, "float")
    check_tensor(fn, "face_uvs", face_uvs, ("B", "F", 3, 2), dims, face_vertices_image.dtype,
                 face_vertices_image.device)
    h, w = int(image_size[0]), int(image_size[1])
    ht, wt = int(texture_size[0]), int(texture_size[1])
    if min(h, w, ht, wt) <= 0:
        raise ValueError(f"{fn}(): image_size and texture_size must be positive, got {image_size} and {texture_size}")
    scr = face_vertices_image * face_vertices_image.new_tensor([w / 2.0, h / 2.0])
    tex = face_uvs * face_uvs.new_tensor([float(wt), float(ht)])
    e1, e2 = scr[:, :, 1] - scr[:, :, 0], scr[:, :, 2] - scr[:, :, 0]
    t1, t2 = tex[:, :, 1] - tex[:, :, 0], tex[:, :, 2] - tex[:, :, 0]
    det = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    tiny = torch.finfo(det.dtype).tiny
    det2 = (det * det).clamp_min(tiny)
    if rule == "area":
        tdet = (t1[..., 0] * t2[..., 1] - t1[..., 1] * t2[..., 0]).abs()
        return 0.5 * (torch.log2(tdet.clamp_min(tiny)) - 0.5 * torch.log2(det2))
    # J = T E^-1 with E = [e1 e2], T = [t1 t2]; its columns times det:
    col_x = t1 * e2[..., 1:2] - t2 * e1[..., 1:2]
    col_y = t2 * e1[..., 0:1] - t1 * e2[..., 0:1]
    num = torch.maximum((col_x * col_x).sum(-1), (col_y * col_y).sum(-1))
    return 0.5 * (torch.log2(num.clamp_min(tiny)) - torch.log2(det2))


def pixel_lod(face_lod: torch.Tensor, face_idx: torch.Tensor) -> torch.Tensor:
    """Spread a per-face level of detail to the pixels: ``face_lod`` (B, F), ``face_idx`` (B, H, W)
    int64 (-1 on background) -> (B, H, W), 0 on background."""
    fn = "pixel_lod"
    dims: Dict[str, int] = {}
    check_tensor(fn, "face_lod", face_lod, ("B", "F"), dims, "float")
    check_tensor(fn, "face_idx", face_idx, ("B", "H", "W"), dims, "int", face_lod.device)
    b = face_lod.shape[0]
    idx = face_idx.reshape(b, -1)
    vals = torch.gather(face_lod, 1, idx.clamp_min(0).long())
    return torch.where(idx >= 0, vals, torch.zeros_like(vals)).reshape(face_idx.shape)
