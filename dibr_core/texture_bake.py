"""Texture-space helpers: which texels the UV islands cover, padding around the islands, and
baking vertex colours into a UV texture.

Everything here rasterizes the UV triangles with the project's own rasterizer, using UV as the
screen: ``ndc = 2 uv - 1``, so texel ``(i, j)``'s centre ``((j + 0.5) / Wt, 1 - (i + 0.5) / Ht)``
is exactly the centre of pixel ``(i, j)`` of an ``Ht x Wt`` image (conventions.md, sections 3
and 7). A texel is covered when its centre lies in a UV triangle (edges inclusive). UVs outside
``[0, 1]`` are not wrapped: islands must lie in the unit square (``dibr_core.uv.auto_uvs`` packs
them so).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F_nn

from dibr_core.checks import check_index_range, check_tensor
from dibr_core.ops import Fragments, interpolate, rasterize

__all__ = ["bake_vertex_colors", "pad_texture_islands", "uv_coverage"]

Size = Union[int, Tuple[int, int]]


def _size(fn: str, size: Size) -> Tuple[int, int]:
    ht, wt = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if ht <= 0 or wt <= 0:
        raise ValueError(f"{fn}(): size must be positive, got {size!r}")
    return ht, wt


def _rasterize_uvs(fn: str, face_uvs: torch.Tensor, ht: int, wt: int, backend: str) -> Fragments:
    check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), None, "float", finite=True, nonempty=())
    if face_uvs.shape[0] == 0:
        raise ValueError(f"{fn}(): face_uvs is empty, got shape (0, 3, 2)")
    fvi = (2.0 * face_uvs - 1.0)[None]
    key = face_uvs.new_zeros(1, face_uvs.shape[0], 3)
    return rasterize(fvi, key, ht, wt, backend=backend)


def uv_coverage(face_uvs: torch.Tensor, size: Size, *, backend: str = "auto") -> torch.Tensor:
    """Which texels the UV triangles cover.

    Args:
        face_uvs: (F, 3, 2) float per-corner UVs.
        size: texture size, ``Ht == Wt == size`` or ``(Ht, Wt)``.
        backend: the rasterizer's backend.

    Returns:
        (Ht, Wt) bool, True where a texel centre lies inside some face's UV triangle.
    """
    ht, wt = _size("uv_coverage", size)
    return _rasterize_uvs("uv_coverage", face_uvs, ht, wt, backend).face_idx[0] >= 0


def pad_texture_islands(
    texture: torch.Tensor,
    face_uvs: Optional[torch.Tensor] = None,
    pixels: int = 4,
    *,
    coverage: Optional[torch.Tensor] = None,
    fill: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Fill the texels around the UV islands with the islands' own colours.

    Dilation, ``pixels`` rounds: every uncovered texel with a covered texel among its 8
    neighbours takes the mean of those neighbours and becomes covered. So a texel up to
    ``pixels`` texels from an island gets (approximately) the nearest island texel's colour, and
    bilinear or mip-mapped lookups near island borders no longer blend in the background. Covered
    texels keep their values. Differentiable: a padded texel's gradient flows to the island
    texels it was copied from.

    Args:
        texture: (B, C, Ht, Wt) float.
        face_uvs: (F, 3, 2) float UVs whose triangles make the islands (see :func:`uv_coverage`);
            not needed when ``coverage`` is given.
        pixels: dilation width in texels (>= 0). Mip level ``k`` needs about ``2^k`` texels.
        coverage: (Ht, Wt) bool, optional: the island texels, instead of rasterizing
            ``face_uvs`` (e.g. the texels a fit's views saw).
        fill: value for texels still uncovered after the dilation; None keeps the input's.
        backend: the rasterizer's backend.

    Returns:
        (B, C, Ht, Wt) float, the padded texture.
    """
    fn = "pad_texture_islands"
    dims: Dict[str, int] = {}
    check_tensor(fn, "texture", texture, ("B", "C", "Ht", "Wt"), dims, "float", finite=True)
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ValueError(f"{fn}(): pixels must be a non-negative int, got {pixels!r}")
    ht, wt = dims["Ht"], dims["Wt"]
    if coverage is None:
        if face_uvs is None:
            raise ValueError(f"{fn}(): give face_uvs (F, 3, 2) or coverage (Ht, Wt)")
        check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), None, texture.dtype, texture.device)
        coverage = _rasterize_uvs(fn, face_uvs, ht, wt, backend).face_idx[0] >= 0
    else:
        check_tensor(fn, "coverage", coverage, ("Ht", "Wt"), dims, "bool", texture.device)
    mask = coverage.to(texture.dtype)[None, None]
    val = texture * mask
    for _ in range(pixels):
        total = F_nn.avg_pool2d(val, 3, stride=1, padding=1, count_include_pad=True) * 9.0
        count = F_nn.avg_pool2d(mask, 3, stride=1, padding=1, count_include_pad=True) * 9.0
        grow = (count > 0.5) & (mask < 0.5)
        if not bool(grow.any()):
            break
        val = torch.where(grow, total / count.clamp_min(1.0), val)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    rest = texture if fill is None else torch.full_like(texture, float(fill))
    return torch.where(mask > 0.5, val, rest)


