"""Large-step geometry optimisation: the Laplacian system, its solvers, the uniform-rate Adam and
a large-step fit that stays free of self-intersections."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from dibr_core import large_steps
from dibr_core.eval import fit as fit_benchmark
from dibr_core.eval.__main__ import main as eval_main
from dibr_core.fit import FitOptions, FitView, fit
from helpers import one_torch_thread  # noqa: F401  (fixture)
from dibr_core.large_steps import LaplacianSystem, UniformAdam, combinatorial_laplacian
from dibr_core.mesh import icosphere

warnings.filterwarnings("ignore", message="Sparse")


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small fits: faster on one thread


def _system_dense(faces: torch.Tensor, n: int, lam: float) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64) + lam * combinatorial_laplacian(faces, n).to_dense()


def test_combinatorial_laplacian_is_degree_minus_adjacency() -> None:
    v, f, _ = icosphere(1, dtype=torch.float64)
    L = combinatorial_laplacian(f, v.shape[0]).to_dense()
    assert torch.equal(L, L.T)
    assert float(L.sum(dim=1).abs().max()) == 0.0
    deg = L.diagonal()
    assert set(deg.tolist()) == {5.0, 6.0}              # icosahedron corners have 5 neighbours
    assert int((L == -1).sum()) == int(deg.sum())       # one -1 per edge end
    # Rigid translations are in the null space.
    assert float((L @ torch.ones(v.shape[0], dtype=torch.float64)).abs().max()) == 0.0


@pytest.mark.parametrize("method", ["sparse", "cholesky", "cg"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 2e-5)])
def test_solve_inverts_the_operator(method: str, dtype: torch.dtype, tol: float) -> None:
    _, f, _ = icosphere(2)
    n = 162
    lam = 19.0
    system = LaplacianSystem(f, n, lam, dtype=dtype, method=method)
    assert system.method == method
    g = torch.Generator().manual_seed(0)
    b = torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    x = system.solve(b)
    assert x.dtype == dtype and x.shape == (n, 3)
    m = _system_dense(f, n, lam)
    residual = float((m @ x.double() - b.double()).norm() / b.double().norm())
    assert residual <= tol, f"relative residual {residual:.2e} > {tol:.0e}"
    # apply() is M itself.
    assert torch.allclose(system.apply(x).double(), m @ x.double(), rtol=1e-5, atol=1e-5)
    # Warm-started second solve of a nearby right-hand side is as accurate.
    b2 = b + 0.01 * torch.randn(n, 3, generator=g, dtype=torch.float64).to(dtype)
    x2 = system.solve(b2)
    assert float((m @ x2.double() - b2.double()).norm() / b2.double().norm()) <= tol


def test_auto_method_is_the_sparse_factor_with_cholespy() -> None:
    """cholespy is a pinned dependency: on the CPU the default solver is its sparse factor."""
    _, f, _ = icosphere(1)
    assert LaplacianSystem(f, 42, 5.0).method == "sparse"
    assert LaplacianSystem(f, 42, 5.0, dense_max=10).method == "sparse"


def test_auto_method_without_cholespy_picks_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    _, f, _ = icosphere(1)
    monkeypatch.setattr(large_steps, "_CHOLESPY", False)   # as if the package were not installed
    assert LaplacianSystem(f, 42, 5.0).method == "cholesky"
    assert LaplacianSystem(f, 42, 5.0, dense_max=10).method == "cg"
    with pytest.raises(ValueError, match="'sparse' needs the cholespy package"):
        LaplacianSystem(f, 42, 5.0, method="sparse")


def test_inverse_gradient_is_the_transposed_solve() -> None:
    _, f, _ = icosphere(1)
    system = LaplacianSystem(f, 42, 3.0, dtype=torch.float64, method="cholesky")
    u = torch.randn(42, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(system.inverse, (u,), eps=1e-6, atol=1e-8)
    sparse = LaplacianSystem(f, 42, 3.0, dtype=torch.float64, method="sparse")
    assert torch.autograd.gradcheck(sparse.inverse, (u,), eps=1e-6, atol=1e-8)
    # The conjugate-gradient path gives the same gradient (within its tolerance).
    cg = LaplacianSystem(f, 42, 3.0, dtype=torch.float64, method="cg")
    w = torch.randn(42, 3, dtype=torch.float64)
    (ga,) = torch.autograd.grad((system.inverse(u) * w).sum(), u)
    (gb,) = torch.autograd.grad((cg.inverse(u) * w).sum(), u)
    (gc,) = torch.autograd.grad((sparse.inverse(u) * w).sum(), u)
    assert float((ga - gb).norm() / ga.norm()) < 1e-3   # the gradient solve stops at 1e-4
    assert float((ga - gc).norm() / ga.norm()) < 1e-10  # both factors are exact to rounding


def test_system_rejects_bad_arguments() -> None:
    _, f, _ = icosphere(1)
    with pytest.raises(ValueError, match="lam"):
        LaplacianSystem(f, 42, -1.0)
    with pytest.raises(ValueError, match="method"):
        LaplacianSystem(f, 42, 1.0, method="lu")
    system = LaplacianSystem(f, 42, 1.0)
    with pytest.raises(ValueError, match=r"solve\(\): b must have shape"):
        system.solve(torch.zeros(41, 3))


def test_uniform_adam_step_matches_the_formula() -> None:
    torch.manual_seed(0)
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p_all = torch.zeros(5, 3, requires_grad=True)
    p_row = torch.zeros(5, 3, requires_grad=True)
    opt_all = UniformAdam([p_all], lr=lr, betas=(b1, b2), eps=eps)
    opt_row = UniformAdam([p_row], lr=lr, betas=(b1, b2), eps=eps, per="row")
    m = torch.zeros(5, 3)
    v = torch.zeros(5, 3)
    ref_all = torch.zeros(5, 3)
    ref_row = torch.zeros(5, 3)
    for t in range(1, 4):
        g = torch.randn(5, 3)
        for p, o in ((p_all, opt_all), (p_row, opt_row)):
            p.grad = g.clone()
            o.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, root = m / (1 - b1 ** t), (v / (1 - b2 ** t)).sqrt()
        ref_all -= lr * mh / (root.max() + eps)
        ref_row -= lr * mh / (root.max(dim=1, keepdim=True).values + eps)
    assert torch.allclose(p_all.detach(), ref_all, atol=1e-6)
    assert torch.allclose(p_row.detach(), ref_row, atol=1e-6)
    # The first step is uniform: its largest entry is lr (over all, resp. in every row).
    q = torch.zeros(4, 3, requires_grad=True)
    q.grad = torch.tensor([[1.0, -3.0, 0.5], [0.1, 0.2, 0.3], [2.0, 0.0, 0.0], [0.0, 0.0, -0.01]])
    UniformAdam([q], lr=0.5, per="row").step()
    assert torch.allclose(q.detach().abs().max(dim=1).values, torch.full((4,), 0.5), atol=1e-4)
    with pytest.raises(ValueError, match="per"):
        UniformAdam([q], per="vertex")


def _views(v: torch.Tensor, f: torch.Tensor, n: int, size: int) -> list:
    cams = fit_benchmark.ring_cameras(n)
    colours = (0.5 + 0.4 * v / 0.9).clamp(0, 1)
    rgb, mask = fit_benchmark._render_masks(v, f, cams, size, colours)
    return [FitView(c, rgb[k], mask[k], f"v{k}") for k, c in enumerate(fit_benchmark._split(cams))]


def test_large_step_fit_is_clean_and_accurate() -> None:
    """A smooth head fitted from an icosphere by the default (large-step) optimiser: the
    silhouettes match, the surface is as smooth as the target's and has no self-intersections,
    and gradients reached the vertices (the shape moved far from the sphere)."""
    tv, tf = fit_benchmark.head_mesh()
    views = _views(tv, tf, 4, 64)
    v0, f0, _ = icosphere(3, 0.7)
    opts = FitOptions(steps=150)
    assert opts.optimizer == "large_steps"
    res = fit(v0, f0, views, opts)
    v = res.vertices
    assert bool(torch.isfinite(v).all())
    assert res.losses[-1] < 0.2 * res.losses[0]
    assert min(m.silhouette_iou for m in res.views) >= 0.93, [m.silhouette_iou for m in res.views]  # 64 px
    assert fit_benchmark.self_intersecting_faces(v, f0) == 0
    rough = fit_benchmark.mean_dihedral_angle(v, f0) / fit_benchmark.mean_dihedral_angle(tv, tf)
    assert rough <= 1.5, rough
    assert fit_benchmark.chamfer_percent(v, f0, tv, tf) <= 2.0
    assert float((v - v0).norm(dim=1).max()) > 0.1


def test_cg_path_matches_the_dense_path_in_a_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    tv, tf = fit_benchmark.head_mesh()
    views = _views(tv, tf, 2, 32)
    v0, f0, _ = icosphere(2, 0.7)
    opts = FitOptions(steps=8, optimize_colors=False)
    dense = fit(v0, f0, views, opts).vertices
    monkeypatch.setattr(large_steps, "DENSE_MAX", 10)
    sparse = fit(v0, f0, views, opts).vertices
    assert float((dense - sparse).abs().max()) < 1e-3


def test_fit_options_are_checked() -> None:
    tv, tf = fit_benchmark.head_mesh()
    views = _views(tv, tf, 1, 32)
    v0, f0, _ = icosphere(1, 0.7)
    with pytest.raises(ValueError, match=r"FitOptions\(\): optimizer must be one of"):
        FitOptions(steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match=r"FitOptions\(\): large_steps_lambda"):
        FitOptions(steps=1, large_steps_lambda=-1.0)
    with pytest.raises(ValueError, match=r"FitOptions\(\): large_steps_lambda"):
        FitOptions(steps=1, large_steps_lambda=math.inf)
    # The old optimiser still runs, and lambda 0 is plain uniform-rate steps.
    for o in (FitOptions(steps=2, optimizer="adam"), FitOptions(steps=2, large_steps_lambda=0.0)):
        res = fit(v0, f0, views, o)
        assert res.steps == 2 and bool(torch.isfinite(res.vertices).all())


def test_benchmark_cli(capsys: pytest.CaptureFixture) -> None:
    assert eval_main(["fit", "--json", "--scenes", "torus", "--views", "2", "--size", "32", "--steps", "3",
                               "--threads", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["optimizer"] for r in out["rows"]] == ["large_steps", "adam"]
    for key in ("chamfer_pct", "heldout_iou", "self_intersecting_faces", "roughness_ratio", "seconds"):
        assert key in out["rows"][0]
    assert eval_main(["fit", "--scenes", "teapot"]) == 2
    assert eval_main(["fit", "--optimizers", "sgd"]) == 2


def test_fit_rejects_views_that_cannot_work() -> None:
    tv, tf = fit_benchmark.head_mesh()
    views = _views(tv, tf, 2, 32)
    v0, f0, _ = icosphere(1, 0.7)
    empty = FitView(views[1].camera, views[1].image, torch.zeros_like(views[1].mask), "Camera.002")
    with pytest.raises(ValueError, match=r"fit\(\): views\[1\] \('Camera.002'\): the reference silhouette"):
        fit(v0, f0, [views[0], empty], FitOptions(steps=1))
    with pytest.raises(ValueError, match=r"fit\(\): views\[0\] \('v0'\): the camera sees nothing"):
        fit(v0 + torch.tensor([0.0, 50.0, 0.0]), f0, views, FitOptions(steps=1))
