"""Metrics for generated shapes: validity, distribution distances on classifier features, and
3D coverage / minimum matching distance / diversity on Chamfer distances.

* Validity: a sample is valid when it has no inverted face
  (:func:`dibr_core.mesh_queries.inverted_faces`: the front side of the face lies in an
  inside-out region of the surface; the procedural data's unions of outward-oriented closed
  parts are valid by this test), a positive enclosed volume (:func:`signed_volume`) and a
  non-empty silhouette.
* Distribution distances between two feature sets X (N, D) and Y (M, D): the Fréchet distance
  of Gaussians fitted to them, ``|mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2))``, and the
  kernel distance (KID): the unbiased squared MMD with the cubic polynomial kernel
  ``k(a, b) = (a.b / D + 1)^3``. With features from an in-project classifier these are *not*
  FID/KID (which use Inception features); they are named ``frechet_classifier_distance`` and
  ``kernel_classifier_distance``.
* 3D: with a pairwise Chamfer matrix C (generated x reference), coverage is the fraction of
  reference shapes that are the nearest reference of at least one generated shape, MMD is the
  mean over reference shapes of their smallest distance to a generated shape, and the
  diversity of a set is its mean pairwise distance.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

__all__ = ["signed_volume", "frechet_distance", "kernel_distance", "chamfer_matrix", "coverage_mmd", "mean_pairwise"]


def signed_volume(vertices: torch.Tensor, faces: torch.Tensor) -> float:
    """Enclosed volume of a closed mesh (positive for outward-oriented faces)."""
    tri = vertices.detach().double()[faces.long()]
    return float((tri[:, 0] * torch.cross(tri[:, 1], tri[:, 2], dim=-1)).sum() / 6.0)


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    w, u = np.linalg.eigh((m + m.T) / 2)
    return (u * np.sqrt(np.clip(w, 0, None))) @ u.T


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to (N, D) and (M, D) features (N, M >= 2)."""
    a = x.detach().double().cpu().numpy()
    b = y.detach().double().cpu().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance(): need (N, D) and (M, D) features with N, M >= 2, "
                         f"got {a.shape} and {b.shape}")
    mu = a.mean(0) - b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr((Sa Sb)^(1/2)) = tr((Sa^(1/2) Sb Sa^(1/2))^(1/2)), which stays symmetric.
    ra = _sqrtm_psd(sa)
    cross = np.trace(_sqrtm_psd(ra @ sb @ ra))
    return float(mu @ mu + np.trace(sa) + np.trace(sb) - 2.0 * cross)


def kernel_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased squared MMD with the kernel ``(a.b / D + 1)^3`` between (N, D) and (M, D) features."""
    a, b = x.detach().double(), y.detach().double()
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"kernel_distance(): need (N, D) and (M, D) features with N, M >= 2, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    d = a.shape[1]
    kxx = (a @ a.T / d + 1) ** 3
    kyy = (b @ b.T / d + 1) ** 3
    kxy = (a @ b.T / d + 1) ** 3
    n, m = a.shape[0], b.shape[0]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def chamfer_matrix(a: torch.Tensor, b: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pairwise symmetric Chamfer distances ((mean d(a->b) + mean d(b->a)) / 2, Euclidean).

    Args:
        a: (N, P, 3) point sets; b: (M, Q, 3) point sets (default: ``a``).
    Returns:
        (N, M) float64.
    """
    x = a.detach().double()
    y = x if b is None else b.detach().double()
    out = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):
        d = torch.cdist(x[i][None].expand(y.shape[0], -1, -1), y,
                        compute_mode="donot_use_mm_for_euclid_dist")          # (M, P, Q)
        out[i] = (d.min(dim=2).values.mean(dim=1) + d.min(dim=1).values.mean(dim=1)) / 2
    return out


def coverage_mmd(dist: torch.Tensor) -> Dict[str, float]:
    """Coverage and minimum matching distance from a (generated N, reference M) distance matrix."""
    if dist.dim() != 2 or dist.shape[0] == 0 or dist.shape[1] == 0:
        raise ValueError(f"coverage_mmd(): need a non-empty (N, M) matrix, got {tuple(dist.shape)}")
    nearest_ref = dist.argmin(dim=1)
    coverage = float(torch.unique(nearest_ref).numel()) / dist.shape[1]
    mmd = float(dist.min(dim=0).values.mean())
    return {"coverage": coverage, "mmd": mmd}


def mean_pairwise(dist: torch.Tensor) -> float:
    """Mean off-diagonal entry of a square (N, N) distance matrix (N >= 2)."""
    n = dist.shape[0]
    if dist.dim() != 2 or dist.shape[1] != n or n < 2:
        raise ValueError(f"mean_pairwise(): need a square (N, N) matrix with N >= 2, got {tuple(dist.shape)}")
    return float((dist.sum() - dist.diagonal().sum()) / (n * (n - 1)))
