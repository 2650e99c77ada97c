"""Tests for dibr_core.camera: view and projection matrices, NDC and image orientation."""
from __future__ import annotations

import math

import pytest
import torch

import numpy as np

from dibr_core.camera import (
    Camera,
    clip_to_ndc,
    look_at,
    orthographic_projection,
    perspective_projection,
    transform_points,
)
from dibr_core.render import Meshes, RenderSettings, render
from helpers import assert_close

F64 = torch.float64


def _project(cam: Camera, p_world: torch.Tensor) -> torch.Tensor:
    """(N, 3) world points -> (N, 3) NDC for a batch-1 camera."""
    return clip_to_ndc(cam.to_clip(cam.to_camera(p_world[None])))[0]


# ---------------------------------------------------------------------------------------------
# look_at
# ---------------------------------------------------------------------------------------------
def test_look_at_on_z_axis_is_identity_rotation() -> None:
    view = look_at([0.0, 0.0, 3.0], dtype=F64)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0],
                             [0.0, 1.0, 0.0, 0.0],
                             [0.0, 0.0, 1.0, -3.0],
                             [0.0, 0.0, 0.0, 1.0]], dtype=F64)
    assert view.shape == (1, 4, 4)
    assert_close(view[0], expected, atol=1e-15, rtol=0)


def test_look_at_from_plus_x_literal() -> None:
    # Camera at (3, 0, 0) looking at the origin: its backward axis z is +X, its right axis is -Z.
    view = look_at([3.0, 0.0, 0.0], dtype=F64)[0]
    R = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=F64)
    assert_close(view[:3, :3], R, atol=1e-15, rtol=0)
    assert_close(view[:3, 3], torch.tensor([0.0, 0.0, -3.0], dtype=F64), atol=1e-15, rtol=0)
    # The origin lies 3 units down the camera's -Z axis.
    p = view @ torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=F64)
    assert_close(p, torch.tensor([0.0, 0.0, -3.0, 1.0], dtype=F64), atol=1e-15, rtol=0)


def test_look_at_rotation_is_orthonormal_and_right_handed() -> None:
    g = torch.Generator().manual_seed(0)
    eye = torch.randn(6, 3, generator=g, dtype=F64) * 4
    at = torch.randn(6, 3, generator=g, dtype=F64) * 0.2
    view = look_at(eye, at, dtype=F64)
    R = view[:, :3, :3]
    assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=F64).expand(6, 3, 3), atol=1e-12, rtol=0)
    assert_close(torch.linalg.det(R), torch.ones(6, dtype=F64), atol=1e-12, rtol=0)
    # `at` is straight ahead (on the camera's -Z axis) and the world up hint points to +Y in camera space.
    cam = Camera.perspective(view, 1.0)
    at_cam = cam.to_camera(at[:, None])[:, 0]
    assert_close(at_cam[:, :2], torch.zeros(6, 2, dtype=F64), atol=1e-12, rtol=0)
    assert bool((at_cam[:, 2] < 0).all())
    up_cam = (R @ torch.tensor([0.0, 1.0, 0.0], dtype=F64))
    assert bool((up_cam[:, 1] > 0).all())


