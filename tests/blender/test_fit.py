"""The fit on the real bpy module: end to end on the default scene, results as ordinary
Blender data, cancel restores the mesh bit for bit, bad scenes give clear reports."""
from __future__ import annotations

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender.jobs.fit import FitSettings, run_fit  # noqa: E402
from dibr_blender.jobs.records import SceneError  # noqa: E402
from dibr_blender.jobs.runner import Runner  # noqa: E402
from dibr_blender.scene import fit as pipeline  # noqa: E402
from dibr_blender.scene import io as scene_io  # noqa: E402


def _mesh_state(ob) -> tuple:
    me = ob.data
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    keys = None
    if me.shape_keys is not None:
        keys = [(kb.name, kb.value) for kb in me.shape_keys.key_blocks]
    return co.tobytes(), keys, [a.name for a in me.color_attributes], ob.active_shape_key_index


@pytest.mark.blender
@pytest.mark.slow
def test_operator_fits_default_scene(addon, default_scene_files) -> None:
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    bpy.context.view_layer.objects.active = ob
    scene.dibr.image_path = ref
    scene.dibr.steps = 300
    scene.dibr.resolution = 128
    assert bpy.ops.dibr.fit() == {"FINISHED"}
    keys = ob.data.shape_keys
    assert keys is not None and "DIB-R Fit" in keys.key_blocks and keys.key_blocks["DIB-R Fit"].value == 1.0
    assert "DIB-R Color" in ob.data.color_attributes
    mat = ob.active_material
    assert any(n.type == "VERTEX_COLOR" and n.layer_name == "DIB-R Color" for n in mat.node_tree.nodes)
    # The evaluated mesh (with the key) matches the reference silhouette.
    _, mesh, views = pipeline.gather(scene, "Sphere", [(None, ref)], FitSettings(max_side=128))
    from dibr_blender.jobs import preview

    cover = preview.render_view(mesh, views[0])[..., 3] > 0.5
    target = views[0].mask > 0.5
    iou = float((cover & target).sum() / (cover | target).sum())
    assert iou >= 0.95, f"silhouette IoU {iou:.3f}"


@pytest.mark.blender
def test_cancel_restores_mesh_bit_identical(addon, default_scene_files) -> None:
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    before = _mesh_state(ob)
    settings = FitSettings(steps=400, max_side=64)
    ob_, mesh, views = pipeline.gather(scene, "Sphere", [(None, ref)], settings)
    snap = scene_io.snapshot(ob)
    runner = Runner(lambda progress, stop, preview: run_fit(mesh, views, settings, progress, stop, preview)).start()
    created = False
    # What the modal operator does on timer events: apply live previews, then Esc.
    while runner.state().step < 25 and not runner.state().done:
        pv = runner.take_preview()
        if pv is not None:
            created = scene_io.write_shape_key(ob, pv) or created
    assert created, "a live preview was shown"
    assert _mesh_state(ob) != before
    runner.cancel()
    runner.join()
    st = runner.state()
    assert st.done and st.error is None and st.result.cancelled and st.result.steps < 400
    scene_io.restore(ob, snap, created)
    assert _mesh_state(ob) == before


@pytest.mark.blender
def test_bad_scenes_report_clearly(addon, empty_scene, tmp_path, default_scene_files) -> None:
    s = FitSettings(steps=2, max_side=32)
    with pytest.raises(SceneError, match="no active object"):
        pipeline.gather(empty_scene, None, [(None, "x.png")], s)
    with pytest.raises(SceneError, match="no object named 'Nope'"):
        pipeline.gather(empty_scene, "Nope", [(None, "x.png")], s)
    me = bpy.data.meshes.new("empty")
    ob = bpy.data.objects.new("Empty", me)
    empty_scene.collection.objects.link(ob)
    with pytest.raises(SceneError, match="mesh 'Empty' has no faces"):
        pipeline.gather(empty_scene, "Empty", [(None, "x.png")], s)
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    with pytest.raises(SceneError, match="image file not found"):
        pipeline.gather(scene, "Sphere", [(None, str(tmp_path / "missing.png"))], s)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SceneError, match="cannot read image"):
        pipeline.gather(scene, "Sphere", [(None, str(bad))], s)
    with pytest.raises(SceneError, match="no camera named 'Nope'"):
        pipeline.gather(scene, "Sphere", [("Nope", ref)], s)
    scene.camera = None
    with pytest.raises(SceneError, match="the scene has no active camera"):
        pipeline.gather(scene, "Sphere", [(None, ref)], s)
    # The operator reports instead of raising, and changes nothing.
    ob = bpy.data.objects["Sphere"]
    bpy.context.view_layer.objects.active = ob
    before = _mesh_state(ob)
    scene.dibr.image_path = ref
    with pytest.raises(RuntimeError, match="the scene has no active camera"):
        bpy.ops.dibr.fit()
    assert _mesh_state(ob) == before


@pytest.mark.blender
def test_texture_fit_makes_uv_map_and_material(addon, default_scene_files) -> None:
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    ob = bpy.data.objects["Sphere"]
    assert ob.data.uv_layers.active is None
    settings = FitSettings(steps=20, max_side=64, optimize_vertices=False, optimize_colors=False,
                           optimize_texture=True, texture_size=32)
    ob_, mesh, views = pipeline.gather(scene, "Sphere", [(None, ref)], settings)
    out = run_fit(mesh, views, settings)
    assert out.texture is not None and out.texture.shape == (32, 32, 3)
    pipeline.apply_result(ob, out, settings)
    assert ob.data.uv_layers.active is not None
    img = bpy.data.images["DIB-R Texture"]
    assert img.packed_file is not None and tuple(img.size) == (32, 32)
    bsdf = next(n for n in ob.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    link = bsdf.inputs["Base Color"].links[0]
    assert link.from_node.type == "TEX_IMAGE" and link.from_node.image == img
    # The texture the fit optimised reads back through the scene bridge.
    back = scene_io.read_mesh(ob, with_texture=True).texture
    assert back is not None and np.allclose(back, out.texture, atol=1e-5)


@pytest.mark.blender
def test_preview_operator_writes_images(addon, default_scene_files) -> None:
    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    bpy.context.view_layer.objects.active = bpy.data.objects["Sphere"]
    bpy.context.scene.dibr.image_path = ref
    bpy.context.scene.dibr.resolution = 64
    assert bpy.ops.dibr.preview() == {"FINISHED"}
    img = bpy.data.images["DIB-R Preview"]
    assert tuple(img.size) == (128, 64)


@pytest.mark.blender
def test_mask_image_for_references_without_alpha(addon, default_scene_files, tmp_path) -> None:
    from PIL import Image

    blend, ref = default_scene_files
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    rgba = Image.open(ref).convert("RGBA")
    rgb_path, mask_path = tmp_path / "rgb.png", tmp_path / "mask.png"
    rgba.convert("RGB").save(rgb_path)
    rgba.getchannel("A").save(mask_path)
    s = FitSettings(steps=2, max_side=64)
    with pytest.raises(SceneError, match="has no alpha channel; give a mask image"):
        pipeline.gather(scene, "Sphere", [(None, str(rgb_path))], s)
    _, _, with_mask = pipeline.gather(scene, "Sphere", [(None, str(rgb_path), str(mask_path))], s)
    _, _, with_alpha = pipeline.gather(scene, "Sphere", [(None, ref)], s)
    assert np.abs(with_mask[0].mask - with_alpha[0].mask).max() < 0.01
    assert np.abs(with_mask[0].image - with_alpha[0].image).max() < 0.01
