"""Tests for dibr_core.texture."""
from __future__ import annotations

import pytest
import torch

from dibr_core.texture import sample_texture

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
