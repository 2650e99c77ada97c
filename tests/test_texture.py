"""Tests for dibr_core.texture."""
from __future__ import annotations

import math
from typing import Tuple

import pytest
import torch

from dibr_core.camera import Camera, look_at, orthographic_projection
from dibr_core.render import Meshes, RenderOutput, RenderSettings, render
from dibr_core.texture import face_texture_lod, mip_pyramid, pixel_lod, sample_texture

F64 = torch.float64


def _tex(ht: int = 3, wt: int = 4, c: int = 2, dtype: torch.dtype = F64) -> torch.Tensor:
    """Texture with value ``10 * row + col`` in channel 0 and ``-(10 * row + col)`` in channel 1."""
    rows = torch.arange(ht, dtype=dtype)[:, None] * 10
    cols = torch.arange(wt, dtype=dtype)[None, :]
    base = rows + cols
    return torch.stack([base, -base][:c])[None]  # (1, C, Ht, Wt)


def _centre(i: int, j: int, ht: int = 3, wt: int = 4) -> list[float]:
    """UV of the centre of texel row i (0 = top), column j."""
    return [(j + 0.5) / wt, 1.0 - (i + 0.5) / ht]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_texel_centres(mode: str, dtype: torch.dtype) -> None:
    tex = _tex(dtype=dtype)
    uv = torch.tensor([[_centre(i, j) for i in range(3) for j in range(4)]], dtype=dtype)
    out = sample_texture(tex, uv, mode=mode)  # type: ignore[arg-type]
    assert out.shape == (1, 12, 2) and out.dtype == dtype
    expected = torch.tensor([10.0 * i + j for i in range(3) for j in range(4)], dtype=dtype)
    torch.testing.assert_close(out[0, :, 0], expected)
    torch.testing.assert_close(out[0, :, 1], -expected)


def test_bilinear_midpoints_and_v_orientation() -> None:
    tex = _tex()
    # Midpoint between texels (0, 1) and (0, 2) horizontally; between rows 1 and 2 vertically.
    uv = torch.tensor([[[0.5, 1 - 0.5 / 3], [0.375, 1 - 1.0 / 1.5]]], dtype=F64)
    out = sample_texture(tex, uv)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([1.5, 16.0], dtype=F64))
    # v = 0 is the bottom of the texture: with clamp the bottom row (row 2).
    bottom = torch.tensor([[_centre(2, 1)[0], 0.0]], dtype=F64)[None]
    torch.testing.assert_close(sample_texture(tex, bottom, wrap="clamp")[0, 0, 0], torch.tensor(21.0, dtype=F64))
    torch.testing.assert_close(
        sample_texture(tex, bottom, mode="nearest", wrap="clamp")[0, 0, 0], torch.tensor(21.0, dtype=F64)
    )
    # ... and with repeat it lies halfway between the bottom row and the (wrapped) top row.
    torch.testing.assert_close(sample_texture(tex, bottom)[0, 0, 0], torch.tensor((21.0 + 1.0) / 2, dtype=F64))
    # v = 1 - tiny is the top row.
    top = torch.tensor([[[_centre(0, 1)[0], 0.999]]], dtype=F64)
    torch.testing.assert_close(sample_texture(tex, top, mode="nearest")[0, 0, 0], torch.tensor(1.0, dtype=F64))


def test_repeat_vs_clamp() -> None:
    tex = _tex()
    v_mid = _centre(1, 0)[1]  # row 1
    uv = torch.tensor([[[1.2, v_mid], [-0.2, v_mid]]], dtype=F64)
    rep = sample_texture(tex, uv, wrap="repeat")[0, :, 0]
    # u = 1.2 == u = 0.2 -> x = 0.8 - 0.5 = 0.3 between cols 0 and 1 -> 10.3
    # u = -0.2 == u = 0.8 -> x = 3.2 - 0.5 = 2.7 between cols 2 and 3 -> 12.7
    torch.testing.assert_close(rep, torch.tensor([10.3, 12.7], dtype=F64))
    clamp = sample_texture(tex, uv, wrap="clamp")[0, :, 0]
    torch.testing.assert_close(clamp, torch.tensor([13.0, 10.0], dtype=F64))
    # Wrapping across the seam blends the last and first columns: u = 0 -> x = -0.5.
    seam = sample_texture(tex, torch.tensor([[[0.0, v_mid]]], dtype=F64))[0, 0, 0]
    torch.testing.assert_close(seam, torch.tensor((10.0 + 13.0) / 2, dtype=F64))
    near_rep = sample_texture(tex, uv, mode="nearest", wrap="repeat")[0, :, 0]
    torch.testing.assert_close(near_rep, torch.tensor([10.0, 13.0], dtype=F64))  # floor(4.8)=4->0, floor(-0.8)=-1->3
    near_clamp = sample_texture(tex, uv, mode="nearest", wrap="clamp")[0, :, 0]
    torch.testing.assert_close(near_clamp, torch.tensor([13.0, 10.0], dtype=F64))


