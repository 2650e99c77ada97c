"""Conforming a mesh's silhouette to a mask (dibr_core.conform) and the mask helpers it uses
(dibr_core.silhouettes)."""
from __future__ import annotations

import math

import pytest
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.conform import conform_silhouette
from dibr_core.inference import InputView, _hard_masks, input_view_iou
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.silhouettes import fill_holes, silhouette_boundary


def _camera_depths(v: torch.Tensor, cam: Camera) -> torch.Tensor:
    return cam.to_camera(v.double()[None])[0, :, 2]


def test_silhouette_boundary_and_fill_holes() -> None:
    mask = torch.zeros(8, 8)
    mask[2:6, 2:6] = 1.0
    b = silhouette_boundary(mask)
    assert b.shape == (12, 2) and b.dtype == torch.float64      # the 4x4 square's ring
    # pixel (row 2, col 2): NDC x = -1 + 5/8, y = 1 - 5/8
    assert torch.allclose(b[0], torch.tensor([-0.375, 0.375], dtype=torch.float64))
    assert silhouette_boundary(torch.ones(3, 3)).shape == (8, 2)   # the image edge bounds it too
    assert silhouette_boundary(torch.zeros(4, 4)).shape == (0, 2)
    ring = torch.zeros(10, 10, dtype=torch.bool)
    ring[1:9, 1:9] = True
    ring[3:7, 3:7] = False
    ring[0:5, 5] = False                                          # a cut from the hole to the border
    filled = fill_holes(ring)
    assert filled.dtype == torch.bool and torch.equal(filled, ring)  # the "hole" reaches the border
    ring[1:3, 5] = True                                           # close the cut: a real hole now
    filled = fill_holes(ring.float())
    assert bool(filled[3:7, 3:7].all()) and int(filled.sum()) == 64
    with pytest.raises(ValueError, match=r"fill_holes\(\): mask"):
        fill_holes(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"silhouette_boundary\(\): mask"):
        silhouette_boundary(torch.zeros(5))


@pytest.mark.float_sensitive   # nearest-neighbour matches follow pixel positions a SIMD path may nudge
def test_a_sphere_takes_the_outline_of_a_stretched_one() -> None:
    """A sphere conformed to the silhouette of a sphere stretched 1.6x sideways and shifted up
    gets that outline (IoU 0.50 -> 0.997), keeps every vertex's depth along the view axis,
    and crosses itself nowhere."""
    v, f, _ = icosphere(3, 0.35)
    view = InputView(30.0)
    cam = view.camera()
    target_mesh = v * torch.tensor([1.6, 1.0, 1.6]) + torch.tensor([0.0, 0.12, 0.0])
    target = _hard_masks(target_mesh, f, cam, 64)[0].float()
    r = conform_silhouette(v, f, cam, target)
    before = input_view_iou(v, f, view, target)
    assert r.kept and r.rounds >= 1 and r.iou_before == pytest.approx(before)
    assert before < 0.6 and r.iou > 0.97, (before, r.iou)
    assert r.iou == pytest.approx(input_view_iou(r.vertices, f, view, target))
    assert r.vertices.dtype == v.dtype and r.vertices.shape == v.shape
    assert torch.allclose(_camera_depths(r.vertices, cam), _camera_depths(v, cam), atol=1e-5)
    assert self_intersecting_faces(r.vertices, f) == 0


def test_a_matching_mesh_is_returned_unchanged() -> None:
    v, f, _ = icosphere(2, 0.4)
    cam = InputView(0.0).camera()
    target = _hard_masks(v, f, cam, 48)[0]
    r = conform_silhouette(v, f, cam, target)
    assert not r.kept and r.rounds == 0 and r.iou == r.iou_before == 1.0
    assert torch.equal(r.vertices, v) and r.vertices is not v


@pytest.mark.float_sensitive
def test_orthographic_camera_and_holes_in_the_target() -> None:
    """Any projection whose w does not depend on x, y works (here orthographic); a hole of the
    target is filled before matching outlines, so the outline alone moves the mesh."""
    v, f, _ = icosphere(3, 0.3)
    cam = Camera.orthographic(look_at(torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)), 0.6)
    target = torch.zeros(64, 64)
    target[12:52, 6:58] = 1.0
    target[28:36, 28:36] = 0.0
    r = conform_silhouette(v, f, cam, target)
    assert r.kept and r.iou > r.iou_before + 0.3 and r.iou > 0.85, (r.iou_before, r.iou)
    assert torch.allclose(_camera_depths(r.vertices, cam), _camera_depths(v, cam), atol=1e-5)
    assert self_intersecting_faces(r.vertices, f) == 0


@pytest.mark.float_sensitive
@pytest.mark.parametrize("seed", range(4))
def test_random_outlines_never_make_the_mesh_cross_itself(seed: int) -> None:
    """Blobby random targets (unions of discs) far from the sphere's outline: the warp may not
    reach them, but whatever it returns raises the IoU and adds no self-intersecting faces."""
    g = torch.Generator().manual_seed(seed)
    v, f, _ = icosphere(3, 0.35)
    view = InputView(float(torch.randint(0, 24, (1,), generator=g)) * 15.0)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    target = torch.zeros(64, 64, dtype=torch.bool)
    for _ in range(5):
        cy, cx = (torch.rand(2, generator=g) * 30 + 17).tolist()
        rad = float(torch.rand(1, generator=g)) * 8 + 4
        target |= (yy - cy) ** 2 + (xx - cx) ** 2 < rad * rad
    r = conform_silhouette(v, f, view.camera(), target)
    assert r.iou >= r.iou_before
    assert self_intersecting_faces(r.vertices, f) == 0


def test_bad_input_is_refused_by_name() -> None:
    v, f, _ = icosphere(1, 0.4)
    cam = InputView(0.0).camera()
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1.0
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): the mask \(16x16\) is empty"):
        conform_silhouette(v, f, cam, torch.zeros(16, 16))
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): mask"):
        conform_silhouette(v, f, cam, mask[None])
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): vertices must have shape \(V, 3\)"):
        conform_silhouette(v[:, :2], f, cam, mask)
    two = Camera(cam.view.expand(2, 4, 4), cam.projection, cam.near, cam.far)
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): camera must have batch 1, got 2"):
        conform_silhouette(v, f, two, mask)
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): the schedule's bandwidths must all be > 0"):
        conform_silhouette(v, f, cam, mask, schedule=((0.1, 0.0),))
    odd = cam.projection.clone()
    odd[0, 3, 0] = 0.1
    with pytest.raises(ValueError, match=r"conform_silhouette\(\): the camera's projection makes w depend"):
        conform_silhouette(v, f, Camera(cam.view, odd, cam.near, cam.far), mask)
    assert math.isfinite(conform_silhouette(v, f, cam, mask, schedule=()).iou)
