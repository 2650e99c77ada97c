"""Single-image 3D predictor (dibr_core.models.predictor) and its training loop (dibr_core.train_predictor)."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import List

import pytest
import torch

from dibr_core.data.dataset import generate
from dibr_core.models import Predictor
from dibr_core.train_predictor import ViewDataset, load_predictor, main, multiview_step_losses, train

SIZE = 32      # small renders keep the training tests fast; the model and loader take any multiple of 16


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pred_data")
    generate(root, "train", per_category=2, categories=["chair", "car"], n_views=4, size=SIZE, progress=False)
    return root


def _rows(path: Path) -> List[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_output_shapes_and_ranges() -> None:
    torch.manual_seed(0)
    m = Predictor()
    assert m.faces.shape == (1280, 3) and m.face_uvs.shape == (1280, 3, 2) and m.template.shape == (642, 3)
    out = m(torch.rand(3, 4, 64, 64))
    assert out.vertices.shape == out.colors.shape == out.offsets.shape == (3, 642, 3)
    assert out.texture is None
    assert torch.all(out.colors > 0) and torch.all(out.colors < 1)
    assert out.offsets.abs().max() <= m.offset_scale
    torch.testing.assert_close(out.vertices, m.template + out.offsets)
    # Untrained: close to the template sphere (radius 0.38) in mid grey.
    r = out.vertices.norm(dim=-1)
    assert torch.allclose(r, torch.full_like(r, 0.38), atol=0.05)
    assert torch.allclose(out.colors, torch.full_like(out.colors, 0.5), atol=0.05)
    with pytest.raises(ValueError):
        m(torch.rand(2, 3, 64, 64))


def test_texture_head() -> None:
    m = Predictor(texture_size=32)
    tex = m(torch.rand(2, 4, 64, 64)).texture
    assert tex is not None and tex.shape == (2, 3, 32, 32)
    assert torch.all(tex > 0) and torch.all(tex < 1)


def test_deterministic_init_and_output() -> None:
    x = torch.rand(2, 4, 64, 64)
    torch.manual_seed(7)
    a = Predictor()
    torch.manual_seed(7)
    b = Predictor()
    torch.manual_seed(8)
    c = Predictor()
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.offset_head[-1].weight, c.offset_head[-1].weight)
    assert torch.equal(a(x).vertices, b(x).vertices)


def test_inference_time() -> None:
    old = torch.get_num_threads()
    torch.set_num_threads(1)      # the test machine is shared: 1 thread gives stable numbers
    torch.manual_seed(0)
    m = Predictor().eval()
    x = torch.rand(1, 4, 64, 64)
    with torch.no_grad():
        for _ in range(3):
            m(x)
        n = 20
        t = time.perf_counter()
        for _ in range(n):
            m(x)
        ms = (time.perf_counter() - t) / n * 1000
    torch.set_num_threads(old)
    print(f"\npredictor inference: {ms:.2f} ms/image (1 thread)")
    assert ms < 200


def test_multiview_losses_gradients(tiny_data: Path) -> None:
    ds = ViewDataset(tiny_data)
    assert len(ds) == 4 and ds.images.shape == (4, 4, SIZE, SIZE, 4)
    import numpy as np
    ims, vm = ds.sample(np.random.default_rng(0), 2, 2)
    assert ims.shape == (2, 2, 4, SIZE, SIZE) and vm.shape == (2, 2, 4, 4)
    assert 0 <= float(ims.min()) and float(ims.max()) <= 1
    torch.manual_seed(0)
    m = Predictor(image_size=SIZE)
    losses = multiview_step_losses(m, ims, vm)
    assert set(losses) >= {"loss", "iou_loss", "color_l1", "lap", "flat", "iou"}
    assert 0 < float(losses["iou"]) < 1 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    g = m.offset_head[-1].weight.grad
    assert g is not None and float(g.abs().sum()) > 0


def test_streaming_loader_matches_in_memory(tiny_data: Path) -> None:
    import numpy as np
    a = ViewDataset(tiny_data, in_memory=True)
    b = ViewDataset(tiny_data, in_memory=False)
    assert b.images is None and b.image_size == SIZE and b.n_views == 4
    ia, va = a.sample(np.random.default_rng(3), 3, 2)
    ib, vb = b.sample(np.random.default_rng(3), 3, 2)
    assert torch.equal(ia, ib) and torch.equal(va, vb)


def test_texture_head_trains(tiny_data: Path) -> None:
    import numpy as np
    ims, vm = ViewDataset(tiny_data).sample(np.random.default_rng(0), 2, 2)
    torch.manual_seed(0)
    m = Predictor(image_size=SIZE, texture_size=16)
    losses = multiview_step_losses(m, ims, vm)
    losses["loss"].backward()
    assert m.texture_head is not None
    g = m.texture_head[-1].weight.grad
    assert g is not None and float(g.abs().sum()) > 0
    assert m.color_head[-1].weight.grad is None       # the texture replaces the vertex colours


def test_training_lowers_loss(tiny_data: Path, tmp_path: Path) -> None:
    res = train(tiny_data, tmp_path / "run", steps=30, batch=2, views=2, lr=1e-3, threads=1, seed=0,
                log_every=1, ckpt_every=1000, progress=False)
    print(f"\ntraining: {res.seconds_per_step * 1000:.0f} ms/step (batch 2, 2 views, {SIZE}x{SIZE})")
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 31))
    loss = [float(r["loss"]) for r in rows]
    first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
    print(f"loss first5 {first:.4f} last5 {last:.4f}")
    assert last < first
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0
    model = load_predictor(tmp_path / "run")
    assert model.image_size == SIZE and not model.training
    with torch.no_grad():
        assert model(torch.rand(1, 4, SIZE, SIZE)).vertices.shape == (1, 642, 3)


def test_checkpoint_resume_continues(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    common = ["--data", str(tiny_data), "--out", str(run), "--batch", "2", "--views", "2", "--threads", "1",
              "--log-every", "1", "--ckpt-every", "3", "--no-progress", "--lr", "1e-3"]
    assert main(common + ["--steps", "3"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3
    assert main(common + ["--steps", "5", "--resume"]) == 0
    rows = _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 5
    # Exact continuation: 3 + resume to 5 equals 5 steps in one go.
    straight = tmp_path / "straight"
    one = [a if a != str(run) else str(straight) for a in common]
    assert main(one + ["--steps", "5"]) == 0
    resumed = _rows(run / "metrics.csv")
    ref = _rows(straight / "metrics.csv")
    for a, b in zip(resumed, ref):
        assert a["loss"] == b["loss"], (a, b)