def test_nearest_picks_containing_texel() -> None:
    tex = _tex()
    uv = torch.tensor([[[0.26, 0.9], [0.49, 0.34], [0.99, 0.01]]], dtype=F64)
    out = sample_texture(tex, uv, mode="nearest")[0, :, 0]
    # (col 1, row 0), (col 1, row 1), (col 3, row 2)
    torch.testing.assert_close(out, torch.tensor([1.0, 11.0, 23.0], dtype=F64))


def test_image_shape_and_batches() -> None:
    tex = torch.rand(2, 3, 5, 6)
    uv = torch.rand(2, 4, 7, 2)
    out = sample_texture(tex, uv)
    assert out.shape == (2, 4, 7, 3)
    # Each batch element uses its own texture.
    single = sample_texture(tex[1:], uv[1:])
    torch.testing.assert_close(out[1], single[0])
    # A texture with batch 1 is shared.
    shared = sample_texture(tex[:1], uv)
    torch.testing.assert_close(shared[1], sample_texture(tex[:1], uv[1:])[0])
    torch.testing.assert_close(shared[0], out[0])


def test_gradcheck_bilinear() -> None:
    torch.manual_seed(0)
    for wrap in ("repeat", "clamp"):
        tex = torch.rand(2, 2, 4, 5, dtype=F64, requires_grad=True)
        uv = (torch.rand(2, 3, 2, 2, dtype=F64) * 1.4 - 0.2).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda t, u: sample_texture(t, u, wrap=wrap), (tex, uv))  # type: ignore[arg-type]


def test_gradcheck_nearest_texture() -> None:
    torch.manual_seed(1)
    tex = torch.rand(1, 3, 4, 4, dtype=F64, requires_grad=True)
    uv = torch.rand(2, 6, 2, dtype=F64)
    assert torch.autograd.gradcheck(lambda t: sample_texture(t, uv, mode="nearest"), (tex,))
    uv_req = uv.clone().requires_grad_(True)
    sample_texture(tex, uv_req, mode="nearest").sum().backward()
    assert uv_req.grad is None or float(uv_req.grad.abs().max()) == 0.0


def test_texture_gradient_accumulates_on_shared_texels() -> None:
    tex = torch.zeros(1, 1, 2, 2, dtype=F64, requires_grad=True)
    uv = torch.tensor([[[0.25, 0.75]] * 3], dtype=F64)  # centre of the top-left texel, three times
    sample_texture(tex, uv).sum().backward()
    assert tex.grad is not None
    torch.testing.assert_close(tex.grad[0, 0], torch.tensor([[3.0, 0.0], [0.0, 0.0]], dtype=F64))