def test_camera_center_round_trip() -> None:
    g = torch.Generator().manual_seed(1)
    eye = torch.randn(5, 3, generator=g, dtype=F64) * 3 + torch.tensor([0.0, 0.0, 5.0], dtype=F64)
    at = torch.randn(5, 3, generator=g, dtype=F64)
    cam = Camera.perspective(look_at(eye, at, dtype=F64), math.radians(50.0))
    assert_close(cam.center, eye, atol=1e-12, rtol=0)
    # The centre maps to the camera-space origin.
    assert_close(cam.to_camera(cam.center[:, None])[:, 0], torch.zeros(5, 3, dtype=F64), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------
def test_perspective_projection_literal_entries() -> None:
    # fov 90 degrees: 1 / tan(45) = 1; aspect 2; near 1, far 3.
    P = perspective_projection(math.pi / 2, aspect=2.0, near=1.0, far=3.0, dtype=F64)
    expected = torch.tensor([[0.5, 0.0, 0.0, 0.0],
                             [0.0, 1.0, 0.0, 0.0],
                             [0.0, 0.0, -2.0, -3.0],
                             [0.0, 0.0, -1.0, 0.0]], dtype=F64)
    assert P.shape == (1, 4, 4)
    assert_close(P[0], expected, atol=1e-15, rtol=0)


def test_perspective_ndc_depth_range() -> None:
    near, far = 0.5, 20.0
    cam = Camera.perspective(torch.eye(4, dtype=F64)[None], math.radians(60.0), 1.5, near, far)
    pts = torch.tensor([[0.0, 0.0, -near], [0.1, -0.2, -near], [0.0, 0.0, -far], [3.0, 2.0, -far],
                        [0.0, 0.0, -2.0]], dtype=F64)
    ndc = _project(cam, pts)
    assert_close(ndc[:2, 2], torch.tensor([-1.0, -1.0], dtype=F64), atol=1e-12, rtol=0)
    assert_close(ndc[2:4, 2], torch.tensor([1.0, 1.0], dtype=F64), atol=1e-12, rtol=0)
    assert -1.0 < float(ndc[4, 2]) < 1.0


def test_orthographic_projection_literal_entries_and_depth_range() -> None:
    P = orthographic_projection(2.0, aspect=1.5, near=0.5, far=10.5, dtype=F64)
    expected = torch.tensor([[1.0 / 3.0, 0.0, 0.0, 0.0],
                             [0.0, 0.5, 0.0, 0.0],
                             [0.0, 0.0, -0.2, -1.1],
                             [0.0, 0.0, 0.0, 1.0]], dtype=F64)
    assert_close(P[0], expected, atol=1e-15, rtol=0)
    cam = Camera(torch.eye(4, dtype=F64)[None], P, 0.5, 10.5)
    ndc = _project(cam, torch.tensor([[0.0, 0.0, -0.5], [3.0, 2.0, -10.5], [3.0, -2.0, -4.0]], dtype=F64))
    assert_close(ndc[:, 2], torch.tensor([-1.0, 1.0, ndc[2, 2].item()], dtype=F64), atol=1e-12, rtol=0)
    # The view volume's corners map to the NDC square, independent of depth.
    assert_close(ndc[1:, :2], torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64), atol=1e-12, rtol=0)


def test_from_world_matrix_equals_look_at() -> None:
    P = perspective_projection(math.radians(45.0), dtype=F64)
    # Literal world matrix of a camera at (3, 0, 0) looking at the origin: columns are the camera's
    # right (0, 0, -1), up (0, 1, 0) and backward (1, 0, 0) axes, then its position.
    M = torch.tensor([[0.0, 0.0, 1.0, 3.0],
                      [0.0, 1.0, 0.0, 0.0],
                      [-1.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]], dtype=F64)[None]
    cam = Camera.from_world_matrix(M, P)
    assert_close(cam.view, look_at([3.0, 0.0, 0.0], dtype=F64), atol=1e-12, rtol=0)
    # A general pose: the world matrix is the inverse of the view matrix.
    eyes = torch.tensor([[1.0, 2.0, 3.0], [-2.0, 0.5, -1.0]], dtype=F64)
    view = look_at(eyes, torch.tensor([[0.1, -0.2, 0.0], [0.0, 0.3, 0.2]], dtype=F64), dtype=F64)
    cam2 = Camera.from_world_matrix(torch.linalg.inv(view), P)
    assert_close(cam2.view, view, atol=1e-12, rtol=0)
    assert_close(cam2.center, torch.tensor([[1.0, 2.0, 3.0], [-2.0, 0.5, -1.0]], dtype=F64), atol=1e-12, rtol=0)


def test_optical_axis_projects_to_ndc_origin() -> None:
    view = look_at(torch.tensor([[2.0, 1.0, 4.0]], dtype=F64), torch.tensor([[0.3, -0.1, 0.2]], dtype=F64),
                   dtype=F64)
    cam = Camera.perspective(view, math.radians(35.0), aspect=1.7)
    eye = torch.tensor([2.0, 1.0, 4.0], dtype=F64)
    at = torch.tensor([0.3, -0.1, 0.2], dtype=F64)
    pts = eye + torch.tensor([0.5, 1.0, 3.0], dtype=F64)[:, None] * (at - eye)  # on the axis, in front
    ndc = _project(cam, pts)
    assert_close(ndc[:, :2], torch.zeros(3, 2, dtype=F64), atol=1e-12, rtol=0)


