"""The C++ kernels against the reference path: forward, backward, gradcheck, literal values."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch

import dibr_core
from dibr_core import rasterize, soft_mask

HAS_CPP = dibr_core.backend_info().cpu_kernels
BACKENDS = ["reference"] + (["cpu"] if HAS_CPP else [])
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")


def random_faces(B: int, F: int, dtype: torch.dtype, seed: int, kind: str = "mixed"):
    """Random faces in NDC with a mix of sizes: tiny, normal, huge, degenerate and edge-on."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(B, F, 1, 2, generator=g, dtype=dtype) * 2.2 - 1.1
    scale = torch.rand(B, F, 1, 1, generator=g, dtype=dtype) * 0.5 + 0.02
    if kind == "mixed":
        pick = torch.randint(0, 6, (B, F, 1, 1), generator=g)
        scale = torch.where(pick == 0, scale * 0.01, scale)      # tiny (sub-pixel)
        scale = torch.where(pick == 1, scale * 8.0, scale)       # huge (beyond the image)
    fvi = centre + (torch.rand(B, F, 3, 2, generator=g, dtype=dtype) - 0.5) * scale
    if kind == "mixed":
        # degenerate: all three corners on a line; edge-on: two corners coincide
        line = fvi[:, :, 0:1] + torch.linspace(0, 1, 3, dtype=dtype).view(1, 1, 3, 1) * (fvi[:, :, 1:2] - fvi[:, :, 0:1])
        fvi = torch.where((pick == 2).expand_as(fvi), line, fvi)
        same = fvi.clone()
        same[:, :, 2] = same[:, :, 1]
        fvi = torch.where((pick == 3).expand_as(fvi), same, fvi)
    fvz = -(torch.rand(B, F, 3, generator=g, dtype=dtype) * 4 + 1)
    valid = torch.rand(B, F, generator=g) > 0.15
    return fvi, fvz, valid


def test_backend_info_reports_cpp_kernels() -> None:
    info = dibr_core.backend_info()
    assert info.default in ("cpu", "reference")
    assert info.reason
    assert "backend" in str(info)
    assert info.default == ("cpu" if info.cpu_kernels else "reference")


@pytest.mark.float_sensitive
@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_cpp_matches_reference(dtype: torch.dtype, seed: int) -> None:
    B, F, H, W = 2, 60, 37, 29
    fvi, fvz, valid = random_faces(B, F, dtype, seed)
    a = fvi.clone().requires_grad_(True)
    b = fvi.clone().requires_grad_(True)
    fc = rasterize(a, fvz, H, W, valid, backend="cpu")
    fr = rasterize(b, fvz, H, W, valid, backend="reference")
    assert torch.equal(fc.face_idx, fr.face_idx)
    assert (fc.face_idx >= 0).float().mean() > 0.2
    torch.testing.assert_close(fc.bary, fr.bary, atol=1e-5, rtol=0)
    g = torch.randn(B, H, W, 3, dtype=dtype, generator=torch.Generator().manual_seed(seed + 100))
    (ga,) = torch.autograd.grad((fc.bary * g).sum(), a)
    (gb,) = torch.autograd.grad((fr.bary * g).sum(), b)
    scale = gb.abs().max()
    torch.testing.assert_close(ga / scale, gb / scale, atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=0)


