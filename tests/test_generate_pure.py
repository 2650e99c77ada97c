"""Generate, the parts without Blender (dibr_blender/jobs/generate.py and the batch arguments): grid
layout, per-object seeds and categories, sampling through the shipped generator into Blender
arrays, the report and the batch's bad input."""
from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dibr_blender import cli
from dibr_blender.jobs import generate as gen
from dibr_blender.jobs import image_to_3d as i3
from dibr_blender.jobs import meshes


def test_categories_match_the_generator() -> None:
    g = gen.load()
    assert list(i3.CATEGORIES) == g.categories
    assert [item[0] for item in gen.CATEGORY_ITEMS] == [*i3.CATEGORIES, gen.ALL]
    assert gen.load() is g  # cached per file and modification time


def test_grid_shape_and_positions() -> None:
    assert [gen.grid_shape(n) for n in (1, 2, 3, 4, 5, 9, 10, 100)] == [
        (1, 1), (1, 2), (2, 2), (2, 2), (2, 3), (3, 3), (3, 4), (10, 10)]
    np.testing.assert_allclose(gen.grid_positions(1, 2.0, (1, 2, 3)), [[1, 2, 3]])
    p = gen.grid_positions(5, 2.0)  # 3 columns, 2 rows; the last row starts at the left
    np.testing.assert_allclose(p, [[-2, 1, 0], [0, 1, 0], [2, 1, 0], [-2, -1, 0], [0, -1, 0]])
    q = gen.grid_positions(9, 1.5, (10.0, -4.0, 0.5))
    np.testing.assert_allclose(0.5 * (q.min(0) + q.max(0)), [10.0, -4.0, 0.5])  # centred on the origin
    np.testing.assert_allclose(q[:, 2], 0.5)
    d = np.linalg.norm(q[:, None] - q[None], axis=-1) + np.eye(9) * 1e9
    assert d.min() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="count must be at least 1"):
        gen.grid_positions(0, 1.0)
    with pytest.raises(ValueError, match="spacing must be positive"):
        gen.grid_positions(3, 0.0)


def test_seeds_categories_names() -> None:
    assert gen.object_seed(0, 0) == 0 and gen.object_seed(2, 5) == 2 * gen.SEED_STRIDE + 5
    seeds = {gen.object_seed(s, k) for s in range(4) for k in range(gen.MAX_COUNT)}
    assert len(seeds) == 4 * gen.MAX_COUNT
    assert gen.object_category("car", 7) == "car"
    assert [gen.object_category(gen.ALL, k) for k in (0, 1, 13, 14)] == ["airplane", "bench", "airplane", "bench"]
    assert gen.object_name("chair", 0) == "DIB-R chair 1"


def test_check_settings() -> None:
    gen.check_settings("chair", 1, 0)
    gen.check_settings(gen.ALL, gen.MAX_COUNT, gen.MAX_SEED, temperature=0.0, texture_size=0)
    for kwargs, msg in [(dict(category="spaceship"), "unknown category 'spaceship'"),
                        (dict(count=0), "count must be 1 to 100"), (dict(count=101), "count must be 1 to 100"),
                        (dict(seed=-1), "seed must be 0"), (dict(size=0.0), "size must be positive"),
                        (dict(spacing=float("nan")), "spacing must be positive"),
                        (dict(texture_size=-1), "texture size"), (dict(temperature=-0.5), "temperature")]:
        args = {"category": "chair", "count": 1, "seed": 0, **kwargs}
        with pytest.raises(ValueError, match=msg):
            gen.check_settings(args.pop("category"), args.pop("count"), args.pop("seed"), **args)


def test_sample_mesh_feeds_mesh_arrays() -> None:
    """A fake decoder output: texture channels first becomes (T, T, 3) rows top to bottom, then
    the same conversion as Image to 3D."""
    from dibr_core.mesh import icosphere

    v, f, uv = icosphere(2, 0.5)
    tex = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = SimpleNamespace(vertices=torch.stack([v, 2 * v]), colors=torch.rand(2, v.shape[0], 3), texture=tex)
    m = gen.sample_mesh(out, f, uv, 1)
    np.testing.assert_allclose(m.texture, tex[1].permute(1, 2, 0).numpy())
    np.testing.assert_allclose(m.vertices, 2 * v.numpy())
    s = gen.Sample(1, "car", 7, "DIB-R car 2", m)
    b = s.arrays(size=3.0, texture_size=16)
    assert s.native_texture_size == 4 and b.texture is not None and b.texture.shape == (16, 16, 4)
    assert meshes.bbox_diagonal(b.vertices) == pytest.approx(3.0, rel=1e-5)
    ref = meshes.mesh_arrays(SimpleNamespace(vertices=2 * v, faces=f, colors=out.colors[1], face_uvs=uv,
                                         texture=tex[1].permute(1, 2, 0)), 3.0, 16)
    np.testing.assert_allclose(b.vertices, ref.vertices)
    np.testing.assert_allclose(b.texture, ref.texture)
    out.texture = None
    assert gen.sample_mesh(out, f, uv, 0).texture is None


