"""Input validation shared by every public function of dibr_core.

Each check raises ``ValueError`` or ``TypeError`` with a message of the form
``"rasterize(): face_vertices_image must have shape (B, F, 3, 2), got (2, 10, 3)"``,
naming the function, the argument and what was received. Symbolic dimensions
(``"B"``, ``"F"``...) are bound on first use through a shared ``dims`` dict, so
later arguments must agree with earlier ones.
"""
from __future__ import annotations

import operator
from typing import Dict, Optional, Sequence, Union

import torch

DimSpec = Union[int, str, None]

_KINDS = {
    "float": (torch.float32, torch.float64),
    "int": (torch.int32, torch.int64),
    "bool": (torch.bool, torch.uint8),
}


def _fmt_shape(spec: Sequence[DimSpec]) -> str:
    parts = ["*" if s is None else str(s) for s in spec]
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def _fmt_got(shape: Sequence[int]) -> str:
    parts = [str(int(s)) for s in shape]
    return "(" + ", ".join(parts) + (",)" if len(parts) == 1 else ")")


def check_tensor(
    fn: str,
    name: str,
    t: object,
    shape: Optional[Sequence[DimSpec]] = None,
    dims: Optional[Dict[str, int]] = None,
    dtype: Union[str, torch.dtype, None] = None,
    device: Optional[torch.device] = None,
    finite: bool = False,
    nonempty: Sequence[str] = (),
) -> torch.Tensor:
    """Validate one tensor argument and return it.

    Args:
        fn: public function name used in messages, e.g. ``"rasterize"``.
        name: argument name used in messages.
        t: the value to check.
        shape: expected shape; ints must match, strings are symbols bound in
            ``dims``, ``None`` accepts any size.
        dims: symbol table shared across the arguments of one call (mutated).
        dtype: ``"float"``, ``"int"``, ``"bool"`` or an exact ``torch.dtype``.
        device: required device (compared by type and index).
        finite: reject NaN or Inf entries.
        nonempty: symbols whose bound size must be at least 1.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{fn}(): {name} must be a torch.Tensor, got {type(t).__name__}")
    if shape is not None:
        ok = t.dim() == len(shape)
        if ok:
            local = dict(dims) if dims is not None else {}
            for want, got in zip(shape, t.shape):
                if want is None:
                    continue
                if isinstance(want, int):
                    if want != got:
                        ok = False
                        break
                else:
                    bound = local.get(want)
                    if bound is None:
                        local[want] = int(got)
                    elif bound != got:
                        ok = False
                        break
            if ok and dims is not None:
                dims.update(local)
        if not ok:
            bound_desc = ""
            if dims:
                known = [f"{k}={v}" for k, v in dims.items() if k in [s for s in shape if isinstance(s, str)]]
                if known:
                    bound_desc = " with " + ", ".join(known)
            raise ValueError(
                f"{fn}(): {name} must have shape {_fmt_shape(shape)}{bound_desc}, got {_fmt_got(t.shape)}"
            )
        for sym in nonempty:
            if dims is not None and dims.get(sym, 1) == 0:
                raise ValueError(f"{fn}(): {name} is empty ({sym}=0), got shape {_fmt_got(t.shape)}")
    if dtype is not None:
        allowed = _KINDS[dtype] if isinstance(dtype, str) else (dtype,)
        if t.dtype not in allowed:
            names = ", ".join(str(d).replace("torch.", "") for d in allowed)
            raise TypeError(f"{fn}(): {name} must have dtype {names}, got {str(t.dtype).replace('torch.', '')}")
    if device is not None and t.device != device:
        raise ValueError(f"{fn}(): {name} must be on device {device} like the other inputs, got {t.device}")
    if finite and t.is_floating_point() and t.numel() > 0 and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}(): {name} contains NaN or Inf values (shape {_fmt_got(t.shape)})")
    return t


def check_same_dtype(fn: str, **tensors: torch.Tensor) -> torch.dtype:
    """All floating tensors given must share one dtype; returns it."""
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for k, v in items[1:]:
        if v.dtype != first.dtype:
            raise TypeError(
                f"{fn}(): {k} has dtype {str(v.dtype).replace('torch.', '')} but {first_name} has "
                f"{str(first.dtype).replace('torch.', '')}; they must match"
            )
    return first.dtype


def check_index_range(fn: str, name: str, idx: torch.Tensor, upper: int, what: str, lower: int = 0) -> None:
    """Integer tensor ``idx`` must hold values in ``[lower, upper)``."""
    if idx.numel() == 0:
        return
    lo_t, hi_t = torch.aminmax(idx)  # one pass
    lo, hi = int(lo_t), int(hi_t)
    if lo < lower or hi >= upper:
        bad = lo if lo < lower else hi
        raise ValueError(
            f"{fn}(): {name} holds index {bad}, outside [{lower}, {upper}) for {upper} {what} "
            f"(shape {_fmt_got(idx.shape)})"
        )


def as_index(value: object) -> Optional[int]:
    """``value`` as a Python int when it is an integer (int, numpy integer, integer 0-d tensor;
    not bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def describe(value: object) -> str:
    """``repr`` of a scalar argument with its type, for messages: ``64.0 (float)``."""
    return f"{value!r} ({type(value).__name__})"
# Largest max(|NDC coordinate|, 1) * multiplier (scaled units, L) for which the kernels'
# arithmetic cannot overflow: the soft mask squares a cross product of coordinate differences
# (up to 64 L^4), the rasterizer sums three such cross products (up to 24 L^2).
SCALED_LIMIT = {torch.float32: 1e9, torch.float64: 1e75}


def check_scaled_range(fn: str, name: str, t: torch.Tensor, multiplier: float) -> None:
    """NDC coordinates ``t`` (any shape) must be finite, and ``max(|t|, 1) * multiplier`` (the
    pixel centres reach ``multiplier``) must stay within :data:`SCALED_LIMIT` of ``t``'s dtype."""
    limit = SCALED_LIMIT.get(t.dtype, SCALED_LIMIT[torch.float32])
    amax = float(t.detach().abs().amax()) if t.numel() > 0 else 0.0
    if not amax < float("inf"):
        raise ValueError(f"{fn}(): {name} contains NaN or Inf values (shape {_fmt_got(t.shape)})")
    m = float(multiplier)
    if max(amax, 1.0) * m > limit:
        dt = str(t.dtype).replace("torch.", "")
        raise ValueError(
            f"{fn}(): {name} (shape {_fmt_got(t.shape)}) reaches |x| = {amax:.3g} NDC with multiplier {m:.3g}; "
            f"the {dt} kernels need max(|x|, 1) * multiplier <= {limit:.0e} (overflow beyond): "
            f"{'use float64, ' if t.dtype == torch.float32 else ''}cull or clip faces this far out, "
            f"or lower the multiplier"
        )


def check_positive(fn: str, name: str, value: float, allow_zero: bool = False) -> None:
    """A scalar hyper-parameter must be finite and positive."""
    v = float(value)
    if not (v == v) or v in (float("inf"), float("-inf")) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{fn}(): {name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {value!r}")
