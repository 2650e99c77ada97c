"""The built-in scenes.

* :func:`build_reconstruction`, the main job's scene (``python -m dibr_blender.demo``): a smooth
  orange head (Blender's Suzanne, subdivided once, smooth shaded) rendered by Cycles from a ring
  of cameras (the references), held-out cameras the fit never sees (to judge the result), and
  Blender's icosphere (subdivisions 4, 1,280 faces) to fit to the references.
* :func:`build`, the single-view scene of the tests: a bumpy blob rendered by Cycles through the
  scene camera, and an icosphere (about 5k faces) to fit to it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

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


def _add_material(ob: Any, name: str = "Target Material",
                     color: Tuple[float, float, float] = (0.8, 0.25, 0.1)) -> None:
    """A rough Principled BSDF of ``color`` (linear; the target's look: orange)."""
    mat = bpy.data.materials.new(name)
    nodes: Any = mat.node_tree.nodes if mat.node_tree is not None else None
    bsdf = nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.6
    ob.data.materials.append(mat)


def _light_and_world(scene: Any) -> None:
    """One sun from the upper left front and a dim grey world (its light reaches the object)."""
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


def setup_cycles(scene: Any, size: int, samples: int, denoise: bool = False) -> None:
    """Cycles on the CPU at ``size`` x ``size``, transparent film, PNG RGBA, Standard view transform."""
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = denoise
    scene.cycles.seed = 0
    r.resolution_x = size
    r.resolution_y = size
    r.resolution_percentage = 100
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    scene.view_settings.view_transform = "Standard"


def build(folder: str, size: int = 256, samples: int = 16) -> Tuple[str, str]:
    """Create the scene, render the reference with Cycles, save the .blend (target hidden).

    Returns (blend path, reference image path)."""
    from dibr_core.mesh import icosphere

    os.makedirs(folder, exist_ok=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene: Any = bpy.context.scene
    tv, tf = target_shape()
    target = _mesh_object("Target", tv, tf)
    _add_material(target)
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
    _light_and_world(scene)
    setup_cycles(scene, size, samples)
    r = scene.render
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


# ---------------------------------------------------------------------------------------------
# The main job's multi-view reconstruction scene
# ---------------------------------------------------------------------------------------------
RING_VIEWS = 8
RING_ELEVATION_DEG = 15.0
CAMERA_DISTANCE = 2.8     # metres from the origin; with the 50 mm lens the head fills about 65 % of the frame
CAMERA_LENS_MM = 50.0
HEAD_HALF_WIDTH = 0.85    # the head's half width (ear tip to ear tip / 2) in metres
START_RADIUS = 0.75       # the icosphere's radius
# Held-out cameras, (name, azimuth, elevation) in degrees: between the ring's azimuths and at
# other elevations, one from above and one from below. Azimuth 0 looks at the face (the camera
# on -Y), increasing towards +X.
HELD_OUT = (("Held-out front", 22.5, 35.0), ("Held-out side", 112.5, -20.0),
            ("Held-out above", 202.5, 70.0), ("Held-out below", 292.5, -60.0))
TARGET, START = "Target", "Sphere"


@dataclass
class ReconstructionScene:
    """What :func:`build_reconstruction` made.

    Attributes:
        blend: the saved .blend (target hidden, the icosphere active).
        views: (camera name, reference image path) of the ring, for ``fit --view CAMERA=IMAGE``.
        heldout: names of the held-out cameras.
        target, start: the target's and the icosphere's object names.
    """

    blend: str
    views: List[Tuple[str, str]] = field(default_factory=list)
    heldout: List[str] = field(default_factory=list)
    target: str = TARGET
    start: str = START


def ring_camera_name(k: int) -> str:
    return f"Ring {k}"


def add_orbit_camera(scene: Any, name: str, azimuth_deg: float, elevation_deg: float,
                     distance: float = CAMERA_DISTANCE) -> Any:
    """A camera on a sphere around the origin looking at it (up: +Z)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = mathutils.Vector((distance * math.cos(e) * math.sin(a), -distance * math.cos(e) * math.cos(a),
                            distance * math.sin(e)))
    data = bpy.data.cameras.new(name)
    data.lens = CAMERA_LENS_MM
    cam = bpy.data.objects.new(name, data)
    scene.collection.objects.link(cam)
    cam.rotation_euler = (-eye).to_track_quat("-Z", "Y").to_euler()
    cam.location = eye
    return cam


def add_head(scene: Any, name: str = TARGET) -> Any:
    """Blender's Suzanne, subdivided once (Catmull-Clark, applied), smooth shaded, orange, scaled
    to a half width of ``HEAD_HALF_WIDTH`` and centred on the origin."""
    mesh: Any = bpy.data.meshes.new(name)
    import bmesh

    bm = bmesh.new()
    try:
        bmesh.ops.create_monkey(bm)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    ob: Any = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(ob)
    sub = ob.modifiers.new("Subdivision", "SUBSURF")
    sub.levels = sub.render_levels = 1
    dg = bpy.context.evaluated_depsgraph_get()
    ev = ob.evaluated_get(dg)
    subdivided = bpy.data.meshes.new_from_object(ev)
    ob.modifiers.remove(sub)
    ob.data = subdivided
    bpy.data.meshes.remove(mesh)
    co = np.empty(3 * len(subdivided.vertices), dtype=np.float64)
    subdivided.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3)
    centre = (co.max(0) + co.min(0)) / 2
    s = HEAD_HALF_WIDTH / float((co[:, 0] - centre[0]).max())
    subdivided.vertices.foreach_set("co", ((co - centre) * s).astype(np.float32).ravel())
    subdivided.update()
    for p in subdivided.polygons:
        p.use_smooth = True
    _add_material(ob)
    return ob


def add_icosphere(scene: Any, name: str = START, radius: float = START_RADIUS) -> Any:
    """Blender's icosphere, subdivisions 4 (1,280 faces), smooth shaded, at the origin, with the
    target's material in the fit's start colour (mid grey; the fit wires its colours into it)."""
    mesh: Any = bpy.data.meshes.new(name)
    import bmesh

    bm = bmesh.new()
    try:
        bmesh.ops.create_icosphere(bm, subdivisions=4, radius=radius)
        bm.to_mesh(mesh)
    finally:
        bm.free()
    for p in mesh.polygons:
        p.use_smooth = True
    ob: Any = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(ob)
    _add_material(ob, "Start Material", (0.5, 0.5, 0.5))
    return ob


def render_cameras(scene: Any, cameras: Sequence[str], folder: str, prefix: str, show: Sequence[str]) -> List[str]:
    """Render ``scene`` through each named camera with only the objects ``show`` visible among the
    meshes (the scene's render settings as they are). Returns the PNG paths ``folder/prefix_k.png``."""
    visible = set(show)
    for ob in scene.objects:
        if ob.type == "MESH":
            ob.hide_render = ob.name not in visible
    paths = []
    for k, name in enumerate(cameras):
        scene.camera = bpy.data.objects[name]
        scene.render.filepath = os.path.join(folder, f"{prefix}_{k}.png")
        bpy.ops.render.render(write_still=True)
        paths.append(scene.render.filepath)
    return paths


def build_reconstruction(folder: str, size: int = 128, samples: int = 16) -> ReconstructionScene:
    """The main job's scene: the head, ``RING_VIEWS`` cameras on a ring at ``RING_ELEVATION_DEG``
    whose Cycles renders (``size`` squared, transparent film) are the references, the
    ``HELD_OUT`` cameras, a sun and the icosphere to fit. Saves ``folder/scene.blend`` with the
    target hidden and the icosphere active and selected (the scene camera: the first ring camera)."""
    os.makedirs(folder, exist_ok=True)
    bpy.ops.wm.read_homefile(use_empty=True)
    scene: Any = bpy.context.scene
    add_head(scene)
    ring = [add_orbit_camera(scene, ring_camera_name(k), 360.0 * k / RING_VIEWS, RING_ELEVATION_DEG).name
            for k in range(RING_VIEWS)]
    heldout = [add_orbit_camera(scene, name, az, el).name for name, az, el in HELD_OUT]
    _light_and_world(scene)
    setup_cycles(scene, size, samples)
    refs = render_cameras(scene, ring, folder, "reference", show=[TARGET])
    scene.camera = bpy.data.objects[ring[0]]
    target: Any = bpy.data.objects[TARGET]
    target.hide_render = True
    target.hide_set(True)
    sphere = add_icosphere(scene)
    view_layer: Any = bpy.context.view_layer
    view_layer.objects.active = sphere
    sphere.select_set(True)
    blend = os.path.join(folder, "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    return ReconstructionScene(blend, list(zip(ring, refs)), heldout)
