"""Judging a reconstruction from views the fit never saw, on plain arrays (no bpy; torch and
dibr_core are imported only when the metrics run): the silhouette IoU per held-out view, and
the surface metrics of dibr_core's reconstruction benchmark (:mod:`dibr_core.eval.fit`) between
the result and the target, both in world space.

* ``silhouette_iou``: hard silhouettes (coverage > 0.5) of the result and the target.
* ``chamfer_pct``: symmetric Chamfer distance in percent of the target's bounding-box diagonal.
* ``roughness_ratio``: the result's mean dihedral angle (between the normals of faces sharing an
  edge) divided by the target's (meshes of different face counts: finer triangles have smaller
  angles, so a finer target raises the ratio).
* ``self_intersecting_faces``: faces of the result that intersect a non-adjacent face.
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

    from dibr_core.eval.fit import chamfer_percent, mean_dihedral_angle
    from dibr_core.mesh_queries import self_intersecting_faces

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


def heldout_section(views: Sequence[Tuple[str, float]], surface: Dict[str, Any],
                    start_views: Optional[Sequence[Tuple[str, float]]] = None,
                    start_surface: Optional[Dict[str, Any]] = None, **extra: Any) -> Dict[str, Any]:
    """The ``heldout`` section of the report.

    Args:
        views: (camera name, silhouette IoU of the result) per held-out view.
        surface: :func:`surface_metrics` of the result.
        start_views, start_surface: the same for the start mesh (stored under ``"start"``).
        extra: more entries (e.g. the judging renders' resolution).
    """
    ious = [iou for _, iou in views]
    out: Dict[str, Any] = {
        "views": [{"camera": name, "silhouette_iou": round(iou, 4)} for name, iou in views],
        "silhouette_iou_mean": round(float(np.mean(ious)), 4) if ious else None,
        "silhouette_iou_min": round(float(np.min(ious)), 4) if ious else None,
        **surface,
    }
    if start_views is not None or start_surface is not None:
        start: Dict[str, Any] = dict(start_surface or {})
        if start_views is not None:
            s_ious = [iou for _, iou in start_views]
            start["silhouette_iou_mean"] = round(float(np.mean(s_ious)), 4) if s_ious else None
        out["start"] = start
    out.update(extra)
    return out


def summary(section: Dict[str, Any]) -> List[str]:
    """Short human-readable lines of a :func:`heldout_section`."""
    lines = [f"  {v['camera']}: silhouette IoU {v['silhouette_iou']:.3f}" for v in section.get("views", [])]
    start = section.get("start", {})

    def was(key: str, fmt: str) -> str:
        return f" (start {format(start[key], fmt)})" if start.get(key) is not None else ""

    if section.get("silhouette_iou_mean") is not None:
        lines.append(f"  mean held-out IoU {section['silhouette_iou_mean']:.3f}{was('silhouette_iou_mean', '.3f')}")
    lines.append(f"  Chamfer {section['chamfer_pct']:.2f} % of the target's diagonal{was('chamfer_pct', '.2f')}, "
                 f"roughness {section['roughness_ratio']:.2f}x the target's, "
                 f"{section['self_intersecting_faces']} self-intersecting of {section['faces']} faces")
    return lines


__all__ = ["heldout_section", "silhouette_iou", "summary", "surface_metrics"]
