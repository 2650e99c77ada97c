"""Large-step geometry optimisation (Nicolet, Jacobson and Jakob, "Large Steps in Inverse
Rendering of Geometry", SIGGRAPH Asia 2021), in plain PyTorch.

Gradient steps on free vertex positions are dominated by their high-frequency part: a
silhouette or colour loss pulls on the few vertices near an edge, and each step crumples the
surface before the smooth part of the motion has got anywhere. The paper's remedy is a change of
variables. With the combinatorial Laplacian ``L = D - A`` of the mesh (``D`` the vertex degrees,
``A`` the adjacency) and ``M = I + lambda L`` (symmetric positive definite), the optimiser works on

    u = M x,        x = M^-1 u,

so the gradient it sees is ``dE/du = M^-1 dE/dx``: the high frequencies of ``dE/dx`` (where
``L`` is large) are divided by up to ``1 + 12 lambda``, the smooth ones are left almost as they
are. A step on ``u`` is then a smooth step on ``x`` (a Sobolev-like preconditioning of the
gradient).

The paper pairs it with a variant of Adam whose step is uniform across the parameters. Adam
divides each entry's first moment ``m`` by the root of its own second moment ``v``; that per-entry
rescaling would put back the high frequencies the change of variables removed. The variant
divides by one number instead, the largest ``sqrt(v_hat)``: over all entries (the paper's
choice), or over each vertex's three coordinates (``UniformAdam(..., per="row")``):

    m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
    m_hat = m / (1 - b1^t),   v_hat = v / (1 - b2^t),
    p <- p - lr m_hat / (max sqrt(v_hat) + eps).

Solving with ``M``: :class:`LaplacianSystem` factorises ``M`` once. On the CPU, with the
``cholespy`` package installed (a pinned dependency of the project; the paper's solver), the
default is its sparse Cholesky factor: two sparse triangular solves per call, exact to rounding
and about 0.2 ms for 2,500 vertices. Without it (an extension bundle without the wheel, a GPU
tensor), small meshes (up to ``dense_max`` vertices) use a dense Cholesky factor in torch and
larger ones a conjugate-gradient solve on the sparse ``M`` with a Jacobi preconditioner,
warm-started from the previous solution of the same sequence (the solution changes little between
optimiser steps); these cost about as much as a 256-pixel render at 2,500 vertices on two CPU
cores, and the crossover between the two is near ``DENSE_MAX``. All three are tested against each
other.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from dibr_core.checks import check_index_range, check_tensor
from dibr_core.mesh import mesh_edges

__all__ = ["combinatorial_laplacian", "LaplacianSystem", "UniformAdam", "DENSE_MAX", "METHODS", "STEP_TOL"]

METHODS = ("auto", "sparse", "cholesky", "cg")
DENSE_MAX = 1500        # largest vertex count factorised densely (V^2 floats of memory, O(V^2) solves)
_CG_TOL = 1e-6           # relative residual at which the conjugate gradient stops (positions)
_CG_GRAD_TOL = 1e-3      # the same for gradients (the uniform Adam only needs their direction)
STEP_TOL = 1e-4          # forward tolerance during a fit's steps (its final positions use _CG_TOL)
_CG_CHECK_EVERY = 4      # iterations between convergence checks (each check synchronises)
_CG_MAX_ITERS = 2000


def combinatorial_laplacian(faces: torch.Tensor, num_vertices: int, dtype: torch.dtype = torch.float64,
                            device: Optional[torch.device] = None) -> torch.Tensor:
    """The combinatorial (uniform, graph) Laplacian ``L = D - A`` of a triangle mesh.

    ``L[i, i]`` is the number of edges at vertex ``i``, ``L[i, j] = -1`` for every edge ``(i, j)``
    and 0 elsewhere; every row sums to 0 and ``L`` is symmetric positive semi-definite.

    Args:
        faces: (F, 3) int, vertex indices per face.
        num_vertices: V (vertices used by no face get an empty row).
        dtype, device: of the result.

    Returns:
        (V, V) sparse COO tensor, coalesced.
    """
    fn = "combinatorial_laplacian"
    check_tensor(fn, "faces", faces, shape=("F", 3), dtype="int")
    if num_vertices < 1:
        raise ValueError(f"{fn}(): num_vertices must be >= 1, got {num_vertices}")
    check_index_range(fn, "faces", faces, num_vertices, "vertices")
    dev = device if device is not None else faces.device
    e = mesh_edges(faces).to(dev)
    a, b = e[:, 0], e[:, 1]
    ones = torch.ones(a.shape[0], dtype=dtype, device=dev)
    degree = torch.zeros(num_vertices, dtype=dtype, device=dev).index_add(0, a, ones).index_add(0, b, ones)
    diag = torch.arange(num_vertices, device=dev)
    rows = torch.cat([a, b, diag])
    cols = torch.cat([b, a, diag])
    vals = torch.cat([-ones, -ones, degree])
    # The indices are in range by construction: no invariant check needed.
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (num_vertices, num_vertices),
                                   check_invariants=False).coalesce()


class LaplacianSystem:
    """``M = I + lambda L`` for one mesh, with a cached solver for ``M x = b``.

    Args:
        faces: (F, 3) int, the mesh's faces.
        num_vertices: V.
        lam: lambda >= 0 (0 makes ``M`` the identity).
        dtype, device: of the system (the solves take and return this dtype).
        dense_max: meshes with at most this many vertices use a dense Cholesky factor, larger
            ones the preconditioned conjugate gradient (default: the module's ``DENSE_MAX``).
        method: ``"auto"`` (``"sparse"`` on the CPU when ``cholespy`` is importable, else by
            ``dense_max``), ``"sparse"`` (cholespy's sparse Cholesky factor; CPU only),
            ``"cholesky"`` (dense) or ``"cg"``.
    """

    def __init__(self, faces: torch.Tensor, num_vertices: int, lam: float, dtype: torch.dtype = torch.float32,
                 device: Optional[torch.device] = None, dense_max: Optional[int] = None,
                 method: str = "auto") -> None:
        fn = "LaplacianSystem"
        if not (lam >= 0.0) or lam != lam or lam == float("inf"):
            raise ValueError(f"{fn}(): lam must be a finite number >= 0, got {lam}")
        if method not in METHODS:
            raise ValueError(f"{fn}(): method must be one of {METHODS}, got {method!r}")
        dev = torch.device(device) if device is not None else faces.device
        self.lam = float(lam)
        self.num_vertices = int(num_vertices)
        self.dtype = dtype
        self.device = dev
        L = combinatorial_laplacian(faces, num_vertices, torch.float64, dev)
        eye = torch.sparse_coo_tensor(torch.arange(num_vertices, device=dev).expand(2, -1),
                                      torch.ones(num_vertices, dtype=torch.float64, device=dev),
                                      (num_vertices, num_vertices), check_invariants=False)
        m64 = (eye + self.lam * L).coalesce()
        with warnings.catch_warnings():   # torch's note that its CSR tensors are in beta
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = m64.to(dtype).to_sparse_csr()      # (V, V) for products
        self._diag = (1.0 + self.lam * _sparse_diagonal(L)).to(dtype)   # (V,) Jacobi preconditioner
        if method == "sparse" and (dev.type != "cpu" or _cholespy() is None):
            raise ValueError(f"{fn}(): method 'sparse' needs the cholespy package and a CPU device "
                             f"(device {dev}, cholespy {'found' if _cholespy() is not None else 'not installed'})")
        if method == "auto":
            if dev.type == "cpu" and _cholespy() is not None:
                method = "sparse"
            else:
                method = "cholesky" if num_vertices <= (DENSE_MAX if dense_max is None else dense_max) else "cg"
        self.method = method
        self._factor: Optional[torch.Tensor] = None
        self._sparse: Any = None
        if method == "sparse":
            chol = _cholespy()
            idx = m64.indices()
            solver = chol.CholeskySolverD if dtype == torch.float64 else chol.CholeskySolverF
            self._sparse = solver(num_vertices, idx[0].to(torch.int32).contiguous(),
                                  idx[1].to(torch.int32).contiguous(), m64.values().contiguous(),
                                  chol.MatrixType.COO)
        self._last: Dict[str, torch.Tensor] = {}   # warm starts of the conjugate gradient, per slot
        if method == "cholesky":
            # Factorise in float64 (the solve then runs in the system's dtype).
            self._factor = torch.linalg.cholesky(m64.to_dense()).to(dtype)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``M x`` for x (V, C)."""
        return self.matrix @ x

    def solve(self, b: torch.Tensor, slot: str = "default", tol: float = _CG_TOL) -> torch.Tensor:
        """``M^-1 b`` for b (V, C) (no gradient; see :meth:`inverse`).

        ``slot`` names a sequence of related right-hand sides: the conjugate gradient starts
        from the previous solution of the same slot (the fit's positions and its gradients are
        two such sequences). ``tol`` is the conjugate gradient's relative residual
        ``|M x - b| / |b|`` at which it stops (the Cholesky path is exact to rounding).
        """
        if b.dim() != 2 or b.shape[0] != self.num_vertices:
            raise ValueError(f"LaplacianSystem.solve(): b must have shape (V={self.num_vertices}, C), "
                             f"got {tuple(b.shape)}")
        b = b.detach().to(self.dtype)
        if self._sparse is not None:
            b = b.to(torch.float64 if self.dtype == torch.float64 else torch.float32).contiguous()
            x = torch.empty_like(b)
            self._sparse.solve(b, x)
            return x.to(self.dtype)
        if self._factor is not None:
            return torch.cholesky_solve(b, self._factor)
        x = _pcg(self.matrix, self._diag, b, self._last.get(slot), tol)
        self._last[slot] = x
        return x

    def inverse(self, u: torch.Tensor, tol: float = _CG_TOL) -> torch.Tensor:
        """Differentiable ``x = M^-1 u`` for u (V, C); the backward is another solve (M is
        symmetric). On the conjugate-gradient path the forward solve stops at the relative
        residual ``tol``, the backward one at 1e-3 (an optimiser step does not need more; a fit
        can take its steps at a looser ``tol`` and solve its final positions at the default)."""
        out: torch.Tensor = _SolveFn.apply(u, self, tol)
        return out


_CHOLESPY: Any = None


def _cholespy() -> Any:
    """The ``cholespy`` module, or None when it is not installed (or ``DIBR_NO_CHOLESPY=1``
    asks for the torch-only solvers). Imported once, on first use."""
    global _CHOLESPY
    if _CHOLESPY is None:
        try:
            if os.environ.get("DIBR_NO_CHOLESPY", "") not in ("", "0"):
                raise ImportError("DIBR_NO_CHOLESPY is set")
            import cholespy  # type: ignore[import-not-found]
            _CHOLESPY = cholespy
        except ImportError:
            _CHOLESPY = False
    return _CHOLESPY or None


def _sparse_diagonal(m: torch.Tensor) -> torch.Tensor:
    idx, vals = m.indices(), m.values()
    on = idx[0] == idx[1]
    return torch.zeros(m.shape[0], dtype=vals.dtype, device=vals.device).index_add(0, idx[0][on], vals[on])


def _pcg(matrix: torch.Tensor, diag: torch.Tensor, b: torch.Tensor, x0: Optional[torch.Tensor],
         tol: float = _CG_TOL) -> torch.Tensor:
    """Jacobi-preconditioned conjugate gradient on every column of b (V, C) at once."""
    x = x0.clone() if x0 is not None and x0.shape == b.shape else b / diag[:, None]
    r = b - matrix @ x
    bnorm = b.norm(dim=0).clamp_min(torch.finfo(b.dtype).tiny)
    inv = 1.0 / diag[:, None]
    z = r * inv
    p = z.clone()
    rz = (r * z).sum(dim=0)
    for it in range(_CG_MAX_ITERS):
        if it % _CG_CHECK_EVERY == 0 and bool((r.norm(dim=0) <= tol * bnorm).all()):
            break
        mp = matrix @ p
        alpha = rz / (p * mp).sum(dim=0).clamp_min(torch.finfo(b.dtype).tiny)
        x = x + alpha * p
        r = r - alpha * mp
        z = r * inv
        rz_new = (r * z).sum(dim=0)
        p = z + (rz_new / rz.clamp_min(torch.finfo(b.dtype).tiny)) * p
        rz = rz_new
    return x


class _SolveFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: torch.Tensor, system: LaplacianSystem,  # type: ignore[override]
                tol: float) -> torch.Tensor:
        ctx.system = system
        return system.solve(u, "forward", tol).to(u.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], None, None]:  # type: ignore[override]
        return ctx.system.solve(grad, "backward", _CG_GRAD_TOL).to(grad.dtype), None, None


