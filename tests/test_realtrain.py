"""The real furniture training set (Sweet Home 3D catalogues): catalogue parsing, the category
rules, disjointness from the evaluation set, the randomised render variants and a whole build
from a prepared package cache (no downloads)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dibr_core.data.realmodels import MANIFEST, RealModel, prepare_real_model, real_item_arrays
from dibr_core.data.realtrain import (PACKAGE, CatalogueEntry, build, category_for, evaluation_members,
                                      parse_catalogue, training_models)

CATALOGUE = """# comment
id=SweetHome3D#Toy
license=Public domain

name#1=Armchair
model#1=/toy/armchair/armchair.obj
creator#1=Someone

name#2=Desk lamp
model#2=/toy/desklamp/desklamp.obj
creator#2=Caf\\u00e9 maker

name#3=Wall light
model#3=/toy/walllight/walllight.obj

name#4=Bed
model#4=/toy/bed/bed.obj

name#5=Table
model#5=/toy/table/table.obj
modelRotation#5=1 0 0 0 0 1 0 -1 0

name#6=Coffee table
model#6=/toy/coffee/coffee.obj
"""


def test_parse_catalogue_reads_pieces_escapes_and_rotations() -> None:
    e = parse_catalogue(CATALOGUE, "Toy.sh3f")
    assert [x.name for x in e] == ["Armchair", "Desk lamp", "Wall light", "Bed", "Table", "Coffee table"]
    assert e[0].member == "toy/armchair/armchair.obj" and e[0].licence == "Public domain"
    assert e[1].creator == "Caf\u00e9 maker"
    assert [x.rotated for x in e] == [False, False, False, False, True, False]


@pytest.mark.parametrize("name, cat", [("Armchair", "chair"), ("Bar stool", "chair"), ("Desk lamp", "lamp"),
                                       ("Table lamp", "lamp"), ("Corner sofa", "sofa"), ("Futon couch", "sofa"),
                                       ("Piano bench", "bench"), ("Coffee table", "table"), ("Desk", "table"),
                                       ("Wheelchair", None), ("Table fan", None), ("Wall light", None),
                                       ("Workbench", None), ("Tablet", None), ("Bed", None), ("Seat Leon", None)])
def test_category_rules(name: str, cat: object) -> None:
    assert category_for(name) == cat


def test_training_models_never_use_an_evaluation_model() -> None:
    held = evaluation_members()
    assert ("BlendSwap-CC-0.sh3f", "blendswap-cc-0/oakChair/oakChair.obj") in held
    entries = [CatalogueEntry("BlendSwap-CC-0.sh3f", "blendswap-cc-0/oakChair/oakChair.obj", "Oak chair", "", "", False),
               CatalogueEntry("BlendSwap-CC-0.sh3f", "blendswap-cc-0/other/other.obj", "Oak chair", "x", "", False),
               CatalogueEntry("BlendSwap-CC-0.sh3f", "blendswap-cc-0/other/other.obj", "Oak chair", "x", "", False),
               CatalogueEntry("BlendSwap-CC-0.sh3f", "blendswap-cc-0/rot/rot.obj", "Chair", "", "", True)]
    kept = training_models(entries)
    assert [m.name for m, _ in kept] == ["sh3dt_blendswap_cc_0_other"]
    m = kept[0][0]
    assert m.category == "chair" and m.package == PACKAGE and m.path.endswith("BlendSwap-CC-0.sh3f!blendswap-cc-0/other/other.obj")
    assert m.copyright_path == "BlendSwap-CC-0/other/other.obj"
    assert not {m.name for m, _ in kept} & {x.name for x in MANIFEST}


def _box_obj(size: tuple) -> str:
    sx, sy, sz = size
    corners = [(x, y, z) for x in (0, sx) for y in (0, sy) for z in (0, sz)]
    quads = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    return "".join(f"v {x} {y} {z}\n" for x, y, z in corners) + "".join("f " + " ".join(map(str, q)) + "\n"
                                                                        for q in quads)


def test_randomised_variants_differ_and_repeat() -> None:
    from dibr_core.data.dataset import DEFAULT_RANDOMIZATION
    from dibr_core.data.mesh_formats import ModelMesh

    v = np.array([(x, y, z) for x in (0, 2.0) for y in (0, 1.0) for z in (0, 1.0)])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    f = np.array([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    mesh = ModelMesh(v, f, np.zeros((len(f), 3, 2)), np.zeros(len(f), dtype=np.int64), [])
    m = RealModel("box", PACKAGE, "box.obj", "table", "+x", "+y")
    p = prepare_real_model(m, mesh)
    lic = {"licence": "CC0", "copyright": "x"}
    a = real_item_arrays(m, p, "realtrain", 0, lic)
    b = real_item_arrays(m, p, "realtrain", 1, lic, variant=1, randomize=DEFAULT_RANDOMIZATION)
    b2 = real_item_arrays(m, p, "realtrain", 1, lic, variant=1, randomize=DEFAULT_RANDOMIZATION)
    c = real_item_arrays(m, p, "realtrain", 2, lic, variant=2, randomize=DEFAULT_RANDOMIZATION)
    assert not bool(a["randomized"]) and bool(b["randomized"])
    assert a["fov_y_deg"].shape == () and b["fov_y_deg"].shape == (24,)
    assert np.array_equal(b["images"], b2["images"])                       # reproducible
    assert not np.array_equal(b["images"], c["images"])                    # variants differ
    assert not np.allclose(b["views"], a["views"])
    # the geometry truth does not depend on the variant
    assert np.array_equal(a["occupancy_bits"], b["occupancy_bits"])
    assert np.array_equal(a["surface_points"], c["surface_points"])


def test_build_from_a_prepared_cache(tmp_path: Path) -> None:
    from dibr_core.data.dataset import load_item
    from dibr_core.data.loaders import ViewDataset

    cache = tmp_path / "cache"
    deb = cache / f"{PACKAGE}_1.8-1_all.deb"
    deb.parent.mkdir(parents=True)
    deb.write_bytes(b"")
    tree = cache / PACKAGE
    (tree / "usr/share/doc" / PACKAGE).mkdir(parents=True)
    (tree / ".extracted").write_text(deb.name)
    (tree / "usr/share/doc" / PACKAGE / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: packager\nLicense: GPL-2+\n\n"
        "Files: Toy/*\nCopyright: toy makers\nLicense: CC0\n")
    furniture = tree / "usr/share/sweethome3d/furniture"
    furniture.mkdir(parents=True)
    with zipfile.ZipFile(furniture / "Toy.sh3f", "w") as z:
        z.writestr("PluginFurnitureCatalog.properties", CATALOGUE)
        z.writestr("toy/armchair/armchair.obj", _box_obj((1, 1.6, 1)))
        z.writestr("toy/desklamp/desklamp.obj", _box_obj((0.4, 1.5, 0.4)))
        z.writestr("toy/coffee/coffee.obj", _box_obj((2, 0.6, 1)))
    res = build(tmp_path / "data", cache, variants=2, kinds=("furniture",), progress=False)
    assert res["models"] == 3 and res["items"] == 6 and res["skipped"] == {}
    assert res["per_category"] == {"chair": 1, "lamp": 1, "table": 1}
    lic = json.loads((tmp_path / "data/realtrain/licences.json").read_text())
    assert lic["sh3dt_toy_armchair"]["licence"] == "CC0" and lic["sh3dt_toy_armchair"]["copyright"] == "toy makers"
    assert lic["sh3dt_toy_desklamp"]["credit"] == "Caf\u00e9 maker"
    assert lic["sh3dt_toy_coffee"]["items"] == ["realtrain/table/00000.npz", "realtrain/table/00001.npz"]
    credits = (tmp_path / "data/realtrain/credits.md").read_text()
    assert "| lamp | desk lamp | Caf\u00e9 maker | CC0 | toy makers | sweethome3d-furniture: "
    assert "sweethome3d/furniture/Toy.sh3f!toy/desklamp/desklamp.obj |" in credits
    it = load_item(tmp_path / "data/realtrain/lamp/00000.npz")
    v = it["vertices"]
    assert np.ptp(v[:, 1]) > 3 * np.ptp(v[:, 0])                            # y up, as the catalogue
    assert str(it["split"]) == "realtrain" and not bool(it["randomized"])
    assert bool(load_item(tmp_path / "data/realtrain/lamp/00001.npz")["randomized"])
    ds = ViewDataset(tmp_path / "data", "realtrain")                       # the training loader reads it
    assert len(ds) == 6 and ds.fovs is not None and ds.fovs[1].std() > 0
    with pytest.raises(ValueError, match="variants"):
        build(tmp_path / "data", cache, variants=0)
    with pytest.raises(ValueError, match="kinds"):
        build(tmp_path / "data", cache, kinds=("boats",))
    # the vehicles, built alone, replace only their own categories (their package faked here)
    tree = cache / "toy-games"
    (cache / "toy-games_2.0-1_all.deb").write_bytes(b"")
    (tree / "usr/share/doc/toy-games").mkdir(parents=True)
    (tree / ".extracted").write_text("toy-games_2.0-1_all.deb")
    (tree / "usr/share/doc/toy-games/copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: *\nCopyright: game makers\nLicense: GPL-2+\n")
    (tree / "usr/share/games/toy/plane.obj").parent.mkdir(parents=True)
    (tree / "usr/share/games/toy/plane.obj").write_text(_box_obj((3, 0.5, 0.6)))
    plane = RealModel("toyplane", "toy-games", "usr/share/games/toy/plane.obj", "airplane", "+x", "+y")
    import dibr_core.data.realtrain as realtrain

    orig = realtrain.VEHICLES
    try:
        realtrain.VEHICLES = (plane,)
        res = build(tmp_path / "data", cache, variants=1, kinds=("vehicles",), progress=False)
    finally:
        realtrain.VEHICLES = orig
    assert res["per_category"] == {"airplane": 1}
    lic = json.loads((tmp_path / "data/realtrain/licences.json").read_text())
    assert set(lic) == {"sh3dt_toy_armchair", "sh3dt_toy_desklamp", "sh3dt_toy_coffee", "toyplane"}
    assert lic["toyplane"]["licence"] == "GPL-2+" and "catalogue_licence" not in lic["toyplane"]
    assert len(list((tmp_path / "data/realtrain/chair").glob("*.npz"))) == 2          # furniture kept


def test_vehicles_are_valid_and_not_evaluation_files() -> None:
    from dibr_core.data.realmodels import validate_manifest
    from dibr_core.data.realtrain import VEHICLES

    validate_manifest(VEHICLES)
    assert not {m.path for m in VEHICLES} & {m.path for m in MANIFEST}
    assert not {m.name for m in VEHICLES} & {m.name for m in MANIFEST}
    stems = {m.path.rsplit("/", 1)[-1].split(".")[0].lower() for m in MANIFEST}
    # no colour / decal variant of an evaluation file (gl-14b beside gl-14, PilatusB4_26 beside PilatusB4)
    for m in VEHICLES:
        stem = m.path.rsplit("/", 1)[-1].split(".")[0].lower()
        assert not any(stem != e and stem.startswith(e) for e in stems), m.name
