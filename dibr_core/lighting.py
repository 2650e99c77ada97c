"""Per-pixel lighting models of DIB-R: Lambertian, Phong and order-2 spherical harmonics.

All functions work on images laid out ``(B, H, W, channels)``. They apply neither the coverage
mask nor any final clamping: the renderer multiplies the result by the hard mask and clamps it
to [0, 1] afterwards. Normals and directions are expected to be unit vectors (use
:func:`normalize` on interpolated normals).
"""
from __future__ import annotations

from typing import Dict

import torch

from dibr_core.checks import check_same_dtype, check_tensor

__all__ = ["lambertian", "phong", "sh_basis", "spherical_harmonics", "normalize"]

_NORMALIZE_EPS = 1e-15
_PHONG_MIN_COS = 1e-5

# DIB-R's released SH constants (clamped-cosine convolution / pi already folded in). Two terms
# differ from the textbook values (0.1365686 z^2 and -0.1931371 xz); they are kept as released.
_SH_C0 = 0.2820948
_SH_C1 = 0.3257350
_SH_C2 = 0.2731371
_SH_C20A = 0.1365686
_SH_C20B = 0.0788479
_SH_C21 = 0.1931371
_SH_C22 = 0.1365686


def _check_image3(fn: str, name: str, t: torch.Tensor, dims: Dict[str, int], device: torch.device) -> None:
    check_tensor(fn, name, t, shape=("B", "H", "W", 3), dims=dims, dtype="float", finite=True, device=device)


