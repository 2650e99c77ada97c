"""Evaluate the predictor on the real-model set (:mod:`dibr_core.data.realmodels`).

Usage::

    python -m dibr_core.eval realmodels --json [--data DIR] [--weights RUN_DIR_or_checkpoint | --shipped]
        [--view 0] [--points 2500] [--seed 0]

Prints ONE JSON object: the predictor's report of :func:`dibr_core.eval.predictor.evaluate` on the
``realmodels`` split (``python -m dibr_core.eval predictor --split realmodels`` prints that part
alone) (3D IoU, F-scores and held-out-view silhouette IoU of what
:func:`dibr_core.inference.predict_mesh` returns, and its baselines), plus

* ``baselines.category_mean_loo``: the leave-one-out real category mean
  (:func:`loo_baseline`): for each model, the mean occupancy of the OTHER real models of its
  category thresholded at 0.5 (:func:`dibr_core.eval.baselines.leave_one_out_means`), scored
  like the procedural ``category_mean`` (3D IoU on the grid, points and silhouettes on its
  exposed-voxel mesh). It uses the category label and the other real shapes;
* ``input_view``: per method, per category, the IoU of the prediction's hard silhouette in the
  INPUT view (the item's camera) against the input's alpha (:func:`input_view_iou`): how well
  the result matches the picture it came from. ``predictor`` is what
  :func:`~dibr_core.inference.predict_mesh` returns (conformed to the input's silhouette in its
  own input view), ``network`` the same without the conform; ``predictor_own_view`` /
  ``network_own_view`` measure them in the view ``predict_mesh`` found and conformed in (the
  protocol camera at the azimuth that matches the picture best: the view Blender shows the
  result from, whereas the item's camera also counts the predicted pose's error in azimuth);
* ``above_loo``: the predictor's mean-of-categories 3D IoU minus the LOO baseline's, and per
  category;
* ``per_model`` (and ``baselines.category_mean_loo.per_model``): each model's 3D IoU and
  input-view IoU (and, for the predictor, the same of the network's mesh before the conform,
  the IoUs in its own view and that view's azimuth), named as in the set's manifest.

The procedural ``category_mean`` / ``category_medoid`` baselines (the mean / medoid procedural
shape of the category scored on the real models) come from the procedural split ``--mean-split``
(default ``train``) under ``--data`` when it holds every category of the set.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from dibr_core.data.dataset import load_item, make_camera
from dibr_core.data.loaders import list_items
from dibr_core.eval.baselines import leave_one_out_means, voxel_boundary_mesh
from dibr_core.eval.metrics3d import iou_3d
from dibr_core.render import Meshes, RenderSettings, render
from dibr_core.voxels import voxelize_mesh

__all__ = ["input_view_iou", "loo_baseline", "evaluate_real", "add_arguments", "run"]

SPLIT = "realmodels"


def input_view_iou(vertices: torch.Tensor, faces: torch.Tensor, item: Dict[str, np.ndarray], view: int) -> float:
    """IoU of the mesh's hard render mask in view ``view`` (the item's camera) vs the item's alpha > 0.5.

    Args: vertices (V, 3) in the object frame; faces (F, 3).
    """
    images = np.asarray(item["images"])
    S = int(images.shape[1])
    vm = torch.from_numpy(np.asarray(item["views"], dtype=np.float32)[[view]]).contiguous()
    with torch.no_grad():
        out = render(Meshes(vertices.detach().float().cpu()[None].contiguous(), faces.detach().long().cpu()),
                     make_camera(vm), lighting=None, settings=RenderSettings(height=S, width=S))
    pred = out.mask[0] > 0.5
    gt = torch.from_numpy(images[view][..., 3] > 127)
    return float((pred & gt).sum()) / max(float((pred | gt).sum()), 1.0)


def _mean(rows: Dict[str, List[float]]) -> Dict[str, Any]:
    per = {c: float(np.mean(v)) for c, v in rows.items() if v}
    return {"mean": float(np.mean(list(per.values()))) if per else float("nan"), "per_category": per}


def loo_baseline(data: Union[str, Path], split: str = SPLIT, view: int = 0, n_points: int = 2500, seed: int = 0,
                 gt_points: str = "stored") -> Optional[Dict[str, Any]]:
    """The leave-one-out category-mean baseline's report (the predictor report's layout, plus
    ``input_view_iou``); None when no category has two items. Item ``j`` (categories sorted, then
    file names) uses the point-sampling seed ``seed * 1_000_003 + 2 j``, as the predictor's
    evaluation does."""
    from dibr_core.eval.predictor import METRIC_KEYS, evaluate_mesh

    items = list_items(data, split)
    per_cat: Dict[str, Dict[str, Any]] = {}
    inview: Dict[str, List[float]] = {}
    per_model: List[Dict[str, Any]] = []
    j = 0
    for cat, paths in items.items():
        loaded = [load_item(p) for p in paths]
        if len(loaded) < 2:
            j += len(paths)
            continue
        grids = leave_one_out_means([it["occupancy"] for it in loaded])
        rows = []
        inview[cat] = []
        for it, grid in zip(loaded, grids):
            v, f = voxel_boundary_mesh(grid)
            rows.append(evaluate_mesh(v, f, it, n_points, seed * 1_000_003 + 2 * j, view, gt_points=gt_points,
                                      occupancy=grid))
            inview[cat].append(input_view_iou(v, f, it, view) if len(f) else 0.0)
            per_model.append({"model": str(it.get("model_name", j)), "category": cat, "iou": rows[-1]["iou"],
                              "input_view_iou": inview[cat][-1]})
            j += 1
        per_cat[cat] = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
        per_cat[cat]["count"] = len(rows)
    if not per_cat:
        return None
    return {
        "mean_iou": float(np.mean([d["iou"] for d in per_cat.values()])),
        "silhouette_iou_2d": float(np.mean([d["silhouette_iou_2d"] for d in per_cat.values()])),
        "input_view_iou": _mean(inview),
        "per_category": {c: {"iou": d["iou"], "fscore_0.01": d["fscore@0.01"], "fscore_0.02": d["fscore@0.02"],
                             "chamfer": d["chamfer"], "silhouette_iou_2d": d["silhouette_iou_2d"],
                             "count": int(d["count"])} for c, d in per_cat.items()},
        "per_model": per_model,
        "description": "per model, the mean occupancy of the OTHER real models of its category thresholded at "
                       "0.5 (leave-one-out); uses the category label",
    }


def evaluate_real(data: Union[str, Path], weights: Optional[Union[str, Path]] = None, view: int = 0,
                  n_points: int = 2500, seed: int = 0, progress: bool = True, split: str = SPLIT,
                  mean_split: str = "train", mean_pool: int = 200) -> Dict[str, Any]:
    """The real-model report (see the module doc)."""
    from dibr_core.eval.predictor import evaluate
    from dibr_core.inference import predict_mesh
    from dibr_core.models.predictor import load_predictor

    if not list_items(data, split):
        raise ValueError(f"evaluate_real(): no items under {Path(data) / split}; build them with "
                         f"python -m dibr_core.data realmodels")
    report = evaluate(data, split, weights, None, view, n_points, seed, mean_pool, progress, train_split=mean_split)
    loo = loo_baseline(data, split, view, n_points, seed)
    report["baselines"]["category_mean_loo"] = loo
    inview: Dict[str, Dict[str, Any]] = {}
    if weights is not None:
        model = load_predictor(weights)
        rows: Dict[str, Dict[str, List[float]]] = {k: {} for k in ("predictor", "predictor_own_view", "network",
                                                                    "network_own_view")}
        per_model: List[Dict[str, Any]] = []
        for cat, paths in list_items(data, split).items():
            for r in rows.values():
                r[cat] = []
            for p in paths:
                it = load_item(p)
                image = np.asarray(it["images"])[view]
                res = int(it["occupancy"].shape[0])
                row: Dict[str, Any] = {"model": str(it.get("model_name", p.stem)), "category": cat}
                pred = predict_mesh(image, model=model)
                assert pred.input_view is not None and pred.network_vertices is not None
                # what predict_mesh returns, and the network's mesh it conformed
                for name, verts in (("", pred.vertices), ("network_", pred.network_vertices)):
                    occ = voxelize_mesh(verts, pred.faces, res)
                    row[name + "iou"] = iou_3d(occ, it["occupancy"])
                    row[name + "input_view_iou"] = input_view_iou(verts, pred.faces, it, view)
                row["own_view_iou"] = pred.input_view.iou
                row["network_own_view_iou"] = pred.network_iou
                row["own_view_azimuth_deg"] = pred.input_view.azimuth_deg
                rows["predictor"][cat].append(row["input_view_iou"])
                rows["predictor_own_view"][cat].append(row["own_view_iou"])
                rows["network"][cat].append(row["network_input_view_iou"])
                rows["network_own_view"][cat].append(row["network_own_view_iou"])
                per_model.append(row)
        for k, r in rows.items():
            inview[k] = _mean(r)
        report["per_model"] = per_model
    if loo is not None:
        inview["category_mean_loo"] = loo["input_view_iou"]
    report["input_view"] = inview
    if weights is not None and loo is not None and report.get("per_category"):
        per = {c: report["per_category"][c]["iou"] - loo["per_category"][c]["iou"]
               for c in loo["per_category"] if c in report["per_category"]}
        report["above_loo"] = {"mean_iou": report["mean_iou"] - loo["mean_iou"], "per_category": per}
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m dibr_core.eval realmodels`` (besides the shared ones; ``--split``
    defaults to ``realmodels`` here)."""
    p.set_defaults(split=SPLIT)
    p.add_argument("--weights", default=None, help="run directory or checkpoint.pt")
    p.add_argument("--shipped", action="store_true", help="evaluate the shipped predictor (dibr_core/weights)")
    p.add_argument("--view", type=int, default=0, help="input view index")
    p.add_argument("--points", type=int, default=2500, help="surface samples per mesh for the F-score")
    p.add_argument("--mean-split", default="train",
                   help="procedural split for the procedural category mean / medoid baselines (default train)")
    p.add_argument("--medoid-pool", type=int, default=200, help="items per category of that split")


def run(a: argparse.Namespace) -> Dict[str, Any]:
    """The report of ``python -m dibr_core.eval realmodels``."""
    weights = a.weights
    if a.shipped:
        from dibr_core.inference import PREDICTOR_WEIGHTS

        weights = PREDICTOR_WEIGHTS
    return evaluate_real(a.data, weights, a.view, a.points, a.seed, a.progress, split=a.split,
                         mean_split=a.mean_split, mean_pool=a.medoid_pool)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: python -m dibr_core.eval realmodels")
