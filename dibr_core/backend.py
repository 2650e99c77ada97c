"""Which implementation runs each op: ``"cuda"``, ``"cpu"`` (the C++ kernels) or ``"reference"``.

``"auto"`` picks the compiled kernels for the tensors' device when they are available and
the reference path otherwise. The environment variable ``DIBR_BACKEND`` (``reference``,
``cpu`` or ``auto``) overrides ``"auto"``.

Threads on the CPU: the C++ kernels run on dibr's own small thread pool, whose loops are split
into many chunks taken dynamically, so that a thread preempted by another process delays only
its chunk (:func:`set_num_threads`; by default it uses ``torch.get_num_threads()`` threads).
torch's own ops (the camera transform, gathers, losses, optimizer steps) use torch's OpenMP
pool, which splits each op statically across its threads and waits for all of them: on a busy
machine one preempted thread stalls the op. A rendering or fitting loop on small images
therefore runs best with torch's ops on one thread and the kernels on the pool:
:func:`use_threads` sets both, :func:`interactive_threads` picks a count for the kernels that
leaves a core to a user interface (Blender's).
"""
from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator, Optional

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
        threads: torch's intra-op threads (``torch.get_num_threads()``).
        machine: operating system and processor architecture.
        kernel_threads: threads of the C++ CPU kernels (:func:`get_num_threads`).
    """

    default: str
    cpu_kernels: bool
    cuda_kernels: bool
    reason: str
    torch_version: str
    cuda_device: Optional[str]
    threads: int
    machine: str
    kernel_threads: int = 1

    def __str__(self) -> str:
        gpu = self.cuda_device or "none"
        return (
            f"dibr_core backend: {self.default} ({self.reason}); cpu kernels: {self.cpu_kernels}, "
            f"cuda kernels: {self.cuda_kernels}, GPU: {gpu}, torch {self.torch_version}, {self.threads} threads, "
            f"{self.kernel_threads} kernel threads"
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
        kernel_threads=get_num_threads(),
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


# Threads of the C++ CPU kernels as last set through set_num_threads (0: torch's count).
_kernel_threads_setting = 0


@dataclass(frozen=True)
class ThreadSettings:
    """Thread counts of the two CPU pools that a rendering loop uses (see the module docstring).

    Attributes:
        kernels: threads of dibr's C++ CPU kernels; 0 means they follow ``torch.get_num_threads()``.
        torch_ops: torch's intra-op threads (``torch.get_num_threads()``), used by torch's own ops.
    """

    kernels: int
    torch_ops: int


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def interactive_threads(cores: Optional[int] = None) -> int:
    """Threads for the C++ kernels that leave one core to a user interface: ``max(1, cores - 1)``.

    Args:
        cores: the cores to plan for (default: :func:`usable_cores`).

    An interactive application (Blender: its UI and viewport run on the main thread) stays
    responsive while dibr renders or fits when one core is left to it; on a 1- or 2-core
    machine this is a single kernel thread, which is also what degrades least when other
    programs (a browser, a render) use the cores. Apply it with :func:`use_threads`.
    """
    n = usable_cores() if cores is None else cores
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"interactive_threads(): cores must be an int >= 1, got {n!r}")
    return max(1, n - 1)


def get_num_threads() -> int:
    """Threads the C++ CPU kernels use when called from this thread now."""
    mod = extension()
    return int(mod.get_num_threads()) if mod is not None else torch.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads of the C++ CPU kernels for the whole process.

    Args:
        n: threads (>= 1), or 0 to follow ``torch.get_num_threads()`` again (the default).

    The kernels' pool keeps its threads between calls and wakes only as many as asked for.
    Results do not depend on the number of threads.
    """
    global _kernel_threads_setting
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"set_num_threads(): n must be an int >= 0, got {n!r}")
    mod = extension()
    if mod is not None:
        mod.set_num_threads(n)
    _kernel_threads_setting = n


def use_threads(kernels: int, torch_ops: Optional[int] = 1) -> ThreadSettings:
    """Set the kernels' threads and torch's intra-op threads; return the previous settings.

    Args:
        kernels: threads of the C++ CPU kernels (>= 1; 0: follow torch's count).
        torch_ops: torch's intra-op threads (``torch.set_num_threads``), or None to leave them.
            The default 1 suits rendering and fitting loops on small images, whose torch ops
            take well under a millisecond each: on one thread they never wait for a preempted
            OpenMP thread, and no spinning OpenMP thread competes with the kernels' pool.
            Keep torch's threads for large dense work (training a network).

    Returns:
        The settings before the call, for :func:`restore_threads`.

    torch's count is per thread once a thread has run a torch op: call this on the thread that
    runs the loop. Example, in an application's fitting operator::

        previous = dibr_core.backend.use_threads(dibr_core.backend.interactive_threads())
        try:
            ...  # the fitting loop
        finally:
            dibr_core.backend.restore_threads(previous)
    """
    if torch_ops is not None and (not isinstance(torch_ops, int) or isinstance(torch_ops, bool) or torch_ops < 1):
        raise ValueError(f"use_threads(): torch_ops must be an int >= 1 or None, got {torch_ops!r}")
    previous = ThreadSettings(kernels=_kernel_threads_setting, torch_ops=torch.get_num_threads())
    set_num_threads(kernels)
    if torch_ops is not None and torch_ops != previous.torch_ops:
        torch.set_num_threads(torch_ops)
    return previous


def restore_threads(previous: ThreadSettings) -> None:
    """Undo :func:`use_threads` with the settings it returned."""
    set_num_threads(previous.kernels)
    if torch.get_num_threads() != previous.torch_ops:
        torch.set_num_threads(previous.torch_ops)


@contextlib.contextmanager
def threads(kernels: int, torch_ops: Optional[int] = 1) -> Iterator[ThreadSettings]:
    """Context manager form of :func:`use_threads` (restores the previous settings on exit)."""
    previous = use_threads(kernels, torch_ops)
    try:
        yield previous
    finally:
        restore_threads(previous)
