"""Tests for dibr_core.uv: automatic UVs and the UV overlap finder."""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import pytest
import torch

from dibr_core.mesh import icosphere
from dibr_core.uv import auto_uvs, uv_charts, uv_overlap_pairs

F64 = torch.float64


def _areas(verts: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    p = verts[faces]
    area3 = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]).norm(dim=-1) / 2
    e1, e2 = face_uvs[:, 1] - face_uvs[:, 0], face_uvs[:, 2] - face_uvs[:, 0]
    return area3, (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) / 2


def _chart_boxes(face_uvs: torch.Tensor, chart: torch.Tensor) -> np.ndarray:
    k = int(chart.max()) + 1
    lo = np.full((k, 2), np.inf)
    hi = np.full((k, 2), -np.inf)
    np.minimum.at(lo, chart.numpy(), face_uvs.min(1).values.numpy())
    np.maximum.at(hi, chart.numpy(), face_uvs.max(1).values.numpy())
    return np.concatenate([lo, hi], 1)


def test_overlap_finder() -> None:
    a = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    shares_edge = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    shares_corner = [[1.0, 0.0], [2.0, 0.0], [1.0, -1.0]]
    overlapping = [[0.4, 0.4], [1.4, 0.4], [0.4, 1.4]]
    inside = [[0.1, 0.1], [0.2, 0.1], [0.1, 0.2]]
    uv = torch.tensor([a, shares_edge, shares_corner, overlapping, inside], dtype=F64)
    pairs = {tuple(p) for p in uv_overlap_pairs(uv).tolist()}
    assert pairs == {(0, 3), (1, 3), (0, 4)}


@pytest.mark.parametrize("level", [2, 3])
def test_auto_uvs_on_a_sphere(level: int) -> None:
    verts, faces, _ = icosphere(level, dtype=F64)
    margin = 1.0 / 64
    fuv = auto_uvs(verts, faces, margin=margin)
    assert fuv.shape == (faces.shape[0], 3, 2) and fuv.dtype == F64
    assert float(fuv.min()) >= margin - 1e-12 and float(fuv.max()) <= 1 - margin + 1e-12
    # No two UV triangles overlap, and every face keeps its counter-clockwise winding.
    assert uv_overlap_pairs(fuv, tol=1e-12).shape == (0, 2)
    area3, area_uv = _areas(verts, faces, fuv)
    assert float(area_uv.min()) > 0
    # Uniform texel density up to the axis projection's foreshortening, within sqrt(3):
    # measured on level 3, UV / 3D area over its median: 0.71 .. 1.19.
    ratio = area_uv / area3
    ratio = ratio / ratio.median()
    assert float(ratio.max() / ratio.min()) <= math.sqrt(3) + 1e-9
    assert 0.65 < float(ratio.min()) and float(ratio.max()) < 1.25
    # The six axis charts use over 45 % of the square (measured 52 %).
    assert float(area_uv.sum()) > 0.45
    # Charts' boxes keep the margin between them.
    chart = uv_charts(verts, faces)
    assert int(chart.max()) + 1 == 6
    box = _chart_boxes(fuv, chart)
    for i in range(len(box)):
        for j in range(i + 1, len(box)):
            gap = max(box[j, 0] - box[i, 2], box[i, 0] - box[j, 2], box[j, 1] - box[i, 3], box[i, 1] - box[j, 3])
            assert gap >= margin - 1e-12


def test_auto_uvs_split_a_chart_that_folds_over_itself() -> None:
    # A gentle spiral ramp over one and a half turns: every face looks up (one +y chart, all
    # connected), but its projection onto the xz plane covers itself.
    n_a, n_r = 60, 2
    theta = torch.linspace(0, 3 * math.pi, n_a + 1, dtype=F64)
    radius = torch.linspace(1.0, 2.0, n_r + 1, dtype=F64)
    t, r = torch.meshgrid(theta, radius, indexing="ij")
    verts = torch.stack([r * torch.cos(t), 0.05 * t, -r * torch.sin(t)], -1).reshape(-1, 3)
    idx = torch.arange((n_a + 1) * (n_r + 1)).reshape(n_a + 1, n_r + 1)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[:-1, 1:], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, d, b], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)])
    p = verts[faces]
    normals = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert bool((normals[:, 1] > 0.5 * normals.norm(dim=1)).all())      # all face up
    assert int(uv_charts(verts, faces).max()) == 0                       # one chart
    assert uv_overlap_pairs(p[..., [0, 2]], tol=1e-12).shape[0] > 50     # whose projection overlaps
    fuv = auto_uvs(verts, faces)
    assert uv_overlap_pairs(fuv, tol=1e-12).shape == (0, 2)
    assert float(fuv.min()) >= 0 and float(fuv.max()) <= 1


def test_bad_inputs() -> None:
    verts, faces, _ = icosphere(0, dtype=F64)
    with pytest.raises(ValueError, match=r"auto_uvs\(\): faces must have shape \(F, 3\), got \(20, 4\)"):
        auto_uvs(verts, torch.cat([faces, faces[:, :1]], 1))
    with pytest.raises(ValueError, match=r"auto_uvs\(\): faces holds index 12, outside \[0, 12\)"):
        auto_uvs(verts, faces + 1)
    with pytest.raises(ValueError, match=r"auto_uvs\(\): vertices must have shape \(V, 3\), got \(1, 12, 3\)"):
        auto_uvs(verts[None], faces)
    with pytest.raises(ValueError, match=r"auto_uvs\(\): vertices contains NaN"):
        auto_uvs(torch.full_like(verts, float("nan")), faces)
    with pytest.raises(ValueError, match=r"auto_uvs\(\): margin must be below 0.25"):
        auto_uvs(verts, faces, margin=0.3)
    with pytest.raises(ValueError, match=r"auto_uvs\(\): the mesh is empty"):
        auto_uvs(verts, faces[:0])
    with pytest.raises(ValueError, match=r"uv_overlap_pairs\(\): face_uvs must have shape \(F, 3, 2\), got \(20, 3\)"):
        uv_overlap_pairs(torch.zeros(20, 3, dtype=F64))
