"""Class-conditional generator (dibr_core.models.generator), its fitting CLI, the render
classifier (dibr_core.train.classifier) and ``python -m dibr_core.eval generator``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dibr_core.data.dataset import generate
from dibr_core.data.shapes import CATEGORIES
from dibr_core.mesh_queries import inverted_faces
from dibr_core.models import Predictor
from dibr_core.models.generator import Generator, load_generator

SIZE = 32
WEIGHTS = Path(__file__).resolve().parent.parent / "dibr_core" / "weights"


@pytest.fixture(scope="module")
def all_cats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two train and two test shapes of every category, 4 views at 32 x 32."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gen_data")
    generate(root, "train", per_category=2, n_views=4, size=SIZE, progress=False)
    generate(root, "test", per_category=2, n_views=4, size=SIZE, progress=False)
    return root


@pytest.fixture(scope="module")
def tiny_predictor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dibr_core.train.predictor import _save_checkpoint

    torch.manual_seed(0)
    m = Predictor(image_size=SIZE, texture_size=8, normalize_bbox=True)
    path = tmp_path_factory.mktemp("pred") / "checkpoint.pt"
    _save_checkpoint(path, m, torch.optim.Adam(m.parameters()), 0, [None], {})
    return path


def _fitted(rank: int = 4) -> Generator:
    torch.manual_seed(0)
    gen = Generator(Predictor(texture_size=8, normalize_bbox=True), ["a", "b"], rank=rank)
    g = torch.Generator().manual_seed(1)
    gen.fit({"a": torch.rand(50, 256, generator=g), "b": torch.rand(50, 256, generator=g) + 1.0})
    return gen.eval()


def test_fit_recovers_mean_and_spread() -> None:
    gen = Generator(Predictor(), ["a"], rank=2)
    g = torch.Generator().manual_seed(0)
    # Codes on a 2-D plane of the 256-D space, std 3 and 1 along two directions.
    e = torch.randn(4000, 2, generator=g) * torch.tensor([3.0, 1.0])
    basis = torch.linalg.qr(torch.randn(256, 2, generator=g))[0]
    mu = torch.rand(256, generator=g) + 5.0
    gen.fit({"a": mu + e @ basis.T})
    torch.testing.assert_close(gen.means[0], mu, atol=0.15, rtol=0)
    torch.testing.assert_close(gen.scales[0], torch.tensor([3.0, 1.0]), atol=0.1, rtol=0)
    # Orthonormal basis spanning the same plane.
    torch.testing.assert_close(gen.bases[0].T @ gen.bases[0], torch.eye(2), atol=1e-5, rtol=0)
    proj = basis @ (basis.T @ gen.bases[0])
    torch.testing.assert_close(proj, gen.bases[0], atol=0.02, rtol=0)
    codes = gen.sample_codes("a", 4000, seed=3)
    torch.testing.assert_close(codes.mean(0), mu, atol=0.2, rtol=0)


@pytest.mark.float_sensitive
def test_sampling_is_deterministic_per_seed() -> None:
    gen = _fitted()
    a = gen.sample("a", 3, seed=5)
    b = gen.sample("a", 3, seed=5)
    c = gen.sample("a", 3, seed=6)
    assert torch.equal(a.vertices, b.vertices) and a.texture is not None and b.texture is not None
    assert torch.equal(a.texture, b.texture)
    assert not torch.equal(a.vertices, c.vertices)
    # Sample i of a batch does not depend on the batch size, up to rounding: the decoder's
    # matmuls may sum in another order for another batch size (MKL picks kernels per shape and
    # per CPU), a relative change of a few float32 ulps per layer; samples differ by ~1e-3.
    one = gen.sample("a", 1, seed=5)
    torch.testing.assert_close(one.vertices[0], a.vertices[0], atol=1e-5, rtol=1e-5)
    assert a.vertices.shape == (3, 642, 3) and a.colors.shape == (3, 642, 3)
    assert (gen.sample_codes("b", 10, seed=0) >= 0).all()           # codes live where ReLU outputs do
    with pytest.raises(ValueError, match="unknown category"):
        gen.sample("c", 1)
    with pytest.raises(ValueError, match="n must be"):
        gen.sample("a", 0)



@pytest.mark.float_sensitive
def test_a_sample_the_repair_cannot_clear_is_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    import dibr_core.models.generator as generator_module
    from dibr_core.mesh_repair import UntangleReport, untangle

    gen = _fitted()
    plain = gen.sample("a", 3, seed=5)
    raw = gen.sample("a", 3, seed=5, repair=False)
    # an untrained decoder gives near-spheres: nothing to repair, so the raw output is kept
    torch.testing.assert_close(plain.vertices, raw.vertices)
    target = raw.vertices[1].clone()
    calls = []

    def failing_on_sample_1(v: torch.Tensor, f: torch.Tensor):  # type: ignore[no-untyped-def]
        out, report = untangle(v, f)
        calls.append(1)
        # Recognise sample 1 up to rounding (the batch of 2 below may decode it through other
        # matmul kernels than the batch of 3); distinct samples differ by ~1e-3.
        if v.shape == target.shape and bool(torch.allclose(v, target, atol=1e-5, rtol=0)):
            return out, UntangleReport(5, 5, 10, 0, 0.0)
        return out, report

    monkeypatch.setattr(generator_module, "untangle", failing_on_sample_1)
    redone = gen.sample("a", 3, seed=5)
    assert len(calls) == 4                                      # three samples + one redraw
    torch.testing.assert_close(redone.vertices[[0, 2]], plain.vertices[[0, 2]])
    assert not torch.equal(redone.vertices[1], plain.vertices[1])
    assert redone.texture is not None and plain.texture is not None
    assert not torch.equal(redone.texture[1], plain.texture[1])          # the whole sample is redrawn
    again = gen.sample("a", 3, seed=5)
    assert torch.equal(again.vertices, redone.vertices)                  # still deterministic
    # the redraw of sample 1 depends on the seed and the index only, not on the batch (it is
    # decoded alone, a batch of one, in both calls: equal bit for bit)
    two = gen.sample("a", 2, seed=5)
    assert torch.equal(two.vertices[1], redone.vertices[1])


def test_distill_repair_moves_only_the_offset_head(monkeypatch: pytest.MonkeyPatch) -> None:
    import dibr_core.mesh_repair as mesh_repair
    from dibr_core.mesh_repair import UntangleReport
    from dibr_core.train.generator import distill_repair

    def squash(v: torch.Tensor, f: torch.Tensor):  # type: ignore[no-untyped-def]
        # stands in for a repair that moves every vertex: flatten the shape along z
        return v * torch.tensor([1.0, 1.0, 0.5]), UntangleReport(1, 0, 1, v.shape[0], 0.1)

    monkeypatch.setattr(mesh_repair, "untangle", squash)
    gen = _fitted()
    before = {k: v.clone() for k, v in gen.decoder.state_dict().items()}
    flags = [p.requires_grad for p in gen.decoder.parameters()]
    stats = distill_repair(gen, per_category=8, epochs=3, lr=1e-3, progress=False)
    assert stats["samples"] == 16 and stats["repaired_samples"] == 16 and stats["epochs"] == 3
    assert stats["loss_after"] < stats["loss_before"]
    after = gen.decoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("offset_head.") for k in changed)
    assert [p.requires_grad for p in gen.decoder.parameters()] == flags
    with pytest.raises(ValueError, match="distill_repair"):
        distill_repair(gen, per_category=0)

def test_save_and_load_round_trip(tmp_path: Path) -> None:
    gen = _fitted()
    state = gen.state_for_saving()
    assert not any(k.startswith("encoder.") for k in state["decoder"])     # type: ignore[union-attr]
    torch.save(state, tmp_path / "g.pt")
    back = load_generator(tmp_path / "g.pt")
    assert back.categories == ["a", "b"]
    torch.testing.assert_close(back.sample("b", 2, seed=1).vertices, gen.sample("b", 2, seed=1).vertices)
    with pytest.raises(FileNotFoundError, match="load_generator"):
        load_generator(tmp_path / "missing.pt")


def test_project_clamps_outliers_only() -> None:
    gen = _fitted(rank=4)
    z_in = gen.sample_codes("a", 1, seed=0, temperature=0.5)
    torch.testing.assert_close(gen.project(z_in, "a"), z_in, atol=1e-5, rtol=0)
    far = gen.means[0] + 50.0 * gen.scales[0, 0] * gen.bases[0, :, 0]
    coeff = (gen.project(far[None], "a") - gen.means[0]) @ gen.bases[0, :, 0] / gen.scales[0, 0]
    assert float(coeff) <= 2.5 + 1e-3


def test_train_generator_cli_and_eval(all_cats: Path, tiny_predictor: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from dibr_core.eval.__main__ import main as eval_main
    from dibr_core.models.classifier import Classifier
    from dibr_core.train.generator import main as gen_main

    run = tmp_path / "gen"
    assert gen_main(["--predictor", str(tiny_predictor), "--data", str(all_cats), "--out", str(run),
                     "--views", "2", "--rank", "3", "--distill-epochs", "1", "--distill-per-category", "3",
                     "--no-progress"]) == 0
    distill = torch.load(run / "generator.pt", weights_only=False)["meta"]["repair_distill"]
    assert distill["epochs"] == 1 and distill["samples"] == 3 * len(CATEGORIES)
    codes = torch.load(run / "codes.pt", weights_only=False)["codes"]
    assert set(codes) == set(CATEGORIES) and all(v.shape == (4, 256) for v in codes.values())
    assert gen_main(["--export", str(run), "--out", str(tmp_path / "g16.pt")]) == 0
    gen = load_generator(tmp_path / "g16.pt")
    assert gen.categories == list(CATEGORIES) and gen.rank == 3
    torch.manual_seed(0)
    clf = Classifier(CATEGORIES)
    torch.save({"model": clf.state_dict(), "categories": list(CATEGORIES)}, tmp_path / "clf.pt")
    capsys.readouterr()
    assert eval_main(["generator", "--json", "--data", str(all_cats), "--weights", str(tmp_path / "g16.pt"),
                    "--classifier", str(tmp_path / "clf.pt"), "--per-category", "2", "--points", "128",
                    "--categories", "chair", "car", "lamp", "--render-views", "0", "2",
                    "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    for block in (res, res["baselines"]["training_data"], res["baselines"]["category_mean"]):
        for k in ("frechet_classifier_distance", "kernel_classifier_distance", "class_accuracy", "coverage",
                  "mmd_chamfer", "diversity_ratio", "valid_fraction"):
            assert isinstance(block[k], float), k
        assert 0.0 <= block["class_accuracy"] <= 1.0 and 0.0 <= block["valid_fraction"] <= 1.0
        assert 0.0 < block["coverage"] <= 1.0
        assert set(block["per_category"]) == {"chair", "car", "lamp"}
    assert res["baselines"]["category_mean"]["diversity_ratio"] == 0.0
    assert res["baselines"]["training_data"]["valid_fraction"] == 1.0
    assert res["valid_fraction"] == 1.0                  # an untrained decoder samples near-spheres
    assert "not FID" in res["feature_note"]
    assert res["seconds_per_object"] > 0


def test_classifier_training_short_run(all_cats: Path, tmp_path: Path) -> None:
    from dibr_core.models.classifier import load_classifier
    from dibr_core.train.classifier import export_classifier, main as clf_main

    assert clf_main(["--data", str(all_cats), "--out", str(tmp_path / "c"), "--steps", "30", "--batch", "16",
                     "--threads", "1", "--no-progress"]) == 0
    rows = (tmp_path / "c" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and len(rows) == 2                # step 30 logged
    export_classifier(tmp_path / "c", tmp_path / "c.pt")
    m = load_classifier(tmp_path / "c.pt")
    x = torch.rand(3, 4, SIZE, SIZE)
    assert m(x).shape == (3, 13) and m.features(x).shape == (3, 128)


@pytest.mark.skipif(not (WEIGHTS / "generator.pt").is_file(), reason="no shipped generator weights")
def test_shipped_generator_samples_are_valid_and_deterministic() -> None:
    gen = load_generator()
    assert gen.categories == list(CATEGORIES)
    distill = gen.meta.get("repair_distill")                 # fitted with stage 3 (see MODEL_CARD.md)
    assert isinstance(distill, dict) and distill["epochs"] > 0 and distill["loss_after"] < distill["loss_before"]
    faces = gen.decoder.faces
    bad = 0
    for c in CATEGORIES:
        out = gen.sample(c, 2, seed=0)
        again = gen.sample(c, 2, seed=0)
        assert torch.equal(out.vertices, again.vertices)
        for v in out.vertices:
            assert torch.isfinite(v).all()
            bad += int(bool(inverted_faces(v, faces).any()))
    assert bad == 0, f"{bad} of 26 repaired samples have inverted faces"
    # the repair is what makes them all valid: the raw decoder still folds some lamps' thin parts
    raw = gen.sample("lamp", 10, seed=0, repair=False)
    assert any(bool(inverted_faces(v, faces).any()) for v in raw.vertices)


def test_sample_arguments_are_checked_by_name() -> None:
    gen = _fitted()
    with pytest.raises(ValueError, match=r"Generator\.sample\(\): temperature must be a finite non-negative number, "
                                         r"got nan"):
        gen.sample("a", 1, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"Generator\.sample\(\): seed must be an int in \[0, 2\*\*64\), "
                                         r"got 18446744073709551616 \(int\)"):
        gen.sample("a", 1, seed=2 ** 64)
    with pytest.raises(ValueError, match=r"Generator\.sample\(\): seed must be an int in \[0, 2\*\*64\), got -1"):
        gen.sample("a", 1, seed=-1)
    with pytest.raises(ValueError, match=r"Generator\.sample\(\): n must be an int >= 1, got 2\.5 \(float\)"):
        gen.sample("a", 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"Generator\.sample_codes\(\): temperature must be a finite non-negative"):
        gen.sample_codes("a", 1, temperature=-1.0)
    # The largest seed works, and numpy integers are ints.
    top = gen.sample_codes("a", 2, seed=2 ** 64 - 1)
    assert top.shape == (2, gen.latent_dim)
    assert torch.equal(gen.sample_codes("a", np.int64(2), seed=np.uint64(7)), gen.sample_codes("a", 2, seed=7))
