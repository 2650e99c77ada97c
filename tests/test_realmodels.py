"""The real-model evaluation set's pieces, on tiny files the tests write (no downloads): the four
model readers, the frame and category rotation, the outside flood fill, licence lookup in DEP-5
copyright files, the reserved-package refusal, the leave-one-out baseline and a whole build from
a prepared package cache."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dibr_core.data.debian_assets import check_package_allowed, fetch_package, licence_for, parse_copyright
from dibr_core.data.mesh_formats import find_texture, load_3ds, load_ac3d, load_model, load_ms3d_ascii, load_obj
from dibr_core.data.realmodels import (MANIFEST, RealModel, build, canonical_rotation, normalize_to_unit_diagonal,
                                       solid_occupancy, subdivide, validate_manifest)
from dibr_core.eval.baselines import leave_one_out_means, mean_occupancy

# ------------------------------------------------------------------------------------------
# readers

AC = """AC3Db
MATERIAL "red" rgb 1 0 0  amb 0.2 0.2 0.2  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0
MATERIAL "blue" rgb 0 0 1  amb 0.2 0.2 0.2  emis 0 0 0  spec 0.5 0.5 0.5  shi 10  trans 0
OBJECT world
kids 2
OBJECT poly
name "body"
loc 1 0 0
texture "skin.png"
texrep 2 1
numvert 4
0 0 0
1 0 0
1 1 0
0 1 0
numsurf 2
SURF 0x10
mat 0
refs 4
0 0 0
1 0.5 0
2 0.5 1
3 0 1
SURF 0x12
mat 1
refs 2
0 0 0
1 0 0
kids 1
OBJECT poly
name "child"
loc 0 0 5
numvert 3
0 0 0
1 0 0
0 1 0
numsurf 1
SURF 0x0
mat 1
refs 3
0 0 0
1 0 0
2 0 0
kids 0
OBJECT poly
name "flame"
numvert 3
0 0 0
1 0 0
0 1 0
numsurf 1
SURF 0x0
mat 1
refs 3
0 0 0
1 0 0
2 0 0
kids 0
"""


def test_ac3d_reader_flattens_the_hierarchy_and_skips_lines(tmp_path: Path) -> None:
    p = tmp_path / "m.ac"
    p.write_text(AC)
    m = load_ac3d(p, exclude=("FLA*",))
    # quad -> 2 triangles, the line surface is skipped, the child is placed by both locs, the flame dropped
    assert m.faces.shape == (3, 3)
    np.testing.assert_allclose(m.vertices[m.faces[2]], [[1, 0, 5], [2, 0, 5], [1, 1, 5]])
    np.testing.assert_allclose(m.vertices[m.faces[0]], [[1, 0, 0], [2, 0, 0], [2, 1, 0]])
    np.testing.assert_allclose(m.uvs[0], [[0, 0], [1, 0], [1, 1]])           # texrep 2 along u
    mat0 = m.materials[int(m.face_material[0])]
    assert mat0.texture == "skin.png" and np.allclose(mat0.color, [1, 0, 0])
    assert np.allclose(m.materials[int(m.face_material[2])].color, [0, 0, 1])
    assert load_ac3d(p).faces.shape == (4, 3)                                 # with the flame


def test_ac3d_reader_rejects_other_files(tmp_path: Path) -> None:
    p = tmp_path / "x.ac"
    p.write_text("solid x\n")
    with pytest.raises(ValueError, match="load_ac3d"):
        load_ac3d(p)


def test_obj_reader_with_mtl_negative_indices_and_quads(tmp_path: Path) -> None:
    (tmp_path / "m.mtl").write_text("newmtl paint\nKd 0.1 0.2 0.3\nmap_Kd tex.png\n")
    (tmp_path / "m.obj").write_text(
        "mtllib m.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "usemtl paint\nf 1/1 2/2 3/3 4/4\ng smoke\nf -1 -2 -3\n")
    m = load_obj(tmp_path / "m.obj", exclude=("smoke",))
    assert m.faces.shape == (2, 3)
    np.testing.assert_allclose(m.uvs[1], [[0, 0], [1, 1], [0, 1]])
    mat = m.materials[int(m.face_material[0])]
    assert mat.texture == "tex.png" and np.allclose(mat.color, [0.1, 0.2, 0.3])
    full = load_obj(tmp_path / "m.obj")
    assert full.faces.shape == (3, 3)
    np.testing.assert_allclose(full.vertices[full.faces[2]], [[0, 1, 0], [1, 1, 0], [1, 0, 0]])


def test_trigger_vehicle_places_body_and_wheels(tmp_path: Path) -> None:
    (tmp_path / "body.obj").write_text("v 0 0 0\nv 10 0 0\nv 0 10 0\nf 1 2 3\n")
    (tmp_path / "wheel.obj").write_text("v 0 0 0\nv 10 0 0\nv 0 0 10\nf 1 2 3\n")
    (tmp_path / "car.vehicle").write_text(
        '<vehicle><genparams wheelmodel="wheel.obj" wheelscale="0.1" />'
        '<part pos="0, 0, 1" model="body.obj" scale="0.5">'
        '<wheel pos="2, 3, 0" radius="0.5" /><wheel pos="-2, 3, 0" radius="0.5" /></part></vehicle>')
    m = load_model(tmp_path / "car.vehicle")
    assert m.faces.shape == (3, 3)
    np.testing.assert_allclose(m.vertices[m.faces[0]], [[0, 0, 1], [5, 0, 1], [0, 5, 1]])
    np.testing.assert_allclose(m.vertices[m.faces[1]], [[2, 3, 0], [2.5, 3, 0], [2, 3, 0.5]])   # 0.1 * 0.5
    np.testing.assert_allclose(m.vertices[m.faces[2]], [[-2, 3, 0], [-2.5, 3, 0], [-2, 3, 0.5]])  # mirrored


def _chunk(cid: int, payload: bytes) -> bytes:
    return struct.pack("<HI", cid, 6 + len(payload)) + payload


def test_3ds_reader_reads_materials_groups_and_uvs(tmp_path: Path) -> None:
    mat = _chunk(0xAFFF, _chunk(0xA000, b"hull\0") + _chunk(0xA020, _chunk(0x0011, bytes([255, 0, 128])))
                 + _chunk(0xA200, _chunk(0xA300, b"HULL.TGA\0")))
    verts = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype="<f4")
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype="<f4")
    faces = np.array([[0, 1, 2, 7], [0, 2, 3, 7]], dtype="<u2")
    group = _chunk(0x4130, b"hull\0" + struct.pack("<HH", 1, 1))
    tri = _chunk(0x4100, _chunk(0x4110, struct.pack("<H", 4) + verts.tobytes())
                 + _chunk(0x4140, struct.pack("<H", 4) + uvs.tobytes())
                 + _chunk(0x4120, struct.pack("<H", 2) + faces.tobytes() + group))
    obj = _chunk(0x4000, b"boat\0" + tri)
    (tmp_path / "m.3ds").write_bytes(_chunk(0x4D4D, _chunk(0x3D3D, mat + obj)))
    m = load_3ds(tmp_path / "m.3ds")
    assert m.faces.shape == (2, 3)
    np.testing.assert_allclose(m.vertices[m.faces[1]], verts[[0, 2, 3]])
    np.testing.assert_allclose(m.uvs[1], uvs[[0, 2, 3]])
    hull = m.materials[int(m.face_material[1])]
    assert hull.name == "hull" and hull.texture == "HULL.TGA"
    np.testing.assert_allclose(hull.color, [1, 0, 128 / 255])
    assert m.materials[int(m.face_material[0])].name == "default"
    assert load_3ds(tmp_path / "m.3ds", exclude=("BOAT",)).faces.shape == (0, 3)
    (tmp_path / "bad.3ds").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="load_3ds"):
        load_3ds(tmp_path / "bad.3ds")


MS3D = """// MilkShape 3D ASCII

