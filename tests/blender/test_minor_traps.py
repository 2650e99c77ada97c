"""Small traps of real scenes on the real bpy module: Preview without an active object, tiny
images, 16-bit grey PNGs, modifiers that would move a fitted shape again, and scores computed on
what the user gets."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender.jobs.fit import FitSettings, run_fit  # noqa: E402
from dibr_blender.jobs.records import SceneError  # noqa: E402
from dibr_blender.scene import fit as scene_fit  # noqa: E402
from dibr_blender.scene import image_to_3d as image_to_3d_scene  # noqa: E402
from dibr_blender.scene import io as scene_io  # noqa: E402


@pytest.mark.blender
def test_preview_without_an_active_object_reports_an_error(addon, default_scene_files) -> None:
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    bpy.context.view_layer.objects.active = None
    bpy.context.scene.dibr.image_path = ref
    with pytest.raises(RuntimeError, match="no active mesh object; select the mesh to preview"):
        bpy.ops.dibr.preview()


@pytest.mark.blender
def test_one_pixel_images_are_refused_clearly(addon, default_scene_files, tmp_path) -> None:
    from PIL import Image

    blend, _ = default_scene_files
    tiny = tmp_path / "tiny.png"
    Image.new("RGBA", (1, 1), (200, 10, 10, 255)).save(tiny)
    bpy.ops.wm.open_mainfile(filepath=blend)
    with pytest.raises(SceneError, match=r"tiny.png is 1x1 pixels; a reference needs at least 8"):
        scene_fit.gather(bpy.context.scene, "Sphere", [(None, str(tiny))], FitSettings(max_side=64))
    with pytest.raises(SceneError, match=r"is 1x1 pixels"):
        image_to_3d_scene.read_inputs(image_to_3d_scene.Request(image_path=str(tiny)))


@pytest.mark.blender
def test_16_bit_grey_png_has_no_alpha(addon, tmp_path) -> None:
    """Blender reports a 16-bit grey PNG as 32 bits per pixel, like RGBA; it has no alpha, so as a
    mask its grey values are the silhouette (not an alpha of 1 everywhere)."""
    from PIL import Image

    grey = np.zeros((32, 32), dtype=np.uint16)
    grey[8:24, 8:24] = 65535
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        assert int(img.depth) == 32  # why Blender's depth cannot tell
        assert scene_io.image_has_alpha(img) is False
    finally:
        bpy.data.images.remove(img)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    image = tmp_path / "opaque.png"
    Image.fromarray(rgba).save(image)
    inputs = image_to_3d_scene.read_inputs(image_to_3d_scene.Request(image_path=str(image), mask_path=str(path)))
    assert inputs.mask is not None
    assert float(inputs.mask[16, 16]) == pytest.approx(1.0) and float(inputs.mask[2, 2]) == pytest.approx(0.0)
    for kind, expected in (("RGBA", True), ("LA", True), ("RGB", False), ("L", False)):
        p = tmp_path / f"{kind}.png"
        Image.new(kind, (16, 16)).save(p)
        assert scene_io.load_image_display(str(p))[1] is expected, kind


@pytest.mark.blender
def test_modifiers_that_move_vertices_are_refused_for_shape_fits(addon, default_scene_files) -> None:
    """A Smooth modifier under a fitted shape would smooth it a second time (what the user sees
    would differ from what was fitted); it is refused by name. Modifiers that move nothing pass."""
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    ob.modifiers.new("Weighted", "WEIGHTED_NORMAL")
    s = FitSettings(steps=2, max_side=64)
    scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    smooth = ob.modifiers.new("Smooth", "SMOOTH")
    smooth.factor, smooth.iterations = 1.0, 10
    with pytest.raises(SceneError, match=r"modifier\(s\) 'Smooth' move the vertices.*apply them"):
        scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    assert all(m.show_viewport for m in ob.modifiers), "the check restores the modifiers"
    colours_only = FitSettings(steps=2, max_side=64, optimize_vertices=False)
    scene_fit.gather(scene, "Sphere", [(None, ref)], colours_only)


@pytest.mark.blender
def test_report_score_is_the_evaluated_result(addon, default_scene_files) -> None:
    """The score in the report is computed on the evaluated object after the result is written;
    with a Smooth modifier on a colour-only fit it is the smoothed sphere's overlap."""
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    s = FitSettings(steps=5, max_side=64)
    _, mesh, views = scene_fit.gather(scene, "Sphere", [(None, ref)], s)
    out = run_fit(mesh, views, s)
    scene_fit.apply_result(ob, out, s)
    scene_fit.honest_report(ob, out, views)
    v = out.views[0]
    assert v["silhouette_iou"] == pytest.approx(scene_fit.scores_as_seen(ob, views)[0])
    assert abs(v["silhouette_iou"] - v["fit_silhouette_iou"]) < 0.05, v
    # A modifier that shrinks the object changes what the user sees, and so the score.
    before = scene_fit.scores_as_seen(ob, views)[0]
    shrink = ob.modifiers.new("Shrink", "DISPLACE")  # no texture: every vertex moves 0.5 * strength along its normal
    shrink.strength = -0.6
    bpy.context.view_layer.update()
    assert scene_fit.scores_as_seen(ob, views)[0] < before - 0.05


@pytest.mark.blender
def test_blend_relative_paths_are_accepted_without_a_warning(addon, empty_scene) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = empty_scene.dibr
        s.image_path = "//reference.png"
        s.mask_path = "//mask.png"
        s.i3d_image_path = "//chair.png"
        s.i3d_mask_path = "//chair_mask.png"
        v = s.views.add()
        v.image_path = "//side.png"
        v.mask_path = "//side_mask.png"
    assert s.image_path == "//reference.png"
