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

from dibr_core.checks import check_index_range, check_tensor
from dibr_core.ops import Fragments, interpolate, rasterize

__all__ = ["bake_vertex_colors", "island_padding_index", "pad_texture_islands", "uv_coverage"]

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


# Neighbour offsets (row, column) in the order a padded texel looks at them: sides, then corners.
_OFFSETS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


def _shifted(src: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """out[i, j] = src[i + dy, j + dx], -1 outside the texture."""
    ht, wt = src.shape
    out = torch.full_like(src, -1)
    out[max(0, -dy):ht - max(0, dy), max(0, -dx):wt - max(0, dx)] = \
        src[max(0, dy):ht - max(0, -dy), max(0, dx):wt - max(0, -dx)]
    return out


def island_padding_index(coverage: torch.Tensor, pixels: int = 4) -> torch.Tensor:
    """For every texel, the island texel whose value it takes when the islands are padded.

    ``pixels`` rounds of dilation: an uncovered texel next to (8-neighbourhood) a texel that was
    covered or reached in an earlier round takes that neighbour's source (sides before
    corners), so a texel ``d <= pixels`` texels (Chebyshev) from an island copies an island
    texel about ``d`` away, the nearest one up to ties.

    Args:
        coverage: (Ht, Wt) bool island texels (e.g. :func:`uv_coverage`).
        pixels: dilation width in texels (>= 0).

    Returns:
        (Ht, Wt) int64: the flat index ``row * Wt + col`` of the source texel (the texel itself
        on the islands), -1 for texels farther than ``pixels`` from every island.
    """
    fn = "island_padding_index"
    check_tensor(fn, "coverage", coverage, ("Ht", "Wt"), None, "bool")
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ValueError(f"{fn}(): pixels must be a non-negative int, got {pixels!r}")
    ht, wt = coverage.shape
    flat = torch.arange(ht * wt, device=coverage.device).reshape(ht, wt)
    src = torch.where(coverage, flat, torch.full_like(flat, -1))
    for _ in range(pixels):
        grown = src.clone()
        for dy, dx in _OFFSETS:
            nb = _shifted(src, dy, dx)
            grown = torch.where((grown < 0) & (nb >= 0), nb, grown)
        if torch.equal(grown, src):
            break
        src = grown
    return src


def pad_texture_islands(
    texture: torch.Tensor,
    face_uvs: Optional[torch.Tensor] = None,
    pixels: int = 4,
    *,
    coverage: Optional[torch.Tensor] = None,
    index: Optional[torch.Tensor] = None,
    fill: Optional[float] = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Fill the texels around the UV islands with the nearest island texel's colour.

    Every texel up to ``pixels`` texels from an island takes the value of an island texel
    (:func:`island_padding_index`), so bilinear or mip-mapped lookups near island borders no
    longer blend in the background. Island texels keep their values. Differentiable (a gather):
    a padded texel's gradient flows to the island texel it copies. In an optimisation loop,
    compute ``index`` once and pass it, so each call is a single gather.

    Args:
        texture: (B, C, Ht, Wt) float.
        face_uvs: (F, 3, 2) float UVs whose triangles make the islands (see :func:`uv_coverage`);
            needed unless ``coverage`` or ``index`` is given.
        pixels: dilation width in texels (>= 0). Mip level ``k`` needs about ``2^k`` texels.
        coverage: (Ht, Wt) bool, optional: the island texels, instead of rasterizing
            ``face_uvs`` (e.g. the texels a fit's views saw).
        index: (Ht, Wt) int64, optional: a precomputed :func:`island_padding_index` (then
            ``face_uvs``, ``coverage`` and ``pixels`` are not used).
        fill: value for texels farther than ``pixels`` from every island; None keeps the input's.
        backend: the rasterizer's backend.

    Returns:
        (B, C, Ht, Wt) float, the padded texture.
    """
    fn = "pad_texture_islands"
    dims: Dict[str, int] = {}
    check_tensor(fn, "texture", texture, ("B", "C", "Ht", "Wt"), dims, "float", finite=True)
    ht, wt = dims["Ht"], dims["Wt"]
    if index is None:
        if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
            raise ValueError(f"{fn}(): pixels must be a non-negative int, got {pixels!r}")
        if coverage is None:
            if face_uvs is None:
                raise ValueError(f"{fn}(): give face_uvs (F, 3, 2), coverage (Ht, Wt) or index (Ht, Wt)")
            check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), None, texture.dtype, texture.device)
            coverage = _rasterize_uvs(fn, face_uvs, ht, wt, backend).face_idx[0] >= 0
        else:
            check_tensor(fn, "coverage", coverage, ("Ht", "Wt"), dims, "bool", texture.device)
        index = island_padding_index(coverage, pixels)
    else:
        check_tensor(fn, "index", index, ("Ht", "Wt"), dims, torch.int64, texture.device)
    b, c = dims["B"], dims["C"]
    src = index.reshape(-1)
    gathered = texture.reshape(b, c, ht * wt)[:, :, src.clamp_min(0)].reshape(b, c, ht, wt)
    rest = texture if fill is None else torch.full_like(texture, float(fill))
    return torch.where(index >= 0, gathered, rest)


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
