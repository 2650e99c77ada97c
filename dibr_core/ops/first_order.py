"""Second-order gradients through the C++/CUDA kernels: a clear error instead of a silent zero.

The kernels' backward passes are hand-written and not themselves differentiable. When a
backward runs under ``create_graph=True`` its gradients are passed through
:func:`first_order_only`, which ties them to the graph through a node whose backward raises:
the first-order gradients stay correct and usable, and any attempt to differentiate them again
(a Hessian-vector product, a gradient penalty through the renderer) fails loudly. The reference
backend is plain PyTorch, so its second-order gradients come from autograd.
"""
from __future__ import annotations

from typing import Any, Optional

import torch


class _FirstOrderOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, fn: str, grad: torch.Tensor, *anchors: torch.Tensor) -> torch.Tensor:
        ctx.fn = fn
        return grad.clone()

    @staticmethod
    def backward(ctx: Any, *_: Any) -> Any:
        raise RuntimeError(
            f"{ctx.fn}(): second-order gradients (differentiating a gradient taken with create_graph=True) "
            f"are not implemented by the compiled kernels of {ctx.fn}(); use backend='reference' for them"
        )


def first_order_only(fn: str, grad: Optional[torch.Tensor], *anchors: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Return ``grad`` as is, unless this backward runs with ``create_graph=True`` and the
    gradient depends on a tensor that requires grad (one of ``anchors``: the op's saved inputs
    and incoming gradients); then return a copy whose own backward raises a clear error.
    """
    if grad is None or not torch.is_grad_enabled():
        return grad
    live = [a for a in anchors if isinstance(a, torch.Tensor) and a.requires_grad]
    if not live:
        return grad
    out: torch.Tensor = _FirstOrderOnly.apply(fn, grad, *live)
    return out
