"""The main job's scene (default_scene.build_reconstruction) on the real bpy module, built small:
the head, the ring of reference cameras and their Cycles renders, the held-out cameras and the
icosphere to fit; and the held-out IoU of a mesh against a Cycles alpha as the demo computes it."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender.jobs import heldout  # noqa: E402
from dibr_blender.scene import default_scene as ds  # noqa: E402
from dibr_blender.scene import fit as scene_fit  # noqa: E402
from dibr_blender.scene import io  # noqa: E402


@pytest.mark.blender
def test_reconstruction_scene_and_heldout_iou(tmp_path) -> None:
    rec = ds.build_reconstruction(str(tmp_path), size=32, samples=1)
    assert os.path.isfile(rec.blend)
    assert [c for c, _ in rec.views] == [f"Ring {k}" for k in range(8)]
    assert rec.heldout == [name for name, _, _ in ds.HELD_OUT]
    scene = bpy.context.scene
    for k, (cam, ref) in enumerate(rec.views):
        loc = np.array(bpy.data.objects[cam].location)
        assert math.degrees(math.asin(loc[2] / np.linalg.norm(loc))) == pytest.approx(15.0, abs=1e-4)
        assert math.degrees(math.atan2(loc[0], -loc[1])) % 360 == pytest.approx(45.0 * k, abs=1e-4)
        alpha = io.load_image(ref)[..., 3]
        assert alpha.shape == (32, 32) and 0.1 < float((alpha > 0.5).mean()) < 0.9   # the head, not the frame
    elevations = [math.degrees(math.asin(bpy.data.objects[n].location[2] / ds.CAMERA_DISTANCE)) for n in rec.heldout]
    assert max(elevations) > 45 and min(elevations) < -45   # one from above, one from below
    target, sphere = bpy.data.objects[rec.target], bpy.data.objects[rec.start]
    assert target.hide_render and not sphere.hide_render
    assert len(sphere.data.polygons) == 1280 and all(p.use_smooth for p in sphere.data.polygons)
    # Suzanne: 468 quads and 32 triangles; one Catmull-Clark level makes 4 or 3 quads of each
    assert len(target.data.polygons) == 4 * 468 + 3 * 32 and all(p.use_smooth for p in target.data.polygons)
    assert bpy.context.view_layer.objects.active == sphere

    # The held-out IoU as the demo computes it: the target's own evaluated mesh against its
    # Cycles alpha is near 1, the start sphere's is far lower.
    target.hide_set(False)
    paths = ds.render_cameras(scene, rec.heldout[:2], str(tmp_path), "heldout", show=[rec.target])
    views = [io.read_view(bpy.data.objects[n], scene, p, 32) for n, p in zip(rec.heldout[:2], paths)]
    own = scene_fit.scores_as_seen(target, views)
    start = scene_fit.scores_as_seen(sphere, views)
    assert min(own) > 0.9 and max(start) < 0.8, (own, start)
    mesh = io.read_mesh(target, with_texture=False)
    s = heldout.surface_metrics(mesh.vertices, mesh.faces, mesh.vertices, mesh.faces, points=500)
    assert s["roughness_ratio"] == 1.0 and s["faces"] == len(mesh.faces)
