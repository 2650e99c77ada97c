"""Generator metrics (dibr_core.eval.gen_metrics) and the winding-number queries they rest on
(dibr_core.mesh_queries) on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dibr_core.eval.gen_metrics import (chamfer_matrix, coverage_mmd, frechet_distance, kernel_distance, mean_pairwise,
                                        signed_volume)
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import inverted_faces, winding_numbers


def test_winding_numbers_of_a_sphere() -> None:
    v, f, _ = icosphere(2, radius=1.0)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [2.0, 0.0, 0.0], [0.0, -3.0, 1.0]])
    w = winding_numbers(v, f, pts)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64), atol=1e-9, rtol=0)
    # Flipping the orientation flips the sign.
    w2 = winding_numbers(v, f.flip(1), pts)
    torch.testing.assert_close(w2, -w)


def test_inverted_faces_and_volume() -> None:
    v, f, _ = icosphere(2, radius=0.5)
    assert not bool(inverted_faces(v, f).any())
    assert signed_volume(v, f) == pytest.approx(4 / 3 * np.pi * 0.125, rel=0.05)
    # Inside-out sphere: every face inverted, negative volume.
    assert bool(inverted_faces(v, f.flip(1)).all())
    assert signed_volume(v, f.flip(1)) < 0
    # Push a cap of vertices through the centre and out of the other side: the pushed faces
    # now face into an inside-out pocket.
    w = v.clone()
    cap = w[:, 2] > 0.4
    w[cap, 2] = -0.9
    inv = inverted_faces(w, f)
    assert 0 < int(inv.sum()) < f.shape[0]
    # Two overlapping outward spheres (a union of parts, like the procedural data) are valid.
    v2 = torch.cat([v, v + torch.tensor([0.3, 0.0, 0.0])])
    f2 = torch.cat([f, f + v.shape[0]])
    assert not bool(inverted_faces(v2, f2).any())


def test_frechet_and_kernel_distances() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(x, y)) < 0.05
    assert abs(kernel_distance(x, y)) < 0.01
    # Shift by 1 along one axis: Fréchet = |mu|^2 = 1 exactly (same covariance).
    assert frechet_distance(x, x + torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)) == pytest.approx(1.0)
    # Scale about the mean by 2: tr(S + 4S - 2*2S) = tr(S).
    xc = x - x.mean(0)
    assert frechet_distance(xc, 2 * xc) == pytest.approx(float(torch.cov(xc.T).trace()))
    assert kernel_distance(x, y + 2.0) > 0.1
    with pytest.raises(ValueError, match="frechet_distance"):
        frechet_distance(x[:1], y)


def test_chamfer_coverage_mmd_diversity() -> None:
    base = torch.rand(50, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.stack([base, base + 1.0, base + 2.0])                # 3 reference shapes
    gen = torch.stack([base + 0.01, base + 0.02, base + 2.0])         # two near ref 0, one at ref 2
    d = chamfer_matrix(gen, ref)
    assert d.shape == (3, 3)
    assert float(d[2, 2]) == pytest.approx(0.0, abs=1e-12)
    r = coverage_mmd(d)
    assert r["coverage"] == pytest.approx(2 / 3)
    assert r["mmd"] == pytest.approx(float((d[:, 0].min() + d[:, 1].min() + d[:, 2].min()) / 3))
    dd = chamfer_matrix(ref)
    torch.testing.assert_close(dd, dd.T)
    assert float(dd.diagonal().abs().max()) == 0.0
    assert mean_pairwise(dd) == pytest.approx(float(dd.sum() / 6))
    assert mean_pairwise(chamfer_matrix(torch.stack([base, base]))) == 0.0
