"""Single-image 3D predictor (dibr_core.models.predictor) and its training loop (dibr_core.train.predictor)."""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import List

import pytest
import torch

from dibr_core.data.dataset import generate
from dibr_core.data.loaders import ViewDataset
from dibr_core.models import Predictor
from dibr_core.models.predictor import load_predictor
from dibr_core.train.predictor import main, multiview_step_losses, train

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



def test_input_view_weight_adds_the_input_view_iou_loss(tiny_data: Path) -> None:
    """The extra term is the IoU loss of each mesh rendered in its own input camera (i == j),
    checked against renders made one by one, and it enters the total with its weight."""
    import dataclasses

    import numpy as np
    from dibr_core.data.dataset import make_camera
    from dibr_core.losses import iou_loss
    from dibr_core.render import Meshes, RenderSettings, render

    ims, vm = ViewDataset(tiny_data).sample(np.random.default_rng(1), 2, 3)
    torch.manual_seed(0)
    m = Predictor(image_size=SIZE)
    m.eval()
    # View 0 of each object shows a full-frame alpha and its mesh is made large enough to cover
    # every camera's frame; the other meshes are shrunk: the i == j pairs differ from the others.
    ims = ims.clone()
    ims[:, 0, 3] = 1.0
    scale = torch.tensor([4.0, 0.3, 0.3, 4.0, 0.3, 0.3]).view(6, 1, 1)

    class Sized(torch.nn.Module):                      # a distinct size per input image
        def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
            out = m(x)
            return dataclasses.replace(out, vertices=out.vertices * scale)

    base = multiview_step_losses(m, ims, vm, forward=Sized())
    heavy = multiview_step_losses(m, ims, vm, forward=Sized(), input_view_weight=2.5)
    st = RenderSettings(height=SIZE, width=SIZE)
    with torch.no_grad():
        out = Sized()(ims.reshape(6, 4, SIZE, SIZE))
        gt_a = ims.reshape(6, 4, SIZE, SIZE)[:, 3]
        r = render(Meshes(out.vertices, m.faces), make_camera(vm.reshape(6, 4, 4)), colors=out.colors,
                   lighting=None, settings=st)
        own = float(iou_loss(r.alpha, gt_a))
        # Each mesh in the next view's camera, against that view's image: not the input-view term.
        nxt = torch.tensor([1, 2, 0, 4, 5, 3])
        r2 = render(Meshes(out.vertices, m.faces), make_camera(vm.reshape(6, 4, 4)[nxt]), colors=out.colors,
                    lighting=None, settings=st)
        wrong = float(iou_loss(r2.alpha, gt_a[nxt]))
    assert float(heavy["input_iou_loss"]) == pytest.approx(own, abs=1e-5)
    assert abs(wrong - own) > 0.05
    assert float(heavy["loss"] - base["loss"]) == pytest.approx(2.5 * own, abs=1e-5)
    with pytest.raises(ValueError, match="input_view_weight"):
        multiview_step_losses(m, ims, vm, input_view_weight=-1.0)

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
    assert m.color_head is None                       # the texture is the only source of colour


def test_textured_vertex_colors_sample_the_texture() -> None:
    m = Predictor(texture_size=8)
    tex = torch.rand(2, 3, 8, 8)
    cols = m.vertex_colors(tex)
    assert cols.shape == (2, 642, 3)
    # A constant texture gives that constant at every vertex.
    const = m.vertex_colors(torch.full((1, 3, 8, 8), 0.25))
    torch.testing.assert_close(const, torch.full_like(const, 0.25))
    # Away from the seam, a vertex's colour is the bilinear texture value at its UV.
    from dibr_core.texture import sample_texture
    f, c = 5, 0
    v = int(m.faces[f, c])
    uvs = m.face_uvs.reshape(-1, 2)[m.faces.reshape(-1) == v]
    if torch.allclose(uvs, uvs[:1].expand_as(uvs)):
        expect = sample_texture(tex, uvs[:1][None].expand(2, 1, 2).contiguous())[:, 0]
        torch.testing.assert_close(cols[:, v], expect)
    out = m(torch.rand(2, 4, 64, 64))
    assert out.texture is not None
    torch.testing.assert_close(out.colors, m.vertex_colors(out.texture))


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


