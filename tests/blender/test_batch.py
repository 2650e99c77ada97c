"""The batch CLI (`python -m dibr_blender.batch`, the same entry point as
`blender --background --python dibr_blender/batch.py -- ...`) on the real bpy module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    return subprocess.run([sys.executable, "-m", "dibr_blender.batch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.blender
@pytest.mark.slow
def test_fit_writes_blend_glb_and_report(default_scene_files, tmp_path) -> None:
    blend, ref = default_scene_files
    out = tmp_path / "out.blend"
    glb = tmp_path / "out.glb"
    rep = tmp_path / "report.json"
    r = _run(["fit", "--blend", blend, "--object", "Sphere", "--image", ref, "--view", f"Camera={ref}",
              "--steps", "40", "--resolution", "64", "--output", str(out), "--export", str(glb),
              "--report", str(rep)], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "dibr fit: step 40/40" in r.stdout
    report = json.loads(rep.read_text())
    assert report["steps"] == 40 and report["seconds"] > 0 and report["final_loss"] == report["final_loss"]
    assert [v["camera"] for v in report["views"]] == ["Camera", "Camera"]
    for v in report["views"]:
        assert set(v) >= {"camera", "image", "silhouette_iou", "color_l1"}
        assert 0.5 < v["silhouette_iou"] <= 1.0
    assert out.stat().st_size > 1000 and glb.read_bytes()[:4] == b"glTF"
    # the written .blend holds the fit as ordinary data
    bpy.ops.wm.open_mainfile(filepath=str(out))
    ob = bpy.data.objects["Sphere"]
    assert "DIB-R Fit" in ob.data.shape_keys.key_blocks and "DIB-R Color" in ob.data.color_attributes


@pytest.mark.blender
def test_bad_input_exits_nonzero_and_writes_nothing(default_scene_files, tmp_path) -> None:
    blend, ref = default_scene_files
    # variants of the default scene: no camera, an empty mesh
    bpy.ops.wm.open_mainfile(filepath=blend)
    bpy.context.scene.camera = None
    for ob in [o for o in bpy.data.objects if o.type == "CAMERA"]:
        bpy.data.objects.remove(ob)
    no_cam = tmp_path / "nocam.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(no_cam), copy=True)
    bpy.ops.wm.open_mainfile(filepath=blend)
    me = bpy.data.meshes.new("void")
    bpy.context.scene.collection.objects.link(bpy.data.objects.new("Void", me))
    empty = tmp_path / "empty.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(empty), copy=True)
    unreadable = tmp_path / "broken.png"
    unreadable.write_bytes(b"\x89PNG broken")
    out = tmp_path / "o.blend"
    rep = tmp_path / "r.json"
    cases = [
        (["--blend", blend, "--image", str(tmp_path / "missing.png")], "reference image not found"),
        (["--blend", str(tmp_path / "missing.blend"), "--image", ref], "blend file not found"),
        (["--blend", str(no_cam), "--object", "Sphere", "--image", ref], "no active camera"),
        (["--blend", str(empty), "--object", "Void", "--image", ref], "has no faces"),
        (["--blend", blend, "--object", "Sphere", "--image", str(unreadable)], "cannot read image"),
        (["--blend", blend, "--object", "Nobody", "--image", ref], "no object named 'Nobody'"),
        (["--blend", blend, "--object", "Sphere", "--view", f"NoCam={ref}"], "no camera named 'NoCam'"),
    ]
    for args, msg in cases:
        r = _run(["fit", *args, "--steps", "2", "--output", str(out), "--report", str(rep)], tmp_path)
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("dibr_blender.batch")]
        assert r.returncode == 2, (args, r.stdout[-1500:], r.stderr[-1500:])
        assert len(lines) == 1 and msg in lines[0], (args, r.stderr)
        assert not out.exists() and not rep.exists(), args


@pytest.mark.blender
def test_blender_python_form_shares_the_entry_point() -> None:
    """`blender --background --python dibr_blender/batch.py -- ...` runs batch.py as a script:
    it must import the package from the checkout and parse only the arguments after `--`."""
    code = ("import runpy, sys\n"
            "sys.argv = ['blender', '--background', '--python', 'dibr_blender/batch.py', '--', 'fit', '--steps', '0',"
            " '--blend', 'x.blend', '--image', 'x.png', '--report', 'r.json']\n"
            "from dibr_blender import cli\n"
            "print(cli.script_args(sys.argv))\n"
            "try:\n"
            "    runpy.run_path('dibr_blender/batch.py', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "['fit', '--steps', '0', '--blend', 'x.blend'" in r.stdout, r.stdout + r.stderr
    assert "exit 2" in r.stdout, r.stdout + r.stderr
    assert "dibr_blender.batch: error: --steps must be at least 1, got 0" in r.stderr, r.stderr
