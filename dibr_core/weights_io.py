"""Shared pieces of the training CLIs' ``--export``: find a run's file, store float tensors as
float16, and write a weights file atomically (a half-written file never replaces a good one)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

__all__ = ["run_file", "half_floats", "save_weights"]


def run_file(run: Union[str, Path], name: str) -> Path:
    """``run/name`` when ``run`` is a run directory, else ``run`` itself (a file)."""
    p = Path(run)
    return p / name if p.is_dir() else p


def half_floats(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state dict with its floating-point tensors in float16 (others unchanged)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def save_weights(obj: Any, out: Union[str, Path]) -> Path:
    """``torch.save`` to a temporary file next to ``out``, then rename it over ``out``."""
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(dst)
    return dst
