"""Cutting a silhouette's holes through a closed mesh (dibr_core.carve)."""
from __future__ import annotations

import pytest
import torch

from dibr_core.carve import carve_view_holes
from dibr_core.inference import InputView, _hard_masks, input_view_iou
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.remesh import check_closed_manifold
from dibr_core.silhouettes import enclosed_holes


def _disk() -> tuple:
    """A thin disk (an icosphere flattened along z to a tenth) facing the azimuth-0, elevation-0
    camera, its UVs, and that view."""
    v, f, uv = icosphere(4, 0.4)
    return v * torch.tensor([1.0, 1.0, 0.1]), f, uv, InputView(0.0, 0.0)


def test_enclosed_holes_labels_only_the_background_the_silhouette_encloses() -> None:
    mask = torch.zeros(20, 20)
    mask[2:18, 2:18] = 1.0
    mask[5:8, 5:8] = 0.0             # a hole of 9 pixels
    mask[11:13, 11:12] = 0.0         # a hole of 2 pixels
    mask[0:10, 0:1] = 1.0
    mask[4:6, 0:3] = 0.0             # background that reaches the border: not a hole
    labels = enclosed_holes(mask)
    assert int(labels.max()) == 2 and int((labels > 0).sum()) == 11
    assert labels[6, 6] > 0 and labels[11, 11] > 0 and labels[6, 6] != labels[11, 11]
    assert int(labels[4:6, 0:3].max()) == 0 and int(labels[mask > 0.5].max()) == 0
    small_dropped = enclosed_holes(mask, min_pixels=3)
    assert int(small_dropped.max()) == 1 and int(small_dropped[11, 11]) == 0
    assert int(enclosed_holes(torch.ones(5, 5)).max()) == 0


@pytest.mark.float_sensitive   # the patches and the zip follow projected positions a SIMD path may nudge
def test_a_membrane_over_a_hole_becomes_a_tunnel() -> None:
    """A thin disk whose silhouette has a square hole: the two sheets over the hole are cut out
    and joined by a tube, so the mesh is one closed surface of genus 1 that no longer covers the
    hole, crosses itself nowhere, and keeps UVs for every face."""
    v, f, uv, view = _disk()
    cam = view.camera()
    target = _hard_masks(v, f, cam, 64)[0].float()
    target[26:38, 26:38] = 0.0
    c = carve_view_holes(v, f, cam, target, uv)
    assert c.holes == 1 and c.skipped == 0 and c.reasons == ()
    rep = check_closed_manifold(c.faces, c.vertices.shape[0])
    assert rep.ok and rep.genus == 1, rep.problems()
    assert self_intersecting_faces(c.vertices, c.faces) == 0
    assert torch.equal(c.vertices, v[c.vertex_index])
    assert c.face_uvs is not None and c.face_uvs.shape == (c.faces.shape[0], 3, 2)
    before, after = input_view_iou(v, f, view, target), input_view_iou(c.vertices, c.faces, view, target)
    # measured: 0.849 -> 0.994
    assert before < 0.9 and after > 0.98, (before, after)
    covered = _hard_masks(c.vertices, c.faces, cam, 64)[0]
    assert not bool(covered[29:35, 29:35].any()) and bool(covered[20, 32])


def test_without_holes_or_without_a_membrane_the_mesh_is_kept() -> None:
    v, f, uv, view = _disk()
    cam = view.camera()
    full = _hard_masks(v, f, cam, 64)[0].float()
    c = carve_view_holes(v, f, cam, full, uv)
    assert c.holes == 0 and c.skipped == 0 and c.vertices is v and torch.equal(c.faces, f)
    # a hole the mesh does not cover at all (outside the disk's silhouette, ringed by the target)
    ring = full.clone()
    ring[0:6, 0:6] = 1.0
    ring[2:4, 2:4] = 0.0
    c = carve_view_holes(v, f, cam, ring, uv)
    assert c.holes == 0 and c.skipped == 1 and c.vertices is v
    assert c.reasons == ("hole 1: 0 patches of faces project into it, not 2",) or "no patch" in c.reasons[0], c.reasons


def test_carve_view_holes_rejects_bad_arguments() -> None:
    v, f, uv, view = _disk()
    cam = view.camera()
    with pytest.raises(ValueError, match=r"carve_view_holes\(\): mask must have shape \(H, W\)"):
        carve_view_holes(v, f, cam, torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match=r"carve_view_holes\(\): face_uvs"):
        carve_view_holes(v, f, cam, torch.ones(8, 8), uv[:5])
    with pytest.raises(ValueError, match=r"carve_view_holes\(\): camera must hold one camera"):
        two = InputView(0.0).camera()
        two = type(two)(two.view.repeat(2, 1, 1), two.projection.repeat(2, 1, 1), two.near, two.far)
        carve_view_holes(v, f, two, torch.ones(8, 8))


def test_the_refine_cuts_holes_through_its_start_before_the_fit() -> None:
    """inference._early_carved: the prediction, remeshed like the fit's first remesh, gets the
    picture's hole cut through it (one handle, colours carried to the kept vertices); a picture
    without holes, or a cut that barely raises the IoU, leaves the start alone."""
    from dibr_core import inference

    view = _disk()[3]
    v2, f2, _ = icosphere(2, 0.4)
    v2 = v2 * torch.tensor([1.0, 1.0, 0.1])
    colors = torch.rand(v2.shape[0], 3, generator=torch.Generator().manual_seed(0))
    cam = view.camera()
    target = _hard_masks(v2, f2, cam, 64)[0].float()
    opts = inference.refine_options()
    assert inference._early_carved(v2, f2, colors, view, target, opts) is None        # no hole
    target[24:40, 24:40] = 0.0
    out = inference._early_carved(v2, f2, colors, view, target, opts)
    assert out is not None
    vc, fc, cc, holes = out
    assert holes == 1 and cc.shape == (vc.shape[0], 3) and float(cc.min()) >= 0.0 and float(cc.max()) <= 1.0
    rep = check_closed_manifold(fc, vc.shape[0])
    assert rep.ok and rep.genus == 1, rep.problems()
    assert input_view_iou(vc, fc, view, target) > input_view_iou(v2, f2, view, target) + inference.REFINE_EARLY_CARVE_GAIN
    tiny = _hard_masks(v2, f2, cam, 64)[0].float()
    tiny[31:33, 31:33] = 0.0                      # a 4-pixel hole: the cut would gain too little
    assert inference._early_carved(v2, f2, colors, view, tiny, opts) is None