def test_bad_inputs() -> None:
    tex = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"sample_texture\(\): mode must be"):
        sample_texture(tex, torch.rand(2, 5, 2), mode="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sample_texture\(\): wrap must be"):
        sample_texture(tex, torch.rand(2, 5, 2), wrap="mirror")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sample_texture\(\): uv must have shape \(B, H, W, 2\)"):
        sample_texture(tex, torch.rand(2, 5, 5, 3))
    with pytest.raises(ValueError, match=r"sample_texture\(\): texture batch size 2 must equal the uv batch size 3"):
        sample_texture(tex, torch.rand(3, 5, 2))
    with pytest.raises(TypeError, match=r"sample_texture\(\): uv has dtype float64 but texture has float32"):
        sample_texture(tex, torch.rand(2, 5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"sample_texture\(\): uv contains NaN"):
        sample_texture(tex, torch.full((2, 5, 2), float("nan")))


# --- mip-mapping -------------------------------------------------------------------------------


def test_mip_pyramid_levels_are_box_means() -> None:
    tex = torch.arange(2 * 8 * 4, dtype=F64).reshape(1, 2, 8, 4)
    levels = mip_pyramid(tex)
    assert [tuple(lv.shape[2:]) for lv in levels] == [(8, 4), (4, 2), (2, 1), (1, 1)]
    for fine, coarse in zip(levels[:2], levels[1:3]):
        blocks = fine.reshape(1, 2, fine.shape[2] // 2, 2, fine.shape[3] // 2, 2).mean((3, 5))
        torch.testing.assert_close(coarse, blocks)
    torch.testing.assert_close(levels[-1][0, :, 0, 0], tex.mean((2, 3))[0])
    # An odd size still reaches 1 x 1.
    assert tuple(mip_pyramid(torch.rand(1, 1, 5, 3))[-1].shape) == (1, 1, 1, 1)


def test_mipmap_lod_zero_is_bilinear_and_integer_lod_is_that_level() -> None:
    torch.manual_seed(2)
    tex = torch.rand(2, 3, 16, 8, dtype=F64)
    uv = torch.rand(2, 5, 7, 2, dtype=F64) * 1.2 - 0.1
    zero = torch.zeros(2, 5, 7, dtype=F64)
    for wrap in ("repeat", "clamp"):
        bil = sample_texture(tex, uv, wrap=wrap)  # type: ignore[arg-type]
        torch.testing.assert_close(sample_texture(tex, uv, "mipmap", wrap, lod=zero), bil)  # type: ignore[arg-type]
        # Negative levels clamp to the base level.
        torch.testing.assert_close(sample_texture(tex, uv, "mipmap", wrap, lod=zero - 3.0), bil)  # type: ignore[arg-type]
    levels = mip_pyramid(tex)
    for k in (1, 2):
        torch.testing.assert_close(sample_texture(tex, uv, "mipmap", lod=zero + k), sample_texture(levels[k], uv))
    # Fractional levels blend the two levels around them; beyond the last level: the 1 x 1 mean.
    blend = sample_texture(tex, uv, "mipmap", lod=zero + 1.25)
    torch.testing.assert_close(blend, 0.75 * sample_texture(levels[1], uv) + 0.25 * sample_texture(levels[2], uv))
    top = sample_texture(tex, uv, "mipmap", lod=zero + 20.0)
    torch.testing.assert_close(top, tex.mean((2, 3))[:, None, None, :].expand_as(top))


def test_gradcheck_mipmap() -> None:
    torch.manual_seed(3)
    tex = torch.rand(1, 2, 4, 4, dtype=F64, requires_grad=True)
    uv = (torch.rand(2, 3, 2, dtype=F64) * 0.8 + 0.1).requires_grad_(True)
    lod = torch.tensor([[0.3, 1.4, 2.6], [0.7, 1.1, 1.9]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, u, q: sample_texture(t, u, "mipmap", lod=q), (tex, uv, lod))


def test_face_texture_lod_by_hand() -> None:
    # A right triangle 10 x 10 pixels on a 20 x 20 image (NDC span 1 = 10 px), mapped to UVs
    # spanning 40 x 10 texels of a 40 x 40 texture: 4 texels per pixel along x, 1 along y.
    fvi = torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]], dtype=F64)
    fuv = torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 0.25]]]], dtype=F64)
    lod_max = face_texture_lod(fvi, fuv, (20, 20), (40, 40))
    lod_area = face_texture_lod(fvi, fuv, (20, 20), (40, 40), rule="area")
    torch.testing.assert_close(lod_max, torch.tensor([[2.0]], dtype=F64))
    torch.testing.assert_close(lod_area, torch.tensor([[1.0]], dtype=F64))
    # Renumbering the corners, or mirroring the UVs (flipped winding), changes nothing.
    torch.testing.assert_close(face_texture_lod(fvi.flip(2), fuv.flip(2), (20, 20), (40, 40)), lod_max)
    mirrored = fuv * torch.tensor([-1.0, 1.0], dtype=F64)
    torch.testing.assert_close(face_texture_lod(fvi, mirrored, (20, 20), (40, 40)), lod_max)
    # A screen triangle collapsed to a segment gets a huge level (clamped by sample_texture), no NaN.
    flat = torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]]], dtype=F64)
    assert bool(torch.isfinite(face_texture_lod(flat, fuv, (20, 20), (40, 40))).all())
    assert float(face_texture_lod(flat, fuv, (20, 20), (40, 40))) > 100
    face_idx = torch.tensor([[[0, -1]]])
    torch.testing.assert_close(pixel_lod(lod_max, face_idx), torch.tensor([[[2.0, 0.0]]], dtype=F64))


