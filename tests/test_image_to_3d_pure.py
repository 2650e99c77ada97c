"""Image to 3D, the parts without Blender (dibr_blender/jobs/image_to_3d.py, jobs/meshes.py and
the batch arguments): axis conversion, mesh arrays, texture orientation and resizing, the protocol camera, the
predictor call and the report."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dibr_blender import cli
from dibr_blender.jobs import convert, meshes
from dibr_blender.jobs import image_to_3d as i3


def _sphere_prediction(texture_size: int = 8) -> SimpleNamespace:
    """A fake PredictedMesh: the predictor's template (an icosphere, counter-clockwise from
    outside, y up), off-centre and squashed, with a texture and colours."""
    from dibr_core.mesh import icosphere

    v, f, uv = icosphere(3, 0.4)
    v = v * torch.tensor([1.0, 0.7, 0.5]) + torch.tensor([0.1, -0.05, 0.02])
    tex = torch.rand(texture_size, texture_size, 3, generator=torch.Generator().manual_seed(0))
    return SimpleNamespace(vertices=v, faces=f, face_uvs=uv, colors=torch.rand(v.shape[0], 3), texture=tex,
                           input_image=torch.zeros(4, 64, 64))


def test_categories_match_dibr_core() -> None:
    from dibr_core.data.shapes import CATEGORIES

    assert i3.CATEGORIES == tuple(CATEGORIES)
    assert [item[0] for item in i3.CATEGORY_ITEMS] == ["none", *CATEGORIES]


def test_axis_conversion_is_a_proper_rotation() -> None:
    R = meshes.AXES
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    # canonical +Y (up) -> Blender +Z; canonical +Z (towards the azimuth-0 camera) -> Blender -Y (front)
    np.testing.assert_allclose(meshes.canonical_to_blender(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                                                                 [1.0, 0.0, 0.0]])),
                               [[0, 0, 1], [0, -1, 0], [1, 0, 0]], atol=1e-12)


def test_mesh_arrays_size_centre_loops_and_outward_normals() -> None:
    pred = _sphere_prediction()
    m = meshes.mesh_arrays(pred, size=2.5, texture_size=0)
    V, F = pred.vertices.shape[0], pred.faces.shape[0]
    assert m.vertices.shape == (V, 3) and m.faces.shape == (F, 3) and m.vertices.dtype == np.float32
    assert meshes.bbox_diagonal(m.vertices) == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose(m.vertices.min(0) + m.vertices.max(0), 0.0, atol=1e-5)
    # the squashed axes: canonical x (1.0) stays x, canonical z (0.5) becomes -y, y (0.7) becomes z
    ext = m.vertices.max(0) - m.vertices.min(0)
    np.testing.assert_allclose(ext / ext[0], [1.0, 0.5, 0.7], rtol=1e-3)
    # loops in face order, one triangle per polygon
    np.testing.assert_array_equal(m.loop_vertices, pred.faces.numpy().reshape(-1))
    np.testing.assert_array_equal(m.loop_start, np.arange(0, 3 * F, 3))
    np.testing.assert_array_equal(m.loop_total, np.full(F, 3))
    np.testing.assert_allclose(m.corner_uvs, pred.face_uvs.numpy().reshape(-1, 2))
    # normals: rotated with the mesh, still outward (the winding is kept)
    n_c = meshes.face_normals(pred.vertices.numpy(), pred.faces.numpy())
    n_b = meshes.face_normals(m.vertices, m.faces)
    np.testing.assert_allclose(n_b, n_c @ meshes.AXES.T, atol=1e-4)
    centres = m.vertices[m.faces].mean(1)
    assert (np.einsum("fi,fi->f", n_b, centres) > 0).all()
    # colours: sRGB-encoded prediction -> linear RGBA
    np.testing.assert_allclose(m.colors[:, :3], convert.srgb_to_linear(pred.colors.numpy()), atol=1e-6)
    np.testing.assert_array_equal(m.colors[:, 3], 1.0)
    with pytest.raises(ValueError, match="size must be positive"):
        meshes.mesh_arrays(pred, size=0.0)


def test_texture_orientation_round_trip() -> None:
    pred = _sphere_prediction(texture_size=8)
    tex = pred.texture.numpy()
    m = meshes.mesh_arrays(pred, texture_size=0)
    px = m.texture
    assert px is not None and px.shape == (8, 8, 4) and m.native_texture_size == 8 and m.texture_size == 8
    # Blender pixels start at the bottom row: pixel row 0 is the texture's last (v = 0) row.
    np.testing.assert_allclose(px[0, :, :3], tex[-1], atol=1e-6)
    np.testing.assert_allclose(px[..., 3], 1.0)
    np.testing.assert_allclose(meshes.pixels_to_texture(px), tex, atol=1e-6)
    # Looking up a UV in the Blender image (x = u W, y = v H from the bottom) gives the colour the
    # predictor's own sampler gives (OpenGL UVs, rows top to bottom).
    uv = pred.face_uvs.numpy().reshape(-1, 2)
    ours = meshes.sample_texture_np(tex, uv)
    from dibr_core.texture import sample_texture

    theirs = sample_texture(torch.from_numpy(tex).permute(2, 0, 1)[None].double(),
                            torch.from_numpy(uv)[None].double())[0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    # Blender's own lookup: x = u W - 1/2 across, y = v H - 1/2 up from pixel row 0 (repeat).
    Hb, Wb = px.shape[:2]
    x, y = uv[:, 0] * Wb - 0.5, uv[:, 1] * Hb - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]

    def at(yy, xx):
        return px[yy % Hb, xx % Wb, :3]

    blender = ((at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx) * (1 - fy)
               + (at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx) * fy)
    np.testing.assert_allclose(blender, theirs, atol=1e-5)


def test_resize_texture_bilinear_with_repeat() -> None:
    rng = np.random.default_rng(1)
    tex = rng.random((8, 8, 3))
    np.testing.assert_allclose(meshes.resize_texture(tex, 8), tex, atol=1e-6)
    np.testing.assert_allclose(meshes.resize_texture(np.full((4, 4, 3), 0.25), 32), 0.25, atol=1e-6)
    big = meshes.resize_texture(tex, 20)
    assert big.shape == (20, 20, 3)
    # output pixel (i, j) is the texture sampled (bilinear, repeat) at its centre's UVs
    j, i = np.meshgrid(np.arange(20), np.arange(20))
    uv = np.stack([(j + 0.5) / 20, 1.0 - (i + 0.5) / 20], -1).reshape(-1, 2)
    np.testing.assert_allclose(big.reshape(-1, 3), meshes.sample_texture_np(tex, uv), atol=1e-6)
    # so the seam (u = 0 | 1) blends the last and first columns, as the renderer does
    assert np.abs(big[:, 0] - meshes.resize_texture(tex[:, ::-1], 20)[:, -1]).max() < 1e-6
    small = meshes.resize_texture(tex, 4)  # shrinking: 2x2 box averages
    np.testing.assert_allclose(small[0, 0], tex[:2, :2].mean((0, 1)), atol=1e-6)
    px = meshes.texture_pixels(tex, 16)
    assert px.shape == (16, 16, 4) and px.dtype == np.float32
    m = meshes.mesh_arrays(_sphere_prediction(8), texture_size=64)
    assert m.texture is not None and m.texture.shape == (64, 64, 4) and m.native_texture_size == 8


def test_vertex_colors_from_texture_constant() -> None:
    pred = _sphere_prediction()
    tex = np.full((8, 8, 3), 0.3)
    cols = meshes.vertex_colors_from_texture(tex, pred.faces.numpy(), pred.face_uvs.numpy(), pred.vertices.shape[0])
    np.testing.assert_allclose(cols, 0.3, atol=1e-6)


def test_protocol_camera_equals_the_training_camera() -> None:
    from dibr_core.data.dataset import DISTANCE, ELEVATION_DEG, FOV_Y_DEG, make_camera, view_matrices

    assert (i3.PROTOCOL_DISTANCE, i3.PROTOCOL_ELEVATION_DEG, i3.PROTOCOL_FOV_Y_DEG) == (DISTANCE, ELEVATION_DEG,
                                                                                      FOV_Y_DEG)
    views, az = view_matrices(24)
    P_train = make_camera(views[:1]).projection[0].double().numpy()
    pts_c = np.random.default_rng(2).uniform(-0.5, 0.5, (20, 3))
    pts_b = meshes.canonical_to_blender(pts_c)
    for k in (0, 5, 13):
        view = i3.ProtocolView(float(az[k]))
        W = i3.camera_world(view)
        np.testing.assert_allclose(W[:3, 3], i3.protocol_eye(float(az[k])), atol=1e-12)
        # the Blender camera sees the rotated points exactly where the training camera sees the originals
        ndc_b = i3.project_ndc(pts_b, W, i3.camera_params(view, 64))
        h = np.concatenate([pts_c, np.ones((20, 1))], 1) @ (P_train @ views[k].double().numpy()).T
        np.testing.assert_allclose(ndc_b, h[:, :2] / h[:, 3:], atol=1e-5)
    # azimuth 0 looks from the front (-Y), 30 degrees above
    eye = i3.protocol_eye(0.0)
    np.testing.assert_allclose(eye, [0, -DISTANCE * math.cos(math.radians(30)), DISTANCE * 0.5], atol=1e-12)
    # scale and location move and grow the camera with the object
    W2 = i3.camera_world(i3.ProtocolView(30.0), scale=2.0, location=(1, 2, 3))
    np.testing.assert_allclose(W2[:3, 3], np.array([1, 2, 3]) + 2 * i3.protocol_eye(30.0), atol=1e-12)
    np.testing.assert_allclose(convert.view_matrix(W2) @ np.array([1, 2, 3, 1.0]), [0, 0, -2 * DISTANCE, 1],
                               atol=1e-9)


def test_protocol_view_is_the_core_input_view_in_blender() -> None:
    """The Blender camera of a dibr_core InputView (zoomed, shifted, turned with the object) sees
    the Blender-frame points where the core camera sees the canonical ones."""
    from dibr_core.inference import InputView

    view = InputView(30.0, zoom=1.25, shift=(0.1, -0.15), iou=0.9)
    pts_c = np.random.default_rng(0).uniform(-0.5, 0.5, (20, 3))
    cam = view.camera()
    clip = cam.to_clip(cam.to_camera(torch.from_numpy(pts_c)[None]))[0].numpy()
    want = clip[:, :2] / clip[:, 3:]
    for turn in (0.0, 37.0):
        pv = i3.protocol_view(view, turn)
        assert pv.azimuth_deg == pytest.approx(30.0 + turn) and pv.iou == 0.9
        t = math.radians(turn)
        R = np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])
        pts_b = meshes.canonical_to_blender(pts_c) @ R.T
        ndc = i3.project_ndc(pts_b, i3.camera_world(pv), i3.camera_params(pv, 64))
        np.testing.assert_allclose(ndc, want, atol=1e-9)


def test_to_blender_places_refined_vertices_like_the_prediction() -> None:
    pred = _sphere_prediction()
    m = meshes.on_ground(meshes.rotate_z(meshes.mesh_arrays(pred, size=2.0), 30.0))
    np.testing.assert_allclose(i3.to_blender(pred.vertices, m, 30.0), m.vertices, atol=1e-5)


def test_refine_defaults_match_dibr_core() -> None:
    from dibr_core import inference

    assert i3.REFINE_STEPS == inference.REFINE_STEPS > 0
    assert i3.REFINE_RESOLUTION == inference.REFINE_RESOLUTION


def test_auto_background_key_on_a_plain_border_only() -> None:
    from dibr_blender.jobs import masks

    img = np.full((40, 40, 3), 0.8)
    img[10:30, 12:28] = [0.2, 0.3, 0.9]
    key = i3.auto_background_key(img)
    assert key is not None and key.color == pytest.approx((0.8, 0.8, 0.8))
    m = masks.key_mask(img, key)
    assert (m[10:30, 12:28] == 1).all() and m.sum() == 20 * 16
    noisy = np.random.default_rng(0).uniform(0, 1, (40, 40, 3))
    assert i3.auto_background_key(noisy) is None


def test_report_and_weights_info() -> None:
    m = meshes.mesh_arrays(_sphere_prediction(), size=1.0, texture_size=16)
    w = i3.weights_info()
    assert w["weights"] == "predictor.pt"
    rep = i3.make_report(object_name="DIB-R Image to 3D", mesh=m, category="chair", category_passed=False,
                         size=1.0, seconds=0.5, predict_seconds=0.1, image="chair.png", weights=w)
    assert rep["vertices"] == 642 and rep["faces"] == 1280 and rep["texture_size"] == 16
    assert rep["category"] == "chair" and rep["weights"] == "predictor.pt" and rep["command"] == "image-to-3d"

    def paths(x):
        if isinstance(x, dict):
            return [p for v in x.values() for p in paths(v)]
        if isinstance(x, list):
            return [p for v in x for p in paths(v)]
        return [x] if isinstance(x, str) and os.path.isabs(x) else []

    assert paths(rep) == []
    assert "642 vertices" in i3.summary(rep)
    assert rep["input_view_iou"] is None and rep["silhouette"] == "alpha"
    # the input-view silhouette IoU before and after the refine, in the report and its summary line
    iv = {"prediction": 0.83, "refined": 0.96, "result": 0.96, "camera": "cam"}
    refine = {"camera": "cam", "steps": 60, "prediction_silhouette_iou": 0.83, "refined_silhouette_iou": 0.96,
              "silhouette_iou": 0.96, "kept_prediction": False}
    rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                         predict_seconds=0.1, image="x.png", refine=refine, input_view=iv)
    assert rep["input_view_iou"] == iv
    assert "input-view silhouette IoU 0.830 -> 0.960 after 60 refine steps" in i3.summary(rep)
    # part of the refine returned: the line says why the whole was not
    for crossed, why in ((3, "would add self-intersecting faces"), (0, "overlaps less")):
        part = dict(refine, silhouette_iou=0.95, refined_silhouette_iou=0.94, refine_fraction=0.75,
                    self_intersections={"prediction": 0, "refined": crossed})
        rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                             predict_seconds=0.1, image="x.png", refine=part, input_view=iv)
        assert f"(75% of the refine; the whole {why} at 0.940)" in i3.summary(rep)
    # a refine that the time budget stopped says so
    rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                         predict_seconds=0.1, image="x.png", refine=dict(refine, timed_out=True), input_view=iv)
    assert "stopped at its time budget" in i3.summary(rep)
    rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                         predict_seconds=0.1, image="x.png", refine=refine, input_view=iv)
    assert "time budget" not in i3.summary(rep)
    rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                         predict_seconds=0.1, image="x.png", input_view={"prediction": 0.83, "refined": None})
    assert "input-view silhouette IoU 0.830 (no refine)" in i3.summary(rep)
    rep = i3.make_report(object_name="o", mesh=m, category=None, category_passed=False, size=1.0, seconds=0.5,
                         predict_seconds=0.1, image="x.png",
                         input_view={"prediction": 0.83, "refined": None, "network": 0.71})
    assert ("input-view silhouette IoU 0.830 (no refine; the network's mesh 0.710 before it was conformed to the "
            "picture's outline)") in i3.summary(rep)
    assert i3._scrub({"a": "/abs/path", "b": {"c": 1, "d": "/x"}, "e": "rel"}) == {"b": {"c": 1}, "e": "rel"}


def test_cli_image_to_3d_bad_input(tmp_path, capsys) -> None:
    img = tmp_path / "in.png"
    img.write_bytes(b"x")
    out = str(tmp_path / "out.blend")
    cases = [
        (["image-to-3d", "--image", str(tmp_path / "no.png"), "--output", out], "image file not found"),
        (["image-to-3d", "--image", str(img), "--mask", str(tmp_path / "no.png"), "--output", out],
         "mask image not found"),
        (["image-to-3d", "--image", str(img), "--category", "spaceship", "--output", out], "invalid choice"),
        (["image-to-3d", "--image", str(img), "--report", str(tmp_path / "r.json")], "nothing to write"),
        (["image-to-3d", "--image", str(img), "--export", str(tmp_path / "o.gltf")], "must end with .glb"),
        (["image-to-3d", "--image", str(img), "--size", "0", "--output", out], "--size must be positive"),
        (["image-to-3d", "--image", str(img), "--refine-steps", "-1", "--output", out], "--refine-steps"),
        (["image-to-3d", "--image", str(img), "--texture-size", "-2", "--output", out], "--texture-size"),
        (["image-to-3d", "--image", str(img), "--blend", str(tmp_path / "no.blend"), "--output", out],
         "blend file not found"),
        (["image-to-3d", "--output", out], "--image"),
    ]
    for argv, msg in cases:
        assert cli.main(argv) == cli.EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dibr_blender.batch: error: ") and msg in err[0], (argv, err)
    assert not (tmp_path / "out.blend").exists() and not (tmp_path / "r.json").exists()
    args = cli.parse(["image-to-3d", "--image", str(img), "--category", "chair", "--export", str(tmp_path / "o.glb")],
                     inside_blender=False)
    assert args.category == "chair" and args.size == 1.0 and args.texture_size == 256
    assert args.refine_steps == i3.REFINE_STEPS > 0 and args.refine_resolution == i3.REFINE_RESOLUTION  # on by default
    off = cli.parse(["image-to-3d", "--image", str(img), "--refine-steps", "0", "--export", str(tmp_path / "o.glb")],
                    inside_blender=False)
    assert off.refine_steps == 0


def test_facing_rotation_turns_the_input_view_behind_the_viewer() -> None:
    """After the turn, the input view's eye lies opposite the viewing direction (horizontally),
    for any azimuth and direction; vertical directions give no turn."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        az = float(rng.uniform(0.0, 360.0))
        d = rng.normal(size=3)
        turn = i3.facing_rotation_deg(az, d)
        assert turn is not None and -180.0 < turn <= 180.0
        eye = i3.protocol_eye(az + turn)
        h_eye, h_d = eye[:2] / np.linalg.norm(eye[:2]), d[:2] / np.linalg.norm(d[:2])
        assert float(h_eye @ h_d) == pytest.approx(-1.0, abs=1e-9)
    assert i3.facing_rotation_deg(10.0, (0.0, 0.0, 2.0)) is None
    assert i3.facing_rotation_deg(0.0, (0.0, 1.0, 0.0)) == pytest.approx(0.0)  # azimuth 0 looks from -Y


def test_rotate_z_keeps_heights_and_turns_counter_clockwise() -> None:
    mesh = meshes.mesh_arrays(_sphere_prediction(), size=1.0)
    turned = meshes.rotate_z(mesh, 90.0)
    v, t = mesh.vertices.astype(np.float64), turned.vertices.astype(np.float64)
    assert np.abs(t[:, 2] - v[:, 2]).max() < 1e-6
    assert np.abs(t[:, 0] + v[:, 1]).max() < 1e-6 and np.abs(t[:, 1] - v[:, 0]).max() < 1e-6
    assert turned.faces is mesh.faces
