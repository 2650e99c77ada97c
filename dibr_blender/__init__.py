"""DIB-R for Blender: the extension's entry point.

Registration imports neither torch nor dibr_core, so enabling the extension stays instant;
the renderer is imported on first use. Only the modules of this package import ``bpy``.
"""
from __future__ import annotations

from typing import Any, List, Type

import bpy

from . import status


class DIBR_PT_main(bpy.types.Panel):
    """View3D > Sidebar > DIB-R."""

    bl_label = "DIB-R"
    bl_idname = "DIBR_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DIB-R"

    def draw(self, context: Any) -> None:
        layout = self.layout
        if layout is None:
            return
        layout.label(text=status.backend_line())


class DIBR_OT_backend_info(bpy.types.Operator):
    """Report which DIB-R backend runs (imports torch on first use)."""

    bl_idname = "dibr.backend_info"
    bl_label = "DIB-R Backend Info"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set:
        line = status.load_backend()
        self.report({"INFO"}, line)
        return {"FINISHED"}


CLASSES: List[Type[Any]] = [DIBR_PT_main, DIBR_OT_backend_info]


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
