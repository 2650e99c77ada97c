"""Checkpoint and weights files of the models: find a run's file (:data:`CHECKPOINT` in a run
directory), store float tensors as float16, write a weights file atomically (a half-written file
never replaces a good one) with its metadata free of this machine's folders
(:func:`portable_path`, which the eval reports use too), and hash a file (:func:`file_sha256`,
how a generator records the predictor it was fitted on). The loaders sit beside their models
(:func:`dibr_core.models.predictor.load_predictor`, ...), the writers in the training commands."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any, Dict, Union

import torch

__all__ = ["CHECKPOINT", "run_file", "half_floats", "portable_path", "portable_meta", "save_weights", "file_sha256"]

CHECKPOINT = "checkpoint.pt"      # a training run's checkpoint, inside its run directory


def run_file(run: Union[str, Path], name: str) -> Path:
    """``run/name`` when ``run`` is a run directory, else ``run`` itself (a file)."""
    p = Path(run)
    return p / name if p.is_dir() else p


def half_floats(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The state dict with its floating-point tensors in float16 (others unchanged)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}


def portable_path(path: Union[str, Path]) -> str:
    """A path as reports and weights files record it, without this machine's folders: under the
    working directory relative to it, under the home folder as ``~/...``, else ``.../NAME``."""
    p = Path(path).expanduser().resolve()
    for base, prefix in ((Path.cwd().resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            rel = p.relative_to(base).as_posix()
        except ValueError:
            continue
        return prefix + rel if rel != "." else (prefix.rstrip("/") or ".")
    return f".../{p.name}"


def portable_meta(value: Any) -> Any:
    """``value`` (nested dicts, lists, strings) with every absolute path string made portable."""
    if isinstance(value, dict):
        return {k: portable_meta(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(portable_meta(v) for v in value)
    if isinstance(value, str) and os.path.isabs(value):
        return portable_path(value)
    return value


def save_weights(obj: Any, out: Union[str, Path]) -> Path:
    """``torch.save`` to a temporary file next to ``out``, then rename it over ``out``; a dict's
    ``meta`` entry goes through :func:`portable_meta`."""
    if isinstance(obj, dict) and "meta" in obj:
        obj = {**obj, "meta": portable_meta(obj["meta"])}
    dst = Path(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(dst)
    return dst


def file_sha256(path: Union[str, Path]) -> str:
    """SHA-256 of a file (how a generator records the predictor it was fitted on), computed once
    per file version (path, size, modification time)."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256_of(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
