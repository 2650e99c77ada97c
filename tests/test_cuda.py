"""The CUDA kernels against the CPU kernels, through the public ops.

Each test runs an op with backend="cuda" on CUDA tensors and with backend="cpu" on the same
data moved to the CPU: the face index must be equal, weights, features and the soft mask
within 1e-5, gradients within 1e-4 relative to their largest entry. Skipped unless a GPU is
visible and the extension was built with the CUDA kernels.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import pytest
import torch

import dibr_core
from dibr_core import interpolate, rasterize, soft_mask
from dibr_core.ops import Fragments, set_deterministic

HAS_CUDA = torch.cuda.is_available() and dibr_core.backend_info().cuda_kernels
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and the extension built with its CUDA kernels"),
]

DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=[False, True], ids=["atomic", "deterministic"])
def deterministic(request: pytest.FixtureRequest) -> Iterator[bool]:
    set_deterministic(bool(request.param))
    try:
        yield bool(request.param)
    finally:
        set_deterministic(None)


def random_faces(B: int, F: int, dtype: torch.dtype, seed: int, spread: float = 1.1, size: float = 0.5
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random faces in NDC: normal, tiny, huge (beyond the image), degenerate and edge-on ones."""
    g = torch.Generator().manual_seed(seed)
    centre = (torch.rand(B, F, 1, 2, generator=g, dtype=dtype) * 2 - 1) * spread
    scale = torch.rand(B, F, 1, 1, generator=g, dtype=dtype) * size + 0.02
    pick = torch.randint(0, 8, (B, F, 1, 1), generator=g)
    scale = torch.where(pick == 0, scale * 0.01, scale)
    scale = torch.where(pick == 1, scale * 8.0, scale)
    fvi = centre + (torch.rand(B, F, 3, 2, generator=g, dtype=dtype) - 0.5) * scale
    line = fvi[:, :, 0:1] + torch.linspace(0, 1, 3, dtype=dtype).view(1, 1, 3, 1) * (fvi[:, :, 1:2] - fvi[:, :, 0:1])
    fvi = torch.where((pick == 2).expand_as(fvi), line, fvi)
    same = fvi.clone()
    same[:, :, 2] = same[:, :, 1]
    fvi = torch.where((pick == 3).expand_as(fvi), same, fvi)
    fvz = -(torch.rand(B, F, 3, generator=g, dtype=dtype) * 4 + 1)
    valid = torch.rand(B, F, generator=g) > 0.15
    return fvi, fvz, valid


def assert_grad_close(got: torch.Tensor, want: torch.Tensor, rtol: float = 1e-4) -> None:
    got = got.detach().cpu()
    scale = want.abs().max().clamp(min=1e-30)
    torch.testing.assert_close(got / scale, want / scale, atol=rtol, rtol=0)


