"""Shared test helpers: a tensor comparison with a useful failure message and small scenes.

Imported by the test modules as ``from helpers import ...`` (pytest puts ``tests/`` on
``sys.path`` because the directory has no ``__init__.py``).
"""
from __future__ import annotations

import math
from typing import Iterator, Sequence, Tuple, Union

import pytest
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.mesh import icosphere
from dibr_core.render import DirectionalLights, PhongLight, SHLighting

TensorLike = Union[torch.Tensor, Sequence[float], float, int]


# ---------------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------------
def assert_close(actual: TensorLike, expected: TensorLike, atol: float = 1e-6, rtol: float = 1e-5,
                 msg: str = "") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` elementwise (shapes must broadcast
    to the same shape; integer and bool tensors are compared as float64).

    On failure the message gives the shapes, the number of mismatches, the max absolute and
    relative differences, and the index and values of the worst element (the one that exceeds
    its tolerance by the most).
    """
    a = torch.as_tensor(actual).detach().to("cpu")
    e = torch.as_tensor(expected).detach().to("cpu")
    prefix = f"{msg}: " if msg else ""
    try:
        shape = torch.broadcast_shapes(a.shape, e.shape)
    except RuntimeError:
        raise AssertionError(f"{prefix}shapes differ: actual {tuple(a.shape)}, expected {tuple(e.shape)}") from None
    if shape != a.shape:
        raise AssertionError(f"{prefix}shapes differ: actual {tuple(a.shape)}, expected {tuple(e.shape)} "
                             f"(expected may broadcast to actual, not the other way round)")
    a64 = a.to(torch.float64)
    e64 = e.to(torch.float64).expand(shape)
    nan_a, nan_e = torch.isnan(a64), torch.isnan(e64)
    if bool((nan_a != nan_e).any()):
        idx = tuple(int(i) for i in torch.nonzero(nan_a != nan_e)[0])
        raise AssertionError(f"{prefix}NaN mismatch at index {idx}: actual {a64[idx].item()}, "
                             f"expected {e64[idx].item()} (shape {tuple(shape)})")
    both_nan = nan_a & nan_e
    a64 = torch.where(both_nan, torch.zeros_like(a64), a64)
    e64 = torch.where(both_nan, torch.zeros_like(e64), e64)
    same_inf = torch.isinf(a64) & (a64 == e64)
    diff = torch.where(same_inf, torch.zeros_like(a64), (a64 - e64).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    tol = atol + rtol * e64.abs()
    bad = diff > tol
    if not bool(bad.any()):
        return
    rel = diff / e64.abs().clamp_min(torch.finfo(torch.float64).tiny)
    excess = (diff - tol).reshape(-1)
    flat = int(torch.argmax(excess))
    idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if len(shape) else ()
    raise AssertionError(
        f"{prefix}tensors not close: {int(bad.sum())} of {bad.numel()} elements mismatch "
        f"(atol={atol}, rtol={rtol}); max abs diff {float(diff.max()):.6g}, max rel diff "
        f"{float(rel.max()):.6g}; worst at index {idx}: actual {a64[idx].item():.9g}, expected "
        f"{e64[idx].item():.9g}; shapes actual {tuple(a.shape)}, expected {tuple(e.shape)}"
    )


def image_agreement(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> Tuple[float, float]:
    """(fraction of pixels whose largest channel difference is <= tol, max abs difference).

    ``actual`` and ``expected`` are (H, W) or (H, W, C)."""
    d = (actual.detach().to(torch.float64) - expected.detach().to(torch.float64)).abs()
    per_px = d if d.dim() == 2 else d.amax(dim=-1)
    return float((per_px <= tol).to(torch.float64).mean()), float(d.max())


# ---------------------------------------------------------------------------------------------
# cameras and scenes
# ---------------------------------------------------------------------------------------------
def identity_camera(fov_deg: float = 60.0, dtype: torch.dtype = torch.float64, near: float = 0.1,
                    far: float = 100.0) -> Camera:
    """Perspective camera at the origin looking down -Z (view = identity): camera space = world space."""
    return Camera.perspective(torch.eye(4, dtype=dtype)[None], math.radians(fov_deg), 1.0, near, far)


def sphere(level: int = 3, radius: float = 1.0, center: Sequence[float] = (0.0, 0.0, 0.0),
           dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Icosphere (vertices (V, 3), faces (F, 3), face_uvs (F, 3, 2)) moved to ``center``."""
    v, f, uv = icosphere(level, radius, dtype=dtype)
    return v + torch.tensor(center, dtype=dtype), f, uv


def vertex_colors(vertices: torch.Tensor) -> torch.Tensor:
    """Smooth, deterministic per-vertex RGB in [0.1, 0.9] from the positions (V, 3) -> (V, 3)."""
    n = vertices / vertices.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return 0.5 + 0.4 * n


def golden_lights(kind: str, dtype: torch.dtype = torch.float32) -> Union[DirectionalLights, PhongLight, SHLighting]:
    """The fixed lights of the golden images: ``lambertian``, ``phong``, ``sh`` or ``sh_rgb``."""
    if kind == "lambertian":
        d = torch.tensor([[[0.3, 0.8, 0.5], [-0.7, 0.1, 0.7]]], dtype=dtype)
        return DirectionalLights(d / d.norm(dim=-1, keepdim=True),
                                 torch.tensor([[[0.8, 0.75, 0.7], [0.2, 0.3, 0.45]]], dtype=dtype),
                                 torch.tensor([[0.15, 0.15, 0.2]], dtype=dtype))
    if kind == "phong":
        d = torch.tensor([[0.4, 0.6, 0.7]], dtype=dtype)
        return PhongLight(d / d.norm(dim=-1, keepdim=True),
                          torch.tensor([[[0.2, 0.2, 0.2], [0.7, 0.7, 0.7], [0.4, 0.4, 0.35]]], dtype=dtype),
                          torch.tensor([[12.0]], dtype=dtype))
    if kind == "sh":
        return SHLighting(torch.tensor([[2.0, -0.6, 0.8, -0.4, 0.2, -0.3, 0.5, 0.1, 0.25]], dtype=dtype))
    if kind == "sh_rgb":
        return SHLighting(torch.tensor([[[2.2, -0.6, 0.8, -0.4, 0.2, -0.3, 0.5, 0.1, 0.25],
                                         [1.8, -0.3, 0.9, 0.3, -0.2, 0.1, 0.4, -0.2, 0.1],
                                         [2.0, 0.5, 0.6, -0.7, 0.0, 0.3, -0.3, 0.2, -0.2]]], dtype=dtype))
    raise ValueError(f"golden_lights(): unknown kind {kind!r}")


def uv_ramp_texture(size: int = 32, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(1, 3, size, size) texture whose texel centres hold their own UV: R = u, G = v, B = 0.5.

    Bilinear sampling of it returns the sampled (u, v) exactly (it is affine between texel
    centres), for u and v within half a texel of the interior with wrap ``"clamp"``."""
    c = (torch.arange(size, dtype=dtype) + 0.5) / size
    u = c[None, :].expand(size, size)
    v = (1.0 - c)[:, None].expand(size, size)  # row 0 is the top, v = 1 there
    return torch.stack([u, v, torch.full_like(u, 0.5)])[None].contiguous()


def tiny_mesh(seed: int, dtype: torch.dtype = torch.float64) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fan of 3 counter-clockwise triangles around a shared centre vertex, about 2 units in front
    of :func:`identity_camera`, randomly perturbed by ``seed``.

    Returns (vertices (1, 5, 3), faces (3, 3), face_uvs (3, 3, 2))."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[0.0, 0.0, -2.0], [0.8, -0.5, -2.3], [0.55, 0.65, -1.9], [-0.6, 0.55, -2.1],
                         [-0.55, -0.6, -2.2]], dtype=dtype)
    v = base + 0.08 * torch.randn(base.shape, generator=g, dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4]], dtype=torch.int64)
    uv_v = torch.tensor([[0.5, 0.5], [0.9, 0.2], [0.8, 0.9], [0.15, 0.85], [0.2, 0.1]], dtype=dtype)
    uv_v = uv_v + 0.03 * torch.randn(uv_v.shape, generator=g, dtype=dtype)
    return v[None], faces, uv_v[faces]


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run a test on one torch thread (small fits run faster so on a busy 2-core machine); use
    it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` after importing it."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
