"""Which implementation runs each op: ``"cuda"``, ``"cpu"`` (the C++ kernels) or ``"reference"``.

``"auto"`` picks the compiled kernels for the tensors' device when they are available and
the reference path otherwise. The environment variable ``DIBR_BACKEND`` (``reference``,
``cpu`` or ``auto``) overrides ``"auto"``.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Optional

import torch

from dibr_core import _ext

BACKENDS = ("auto", "cpu", "cuda", "reference")


@dataclass(frozen=True)
class BackendInfo:
    """What runs and why.

    Attributes:
        default: the backend ``"auto"`` selects for CPU tensors (``"cpu"`` or ``"reference"``).
        cpu_kernels: the compiled C++ kernels are loaded.
        cuda_kernels: the compiled module holds CUDA kernels and a GPU is visible.
        reason: how the extension was obtained, or why it is missing.
        torch_version, cuda_device: versions and the GPU's name (None without one).
    """

    default: str
    cpu_kernels: bool
    cuda_kernels: bool
    reason: str
    torch_version: str
    cuda_device: Optional[str]
    threads: int
    machine: str

    def __str__(self) -> str:
        gpu = self.cuda_device or "none"
        return (
            f"dibr_core backend: {self.default} ({self.reason}); cpu kernels: {self.cpu_kernels}, "
            f"cuda kernels: {self.cuda_kernels}, GPU: {gpu}, torch {self.torch_version}, {self.threads} threads"
        )


def extension() -> Optional[ModuleType]:
    """The compiled module, loading it on first use (None when unavailable)."""
    return _ext.load()


def backend_info() -> BackendInfo:
    """Describe the active backend (loads the extension if not loaded yet)."""
    mod = extension()
    cuda_built = bool(mod is not None and mod.with_cuda())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    forced = os.environ.get("DIBR_BACKEND", "").lower()
    default = "cpu" if mod is not None and forced != "reference" else "reference"
    return BackendInfo(
        default=default,
        cpu_kernels=mod is not None,
        cuda_kernels=cuda_built and gpu is not None,
        reason=_ext.reason(),
        torch_version=torch.__version__,
        cuda_device=gpu,
        threads=torch.get_num_threads(),
        machine=f"{platform.system()} {platform.machine()}",
    )


def resolve(fn: str, backend: str, device: torch.device) -> str:
    """Turn a requested backend into the one that runs for tensors on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"{fn}(): backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        forced = os.environ.get("DIBR_BACKEND", "auto").lower()
        if forced == "reference":
            return "reference"
        mod = extension()
        if mod is None:
            return "reference"
        if device.type == "cuda":
            return "cuda" if mod.with_cuda() else "reference"
        return "cpu"
    if backend == "reference":
        return backend
    mod = extension()
    if mod is None:
        raise RuntimeError(f"{fn}(): backend {backend!r} requested but {_ext.reason()}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"{fn}(): backend 'cpu' needs CPU tensors, got tensors on {device}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"{fn}(): backend 'cuda' needs CUDA tensors, got tensors on {device}")
        if not mod.with_cuda():
            raise RuntimeError(f"{fn}(): backend 'cuda' requested but the extension was built without CUDA")
    return backend


def resolve_cpu_op(fn: str, backend: str) -> str:
    """``"cpu"`` or ``"reference"`` for an op that has C++ kernels but no CUDA kernel (the mesh
    queries of :mod:`dibr_core.mesh_queries`, which run on the CPU whatever the input's device)."""
    if backend == "cuda":
        raise ValueError(f"{fn}(): there is no CUDA kernel for this op; backend must be 'auto', 'cpu' or 'reference'")
    return resolve(fn, backend, torch.device("cpu"))