@pytest.mark.float_sensitive
@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("params", [(7000.0, 0.02, 30), (70.0, 0.2, 20), (700.0, 0.1, 3)])
def test_soft_mask_cpp_matches_reference(dtype: torch.dtype, params) -> None:
    sigmainv, boxlen, knum = params
    B, F, H, W = 2, 50, 31, 33
    fvi, fvz, valid = random_faces(B, F, dtype, 7)
    fvi = fvi * 0.6
    face_idx = rasterize(fvi, fvz, H, W, valid, backend="reference").face_idx
    a = fvi.clone().requires_grad_(True)
    b = fvi.clone().requires_grad_(True)
    sc = soft_mask(a, face_idx, sigmainv=sigmainv, boxlen=boxlen, knum=knum, backend="cpu")
    sr = soft_mask(b, face_idx, sigmainv=sigmainv, boxlen=boxlen, knum=knum, backend="reference")
    # The distances are the same correctly rounded arithmetic on both sides; exp is not (glibc's
    # expf in the kernel, torch's vectorised exp, picked per CPU, in the reference): each is
    # within 1 ulp, so p = exp(.) <= 1 differs by <= 2 * 2^-24, and 1 - prod_k(1 - p_k) by at most
    # the sum over knum <= 30 candidates (3.6e-6) plus each side's 30 product roundings
    # (2 * 1.8e-6): below 1e-5 on any CPU.
    torch.testing.assert_close(sc, sr, atol=1e-5, rtol=0)
    uncovered = face_idx < 0
    assert (sr[uncovered] > 1e-3).any(), "the soft halo must be non-trivial in this test"
    assert torch.all(sr[~uncovered] == 1)
    g = torch.randn(B, H, W, dtype=dtype, generator=torch.Generator().manual_seed(3))
    (ga,) = torch.autograd.grad((sc * g).sum(), a)
    (gb,) = torch.autograd.grad((sr * g).sum(), b)
    scale = gb.abs().max()
    assert scale > 0
    torch.testing.assert_close(ga / scale, gb / scale, atol=1e-4 if dtype == torch.float32 else 1e-10, rtol=0)


