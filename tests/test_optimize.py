"""End-to-end check: DIB-R's soft silhouette fits a sphere to another shape's silhouettes."""
from __future__ import annotations

import math
import time

import torch

from dibr_core import scenes
from dibr_core.camera import Camera, look_at
from dibr_core.losses import flatten_loss, iou_loss, laplacian_loss, silhouette_iou
from dibr_core.mesh import icosphere
from dibr_core.render import Meshes, RenderSettings, render

# Training views, and one held-out view that is only evaluated.
_EYES = torch.tensor([[0.0, 0.37, 2.2], [2.2, 0.59, 0.0], [0.0, 2.2, 0.37]])
_HELD_OUT_EYE = torch.tensor([[-1.54, -0.73, 1.54]])


def _target_mesh() -> tuple:
    """A squashed, shifted bumpy blob: clearly not a sphere (642 vertices)."""
    v, f, _ = scenes.blob(3)
    return v * torch.tensor([0.75, 0.5, 0.6]) + torch.tensor([0.05, 0.0, 0.0]), f


def test_fit_sphere_to_silhouettes() -> None:
    torch.manual_seed(0)
    # sigmainv 20000 at 64 px keeps the soft halo within about a third of a pixel, so the soft
    # optimum is close to the hard one; the default 7000 leaves the hard edge ~0.5 px inside.
    settings = RenderSettings(height=64, width=64, sigmainv=20000.0, backend="auto")
    fov = math.radians(40.0)
    cams = Camera.perspective(look_at(_EYES), fov)
    held_out = Camera.perspective(look_at(_HELD_OUT_EYE), fov)
    B = cams.batch_size

    tv, tf = _target_mesh()
    with torch.no_grad():
        target = render(Meshes(tv[None].expand(B, -1, -1), tf), cams, settings=settings).mask
        target_ho = render(Meshes(tv[None], tf), held_out, settings=settings).mask
    assert bool((target.sum(dim=(1, 2)) > 1000).all())

    v0, f, _ = icosphere(3, 0.6)
    offsets = torch.zeros_like(v0, requires_grad=True)
    opt = torch.optim.Adam([offsets], lr=0.01)

    def hard_iou(cam: Camera, tgt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            v = (v0 + offsets)[None].expand(cam.batch_size, -1, -1)
            return silhouette_iou(render(Meshes(v, f), cam, settings=settings).mask, tgt)

    iou_start = hard_iou(cams, target)
    iou_ho_start = hard_iou(held_out, target_ho)
    assert float(iou_start.max()) < 0.85, "the start must be far from the target"

    steps = 80
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        v = (v0 + offsets)[None].expand(B, -1, -1)
        out = render(Meshes(v, f), cams, settings=settings)
        loss = iou_loss(out.alpha, target) + 1.0 * laplacian_loss(offsets[None], f) + 1e-3 * flatten_loss(v[:1], f)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    elapsed = time.perf_counter() - t0

    iou = hard_iou(cams, target)
    iou_ho = hard_iou(held_out, target_ho)
    print(f"\nfit: {steps} Adam steps, {B} views at 64x64, {elapsed:.2f} s ({1000 * elapsed / steps:.1f} ms/step); "
          f"hard IoU {iou_start.tolist()} -> {iou.tolist()}, held-out {float(iou_ho_start):.3f} -> {float(iou_ho):.3f}")
    assert bool(torch.isfinite(offsets).all())
    assert losses[-1] < 0.1 * losses[0]
    assert bool((iou >= 0.95).all()), f"silhouette IoU per view {iou.tolist()} (need >= 0.95)"
    # The shape (not only the three silhouettes) moved toward the target.
    assert float(iou_ho) > float(iou_ho_start) + 0.03 and float(iou_ho) >= 0.85
