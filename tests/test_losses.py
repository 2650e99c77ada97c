"""Tests for dibr_core.losses."""
from __future__ import annotations

import math

import pytest
import torch

from dibr_core.losses import edge_length_loss, flatten_loss, iou_loss, laplacian_loss, masked_l1, silhouette_iou
from dibr_core.mesh import icosphere, uniform_laplacian

F64 = torch.float64


# ------------------------------------------------------------------------------------ laplacian
def test_laplacian_loss_literal() -> None:
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]], dtype=F64)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    # |L|^2 per vertex: 8/9, 1/2, 8/9, 1/2 (see test_mesh.test_uniform_laplacian_literal).
    expected = (8 / 9 + 0.5 + 8 / 9 + 0.5) / 4
    torch.testing.assert_close(laplacian_loss(v, f), torch.tensor(expected, dtype=F64))


def test_laplacian_loss_translation_invariant_and_batch_mean() -> None:
    v, f, _ = icosphere(1, dtype=F64)
    const = torch.tensor([1.0, 2.0, 3.0], dtype=F64).expand(1, v.shape[0], 3)
    assert float(laplacian_loss(const, f)) < 1e-20
    x = torch.randn(3, v.shape[0], 3, dtype=F64)
    lap = uniform_laplacian(x, f)
    torch.testing.assert_close(laplacian_loss(x, f), (lap**2).sum(-1).mean())
    per = torch.stack([laplacian_loss(x[i : i + 1], f) for i in range(3)])
    torch.testing.assert_close(laplacian_loss(x, f), per.mean())


# ------------------------------------------------------------------------------------ flatten
def _hinge(angle: float) -> torch.Tensor:
    """Two triangles sharing edge (0, 1) on the x axis, the second rotated by ``angle``."""
    return torch.tensor(
        [[[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -math.cos(angle), math.sin(angle)]]], dtype=F64
    )


_HINGE_FACES = torch.tensor([[0, 1, 2], [1, 0, 3]])


def test_flatten_loss_flat_and_hinge() -> None:
    flat = flatten_loss(_hinge(0.0), _HINGE_FACES)
    assert abs(float(flat)) < 1e-20
    torch.testing.assert_close(flatten_loss(_hinge(math.pi / 2), _HINGE_FACES), torch.tensor(1.0, dtype=F64))
    # General angle: cos between the normals is cos(angle), loss (cos - 1)^2.
    a = 0.7
    torch.testing.assert_close(flatten_loss(_hinge(a), _HINGE_FACES), torch.tensor((math.cos(a) - 1) ** 2, dtype=F64))


def test_flatten_loss_sphere_mean_over_edges() -> None:
    v, f, _ = icosphere(2, dtype=F64)
    loss = flatten_loss(v[None], f)
    assert 0.0 < float(loss) < 0.01
    # A coarser sphere is less flat.
    v1, f1, _ = icosphere(1, dtype=F64)
    assert float(flatten_loss(v1[None], f1)) > float(loss)


def test_flatten_loss_degenerate_no_nan() -> None:
    v = _hinge(0.5).clone()
    v[0, 3] = v[0, 0]  # second face degenerate
    v.requires_grad_(True)
    loss = flatten_loss(v, _HINGE_FACES)
    loss.backward()
    assert abs(loss.item() - 1.0) < 1e-9
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


def test_flatten_loss_gradcheck() -> None:
    v = _hinge(0.9).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: flatten_loss(t, _HINGE_FACES), (v,))


# ------------------------------------------------------------------------------------ edge length
def test_edge_length_loss_literal() -> None:
    tri = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0.5, math.sqrt(3) / 2, 0]]], dtype=F64)
    f = torch.tensor([[0, 1, 2]])
    assert abs(float(edge_length_loss(tri, f))) < 1e-20
    # Right isosceles triangle: squared lengths 1, 1, 2 -> mean 4/3, variance (1/9+1/9+4/9)/3 = 2/9.
    right = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=F64)
    torch.testing.assert_close(edge_length_loss(right, f), torch.tensor(2 / 9, dtype=F64))
    # Mean over the batch of the per-mesh variances.
    both = torch.cat([tri, right])
    torch.testing.assert_close(edge_length_loss(both, f), torch.tensor(1 / 9, dtype=F64))


# ------------------------------------------------------------------------------------ IoU / L1
def test_silhouette_iou_literal() -> None:
    a = torch.zeros(1, 4, 4)
    a[0, :, :2] = 1
    b = torch.zeros(1, 4, 4)
    b[0, :, 2:] = 1
    c = torch.zeros(1, 4, 4)
    c[0, :, 1:3] = 1  # overlaps a on one column of four
    pred = torch.cat([a, a, a])
    target = torch.cat([a, b, c])
    iou = silhouette_iou(pred, target)
    torch.testing.assert_close(iou, torch.tensor([1.0, 0.0, 1 / 3]))
    torch.testing.assert_close(iou_loss(pred, target), torch.tensor(1 - (1 + 0 + 1 / 3) / 3))


def test_silhouette_iou_soft_values() -> None:
    p = torch.full((1, 2, 2), 0.5, dtype=F64)
    t = torch.ones(1, 2, 2, dtype=F64)
    # sum(p t) = 2, sum(p + t - p t) = 4.
    torch.testing.assert_close(silhouette_iou(p, t), torch.tensor([0.5], dtype=F64))
    pr = torch.rand(2, 3, 3, dtype=F64, requires_grad=True)
    tg = (torch.rand(2, 3, 3, dtype=F64) > 0.5).to(F64)
    assert torch.autograd.gradcheck(lambda x: iou_loss(x, tg), (pr,))


def test_masked_l1_literal() -> None:
    pred = torch.zeros(1, 2, 2, 3)
    target = torch.zeros(1, 2, 2, 3)
    target[0, 0, 0] = torch.tensor([0.3, 0.6, 0.9])
    target[0, 1, 1] = 5.0  # outside the mask
    mask = torch.zeros(1, 2, 2)
    mask[0, 0, 0] = 1
    mask[0, 0, 1] = 1
    # (0.3 + 0.6 + 0.9) / (3 channels * 2 pixels)
    torch.testing.assert_close(masked_l1(pred, target, mask), torch.tensor(0.3))
    torch.testing.assert_close(masked_l1(pred, target, mask.bool()), torch.tensor(0.3))
    assert float(masked_l1(pred, target, torch.zeros(1, 2, 2))) == 0.0


def test_losses_bad_input() -> None:
    with pytest.raises(ValueError, match=r"silhouette_iou\(\): target must have shape \(B, H, W\) with B=1, H=4, W=4"):
        silhouette_iou(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match=r"masked_l1\(\): mask must have shape \(B, H, W\)"):
        masked_l1(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 1))
    with pytest.raises(ValueError, match=r"laplacian_loss\(\): offsets must have shape \(B, V, 3\)"):
        laplacian_loss(torch.zeros(4, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"flatten_loss\(\): faces is not manifold"):
        flatten_loss(torch.randn(1, 5, 3), torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
    with pytest.raises(TypeError, match=r"iou_loss\(\): target has dtype float64 but pred has float32"):
        iou_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=F64))
