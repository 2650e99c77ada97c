"""The extension's pure parts, tested without Blender: conversions, the worker runner and the
batch CLI's argument handling (shared by `blender --python ... --` and `python -m`)."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from dibr_blender import cli
from dibr_blender.jobs import convert
from dibr_blender.jobs.runner import Runner


def test_projection_matches_known_blender_matrix() -> None:
    # Blender 5.0.1 calc_matrix_camera for lens 50, sensor 36x24 AUTO, 128x96, clip 0.1/1000
    P = convert.projection_matrix(convert.CameraParams(lens=50, res_x=128, res_y=96, clip_start=0.1, clip_end=1000))
    np.testing.assert_allclose(P[0, 0], 2.7778, atol=1e-4)
    np.testing.assert_allclose(P[1, 1], 3.7037, atol=1e-4)
    np.testing.assert_allclose(P[2, 2], -1.0002, atol=1e-4)
    np.testing.assert_allclose(P[2, 3], -0.2, atol=1e-4)
    assert P[3, 2] == -1 and P[3, 3] == 0


def test_projection_sensor_fit_shift_and_ortho() -> None:
    tall = convert.projection_matrix(convert.CameraParams(lens=50, res_x=96, res_y=128))
    # AUTO fit on a portrait image fits the sensor width to the (longer) vertical side
    np.testing.assert_allclose(tall[1, 1], 2 * 50 / 36, rtol=1e-9)
    shifted = convert.projection_matrix(convert.CameraParams(shift_x=0.1, shift_y=-0.2, res_x=100, res_y=100))
    np.testing.assert_allclose(shifted[0, 2], 0.2, rtol=1e-9)   # shift is in units of the larger side
    np.testing.assert_allclose(shifted[1, 2], -0.4, rtol=1e-9)
    ortho = convert.projection_matrix(convert.CameraParams(type="ORTHO", ortho_scale=4.0, res_x=200, res_y=100))
    np.testing.assert_allclose([ortho[0, 0], ortho[1, 1]], [0.5, 1.0], rtol=1e-9)
    assert ortho[3, 3] == 1
    with pytest.raises(ValueError, match="camera type must be PERSP or ORTHO"):
        convert.projection_matrix(convert.CameraParams(type="PANO"))
    with pytest.raises(ValueError, match="need 0 < clip_start < clip_end"):
        convert.projection_matrix(convert.CameraParams(clip_start=2.0, clip_end=1.0))


def test_view_matrix_removes_scale() -> None:
    M = np.eye(4)
    M[:3, :3] = np.diag([2.0, 2.0, 2.0])
    M[:3, 3] = [1.0, 2.0, 3.0]
    V = convert.view_matrix(M)
    np.testing.assert_allclose(V @ np.array([1.0, 2.0, 3.0, 1.0]), [0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(V[:3, :3], np.eye(3), atol=1e-12)


def test_images_helpers() -> None:
    assert convert.fit_resolution(1920, 1080, 256) == (256, 144)
    assert convert.fit_resolution(100, 50, 256) == (100, 50)
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(convert.linear_to_srgb(convert.srgb_to_linear(x)), x, atol=1e-6)
    img = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    small = convert.resize_image(img, 2, 2)
    np.testing.assert_allclose(small[..., 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(convert.flip_rows(img)[0, :, 0], [12, 13, 14, 15])


def test_lights_and_uvs() -> None:
    M = np.eye(4)
    d, c = convert.light_to_directional(convert.LightParams("SUN", (1.0, 0.5, 0.0), math.pi, M), np.zeros(3))
    np.testing.assert_allclose(d, [0, 0, 1])          # a sun shines along its local -Z
    np.testing.assert_allclose(c, [1.0, 0.5, 0.0])    # E / pi
    M[:3, 3] = [0.0, 2.0, 0.0]
    d, c = convert.light_to_directional(convert.LightParams("POINT", (1.0, 1.0, 1.0), 100.0, M), np.zeros(3))
    np.testing.assert_allclose(d, [0, 1, 0])
    np.testing.assert_allclose(c, 100.0 / (4 * math.pi ** 2 * 4.0))
    v = np.array([[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
    f = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4], [1, 0, 5], [2, 1, 5], [3, 2, 5], [0, 3, 5]])
    uv = convert.spherical_face_uvs(v, f)
    assert uv.shape == (8, 3, 2)
    assert float((uv[..., 0].max(1) - uv[..., 0].min(1)).max()) <= 0.5 + 1e-6
    vals = convert.corner_to_vertex(np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(vals[:, 0], [2.0, 5.0, 0.0])


def test_runner_progress_cancel_and_errors() -> None:
    started = threading.Event()

    def job(progress, stop, preview):
        for i in range(1000):
            if stop():
                return "stopped"
            progress(i + 1, 1000, 1.0 / (i + 1))
            preview(i)
            started.set()
            time.sleep(0.001)
        return "done"

    r = Runner(job).start()
    assert started.wait(5)
    assert r.take_preview() is not None
    r.cancel()
    r.join(5)
    st = r.state()
    assert st.done and st.result == "stopped" and st.error is None and 0 < st.step < 1000

    def bad(progress, stop, preview):
        raise ValueError("boom")

    r = Runner(bad).start()
    r.join(5)
    assert r.state().done and r.state().error == "ValueError: boom"


def test_cli_arguments_after_double_dash() -> None:
    argv = ["blender", "--background", "in.blend", "--python", "dibr_blender/batch.py", "--", "fit", "--steps", "5"]
    assert cli.script_args(argv) == ["fit", "--steps", "5"]
    assert cli.script_args(["fit"]) == ["fit"]


def test_cli_bad_input_exit_codes(tmp_path, capsys) -> None:
    img = tmp_path / "ref.png"
    img.write_bytes(b"x")
    blend = tmp_path / "in.blend"
    blend.write_bytes(b"x")
    cases = [
        (["fit", "--blend", str(blend), "--image", str(img)], "nothing to write"),
        (["fit", "--blend", str(tmp_path / "no.blend"), "--image", str(img), "--report", str(tmp_path / "r.json")],
         "blend file not found"),
        (["fit", "--blend", str(blend), "--image", str(tmp_path / "no.png"), "--report", str(tmp_path / "r.json")],
         "reference image not found"),
        (["fit", "--blend", str(blend), "--view", "Cam", "--report", str(tmp_path / "r.json")], "CAMERA=IMAGE"),
        (["fit", "--blend", str(blend), "--report", str(tmp_path / "r.json")], "give --image"),
        (["fit", "--blend", str(blend), "--image", str(img), "--output", str(tmp_path / "out.txt")], "must end with .blend"),
        (["fit", "--blend", str(blend), "--image", str(img), "--steps", "0", "--report", str(tmp_path / "r.json")],
         "--steps must be at least 1"),
        (["fit", "--image", str(img), "--report", str(tmp_path / "r.json")], "--blend"),
        (["frobnicate"], "invalid choice"),
        (["fit", "--blend", str(blend), "--image", str(img), "--resolution", "0", "--report", str(tmp_path / "r.json")],
         "--resolution must be at least 16, got 0"),
        (["fit", "--blend", str(blend), "--image", str(img), "--resolution", "-5", "--report", str(tmp_path / "r.json")],
         "--resolution must be at least 16, got -5"),
        (["fit", "--blend", str(blend), "--image", str(img), "--export", str(tmp_path), "--report",
          str(tmp_path / "r.json")], "must end with .glb"),
        (["fit", "--blend", str(blend), "--image", str(img), "--background-color", "pink", "--report",
          str(tmp_path / "r.json")], "--background-color: a colour must be"),
        (["fit", "--blend", str(blend), "--image", str(img), "--background-tolerance", "0.2", "--report",
          str(tmp_path / "r.json")], "--background-tolerance goes with --background-color"),
    ]
    (tmp_path / "dir.glb").mkdir()
    cases.append((["fit", "--blend", str(blend), "--image", str(img), "--export", str(tmp_path / "dir.glb")],
                  "--export is a folder"))
    for argv, msg in cases:
        assert cli.main(argv) == cli.EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dibr_blender.batch: error: ") and msg in err[0], err
    assert not (tmp_path / "r.json").exists()
    # inside Blender the file is already loaded: --blend is optional
    assert cli.parse(["fit", "--image", str(img), "--report", str(tmp_path / "r.json")], inside_blender=True).blend is None


def test_with_image_aspect_keeps_matching_renders_and_adopts_the_image_otherwise() -> None:
    wide = convert.CameraParams(res_x=1920, res_y=1080, pixel_aspect_x=2.0)
    same, changed = convert.with_image_aspect(wide, 960, 540)
    assert same is wide and not changed
    sq, changed = convert.with_image_aspect(wide, 128, 128)
    assert changed and (sq.res_x, sq.res_y, sq.pixel_aspect_x, sq.lens) == (128, 128, 1.0, wide.lens)
    # AUTO sensor fit: the square image keeps the horizontal field of view of the wide render.
    P_wide = convert.projection_matrix(convert.CameraParams(res_x=1920, res_y=1080))
    assert convert.projection_matrix(sq)[0, 0] == pytest.approx(P_wide[0, 0])
    with pytest.raises(ValueError, match="with_image_aspect"):
        convert.with_image_aspect(wide, 0, 10)


def test_runner_leaves_a_core_to_the_ui_and_restores_threads() -> None:
    """The modal operators' worker runs the fit with the kernels on all cores but one and torch's
    own ops on one thread, and puts the previous settings back afterwards."""
    import torch

    from dibr_blender.jobs.runner import Runner
    from dibr_core import backend

    before = (backend.get_num_threads(), torch.get_num_threads())
    seen = {}

    def job(progress, should_stop, preview):  # type: ignore[no-untyped-def]
        seen["kernels"], seen["torch"] = backend.get_num_threads(), torch.get_num_threads()
        return "ok"

    r = Runner(job).start()
    r.join(30)
    assert r.state().done and r.state().result == "ok", r.state().error
    assert seen == {"kernels": backend.interactive_threads(), "torch": 1}
    assert (backend.get_num_threads(), torch.get_num_threads()) == before