Frames: 1
Frame: 1

Meshes: 2
"hull" 0 0
3
0 0.0 0.0 0.0 0.0 0.0 -1
0 2.0 0.0 0.0 1.0 0.0 -1
0 0.0 3.0 0.0 0.0 1.0 -1
1
0.0 0.0 1.0
1
0 0 1 2 0 0 0 1
"thrust" 0 0
3
0 0.0 0.0 9.0 0.0 0.0 -1
0 1.0 0.0 9.0 0.0 0.0 -1
0 0.0 1.0 9.0 0.0 0.0 -1
1
0.0 0.0 1.0
1
0 0 1 2 0 0 0 1

Materials: 1
"skin"
0.2 0.2 0.2 1.0
0.5 0.6 0.7 1.0
0.0 0.0 0.0 1.0
0.0 0.0 0.0 1.0
0.0
1.0
".\\skin.bmp"
""

Bones: 0
"""


def test_ms3d_ascii_reader(tmp_path: Path) -> None:
    p = tmp_path / "m.txt"
    p.write_text(MS3D)
    m = load_ms3d_ascii(p, exclude=("thrust",))
    assert m.faces.shape == (1, 3)
    np.testing.assert_allclose(m.vertices[m.faces[0]], [[0, 0, 0], [2, 0, 0], [0, 3, 0]])
    np.testing.assert_allclose(m.uvs[0], [[0, 1], [1, 1], [0, 0]])          # v flipped to point up
    mat = m.materials[int(m.face_material[0])]
    assert mat.texture == ".\\skin.bmp" and np.allclose(mat.color, [0.5, 0.6, 0.7])
    (tmp_path / "SKIN.BMP").write_bytes(b"x")
    assert find_texture(tmp_path, mat.texture) == tmp_path / "SKIN.BMP"
    assert load_ms3d_ascii(p).faces.shape == (2, 3)


def test_load_model_names_unknown_suffixes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="load_model.*'.blend'"):
        load_model(tmp_path / "x.blend")


# ------------------------------------------------------------------------------------------
# frame

def test_canonical_rotation_maps_forward_and_up() -> None:
    R = canonical_rotation("-z", "+y")
    np.testing.assert_allclose(R @ [0, 0, -1], [1, 0, 0])
    np.testing.assert_allclose(R @ [0, 1, 0], [0, 1, 0])
    assert np.isclose(np.linalg.det(R), 1.0)
    R2 = canonical_rotation("+y", "+z")                 # z-up files (3DS, Trigger vehicles)
    np.testing.assert_allclose(R2 @ [0, 1, 0], [1, 0, 0])
    np.testing.assert_allclose(R2 @ [0, 0, 1], [0, 1, 0])
    assert np.isclose(np.linalg.det(R2), 1.0)
    with pytest.raises(ValueError, match="different axes"):
        canonical_rotation("+x", "-x")
    with pytest.raises(ValueError, match="axis"):
        canonical_rotation("x", "+y")


def test_normalize_to_unit_diagonal_centres_the_used_vertices() -> None:
    v = np.array([[0, 0, 0], [4, 0, 0], [0, 2, 0], [0, 0, 4], [100, 100, 100]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    out, s, shift = normalize_to_unit_diagonal(v, f)
    used = out[:4]
    np.testing.assert_allclose((used.min(0) + used.max(0)) / 2, 0, atol=1e-12)
    assert np.isclose(np.linalg.norm(used.max(0) - used.min(0)), 1.0)
    np.testing.assert_allclose(out, v * s + shift)


def test_solid_occupancy_fills_a_closed_shell_even_with_a_small_hole() -> None:
    surf = np.zeros((16, 16, 16), dtype=bool)
    surf[3:13, 3:13, 3:13] = True
    surf[4:12, 4:12, 4:12] = False                      # hollow cube shell
    surf[7, 7, 3] = False                               # a one-voxel hole in a wall
    occ, outside = solid_occupancy(surf)
    assert occ[4:12, 4:12, 4:12].all()                  # the inside is not reached through the hole
    assert not occ[7, 7, 3]                             # the hole itself stays a dent
    assert occ.sum() == 10 ** 3 - 1 and outside.sum() == 16 ** 3 - 10 ** 3 + 1
    plane = np.zeros((16, 16, 16), dtype=bool)
    plane[:, :, 8] = True                               # an open sheet stays a sheet
    occ2, _ = solid_occupancy(plane)
    assert np.array_equal(occ2, plane)


def test_subdivide_splits_long_edges_and_keeps_the_area() -> None:
    tri = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=np.float64)
    uvs = np.array([[[0, 0], [1, 0], [0, 1]]], dtype=np.float64)
    t, u, m = subdivide(tri, uvs, np.array([3]), max_edge=0.3)
    assert len(t) == 64 and (m == 3).all()
    area = 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum()
    assert np.isclose(area, 0.5)
    np.testing.assert_allclose(u, t[..., :2])           # uvs follow the positions here


# ------------------------------------------------------------------------------------------
# licences and reserved packages

COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2001-2014 Someone <a@b.c>
License: GPL-2+

Files: data/globalmods/apoc/*
Copyright: Apocalypse mod team
License: CC-BY-SA-3
Comment:
 several people

Files: data/data.zip/sounds/gear.wav
 data/data.zip/textures/x.png
Copyright: kougloff
License: CC0

License: GPL-2+
 This program is free software.
"""