def _plane(n: int, dtype: torch.dtype = F64) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An n x n grid on y = 0, x and z in [-1, 1], facing +y; UVs span [0, 1]^2."""
    t = torch.linspace(0, 1, n + 1, dtype=dtype)
    u, w = torch.meshgrid(t, t, indexing="xy")
    verts = torch.stack([2 * u - 1, torch.zeros_like(u), 1 - 2 * w], -1).reshape(-1, 3)
    uvs = torch.stack([u, w], -1).reshape(-1, 2)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    return verts, faces, uvs[faces]


def _checker(n: int) -> torch.Tensor:
    i = torch.arange(n)
    return ((i[:, None] + i[None, :]) % 2).to(F64)[None, None].expand(1, 3, n, n).contiguous()


def _render_plane(camera: Camera, size: int, tex: torch.Tensor, filt: str, n: int = 8) -> RenderOutput:
    v, f, fuv = _plane(n)
    settings = RenderSettings(height=size, width=size, texture_filter=filt, perspective_correct=True,
                              backface_culling=False)
    return render(Meshes(v[None], f), camera, face_uvs=fuv, texture=tex, settings=settings)


def _error_vs_supersampled(camera: Camera, size: int, tex: torch.Tensor, ss: int = 4) -> Tuple[float, float]:
    """Mean absolute error of bilinear and of mipmap renders against a bilinear render at ``ss``
    times the resolution box-filtered down, over pixels the plane covers fully."""
    ref = _render_plane(camera, size * ss, tex, "bilinear")
    ref_rgb = torch.nn.functional.avg_pool2d(ref.rgb.permute(0, 3, 1, 2), ss).permute(0, 2, 3, 1)
    full = torch.nn.functional.avg_pool2d(ref.mask[:, None], ss)[:, 0] > 0.999
    errs = []
    for filt in ("bilinear", "mipmap"):
        out = _render_plane(camera, size, tex, filt)
        covered = full & (out.mask > 0)
        assert int(covered.sum()) > size * size // 8
        errs.append(float((out.rgb - ref_rgb)[covered].abs().mean()))
    return errs[0], errs[1]


def test_mipmap_checkerboard_at_a_grazing_angle() -> None:
    # 128 x 128 checker texels seen from low over the plane: far texels are much smaller than a pixel.
    camera = Camera.perspective(look_at((0.0, 0.35, 1.6), (0.0, 0.0, -0.4), dtype=F64), math.radians(50))
    bilinear, mipmap = _error_vs_supersampled(camera, 32, _checker(128))
    # Measured: bilinear 0.12, mipmap 0.009 (0.005 against an 8x reference).
    assert bilinear > 0.08
    assert mipmap < 0.02 and mipmap < 0.2 * bilinear


def test_mipmap_checkerboard_from_far_away() -> None:
    # Looking straight down from far: about 6 texels per pixel, bilinear samples alias badly.
    camera = Camera.perspective(look_at((0.0, 6.0, 0.0), up=(0.0, 0.0, -1.0), dtype=F64), math.radians(30))
    bilinear, mipmap = _error_vs_supersampled(camera, 32, _checker(128))
    # Measured: bilinear 0.11, mipmap 0.008 (0.001 against an 8x reference).
    assert bilinear > 0.08
    assert mipmap < 0.02 and mipmap < 0.2 * bilinear


def test_mipmap_equals_bilinear_at_one_texel_per_pixel() -> None:
    # An orthographic camera straight down on the plane, which fills the 32 x 32 image exactly:
    # one texel per pixel, so the level of detail is 0 and mipmap is the bilinear lookup.
    torch.manual_seed(4)
    tex = torch.rand(1, 3, 32, 32, dtype=F64)
    view = look_at((0.0, 3.0, 0.0), up=(0.0, 0.0, -1.0), dtype=F64)
    camera = Camera(view, orthographic_projection(1.0, 1.0, 0.1, 10.0, dtype=F64), 0.1, 10.0)
    bil = _render_plane(camera, 32, tex, "bilinear")
    mip = _render_plane(camera, 32, tex, "mipmap")
    assert float(bil.mask.mean()) == 1.0
    torch.testing.assert_close(mip.rgb, bil.rgb, atol=1e-9, rtol=0)
    torch.testing.assert_close(bil.rgb[0].permute(2, 0, 1), tex[0], atol=1e-9, rtol=0)


def test_mipmap_bad_inputs() -> None:
    tex = torch.rand(1, 3, 4, 4)
    uv = torch.rand(1, 5, 2)
    with pytest.raises(ValueError, match=r"sample_texture\(\): mode 'mipmap' needs lod with shape \(1, 5\)"):
        sample_texture(tex, uv, "mipmap")
    with pytest.raises(ValueError, match=r"sample_texture\(\): lod must have shape \(B, N\) with B=1, N=5, got \(1, 4\)"):
        sample_texture(tex, uv, "mipmap", lod=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"sample_texture\(\): lod is only used by mode 'mipmap'"):
        sample_texture(tex, uv, lod=torch.zeros(1, 5))
    with pytest.raises(TypeError, match=r"sample_texture\(\): lod has dtype float64 but texture has float32"):
        sample_texture(tex, uv, "mipmap", lod=torch.zeros(1, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"face_texture_lod\(\): rule must be"):
        face_texture_lod(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2), (4, 4), (4, 4), rule="min")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"face_texture_lod\(\): face_uvs must have shape \(B, F, 3, 2\) with B=1, F=1, got \(1, 2, 3, 2\)"):
        face_texture_lod(torch.zeros(1, 1, 3, 2), torch.zeros(1, 2, 3, 2), (4, 4), (4, 4))
    with pytest.raises(ValueError, match=r"mip_pyramid\(\): texture must have shape \(Bt, C, Ht, Wt\)"):
        mip_pyramid(torch.zeros(3, 4, 4))
