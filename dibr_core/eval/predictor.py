"""Evaluate the single-image 3D predictor (and simple baselines) on a dataset split.

Usage::

    python -m dibr_core.eval predictor --split test --json [--data DIR] [--weights RUN_DIR_or_checkpoint]
        [--limit N] [--view 0] [--points 2500] [--seed 0] [--no-repair] [--no-conform]
        [--input-view-iou [--refine] [--input-view-limit N] [--refine-steps N]]

Prints ONE JSON object on stdout (progress goes to stderr). For every method (the predictor when
``--weights`` is given, else ``"predictor": null``, and the baselines) and every test item, the
input is view ``--view`` of the item and the metrics are (docs dibr-algorithm.md section 8,
conventions of :mod:`dibr_core.eval.metrics3d`):

* ``iou``: 3D IoU at 32^3 between :func:`~dibr_core.voxels.voxelize_mesh` of the predicted
  mesh and the item's stored ground-truth occupancy. Both live in the dataset's canonical object
  frame: the predictor predicts in that frame (its meshes are rendered with the dataset's own
  view matrices during training), so no re-centring or re-scaling is applied.
* ``fscore@0.01`` / ``fscore@0.02`` (and ``chamfer``): ``--points`` area samples
  (:func:`~dibr_core.eval.metrics3d.sample_surface`) of the predicted mesh against the GT
  points, both mapped by :func:`~dibr_core.eval.metrics3d.normalize_unit_diagonal` with the
  *GT mesh's* bounding box (= the union's), Euclidean thresholds. GT points (``--gt-points``): by default the item's
  stored ``surface_points`` (2048 samples of the union's outer surface); ``mesh`` samples the
  stored GT mesh instead, whose overlapping parts keep their interior faces (about half of its
  area), which a predictor of the outer surface cannot match. The sampling RNG is seeded per
  item (``--seed``), identical for every method.
  Sampling ceiling: with ~2,000-2,500 points per side the mean spacing is ~0.02-0.03 of the
  diagonal, so even the exact surface scores only about 0.4-0.6 at tau = 0.01 (about 0.9 at
  0.02); compare methods with each other, not with 1.
* The predicted mesh is :func:`dibr_core.inference.predict_mesh` called on the item's input
  view (the stored uint8 RGBA image), so the eval measures what users get, framing included
  (:func:`dibr_core.inference.prepare_image`, which passes a data-set render through unchanged
  unless its object lies outside the training renders' size and position ranges): the decoder's
  output with its inside-out pockets removed (:func:`dibr_core.mesh_repair.untangle`) and
  conformed to the input's silhouette in its input view
  (:func:`dibr_core.conform.conform_silhouette`); ``--no-conform`` measures the mesh before the
  conform (the network's), ``--no-repair`` also before the repair (the raw decoder output).
* ``silhouette_iou_2d``: the predicted mesh rendered (hard coverage mask, the dataset's
  cameras) into every view of the item except the input view, IoU against the GT alpha
  (> 0.5), averaged over those views.

Aggregation: per category the mean over its items; ``mean_*`` are unweighted means of the
per-category means (the paper's protocol).

Baselines:

* ``sphere``: the predictor's template icosphere (level 3, radius 0.38 or the loaded model's)
  for every input.
* ``category_mean``: per category, the mean of the train-split occupancy grids (at most
  ``--medoid-pool`` items per category, sorted by file name) thresholded at 0.5; its 3D IoU is
  taken on that grid directly, its points and silhouettes on the grid's boundary mesh (the
  exposed voxel faces). It is predicted for every input of that category.
* ``category_medoid``: per category, the train shape (same pool) whose occupancy has the highest
  mean 3D IoU to the others; its GT mesh is predicted for every input of that category.

Both category baselines use the category label (oracle information the predictor does not get)
and need the train split; without one they are ``null``.

Input-view fidelity (``--input-view-iou``, with ``--weights``): on the first
``--input-view-limit`` items per category, the predicted mesh's silhouette in its input view
(:func:`dibr_core.inference.match_input_view`: the protocol camera that sees it as the picture
shows it) against the framed input mask, at the refine's resolution
(:data:`~dibr_core.inference.REFINE_RESOLUTION`); with ``--refine`` also after the Image to 3D
refine (:func:`dibr_core.inference.refine_prediction` with its defaults, or ``--refine-steps``),
with the 3D IoU of what the refine returns against the prediction's, and the time of
``predict_mesh`` and of the refine (wall clock, this process's torch threads). Reported under
``"input_view"``: per-category and mean-of-categories values, as above.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from dibr_core.data.dataset import load_item, make_camera
from dibr_core.data.loaders import list_items
from dibr_core.eval.baselines import Mesh, mean_occupancy, medoid_index, voxel_boundary_mesh
from dibr_core.eval.metrics3d import chamfer_and_fscore, iou_3d, normalize_unit_diagonal, sample_surface
from dibr_core.inference import REFINE_RESOLUTION, REFINE_STEPS, PredictedMesh, predict_mesh, refine_prediction
from dibr_core.models.checkpoints import portable_path
from dibr_core.render import Meshes, RenderSettings, render
from dibr_core.voxels import voxelize_mesh

__all__ = ["THRESHOLDS", "evaluate_mesh", "evaluate", "add_arguments", "run"]

THRESHOLDS: Tuple[float, float] = (0.01, 0.02)
METRIC_KEYS = ["iou"] + [f"fscore@{t:g}" for t in THRESHOLDS] + ["chamfer", "silhouette_iou_2d"]


def _gt_mesh(item: Dict[str, np.ndarray]) -> Mesh:
    return (torch.from_numpy(np.asarray(item["vertices"], dtype=np.float32)),
            torch.from_numpy(np.asarray(item["faces"], dtype=np.int64)))


def silhouette_iou_2d(vertices: torch.Tensor, faces: torch.Tensor, item: Dict[str, np.ndarray],
                      input_view: int) -> float:
    """Mean IoU of the mesh's hard render mask vs the GT alpha (> 0.5) over the held-out views."""
    images = np.asarray(item["images"])
    K, S = int(images.shape[0]), int(images.shape[1])
    held = [k for k in range(K) if k != input_view] or [input_view]
    views = torch.from_numpy(np.asarray(item["views"], dtype=np.float32)[held]).contiguous()
    B = len(held)
    v = vertices.float()[None].expand(B, -1, -1).contiguous()
    with torch.no_grad():
        out = render(Meshes(v, faces.long()), make_camera(views), lighting=None,
                     settings=RenderSettings(height=S, width=S))
    pred = out.mask.float() > 0.5
    gt = torch.from_numpy(images[held][..., 3] > 127)
    inter = (pred & gt).sum(dim=(1, 2)).double()
    union = (pred | gt).sum(dim=(1, 2)).double()
    return float((inter / (union + 1e-8)).mean())


