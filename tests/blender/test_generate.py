"""Generate on the real bpy module: the operator (objects, materials, textures, colour attribute,
grid at the 3D cursor, determinism, bad input and a failure part way leave the scene unchanged)
and the batch command (`python -m dibr_blender.batch generate`, the same entry point as
`blender --background --python dibr_blender/batch.py -- generate`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender.jobs import generate  # noqa: E402
from dibr_blender.scene import generate as generate_scene  # noqa: E402
from dibr_blender.scene import objects  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
V, F = 642, 1280
COLL = generate.COLLECTION_NAME


def _counts() -> tuple:
    d = bpy.data
    return (len(d.objects), len(d.meshes), len(d.materials), len(d.images), len(d.collections),
            len(bpy.context.scene.collection.children))


def _generated() -> list:
    coll = bpy.data.collections.get(COLL)
    return [] if coll is None else sorted(coll.objects, key=lambda o: o["dibr_index"])


def _base_color_image(ob):
    bsdf = next(n for n in ob.active_material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    link = bsdf.inputs["Base Color"].links[0]
    assert link.from_node.type == "TEX_IMAGE"
    return link.from_node.image


def _co(ob) -> np.ndarray:
    co = np.empty(3 * len(ob.data.vertices), np.float32)
    ob.data.vertices.foreach_get("co", co)
    return co.reshape(-1, 3)


@pytest.mark.blender
def test_operator_adds_a_textured_grid(addon, empty_scene) -> None:
    empty_scene.cursor.location = (1.0, 2.0, 0.5)
    assert bpy.ops.dibr.generate(category="car", count=5, seed=7, texture_size=48, spacing=2.0,
                                 size=1.5) == {"FINISHED"}
    obs = _generated()
    assert [o.name for o in obs] == [f"DIB-R car {k}" for k in range(1, 6)]
    coll = bpy.data.collections[COLL]
    assert coll.name in empty_scene.collection.children
    expected = generate.grid_positions(5, 2.0, (1.0, 2.0, 0.5))
    materials, images = set(), set()
    for k, ob in enumerate(obs):
        me = ob.data
        assert ob.type == "MESH" and len(me.vertices) == V and len(me.polygons) == F
        assert ob["dibr_category"] == "car" and ob["dibr_seed"] == 7 and ob["dibr_index"] == k
        np.testing.assert_allclose(tuple(ob.location), expected[k], atol=1e-6)
        img = _base_color_image(ob)
        assert tuple(img.size) == (48, 48) and img.packed_file is not None and img.name == ob.name + " Texture"
        materials.add(ob.active_material.name)
        images.add(img.name)
        attr = me.color_attributes.get("DIB-R Color")
        assert attr is not None and attr.domain == "POINT" and attr.data_type == "FLOAT_COLOR"
        assert me.uv_layers.active is not None and len(me.uv_layers.active.data) == 3 * F
        co = _co(ob)
        assert np.linalg.norm(co.max(0) - co.min(0)) == pytest.approx(1.5, rel=1e-4)
        assert ob.select_get()
    assert len(materials) == len(images) == 5  # one material and one image per object
    assert bpy.context.view_layer.objects.active == obs[0]
    # the grid is centred on the cursor
    locs = np.array([tuple(o.location) for o in obs])
    np.testing.assert_allclose(0.5 * (locs.min(0) + locs.max(0)), (1.0, 2.0, 0.5), atol=1e-6)
    # a second run reuses the collection; "all" cycles through the categories
    assert bpy.ops.dibr.generate(category="all", count=2, seed=0, texture_size=0) == {"FINISHED"}
    assert len(coll.objects) == 7 and len([c for c in bpy.data.collections if c.name.startswith(COLL)]) == 1
    assert {"DIB-R airplane 1", "DIB-R bench 2"} <= {o.name for o in coll.objects}
    assert not obs[0].select_get()


@pytest.mark.blender
def test_same_seed_same_objects(addon, empty_scene) -> None:
    assert bpy.ops.dibr.generate(category="chair", count=3, seed=11, texture_size=0) == {"FINISHED"}
    first = [_co(o) for o in _generated()]
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.dibr.generate(category="chair", count=2, seed=11, texture_size=0) == {"FINISHED"}
    second = [_co(o) for o in _generated()]
    for a, b in zip(first, second):  # identical, and independent of the count
        np.testing.assert_array_equal(a, b)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.dibr.generate(category="chair", count=2, seed=12, texture_size=0) == {"FINISHED"}
    third = [_co(o) for o in _generated()]
    assert not np.allclose(first[0], third[0]) and not np.allclose(first[1], third[1])


@pytest.mark.blender
def test_bad_input_reports_and_leaves_scene_unchanged(addon, empty_scene, monkeypatch, tmp_path) -> None:
    before = _counts()
    for kwargs, msg in [(dict(count=0), "count must be 1 to 100"), (dict(count=101), "count must be 1 to 100"),
                        (dict(seed=-1), "seed must be 0")]:
        with pytest.raises(RuntimeError, match=msg):
            bpy.ops.dibr.generate(**kwargs)
        assert _counts() == before, kwargs
    with pytest.raises(TypeError, match="spaceship"):
        bpy.ops.dibr.generate(category="spaceship")
    assert _counts() == before
    monkeypatch.setattr(generate, "default_weights", lambda: tmp_path / "generator.pt")
    with pytest.raises(RuntimeError, match="generator weights file not found"):
        bpy.ops.dibr.generate(count=2)
    assert _counts() == before


@pytest.mark.blender
def test_failure_part_way_removes_everything(addon, empty_scene, monkeypatch) -> None:
    real = objects.add_mesh_object
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("adding broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(generate_scene, "add_mesh_object", flaky)
    before = _counts()
    with pytest.raises(RuntimeError, match="adding broke"):
        bpy.ops.dibr.generate(count=4, texture_size=16)
    assert _counts() == before and bpy.data.collections.get(COLL) is None


class _Layout:
    """Records what a panel draws; checks that drawn properties exist (no UI in background mode)."""

    def __init__(self, log: dict) -> None:
        self.log = log

    def column(self, **kwargs):
        return self

    row = column

    def label(self, **kwargs) -> None:
        pass

    def prop(self, data, name: str, **kwargs) -> None:
        assert hasattr(data, name), name
        self.log.setdefault("props", []).append(name)

    def panel(self, idname: str, **kwargs):
        return self, self

    def operator(self, idname: str, **kwargs):
        from types import SimpleNamespace

        self.log["operator"] = (idname, SimpleNamespace())
        return self.log["operator"][1]


@pytest.mark.blender
def test_panel_copies_its_settings_into_the_operator(addon, empty_scene) -> None:
    from types import SimpleNamespace

    from dibr_blender import operators, ui

    s = empty_scene.dibr
    s.gen_category, s.gen_count, s.gen_seed, s.gen_texture_size = "sofa", 9, 4, 64
    log: dict = {}
    ui.DIBR_PT_generate.draw(SimpleNamespace(layout=_Layout(log)), bpy.context)  # type: ignore[arg-type]
    idname, op = log["operator"]
    assert idname == "dibr.generate" and "gen_temperature" in log["props"]
    assert set(vars(op)) == set(operators.DIBR_OT_generate.__annotations__)
    assert (op.category, op.count, op.seed, op.texture_size, op.spacing, op.temperature) == (
        "sofa", 9, 4, 64, 1.5, 1.0)
    assert bpy.ops.dibr.generate(**{**vars(op), "count": 2, "texture_size": 8}) == {"FINISHED"}
    assert [o.name for o in _generated()] == ["DIB-R sofa 1", "DIB-R sofa 2"]


def _batch(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path / "user"))
    return subprocess.run([sys.executable, "-m", "dibr_blender.batch", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.blender
def test_batch_writes_blend_glb_and_report(tmp_path) -> None:
    out, glb, rep = tmp_path / "out.blend", tmp_path / "out.glb", tmp_path / "report.json"
    r = _batch(["generate", "--category", "lamp", "--count", "4", "--seed", "5", "--texture-size", "32",
                "--spacing", "2", "--size", "0.8", "--output", str(out), "--export", str(glb),
                "--report", str(rep)], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "dibr generate: sampled 4/4" in r.stdout and f"dibr generate: wrote {out}" in r.stdout
    report = json.loads(rep.read_text())
    names = [f"DIB-R lamp {k}" for k in range(1, 5)]
    assert report["command"] == "generate" and report["category"] == "lamp" and report["count"] == 4
    assert report["seed"] == 5 and report["objects"] == names and report["texture_size"] == 32
    assert report["seconds"] > 0 and report["seconds_per_object"] > 0
    assert report["weights"] == "generator.pt" and report["generator"]["rank"] >= 1
    assert report["output"] == str(out) and report["export"] == str(glb)
    assert "/" not in json.dumps(report["generator"])
    assert glb.read_bytes()[:4] == b"glTF"
    bpy.ops.wm.open_mainfile(filepath=str(out))
    obs = _generated()
    assert [o.name for o in obs] == names and sorted(o.type for o in bpy.data.objects) == ["MESH"] * 4
    for ob, loc in zip(obs, generate.grid_positions(4, 2.0)):
        assert len(ob.data.vertices) == V and len(ob.data.polygons) == F
        assert tuple(_base_color_image(ob).size) == (32, 32)
        np.testing.assert_allclose(tuple(ob.location), loc, atol=1e-6)


@pytest.mark.blender
def test_batch_bad_category_exits_2_and_writes_nothing(tmp_path) -> None:
    out, glb, rep = tmp_path / "o.blend", tmp_path / "o.glb", tmp_path / "r.json"
    r = _batch(["generate", "--category", "spaceship", "--count", "2", "--seed", "0", "--output", str(out),
                "--export", str(glb), "--report", str(rep)], tmp_path)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("dibr_blender.batch")]
    assert r.returncode == 2, (r.stdout[-1500:], r.stderr[-1500:])
    assert len(lines) == 1 and "invalid choice: 'spaceship'" in lines[0], r.stderr
    assert not out.exists() and not glb.exists() and not rep.exists()


@pytest.mark.blender
def test_blender_python_form_parses_generate() -> None:
    """`blender --background --python dibr_blender/batch.py -- generate ...` runs batch.py as a
    script and parses only the arguments after `--`."""
    code = ("import runpy, sys\n"
            "sys.argv = ['blender', '--background', '--python', 'dibr_blender/batch.py', '--', 'generate',"
            " '--category', 'chair', '--count', '0', '--seed', '1', '--output', 'x.blend']\n"
            "try:\n"
            "    runpy.run_path('dibr_blender/batch.py', run_name='__main__')\n"
            "except SystemExit as e:\n"
            "    print('exit', e.code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "exit 2" in r.stdout, r.stdout + r.stderr
    assert "count must be 1 to 100, got 0" in r.stderr, r.stderr


@pytest.mark.blender
def test_generated_objects_stand_on_the_cursor_plane(addon, empty_scene) -> None:
    """Each object's lowest point is on the 3D cursor's horizontal plane, not half below it."""
    req = generate_scene.Request(category="chair", count=2, seed=3, size=1.0, spacing=2.0, texture_size=16)
    objects, _ = generate_scene.run(empty_scene, (0.0, 0.0, 0.25), req)
    bpy.context.view_layer.update()
    for ob in objects:
        co = np.empty(3 * len(ob.data.vertices), np.float32)
        ob.data.vertices.foreach_get("co", co)
        z = co.reshape(-1, 3)[:, 2] + ob.location.z
        assert float(z.min()) == pytest.approx(0.25, abs=1e-4) and float(z.max()) > 0.4