def cuda(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if t is None else t.cuda()


# Image sizes that are and are not multiples of the 8x8 tile, face counts that give tile lists
# longer than one 64-face chunk.
RASTER_CASES = [(2, 60, 37, 29, 1.1, 0.5), (1, 700, 64, 48, 0.6, 0.3), (3, 5, 5, 3, 1.0, 1.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", RASTER_CASES, ids=lambda c: f"B{c[0]}F{c[1]}_{c[2]}x{c[3]}")
@pytest.mark.parametrize("seed", [0, 1])
def test_rasterize_matches_cpu(dtype: torch.dtype, case: tuple, seed: int, deterministic: bool) -> None:
    B, F, H, W, spread, size = case
    fvi, fvz, valid = random_faces(B, F, dtype, seed, spread, size)
    a = fvi.clone().cuda().requires_grad_(True)
    b = fvi.clone().requires_grad_(True)
    fg = rasterize(a, fvz.cuda(), H, W, valid.cuda(), backend="cuda")
    fc = rasterize(b, fvz, H, W, valid, backend="cpu")
    assert fg.face_idx.is_cuda and fg.bary.is_cuda
    assert torch.equal(fg.face_idx.cpu(), fc.face_idx)
    torch.testing.assert_close(fg.bary.cpu(), fc.bary, atol=1e-5, rtol=0)
    g = torch.randn(B, H, W, 3, dtype=dtype, generator=torch.Generator().manual_seed(seed + 100))
    (ga,) = torch.autograd.grad((fg.bary * g.cuda()).sum(), a)
    (gb,) = torch.autograd.grad((fc.bary * g).sum(), b)
    assert_grad_close(ga, gb)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rasterize_without_valid_faces_and_ties(dtype: torch.dtype) -> None:
    tri = [[-3.0, -3.0], [3.0, -3.0], [0.0, 3.0]]
    fvi = torch.tensor([[tri, tri, tri]], dtype=dtype)
    fvz = torch.tensor([[[-2.0] * 3, [-2.0] * 3, [-5.0] * 3]], dtype=dtype)
    fr = rasterize(fvi.cuda(), fvz.cuda(), 9, 13, backend="cuda")
    assert torch.all(fr.face_idx == 0)  # equal depth: the lowest index wins
    fvi, fvz, _ = random_faces(2, 200, dtype, 5, 0.8, 0.4)
    fg = rasterize(fvi.cuda(), fvz.cuda(), 40, 33, backend="cuda")
    fc = rasterize(fvi, fvz, 40, 33, backend="cpu")
    assert torch.equal(fg.face_idx.cpu(), fc.face_idx)
    torch.testing.assert_close(fg.bary.cpu(), fc.bary, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [(7000.0, 0.02, 30), (70.0, 0.2, 20), (700.0, 0.1, 3), (300.0, 0.5, 200)])
def test_soft_mask_matches_cpu(dtype: torch.dtype, params: tuple, deterministic: bool) -> None:
    sigmainv, boxlen, knum = params
    B, F, H, W = 2, 150, 31, 42
    fvi, fvz, valid = random_faces(B, F, dtype, 7, 1.0, 0.3)
    fvi = fvi * 0.7
    face_idx = rasterize(fvi, fvz, H, W, valid, backend="cpu").face_idx
    a = fvi.clone().cuda().requires_grad_(True)
    b = fvi.clone().requires_grad_(True)
    for vf in (None, valid):
        sg = soft_mask(a, face_idx.cuda(), sigmainv=sigmainv, boxlen=boxlen, knum=knum, valid_faces=cuda(vf),
                       backend="cuda")
        sc = soft_mask(b, face_idx, sigmainv=sigmainv, boxlen=boxlen, knum=knum, valid_faces=vf, backend="cpu")
        assert sg.is_cuda
        torch.testing.assert_close(sg.detach().cpu(), sc.detach(), atol=1e-5, rtol=0)
        uncovered = face_idx < 0
        assert (sc[uncovered] > 1e-3).any(), "the soft halo must be non-trivial in this test"
        g = torch.randn(B, H, W, dtype=dtype, generator=torch.Generator().manual_seed(3))
        (ga,) = torch.autograd.grad((sg * g.cuda()).sum(), a)
        (gb,) = torch.autograd.grad((sc * g).sum(), b)
        assert gb.abs().max() > 0
        assert_grad_close(ga, gb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("faces_kind", ["per_corner", "shared", "batched"])
def test_interpolate_matches_cpu(dtype: torch.dtype, faces_kind: str, deterministic: bool) -> None:
    B, F, H, W, D, V = 2, 80, 30, 26, 5, 40
    fvi, fvz, valid = random_faces(B, F, dtype, 11, 1.0, 0.5)
    fr_c = rasterize(fvi, fvz, H, W, valid, backend="cpu")
    gen = torch.Generator().manual_seed(12)
    faces: Optional[torch.Tensor]
    if faces_kind == "per_corner":
        faces = None
        attr = torch.randn(B, F, 3, D, dtype=dtype, generator=gen)
    elif faces_kind == "shared":
        faces = torch.randint(0, V, (F, 3), generator=gen)
        attr = torch.randn(B, V, D, dtype=dtype, generator=gen)
    else:
        faces = torch.randint(0, V, (B, F, 3), generator=gen)
        attr = torch.randn(B, V, D, dtype=dtype, generator=gen)
    bary_c = fr_c.bary.detach().clone().requires_grad_(True)
    bary_g = fr_c.bary.detach().cuda().requires_grad_(True)
    attr_c = attr.clone().requires_grad_(True)
    attr_g = attr.cuda().requires_grad_(True)
    fc = Fragments(fr_c.face_idx, bary_c)
    fg = Fragments(fr_c.face_idx.cuda(), bary_g)
    out_c = interpolate(attr_c, fc, faces, backend="cpu")
    out_g = interpolate(attr_g, fg, cuda(faces), backend="cuda")
    assert out_g.is_cuda
    torch.testing.assert_close(out_g.detach().cpu(), out_c.detach(), atol=1e-5, rtol=0)
    g = torch.randn(B, H, W, D, dtype=dtype, generator=gen)
    ga_c, gb_c = torch.autograd.grad((out_c * g).sum(), (attr_c, bary_c))
    ga_g, gb_g = torch.autograd.grad((out_g * g.cuda()).sum(), (attr_g, bary_g))
    assert_grad_close(ga_g, ga_c)
    assert_grad_close(gb_g, gb_c)


def _all_grads(dtype: torch.dtype) -> torch.Tensor:
    """Gradient of a loss that uses every op: many pixels per face, so atomics would reorder."""
    B, F, H, W, D = 2, 300, 64, 56, 4
    fvi, fvz, valid = random_faces(B, F, dtype, 21, 0.8, 0.6)
    v = fvi.cuda().requires_grad_(True)
    attr = torch.randn(B, F, 3, D, dtype=dtype, generator=torch.Generator().manual_seed(4)).cuda().requires_grad_(True)
    fr = rasterize(v, fvz.cuda(), H, W, valid.cuda(), backend="cuda")
    img = interpolate(attr, fr, backend="cuda")
    sm = soft_mask(v, fr.face_idx, sigmainv=2000.0, boxlen=0.1, backend="cuda")
    g = torch.linspace(-1, 1, img.numel(), dtype=dtype, device="cuda").view_as(img)
    loss = (img * g).sum() + (fr.bary ** 2).sum() + (sm * sm).sum()
    gv, ga = torch.autograd.grad(loss, (v, attr))
    return torch.cat([gv.flatten(), ga.flatten()])


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_mode_is_bitwise_reproducible(dtype: torch.dtype) -> None:
    set_deterministic(True)
    try:
        first = _all_grads(dtype)
        for _ in range(2):
            assert torch.equal(_all_grads(dtype), first)
    finally:
        set_deterministic(None)
    assert first.abs().max() > 0
    # The atomic mode computes the same values up to rounding.
    torch.testing.assert_close(_all_grads(dtype) / first.abs().max(), first / first.abs().max(), atol=1e-5, rtol=0)


def test_deterministic_mode_from_torch_setting() -> None:
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        assert dibr_core.ops.deterministic_enabled()
        first = _all_grads(torch.float32)
        assert torch.equal(_all_grads(torch.float32), first)
    finally:
        torch.use_deterministic_algorithms(prev)


def test_auto_backend_uses_cuda_kernels() -> None:
    fvi, fvz, valid = random_faces(1, 50, torch.float32, 3)
    fa = rasterize(fvi.cuda(), fvz.cuda(), 20, 24, valid.cuda())
    fg = rasterize(fvi.cuda(), fvz.cuda(), 20, 24, valid.cuda(), backend="cuda")
    assert torch.equal(fa.face_idx, fg.face_idx) and torch.equal(fa.bary, fg.bary)


def test_no_faces_drawn_and_empty_tiles() -> None:
    fvi, fvz, _ = random_faces(2, 30, torch.float32, 8)
    none = torch.zeros(2, 30, dtype=torch.bool)
    fr = rasterize(fvi.cuda(), fvz.cuda(), 17, 9, none.cuda(), backend="cuda")
    assert torch.all(fr.face_idx == -1) and torch.all(fr.bary == 0)
    v = fvi.cuda().requires_grad_(True)
    sm = soft_mask(v, fr.face_idx, valid_faces=none.cuda(), backend="cuda")
    assert torch.all(sm == 0)
    (g,) = torch.autograd.grad(sm.sum(), v)
    assert torch.all(g == 0)
    far = torch.full((1, 4, 3, 2), 50.0)  # every face far outside the image
    fr2 = rasterize(far.cuda(), -torch.ones(1, 4, 3).cuda(), 8, 8, backend="cuda")
    assert torch.all(fr2.face_idx == -1)


@pytest.mark.parametrize("det", [False, True])
def test_gradcheck_rasterize_interpolate_cuda(det: bool) -> None:
    g = torch.Generator().manual_seed(5)
    fvi = (torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64) * 2.4 - 1.2).cuda()
    fvz = -(torch.rand(1, 4, 3, generator=g, dtype=torch.float64) + 1).cuda()
    feats = torch.rand(1, 4, 3, 2, generator=g, dtype=torch.float64).cuda()
    face_idx = rasterize(fvi, fvz, 9, 11, backend="cuda").face_idx
    assert (face_idx >= 0).sum() > 10

    def f(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        fr = rasterize(v, fvz, 9, 11, backend="cuda")
        assert torch.equal(fr.face_idx, face_idx), "perturbation changed visibility; pick another seed"
        return interpolate(u, fr, backend="cuda")

    set_deterministic(det)
    try:
        assert torch.autograd.gradcheck(f, (fvi.requires_grad_(), feats.requires_grad_()), eps=1e-7, atol=1e-6)
    finally:
        set_deterministic(None)


@pytest.mark.parametrize("det", [False, True])
def test_gradcheck_soft_mask_cuda(det: bool) -> None:
    g = torch.Generator().manual_seed(9)
    fvi = ((torch.rand(1, 3, 3, 2, generator=g, dtype=torch.float64) - 0.5) * 0.9).cuda()
    fvz = -torch.ones(1, 3, 3, dtype=torch.float64).cuda()
    face_idx = rasterize(fvi, fvz, 10, 10, backend="cuda").face_idx

    def f(v: torch.Tensor) -> torch.Tensor:
        return soft_mask(v, face_idx, sigmainv=60.0, boxlen=0.5, knum=3, backend="cuda")

    out = f(fvi)
    assert ((out > 0.01) & (out < 0.99)).sum() > 10
    set_deterministic(det)
    try:
        assert torch.autograd.gradcheck(f, (fvi.requires_grad_(),), eps=1e-7, atol=1e-6)
    finally:
        set_deterministic(None)
