"""Reference images that would give garbage are refused or repaired, on the real bpy module:
an opaque render (Film > Transparent off) is no silhouette (refused, or keyed from its background
colour), in the fit, Image to 3D and the batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender.jobs.fit import FitSettings  # noqa: E402
from dibr_blender.jobs.masks import BackgroundKey  # noqa: E402
from dibr_blender.jobs.records import SceneError  # noqa: E402
from dibr_blender.scene import fit as scene_fit  # noqa: E402
from dibr_blender.scene import image_to_3d as image_to_3d_scene  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.fixture(scope="module")
def opaque_reference(default_scene_files, tmp_path_factory) -> Tuple[str, str, str]:
    """(blend, transparent reference, the same view rendered as Blender does by default: RGBA PNG
    with Film > Transparent off, so alpha is 1 everywhere)."""
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene: Any = bpy.context.scene
    bpy.data.objects["Target"].hide_render = False
    bpy.data.objects["Sphere"].hide_render = True
    scene.render.film_transparent = False
    path = str(tmp_path_factory.mktemp("opaque") / "opaque.png")
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    return blend, ref, path


@pytest.mark.blender
def test_opaque_reference_is_refused_by_the_fit(addon, opaque_reference) -> None:
    blend, _, opaque = opaque_reference
    img = bpy.data.images.load(opaque, check_existing=False)
    assert int(img.depth) == 32, "the opaque render is RGBA, like Blender's default PNG output"
    bpy.data.images.remove(img)
    bpy.ops.wm.open_mainfile(filepath=blend)
    with pytest.raises(SceneError, match=r"covers 100\.0% of the image: its alpha is 1 everywhere.*Film > Transparent"):
        scene_fit.gather(bpy.context.scene, "Sphere", [(None, opaque)], FitSettings(max_side=64))


@pytest.mark.blender
def test_background_key_recovers_the_silhouette(addon, opaque_reference) -> None:
    blend, ref, opaque = opaque_reference
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    s = FitSettings(max_side=128)
    _, _, truth = scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    _, _, keyed = scene_fit.gather(scene, "Sphere", [(None, opaque)], s, BackgroundKey())
    assert _iou(keyed[0].mask, truth[0].mask) > 0.97
    # An explicit colour far from the background keys nothing out: refused, not a perfect score.
    with pytest.raises(SceneError, match="the mask leaves no background"):
        scene_fit.gather(scene, "Sphere", [(None, opaque)], s, BackgroundKey((1.0, 0.0, 1.0)))


@pytest.mark.blender
def test_image_to_3d_keys_an_opaque_image(addon, opaque_reference) -> None:
    """An opaque render (alpha 1 everywhere) on a plain background is keyed on its border colour
    automatically, as with an explicit Background Key."""
    _, ref, opaque = opaque_reference
    auto = image_to_3d_scene.read_inputs(image_to_3d_scene.Request(image_path=opaque))
    keyed = image_to_3d_scene.read_inputs(image_to_3d_scene.Request(image_path=opaque, background=BackgroundKey()))
    truth = image_to_3d_scene.read_inputs(image_to_3d_scene.Request(image_path=ref))
    assert "automatic: the image is opaque (alpha 1 everywhere)" in auto.source
    for inputs in (auto, keyed):
        assert inputs.mask is not None and _iou(inputs.mask, truth.rgba[..., 3]) > 0.97


def _batch(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dibr_blender.batch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.blender
@pytest.mark.slow
def test_batch_refuses_opaque_and_fits_with_background_color(addon, opaque_reference, tmp_path) -> None:
    blend, _, opaque = opaque_reference
    report = tmp_path / "r.json"
    r = _batch("fit", "--blend", blend, "--image", opaque, "--steps", "2", "--resolution", "64",
               "--report", str(report))
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("dibr_blender.batch")]
    assert r.returncode == 2 and len(lines) == 1 and "alpha is 1 everywhere" in lines[0], r.stderr
    assert "--background-color" in lines[0]
    assert not report.exists()
    r = _batch("fit", "--blend", blend, "--image", opaque, "--background-color", "auto", "--steps", "2",
               "--resolution", "64", "--report", str(report))
    assert r.returncode == 0, r.stderr
    assert report.exists()
    r = _batch("fit", "--blend", blend, "--image", opaque, "--background-color", "#12", "--report", str(report))
    assert r.returncode == 2 and "--background-color" in r.stderr, r.stderr


@pytest.mark.blender
def test_square_reference_with_a_wide_render_uses_the_image_aspect(addon, default_scene_files) -> None:
    """The reference was rendered at 128x128; with the scene at 1920x1080 (the startup file's
    resolution) the camera is taken at the image's aspect, so the target's own silhouette, seen
    through the gathered camera, lands on the reference's alpha, and the user is told."""
    from dibr_blender.jobs import preview

    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    s = FitSettings(max_side=128)
    _, mesh, same = scene_fit.gather(scene, "Target", [(None, ref)], s)
    assert same[0].note == ""
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    _, mesh, views = scene_fit.gather(scene, "Target", [(None, ref)], s)
    v = views[0]
    assert (v.camera.width, v.camera.height) == (128, 128)
    assert "128x128" in v.note and "1920x1080" in v.note and "image's aspect" in v.note
    np.testing.assert_allclose(v.camera.projection, same[0].camera.projection, atol=1e-9)
    cover = preview.render_view(mesh, v)[..., 3]
    assert _iou(cover, v.mask) > 0.95


@pytest.mark.blender
@pytest.mark.parametrize("location, where", [((6.0, 0.0, 0.0), "outside the camera's frame"),
                                             ((0.0, -8.0, 1.6), "behind the camera"),
                                             ((0.0, 60.0, -25.0), "covers no pixel")])
def test_start_mesh_the_camera_cannot_see_is_refused(addon, default_scene_files, location, where) -> None:
    """A start mesh with no overlap with the silhouette is refused before any step, naming the
    view, where the mesh is and what to do; through the operator the mesh is left unchanged."""
    from dibr_blender.jobs.fit import run_fit

    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    ob.location = location
    if where == "covers no pixel":
        ob.scale = (0.01, 0.01, 0.01)
    bpy.context.view_layer.update()
    s = FitSettings(steps=3, max_side=64)
    _, mesh, views = scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    with pytest.raises(SceneError, match=rf"does not overlap the silhouette of reference.png in camera 'Camera' "
                                         rf"at the start: .*{where}.*move or scale the mesh"):
        run_fit(mesh, views, s)
    bpy.context.view_layer.objects.active = ob
    scene.dibr.image_path = ref
    scene.dibr.steps = 3
    scene.dibr.resolution = 64
    with pytest.raises(RuntimeError, match="does not overlap"):
        bpy.ops.dibr.fit()
    assert ob.data.shape_keys is None


@pytest.mark.blender
def test_start_overlap_in_view_but_beside_the_silhouette(addon, default_scene_files) -> None:
    from dibr_blender.jobs.fit import check_start_overlap

    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    s = FitSettings(steps=3, max_side=64)
    _, mesh, views = scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    assert check_start_overlap(mesh, views)[0] > 0.3
    ob.location = (1.35, 0.0, 0.0)
    ob.scale = (0.15, 0.15, 0.15)
    bpy.context.view_layer.update()
    _, mesh, views = scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    with pytest.raises(SceneError, match="in view but beside the object's silhouette"):
        check_start_overlap(mesh, views)
