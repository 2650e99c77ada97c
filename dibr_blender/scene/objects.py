"""Objects added to the scene, shared by Image to 3D and Generate (bpy): the record of what a run
added (:class:`Created`, removed again on failure), a mesh object with its UV map, colour
attribute, material and texture (:func:`add_mesh_object`), and the selection (:func:`select_only`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import bpy
import numpy as np

from ..jobs.meshes import TEXTURE_SUFFIX, BlenderMesh
from . import io


class Created:
    """Datablocks added by one run, removed again on failure (shared with Generate)."""

    def __init__(self, scene: Any) -> None:
        self.scene = scene
        self.old_camera = scene.camera
        self.items: List[Tuple[Any, Any]] = []

    def add(self, collection: Any, block: Any) -> Any:
        self.items.append((collection, block))
        return block

    def rollback(self) -> None:
        if self.scene.camera is not self.old_camera:
            self.scene.camera = self.old_camera
        for collection, block in reversed(self.items):
            try:
                collection.remove(block)
            except (ReferenceError, RuntimeError):
                pass
        self.items.clear()


def add_mesh_object(name: str, mesh: BlenderMesh, collection: Any,
                    location: Union[Sequence[float], np.ndarray], created: Created,
                    properties: Optional[Dict[str, Any]] = None) -> Tuple[Any, Any]:
    """Add ``mesh`` as a new object at ``location`` in ``collection``: UV map, float colour
    attribute "DIB-R Color", its own material (named after the object) whose Base Color reads the
    packed texture image "<object> Texture" (or the colour attribute without a texture), matte
    (no specular layer: the colours were learnt from Lambertian renders), and the custom ``properties``. Everything added is recorded in ``created``. Returns (object, image or
    None). Shared by Image to 3D and Generate."""
    ob = io.new_mesh_object(name, mesh.vertices, mesh.faces, collection)
    created.add(bpy.data.meshes, ob.data)
    created.add(bpy.data.objects, ob)
    ob.location = tuple(float(x) for x in location)
    for key, value in (properties or {}).items():
        ob[key] = value
    io.ensure_uv_map(ob, mesh.face_uvs)
    io.write_colors(ob, mesh.colors_rgb)
    mat = created.add(bpy.data.materials, bpy.data.materials.new(ob.name))
    ob.data.materials.append(mat)
    img = None
    if mesh.texture is not None:
        img = created.add(bpy.data.images,
                          io.new_texture_image(ob.name + TEXTURE_SUFFIX, mesh.texture))
        io.wire_texture(ob, img)
    else:
        io.wire_vertex_colors(ob)
    io.make_matte(mat)
    return ob, img


def select_only(view_layer: Any, objects: Sequence[Any], active: Any = None) -> None:
    """Deselect everything in the view layer, select ``objects`` (those in the view layer) and
    make ``active`` the active object."""
    for other in list(view_layer.objects):
        if other.select_get():
            other.select_set(False)
    for ob in objects:
        if view_layer.objects.get(ob.name) is not None:
            ob.select_set(True)
    if active is not None and view_layer.objects.get(active.name) is not None:
        view_layer.objects.active = active