def test_sampling_is_deterministic_and_independent_of_count() -> None:
    five = gen.sample("chair", 5, seed=3)
    two = gen.sample("chair", 2, seed=3)
    again = gen.sample("chair", 5, seed=3)
    other = gen.sample("chair", 2, seed=4)
    assert [s.name for s in five] == [f"DIB-R chair {k}" for k in range(1, 6)]
    assert [s.seed for s in five] == [3 * gen.SEED_STRIDE + k for k in range(5)]
    for a, b in zip(five, again):
        np.testing.assert_array_equal(a.raw.vertices, b.raw.vertices)
    for a, b in zip(five, two):  # the first objects do not depend on the count
        np.testing.assert_array_equal(a.raw.vertices, b.raw.vertices)
        assert a.raw.texture is not None and b.raw.texture is not None
        np.testing.assert_array_equal(a.raw.texture, b.raw.texture)
    assert not np.allclose(five[0].raw.vertices, five[1].raw.vertices)
    assert not np.allclose(five[0].raw.vertices, other[0].raw.vertices)
    m = five[0].raw
    assert m.vertices.shape == (642, 3) and m.faces.shape == (1280, 3) and m.face_uvs.shape == (1280, 3, 2)
    assert m.texture is not None and m.texture.shape[2] == 3 and m.texture.shape[0] == m.texture.shape[1]
    cats = [s.category for s in gen.sample(gen.ALL, 14, seed=0)]
    assert cats == [*i3.CATEGORIES, i3.CATEGORIES[0]]


def test_missing_weights_and_bad_settings(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="generator weights file not found"):
        gen.sample("chair", 1, 0, weights=tmp_path / "none.pt")
    with pytest.raises(ValueError, match="count must be"):
        gen.sample("chair", 0, 0)
    with pytest.raises(ValueError, match="unknown category"):
        gen.sample("spaceship", 1, 0)


def test_report_has_no_absolute_paths() -> None:
    samples = gen.sample("car", 3, seed=1)
    w = gen.weights_info()
    assert w["weights"] == "generator.pt" and w["generator"]["rank"] >= 1
    assert "decoder_config" in w["generator"]
    rep = gen.make_report(category="car", count=3, seed=1, temperature=1.0, size=1.0, spacing=1.5, texture_size=0,
                          samples=samples, object_names=[s.name for s in samples], collection=gen.COLLECTION_NAME,
                          locations=gen.grid_positions(3, 1.5), seconds=0.6, sample_seconds=0.1, weights=w)
    assert rep["command"] == "generate" and rep["objects"] == ["DIB-R car 1", "DIB-R car 2", "DIB-R car 3"]
    assert rep["vertices"] == 642 and rep["faces"] == 1280 and rep["seconds_per_object"] == pytest.approx(0.2)
    assert rep["texture_size"] == rep["native_texture_size"] == samples[0].native_texture_size
    assert rep["object_seeds"] == [gen.SEED_STRIDE + k for k in range(3)]

    def paths(x):
        if isinstance(x, dict):
            return [p for v in x.values() for p in paths(v)]
        if isinstance(x, list):
            return [p for v in x for p in paths(v)]
        return [x] if isinstance(x, str) and os.path.isabs(x) else []

    assert paths(rep) == []
    assert "3 car object(s)" in gen.summary(rep)


def test_cli_generate_bad_input(tmp_path, capsys) -> None:
    out = str(tmp_path / "out.blend")
    base = ["generate", "--category", "chair", "--count", "2", "--seed", "0"]
    cases = [
        (["generate", "--category", "spaceship", "--count", "1", "--seed", "0", "--output", out], "invalid choice"),
        ([*base[:4], "0", "--seed", "0", "--output", out], "count must be 1 to 100"),
        ([*base[:4], "101", "--seed", "0", "--output", out], "count must be 1 to 100"),
        ([*base[:6], "-3", "--output", out], "seed must be 0"),
        ([*base, "--size", "0", "--output", out], "size must be positive"),
        ([*base, "--spacing", "-1", "--output", out], "spacing must be positive"),
        ([*base, "--temperature", "-1", "--output", out], "temperature"),
        ([*base, "--texture-size", "9000", "--output", out], "--texture-size"),
        ([*base, "--report", str(tmp_path / "r.json")], "nothing to write"),
        ([*base, "--export", str(tmp_path / "o.gltf")], "must end with .glb"),
        ([*base, "--output", str(tmp_path / "no" / "out.blend")], "folder does not exist"),
        ([*base, "--weights", str(tmp_path / "none.pt"), "--output", out], "generator weights file not found"),
        ([*base, "--blend", str(tmp_path / "no.blend"), "--output", out], "blend file not found"),
        (["generate", "--category", "chair", "--output", out], "required: --count, --seed"),
    ]
    for argv, msg in cases:
        assert cli.main(argv) == cli.EXIT_BAD_INPUT, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dibr_blender.batch: error: ") and msg in err[0], (argv, err)
    assert not (tmp_path / "out.blend").exists() and not (tmp_path / "r.json").exists()
    args = cli.parse([*base, "--export", str(tmp_path / "o.glb")], inside_blender=False)
    assert (args.count, args.seed, args.texture_size, args.spacing, args.size, args.temperature) == (
        2, 0, 256, 1.5, 1.0, 1.0)
    assert args.weights is None and args.category == "chair"
