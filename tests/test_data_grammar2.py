"""Grammar 2 of the procedural shapes, grammar 1 pinned, and the domain randomisation of training renders."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from dibr_core.data import dataset as ds
from dibr_core.data.grammars import make_shape
from dibr_core.data.loaders import ViewDataset
from dibr_core.data.shapes import (CATEGORIES, PATTERNS, PATTERNS2, inside_parts, occupancy,
                                   procedural_texture, shape_bbox, shape_mesh, surface_points)
from dibr_core.data.shapes2 import VARIANTS, describe
from dibr_core.eval.metrics3d import iou_3d
from dibr_core.render import Meshes, RenderSettings, render
from dibr_core.voxels import voxelize_mesh

# Grammar 1 as shipped (the shapes of the published data set): per category and seed, the part
# count, the vertex count, sum |v| and the last vertex, for seeds 0 and 2**41 + 7 (a test seed).
_G1_PIN = {
    'airplane': [(10, 182, 52.645080793, [0.001146189, -0.07841247, -0.188972856]), (8, 142, 38.439434106, [-0.030868798, -0.07279673, -0.070795755])],
    'bench': [(5, 40, 27.762651358, [-0.400530922, 0.153002653, -0.119106128]), (6, 48, 28.172371505, [-0.40563257, 0.261099765, -0.113237241])],
    'cabinet': [(6, 48, 32.142909905, [-0.238994216, 0.375950744, 0.187444094]), (5, 40, 28.042572082, [-0.281112873, 0.346133017, 0.176474826])],
    'car': [(6, 112, 64.78557961, [-0.27622363, -0.086000504, -0.208112961]), (6, 112, 61.826043936, [-0.281637591, -0.00767888, -0.23126382])],
    'chair': [(6, 80, 43.447732985, [-0.195028762, 0.396496197, -0.209417889]), (6, 48, 25.399240467, [-0.207655512, 0.380766032, -0.2230103])],
    'display': [(4, 32, 16.343488396, [-0.172247277, -0.319070434, 0.056190307]), (4, 32, 16.495476539, [-0.154432559, -0.304848872, 0.104638935])],
    'lamp': [(3, 80, 43.805661542, [-0.019203062, 0.452970371, 0.096540313]), (3, 80, 40.150538129, [-0.018768343, 0.397722211, 0.094354831])],
    'loudspeaker': [(4, 104, 49.581282572, [-0.013224081, 0.220248343, 0.19382716]), (3, 72, 35.944225517, [-0.022975243, 0.089646276, 0.196007957])],
    'rifle': [(5, 48, 13.695765368, [-0.183542994, 0.005671147, 0.015618665]), (5, 48, 13.344556437, [-0.134047048, 0.028081647, 0.015404163])],
    'sofa': [(11, 120, 77.878774472, [-0.393900524, -0.184840003, -0.1382635]), (9, 104, 75.437732142, [-0.350745119, -0.206848263, -0.177775404])],
    'table': [(3, 92, 45.017312404, [-0.023715829, -0.25490138, 0.119227525]), (5, 40, 28.03275653, [-0.241179152, 0.212111676, -0.192887109])],
    'telephone': [(2, 24, 15.979668356, [-0.208358126, 0.372514505, 0.043296124]), (2, 24, 15.48967863, [-0.188256055, 0.383069507, 0.03363984])],
    'watercraft': [(5, 40, 15.293283618, [-0.110531327, 0.20133935, 0.097486639]), (4, 38, 15.524473095, [0.050857306, 0.254693899, 0.003814043])],
}


@pytest.mark.parametrize("category", CATEGORIES)
def test_grammar1_is_pinned(category):
    for seed, (n_parts, n_verts, abs_sum, last) in zip((0, 2 ** 41 + 7), _G1_PIN[category]):
        for shape in (make_shape(category, seed), make_shape(category, seed, grammar=1)):
            v = shape_mesh(shape)[0]
            assert (len(shape), v.shape[0]) == (n_parts, n_verts)
            assert float(np.abs(v).sum()) == pytest.approx(abs_sum, abs=1e-7)
            assert np.allclose(v[-1], last, atol=1e-8)


def test_grammar_argument_is_checked():
    with pytest.raises(ValueError, match="grammar"):
        make_shape("car", 0, grammar=3)


def _edge_check(faces: np.ndarray) -> None:
    directed = Counter((int(f[i]), int(f[(i + 1) % 3])) for f in faces for i in range(3))
    assert max(directed.values()) == 1 and all(directed[(b, a)] == 1 for (a, b) in directed)


@pytest.mark.parametrize("category", CATEGORIES)
def test_grammar2_parts_closed_convex_normalised_and_deterministic(category):
    for seed in range(12):
        shape = make_shape(category, seed, grammar=2)
        assert len(shape) >= 2
        for p in shape:
            _edge_check(p.faces)
            v = p.vertices
            a, b, c = v[p.faces[:, 0]], v[p.faces[:, 1]], v[p.faces[:, 2]]
            assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0          # outward winding
            assert (v @ p.normals.T - p.offsets[None] <= 1e-9).all()               # convex
            assert ((p.color >= 0) & (p.color <= 1)).all()
        lo, hi = shape_bbox(shape)
        assert np.allclose((lo + hi) / 2, 0, atol=1e-12) and np.linalg.norm(hi - lo) == pytest.approx(1.0)
    a, b = make_shape(category, 5, grammar=2), make_shape(category, 5, grammar=2)
    assert all(np.array_equal(p.vertices, q.vertices) and np.array_equal(p.color, q.color) for p, q in zip(a, b))


@pytest.mark.parametrize("category", CATEGORIES)
def test_grammar2_occupancy_and_surface_samples_exact(category):
    shape = make_shape(category, 101, grammar=2)
    v, f, _ = shape_mesh(shape)
    occ = occupancy(shape, 32)
    assert occ.sum() > 20 and iou_3d(voxelize_mesh(v, f, 32), occ) >= 0.95
    assert np.array_equal(occupancy(shape, 32, mark_surface=False), voxelize_mesh(v, f, 32, mark_surface=False))
    pts = surface_points(shape, 500, np.random.default_rng(0))
    s = np.stack([(pts @ p.normals.T - p.offsets[None]).max(axis=1) for p in shape])
    assert (np.abs(s).min(axis=0) < 1e-9).all() and not (s < -1e-6).any()
    assert not inside_parts(shape, pts, strict=True, tol=1e-6).any()


def test_grammar2_differs_from_grammar1():
    for c in CATEGORIES:
        g1, g2 = shape_mesh(make_shape(c, 3))[0], shape_mesh(make_shape(c, 3, grammar=2))[0]
        if c in ("display", "loudspeaker", "telephone"):      # grammar 1's builders, same stream
            assert np.array_equal(g1, g2)
        else:
            assert g1.shape != g2.shape or not np.allclose(g1, g2)


@pytest.mark.parametrize("category", ["airplane", "car", "watercraft", "chair", "sofa", "bench", "table"])
def test_grammar2_draws_every_variant(category):
    seen = {k: set() for k in VARIANTS[category]}
    for seed in range(300):
        for k, val in describe(category, seed).items():
            seen[k].add(val)
    for k, values in VARIANTS[category].items():
        assert seen[k] == set(values), (category, k, set(values) - seen[k])


def test_grammar2_cars_have_four_wheels_in_arches():
    for seed in range(20):
        shape = make_shape("car", seed, grammar=2)
        lo, _ = shape_bbox(shape)
        # Wheels: the 12-sided prisms (24 corners) that reach the ground.
        wheels = [p for p in shape if p.vertices.shape[0] == 24 and p.vertices[:, 1].min() < lo[1] + 1e-9]
        assert len(wheels) == 4
        centres = np.array([(p.vertices.min(0) + p.vertices.max(0)) / 2 for p in wheels])
        assert len({round(x, 6) for x in centres[:, 0]}) == 2 and len({round(z, 6) for z in centres[:, 2]}) == 2
        # In an arch: the body leaves the wheel's upper half free except for the top of the arch.
        others = [p for p in shape if not any(p is w for w in wheels)]
        for w, c in zip(wheels, centres):
            top = c + np.array([0.0, 0.6 * (w.vertices[:, 1].max() - c[1]), 0.0])
            assert not inside_parts(others, top[None]).any()


def test_grammar2_airplane_engines_and_tails_are_parts():
    counts = {}
    for seed in range(80):
        d = describe("airplane", seed)
        counts.setdefault((d["engines"], d["tail"]), []).append(len(make_shape("airplane", seed, grammar=2)))
    # fuselage (1 or 3) + 2 wings + fin(s) + tail planes: pods add parts.
    none = [n for (e, _), ns in counts.items() if e == "none" for n in ns]
    pods = [n for (e, _), ns in counts.items() if e == "underwing" for n in ns]
    assert none and pods and min(pods) >= min(none) + 4


# -- domain randomisation -------------------------------------------------------------------------

def test_random_views_within_ranges_and_seeded():
    r = ds.DEFAULT_RANDOMIZATION
    a = ds.random_views(np.random.default_rng(5), 24, r)
    b = ds.random_views(np.random.default_rng(5), 24, r)
    c = ds.random_views(np.random.default_rng(6), 24, r)
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["views"], c["views"])
    assert ((a["elevation_deg"] >= 15) & (a["elevation_deg"] <= 45)).all()
    assert ((a["fov_y_deg"] >= 22) & (a["fov_y_deg"] <= 40)).all()
    assert np.abs(a["azimuths_deg"] - 15 * np.arange(24)).max() <= 7.5
    zoom = ds.DISTANCE * math.tan(math.radians(15)) / np.tan(np.radians(a["fov_y_deg"]) / 2) / a["distance"]
    assert ((zoom >= 0.85 - 1e-5) & (zoom <= 1.15 + 1e-5)).all()
    cam = ds.make_camera(torch.from_numpy(a["views"]), torch.from_numpy(a["fov_y_deg"]))
    centres = cam.center.double().numpy()
    assert np.allclose(np.linalg.norm(centres, axis=1), a["distance"], rtol=1e-5)
    assert np.allclose(np.degrees(np.arcsin(centres[:, 1] / a["distance"])), a["elevation_deg"], atol=1e-3)
    assert np.allclose(cam.projection[:, 1, 1].numpy(), 1 / np.tan(np.radians(a["fov_y_deg"]) / 2), rtol=1e-5)


def test_randomized_item_ranges_geometry_and_stored_cameras():
    r = ds.DEFAULT_RANDOMIZATION
    plain = ds.make_item("car", "train", 4, n_views=4, textured=True, grammar=2)
    rnd = ds.make_item("car", "train", 4, n_views=4, textured=True, grammar=2, randomize=r)
    again = ds.make_item("car", "train", 4, n_views=4, textured=True, grammar=2, randomize=r)
    assert np.array_equal(rnd["images"], again["images"])
    for k in ("occupancy_bits", "surface_points", "vertices", "faces"):     # geometry and GT unchanged
        assert np.array_equal(plain[k], rnd[k])
    assert int(rnd["grammar"]) == 2 and bool(rnd["randomized"]) and not bool(plain["randomized"])
    assert rnd["fov_y_deg"].shape == (4,) and rnd["projection"].shape == (4, 4, 4)
    assert ((rnd["elevation_deg"] >= 15) & (rnd["elevation_deg"] <= 45)).all()
    assert ((rnd["ambient"] >= 0.2) & (rnd["ambient"] <= 0.7)).all()
    assert ((rnd["light_color"] >= 0.2 - 0.06) & (rnd["light_color"] <= 0.9 + 0.06)).all()
    el = np.degrees(np.arcsin(rnd["light_direction"][1]))
    assert 10 - 1e-3 <= el <= 85 + 1e-3
    # The stored cameras (views + per-view field of view) are those of the images: the GT mesh
    # rendered with them matches the stored alpha, and not with the protocol's 30 degrees.
    views = torch.from_numpy(rnd["views"])
    mesh = Meshes(torch.from_numpy(rnd["vertices"])[None].expand(4, -1, -1).contiguous(),
                  torch.from_numpy(rnd["faces"]).long())
    st = RenderSettings(height=64, width=64)
    gt = torch.from_numpy(rnd["images"][..., 3] > 0)

    def iou(cam):
        m = render(mesh, cam, lighting=None, settings=st).mask > 0.5
        return float((m & gt).sum() / (m | gt).sum())

    right = iou(ds.make_camera(views, torch.from_numpy(rnd["fov_y_deg"])))
    assert right > 0.97
    assert iou(ds.make_camera(views)) < right - 0.02


def test_patterns2_extend_patterns_and_grammar1_textures_unchanged():
    assert PATTERNS2[:len(PATTERNS)] == PATTERNS and len(PATTERNS2) > len(PATTERNS)
    shape = make_shape("sofa", 3)
    a = procedural_texture(shape, np.random.default_rng(0))
    b = procedural_texture(shape, np.random.default_rng(0), 0.5, PATTERNS)
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    names = set()
    for s in range(30):
        names |= set(procedural_texture(make_shape("sofa", s), np.random.default_rng(s), 1.0, PATTERNS2)[2])
    assert names == set(PATTERNS2[1:])
    for s in range(5):
        tex = procedural_texture(make_shape("car", s), np.random.default_rng(s), 1.0, PATTERNS2)[0]
        assert tex.min() >= 0 and tex.max() <= 1


def test_view_dataset_returns_the_fields_of_view(tmp_path: Path):
    ds.generate(tmp_path, "train", 1, ["chair"], n_views=3, progress=False, grammar=2,
                randomize=ds.DEFAULT_RANDOMIZATION)
    ds.generate(tmp_path, "train", 1, ["table"], n_views=3, progress=False)
    item = ds.load_item(ds.item_path(tmp_path, "train", "chair", 0))
    for in_memory in (True, False):
        data = ViewDataset(tmp_path, "train", in_memory=in_memory)
        ims, vm, fov = data.sample_cameras(np.random.default_rng(0), 2, 3)
        ims2, vm2 = data.sample(np.random.default_rng(0), 2, 3)
        assert torch.equal(ims, ims2) and torch.equal(vm, vm2) and fov.shape == (2, 3)
        for b in range(2):
            row = vm[b, 0].numpy()
            match = np.nonzero(np.all(np.isclose(item["views"], row[None]), axis=(1, 2)))[0]
            if match.size:        # the chair's views carry its own fields of view
                order = [int(np.nonzero(np.all(np.isclose(item["views"], vm[b, k].numpy()[None]), axis=(1, 2)))[0][0])
                         for k in range(3)]
                assert np.allclose(fov[b].numpy(), item["fov_y_deg"][order])
            else:                 # the table is a protocol item
                assert torch.allclose(fov[b], torch.full((3,), 30.0))


def test_train_init_starts_from_given_weights(tmp_path: Path):
    from dibr_core.models.predictor import Predictor, load_predictor
    from dibr_core.train.predictor import export_weights, train

    ds.generate(tmp_path / "d", "train", 1, ["chair", "car"], n_views=2, progress=False, grammar=2,
                randomize=ds.DEFAULT_RANDOMIZATION)
    train(tmp_path / "d", tmp_path / "a", steps=1, batch=2, views=2, lr=1e-3, seed=3, progress=False,
          log_every=1, texture_size=8)
    w = export_weights(tmp_path / "a", tmp_path / "a.pt", half=False)
    # lr 0: the fine-tuning run's model is exactly the init weights after its step.
    train(tmp_path / "d", tmp_path / "b", steps=1, batch=2, views=2, lr=0.0, seed=7, progress=False,
          log_every=1, texture_size=8, init=w)
    a, b = load_predictor(w), load_predictor(tmp_path / "b")
    torch.manual_seed(7)
    fresh = Predictor(image_size=64, texture_size=8)          # what run b would have started from
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], v) for k, v in fresh.state_dict().items() if v.is_floating_point())
    with pytest.raises(ValueError, match="model_config"):
        train(tmp_path / "d", tmp_path / "c", steps=1, batch=2, views=2, progress=False, texture_size=16, init=w)


def test_cli_grammar_defaults_and_randomize(tmp_path: Path):
    from dibr_core.data.__main__ import main as cli_main

    base = ["generate", "--out", str(tmp_path), "--per-category", "1", "--categories", "car", "--views", "1"]
    assert cli_main(base + ["--split", "train", "--randomize"]) == 0
    assert cli_main(base + ["--split", "test"]) == 0
    assert cli_main(base + ["--split", "val", "--grammar", "2"]) == 0
    train = ds.load_item(ds.item_path(tmp_path, "train", "car", 0))
    test = ds.load_item(ds.item_path(tmp_path, "test", "car", 0))
    val = ds.load_item(ds.item_path(tmp_path, "val", "car", 0))
    assert (int(train["grammar"]), bool(train["randomized"])) == (2, True)
    assert (int(test["grammar"]), bool(test["randomized"])) == (1, False)
    assert int(val["grammar"]) == 2 and float(test["fov_y_deg"]) == 30.0
    assert np.array_equal(test["vertices"], shape_mesh(make_shape("car", int(test["seed"])))[0].astype(np.float32))
