"""The built-in default scene of the main job: a target shape rendered with Cycles as the
reference image, and an icosphere (about 5k faces) to fit to it."""
from __future__ import annotations

import math
import os
from typing import Any, Tuple

import bpy
import mathutils
import numpy as np


def _mesh_object(name: str, verts: np.ndarray, faces: np.ndarray) -> Any:
    me = bpy.data.meshes.new(name)
    me.vertices.add(len(verts))
    me.loops.add(3 * len(faces))
    me.polygons.add(len(faces))
    me.vertices.foreach_set("co", verts.astype(np.float32).ravel())
    me.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * len(faces), 3, dtype=np.int32))
    me.polygons.foreach_set("loop_total", np.full(len(faces), 3, dtype=np.int32))
    me.update(calc_edges=True)
    me.validate()
    ob = bpy.data.objects.new(name, me)
    scene: Any = bpy.context.scene
    scene.collection.objects.link(ob)
    return ob


def target_shape() -> Tuple[np.ndarray, np.ndarray]:
    """A squashed bumpy blob in Blender's Z-up world (vertices (V, 3), faces (F, 3))."""
    from dibr_core import scenes

    vt, ft, _ = scenes.blob(4)
    v = y_up_to_z_up(vt.numpy())
    return (v * np.array([0.9, 0.7, 0.6])).astype(np.float32), ft.numpy()


def y_up_to_z_up(v: np.ndarray) -> np.ndarray:
    """Rotate +Y-up coordinates to Blender's +Z-up ((x, y, z) -> (x, -z, y), a proper rotation)."""
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)


def build(folder: str, size: int = 256, samples: int = 16) -> Tuple[str, str]:
    """Create the scene, render the reference with Cycles, save the .blend (target hidden).

    Returns (blend path, reference image path)."""
    from dibr_core.mesh import icosphere

    os.makedirs(folder, exist_ok=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene: Any = bpy.context.scene
    tv, tf = target_shape()
    target = _mesh_object("Target", tv, tf)
    mat = bpy.data.materials.new("Target Material")
    nodes: Any = mat.node_tree.nodes if mat.node_tree is not None else None
    bsdf = nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.25, 0.1, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.6
    target.data.materials.append(mat)
    for p in target.data.polygons:
        p.use_smooth = True

    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 50.0
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    eye = mathutils.Vector((0.0, -4.2, 1.6))
    cam.rotation_euler = (-eye).to_track_quat("-Z", "Y").to_euler()
    cam.location = eye
    scene.camera = cam
    sun_data: Any = bpy.data.lights.new("Sun", "SUN")
    sun_data.energy = 3.0
    sun = bpy.data.objects.new("Sun", sun_data)
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("World")
    scene.world = world
    wnodes: Any = world.node_tree.nodes if world.node_tree is not None else None
    bg = wnodes.get("Background")
    bg.inputs["Color"].default_value = (0.3, 0.3, 0.32, 1.0)

    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.seed = 0
    r.resolution_x = size
    r.resolution_y = size
    r.resolution_percentage = 100
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"
    ref = os.path.join(folder, "reference.png")
    r.filepath = ref
    bpy.ops.render.render(write_still=True)

    target.hide_render = True
    target.hide_set(True)
    v, f, _ = icosphere(4, 0.8)
    sphere = _mesh_object("Sphere", y_up_to_z_up(v.numpy()), f.numpy())
    for p in sphere.data.polygons:
        p.use_smooth = True
    view_layer: Any = bpy.context.view_layer
    view_layer.objects.active = sphere
    sphere.select_set(True)
    blend = os.path.join(folder, "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    return blend, ref