class UniformAdam(torch.optim.Optimizer):
    """Adam with one step size for all entries of a parameter: the first moment is divided by the
    largest root second moment (over the whole tensor with ``per="all"``, over each row, e.g.
    a vertex's xyz, with ``per="row"``) instead of each entry's own. See the module docstring.

    Args:
        params: parameters or parameter groups.
        lr: step size (the largest entry of a step is about ``lr``).
        betas: (b1, b2) moment decay rates.
        eps: added to the denominator.
        per: ``"all"`` or ``"row"``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, per: str = "all") -> None:
        if not lr > 0:
            raise ValueError(f"UniformAdam(): lr must be > 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"UniformAdam(): betas must lie in [0, 1), got {betas}")
        if per not in ("all", "row"):
            raise ValueError(f"UniformAdam(): per must be 'all' or 'row', got {per!r}")
        defaults: Dict[str, Any] = {"lr": lr, "betas": betas, "eps": eps, "per": per}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["t"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["t"] += 1
                t = state["t"]
                m, v = state["m"], state["v"]
                m.mul_(b1).add_(g, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                m_hat = m / (1.0 - b1 ** t)
                root = (v / (1.0 - b2 ** t)).sqrt()
                if group["per"] == "all" or p.dim() < 2:
                    denom = root.max()
                else:
                    denom = root.reshape(p.shape[0], -1).max(dim=1).values.reshape(-1, *([1] * (p.dim() - 1)))
                p.sub_(group["lr"] * m_hat / (denom + group["eps"]))
        return loss
