"""Add-on preferences: an optional external Python environment (a CUDA torch) and the backend.

``python_path`` names the ``site-packages`` folder of an existing environment whose torch should
be used instead of the CPU torch bundled with the extension (see ``deps.prepare_import_path``);
it takes effect when changed and whenever the preferences class registers. ``backend`` is the
backend the operators ask dibr_core for ("auto" picks the compiled kernels when present).
"""
from __future__ import annotations

from typing import Any, List, Optional, Type

import bpy

from .jobs import deps, status

BACKEND_ITEMS = [
    ("auto", "Auto", "Compiled kernels for the tensors' device when available, else the reference path"),
    ("cpu", "CPU", "The compiled C++ kernels on the CPU"),
    ("cuda", "CUDA", "The compiled CUDA kernels (needs a CUDA build of torch and a GPU)"),
    ("reference", "Reference", "The pure-PyTorch reference implementation (slow, always available)"),
]

# Options of the panels' file-path properties: "//" (relative to the .blend) is accepted without a
# warning (Blender 5.0 warns without it). The flag is unknown before Blender 4.5, so it is set only from 4.5 on.
FILE_PATH_OPTIONS = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else {"ANIMATABLE"}

# The last message of deps.prepare_import_path, shown in the preferences (None: fine).
_path_message: Optional[str] = None


def get_preferences(context: Any = None) -> Optional["DIBR_AddonPreferences"]:
    """This add-on's preferences, or None when it is not registered as an add-on/extension."""
    ctx = context if context is not None else bpy.context
    prefs = getattr(ctx, "preferences", None)
    if prefs is None:
        return None
    entry = prefs.addons.get(__package__ or "")
    if entry is None:
        return None
    return entry.preferences  # type: ignore[return-value]


def backend(context: Any = None) -> str:
    """The backend chosen in the preferences ("auto" when the preferences are unavailable)."""
    prefs = get_preferences(context)
    return str(prefs.backend) if prefs is not None else "auto"


def apply_python_path(context: Any = None) -> Optional[str]:
    """Put the preferred environment on ``sys.path`` (call before torch is imported); the message or None."""
    global _path_message
    prefs = get_preferences(context)
    if prefs is None:
        return None
    _path_message = deps.prepare_import_path(str(prefs.python_path))
    return _path_message


def _python_path_update(self: Any, context: Any) -> None:
    global _path_message
    _path_message = deps.prepare_import_path(str(self.python_path))


class DIBR_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__ or "dibr_blender"

    python_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Python Path",
        subtype="DIR_PATH",
        default="",
        description=(
            "Optional: the site-packages folder of an existing Python environment (same Python version "
            "as Blender) holding a CUDA build of torch; used instead of the bundled CPU torch. "
            "Nothing is installed. Restart Blender after changing it once torch is loaded"
        ),
        update=_python_path_update,
    )
    backend: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Backend",
        items=BACKEND_ITEMS,
        default="auto",
        description="Which implementation of the rasterizer and soft mask runs",
    )

    @classmethod
    def register(cls) -> None:
        # Stored preferences are loaded before add-ons register: honour a saved python_path before
        # anything imports torch. Never fail registration because of it.
        try:
            apply_python_path()
        except Exception:  # noqa: BLE001
            pass

    def draw(self, context: Any) -> None:
        layout = self.layout
        if layout is None:
            return
        col = layout.column()
        col.prop(self, "python_path")
        message = _path_message if _path_message is not None else deps.check_python_path(str(self.python_path))
        if message:
            col.label(text=message, icon="ERROR")
        elif str(self.python_path).strip():
            col.label(text="torch is imported from this environment", icon="CHECKMARK")
        else:
            col.label(text="Empty: the CPU torch bundled with the extension is used", icon="INFO")
        col.prop(self, "backend")
        row = col.row()
        row.label(text=status.backend_line())
        row.operator("dibr.backend_info", text="", icon="FILE_REFRESH")


CLASSES: List[Type[Any]] = [DIBR_AddonPreferences]
