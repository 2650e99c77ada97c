"""Evaluate the class-conditional generator: ``python -m dibr_core.eval generator --json``.

For every category, ``--per-category`` samples (seeded) are compared with as many held-out
shapes of the ``--split`` split (default ``test``); two reference methods get the same
numbers:

* ``training_data``: that many train-split shapes of the category, as if they were samples
  (the ceiling a perfect generator of the training distribution reaches);
* ``category_mean``: the category's mean train occupancy thresholded at 0.5 (its exposed-voxel
  mesh, in the category's mean foreground colour), repeated (the trivial floor of diversity).

Each shape is rendered (64 x 64, unlit vertex colours, hard alpha, RGB zero outside the mask:
the data set's image format; the predictor's colours carry the data's shading) in ``--views``
of the data set's 24 cameras; held-out and training shapes use their stored renders of the same
cameras. Metrics (see :mod:`dibr_core.eval.gen_metrics` for the definitions):

* ``frechet_classifier_distance`` / ``kernel_classifier_distance``: between the features of all
  renders of the method and of the held-out renders (all categories pooled), from the
  in-project classifier (``dibr_core/weights/classifier.pt``); they are NOT FID / KID;
* ``class_accuracy``: the classifier's accuracy on the method's renders with the requested
  category as the label (mean over categories; per category under ``per_category``);
* ``coverage`` and ``mmd_chamfer``: per category, from Chamfer distances between
  ``--points`` surface samples of the method's shapes and the held-out shapes' stored surface
  points (both in the data set's unit-diagonal object frame), then averaged;
* ``diversity_ratio``: per category, the mean pairwise Chamfer distance among the method's
  shapes over the same among the held-out shapes, averaged;
* ``valid_fraction``: shapes with no inverted face, a positive volume and a non-empty
  silhouette in every rendered view; for the generator also ``valid_fraction_unrepaired``:
  the raw decoder's samples (``repair=False``) without an inverted face, which shows what the
  repair step (:mod:`dibr_core.mesh_repair`) fixes.

The JSON also holds ``classifier_accuracy_heldout`` (the judge's own accuracy on the held-out
renders) and the time per generated object.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dibr_core.data.dataset import load_item, make_camera
from dibr_core.data.loaders import list_items
from dibr_core.data.shapes import CATEGORIES
from dibr_core.eval.baselines import mean_occupancy, voxel_boundary_mesh
from dibr_core.eval.gen_metrics import (chamfer_matrix, coverage_mmd, frechet_distance, kernel_distance, mean_pairwise,
                                        signed_volume)
from dibr_core.eval.metrics3d import sample_surface
from dibr_core.mesh_queries import inverted_faces
from dibr_core.mesh_repair import inverted_faces_fast
from dibr_core.models.checkpoints import portable_path
from dibr_core.render import Meshes, RenderSettings, render

__all__ = ["evaluate_generator", "render_shapes", "shape_validity", "DEFAULT_VIEWS", "add_arguments", "run"]

DEFAULT_VIEWS: Tuple[int, ...] = (1, 7, 13, 19)


def render_shapes(vertices: Sequence[torch.Tensor], faces: Sequence[torch.Tensor], colors: Sequence[torch.Tensor],
                  views: torch.Tensor, size: int = 64) -> torch.Tensor:
    """Render N meshes in K cameras -> (N, K, 4, size, size) float RGBA (hard alpha, RGB zero outside).

    Args:
        vertices / faces / colors: N tensors (V_i, 3) / (F_i, 3) / (V_i, 3).
        views: (K, 4, 4) world -> camera matrices of the data set.
    """
    K = views.shape[0]
    out = []
    cams = make_camera(views.float().contiguous())
    for v, f, c in zip(vertices, faces, colors):
        with torch.no_grad():
            r = render(Meshes(v.float()[None].expand(K, -1, -1).contiguous(), f.long()), cams,
                       colors=c.float()[None].expand(K, -1, -1).contiguous(), lighting=None,
                       settings=RenderSettings(height=size, width=size))
        a = r.mask.float()
        out.append(torch.cat([r.rgb * a[..., None], a[..., None]], dim=-1).permute(0, 3, 1, 2))
    return torch.stack(out)


def shape_validity(vertices: torch.Tensor, faces: torch.Tensor, renders: torch.Tensor) -> bool:
    """No inverted face, positive volume, non-empty alpha in every one of the (K, 4, S, S) renders."""
    if bool(inverted_faces(vertices, faces).any()):
        return False
    if signed_volume(vertices, faces) <= 0:
        return False
    return bool((renders[:, 3].flatten(1).amax(dim=1) > 0.5).all())


def _features(classifier: Any, images: torch.Tensor, batch: int = 256) -> Tuple[torch.Tensor, torch.Tensor]:
    """(M, 4, S, S) -> features (M, D), predicted labels (M,)."""
    feats, preds = [], []
    with torch.no_grad():
        for s in range(0, images.shape[0], batch):
            f = classifier.features(images[s:s + batch])
            feats.append(f)
            preds.append(classifier.head(f).argmax(dim=1))
    return torch.cat(feats), torch.cat(preds)


def _points(v: torch.Tensor, f: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    return sample_surface(v.double(), f.long(), n, generator=torch.Generator().manual_seed(seed)).float()


def _subsample(points: np.ndarray, n: int, seed: int) -> torch.Tensor:
    pts = torch.from_numpy(np.asarray(points, dtype=np.float32))
    if pts.shape[0] <= n:
        return pts
    idx = torch.randperm(pts.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return pts[idx]


def evaluate_generator(data: Union[str, Path], split: str = "test", weights: Optional[Union[str, Path]] = None,
                       classifier_weights: Optional[Union[str, Path]] = None, per_category: int = 20,
                       seed: int = 0, views: Sequence[int] = DEFAULT_VIEWS, n_points: int = 1024,
                       temperature: float = 1.0, categories: Optional[Sequence[str]] = None,
                       progress: bool = True) -> Dict[str, Any]:
    """Compute the generator report (see the module docstring); returns a JSON-ready dict."""
    import sys

    from tqdm import tqdm

    from dibr_core.models.classifier import load_classifier
    from dibr_core.models.generator import load_generator

    wdir = Path(__file__).resolve().parent.parent / "weights"
    gen = load_generator(weights)
    clf = load_classifier(classifier_weights if classifier_weights is not None else wdir / "classifier.pt")
    cats = list(categories) if categories is not None else list(CATEGORIES)
    unknown = [c for c in cats if c not in gen.categories]
    if unknown:
        raise ValueError(f"evaluate_generator(): unknown categories {unknown}")
    held = list_items(data, split, per_category)
    train = list_items(data, "train", max(per_category, 100))
    for c in cats:
        if c not in held or len(held[c]) < 2:
            raise FileNotFoundError(f"evaluate_generator(): need >= 2 {split!r} items of {c!r} under {data}")
        if c not in train or len(train[c]) < 2:
            raise FileNotFoundError(f"evaluate_generator(): need >= 2 'train' items of {c!r} under {data}")
    vids = list(views)
    methods = ["generator", "training_data", "category_mean"]
    feats: Dict[str, List[torch.Tensor]] = {m: [] for m in methods + ["heldout"]}
    per_cat: Dict[str, Dict[str, Dict[str, float]]] = {m: {} for m in methods}
    heldout_acc: List[float] = []
    gen_seconds = 0.0
    gen_count = 0
    for ci, cat in enumerate(tqdm(cats, desc="eval generator", disable=not progress, file=sys.stderr)):
        label = CATEGORIES.index(cat)
        held_items = [load_item(p) for p in held[cat]]
        n = len(held_items)
        K = int(held_items[0]["images"].shape[0])
        if not vids or min(vids) < 0 or max(vids) >= K:
            raise ValueError(f"evaluate_generator(): views must be camera indices in [0, {K}), got {vids}")
        view_m = torch.from_numpy(np.asarray(held_items[0]["views"], dtype=np.float32)[vids])
        held_imgs = torch.from_numpy(np.stack([it["images"][vids] for it in held_items])).float().div(255.0)
        S = int(held_imgs.shape[2])
        held_imgs = held_imgs.permute(0, 1, 4, 2, 3).reshape(-1, 4, S, S)
        hf, hp = _features(clf, held_imgs)
        feats["heldout"].append(hf)
        heldout_acc.append(float((hp == label).float().mean()))
        held_pts = torch.stack([_subsample(it["surface_points"], n_points, 7 * j) for j, it in enumerate(held_items)])
        d_held = chamfer_matrix(held_pts)
        div_held = mean_pairwise(d_held)

        # The generator.
        t0 = time.perf_counter()
        out = gen.sample(cat, per_category, seed=seed * 1000 + ci, temperature=temperature)
        gen_seconds += time.perf_counter() - t0
        gen_count += per_category
        faces = gen.decoder.faces.long()
        g_v = [out.vertices[i] for i in range(per_category)]
        g_f = [faces] * per_category
        g_c = [out.colors[i] for i in range(per_category)]
        g_r = render_shapes(g_v, g_f, g_c, view_m, S)
        valid = [shape_validity(v, faces, r) for v, r in zip(g_v, g_r)]
        raw = gen.sample(cat, per_category, seed=seed * 1000 + ci, temperature=temperature, repair=False)
        raw_valid = [not bool(inverted_faces_fast(v, faces).any()) for v in raw.vertices]
        g_pts = torch.stack([_points(v, faces, n_points, 11 * j) for j, v in enumerate(g_v)])

        # Training shapes as samples.
        tr_items = [load_item(p) for p in train[cat][:per_category]]
        t_imgs = torch.from_numpy(np.stack([it["images"][vids] for it in tr_items])).float().div(255.0)
        t_imgs = t_imgs.permute(0, 1, 4, 2, 3)
        t_pts = torch.stack([_subsample(it["surface_points"], n_points, 13 * j) for j, it in enumerate(tr_items)])
        t_valid = [shape_validity(torch.from_numpy(it["vertices"]), torch.from_numpy(it["faces"]), t_imgs[j])
                   for j, it in enumerate(tr_items)]

        # Category mean: thresholded mean occupancy of (up to 100) train shapes, mean colour.
        pool = [load_item(p) for p in train[cat]]
        m_v, m_f = voxel_boundary_mesh(mean_occupancy([it["occupancy"] for it in pool]))
        fg = np.concatenate([it["images"][..., :3][it["images"][..., 3] > 127] for it in pool[:20]])
        m_col = torch.from_numpy(fg.mean(axis=0) / 255.0).float()[None].expand(m_v.shape[0], 3)
        if m_f.shape[0] > 0:
            m_r = render_shapes([m_v], [m_f], [m_col], view_m, S)
            m_valid = shape_validity(m_v, m_f, m_r[0])
            m_pts = _points(m_v, m_f, n_points, 17)[None].expand(per_category, -1, -1)
        else:
            m_r = torch.zeros(1, len(vids), 4, S, S)
            m_valid = False
            m_pts = torch.zeros(per_category, 1, 3)
        m_imgs = m_r.expand(per_category, -1, -1, -1, -1)

        for name, imgs, pts, val in (("generator", g_r, g_pts, valid), ("training_data", t_imgs, t_pts, t_valid),
                                     ("category_mean", m_imgs, m_pts, [m_valid] * per_category)):
            f, pr = _features(clf, imgs.reshape(-1, 4, S, S))
            feats[name].append(f)
            d = chamfer_matrix(pts, held_pts)
            cm = coverage_mmd(d)
            div = mean_pairwise(chamfer_matrix(pts)) if pts.shape[0] >= 2 else 0.0
            per_cat[name][cat] = {"class_accuracy": float((pr == label).float().mean()),
                                  "coverage": cm["coverage"], "mmd_chamfer": cm["mmd"],
                                  "diversity_ratio": div / max(div_held, 1e-12),
                                  "valid_fraction": float(np.mean(val)), "count": int(pts.shape[0]),
                                  "heldout_count": n}
        per_cat["generator"][cat]["valid_fraction_unrepaired"] = float(np.mean(raw_valid))

    held_f = torch.cat(feats["heldout"])
    result: Dict[str, Any] = {"what": "generator", "split": split, "data": portable_path(data), "per_category": per_category,
                              "views": vids, "points": n_points, "seed": seed, "temperature": temperature,
                              "weights": portable_path(weights) if weights else "dibr_core/weights/generator.pt",
                              "classifier_accuracy_heldout": float(np.mean(heldout_acc)),
                              "feature_note": "classifier features of the in-project render classifier, "
                                              "not Inception: these are not FID/KID"}
    for name in methods:
        f = torch.cat(feats[name])
        rows = per_cat[name]
        block: Dict[str, Any] = {
            "frechet_classifier_distance": frechet_distance(f, held_f),
            "kernel_classifier_distance": kernel_distance(f, held_f),
        }
        for k in ("class_accuracy", "coverage", "mmd_chamfer", "diversity_ratio", "valid_fraction"):
            block[k] = float(np.mean([r[k] for r in rows.values()]))
        block["per_category"] = rows
        if name == "generator":
            block["valid_fraction_unrepaired"] = float(np.mean([r["valid_fraction_unrepaired"] for r in rows.values()]))
            block["seconds_per_object"] = gen_seconds / max(gen_count, 1)
            result.update({k: v for k, v in block.items()})
        else:
            result.setdefault("baselines", {})[name] = block
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``python -m dibr_core.eval generator`` (besides the shared ones)."""
    p.add_argument("--weights", default=None, help="generator weights file (default: the shipped one)")
    p.add_argument("--points", type=int, default=1024, help="surface samples per shape for the Chamfer distances")
    p.add_argument("--per-category", type=int, default=20, help="samples (and held-out shapes) per category")
    p.add_argument("--classifier", default=None, help="classifier weights (default: the shipped one)")
    p.add_argument("--temperature", type=float, default=1.0, help="latent sampling temperature")
    p.add_argument("--categories", nargs="+", default=None, help="evaluate only these categories")
    p.add_argument("--render-views", type=int, nargs="+", default=None,
                   help="data-set camera indices to render in (default 1 7 13 19)")


def run(a: argparse.Namespace) -> Dict[str, Any]:
    """The report of ``python -m dibr_core.eval generator`` (``a.data``: the resolved data root)."""
    return evaluate_generator(a.data, a.split, a.weights, a.classifier, a.per_category, a.seed,
                              views=tuple(a.render_views) if a.render_views else DEFAULT_VIEWS,
                              n_points=a.points, temperature=a.temperature, categories=a.categories,
                              progress=a.progress)