def test_cosine_schedule() -> None:
    from dibr_core.train.predictor import lr_at
    assert lr_at(0, 100, 1.0, "cosine", 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, "cosine", 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, "cosine", 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, "cosine", 10) == pytest.approx(0.05)
    vals = [lr_at(s, 100, 1.0, "cosine", 10) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    assert lr_at(50, 100, 0.3, "constant", 10) == 0.3
    with pytest.raises(ValueError, match="lr_at"):
        lr_at(0, 10, 1.0, "linear", 0)


def test_torchrun_ddp_two_cpu_processes(tiny_data: Path, tmp_path: Path) -> None:
    """Two gloo processes under torchrun train one model: rank 0 logs and checkpoints, and the
    checkpoint holds both ranks' RNG states (so a resume with the same world size is exact)."""
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dibr_core.train", "predictor", "--data", str(tiny_data), "--out", str(run), "--steps", "4",
           "--batch", "2", "--views", "2", "--threads", "1", "--log-every", "1", "--ckpt-every", "2",
           "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    rows = _rows(run / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]          # one writer, no duplicate rows
    assert res.stdout.count("step 4 loss") == 1                     # only rank 0 prints the summary
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == 4 and state["args"]["world_size"] == 2
    assert len(state["numpy_rngs"]) == 2 and state["numpy_rngs"][0] != state["numpy_rngs"][1]
    model = load_predictor(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_training_device_is_checked() -> None:
    from dibr_core.train.predictor import training_device
    assert training_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"train\(\): device must be 'cpu' or 'cuda', got 'meta'"):
        training_device("meta")
    with pytest.raises(ValueError, match=r"train\(\): device must be 'cpu' or 'cuda', got 'gpu0'"):
        training_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"train\(\): device 'cuda' was asked for, but torch .* sees no CUDA GPU"):
            training_device("cuda")
    else:
        with pytest.raises(ValueError, match=r"sees \d+ CUDA GPU"):
            training_device(f"cuda:{torch.cuda.device_count()}")


def test_cuda_training_matches_cpu_training(tiny_data: Path, tmp_path: Path) -> None:
    """Three steps on the GPU from the same seed follow the CPU run's losses (float32 kernels and
    cuDNN round differently, so only closely), and their checkpoint resumes on the CPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    common = dict(steps=3, batch=2, views=2, lr=1e-3, threads=1, seed=0, log_every=1, ckpt_every=1000,
                  progress=False)
    train(tiny_data, tmp_path / "cpu", device="cpu", **common)
    train(tiny_data, tmp_path / "gpu", device="cuda", **common)
    cpu = [float(r["loss"]) for r in _rows(tmp_path / "cpu" / "metrics.csv")]
    gpu = [float(r["loss"]) for r in _rows(tmp_path / "gpu" / "metrics.csv")]
    assert len(gpu) == 3
    assert gpu[0] == pytest.approx(cpu[0], rel=1e-4)          # same weights, same batch
    assert gpu == pytest.approx(cpu, rel=2e-2)
    state = torch.load(tmp_path / "gpu" / "checkpoint.pt", weights_only=False)
    assert state["args"]["device"] == "cuda"
    assert all(t.device.type == "cpu" for t in state["model"].values())
    res = train(tiny_data, tmp_path / "gpu", resume=True, device="cpu", **{**common, "steps": 4})
    assert res.step == 4 and torch.isfinite(torch.tensor(res.last_loss))


def test_normalize_bbox_output() -> None:
    torch.manual_seed(0)
    m = Predictor(normalize_bbox=True)
    with torch.no_grad():
        for p in m.offset_head.parameters():
            p.normal_(0.0, 0.05)
    v = m(torch.rand(3, 4, 64, 64)).vertices
    lo, hi = v.min(dim=1).values, v.max(dim=1).values
    torch.testing.assert_close((hi - lo).norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(lo + hi, torch.zeros(3, 3), atol=1e-6, rtol=0)