def test_licence_lookup_takes_the_last_matching_stanza() -> None:
    st = parse_copyright(COPYRIGHT)
    assert [s.licence for s in st] == ["GPL-2+", "CC-BY-SA-3", "CC0"]
    assert st[2].files == ("data/data.zip/sounds/gear.wav", "data/data.zip/textures/x.png")
    apoc = licence_for(st, "usr/share/games/scorched3d/data/globalmods/apoc/data/meshes/737ua/737ua.txt")
    assert apoc.licence == "CC-BY-SA-3" and apoc.copyright == "Apocalypse mod team"
    other = licence_for(st, "usr/share/games/scorched3d/data/globalmods/none/data/meshes/f16/f16.txt")
    assert other.licence == "GPL-2+"
    assert licence_for(st, "usr/x/data/data.zip/textures/x.png").licence == "CC0"
    with pytest.raises(ValueError, match="licence_for"):
        licence_for(st[1:], "usr/share/other/file.obj")


@pytest.mark.parametrize("name", ["flightgear", "flightgear-data-all", "fgfs-aircraft-base", "torcs-data",
                                  "torcs", "speed-dreams-data", "Speed-Dreams", "simgear-dev"])
def test_reserved_packages_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        check_package_allowed(name)
    with pytest.raises(ValueError, match="reserved"):
        validate_manifest([RealModel("x", name, "a.ac", "airplane", "+x", "+y")])
    with pytest.raises(ValueError, match="reserved"):
        fetch_package(name, tmp_path)                  # refused before apt is asked
    assert list(tmp_path.iterdir()) == []


