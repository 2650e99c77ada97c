"""DIB-R for Blender: fit meshes, vertex colours and textures to reference images.

Layers (docs/architecture.md):

* ``jobs/`` never imports bpy: records, conversions, the fit job, meshes, Image to 3D and Generate
  as arrays. ``import dibr_blender.jobs.convert`` works without Blender.
* ``scene/`` reads and writes the Blender scene (bpy); it uses ``jobs/``.
* the top level: registration (this file), properties, preferences, operators and panels, and
  the entry points ``batch``, ``cli``, ``demo`` and ``bench``.

Importing this package imports neither bpy nor the UI: :func:`register` does, so that the
``jobs/`` modules are importable anywhere. Registration imports neither torch nor dibr_core, so
enabling the extension stays instant; they are imported when a fit or preview runs.
"""
from __future__ import annotations

from typing import Any, List


def _classes() -> List[Any]:
    from . import operators, preferences, props, ui

    return [*preferences.CLASSES, *props.CLASSES, *operators.CLASSES, *ui.CLASSES]


def register() -> None:
    import bpy

    from . import props

    for cls in _classes():
        bpy.utils.register_class(cls)
    props.register_props()


def unregister() -> None:
    import bpy

    from . import props

    props.unregister_props()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
