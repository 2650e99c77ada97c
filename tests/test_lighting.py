"""Tests for dibr_core.lighting."""
from __future__ import annotations

import math

import pytest
import torch

from dibr_core.lighting import lambertian, normalize, phong, sh_basis, spherical_harmonics

F64 = torch.float64


def _img(vec: list[float], b: int = 1, h: int = 1, w: int = 1, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(vec, dtype=dtype).expand(b, h, w, 3).clone()


def _rand_unit(*shape: int) -> torch.Tensor:
    return normalize(torch.randn(*shape, 3, dtype=F64))


# ------------------------------------------------------------------------------------ lambertian
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_lambertian_literal(dtype: torch.dtype) -> None:
    albedo = _img([0.5, 0.4, 0.2], w=3, dtype=dtype)
    normals = torch.tensor([[[[0.0, 0, 1], [0, 0, -1], [0, 0.6, 0.8]]]], dtype=dtype)
    directions = torch.tensor([[[0.0, 0, 1]]], dtype=dtype)
    colors = torch.tensor([[[1.0, 0.5, 2.0]]], dtype=dtype)
    ambient = torch.tensor([[0.1, 0.2, 0.3]], dtype=dtype)
    out = lambertian(albedo, normals, directions, colors, ambient)
    assert out.shape == (1, 1, 3, 3) and out.dtype == dtype
    a = albedo[0, 0, 0]
    torch.testing.assert_close(out[0, 0, 0], a * (ambient[0] + colors[0, 0]))  # facing the light
    torch.testing.assert_close(out[0, 0, 1], a * ambient[0])  # facing away
    torch.testing.assert_close(out[0, 0, 2], a * (ambient[0] + 0.8 * colors[0, 0]))


def test_lambertian_sums_lights() -> None:
    albedo = _img([1.0, 1.0, 1.0])
    normals = _img([0.0, 0.0, 1.0])
    d = torch.tensor([[[0.0, 0, 1], [0, 0.6, 0.8], [0, 0, -1]]], dtype=F64)
    c = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]], dtype=F64)
    out = lambertian(albedo, normals, d, c, torch.zeros(1, 3, dtype=F64))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.0, 0.8, 0.0], dtype=F64))


