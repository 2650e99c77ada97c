"""Camera and mesh conventions against Blender's own projection and a Cycles render."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

bpy = pytest.importorskip("bpy")
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
import mathutils  # noqa: E402

from dibr_blender.jobs import convert  # noqa: E402
from dibr_blender.scene import default_scene  # noqa: E402
from dibr_blender.scene import io as scene_io  # noqa: E402
from dibr_core.camera import Camera, clip_to_ndc  # noqa: E402
from dibr_core.render import Meshes, RenderSettings, render  # noqa: E402

CASES = [
    dict(type="PERSP", lens=50.0, sensor_fit="AUTO", shift_x=0.0, shift_y=0.0, res=(128, 96), aspect=(1.0, 1.0)),
    dict(type="PERSP", lens=35.0, sensor_fit="VERTICAL", shift_x=0.1, shift_y=-0.05, res=(80, 120), aspect=(1.0, 1.0)),
    dict(type="PERSP", lens=28.0, sensor_fit="HORIZONTAL", shift_x=-0.2, shift_y=0.1, res=(100, 60), aspect=(1.0, 2.0)),
    dict(type="ORTHO", lens=50.0, sensor_fit="AUTO", shift_x=0.05, shift_y=0.0, res=(90, 70), aspect=(2.0, 1.0)),
]


def _camera(scene, case) -> object:
    data = bpy.data.cameras.new("Cam")
    data.type = case["type"]
    data.lens = case["lens"]
    data.sensor_fit = case["sensor_fit"]
    data.sensor_width, data.sensor_height = 36.0, 24.0
    data.shift_x, data.shift_y = case["shift_x"], case["shift_y"]
    data.ortho_scale = 4.0
    data.clip_start, data.clip_end = 0.1, 50.0
    cam = bpy.data.objects.new("Cam", data)
    scene.collection.objects.link(cam)
    cam.location = (1.0, -5.0, 2.0)
    cam.rotation_euler = (-mathutils.Vector(cam.location)).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    r = scene.render
    r.resolution_x, r.resolution_y = case["res"]
    r.resolution_percentage = 100
    r.pixel_aspect_x, r.pixel_aspect_y = case["aspect"]
    bpy.context.view_layer.update()
    return cam


@pytest.mark.blender
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['type']}-{c['sensor_fit']}")
def test_projection_matches_blender(empty_scene, case) -> None:
    cam = _camera(empty_scene, case)
    dg = bpy.context.evaluated_depsgraph_get()
    r = empty_scene.render
    P_blender = np.array(cam.calc_matrix_camera(dg, x=r.resolution_x, y=r.resolution_y, scale_x=r.pixel_aspect_x,
                                                scale_y=r.pixel_aspect_y))
    data = scene_io.read_camera(cam, empty_scene, max_side=4096)
    np.testing.assert_allclose(data.projection, P_blender, rtol=1e-5, atol=1e-6)
    # Random points in front of the camera: NDC from dibr_core equals world_to_camera_view.
    rng = np.random.default_rng(0)
    pts = rng.uniform(-1.5, 1.5, size=(50, 3))
    c = Camera(torch.from_numpy(data.view)[None], torch.from_numpy(data.projection)[None], 0.1, 50.0)
    ndc = clip_to_ndc(c.to_clip(c.to_camera(torch.from_numpy(pts)[None])))[0].numpy()
    for p, n in zip(pts, ndc):
        v = world_to_camera_view(empty_scene, cam, mathutils.Vector(p))
        # world_to_camera_view: (0, 0) bottom-left, (1, 1) top-right of the frame
        assert abs((n[0] + 1) / 2 - v.x) < 1e-5 and abs((n[1] + 1) / 2 - v.y) < 1e-5


@pytest.mark.blender
@pytest.mark.slow
def test_silhouette_agrees_with_cycles_alpha(empty_scene, tmp_path) -> None:
    """The DIB-R hard silhouette of the scene mesh equals a Cycles render's alpha on >= 99% of pixels."""
    tv, tf = default_scene.target_shape()
    ob = default_scene._mesh_object("Target", tv, tf)
    ob.location = (0.2, 0.1, -0.1)
    ob.rotation_euler = (0.3, 0.2, 0.5)
    ob.scale = (1.1, 0.9, 1.0)
    cam = _camera(empty_scene, dict(type="PERSP", lens=50.0, sensor_fit="AUTO", shift_x=0.05, shift_y=-0.03,
                                    res=(96, 72), aspect=(1.0, 1.0)))
    assert cam is not None
    scene = empty_scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    scene.render.filter_size = 0.01  # box-like pixel filter: alpha is the pixel-centre coverage
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    path = str(tmp_path / "alpha.png")
    scene.render.filepath = path
    bpy.context.view_layer.update()
    bpy.ops.render.render(write_still=True)
    alpha = scene_io.load_image(path)[..., 3]
    mesh = scene_io.read_mesh(ob)
    data = scene_io.read_camera(cam, scene, max_side=4096)
    c = Camera(torch.from_numpy(data.view).float()[None], torch.from_numpy(data.projection).float()[None], 0.1, 50.0)
    out = render(Meshes(torch.from_numpy(mesh.vertices)[None], torch.from_numpy(mesh.faces)), c,
                 settings=RenderSettings(data.height, data.width))
    ours = out.mask[0].numpy() > 0.5
    theirs = alpha > 0.5
    agree = float((ours == theirs).mean())
    assert theirs.mean() > 0.1
    assert agree >= 0.99, f"silhouette agreement {agree:.4f}"


@pytest.mark.blender
def test_mesh_read_in_world_space_and_triangulated(empty_scene) -> None:
    me = bpy.data.meshes.new("quad")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)], [], [(0, 1, 2, 3)])
    ob = bpy.data.objects.new("quad", me)
    empty_scene.collection.objects.link(ob)
    ob.location = (0.0, 0.0, 2.0)
    ob.scale = (2.0, 2.0, 2.0)
    mod = ob.modifiers.new("solid", "SOLIDIFY")
    mod.thickness = 0.1
    bpy.context.view_layer.update()
    data = scene_io.read_mesh(ob)
    assert data.faces.shape[1] == 3 and data.faces.shape[0] >= 4  # quads triangulated, modifier applied
    assert data.vertices.shape[0] == 8 and not data.same_topology
    assert np.isclose(data.vertices[:, 0].max(), 2.0) and np.all(data.vertices[:, 2] > 1.5)


@pytest.mark.blender
def test_srgb_and_row_order(tmp_path, empty_scene) -> None:
    img = bpy.data.images.new("t", 4, 2, alpha=True)
    px = np.zeros((2, 4, 4), np.float32)
    px[1, :, :] = [0.5, 0.5, 0.5, 1.0]  # Blender row 1 = the top row
    px[0, :, 3] = 1.0
    img.pixels.foreach_set(px.ravel())
    img.filepath_raw = str(tmp_path / "t.png")
    img.file_format = "PNG"
    img.save()
    arr = scene_io.load_image(str(tmp_path / "t.png"))
    assert arr.shape == (2, 4, 4)
    assert np.allclose(arr[0, :, 0], convert.srgb_to_linear(np.array(128 / 255.0)), atol=2e-3)  # top row first
    assert np.allclose(arr[1, :, :3], 0.0)
    assert math.isclose(float(convert.srgb_to_linear(np.array(0.5))), 0.214041, rel_tol=1e-4)
