"""Tests for dibr_core.texture_bake: UV coverage, island padding and the vertex-colour bake."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.mesh import icosphere
from dibr_core.render import Meshes, RenderSettings, render
from dibr_core.texture import sample_texture
from dibr_core.texture_bake import bake_vertex_colors, island_padding_index, pad_texture_islands, uv_coverage
from dibr_core.uv import auto_uvs

F64 = torch.float64

# One UV triangle whose edges pass through no texel centre of a 16 x 16 texture.
TRI = torch.tensor([[[0.23, 0.19], [0.81, 0.31], [0.37, 0.77]]], dtype=F64)


def _inside(uv: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(N, 2) points -> (N,) bool: inside the counter-clockwise triangle (3, 2)."""
    ok = np.ones(len(uv), dtype=bool)
    for k in range(3):
        a, b = tri[k], tri[(k + 1) % 3]
        ok &= (b[0] - a[0]) * (uv[:, 1] - a[1]) - (b[1] - a[1]) * (uv[:, 0] - a[0]) >= 0
    return ok


def _centres(ht: int, wt: int) -> np.ndarray:
    """(Ht * Wt, 2) UVs of the texel centres, row by row from the top."""
    i, j = np.meshgrid(np.arange(ht), np.arange(wt), indexing="ij")
    return np.stack([(j + 0.5) / wt, 1 - (i + 0.5) / ht], -1).reshape(-1, 2)


def test_uv_coverage_is_the_texel_centres_inside() -> None:
    cov = uv_coverage(TRI, (16, 12))
    assert cov.shape == (16, 12) and cov.dtype == torch.bool
    expected = _inside(_centres(16, 12), TRI[0].numpy()).reshape(16, 12)
    assert 20 < int(expected.sum()) < 100
    np.testing.assert_array_equal(cov.numpy(), expected)


def test_padding_grows_islands_by_the_given_width() -> None:
    cov = torch.zeros(12, 12, dtype=torch.bool)
    cov[4:6, 5:8] = True
    tex = torch.zeros(1, 2, 12, 12, dtype=F64)
    tex[0, 0][cov] = 1.0
    tex[0, 1][cov] = torch.arange(6, dtype=F64)
    tex[0, 0][~cov] = -5.0  # background
    padded = pad_texture_islands(tex, pixels=2, coverage=cov)
    # Island texels keep their values; texels within 2 (Chebyshev) of the island get island
    # colours; farther ones keep the background.
    assert torch.equal(padded[0, :, cov], tex[0, :, cov])
    rows, cols = torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij")
    dist = torch.maximum((rows - rows.clamp(4, 5)).abs(), (cols - cols.clamp(5, 7)).abs())
    assert bool((padded[0, 0][(dist >= 1) & (dist <= 2)] == 1.0).all())
    assert bool((padded[0, 0][dist > 2] == -5.0).all())
    lo, hi = float(tex[0, 1][cov].min()), float(tex[0, 1][cov].max())
    ring = padded[0, 1][(dist >= 1) & (dist <= 2)]
    assert bool(((ring >= lo) & (ring <= hi)).all())
    # Each padded texel copies one island texel: the one straight below or beside it when there
    # is one (sides before corners), a corner texel diagonally; fill replaces the rest.
    assert float(padded[0, 1, 3, 6]) == float(tex[0, 1, 4, 6])
    assert float(padded[0, 1, 5, 9]) == float(tex[0, 1, 5, 7])
    assert float(padded[0, 1, 2, 3]) == float(tex[0, 1, 4, 5])
    index = island_padding_index(cov, 2)
    assert int(index[3, 6]) == 4 * 12 + 6 and int(index[0, 0]) == -1 and int(index[4, 5]) == 4 * 12 + 5
    torch.testing.assert_close(pad_texture_islands(tex, index=index), padded)
    assert bool((pad_texture_islands(tex, pixels=2, coverage=cov, fill=0.25)[0, 0][dist > 2] == 0.25).all())


def test_padding_stops_background_bleeding_at_island_borders() -> None:
    # A fit leaves the texels outside the island at the background colour (0); the island's
    # colour is 0.8. Samples inside the triangle near its edges blend in the background with
    # bilinear filtering (and more with mipmaps) until the island is padded.
    ht = wt = 16
    cov = uv_coverage(TRI, (ht, wt))
    tex = torch.where(cov, torch.tensor(0.8, dtype=F64), torch.tensor(0.0, dtype=F64))[None, None]
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(4000, 3, generator=gen, dtype=F64) ** 3   # many samples close to the edges
    w = w / w.sum(1, keepdim=True)
    uv = (w @ TRI[0])[None]                                   # (1, N, 2)
    before = sample_texture(tex, uv)
    assert float((before - 0.8).abs().max()) > 0.3
    padded = pad_texture_islands(tex, TRI, pixels=2)
    torch.testing.assert_close(sample_texture(padded, uv), torch.full_like(before, 0.8), atol=1e-12, rtol=0)
    lod = torch.full((1, uv.shape[1]), 1.5, dtype=F64)
    mip_before = sample_texture(tex, uv, "mipmap", lod=lod)
    mip_after = sample_texture(pad_texture_islands(tex, TRI, pixels=8), uv, "mipmap", lod=lod)
    assert float((mip_before - 0.8).abs().mean()) > 0.2
    assert float((mip_after - 0.8).abs().mean()) < 0.02


