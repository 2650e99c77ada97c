"""Procedural ShapeNet-like shapes and the NMR-style dataset generator."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from dibr_core.data import dataset as ds
from dibr_core.data.__main__ import main as cli_main
from dibr_core.data.shapes import (CATEGORIES, box, inside_parts, make_shape, occupancy, shape_bbox, shape_mesh,
                                   surface_points)
from dibr_core.eval.metrics3d import iou_3d
from dibr_core.voxels import voxelize_mesh


@pytest.mark.parametrize("category", CATEGORIES)
def test_deterministic_per_seed(category):
    a, b, c = make_shape(category, 7), make_shape(category, 7), make_shape(category, 8)
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert np.array_equal(p.vertices, q.vertices) and np.array_equal(p.faces, q.faces)
        assert np.array_equal(p.offsets, q.offsets) and np.array_equal(p.color, q.color)
    va, vc = shape_mesh(a)[0], shape_mesh(c)[0]
    assert va.shape != vc.shape or not np.allclose(va, vc)


def _edge_check(faces: np.ndarray) -> None:
    """Closed, consistently oriented 2-manifold: each directed edge once, with its reverse."""
    directed = Counter()
    for f in faces:
        for i in range(3):
            directed[(int(f[i]), int(f[(i + 1) % 3]))] += 1
    assert max(directed.values()) == 1
    for (u, v) in directed:
        assert directed[(v, u)] == 1


@pytest.mark.parametrize("category", CATEGORIES)
def test_parts_closed_convex_outward_and_normalised(category):
    for seed in range(3):
        shape = make_shape(category, seed)
        assert len(shape) >= 2
        for p in shape:
            _edge_check(p.faces)
            v = p.vertices
            a, b, c = v[p.faces[:, 0]], v[p.faces[:, 1]], v[p.faces[:, 2]]
            cross = np.cross(b - a, c - a)
            volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6
            assert volume > 0                                                  # outward winding
            assert np.allclose(cross / np.linalg.norm(cross, axis=1, keepdims=True), p.normals, atol=1e-9)
            assert (v @ p.normals.T - p.offsets[None] <= 1e-9).all()           # convex
            assert (np.abs(p.color) <= 1).all() and p.color.shape == (3,)
        lo, hi = shape_bbox(shape)
        assert np.allclose((lo + hi) / 2, 0, atol=1e-12)
        assert np.linalg.norm(hi - lo) == pytest.approx(1.0)
        assert (np.abs(lo) <= 0.5).all() and (np.abs(hi) <= 0.5).all()
    longest = make_shape(category, 0, normalize="longest")
    lo, hi = shape_bbox(longest)
    assert (hi - lo).max() == pytest.approx(1.0)


@pytest.mark.parametrize("category", CATEGORIES)
def test_occupancy_matches_voxelized_part_meshes(category):
    for seed in range(2):
        shape = make_shape(category, 100 + seed)
        v, f, col = shape_mesh(shape)
        assert col.shape == v.shape and f.max() < v.shape[0]
        occ = occupancy(shape, 32)
        assert occ.shape == (32, 32, 32) and occ.dtype == bool and occ.sum() > 50
        assert iou_3d(voxelize_mesh(v, f, 32), occ) >= 0.95
        # Centre-only: the half-space test and the mesh winding number agree voxel for voxel.
        centres = occupancy(shape, 32, mark_surface=False)
        assert np.array_equal(centres, voxelize_mesh(v, f, 32, mark_surface=False))


def test_occupancy_of_a_box_is_exact():
    # Faces at x, z = +-0.26 and y = +-0.13: off the voxel boundaries (multiples of 1/32).
    shape = [box((0.0, 0.0, 0.0), (0.52, 0.26, 0.52), (1, 0, 0))]
    occ = occupancy(shape, 32, mark_surface=False)
    assert occ.sum() == 16 * 8 * 16
    assert occ[8:24, 12:20, 8:24].all()
    assert occupancy(shape, 32).sum() == 18 * 10 * 18     # + the voxels the faces pass through


@pytest.mark.parametrize("category", CATEGORIES)
def test_surface_points_on_union_surface(category):
    shape = make_shape(category, 3)
    pts = surface_points(shape, 600, np.random.default_rng(0))
    assert pts.shape == (600, 3)
    # Signed "distance" to each convex part: max over its planes (0 on its boundary, < 0 inside).
    s = np.stack([(pts @ p.normals.T - p.offsets[None]).max(axis=1) for p in shape])   # (parts, n)
    assert (np.abs(s).min(axis=0) < 1e-9).all()                 # on some part's boundary
    assert not (s < -1e-6).any()                                 # not inside any other part
    assert not inside_parts(shape, pts, strict=True, tol=1e-6).any()
    again = surface_points(shape, 600, np.random.default_rng(0))
    other = surface_points(shape, 600, np.random.default_rng(1))
    assert np.array_equal(pts, again) and not np.array_equal(pts, other)


def test_seeds_disjoint_across_splits_and_categories():
    seeds = {ds.shape_seed(c, s, i) for c in CATEGORIES for s in ds.SPLITS for i in (0, 1, 2**32 - 1)}
    assert len(seeds) == len(CATEGORIES) * len(ds.SPLITS) * 3
    with pytest.raises(ValueError):
        ds.shape_seed("chair", "dev", 0)
    with pytest.raises(ValueError):
        ds.shape_seed("chair", "train", 2**32)


def test_view_matrices_follow_the_protocol():
    views, az = ds.view_matrices(24)
    assert views.shape == (24, 4, 4) and np.allclose(np.diff(az), 15.0)
    cam = ds.make_camera(views)
    centres = cam.center.double()
    assert torch.allclose(centres.norm(dim=1), torch.full((24,), 2.732, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(centres[:, 1], torch.full((24,), 2.732 * 0.5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(centres[0], torch.tensor([0.0, 2.732 * 0.5, 2.732 * math.cos(math.radians(30))],
                                                   dtype=torch.float64), atol=1e-5)
    assert cam.projection[0, 1, 1] == pytest.approx(1 / math.tan(math.radians(15)), rel=1e-6)


def test_tiny_dataset_generation(tmp_path, capsys):
    stats = ds.generate(tmp_path, "val", 2, ["chair", "car"], n_views=3, progress=False)
    assert stats["shapes"] == 4 and stats["seconds_per_shape"] > 0
    for cat in ("chair", "car"):
        sheet = tmp_path / "val" / f"contact_{cat}.png"
        assert sheet.exists()
        from PIL import Image

        with Image.open(sheet) as im:
            assert im.size == (2 * 64, 64)
        for i in range(2):
            item = ds.load_item(ds.item_path(tmp_path, "val", cat, i))
            img = item["images"]
            assert img.shape == (3, 64, 64, 4) and img.dtype == np.uint8
            alpha = img[..., 3]
            assert set(np.unique(alpha)) <= {0, 255}
            frac = (alpha > 0).mean(axis=(1, 2))
            assert (frac > 0.02).all() and (frac < 0.7).all()
            assert (img[..., :3][alpha == 0] == 0).all()
            assert img[..., :3][alpha > 0].max() > 20                    # lit, not black
            assert item["views"].shape == (3, 4, 4) and item["surface_points"].dtype == np.float16
            assert item["surface_points"].shape == (2048, 3)
            assert int(item["seed"]) == ds.shape_seed(cat, "val", i)
            assert int(item["category_id"]) == CATEGORIES.index(cat) and str(item["category"]) == cat
            shape = make_shape(cat, int(item["seed"]))
            assert np.array_equal(item["occupancy"], occupancy(shape, 32))
            # The stored cameras are the ones used: projected vertices bound the silhouette.
            cam = ds.make_camera(torch.from_numpy(item["views"]))
            verts = torch.from_numpy(item["vertices"])[None].expand(3, -1, -1)
            clip = cam.to_clip(cam.to_camera(verts))
            ndc = clip[..., :2] / clip[..., 3:]
            cols = (ndc[..., 0] + 1) * 32 - 0.5
            rows = (1 - ndc[..., 1]) * 32 - 0.5
            for k in range(3):
                ys, xs = np.nonzero(alpha[k])
                assert xs.min() >= cols[k].min() - 1 and xs.max() <= cols[k].max() + 1
                assert ys.min() >= rows[k].min() - 1 and ys.max() <= rows[k].max() + 1
                assert xs.max() - xs.min() >= 0.7 * float(cols[k].max() - cols[k].min()) - 2
    # Deterministic across runs, and resumable (existing files are kept).
    again = ds.make_item("car", "val", 1, n_views=3)
    stored = ds.load_item(ds.item_path(tmp_path, "val", "car", 1))
    assert np.array_equal(again["images"], stored["images"])
    assert np.array_equal(again["surface_points"], stored["surface_points"])
    assert ds.generate(tmp_path, "val", 2, ["chair", "car"], n_views=3, progress=False)["shapes"] == 0
    # The CLI end to end (1 shape, 1 view).
    assert cli_main(["generate", "--out", str(tmp_path / "cli"), "--per-category", "1", "--split", "test",
                     "--categories", "lamp", "--views", "1"]) == 0
    assert (tmp_path / "cli" / "test" / "lamp" / "00000.npz").exists()
    assert "s per shape" in capsys.readouterr().out


def test_procedural_texture_atlas_and_textured_items():
    from dibr_core.data.shapes import procedural_texture

    shape = make_shape("sofa", ds.shape_seed("sofa", "val", 0))
    tex, uvs, names = procedural_texture(shape, np.random.default_rng(0))
    v, f, col = shape_mesh(shape)
    assert uvs.shape == (f.shape[0], 3, 2) and tex.shape == (18, 18 * len(shape), 3)
    assert (uvs >= 0).all() and (uvs <= 1).all() and len(names) == len(shape)
    # A plain atlas renders (almost) like the flat vertex colours.
    plain, puv, pnames = procedural_texture(shape, np.random.default_rng(0), p_pattern=0.0)
    assert set(pnames) == {"plain"}
    views, _ = ds.view_matrices(2)
    args = (v, f, col, views, np.array([0.0, 1.0, 0.0]), np.full(3, 0.5), np.full(3, 0.5))
    flat = ds.render_views(*args).astype(int)
    textured = ds.render_views(*args, texture=plain, face_uvs=puv).astype(int)
    assert np.array_equal(flat[..., 3], textured[..., 3])
    assert (np.abs(flat - textured).max(axis=-1) > 2).mean() < 0.01
    # Textured items keep geometry, lighting and GT; only the RGB changes.
    a = ds.make_item("sofa", "val", 0, n_views=2)
    b = ds.make_item("sofa", "val", 0, n_views=2, textured=True)
    _, _, names_b = procedural_texture(shape, np.random.default_rng([int(a["seed"]), 2]))
    assert set(names_b) != {"plain"}
    assert np.array_equal(a["images"][..., 3], b["images"][..., 3])
    assert np.array_equal(a["surface_points"], b["surface_points"]) and np.array_equal(a["ambient"], b["ambient"])
    assert not np.array_equal(a["images"], b["images"])
    assert b["texture"].dtype == np.uint8 and b["face_uvs"].shape == (f.shape[0], 3, 2) and "texture" not in a
