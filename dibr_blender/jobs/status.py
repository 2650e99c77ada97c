"""Backend status for the UI, loaded lazily so registration never imports torch. No bpy here."""
from __future__ import annotations

from typing import Optional

_line: Optional[str] = None


def backend_line() -> str:
    """One line for the panel: the backend once loaded, else a hint."""
    return _line or "Backend not loaded yet (loads on first run)"


def load_backend() -> str:
    """Import dibr_core and describe its backend; a missing or broken torch gives a clear line."""
    global _line
    try:
        import dibr_core
    except Exception as exc:  # noqa: BLE001 - shown to the user instead of a traceback
        _line = f"DIB-R unavailable: cannot import torch/dibr_core ({type(exc).__name__}: {exc})"
        return _line
    info = dibr_core.backend_info()
    device = info.cuda_device or "CPU"
    _line = f"DIB-R backend: {info.default} on {device}"
    return _line