def test_the_shipped_manifest_is_valid_and_large_enough() -> None:
    validate_manifest(MANIFEST)
    counts = {}
    for m in MANIFEST:
        counts[m.category] = counts.get(m.category, 0) + 1
        assert check_package_allowed(m.package) == m.package
    assert len(counts) >= 3 and min(counts.values()) >= 5
    with pytest.raises(ValueError, match="twice"):
        validate_manifest([MANIFEST[0], MANIFEST[0]])
    with pytest.raises(ValueError, match="unknown category"):
        validate_manifest([RealModel("x", "crrcsim-data", "a.ac", "spaceship", "+x", "+y")])


# ------------------------------------------------------------------------------------------
# leave-one-out baseline

def test_leave_one_out_means_exclude_the_model_itself() -> None:
    a = np.zeros((4, 4, 4), dtype=bool)
    b, c = a.copy(), a.copy()
    a[0] = True
    b[0] = True
    b[1] = True
    c[1] = True
    loo = leave_one_out_means([a, b, c])
    assert np.array_equal(loo[0], mean_occupancy([b, c]))
    assert loo[0][1].all() and loo[0][0].all()          # b and c: slice 0 in 1 of 2 (>= 0.5), slice 1 in 2
    assert np.array_equal(loo[2], a | b)                # mean of a and b
    assert not loo[1][2:].any()
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_means([a])


# ------------------------------------------------------------------------------------------
# a whole build from a prepared cache (no apt)

def _fake_package(cache: Path, package: str) -> Path:
    deb = cache / f"{package}_1.2-3_all.deb"
    deb.parent.mkdir(parents=True, exist_ok=True)
    deb.write_bytes(b"")
    tree = cache / package
    (tree / "usr/share/doc" / package).mkdir(parents=True)
    (tree / ".extracted").write_text(deb.name)
    (tree / "usr/share/doc" / package / "copyright").write_text(COPYRIGHT)
    return tree


def _box_obj(path: Path, size: tuple) -> None:
    sx, sy, sz = size
    corners = [(x, y, z) for x in (0, sx) for y in (0, sy) for z in (0, sz)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in corners)
                    + "".join("f " + " ".join(map(str, q)) + "\n" for q in quads))


