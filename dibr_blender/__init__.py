"""DIB-R for Blender: fit meshes, vertex colours and textures to reference images.

Registration imports neither torch nor dibr_core, so enabling the extension stays instant;
they are imported when a fit or preview runs. Only this package imports ``bpy``; its pure
modules (convert, arrays, fit_job, runner) are tested without Blender.
"""
from __future__ import annotations

from typing import Any, List

import bpy

from . import operators, preferences, props, ui

_CLASSES: List[Any] = [*preferences.CLASSES, *props.CLASSES, *operators.CLASSES, *ui.CLASSES]


def register() -> None:
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    props.register_props()


def unregister() -> None:
    props.unregister_props()
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
