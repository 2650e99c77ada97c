"""Mesh regularisers and image losses used to train with DIB-R.

All losses are plain means (no hidden scale factors). DIB-R's training re-implementation
multiplies its Laplacian loss by ``3 * V`` and its flatten loss by the edge count ``E``; callers
who want those magnitudes scale the weights instead.
"""
from __future__ import annotations

from typing import Dict

import torch

from dibr_core.checks import check_same_dtype, check_tensor
from dibr_core.mesh import _check_mesh, _edge_face_adjacency, _face_normals, _mesh_edges, _uniform_laplacian

__all__ = [
    "laplacian_loss",
    "flatten_loss",
    "edge_length_loss",
    "silhouette_iou",
    "iou_loss",
    "masked_l1",
]

_IOU_EPS = 1e-10
_L1_EPS = 1e-8


def laplacian_loss(offsets: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Smoothness of per-vertex offsets: mean over batch and vertices of ``|L(offsets)|^2``.

    ``L`` is the uniform Laplacian (mean of the 1-ring neighbours minus the vertex, see
    :func:`dibr_core.mesh.uniform_laplacian`). Applied to the offsets from a template, it is zero
    for any rigid translation of the template.

    Args:
        offsets: (B, V, 3) float, per-vertex offsets (or positions).
        faces: (F, 3) int, vertex indices per face.

    Returns:
        () float scalar.
    """
    f = _check_mesh("laplacian_loss", offsets, faces, vname="offsets")
    if offsets.shape[0] == 0 or offsets.shape[1] == 0:
        raise ValueError(f"laplacian_loss(): offsets is empty, got shape {tuple(offsets.shape)}")
    lap = _uniform_laplacian(offsets, f)
    return (lap * lap).sum(dim=-1).mean()


def flatten_loss(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """DIB-R's normal-consistency ("flatten") loss.

    For every interior edge shared by faces ``f1`` and ``f2``, with unit face normals ``n1``, ``n2``,
    the term is ``(cos(n1, n2) - 1)^2 = (n1 . n2 - 1)^2``; the loss is the mean over the batch and
    the interior edges (all edges of a closed mesh). Two coplanar faces give 0, a 90-degree hinge
    gives 1. Normals are normalised as ``n / sqrt(|n|^2 + 1e-24)``, so a degenerate face has a
    zero normal (its edges contribute 1) instead of NaN. A mesh without interior edges gives 0.

    Args:
        vertices: (B, V, 3) float, vertex positions.
        faces: (F, 3) int, counter-clockwise vertex indices per face; every edge must be shared
            by at most two faces.

    Returns:
        () float scalar.

    Raises:
        ValueError: if an edge is shared by more than two faces.
    """
    fn = "flatten_loss"
    f = _check_mesh(fn, vertices, faces)
    _, adj = _edge_face_adjacency(fn, f)
    if adj.shape[0] == 0 or vertices.shape[0] == 0:
        return (vertices * 0.0).sum()
    n = _face_normals(vertices, f, unit=True)  # (B, F, 3)
    cos = (n[:, adj[:, 0]] * n[:, adj[:, 1]]).sum(dim=-1)  # (B, E)
    return ((cos - 1.0) ** 2).mean()


def edge_length_loss(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unevenness of edge lengths: the variance of squared edge lengths per mesh.

    With ``s_e = |v_a - v_b|^2`` for every unique edge ``e = (a, b)`` of mesh ``b``, the loss is
    ``mean_{b, e} (s_e - mean_e s_e)^2``, where the inner mean is taken over the edges of the
    same mesh. It is 0 when all edges of each mesh have the same length (e.g. an equilateral
    triangle) and is invariant to translation and rotation.

    Args:
        vertices: (B, V, 3) float, vertex positions.
        faces: (F, 3) int, vertex indices per face.

    Returns:
        () float scalar.
    """
    fn = "edge_length_loss"
    f = _check_mesh(fn, vertices, faces)
    edges = _mesh_edges(f)
    if edges.shape[0] == 0 or vertices.shape[0] == 0:
        return (vertices * 0.0).sum()
    d = vertices[:, edges[:, 0]] - vertices[:, edges[:, 1]]
    sq = (d * d).sum(dim=-1)  # (B, E)
    return ((sq - sq.mean(dim=1, keepdim=True)) ** 2).mean()


def _check_masks(fn: str, pred: torch.Tensor, target: torch.Tensor) -> None:
    dims: Dict[str, int] = {}
    check_tensor(fn, "pred", pred, shape=("B", "H", "W"), dims=dims, dtype="float", finite=True)
    check_tensor(fn, "target", target, shape=("B", "H", "W"), dims=dims, dtype="float", finite=True, device=pred.device)
    check_same_dtype(fn, pred=pred, target=target)


def _silhouette_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    inter = (pred * target).sum(dim=(1, 2))
    union = (pred + target - pred * target).sum(dim=(1, 2))
    return inter / (union + _IOU_EPS)


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft intersection-over-union of silhouettes, per batch element.

    ``IoU = sum(p * t) / (sum(p + t - p * t) + 1e-10)``, summed over the pixels; values in
    [0, 1] (soft masks allowed). Two empty masks give 0.

    Args:
        pred: (B, H, W) float, predicted (soft) mask.
        target: (B, H, W) float, ground-truth mask.

    Returns:
        (B,) float, the IoU of each pair.
    """
    _check_masks("silhouette_iou", pred, target)
    return _silhouette_iou(pred, target)


def iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DIB-R's silhouette loss ``1 - mean_b IoU(pred_b, target_b)``.

    Args:
        pred: (B, H, W) float, predicted (soft) mask, e.g. DIB-R's soft silhouette.
        target: (B, H, W) float, ground-truth mask.

    Returns:
        () float scalar in [0, 1].
    """
    _check_masks("iou_loss", pred, target)
    if pred.shape[0] == 0:
        raise ValueError(f"iou_loss(): pred is empty (B=0), got shape {tuple(pred.shape)}")
    return 1.0 - _silhouette_iou(pred, target).mean()


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels and all channels.

    ``sum(|pred - target| * mask) / (C * sum(mask) + 1e-8)``: the average per-channel L1 error
    over the pixels inside the mask (a soft mask weights pixels). An empty mask gives 0.

    Args:
        pred: (B, H, W, C) float, rendered image.
        target: (B, H, W, C) float, ground-truth image.
        mask: (B, H, W) float or bool, pixel weights (e.g. the ground-truth silhouette).

    Returns:
        () float scalar.
    """
    fn = "masked_l1"
    dims: Dict[str, int] = {}
    check_tensor(fn, "pred", pred, shape=("B", "H", "W", "C"), dims=dims, dtype="float", finite=True)
    check_tensor(fn, "target", target, shape=("B", "H", "W", "C"), dims=dims, dtype="float", finite=True, device=pred.device)
    check_same_dtype(fn, pred=pred, target=target)
    check_tensor(fn, "mask", mask, shape=("B", "H", "W"), dims=dims, device=pred.device)
    if mask.dtype == torch.bool:
        m = mask.to(pred.dtype)
    else:
        check_tensor(fn, "mask", mask, dtype="float", finite=True)
        m = mask.to(pred.dtype)
    err = ((pred - target).abs() * m[..., None]).sum()
    return err / (pred.shape[-1] * m.sum() + _L1_EPS)
