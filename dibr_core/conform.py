"""Conforming a mesh's silhouette to a mask by a smooth warp in the image plane of one view.

:func:`conform_silhouette` moves every vertex parallel to the image plane of a camera (its depth
along the view axis kept), by a smooth 2D displacement field that carries the boundary of the
mesh's hard silhouette onto the boundary of a target mask. It is a closed-form, few-millisecond
step (no optimiser, no gradients): Image to 3D applies it to the predictor's mesh in the input's
view, so the result matches the picture's outline before (and without) the refine.

The field, per round: the boundary pixels of the mesh's silhouette ``P`` and of the target ``T``
(pixel centres in NDC) are matched both ways by nearest neighbours; each ``P`` point's wanted
displacement is the mean of its own match's and of those of the ``T`` points that chose it (so a
part of ``T`` the silhouette does not reach, a wing tip, still pulls on its nearest ``P`` points).
Those displacements are smoothed by Nadaraya-Watson kernel regression with a Gaussian of
bandwidth ``sigma`` (NDC) and applied to ``P`` and to every projected vertex, each step scaled
down where its Jacobian would exceed :data:`CONFORM_MAX_STRETCH`; the bandwidths run from coarse
to fine, so the silhouette is first moved and scaled, then its parts are stretched. The next
round starts again from the warped mesh's own silhouette, with the fine bandwidths only
(:data:`CONFORM_SCHEDULE`). The same 2D field moves every depth alike, so as long as it does not
fold, the warp is one-to-one and adds no self-intersections; a round that still makes faces
cross (the field folds between the vertices of a coarse mesh) is pulled back
(:data:`CONFORM_PULL_BACK`).

Holes of the target (background it encloses) are filled first: a closed surface cannot open
them by moving, and their boundaries would pull the outline inward.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from dibr_core.camera import Camera
from dibr_core.mesh_queries import check_mesh, self_intersecting_faces
from dibr_core.silhouettes import _foreground, fill_holes, silhouette_boundary

__all__ = ["CONFORM_SCHEDULE", "CONFORM_MAX_STRETCH", "CONFORM_PULL_BACK", "ConformResult", "conform_silhouette"]

# The kernel bandwidths of each round (NDC units; a pixel of a 64 px image is 0.031), coarse to
# fine: the first round moves, scales and stretches the outline, the next ones (from an outline
# already in place) only need the fine bandwidths.
CONFORM_SCHEDULE: Tuple[Tuple[float, ...], ...] = ((0.3, 0.18, 0.11, 0.07, 0.045, 0.03), (0.05, 0.03), (0.03,))
# The largest Jacobian norm a step of the field may have at the silhouette's boundary and the
# vertices (each step is scaled down to it): below 1, a step is one-to-one there.
CONFORM_MAX_STRETCH = 0.7
# Fractions of a round's warp (from the round before) tried in turn until one adds no
# self-intersecting faces; when none does, the round with the next highest IoU is tried.
CONFORM_PULL_BACK: Tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)


@dataclass(frozen=True)
class ConformResult:
    """The result of :func:`conform_silhouette`.

    Attributes:
        vertices: (V, 3) the warped vertices (the input's when ``kept`` is False), input dtype.
        iou_before: silhouette IoU of the input mesh with the (unfilled) mask.
        iou: silhouette IoU of ``vertices`` with the mask.
        kept: whether the warp was kept (it raised the IoU and added no self-intersecting
            faces); else ``vertices`` are a copy of the input.
        rounds: the rounds of the schedule whose warp is in ``vertices`` (0 when not kept).
    """

    vertices: torch.Tensor
    iou_before: float
    iou: float
    kept: bool
    rounds: int


def _coverage(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, H: int, W: int) -> torch.Tensor:
    """(H, W) bool hard silhouette of one mesh in a batch-1 camera (rasterized in float32)."""
    from dibr_core.render import Meshes, RenderSettings, rasterize_meshes

    with torch.no_grad():
        frags = rasterize_meshes(Meshes(vertices.float()[None].contiguous(), faces), camera.to(dtype=torch.float32),
                                 RenderSettings(H, W))
    return frags.mask[0]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum()) / max(float((a | b).sum()), 1.0)


def _wanted(P: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(N, 2) displacement each point of P wants: the mean of its nearest T point's offset and
    the offsets of the T points whose nearest P point it is."""
    d = torch.cdist(P, T)                                   # (N, M)
    acc = T[d.argmin(dim=1)] - P
    count = torch.ones(P.shape[0], dtype=P.dtype)
    back = d.argmin(dim=0)                                  # (M,)
    acc.index_add_(0, back, T - P[back])
    count.index_add_(0, back, torch.ones(T.shape[0], dtype=P.dtype))
    return acc / count[:, None]


def _smoothed(x: torch.Tensor, P: torch.Tensor, d: torch.Tensor, sigma: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nadaraya-Watson estimate at points x (K, 2) of the displacements d (N, 2) given at P
    (N, 2), Gaussian kernel of bandwidth ``sigma``: (K, 2) values and the (K,) Frobenius norms
    of their Jacobians (a bound on the field's local stretch)."""
    w = torch.softmax(torch.cdist(x, P).square() * (-0.5 / (sigma * sigma)), dim=1)   # (K, N)
    # u = w d; du/dx = -(1/sigma^2) sum_i w_i (d_i - u)(x - P_i)^T = (w (d P^T) - u (w P)^T) / sigma^2
    m = w @ torch.cat([d, P, (d[:, :, None] * P[:, None, :]).reshape(-1, 4)], dim=1)      # (K, 8)
    u, wp, wdp = m[:, :2], m[:, 2:4], m[:, 4:].reshape(-1, 2, 2)
    jac = (wdp - u[:, :, None] * wp[:, None, :]) / (sigma * sigma)
    return u, jac.square().sum(dim=(1, 2)).sqrt()


def conform_silhouette(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, mask: torch.Tensor,
                       schedule: Sequence[Sequence[float]] = CONFORM_SCHEDULE, fill: bool = True) -> ConformResult:
    """Warp a mesh parallel to ``camera``'s image plane so that its silhouette matches ``mask``.

    See the module docstring. Of the rounds, the one with the highest silhouette IoU (hard
    render at the mask's resolution against ``mask > 0.5``) that adds no self-intersecting
    faces is returned (a round that adds some is first pulled back, :data:`CONFORM_PULL_BACK`);
    the input is returned unchanged (``kept`` False) when no round raises the IoU. Vertices
    behind the camera do not move. A discrete edit: the result carries no gradient.

    Args:
        vertices: (V, 3) float; faces: (F, 3) int.
        camera: a batch-1 :class:`Camera` whose projection keeps ``w`` independent of x and y
            (perspective or orthographic, any zoom and shift).
        mask: (H, W) target silhouette, float (foreground > 0.5) or bool, rows top to bottom.
        schedule: the kernel bandwidths (NDC units, each > 0) of each round, coarse to fine;
            a round starts from the silhouette of the mesh the one before left.
        fill: fill the holes of ``mask`` before matching outlines
            (:func:`dibr_core.silhouettes.fill_holes`).

    Returns:
        :class:`ConformResult`, its vertices on the input's device in its dtype.

    Raises:
        ValueError: bad shapes, an empty mask, a camera batch other than 1, a projection whose
            ``w`` depends on x or y, or a non-positive bandwidth.
    """
    fn = "conform_silhouette"
    v0, faces_l = check_mesh(fn, vertices, faces)
    target = _foreground(fn, mask)
    if camera.batch_size != 1:
        raise ValueError(f"{fn}(): camera must have batch 1, got {camera.batch_size}")
    bands = [[float(s) for s in r] for r in schedule]
    if not all(s > 0.0 for r in bands for s in r):
        raise ValueError(f"{fn}(): the schedule's bandwidths must all be > 0, got {bands}")
    if not bool(target.any()):
        raise ValueError(f"{fn}(): the mask ({target.shape[0]}x{target.shape[1]}) is empty")
    cam = camera.to(device=torch.device("cpu"), dtype=torch.float64)
    Pm = cam.projection[0]
    if bool(Pm[3, :2].abs().max() > 0):
        raise ValueError(f"{fn}(): the camera's projection makes w depend on x or y (row 3 = {Pm[3].tolist()})")
    H, W = int(target.shape[0]), int(target.shape[1])
    # The field is computed in float32 (pixel-sized steps need no more), the vertices in float64.
    T = silhouette_boundary(fill_holes(target) if fill else target).float()
    cover = _coverage(v0, faces_l, cam, H, W)
    iou_before = _iou(cover, target)
    view, A = cam.view[0], Pm[:2, :2]
    to_world = torch.linalg.inv(view[:3, :3])
    states, ious = [v0], [iou_before]               # after each round, unchecked for crossings
    for sig in bands:
        P = silhouette_boundary(cover).float()
        if P.shape[0] == 0:
            break
        pc = states[-1] @ view[:3, :3].T + view[:3, 3]             # (V, 3) camera space
        clip = pc @ Pm[:, :3].T + Pm[:, 3]                         # (V, 4)
        w = clip[:, 3:4]
        front = w[:, 0] > 1e-9
        q = (clip[:, :2] / torch.where(front[:, None], w, torch.ones_like(w))).float()
        q0 = q.clone()
        n = P.shape[0]
        for s in sig:
            d = _wanted(P, T)
            step, stretch = _smoothed(torch.cat([P, q[front]]), P, d, s)
            # A field whose Jacobian stays below 1 in norm moves no two points onto each other.
            top = float(stretch.max())
            a = min(1.0, CONFORM_MAX_STRETCH / top) if top > 0 else 1.0
            P = P + a * step[:n]
            q[front] = q[front] + a * step[n:]
        # Move each vertex in camera space at its depth: A (dx, dy) = w * (ndc' - ndc).
        dxy = torch.linalg.solve(A, ((q - q0).double() * w).T).T
        pc[:, :2] += torch.where(front[:, None], dxy, torch.zeros_like(dxy))
        states.append((pc - view[:3, 3]) @ to_world.T)             # back to world
        cover = _coverage(states[-1], faces_l, cam, H, W)
        ious.append(_iou(cover, target))
    # The best round that adds no self-intersecting faces; one that does (the field folded
    # between the vertices) is pulled back towards the round before it until it adds none.
    crossing: Optional[int] = None                   # the input's, counted when first needed
    for k in sorted(range(1, len(states)), key=lambda i: -ious[i]):
        if ious[k] <= iou_before:
            break
        for t in CONFORM_PULL_BACK:
            trial = states[k] if t == 1.0 else states[k - 1] + t * (states[k] - states[k - 1])
            iou = ious[k] if t == 1.0 else _iou(_coverage(trial, faces_l, cam, H, W), target)
            if iou <= iou_before:
                continue
            n = self_intersecting_faces(trial, faces_l)
            if n > 0 and crossing is None:
                crossing = self_intersecting_faces(v0, faces_l)
            if n == 0 or n <= (crossing or 0):
                return ConformResult(trial.to(vertices.device, vertices.dtype), iou_before, iou, True, k)
    return ConformResult(vertices.detach().clone(), iou_before, iou_before, False, 0)
