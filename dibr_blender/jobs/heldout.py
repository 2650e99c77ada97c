"""Judging a reconstruction from views the fit never saw, on plain arrays (no bpy; torch and
dibr_core are imported only when the metrics run): the silhouette IoU per held-out view, and
the surface metrics of dibr_core's reconstruction benchmark (:mod:`dibr_core.surface_metrics`)
between the result and the target, both in world space.

* ``silhouette_iou``: hard silhouettes (coverage > 0.5) of the result and the target.
* ``chamfer_pct``: symmetric Chamfer distance in percent of the target's bounding-box diagonal.
* ``roughness_ratio``: the result's mean dihedral angle (between the normals of faces sharing an
  edge) divided by the target's (meshes of different face counts: finer triangles have smaller
  angles, so a finer target raises the ratio).
* ``self_intersecting_faces``: faces of the result that intersect a non-adjacent face.
* ``color_mae``: mean absolute difference of the result's and the target's renders (sRGB values)
  over the pixels both cover.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np


def silhouette_iou(cover: np.ndarray, target: np.ndarray) -> float:
    """IoU of two (H, W) coverages in [0, 1], each thresholded at 0.5; 1.0 when both are empty.

    Raises:
        ValueError: the shapes differ or are not 2-D.
    """
    a, b = np.asarray(cover), np.asarray(target)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"silhouette_iou(): cover and target must be (H, W) of the same shape, got {a.shape} "
                         f"and {b.shape}")
    a, b = a > 0.5, b > 0.5
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def color_error(render: np.ndarray, reference: np.ndarray, min_alpha: float = 0.99) -> Optional[float]:
    """Mean absolute difference of two (H, W, 4) straight-alpha images (e.g. sRGB PNG values in
    [0, 1]) over the pixels both cover (alpha >= ``min_alpha``) and the 3 channels; None when
    no pixel is covered by both.

    Raises:
        ValueError: the shapes differ or are not (H, W, 4).
    """
    a, b = np.asarray(render, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.ndim != 3 or a.shape[-1] != 4 or a.shape != b.shape:
        raise ValueError(f"color_error(): render and reference must be (H, W, 4) of the same shape, got "
                         f"{a.shape} and {b.shape}")
    both = (a[..., 3] >= min_alpha) & (b[..., 3] >= min_alpha)
    if not bool(both.any()):
        return None
    return float(np.abs(a[..., :3][both] - b[..., :3][both]).mean())


def surface_metrics(vertices: np.ndarray, faces: np.ndarray, target_vertices: np.ndarray,
                    target_faces: np.ndarray, points: int = 5000) -> Dict[str, Any]:
    """The result's surface against the target's, both world space.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int: the result (its evaluated mesh).
        target_vertices: (Vt, 3) float; target_faces: (Ft, 3) int: the target.
        points: area samples per surface for the Chamfer distance (fixed seed).
    Returns:
        ``{"faces", "chamfer_pct", "roughness_ratio", "self_intersecting_faces"}``.
    """
    import torch

    from dibr_core.mesh_queries import self_intersecting_faces
    from dibr_core.surface_metrics import chamfer_percent, mean_dihedral_angle

    v = torch.as_tensor(np.asarray(vertices, dtype=np.float64))
    f = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    tv = torch.as_tensor(np.asarray(target_vertices, dtype=np.float64))
    tf = torch.as_tensor(np.asarray(target_faces, dtype=np.int64))
    for name, x, y in (("vertices/faces", v, f), ("target_vertices/target_faces", tv, tf)):
        if x.ndim != 2 or x.shape[1] != 3 or y.ndim != 2 or y.shape[1] != 3 or len(x) == 0 or len(y) == 0:
            raise ValueError(f"surface_metrics(): {name} must be non-empty (V, 3) and (F, 3), got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
    return {
        "faces": int(f.shape[0]),
        "chamfer_pct": round(chamfer_percent(v, f, tv, tf, points=points), 4),
        "roughness_ratio": round(mean_dihedral_angle(v, f) / mean_dihedral_angle(tv, tf), 3),
        "self_intersecting_faces": int(self_intersecting_faces(v.float(), f)),
    }


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    got = [v for v in values if v is not None]
    return round(float(np.mean(got)), 4) if got else None


def heldout_section(cameras: Sequence[str], ious: Sequence[float], surface: Dict[str, Any],
                    color_errors: Optional[Sequence[Optional[float]]] = None,
                    start: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """The ``heldout`` section of the report.

    Args:
        cameras: the held-out cameras' names; ious: the result's silhouette IoU in each.
        surface: :func:`surface_metrics` of the result.
        color_errors: the result's :func:`color_error` in each view (optional).
        start: the same figures of the start mesh, ``{"ious", "surface", "color_errors"}``
            (optional; stored as means under ``"start"``).
        extra: more entries (e.g. the judging renders' resolution).

    Raises:
        ValueError: the per-view lists differ in length.
    """
    n = len(cameras)
    if len(ious) != n or (color_errors is not None and len(color_errors) != n):
        raise ValueError(f"heldout_section(): {n} cameras but {len(ious)} IoUs"
                         + ("" if color_errors is None else f" and {len(color_errors)} colour errors"))
    views: List[Dict[str, Any]] = []
    for k, name in enumerate(cameras):
        entry: Dict[str, Any] = {"camera": name, "silhouette_iou": round(float(ious[k]), 4)}
        if color_errors is not None:
            err = color_errors[k]
            entry["color_mae"] = None if err is None else round(err, 4)
        views.append(entry)
    out: Dict[str, Any] = {
        "views": views,
        "silhouette_iou_mean": _mean(ious),
        "silhouette_iou_min": round(float(np.min(ious)), 4) if n else None,
        **({"color_mae_mean": _mean(color_errors)} if color_errors is not None else {}),
        **surface,
    }
    if start is not None:
        s: Dict[str, Any] = dict(start.get("surface", {}))
        if start.get("ious") is not None:
            s["silhouette_iou_mean"] = _mean(start["ious"])
        if start.get("color_errors") is not None:
            s["color_mae_mean"] = _mean(start["color_errors"])
        out["start"] = s
    out.update(extra)
    return out


def summary(section: Dict[str, Any]) -> List[str]:
    """Short human-readable lines of a :func:`heldout_section`."""
    lines = []
    for v in section.get("views", []):
        col = f", colour error {v['color_mae']:.3f}" if v.get("color_mae") is not None else ""
        lines.append(f"  {v['camera']}: silhouette IoU {v['silhouette_iou']:.3f}{col}")
    start = section.get("start", {})

    def was(key: str, fmt: str) -> str:
        return f" (start {format(start[key], fmt)})" if start.get(key) is not None else ""

    if section.get("silhouette_iou_mean") is not None:
        col = (f", mean colour error {section['color_mae_mean']:.3f}{was('color_mae_mean', '.3f')}"
               if section.get("color_mae_mean") is not None else "")
        lines.append(f"  mean IoU {section['silhouette_iou_mean']:.3f}{was('silhouette_iou_mean', '.3f')}{col}")
    lines.append(f"  Chamfer {section['chamfer_pct']:.2f} % of the target's diagonal{was('chamfer_pct', '.2f')}, "
                 f"roughness {section['roughness_ratio']:.2f}x the target's, "
                 f"{section['self_intersecting_faces']} self-intersecting of {section['faces']} faces")
    return lines


__all__ = ["color_error", "heldout_section", "silhouette_iou", "summary", "surface_metrics"]
