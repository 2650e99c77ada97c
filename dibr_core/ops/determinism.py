"""Deterministic mode of the CUDA backward kernels.

By default the CUDA backward passes add their per-pixel contributions with atomics: fast, but
the last bits of the gradients may change between runs. In deterministic mode each
contribution is buffered and every face's (vertex's) contributions are summed in a fixed
order, the CPU kernels' order, so repeated runs give bitwise-identical gradients. The CPU
kernels are always deterministic.

The mode is on when :func:`set_deterministic` turned it on, else when the environment
variable ``DIBR_DETERMINISTIC`` is ``1``, else when
``torch.use_deterministic_algorithms(True)`` is in effect.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

_override: Optional[bool] = None


def set_deterministic(enabled: Optional[bool]) -> None:
    """Turn the deterministic CUDA backward on or off (``None``: back to the default)."""
    global _override
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_deterministic(): expected a bool or None, got {enabled!r}")
    _override = enabled


def deterministic_enabled() -> bool:
    """Whether the CUDA backward kernels run in deterministic mode."""
    if _override is not None:
        return _override
    if os.environ.get("DIBR_DETERMINISTIC", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(torch.are_deterministic_algorithms_enabled())