def test_top_of_frustum_is_ndc_y_plus_one_and_image_row_zero() -> None:
    fov = math.radians(60.0)
    aspect = 1.25
    cam = Camera.perspective(torch.eye(4, dtype=F64)[None], fov, aspect)
    d = 3.0
    t = d * math.tan(fov / 2)
    ndc = _project(cam, torch.tensor([[0.0, t, -d], [0.0, -t, -d], [t * aspect, 0.0, -d], [-t * aspect, 0.0, -d]],
                                     dtype=F64))
    assert_close(ndc[:, :2], torch.tensor([[0.0, 1.0], [0.0, -1.0], [1.0, 0.0], [-1.0, 0.0]], dtype=F64),
                 atol=1e-12, rtol=0)

    # A wide triangle covering NDC y in [0.75, 1.2] (top of the frustum) covers only image rows 0 and
    # 1 of a 16-row image: pixel row i has its centre at Y_i = (H - 2i - 1) / H.
    H = W = 16
    sq = Camera.perspective(torch.eye(4, dtype=F64)[None], fov, 1.0)
    y0, y1 = 0.75 * t, 1.2 * t
    verts = torch.tensor([[[-5.0, y0, -d], [5.0, y0, -d], [0.0, y1 + 10 * (y1 - y0), -d]]], dtype=F64)
    faces = torch.tensor([[0, 1, 2]])
    out = render(Meshes(verts, faces), sq, settings=RenderSettings(height=H, width=W))
    rows = out.mask[0].sum(dim=1)
    assert rows[:2].tolist() == [W, W]
    assert rows[2:].sum().item() == 0
    # And a triangle at the right of the view covers only the last columns.
    verts_r = torch.tensor([[[0.75 * t, -5.0, -d], [0.75 * t + 10.0, 0.0, -d], [0.75 * t, 5.0, -d]]], dtype=F64)
    cols = render(Meshes(verts_r, faces), sq, settings=RenderSettings(height=H, width=W)).mask[0].sum(dim=0)
    assert cols[-2:].tolist() == [H, H]
    assert cols[:-2].sum().item() == 0


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fov", [0.0, -0.5, math.pi, 4.0])
def test_perspective_projection_rejects_bad_fov(fov: float) -> None:
    with pytest.raises(ValueError, match=r"perspective_projection\(\): fov_y must be in \(0, pi\)"):
        perspective_projection(fov)


@pytest.mark.parametrize("near,far", [(1.0, 1.0), (2.0, 1.0), (0.0, 10.0), (-1.0, 5.0)])
def test_perspective_projection_rejects_bad_near_far(near: float, far: float) -> None:
    with pytest.raises(ValueError, match=r"perspective_projection\(\): need 0 < near < far, got near="):
        perspective_projection(1.0, near=near, far=far)


def test_perspective_projection_rejects_bad_aspect() -> None:
    with pytest.raises(ValueError, match=r"perspective_projection\(\): aspect must be positive"):
        perspective_projection(1.0, aspect=0.0)


def test_orthographic_projection_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"orthographic_projection\(\): half_height and aspect must be positive"):
        orthographic_projection(0.0)
    with pytest.raises(ValueError, match=r"orthographic_projection\(\): need 0 <= near < far"):
        orthographic_projection(1.0, near=3.0, far=2.0)


def test_camera_rejects_wrong_matrix_shapes() -> None:
    P = perspective_projection(1.0)
    with pytest.raises(ValueError, match=r"Camera\(\): view must have shape \(B, 4, 4\), got \(4, 4\)"):
        Camera(torch.eye(4), P)
    with pytest.raises(ValueError, match=r"Camera\(\): view must have shape \(B, 4, 4\), got \(1, 3, 3\)"):
        Camera(torch.eye(3)[None], P)
    with pytest.raises(ValueError, match=r"Camera\(\): projection must have shape \(\*, 4, 4\)"):
        Camera(torch.eye(4)[None], torch.eye(3)[None])
    with pytest.raises(ValueError, match=r"Camera\(\): projection must have shape \(1, 4, 4\) or \(2, 4, 4\)"):
        Camera(torch.eye(4).expand(2, 4, 4), P.expand(3, 4, 4))
    with pytest.raises(ValueError, match=r"Camera.from_world_matrix\(\): camera_to_world must have shape"):
        Camera.from_world_matrix(torch.eye(4), P)
    with pytest.raises(ValueError, match=r"Camera\(\): need 0 <= near < far"):
        Camera(torch.eye(4)[None], P, near=5.0, far=1.0)


def test_camera_rejects_dtype_mismatch_and_nan() -> None:
    with pytest.raises(TypeError, match=r"Camera\(\): projection must have dtype float64"):
        Camera(torch.eye(4, dtype=F64)[None], perspective_projection(1.0, dtype=torch.float32))
    bad = torch.eye(4)[None].clone()
    bad[0, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"Camera\(\): view contains NaN"):
        Camera(bad, perspective_projection(1.0))