def evaluate_mesh(vertices: torch.Tensor, faces: torch.Tensor, item: Dict[str, np.ndarray], n_points: int = 2500,
                  seed: int = 0, input_view: int = 0, silhouette: bool = True,
                  gt_points: str = "stored", occupancy: Optional[np.ndarray] = None) -> Dict[str, float]:
    """All metrics of one predicted mesh (canonical object frame) against one dataset item.

    ``gt_points``: ``"stored"`` (default) compares with the item's ``surface_points`` (2048 area
    samples of the *union's* outer surface); ``"mesh"`` samples ``n_points`` on the stored GT
    mesh, which also holds the parts' interior faces (about half its area on the procedural
    shapes), so it penalises a correct outer surface; it exists for oracle checks.
    ``occupancy``: (R, R, R) bool grid used for the 3D IoU instead of voxelising the mesh (for
    predictions that are voxel grids, whose mesh is then only used for points and silhouettes).

    Returns ``{"iou", "fscore@0.01", "fscore@0.02", "chamfer", "silhouette_iou_2d"}``
    (the last is NaN when ``silhouette`` is False).
    """
    v = vertices.detach().cpu().float()
    f = faces.detach().cpu().long()
    occ = voxelize_mesh(v, f, int(item["occupancy"].shape[0])) if occupancy is None else occupancy
    res: Dict[str, float] = {"iou": iou_3d(occ, item["occupancy"])}
    gv, gf = _gt_mesh(item)
    if gt_points == "stored":
        gt_pts = torch.from_numpy(np.asarray(item["surface_points"], dtype=np.float64))
    elif gt_points == "mesh":
        gt_pts = sample_surface(gv.double(), gf, n_points, generator=torch.Generator().manual_seed(seed))
    else:
        raise ValueError(f"evaluate_mesh(): gt_points must be 'stored' or 'mesh', got {gt_points!r}")
    gen_p = torch.Generator().manual_seed(seed + 1)
    pr_pts = sample_surface(v.double(), f, n_points, generator=gen_p)
    bbox = (gv.double().min(dim=0).values, gv.double().max(dim=0).values)
    cf = chamfer_and_fscore(normalize_unit_diagonal(pr_pts, bbox), normalize_unit_diagonal(gt_pts, bbox), THRESHOLDS)
    for t in THRESHOLDS:
        res[f"fscore@{t:g}"] = cf[f"fscore@{t:g}"]
    res["chamfer"] = cf["chamfer"]
    res["silhouette_iou_2d"] = silhouette_iou_2d(v, f, item, input_view) if silhouette else float("nan")
    return res