def test_gradcheck_padding() -> None:
    cov = torch.zeros(5, 6, dtype=torch.bool)
    cov[1:3, 2:4] = True
    cov[4, 0] = True
    tex = torch.rand(1, 2, 5, 6, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pad_texture_islands(t, pixels=2, coverage=cov), (tex,))


def test_bake_reproduces_a_linear_colour_function() -> None:
    # Colours linear in position: the render from the baked texture must match the vertex-colour
    # render (same interpolation weights; bilinear lookups are exact inside a UV triangle and
    # only err where a 2 x 2 texel footprint crosses a UV edge or an island border).
    verts, faces, _ = icosphere(3, dtype=F64)
    colors = 0.5 + 0.4 * verts @ torch.tensor([[0.6, -0.3, 0.2], [0.2, 0.5, -0.4], [-0.5, 0.3, 0.6]], dtype=F64)
    face_uvs = auto_uvs(verts, faces, margin=4.0 / 512)
    tex = bake_vertex_colors(faces, colors, face_uvs, 512, pixels=2)
    assert tex.shape == (1, 3, 512, 512)
    camera = Camera.perspective(look_at((1.6, 1.2, 2.0), dtype=F64), math.radians(45))
    settings = RenderSettings(height=96, width=96)
    mesh = Meshes(verts[None], faces)
    by_vertex = render(mesh, camera, colors=colors[None], settings=settings)
    by_texture = render(mesh, camera, face_uvs=face_uvs, texture=tex, settings=settings)
    m = by_vertex.mask > 0
    err = (by_texture.rgb - by_vertex.rgb)[m].abs()
    # Measured: mean 1.3e-5, max 3.1e-3 (under 1/255).
    assert float(err.mean()) < 1e-4
    assert float(err.max()) < 0.01
    # Every texel (baked, padded, or filled with the mean colour) is an affine combination of
    # vertex colours, so the gradient of the texture's sum adds up to the texel count.
    c = colors.clone().requires_grad_(True)
    bake_vertex_colors(faces, c, face_uvs, 32).sum().backward()
    assert c.grad is not None
    torch.testing.assert_close(c.grad.sum(0), torch.full((3,), 32.0 * 32.0, dtype=F64))


def test_bad_inputs() -> None:
    verts, faces, _ = icosphere(0, dtype=F64)
    fuv = torch.rand(faces.shape[0], 3, 2, dtype=F64)
    colors = torch.rand(verts.shape[0], 3, dtype=F64)
    with pytest.raises(ValueError, match=r"bake_vertex_colors\(\): colors must have shape \(V, C\), got \(1, 12, 3\)"):
        bake_vertex_colors(faces, colors[None], fuv, 8)
    with pytest.raises(ValueError, match=r"bake_vertex_colors\(\): face_uvs must have shape \(F, 3, 2\) with F=20, got \(19, 3, 2\)"):
        bake_vertex_colors(faces, colors, fuv[1:], 8)
    with pytest.raises(ValueError, match=r"bake_vertex_colors\(\): faces holds index 12, outside \[0, 12\)"):
        bake_vertex_colors(faces + 1, colors, fuv, 8)
    with pytest.raises(TypeError, match=r"bake_vertex_colors\(\): face_uvs must have dtype float64, got float32"):
        bake_vertex_colors(faces, colors, fuv.float(), 8)
    with pytest.raises(ValueError, match=r"bake_vertex_colors\(\): size must be positive"):
        bake_vertex_colors(faces, colors, fuv, 0)
    tex = torch.rand(1, 3, 8, 8, dtype=F64)
    with pytest.raises(ValueError, match=r"pad_texture_islands\(\): give face_uvs \(F, 3, 2\), coverage \(Ht, Wt\) or index"):
        pad_texture_islands(tex)
    with pytest.raises(ValueError, match=r"pad_texture_islands\(\): coverage must have shape \(Ht, Wt\) with Ht=8, Wt=8, got \(8, 7\)"):
        pad_texture_islands(tex, coverage=torch.ones(8, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"pad_texture_islands\(\): index must have shape \(Ht, Wt\) with Ht=8, Wt=8, got \(8, 9\)"):
        pad_texture_islands(tex, index=torch.zeros(8, 9, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"pad_texture_islands\(\): pixels must be a non-negative int"):
        pad_texture_islands(tex, fuv, pixels=-1)
    with pytest.raises(ValueError, match=r"pad_texture_islands\(\): texture must have shape \(B, C, Ht, Wt\), got \(3, 8, 8\)"):
        pad_texture_islands(tex[0], fuv)
    with pytest.raises(ValueError, match=r"uv_coverage\(\): face_uvs must have shape \(F, 3, 2\), got \(20, 3\)"):
        uv_coverage(fuv[..., 0], 8)