def _dot3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3) . (..., 3) -> (..., 1), summed left to right elementwise (no reduction kernel)."""
    return (a[..., 0:1] * b[..., 0:1] + a[..., 1:2] * b[..., 1:2]) + a[..., 2:3] * b[..., 2:3]


def normalize(v: torch.Tensor) -> torch.Tensor:
    """Normalise 3-vectors as ``v / (|v| + 1e-15)`` (zero vectors stay zero, no NaN; no overflow
    for vectors as long as the dtype can hold).

    Args:
        v: (..., 3) float.

    Returns:
        (..., 3) float.
    """
    check_tensor("normalize", "v", v, dtype="float")
    if v.dim() == 0 or v.shape[-1] != 3:
        raise ValueError(f"normalize(): v must have shape (..., 3), got {tuple(v.shape)}")
    # Computed on v / s, s the power of two at or above max |v_i| (exact scaling, so the result is
    # bitwise that of the formula) so that |v| cannot overflow or underflow. s does not change the
    # function's value, so it takes no gradient.
    s = pow2_scale(v.detach().abs().amax(dim=-1, keepdim=True))
    u = v / s
    length: torch.Tensor = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    return u / (length + _NORMALIZE_EPS / s)


def pow2_scale(m: torch.Tensor) -> torch.Tensor:
    """The power of two 2^e with m <= 2^e < 2 m for positive finite m (1 where m is 0 or not finite)."""
    _, e = torch.frexp(m)
    s = torch.ldexp(torch.ones_like(m), e)
    return torch.where((m > 0) & torch.isfinite(m), s, torch.ones_like(m))


def lambertian(
    albedo: torch.Tensor,
    normals: torch.Tensor,
    directions: torch.Tensor,
    colors: torch.Tensor,
    ambient: torch.Tensor,
) -> torch.Tensor:
    """Diffuse shading with several directional lights and an ambient term.

    ``I = albedo * (ambient + sum_l colors_l * max(0, n . d_l))``.

    Args:
        albedo: (B, H, W, 3) float, surface colour (e.g. the sampled texture).
        normals: (B, H, W, 3) float, unit per-pixel normals.
        directions: (B, L, 3) float, unit vectors pointing from the surface *toward* each light.
        colors: (B, L, 3) float, RGB intensity of each light.
        ambient: (B, 3) float, RGB ambient light.

    Returns:
        (B, H, W, 3) float, the shaded image (not masked, not clamped).
    """
    fn = "lambertian"
    dims: Dict[str, int] = {}
    check_tensor(fn, "albedo", albedo, shape=("B", "H", "W", 3), dims=dims, dtype="float", finite=True)
    dev = albedo.device
    _check_image3(fn, "normals", normals, dims, dev)
    check_tensor(fn, "directions", directions, shape=("B", "L", 3), dims=dims, dtype="float", finite=True, device=dev)
    check_tensor(fn, "colors", colors, shape=("B", "L", 3), dims=dims, dtype="float", finite=True, device=dev)
    check_tensor(fn, "ambient", ambient, shape=("B", 3), dims=dims, dtype="float", finite=True, device=dev)
    check_same_dtype(fn, albedo=albedo, normals=normals, directions=directions, colors=colors, ambient=ambient)

    # Sums written out elementwise in a fixed order (no einsum/BLAS): the result does not depend
    # on the batch shape or the CPU's SIMD width (see dibr_core.camera).
    light = ambient[:, None, None, :]
    for k in range(directions.shape[1]):
        d = directions[:, k, None, None, :]
        cos = _dot3(normals, d)
        light = light + cos.clamp_min(0.0) * colors[:, k, None, None, :]
    return albedo * light


def phong(
    albedo: torch.Tensor,
    normals: torch.Tensor,
    view_dirs: torch.Tensor,
    light_dir: torch.Tensor,
    material: torch.Tensor,
    shininess: torch.Tensor,
) -> torch.Tensor:
    """Phong shading with one white directional light (DIB-R's Phong shader).

    ``cos_t = clamp(n . l, 0, 1)``, ``r = 2 cos_t n - l``, ``cos_a = clamp(r . e, 1e-5, 1)`` and
    ``I = (k_amb + k_dif * cos_t) * albedo + k_spec * cos_a ** shininess``; the specular term is
    not tinted by the albedo.

    Args:
        albedo: (B, H, W, 3) float, surface colour (e.g. the sampled texture).
        normals: (B, H, W, 3) float, unit per-pixel normals.
        view_dirs: (B, H, W, 3) float, unit vectors from the surface toward the eye.
        light_dir: (B, 3) float, unit vector from the surface toward the light.
        material: (B, 3, 3) float, rows are the ambient, diffuse and specular RGB coefficients.
        shininess: (B, 1) float, Phong exponent, every entry ``> 0``.

    Returns:
        (B, H, W, 3) float, the shaded image (not masked, not clamped).

    Raises:
        ValueError: on bad shapes, non-finite values or ``shininess <= 0``.
    """
    fn = "phong"
    dims: Dict[str, int] = {}
    check_tensor(fn, "albedo", albedo, shape=("B", "H", "W", 3), dims=dims, dtype="float", finite=True)
    dev = albedo.device
    _check_image3(fn, "normals", normals, dims, dev)
    _check_image3(fn, "view_dirs", view_dirs, dims, dev)
    check_tensor(fn, "light_dir", light_dir, shape=("B", 3), dims=dims, dtype="float", finite=True, device=dev)
    check_tensor(fn, "material", material, shape=("B", 3, 3), dims=dims, dtype="float", finite=True, device=dev)
    check_tensor(fn, "shininess", shininess, shape=("B", 1), dims=dims, dtype="float", finite=True, device=dev)
    check_same_dtype(
        fn, albedo=albedo, normals=normals, view_dirs=view_dirs, light_dir=light_dir, material=material, shininess=shininess
    )
    if shininess.numel() > 0 and not bool((shininess > 0).all()):
        raise ValueError(f"{fn}(): shininess must be > 0 everywhere, got minimum {float(shininess.min())!r}")

    l_ = light_dir[:, None, None, :]
    cos_t = _dot3(normals, l_).clamp(0.0, 1.0)
    reflect = 2.0 * cos_t * normals - l_
    cos_a = _dot3(reflect, view_dirs).clamp(_PHONG_MIN_COS, 1.0)
    k_amb = material[:, None, None, 0, :]
    k_dif = material[:, None, None, 1, :]
    k_spec = material[:, None, None, 2, :]
    specular = cos_a ** shininess[:, None, None, :]
    return (k_amb + k_dif * cos_t) * albedo + k_spec * specular


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """DIB-R's 9-term SH lighting basis (irradiance convolution / pi folded in).

    With ``n = (x, y, z)`` the basis is ``[0.2820948, -0.3257350 y, 0.3257350 z, -0.3257350 x,
    0.2731371 xy, -0.2731371 yz, 0.1365686 z^2 - 0.0788479, -0.1931371 xz,
    0.1365686 (x^2 - y^2)]``, the constants of DIB-R's released shader.

    Args:
        normals: (..., 3) float, unit normals.

    Returns:
        (..., 9) float.
    """
    check_tensor("sh_basis", "normals", normals, dtype="float", finite=True)
    if normals.dim() == 0 or normals.shape[-1] != 3:
        raise ValueError(f"sh_basis(): normals must have shape (..., 3), got {tuple(normals.shape)}")
    x, y, z = normals.unbind(dim=-1)
    return torch.stack(
        [
            torch.full_like(x, _SH_C0),
            -_SH_C1 * y,
            _SH_C1 * z,
            -_SH_C1 * x,
            _SH_C2 * x * y,
            -_SH_C2 * y * z,
            _SH_C20A * z * z - _SH_C20B,
            -_SH_C21 * x * z,
            _SH_C22 * (x * x - y * y),
        ],
        dim=-1,
    )


def spherical_harmonics(albedo: torch.Tensor, normals: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Order-2 spherical-harmonics lighting: ``I = albedo * sum_k L_k Y'_k(n)``.

    ``Y'`` is :func:`sh_basis`. The coefficients live in the frame of the normals.

    Args:
        albedo: (B, H, W, 3) float, surface colour.
        normals: (B, H, W, 3) float, unit per-pixel normals.
        coeffs: (B, 9) float, one set shared by R, G and B (DIB-R), or (B, 3, 9) float, one set
            per colour channel.

    Returns:
        (B, H, W, 3) float, the shaded image (not masked, not clamped).
    """
    fn = "spherical_harmonics"
    dims: Dict[str, int] = {}
    check_tensor(fn, "albedo", albedo, shape=("B", "H", "W", 3), dims=dims, dtype="float", finite=True)
    dev = albedo.device
    _check_image3(fn, "normals", normals, dims, dev)
    if isinstance(coeffs, torch.Tensor) and coeffs.dim() == 3:
        check_tensor(fn, "coeffs", coeffs, shape=("B", 3, 9), dims=dims, dtype="float", finite=True, device=dev)
    else:
        check_tensor(fn, "coeffs", coeffs, shape=("B", 9), dims=dims, dtype="float", finite=True, device=dev)
    check_same_dtype(fn, albedo=albedo, normals=normals, coeffs=coeffs)

    basis = sh_basis(normals)  # (B, H, W, 9)
    # (B, 1, 1, 1 or 3, 9); summed term by term elementwise (no einsum/BLAS), see lambertian.
    c = (coeffs[:, None, :] if coeffs.dim() == 2 else coeffs)[:, None, None]
    shade = basis[..., None, 0] * c[..., 0]
    for k in range(1, 9):
        shade = shade + basis[..., None, k] * c[..., k]
    return albedo * shade
