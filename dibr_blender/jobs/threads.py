"""Thread settings for a fit run from Blender (no bpy; torch is imported only when a fit starts).

Two policies, both with torch's own ops on one thread (its OpenMP barriers stall the whole step
when another process takes a core; see docs/benchmarks.md, "CPU results beside a busy process"):

* interactive (the modal operators' worker thread): the C++ kernels on all cores but one, so
  Blender's UI and viewport keep a core (:func:`dibr_core.backend.interactive_threads`);
* batch (headless runs): the kernels on every usable core.

The settings must be made on the thread that runs the fit: torch's thread count for a thread
no longer follows changes made from another thread once that thread has run a torch op.
"""
from __future__ import annotations

from typing import ContextManager


def fit_threads(interactive: bool) -> ContextManager:
    """Context manager that sets the kernels' and torch's threads for a fit and restores them.

    Args:
        interactive: True for a fit beside Blender's UI (one core left free), False for batch.
    """
    from dibr_core import backend

    kernels = backend.interactive_threads() if interactive else backend.usable_cores()
    return backend.threads(kernels, torch_ops=1)