@needs_cpp
def test_soft_mask_valid_faces_and_knum_cap() -> None:
    fvi, fvz, valid = random_faces(1, 40, torch.float64, 11)
    fvi = fvi * 0.3
    face_idx = torch.full((1, 24, 24), -1, dtype=torch.int64)
    for be in BACKENDS:
        full = soft_mask(fvi, face_idx, sigmainv=300.0, boxlen=0.3, knum=100, backend=be)
        one = soft_mask(fvi, face_idx, sigmainv=300.0, boxlen=0.3, knum=1, backend=be)
        masked = soft_mask(fvi, face_idx, sigmainv=300.0, boxlen=0.3, knum=100, valid_faces=valid, backend=be)
        assert torch.all(one <= full + 1e-12)
        assert (one < full - 1e-6).any()
        assert torch.all(masked <= full + 1e-12)
        assert (masked < full - 1e-6).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_rasterize(backend: str) -> None:
    g = torch.Generator().manual_seed(5)
    fvi = (torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2)
    fvz = -(torch.rand(1, 4, 3, generator=g, dtype=torch.float64) + 1)
    feats = torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64)
    face_idx = rasterize(fvi, fvz, 9, 11, backend=backend).face_idx
    assert (face_idx >= 0).sum() > 10

    def f(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        fr = rasterize(v, fvz, 9, 11, backend=backend)
        assert torch.equal(fr.face_idx, face_idx), "perturbation changed visibility; pick another seed"
        return dibr_core.interpolate(u, fr, backend=backend)

    assert torch.autograd.gradcheck(f, (fvi.requires_grad_(), feats.requires_grad_()), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_soft_mask(backend: str) -> None:
    g = torch.Generator().manual_seed(9)
    fvi = (torch.rand(1, 3, 3, 2, generator=g, dtype=torch.float64) - 0.5) * 0.9
    fvz = -torch.ones(1, 3, 3, dtype=torch.float64)
    face_idx = rasterize(fvi, fvz, 10, 10, backend=backend).face_idx

    def f(v: torch.Tensor) -> torch.Tensor:
        return soft_mask(v, face_idx, sigmainv=60.0, boxlen=0.5, knum=3, backend=backend)

    out = f(fvi)
    assert ((out > 0.01) & (out < 0.99)).sum() > 10
    assert torch.autograd.gradcheck(f, (fvi.requires_grad_(),), eps=1e-7, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_mask_backward_exact_when_a_factor_approaches_one(backend: str) -> None:
    # Face 0's edge passes 1e-5 NDC from the centre of pixel (1, 2) of a 4x4 image, so its factor
    # 1 - A_0 is ~5e-9: the quotient form (1 - A) / (1 - A_0 + EPS) of the original code would
    # lose the gradient; prefix/suffix products keep it exact (checked by finite differences).
    fvi = torch.tensor([[[[-1.0, 0.25 + 1e-5], [1.0, 0.25 + 1e-5], [0.0, 1.5]],
                         [[-0.5, -0.4], [0.9, -0.3], [0.1, -0.9]]]], dtype=torch.float64)
    face_idx = torch.full((1, 4, 4), -1, dtype=torch.int64)  # treat both faces as not drawn

    def f(v: torch.Tensor) -> torch.Tensor:
        return soft_mask(v, face_idx, sigmainv=50.0, boxlen=2.0, knum=5, backend=backend)[0, 1, 2]

    v = fvi.clone().requires_grad_(True)
    out = f(v)
    assert 1 - out.item() < 1e-8
    (g,) = torch.autograd.grad(out, v)
    assert torch.isfinite(g).all()
    assert g[0, 0].abs().max() > 1e-5  # the near edge still moves the value
    assert torch.autograd.gradcheck(f, (v,), eps=1e-8, atol=1e-9, rtol=1e-3)


def test_literal_one_triangle() -> None:
    # A right triangle covering the lower-left half of a 4x4 image (counter-clockwise).
    fvi = torch.tensor([[[[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]]])
    fvz = torch.tensor([[[-2.0, -2.0, -2.0]]])
    for be in BACKENDS:
        fr = rasterize(fvi, fvz, 4, 4, backend=be)
        expected = torch.tensor([[0, -1, -1, -1], [0, 0, -1, -1], [0, 0, 0, -1], [0, 0, 0, 0]])
        # pixel (i, j) centre (x, y) = ((2j+1-4)/4, (4-2i-1)/4); covered iff x + y <= 0
        assert torch.equal(fr.face_idx[0], expected), be
        # at row 3, col 0: centre (-0.75, -0.75): w1 = (x+1)/2 = 0.125, w2 = (y+1)/2 = 0.125
        torch.testing.assert_close(fr.bary[0, 3, 0], torch.tensor([0.75, 0.125, 0.125]), atol=1e-6, rtol=0)
        assert torch.all(fr.bary[0, 0, 1] == 0)


def test_literal_two_triangles_depth_and_ties() -> None:
    # Two identical full-screen triangles: the closer one (larger z) wins; on equal depth the
    # lower index wins.
    tri = [[-3.0, -3.0], [3.0, -3.0], [0.0, 3.0]]
    fvi = torch.tensor([[tri, tri]])
    for be in BACKENDS:
        near_second = rasterize(fvi, torch.tensor([[[-5.0] * 3, [-2.0] * 3]]), 2, 2, backend=be)
        assert torch.all(near_second.face_idx == 1)
        tie = rasterize(fvi, torch.tensor([[[-2.0] * 3, [-2.0] * 3]]), 2, 2, backend=be)
        assert torch.all(tie.face_idx == 0)
        culled = rasterize(fvi, torch.tensor([[[-5.0] * 3, [-2.0] * 3]]), 2, 2,
                           torch.tensor([[True, False]]), backend=be)
        assert torch.all(culled.face_idx == 0)


def test_literal_soft_mask_value() -> None:
    # One small triangle far from pixel (0, 0) except for its corner: the soft value is
    # exp(-sigmainv * d^2) of the nearest corner.
    fvi = torch.tensor([[[[0.0, 0.5], [0.4, 0.5], [0.0, 0.9]]]], dtype=torch.float64)
    face_idx = torch.full((1, 2, 2), -1, dtype=torch.int64)
    for be in BACKENDS:
        out = soft_mask(fvi, face_idx, sigmainv=10.0, boxlen=1.0, knum=30, backend=be)
        # pixel (0, 1) centre (0.5, 0.5): nearest boundary point is corner (0.4, 0.5), d = 0.1
        torch.testing.assert_close(out[0, 0, 1], torch.tensor(math.exp(-10.0 * 0.01), dtype=torch.float64),
                                   atol=1e-9, rtol=0)
        # pixel (0, 0) centre (-0.5, 0.5): nearest is the corner (0, 0.5), d = 0.5
        torch.testing.assert_close(out[0, 0, 0], torch.exp(torch.tensor(-10.0 * 0.25, dtype=torch.float64)),
                                   atol=1e-9, rtol=0)


@needs_cpp
def test_backward_is_deterministic_across_thread_counts() -> None:
    fvi, fvz, valid = random_faces(2, 300, torch.float32, 21)
    fvi = fvi * 0.7
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, max(2, threads), 1):
            torch.set_num_threads(n)
            v = fvi.clone().requires_grad_(True)
            fr = rasterize(v, fvz, 48, 40, valid, backend="cpu")
            sm = soft_mask(v, fr.face_idx, backend="cpu", sigmainv=2000.0, boxlen=0.1)
            g = torch.linspace(-1, 1, fr.bary.numel()).view_as(fr.bary)
            ((fr.bary * g).sum() + (sm * sm).sum()).backward()
            assert v.grad is not None
            results.append(v.grad.clone())
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1]) and torch.equal(results[0], results[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_messages(backend: str) -> None:
    fvi = torch.rand(2, 5, 3, 2)
    fvz = -torch.rand(2, 5, 3) - 1
    with pytest.raises(ValueError, match=r"rasterize\(\): face_vertices_image must have shape \(B, F, 3, 2\), got \(2, 5, 3\)"):
        rasterize(fvi[..., 0], fvz, 4, 4, backend=backend)
    with pytest.raises(ValueError, match=r"rasterize\(\): face_vertices_z must have shape \(B, F, 3\) with B=2, F=5, got \(2, 4, 3\)"):
        rasterize(fvi, fvz[:, :4], 4, 4, backend=backend)
    with pytest.raises(TypeError, match=r"rasterize\(\): face_vertices_z must have dtype float32, got float64"):
        rasterize(fvi, fvz.double(), 4, 4, backend=backend)
    with pytest.raises(TypeError, match=r"rasterize\(\): face_vertices_image must have dtype float32, float64, got int64"):
        rasterize(fvi.long(), fvz, 4, 4, backend=backend)
    bad = fvi.clone()
    bad[1, 2, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"rasterize\(\): face_vertices_image contains NaN or Inf"):
        rasterize(bad, fvz, 4, 4, backend=backend)
    bad[1, 2, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"rasterize\(\): face_vertices_image contains NaN or Inf"):
        rasterize(bad, fvz, 4, 4, backend=backend)
    with pytest.raises(ValueError, match=r"rasterize\(\): height and width must be positive"):
        rasterize(fvi, fvz, 0, 4, backend=backend)
    with pytest.raises(ValueError, match=r"rasterize\(\): valid_faces must have shape \(B, F\)"):
        rasterize(fvi, fvz, 4, 4, torch.ones(2, 4, dtype=torch.bool), backend=backend)
    with pytest.raises(TypeError, match=r"rasterize\(\): face_vertices_image must be a torch.Tensor, got list"):
        rasterize([[0.0]], fvz, 4, 4, backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"rasterize\(\): backend must be one of"):
        rasterize(fvi, fvz, 4, 4, backend="vulkan")
    face_idx = torch.full((2, 4, 4), -1, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"soft_mask\(\): face_idx must have shape \(B, H, W\) with B=2"):
        soft_mask(fvi, face_idx[:1], backend=backend)
    with pytest.raises(TypeError, match=r"soft_mask\(\): face_idx must have dtype int64, got int32"):
        soft_mask(fvi, face_idx.int(), backend=backend)
    with pytest.raises(ValueError, match=r"soft_mask\(\): knum must be an int in \[1, 4096\], got 0"):
        soft_mask(fvi, face_idx, knum=0, backend=backend)
    with pytest.raises(ValueError, match=r"soft_mask\(\): sigmainv must be a finite positive number, got -1"):
        soft_mask(fvi, face_idx, sigmainv=-1, backend=backend)


def test_empty_mesh_renders_background() -> None:
    fvi = torch.zeros(1, 0, 3, 2)
    fvz = torch.zeros(1, 0, 3)
    for be in BACKENDS:
        fr = rasterize(fvi, fvz, 3, 3, backend=be)
        assert torch.all(fr.face_idx == -1) and torch.all(fr.bary == 0)
        assert torch.all(soft_mask(fvi, fr.face_idx, backend=be) == 0)


def test_import_never_fails_without_compiler(tmp_path) -> None:
    # A fresh build folder and a compiler that always fails: one warning, reference backend.
    env = dict(os.environ, DIBR_BUILD_DIR=str(tmp_path / "b"), CXX="false", CC="false")
    code = ("import warnings, dibr_core\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    info = dibr_core.backend_info()\n"
            "print(info.default, len([x for x in w if 'reference path' in str(x.message)]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["reference", "1"], out.stdout + out.stderr


def test_forced_reference_backend() -> None:
    env = dict(os.environ, DIBR_BACKEND="reference")
    code = "import dibr_core; i = dibr_core.backend_info(); print(i.default, '|', i.reason)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("reference | DIBR_BACKEND=reference"), out.stdout