def bake_vertex_colors(
    faces: torch.Tensor,
    colors: torch.Tensor,
    face_uvs: torch.Tensor,
    size: Size,
    *,
    pixels: int = 4,
    fill: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Bake per-vertex colours into a UV texture.

    Each face is rasterized in UV space and its texels get the face's vertex colours
    interpolated with the texel centre's barycentric weights (linear in UV, so a colour that is
    linear over a face is reproduced exactly at texel centres). Where UV triangles overlap, the
    lower face index wins. Then the islands are padded by ``pixels`` texels
    (:func:`pad_texture_islands`); texels farther out get ``fill``, by default the mean baked
    colour. Differentiable with respect to ``colors``.

    Args:
        faces: (F, 3) int vertex indices.
        colors: (V, C) float per-vertex values (e.g. RGB in [0, 1]).
        face_uvs: (F, 3, 2) float per-corner UVs in [0, 1], ``colors``' dtype and device.
        size: texture size, ``Ht == Wt == size`` or ``(Ht, Wt)``.
        pixels: padding around the islands, in texels.
        fill: value of the texels beyond the padding; None for the mean baked colour.
        backend: the rasterizer's and interpolation's backend.

    Returns:
        (1, C, Ht, Wt) float texture (rows top to bottom, as :func:`dibr_core.render.render` takes).
    """
    fn = "bake_vertex_colors"
    dims: Dict[str, int] = {}
    check_tensor(fn, "colors", colors, ("V", "C"), dims, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), dims, "int", colors.device)
    check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), dims, colors.dtype, colors.device, finite=True)
    if dims["V"] == 0 or dims["F"] == 0:
        raise ValueError(f"{fn}(): the mesh is empty (V={dims['V']}, F={dims['F']})")
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    ht, wt = _size(fn, size)
    frags = _rasterize_uvs(fn, face_uvs, ht, wt, backend)
    baked = interpolate(colors[None], frags, faces.long(), backend=backend)[0]  # (Ht, Wt, C)
    covered = frags.face_idx[0] >= 0
    if fill is None:
        n = covered.sum().clamp_min(1).to(colors.dtype)
        bg = (baked * covered[..., None].to(colors.dtype)).sum((0, 1)) / n
    else:
        bg = torch.full((colors.shape[1],), float(fill), dtype=colors.dtype, device=colors.device)
    base = torch.where(covered[..., None], baked, bg.expand_as(baked))
    return pad_texture_islands(base.permute(2, 0, 1)[None], pixels=pixels, coverage=covered)