def test_lambertian_gradcheck() -> None:
    torch.manual_seed(0)
    b, h, w, nl = 2, 2, 3, 2
    normals = _rand_unit(b, h, w)
    directions = _rand_unit(b, nl)
    # keep n.d away from the max(0, .) kink
    cos = torch.einsum("bhwc,blc->bhwl", normals, directions)
    assert float(cos.abs().min()) > 1e-3
    args = (
        torch.rand(b, h, w, 3, dtype=F64),
        normals,
        directions,
        torch.rand(b, nl, 3, dtype=F64),
        torch.rand(b, 3, dtype=F64),
    )
    inputs = tuple(a.requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(lambertian, inputs)


# ------------------------------------------------------------------------------------ phong
def _material() -> torch.Tensor:
    return torch.tensor([[[0.1, 0.2, 0.3], [0.6, 0.5, 0.4], [0.9, 0.8, 0.7]]], dtype=F64)


def test_phong_literal() -> None:
    albedo = _img([0.5, 0.25, 1.0], w=3)
    n = _img([0.0, 0.0, 1.0], w=3)
    s = 1 / math.sqrt(2)
    light = torch.tensor([[0.0, s, s]], dtype=F64)  # 45 degrees
    # mirror direction of the light: r = 2 cos n - l = (0, -s, s)
    eyes = torch.tensor([[[[0.0, -s, s], [0.0, 0.0, 1.0], [0.0, s, -s]]]], dtype=F64)
    mat = _material()
    shin = torch.tensor([[4.0]], dtype=F64)
    out = phong(albedo, n, eyes, light, mat, shin)
    k_amb, k_dif, k_spec = mat[0]
    a = albedo[0, 0, 0]
    # eye at the mirror direction: cos_a = 1 -> full specular
    torch.testing.assert_close(out[0, 0, 0], (k_amb + k_dif * s) * a + k_spec)
    # eye along the normal: cos_a = r.e = s -> s^4 = 1/4
    torch.testing.assert_close(out[0, 0, 1], (k_amb + k_dif * s) * a + k_spec * 0.25)
    # eye opposite the reflection: cos_a clamped to 1e-5 -> (1e-5)^4
    torch.testing.assert_close(out[0, 0, 2], (k_amb + k_dif * s) * a + k_spec * 1e-20)


def test_phong_light_behind() -> None:
    albedo = _img([0.5, 0.5, 0.5])
    n = _img([0.0, 0.0, 1.0])
    light = torch.tensor([[0.0, 0.0, -1.0]], dtype=F64)
    eye = _img([1.0, 0.0, 0.0])  # r = -l = (0, 0, 1); r.e = 0 -> clamped
    out = phong(albedo, n, eye, light, _material(), torch.tensor([[1.0]], dtype=F64))
    mat = _material()[0]
    torch.testing.assert_close(out[0, 0, 0], mat[0] * 0.5 + mat[2] * 1e-5)


def test_phong_gradcheck() -> None:
    torch.manual_seed(1)
    b, h, w = 2, 2, 2
    n = _img([0.0, 0.0, 1.0], b=b, h=h, w=w) + 0.2 * torch.randn(b, h, w, 3, dtype=F64)
    n = normalize(n)
    light = normalize(torch.tensor([[0.3, 0.2, 1.0], [-0.2, 0.4, 1.0]], dtype=F64))
    # eye near the mirror direction so 1e-5 < r.e < 1 strictly
    refl = 2 * (n * light[:, None, None]).sum(-1, keepdim=True) * n - light[:, None, None]
    eye = normalize(refl + 0.3 * torch.randn(b, h, w, 3, dtype=F64))
    cos_t = (n * light[:, None, None]).sum(-1)
    cos_a = (refl * eye).sum(-1)
    assert float(cos_t.min()) > 0.05 and float(cos_t.max()) < 0.999
    assert float(cos_a.min()) > 0.05 and float(cos_a.max()) < 0.999
    args = (
        torch.rand(b, h, w, 3, dtype=F64),
        n,
        eye,
        light,
        torch.rand(b, 3, 3, dtype=F64),
        torch.tensor([[3.0], [10.0]], dtype=F64),
    )
    inputs = tuple(a.clone().requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(phong, inputs)


def test_phong_bad_inputs() -> None:
    albedo = _img([0.5, 0.5, 0.5])
    n = _img([0.0, 0.0, 1.0])
    light = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    with pytest.raises(ValueError, match=r"phong\(\): shininess must be > 0"):
        phong(albedo, n, n, light, _material(), torch.tensor([[0.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"phong\(\): shininess must be > 0"):
        phong(albedo, n, n, light, _material(), torch.tensor([[-2.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"phong\(\): material must have shape \(B, 3, 3\) with B=1"):
        phong(albedo, n, n, light, _material()[:, :2], torch.tensor([[1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"phong\(\): light_dir must have shape \(B, 3\) with B=1"):
        phong(albedo, n, n, light.expand(2, 3), _material(), torch.tensor([[1.0]], dtype=F64))
    with pytest.raises(ValueError, match=r"phong\(\): view_dirs must have shape \(B, H, W, 3\)"):
        phong(albedo, n, n[..., :2], light, _material(), torch.tensor([[1.0]], dtype=F64))


def test_lambertian_bad_inputs() -> None:
    albedo = _img([0.5, 0.5, 0.5])
    n = _img([0.0, 0.0, 1.0])
    d = torch.tensor([[[0.0, 0, 1]]], dtype=F64)
    with pytest.raises(ValueError, match=r"lambertian\(\): colors must have shape \(B, L, 3\) with B=1, L=1"):
        lambertian(albedo, n, d, torch.ones(1, 2, 3, dtype=F64), torch.zeros(1, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"lambertian\(\): normals contains NaN"):
        lambertian(albedo, n * float("nan"), d, torch.ones(1, 1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64))
    with pytest.raises(TypeError, match=r"lambertian\(\): normals has dtype float32 but albedo has float64"):
        lambertian(albedo, n.float(), d, torch.ones(1, 1, 3, dtype=F64), torch.zeros(1, 3, dtype=F64))


# ------------------------------------------------------------------------------------ SH
def test_sh_basis_constants() -> None:
    n = torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]], dtype=F64)
    y = sh_basis(n)
    assert y.shape == (3, 9)
    torch.testing.assert_close(
        y[0], torch.tensor([0.2820948, 0, 0.3257350, 0, 0, 0, 0.1365686 - 0.0788479, 0, 0], dtype=F64)
    )
    torch.testing.assert_close(
        y[1], torch.tensor([0.2820948, 0, 0, -0.3257350, 0, 0, -0.0788479, 0, 0.1365686], dtype=F64)
    )
    torch.testing.assert_close(
        y[2], torch.tensor([0.2820948, -0.3257350, 0, 0, 0, 0, -0.0788479, 0, -0.1365686], dtype=F64)
    )
    s = 1 / math.sqrt(3)
    d = sh_basis(torch.tensor([s, s, s], dtype=F64))
    torch.testing.assert_close(d[4:6], torch.tensor([0.2731371 / 3, -0.2731371 / 3], dtype=F64))
    torch.testing.assert_close(d[7], torch.tensor(-0.1931371 / 3, dtype=F64))
    assert sh_basis(torch.zeros(2, 5, 4, 3)).shape == (2, 5, 4, 9)


def test_spherical_harmonics_literal() -> None:
    albedo = _img([0.5, 0.25, 1.0])
    n = _img([0.0, 0.0, 1.0])
    coeffs = torch.zeros(1, 9, dtype=F64)
    coeffs[0, 0] = 2.0
    coeffs[0, 2] = 1.0
    shade = 2.0 * 0.2820948 + 0.3257350
    torch.testing.assert_close(spherical_harmonics(albedo, n, coeffs)[0, 0, 0], albedo[0, 0, 0] * shade)
    per_channel = coeffs[:, None, :].repeat(1, 3, 1)
    per_channel[0, 1] *= 2.0
    expected = albedo[0, 0, 0] * torch.tensor([shade, 2 * shade, shade], dtype=F64)
    torch.testing.assert_close(spherical_harmonics(albedo, n, per_channel)[0, 0, 0], expected)


@pytest.mark.parametrize("per_channel", [False, True])
def test_spherical_harmonics_gradcheck(per_channel: bool) -> None:
    torch.manual_seed(2)
    b, h, w = 2, 2, 2
    coeffs = torch.randn(b, 3, 9, dtype=F64) if per_channel else torch.randn(b, 9, dtype=F64)
    args = (torch.rand(b, h, w, 3, dtype=F64), _rand_unit(b, h, w), coeffs)
    inputs = tuple(a.requires_grad_(True) for a in args)
    assert torch.autograd.gradcheck(spherical_harmonics, inputs)


def test_spherical_harmonics_bad_coeffs() -> None:
    albedo = _img([0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"spherical_harmonics\(\): coeffs must have shape \(B, 9\) with B=1"):
        spherical_harmonics(albedo, albedo, torch.zeros(1, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"spherical_harmonics\(\): coeffs must have shape \(B, 3, 9\)"):
        spherical_harmonics(albedo, albedo, torch.zeros(1, 1, 9, dtype=F64))
    with pytest.raises(ValueError, match=r"sh_basis\(\): normals must have shape \(\.\.\., 3\)"):
        sh_basis(torch.zeros(2, 4))


# ------------------------------------------------------------------------------------ normalize
def test_normalize() -> None:
    v = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], dtype=F64, requires_grad=True)
    out = normalize(v)
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]], dtype=F64))
    out.sum().backward()
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())
    with pytest.raises(ValueError, match=r"normalize\(\): v must have shape \(\.\.\., 3\)"):
        normalize(torch.zeros(3, 2))