def _aggregate(per_item: Dict[str, List[Dict[str, float]]]) -> Dict[str, Any]:
    per_cat: Dict[str, Dict[str, float]] = {}
    for cat, rows in per_item.items():
        d: Dict[str, float] = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
        d["count"] = len(rows)
        per_cat[cat] = d
    out: Dict[str, Any] = {}
    for k in METRIC_KEYS:
        vals = [d[k] for d in per_cat.values()]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return {
        "mean_iou": out["iou"],
        **{f"mean_fscore_{t:g}": out[f"fscore@{t:g}"] for t in THRESHOLDS},
        "mean_chamfer": out["chamfer"],
        "silhouette_iou_2d": out["silhouette_iou_2d"],
        "per_category": {c: {"iou": d["iou"], **{f"fscore_{t:g}": d[f"fscore@{t:g}"] for t in THRESHOLDS},
                             "chamfer": d["chamfer"], "silhouette_iou_2d": d["silhouette_iou_2d"],
                             "count": int(d["count"])} for c, d in per_cat.items()},
        "count": int(sum(d["count"] for d in per_cat.values())),
    }


Method = Callable[[str, Dict[str, np.ndarray]], Mesh]


def evaluate(data: Union[str, Path], split: str = "test", weights: Optional[Union[str, Path]] = None,
             limit: Optional[int] = None, view: int = 0, n_points: int = 2500, seed: int = 0,
             medoid_pool: int = 200, progress: bool = True, train_split: str = "train",
             gt_points: str = "stored", repair: bool = True, conform: bool = True, input_view: bool = False,
             refine: bool = False,
             input_view_limit: Optional[int] = 5, refine_steps: int = REFINE_STEPS) -> Dict[str, Any]:
    """Evaluate the predictor (if ``weights``; its meshes repaired unless ``repair`` is False and
    conformed unless ``conform`` is False, as :func:`predict_mesh` does) and
    the baselines; returns the JSON-ready dict. ``input_view`` / ``refine``: also the input-view
    fidelity on the first ``input_view_limit`` items per category (None: all; see the module
    docstring)."""
    from tqdm import tqdm

    from dibr_core.models.predictor import Predictor, load_predictor

    items = list_items(data, split, limit)
    if not items:
        raise FileNotFoundError(f"evaluate(): no .npz items under {Path(data) / split}")
    model: Optional[Predictor] = None
    if weights is not None:
        model = load_predictor(weights)
    template = model if model is not None else Predictor()
    sphere: Mesh = (template.template.detach().cpu().float(), template.faces.detach().cpu().long())

    # Category medoids and mean occupancies from the train split.
    medoids: Dict[str, Mesh] = {}
    medoid_files: Dict[str, str] = {}
    means: Dict[str, np.ndarray] = {}
    mean_meshes: Dict[str, Mesh] = {}
    train_items = list_items(data, train_split, medoid_pool)
    for cat in tqdm(sorted(items), desc="category baselines", disable=not progress, file=sys.stderr):
        paths = train_items.get(cat)
        if not paths:
            continue
        occs = [load_item(p)["occupancy"] for p in paths]
        best = paths[medoid_index(occs)]
        medoids[cat] = _gt_mesh(load_item(best))
        medoid_files[cat] = str(best.relative_to(Path(data)))
        means[cat] = mean_occupancy(occs)
        mean_meshes[cat] = voxel_boundary_mesh(means[cat])

    methods: Dict[str, Method] = {"sphere": lambda cat, it: sphere}
    grids: Dict[str, Callable[[str], Optional[np.ndarray]]] = {}
    if all(c in medoids for c in items):
        methods["category_mean"] = lambda cat, it: mean_meshes[cat]
        grids["category_mean"] = lambda cat: means[cat]
        methods["category_medoid"] = lambda cat, it: medoids[cat]
    if (input_view or refine) and model is None:
        raise ValueError("--input-view-iou and --refine measure the predictor: give --weights")
    last: Dict[str, Any] = {}
    if model is not None:
        pred_model = model

        def _predict(cat: str, it: Dict[str, np.ndarray]) -> Mesh:
            t = time.perf_counter()
            pred = predict_mesh(np.asarray(it["images"])[view], model=pred_model, repair=repair,
                                conform=conform and repair)
            last["pred"], last["seconds"] = pred, time.perf_counter() - t
            return pred.vertices, pred.faces

        methods["predictor"] = _predict

    per_item: Dict[str, Dict[str, List[Dict[str, float]]]] = {m: {c: [] for c in items} for m in methods}
    fidelity: Dict[str, List[Dict[str, float]]] = {c: [] for c in items}
    jobs = [(c, p) for c, ps in items.items() for p in ps]
    for j, (cat, path) in enumerate(tqdm(jobs, desc=f"eval {split}", unit="item", disable=not progress,
                                         file=sys.stderr)):
        it = load_item(path)
        K = int(it["images"].shape[0])
        if not 0 <= view < K:
            raise ValueError(f"evaluate(): --view {view} but {path} has {K} views")
        for name, fn in methods.items():
            v, f = fn(cat, it)
            grid = grids[name](cat) if name in grids else None
            per_item[name][cat].append(evaluate_mesh(v, f, it, n_points, seed * 1_000_003 + 2 * j, view,
                                                       gt_points=gt_points, occupancy=grid))
        if (input_view or refine) and (input_view_limit is None or len(fidelity[cat]) < input_view_limit):
            fidelity[cat].append(input_view_fidelity(last["pred"], np.asarray(it["images"])[view], it,
                                                     refine_steps if refine else 0,
                                                     per_item["predictor"][cat][-1]["iou"], last["seconds"]))

    result: Dict[str, Any] = {"split": split, "data": portable_path(data), "view": view, "points": n_points,
                              "thresholds": list(THRESHOLDS), "gt_points": gt_points,
                              "weights": portable_path(weights) if weights else None, "repair": repair,
                              "conform": conform and repair}
    if model is not None:
        result["predictor"] = _aggregate(per_item["predictor"])
        result.update({k: v for k, v in result["predictor"].items()})
    else:
        result["predictor"] = None
        result["note"] = "no --weights given: only the baselines were evaluated"
        for k in ["mean_iou"] + [f"mean_fscore_{t:g}" for t in THRESHOLDS] + ["mean_chamfer", "silhouette_iou_2d"]:
            result[k] = None
        result["per_category"] = None
    baselines: Dict[str, Any] = {"sphere": {**_aggregate(per_item["sphere"]),
                                            "description": "the predictor's template icosphere for every input"}}
    if "category_mean" in methods:
        baselines["category_mean"] = {
            **_aggregate(per_item["category_mean"]),
            "description": "per category, the mean train-split occupancy thresholded at 0.5; uses the "
                           "category label"}
        baselines["category_medoid"] = {
            **_aggregate(per_item["category_medoid"]),
            "description": "per category, the train-split medoid shape (highest mean occupancy IoU to the "
                           "category's other train shapes); uses the category label",
            "medoids": medoid_files}
    else:
        baselines["category_mean"] = None
        baselines["category_medoid"] = None
        result["category_mean_note"] = f"no {train_split!r} items for some categories: category_mean skipped"
    result["baselines"] = baselines
    if input_view or refine:
        result["input_view"] = _aggregate_fidelity(fidelity, refine_steps if refine else 0)
    return result


