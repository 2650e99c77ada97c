"""The main job's held-out judgement on small arrays (dibr_blender.jobs.heldout, no bpy): the
silhouette IoU, the colour error, the surface metrics and the report section."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dibr_blender.jobs import heldout
from dibr_core.mesh import icosphere


def test_silhouette_iou_thresholds_both_coverages() -> None:
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    a[:2, :] = 0.9      # 8 pixels
    b[:, :2] = 0.6      # 8 pixels, 4 shared
    b[3, 3] = 0.4       # below the threshold: not covered
    assert heldout.silhouette_iou(a, b) == pytest.approx(4 / 12)
    assert heldout.silhouette_iou(a, a) == 1.0
    assert heldout.silhouette_iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    with pytest.raises(ValueError, match=r"silhouette_iou\(\): cover and target must be \(H, W\) of the same shape"):
        heldout.silhouette_iou(a, b[:3])


def test_color_error_compares_the_pixels_both_cover() -> None:
    render = np.zeros((2, 2, 4))
    ref = np.zeros((2, 2, 4))
    render[..., 3] = [[1.0, 1.0], [0.5, 1.0]]
    ref[..., 3] = [[1.0, 1.0], [1.0, 0.0]]
    render[0, 0, :3] = 0.5
    render[0, 1, :3] = [0.2, 0.2, 0.8]
    ref[0, 1, :3] = [0.2, 0.5, 0.2]
    render[1, 0, :3] = 1.0   # half covered in the render: ignored
    # pixels (0, 0): |0.5| x 3, (0, 1): 0 + 0.3 + 0.6
    assert heldout.color_error(render, ref) == pytest.approx((1.5 + 0.9) / 6)
    assert heldout.color_error(render, np.zeros((2, 2, 4))) is None
    with pytest.raises(ValueError, match=r"color_error\(\): render and reference must be \(H, W, 4\)"):
        heldout.color_error(render[..., :3], ref[..., :3])


def test_surface_metrics_of_the_target_itself_and_of_a_larger_copy() -> None:
    v, f, _ = icosphere(2, 1.0, dtype=torch.float64)
    v, f = v.numpy(), f.numpy()
    same = heldout.surface_metrics(v, f, v, f, points=2000)
    assert same["chamfer_pct"] < 3.0 and same["roughness_ratio"] == 1.0
    assert same["self_intersecting_faces"] == 0 and same["faces"] == len(f)
    # A copy 10 % larger: every point 0.1 away from the unit sphere, the diagonal 2 sqrt(3)
    # (the sampled Chamfer adds the in-surface sample spacing seen in `same`).
    big = heldout.surface_metrics(v * 1.1, f, v, f, points=2000)
    assert big["chamfer_pct"] > 100 * 0.1 / (2 * np.sqrt(3)) * 0.9
    assert big["chamfer_pct"] < 100 * 0.1 / (2 * np.sqrt(3)) + same["chamfer_pct"] * 1.2
    assert big["roughness_ratio"] == pytest.approx(1.0, abs=1e-3)
    # Two copies through each other intersect; a finer target makes the ratio larger.
    crossed = heldout.surface_metrics(np.concatenate([v, v * 0.9 + 0.3]), np.concatenate([f, f + len(v)]), v, f)
    assert crossed["self_intersecting_faces"] > 0
    vf, ff, _ = icosphere(3, 1.0, dtype=torch.float64)
    assert heldout.surface_metrics(v, f, vf.numpy(), ff.numpy())["roughness_ratio"] > 1.5
    with pytest.raises(ValueError, match=r"surface_metrics\(\): vertices/faces must be non-empty"):
        heldout.surface_metrics(v[:, :2], f, v, f)


def test_section_and_summary() -> None:
    surface = {"faces": 1280, "chamfer_pct": 0.9, "roughness_ratio": 1.1, "self_intersecting_faces": 0}
    start = {"ious": [0.5, 0.6], "color_errors": [0.2, None],
             "surface": {"faces": 1280, "chamfer_pct": 9.0, "roughness_ratio": 0.4, "self_intersecting_faces": 0}}
    s = heldout.heldout_section(["A", "B"], [0.95, 0.9], surface, color_errors=[0.05, 0.03], start=start,
                                resolution=256)
    assert s["views"] == [{"camera": "A", "silhouette_iou": 0.95, "color_mae": 0.05},
                          {"camera": "B", "silhouette_iou": 0.9, "color_mae": 0.03}]
    assert s["silhouette_iou_mean"] == 0.925 and s["silhouette_iou_min"] == 0.9 and s["color_mae_mean"] == 0.04
    assert s["chamfer_pct"] == 0.9 and s["resolution"] == 256
    assert s["start"]["silhouette_iou_mean"] == 0.55 and s["start"]["color_mae_mean"] == 0.2
    assert s["start"]["chamfer_pct"] == 9.0
    lines = heldout.summary(s)
    assert lines[0] == "  A: silhouette IoU 0.950, colour error 0.050"
    assert "mean IoU 0.925 (start 0.550), mean colour error 0.040 (start 0.200)" in lines[2]
    assert "Chamfer 0.90 % of the target's diagonal (start 9.00), roughness 1.10x the target's, " \
           "0 self-intersecting of 1280 faces" in lines[3]
    with pytest.raises(ValueError, match=r"heldout_section\(\): 2 cameras but 1 IoUs"):
        heldout.heldout_section(["A", "B"], [0.9], surface)


def test_demo_grid_puts_each_row_and_column_in_place() -> None:
    """before_after.png's layout: rows of (H, W, 4) straight-alpha images over the background,
    GAP black pixels between cells (dibr_blender.demo imports bpy only when run)."""
    from dibr_blender import demo

    h, w, gap = 3, 5, demo.GAP
    red = np.zeros((h, w, 4), dtype=np.float32)
    red[..., 0], red[..., 3] = 1.0, 1.0
    clear = np.zeros((h, w, 4), dtype=np.float32)
    half = red.copy()
    half[..., 3] = 0.5
    g = demo.grid_image([[red, clear, half], [clear, red, red]])
    assert g.shape == (2 * h + gap, 3 * w + 2 * gap, 3)
    assert np.allclose(g[0, 0], [1, 0, 0]) and np.allclose(g[0, w + gap], demo.BACKGROUND)
    assert np.allclose(g[0, 2 * (w + gap)], 0.5 * np.array([1, 0, 0]) + 0.5 * demo.BACKGROUND)
    assert np.allclose(g[h + gap, w + gap], [1, 0, 0]) and np.allclose(g[h, 0], 0)   # a gap row