def test_look_at_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"look_at\(\): eye and at must differ"):
        look_at([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"look_at\(\): up is parallel to the viewing direction"):
        look_at([0.0, 5.0, 0.0])
    with pytest.raises(ValueError, match=r"look_at\(\): eye must have shape \(B, 3\), got "):
        look_at([1.0, 2.0])


def test_look_at_names_overflow_not_up() -> None:
    # 3e30 is a finite float32, but its square (the distance to `at`) is not: the error says so
    # instead of blaming the up vector.
    with pytest.raises(ValueError, match=r"look_at\(\): eye - at overflows torch.float32 \(camera 0: eye="):
        look_at([0.0, 0.0, 3e30])
    with pytest.raises(ValueError, match=r"look_at\(\): eye - at overflows"):
        look_at([[0.0, 0.0, 3.0], [0.0, 0.0, 3e38]], [0.0, 0.0, -3e38])
    with pytest.raises(ValueError, match=r"look_at\(\): eye contains NaN or Inf"):
        look_at([0.0, 0.0, 1e39])
    with pytest.raises(ValueError, match=r"look_at\(\): up must be a non-zero vector"):
        look_at([0.0, 0.0, 3.0], up=[0.0, 0.0, 0.0])
    # The same camera in float64 is fine, and a large but representable scene still works.
    assert bool(torch.isfinite(look_at([0.0, 0.0, 3e30], dtype=F64)).all())
    assert bool(torch.isfinite(look_at([0.0, 1e15, 3e15])).all())


# ---------------------------------------------------------------------------------------------
# transform_points: bitwise independent of batch shape and BLAS
# ---------------------------------------------------------------------------------------------
@pytest.mark.float_sensitive
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_transform_points_is_exact_elementwise_arithmetic(dtype: torch.dtype) -> None:
    """Every output is ((x m0 + y m1) + z m2) + t with each operation rounded once: equal bit for
    bit to numpy's elementwise float arithmetic, whatever the batch shape. (A batched matmul
    does not promise this; on an AVX-512 Xeon MKL's result for one mesh differed in the last bit
    alone and in a batch.)"""
    g = torch.Generator().manual_seed(4)
    pts = (torch.randn(3, 1000, 3, generator=g) * 3).to(dtype)
    lin = torch.randn(3, 4, 3, generator=g).to(dtype)
    off = torch.randn(3, 4, generator=g).to(dtype)
    out = transform_points(pts, lin, off)
    assert out.shape == (3, 1000, 4) and out.dtype == dtype
    p, m, t = pts.numpy(), lin.numpy(), off.numpy()
    expected = ((p[:, :, None, 0] * m[:, None, :, 0] + p[:, :, None, 1] * m[:, None, :, 1])
                + p[:, :, None, 2] * m[:, None, :, 2]) + t[:, None, :]
    assert np.array_equal(out.numpy(), expected)
    # One batch element, one point, or a shared (1, R, 3) matrix: the same bits.
    assert torch.equal(transform_points(pts[1:2], lin[1:2], off[1:2])[0], out[1])
    assert torch.equal(transform_points(pts[2:3, 517:518], lin[2:3], off[2:3])[0, 0], out[2, 517])
    shared = transform_points(pts, lin[:1], off[:1])
    assert torch.equal(shared[2], transform_points(pts[2:3], lin[:1], off[:1])[0])
    no_offset = (p[:, :, None, 0] * m[:, None, :, 0] + p[:, :, None, 1] * m[:, None, :, 1]) + p[:, :, None, 2] * m[:, None, :, 2]
    assert np.array_equal(transform_points(pts, lin).numpy(), no_offset)


@pytest.mark.float_sensitive
def test_camera_projection_is_batch_independent() -> None:
    g = torch.Generator().manual_seed(5)
    pts = torch.randn(4, 300, 3, generator=g)
    cam = Camera.perspective(look_at(torch.randn(4, 3, generator=g) * 4 + torch.tensor([0.0, 0.0, 6.0])), 0.7)
    clip = cam.to_clip(cam.to_camera(pts))
    centers = cam.center
    for b in range(4):
        one = Camera(cam.view[b:b + 1], cam.projection)
        assert torch.equal(one.to_clip(one.to_camera(pts[b:b + 1]))[0], clip[b])
        assert torch.equal(one.to_clip(one.to_camera(pts[b:b + 1, :7]))[0], clip[b, :7])
        assert torch.equal(one.center[0], centers[b])
