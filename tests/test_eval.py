"""Evaluation command of the image-to-3D predictor (dibr_core.eval predictor) and its baselines."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator

import numpy as np
import pytest
import torch

from dibr_core.data.dataset import generate, load_item
from dibr_core.data.loaders import list_items
from dibr_core.eval.__main__ import main
from dibr_core.eval.baselines import medoid_index
from dibr_core.eval.predictor import evaluate_mesh

SIZE = 32
CATS = ["chair", "car"]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_data")
    generate(root, "train", per_category=3, categories=CATS, n_views=4, size=SIZE, progress=False)
    generate(root, "test", per_category=2, categories=CATS, n_views=4, size=SIZE, progress=False)
    return root


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> Dict[str, Any]:
    assert main(["predictor", "--split", "test", "--json", "--no-progress", "--points", "800", *args]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out                       # one JSON object alone on stdout
    res: Dict[str, Any] = json.loads(out)
    return res


def _check_block(block: Dict[str, Any]) -> None:
    for k in ("mean_iou", "mean_fscore_0.01", "mean_fscore_0.02", "silhouette_iou_2d", "per_category"):
        assert k in block
    for k in ("mean_iou", "mean_fscore_0.01", "mean_fscore_0.02", "silhouette_iou_2d"):
        assert math.isfinite(block[k]) and 0.0 <= block[k] <= 1.0, (k, block[k])
    assert set(block["per_category"]) == set(CATS)
    for c, d in block["per_category"].items():
        assert d["count"] == 2
        for k in ("iou", "fscore_0.01", "fscore_0.02", "silhouette_iou_2d"):
            assert 0.0 <= d[k] <= 1.0
    assert block["mean_iou"] == pytest.approx(np.mean([d["iou"] for d in block["per_category"].values()]))


def test_baselines_only(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = _run(capsys, "--data", str(tiny))
    assert res["predictor"] is None and res["mean_iou"] is None
    assert set(res["baselines"]) >= {"sphere", "category_mean", "category_medoid"}
    for name in ("sphere", "category_mean", "category_medoid"):
        _check_block(res["baselines"][name])
    # The medoid is one of the category's train shapes.
    for c, f in res["baselines"]["category_medoid"]["medoids"].items():
        assert f.startswith(f"train/{c}/")


def test_voxel_boundary_mesh() -> None:
    from dibr_core.eval.baselines import voxel_boundary_mesh
    g = np.zeros((8, 8, 8), dtype=bool)
    g[2:5, 1:7, 3:6] = True                  # a 3 x 6 x 3 box ...
    g[5, 3, 3] = True                        # ... with a one-voxel bump
    v, f = voxel_boundary_mesh(g)
    # Exposed squares: box 2*(18+9+18) = 90, the bump adds 4 side faces + 1 cap - 0 = 4 more net.
    assert f.shape == (2 * 94, 3) and v.shape == (4 * 94, 3)
    assert float(v.min()) >= -0.5 and float(v.max()) <= 0.5
    tri = v[f]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    # Every triangle faces outwards: stepping against its normal lands in an occupied voxel,
    # stepping along it in an empty one.
    c = tri.mean(dim=1)
    unit = n / n.norm(dim=-1, keepdim=True)
    inner = ((c - 1e-3 * unit + 0.5) * 8).floor().long()
    outer = ((c + 1e-3 * unit + 0.5) * 8).floor().long().clamp(0, 7)
    gt = torch.from_numpy(g)
    assert bool(gt[inner[:, 0], inner[:, 1], inner[:, 2]].all())
    assert not bool(gt[outer[:, 0], outer[:, 1], outer[:, 2]].any())
    # Total area = number of squares * (1/8)^2.
    area = 0.5 * n.norm(dim=-1).sum()
    assert float(area) == pytest.approx(94 / 64)
    e_v, e_f = voxel_boundary_mesh(np.zeros((4, 4, 4), dtype=bool))
    assert e_v.shape == (0, 3) and e_f.shape == (0, 3)


def test_oracle_gt_meshes_score_high(tiny: Path) -> None:
    """The GT mesh evaluated as a prediction scores ~1 (validates frames, voxelisation, normalisation).

    The F-score oracle samples the GT mesh on both sides densely (20,000 points, one shape to keep
    the test fast): at the protocol's ~2,500 points the sampling spacing (~0.025 of the diagonal)
    caps even the exact shape at F@0.01 ~ 0.5 (see dibr_core.eval.predictor's docstring).
    """
    items = list_items(tiny, "test")
    first = True
    for cat in sorted(items):
        for p in items[cat]:
            it = load_item(p)
            v = torch.from_numpy(it["vertices"].astype(np.float32))
            f = torch.from_numpy(it["faces"].astype(np.int64))
            s = evaluate_mesh(v, f, it, n_points=2500, seed=3)            # default: stored GT points
            assert s["iou"] >= 0.95, (p, s)
            assert s["silhouette_iou_2d"] >= 0.9, (p, s)
            assert s["fscore@0.02"] >= 0.75, (p, s)       # interior faces of the GT mesh cost precision
            m = evaluate_mesh(v, f, it, n_points=2500, seed=3, silhouette=False, gt_points="mesh")
            # A shifted copy must score clearly worse (the metrics are not trivially high).
            w = evaluate_mesh(v + torch.tensor([0.1, 0.0, 0.0]), f, it, n_points=2500, seed=3, silhouette=False,
                              gt_points="mesh")
            assert w["iou"] < s["iou"] - 0.1 and w["fscore@0.02"] < m["fscore@0.02"] - 0.2, (p, w, m)
            if first:
                first = False
                d = evaluate_mesh(v, f, it, n_points=20000, seed=3, silhouette=False, gt_points="mesh")
                assert d["iou"] >= 0.95 and d["fscore@0.01"] >= 0.95 and d["fscore@0.02"] >= 0.95, (p, d)


def test_medoid_index() -> None:
    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = a.copy()
    b[2, 0, 0] = True
    c = np.zeros((4, 4, 4), bool)
    c[3:] = True
    assert medoid_index([c, a, b]) in (1, 2)
    assert medoid_index([a]) == 0


def test_with_fresh_checkpoint(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dibr_core.train.predictor import train
    run = tmp_path / "run"
    train(tiny, run, steps=1, batch=2, views=2, threads=1, progress=False, log_every=1)
    capsys.readouterr()
    res = _run(capsys, "--data", str(tiny), "--weights", str(run), "--limit", "2", "--view", "1")
    assert res["predictor"] is not None
    _check_block(res["predictor"])
    _check_block(res)
    assert set(res["predictor"]) >= set(res["baselines"]["sphere"]) - {"description"}
    assert res["conform"] is True and res["repair"] is True
    # An untrained predictor outputs (almost) the template sphere: so does its network, before the
    # conform to the input's silhouette warps it.
    raw = _run(capsys, "--data", str(tiny), "--weights", str(run), "--limit", "2", "--view", "1", "--no-conform")
    assert raw["conform"] is False
    assert raw["predictor"]["mean_iou"] == pytest.approx(raw["baselines"]["sphere"]["mean_iou"], abs=0.05)
    assert res["predictor"]["mean_iou"] != raw["predictor"]["mean_iou"]


def test_reports_record_portable_paths(tmp_path, monkeypatch) -> None:
    from pathlib import Path

    from dibr_core.models.checkpoints import portable_meta, portable_path

    home = tmp_path / "home"
    (home / ".cache" / "dibr" / "data").mkdir(parents=True)
    work = tmp_path / "work"
    (work / "dibr_core" / "weights").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert portable_path(home / ".cache" / "dibr" / "data") == "~/.cache/dibr/data"
    assert portable_path(work / "dibr_core" / "weights") == "dibr_core/weights"
    assert portable_path(tmp_path / "elsewhere" / "gen.pt") == ".../gen.pt"
    assert not portable_path(Path(tmp_path) / "x").startswith(str(tmp_path))
    meta = portable_meta({"args": {"data": str(home / ".cache" / "dibr" / "data"), "steps": 3, "name": "a/b"}})
    assert meta == {"args": {"data": "~/.cache/dibr/data", "steps": 3, "name": "a/b"}}


def test_input_view_fidelity_fields(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--input-view-iou and --refine add the input-view block: the prediction's input-view
    silhouette IoU, and with the refine the refined one, the 3D IoUs and the times."""
    from dibr_core.inference import PREDICTOR_WEIGHTS

    if not PREDICTOR_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    args = ("--data", str(tiny), "--weights", str(PREDICTOR_WEIGHTS), "--limit", "1", "--input-view-limit", "1")
    res = _run(capsys, *args, "--refine", "--refine-steps", "3")
    iv = res["input_view"]
    assert iv["steps"] == 3 and iv["count"] == len(CATS) and set(iv["per_category"]) == set(CATS)
    for k in ("mean_prediction_iou", "mean_refined_iou", "mean_result_iou", "mean_iou_3d_prediction",
              "mean_iou_3d_refined", "mean_iou_3d_result", "mean_refine_fraction"):
        assert 0.0 <= iv[k] <= 1.0, (k, iv[k])
    assert iv["mean_result_iou"] >= iv["mean_prediction_iou"]          # the refine never returns less
    assert iv["mean_iou_3d_prediction"] == pytest.approx(res["mean_iou"])
    assert iv["refine_seconds"]["max"] > 0 and iv["predict_seconds"]["max"] > 0
    res = _run(capsys, *args, "--input-view-iou")
    iv = res["input_view"]
    assert iv["steps"] == 0 and iv["mean_refined_iou"] is None and "refine_seconds" not in iv
    assert iv["mean_result_iou"] == iv["mean_prediction_iou"] and 0.3 < iv["mean_prediction_iou"] <= 1.0
    # the fidelity needs the predictor
    assert main(["predictor", "--data", str(tiny), "--refine", "--json", "--no-progress"]) == 2
    assert "give --weights" in capsys.readouterr().err
