"""Camera refinement during a fit: the correction's parameterisation and the recovery of a
camera turned by 5 degrees and moved by 5 % of its distance."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from dibr_core.eval import fit as fit_benchmark
from dibr_core.camera import Camera
from dibr_core.camera_refine import CameraParams, axis_angle_matrix
from dibr_core.fit import FitOptions, FitView, fit
from helpers import one_torch_thread  # noqa: F401  (fixture)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # small fits: faster on one thread


def _rotation_error_deg(a: Camera, b: Camera) -> float:
    ra, rb = a.view[0, :3, :3].double(), b.view[0, :3, :3].double()
    return math.degrees(math.acos(float(((torch.trace(ra @ rb.T) - 1) / 2).clamp(-1, 1))))


def test_axis_angle_matrix() -> None:
    r = axis_angle_matrix(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    assert torch.allclose(r @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                          torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), atol=1e-12)
    w = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    r = axis_angle_matrix(w)
    assert torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert math.isclose(float(torch.det(r)), 1.0, abs_tol=1e-12)
    assert torch.allclose(r @ w, w, atol=1e-12)          # the axis is fixed
    for w0 in (torch.zeros(3, dtype=torch.float64), w):
        x = w0.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(axis_angle_matrix, (x,))


def test_zero_correction_is_the_given_camera() -> None:
    cam = fit_benchmark._split(fit_benchmark.ring_cameras(3))[1]
    params = CameraParams(cam, torch.tensor([0.1, 0.0, -0.1]), focal=True)
    now = params.current()
    assert torch.allclose(now.view, cam.view, atol=1e-6)
    assert torch.allclose(now.projection, cam.projection)
    corr = params.correction("c")
    assert corr.rotation_deg < 1e-2 and corr.translation_pct < 1e-4 and corr.focal_scale == 1.0


def test_refinement_recovers_a_moved_camera() -> None:
    """One view of a known mesh (geometry and colours fixed), its camera turned by 5 degrees about
    an oblique axis and moved by 5 % of its distance: 300 steps bring it back to within 0.5
    degrees and 0.5 % of the distance, and the report gives the correction."""
    tv, tf = fit_benchmark.head_mesh()
    colours = (0.5 + 0.4 * tv / 0.9).clamp(0, 1)
    ring = fit_benchmark.ring_cameras(2)
    true = fit_benchmark._split(ring)[0]
    rgb, mask = fit_benchmark._render_masks(tv, tf, true, 128, colours)
    axis = torch.tensor([0.3, 0.8, -0.5])
    turn = axis_angle_matrix(axis / axis.norm() * math.radians(5.0))
    move = torch.tensor([0.6, -0.2, 0.77])
    centre = true.center[0]
    dist = float(centre.norm())
    rot = true.view[0, :3, :3] @ turn.T
    c2 = centre + 0.05 * dist * move / move.norm()
    view = torch.eye(4)
    view[:3, :3] = rot
    view[:3, 3] = -(rot @ c2)
    moved = Camera(view[None], true.projection, true.near, true.far)
    assert 4.99 < _rotation_error_deg(moved, true) < 5.01

    opts = FitOptions(steps=300, optimize_vertices=False, optimize_colors=False, optimize_cameras=True)
    res = fit(tv, tf, [FitView(moved, rgb[0], mask[0], "cam")], opts, colors=colours)
    got = res.cameras[0]
    rot_err = _rotation_error_deg(got, true)
    pos_err = 100.0 * float((got.center[0] - centre).norm()) / dist
    assert rot_err <= 0.5, rot_err
    assert pos_err <= 0.5, pos_err
    corr = res.camera_corrections[0]
    assert corr.name == "cam" and abs(corr.rotation_deg - 5.0) < 0.5 and abs(corr.translation_pct - 5.0) < 1.0
    assert res.views[0].silhouette_iou > 0.98


def test_focal_refinement_runs_and_reports() -> None:
    tv, tf = fit_benchmark.head_mesh()
    cam = fit_benchmark._split(fit_benchmark.ring_cameras(2))[0]
    rgb, mask = fit_benchmark._render_masks(tv, tf, cam, 32)
    opts = FitOptions(steps=3, optimize_cameras=True, optimize_focal=True, lr_cameras=0.01)
    res = fit(tv * 1.1, tf, [FitView(cam, rgb[0], mask[0], "c")], opts)
    assert res.camera_corrections[0].focal_scale != 1.0
    assert len(res.cameras) == 1 and bool(torch.isfinite(res.cameras[0].view).all())
    # optimize_focal alone implies the pose refinement (optimized() says "cameras" for it too).
    alone = fit(tv * 1.1, tf, [FitView(cam, rgb[0], mask[0], "c")], replace(opts, optimize_cameras=False))
    assert "cameras" in replace(opts, optimize_cameras=False).optimized()
    assert alone.camera_corrections[0].focal_scale == res.camera_corrections[0].focal_scale
    # Without refinement the result carries the given cameras and no corrections.
    plain = fit(tv, tf, [FitView(cam, rgb[0], mask[0], "c")], FitOptions(steps=1))
    assert plain.camera_corrections == [] and plain.cameras[0] is cam