FIDELITY_KEYS = ["network_iou", "prediction_iou", "refined_iou", "result_iou", "kept", "refine_fraction", "retried",
                 "retry_skipped", "timed_out", "remeshed", "remesh_rejected", "holes", "conformed", "volume_carved",
                 "iou_3d_prediction", "iou_3d_refined", "iou_3d_result", "predict_seconds", "refine_seconds"]


def input_view_fidelity(pred: PredictedMesh, image: np.ndarray, item: Dict[str, np.ndarray], steps: int,
                        iou_3d_prediction: float, predict_seconds: float) -> Dict[str, float]:
    """One item's input-view silhouette IoU of the prediction (and, with ``steps`` > 0, after
    :func:`refine_prediction` with the default options and ``steps``), with 3D IoUs and times.
    Values a run without a refine cannot have are NaN."""
    r = refine_prediction(pred, image, steps=steps, resolution=REFINE_RESOLUTION)
    row = {"network_iou": pred.network_iou, "prediction_iou": r.prediction_iou, "predict_seconds": predict_seconds,
           "iou_3d_prediction": iou_3d_prediction}
    nan = float("nan")
    if steps > 0:
        res = int(item["occupancy"].shape[0])
        iou_refined = iou_3d(voxelize_mesh(r.refined.vertices, r.refined.faces, res), item["occupancy"])
        iou_result = iou_refined if r.mesh is r.refined else (
            iou_3d_prediction if r.kept_prediction else iou_3d(voxelize_mesh(r.mesh.vertices, r.mesh.faces, res),
                                                               item["occupancy"]))
        row.update(refined_iou=r.refined_iou, result_iou=r.iou, kept=float(r.kept_prediction),
                   refine_fraction=r.refine_fraction, retried=float(r.retried),
                   retry_skipped=float(r.retry_skipped), timed_out=float(r.timed_out), remeshed=float(r.remeshed),
                   remesh_rejected=float(r.remesh_rejected), holes=float(r.holes), conformed=float(r.conformed),
                   volume_carved=float(r.volume_carved),
                   iou_3d_refined=iou_refined, iou_3d_result=iou_result, refine_seconds=r.seconds)
    else:
        row.update({k: nan for k in FIDELITY_KEYS if k not in row})
        row.update(result_iou=r.prediction_iou, iou_3d_result=iou_3d_prediction)
    return row