def test_build_writes_items_the_eval_reads_and_licences(tmp_path: Path) -> None:
    from dibr_core.data.dataset import load_item
    from dibr_core.data.loaders import list_items
    from dibr_core.eval.realmodels import input_view_iou, loo_baseline

    tree = _fake_package(tmp_path / "cache", "toy-data")
    models = []
    for k, size in enumerate([(2, 1, 1), (2.2, 1, 1.2), (1.8, 0.8, 1)]):
        rel = f"usr/share/games/toy/data/globalmods/apoc/box{k}.obj"
        _box_obj(tree / rel, size)
        models.append(RealModel(f"box{k}", "toy-data", rel, "car", "+x", "+y", note="a box", credit=f"maker {k}"))
    # a model inside an archive, whose licence the copyright file gives by a source-tree path
    import zipfile

    arch = tree / "usr/share/toy/pack.zip"
    arch.parent.mkdir(parents=True)
    _box_obj(tmp_path / "src/boxes/tall/tall.obj", (1, 3, 1))
    with zipfile.ZipFile(arch, "w") as z:
        z.write(tmp_path / "src/boxes/tall/tall.obj", "boxes/tall/tall.obj")
    models.append(RealModel("tall", "toy-data", "usr/share/toy/pack.zip!boxes/tall/tall.obj", "chair", "+x", "+y",
                            copyright_path="data/data.zip/textures/x.png"))
    res = build(tmp_path / "data", tmp_path / "cache", manifest=models, progress=False)
    assert res["models"] == 4 and res["per_category"] == {"car": 3, "chair": 1}
    lic = json.loads((tmp_path / "data/realmodels/licences.json").read_text())
    assert lic["box1"]["licence"] == "CC-BY-SA-3" and lic["box1"]["version"] == "1.2-3"
    assert lic["box1"]["item"] == "realmodels/car/00001.npz" and lic["box1"]["credit"] == "maker 1"
    assert lic["tall"]["licence"] == "CC0" and lic["tall"]["copyright"] == "kougloff"
    items = list_items(tmp_path / "data", "realmodels")
    assert list(items) == ["car", "chair"] and len(items["car"]) == 3
    tall = load_item(items["chair"][0])["vertices"]
    assert np.ptp(tall[:, 1]) > 2.5 * np.ptp(tall[:, 0])                  # read from the archive, y up
    it = load_item(items["car"][0])
    assert it["images"].shape == (24, 64, 64, 4) and str(it["licence"]) == "CC-BY-SA-3"
    assert str(it["model_name"]) == "box0" and str(it["package"]) == "toy-data"
    v = it["vertices"].astype(np.float64)
    assert np.isclose(np.linalg.norm(v.max(0) - v.min(0)), 1.0, atol=1e-5)
    # a closed box: its occupancy is solid (interior filled), about its volume in voxels
    occ = it["occupancy"]
    ext = (v.max(0) - v.min(0)) * 32
    assert 0.8 * np.prod(ext) < occ.sum() < 1.6 * np.prod(ext + 2)
    # the GT mesh's own silhouette in the input view is the input's alpha
    iou = input_view_iou(torch.from_numpy(v).float(), torch.from_numpy(it["faces"].astype(np.int64)), it, 0)
    assert iou > 0.97
    loo = loo_baseline(tmp_path / "data", "realmodels", n_points=200)
    assert loo is not None and loo["per_category"]["car"]["count"] == 3
    assert 0.5 < loo["mean_iou"] <= 1.0
    # the real-model report: the predictor's evaluation (baselines only here) with the LOO beside it
    from dibr_core.eval.realmodels import evaluate_real

    rep = evaluate_real(tmp_path / "data", n_points=200, progress=False)
    assert rep["baselines"]["category_mean_loo"]["mean_iou"] == pytest.approx(loo["mean_iou"])
    assert rep["baselines"]["sphere"]["count"] == 4 and rep["predictor"] is None
    assert list(loo["per_category"]) == ["car"]                         # one chair: no LOO mean
    assert rep["input_view"]["category_mean_loo"]["per_category"]["car"] > 0.5
    names = [r["model"] for r in rep["baselines"]["category_mean_loo"]["per_model"]]
    assert names == ["box0", "box1", "box2"]
    # with the shipped predictor: predict_mesh's result and its network's mesh, each in the item's
    # camera and in the view predict_mesh conformed in (where the conform never lowers the IoU)
    from dibr_core.inference import PREDICTOR_WEIGHTS

    if PREDICTOR_WEIGHTS.is_file():
        rep = evaluate_real(tmp_path / "data", PREDICTOR_WEIGHTS, n_points=200, progress=False, mean_split="realmodels")
        assert set(rep["input_view"]) == {"predictor", "predictor_own_view", "network", "network_own_view",
                                          "category_mean_loo"}
        rows = rep["per_model"]
        assert [r["model"] for r in rows] == ["box0", "box1", "box2", "tall"]
        for r in rows:
            assert set(r) >= {"iou", "input_view_iou", "network_iou", "network_input_view_iou", "own_view_iou",
                              "network_own_view_iou", "own_view_azimuth_deg"}
            assert r["own_view_iou"] >= r["network_own_view_iou"] and 0.0 < r["own_view_iou"] <= 1.0
        assert rep["per_category"]["car"]["iou"] == pytest.approx(np.mean([r["iou"] for r in rows[:3]]), abs=1e-9)