def _aggregate_fidelity(rows: Dict[str, List[Dict[str, float]]], steps: int) -> Dict[str, Any]:
    """Per-category means and the mean of the categories of :func:`input_view_fidelity` rows,
    with the time spread over all items."""
    per_cat = {c: {k: float(np.mean([r[k] for r in rs])) for k in FIDELITY_KEYS} | {"count": len(rs)}
               for c, rs in rows.items() if rs}
    out: Dict[str, Any] = {"steps": steps, "resolution": REFINE_RESOLUTION, "threads": torch.get_num_threads(),
                           "count": int(sum(len(rs) for rs in rows.values()))}
    for k in FIDELITY_KEYS:
        out["mean_" + k] = float(np.mean([d[k] for d in per_cat.values()])) if per_cat else float("nan")
    every = [r for rs in rows.values() for r in rs]
    for k in ("predict_seconds", "refine_seconds"):
        vals = np.array([r[k] for r in every], dtype=np.float64)
        if vals.size and np.isfinite(vals).all():
            out[k] = {"mean": float(vals.mean()), "median": float(np.median(vals)), "max": float(vals.max())}
    out["per_category"] = per_cat
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m dibr_core.eval predictor`` (besides the shared ones)."""
    p.add_argument("--weights", default=None, help="run directory or checkpoint.pt (default: none, baselines only)")
    p.add_argument("--limit", type=int, default=None, help="at most N items per category")
    p.add_argument("--view", type=int, default=0, help="input view index")
    p.add_argument("--points", type=int, default=2500, help="surface samples per mesh for the F-score")
    p.add_argument("--gt-points", choices=["stored", "mesh"], default="stored",
                   help="GT point set: the stored union-surface samples (default) or samples of the GT mesh")
    p.add_argument("--medoid-pool", type=int, default=200, help="train items per category for the medoid")
    p.add_argument("--no-repair", action="store_true",
                   help="measure the raw decoder output (default: repaired, as predict_mesh returns it)")
    p.add_argument("--no-conform", action="store_true",
                   help="measure the mesh before the conform to the input's silhouette (the network's, repaired)")
    p.add_argument("--input-view-iou", action="store_true",
                   help="also the prediction's input-view silhouette IoU (on --input-view-limit items per category)")
    p.add_argument("--refine", action="store_true",
                   help="also the input-view IoU, 3D IoU and time after the Image to 3D refine (implies "
                        "--input-view-iou)")
    p.add_argument("--input-view-limit", type=int, default=5,
                   help="items per category for --input-view-iou / --refine (default 5; 0: all)")
    p.add_argument("--refine-steps", type=int, default=REFINE_STEPS,
                   help=f"steps of the refine (default {REFINE_STEPS}, the Image to 3D default)")


def run(a: argparse.Namespace) -> Dict[str, Any]:
    """The report of ``python -m dibr_core.eval predictor`` (``a.data``: the resolved data root)."""
    if (a.input_view_iou or a.refine) and a.weights is None:
        raise ValueError("--input-view-iou and --refine measure the predictor: give --weights")
    if a.refine_steps < 1:
        raise ValueError(f"--refine-steps must be at least 1, got {a.refine_steps}")
    if a.input_view_limit < 0:
        raise ValueError(f"--input-view-limit must be 0 (all) or more, got {a.input_view_limit}")
    return evaluate(a.data, a.split, a.weights, a.limit, a.view, a.points, a.seed, a.medoid_pool, a.progress,
                    gt_points=a.gt_points, repair=not a.no_repair, conform=not a.no_conform,
                    input_view=a.input_view_iou or a.refine,
                    refine=a.refine, input_view_limit=a.input_view_limit or None, refine_steps=a.refine_steps)
