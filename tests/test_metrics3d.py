"""3D metrics: voxel IoU, voxelisation, surface sampling, Chamfer and F-score on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dibr_core.mesh import icosphere
from dibr_core.eval.metrics3d import chamfer_and_fscore, iou_3d, nearest_distances, normalize_unit_diagonal, sample_surface
from dibr_core.voxels import mark_surface_voxels, voxelize_mesh, winding_numbers_z

# Closed cube [-1, 1]^3, counter-clockwise seen from outside (outward normals).
CUBE_V = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
CUBE_F = np.array([[0, 1, 3], [0, 3, 2],      # x = -1
                   [4, 6, 7], [4, 7, 5],      # x = +1
                   [0, 4, 5], [0, 5, 1],      # y = -1
                   [2, 3, 7], [2, 7, 6],      # y = +1
                   [0, 2, 6], [0, 6, 4],      # z = -1
                   [1, 5, 7], [1, 7, 3]])     # z = +1


def _cube(half: float, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    return CUBE_V * half + np.asarray(centre)[None, :]


def test_cube_winding_is_outward():
    a, b, c = (CUBE_V[CUBE_F[:, k]] for k in range(3))
    n = np.cross(b - a, c - a)
    assert (np.einsum("ij,ij->i", n, (a + b + c) / 3) > 0).all()


# ---------------------------------------------------------------------------------------------- IoU

def test_iou_identical_disjoint_and_partial():
    rng = np.random.default_rng(0)
    a = rng.random((32, 32, 32)) < 0.3
    assert iou_3d(a, a) == pytest.approx(1.0)
    assert iou_3d(a, ~a) == 0.0
    half = np.zeros((32, 32, 32), bool)
    half[:16] = True
    full = np.ones((32, 32, 32), bool)
    assert iou_3d(half, full) == pytest.approx(0.5)
    mid = np.zeros((32, 32, 32), bool)
    mid[8:24] = True
    assert iou_3d(half, mid) == pytest.approx(8 / 24)
    assert iou_3d(np.zeros_like(a), np.zeros_like(a)) == 0.0
    with pytest.raises(ValueError):
        iou_3d(a, a[:16])


# ---------------------------------------------------------------------------------------- voxeliser

def test_voxelize_cube_centres_and_surface_counts():
    # Faces at +-0.26: centres with |c| <= 0.26 are 16 per axis; the faces lie in voxels 7 and 24.
    v = _cube(0.26)
    inside = voxelize_mesh(v, CUBE_F, 32, mark_surface=False)
    assert inside.sum() == 16 ** 3
    assert inside[8:24, 8:24, 8:24].all()
    full = voxelize_mesh(v, CUBE_F, 32)
    assert full.sum() == 18 ** 3
    assert full[7:25, 7:25, 7:25].all()
    shell = mark_surface_voxels(v, CUBE_F, 32)
    assert shell.sum() == 18 ** 3 - 16 ** 3


def test_voxelize_sphere_volume():
    verts, faces, _ = icosphere(3, radius=0.4, dtype=torch.float64)
    occ = voxelize_mesh(verts, faces, 32, mark_surface=False)
    expected = 4 / 3 * math.pi * 0.4 ** 3 * 32 ** 3
    assert abs(occ.sum() / expected - 1) < 0.03
    c = (np.arange(32) + 0.5) / 32 - 0.5
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    # Far from the surface the answer is unambiguous (the polytope is inscribed in r = 0.4).
    assert occ[r < 0.37].all() and not occ[r > 0.41].any()


def test_voxelize_union_of_overlapping_parts():
    # Two overlapping closed cubes in one mesh: winding number 2 in the overlap, still inside
    # (parity would call the overlap outside).
    v = np.concatenate([_cube(0.2, (-0.1, 0, 0)), _cube(0.2, (0.1, 0, 0))])
    f = np.concatenate([CUBE_F, CUBE_F + 8])
    w = winding_numbers_z(v, f, 32)
    assert w.max() == 2 and w.min() == 0
    union = voxelize_mesh(v, f, 32, mark_surface=False)
    sep = voxelize_mesh(v[:8], CUBE_F, 32, mark_surface=False) | voxelize_mesh(v[8:], CUBE_F, 32, mark_surface=False)
    assert union.sum() > 0 and np.array_equal(union, sep)


def test_voxelize_inverted_mesh_is_not_inside():
    # Clockwise (inward) faces give winding -1: the voxeliser requires outward winding.
    w = winding_numbers_z(_cube(0.3), CUBE_F[:, [0, 2, 1]], 32)
    assert w.min() == -1 and w.max() == 0


# ----------------------------------------------------------------------------------------- sampling

def test_sample_surface_on_cube_faces_uniform_and_deterministic():
    v, f = torch.from_numpy(_cube(0.5)), torch.from_numpy(CUBE_F)
    pts = sample_surface(v, f, 6000, torch.Generator().manual_seed(0))
    assert pts.shape == (6000, 3)
    assert torch.allclose(pts.abs().max(dim=1).values, torch.full((6000,), 0.5, dtype=pts.dtype))
    face_axis = (pts.abs() >= 0.5 - 1e-12).float() * torch.sign(pts)
    counts = torch.stack([(face_axis[:, k] == s).sum() for k in range(3) for s in (-1, 1)]).double() / 6000
    assert (counts - 1 / 6).abs().max() < 0.025
    again = sample_surface(v, f, 6000, torch.Generator().manual_seed(0))
    other = sample_surface(v, f, 6000, torch.Generator().manual_seed(1))
    assert torch.equal(pts, again) and not torch.equal(pts, other)


def test_sample_surface_area_weighting():
    # Two triangles with areas 1 : 3 in the z = 0 plane.
    v = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [3, 4, 5]])
    pts = sample_surface(v, f, 8000, torch.Generator().manual_seed(3))
    frac_big = float((pts[:, 0] >= 10).double().mean())
    assert abs(frac_big - 0.75) < 0.02
    small = pts[pts[:, 0] < 10]
    assert (small[:, 0] >= 0).all() and (small[:, 1] >= 0).all() and (small[:, 0] + small[:, 1] / 2 <= 1 + 1e-12).all()
    # Uniform inside the triangle: the mean is the centroid.
    assert torch.allclose(small[:, :2].mean(0), torch.tensor([1 / 3, 2 / 3], dtype=torch.float64), atol=0.02)


# ------------------------------------------------------------------------------------ chamfer / F

def _grid_points(spacing: float = 0.1, n: int = 5) -> torch.Tensor:
    c = torch.arange(n, dtype=torch.float64) * spacing
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3)


def test_fscore_identical_sets():
    g = _grid_points()
    r = chamfer_and_fscore(g, g.clone())
    assert r["chamfer"] == 0.0
    assert r["fscore@0.01"] == pytest.approx(1.0) and r["fscore@0.02"] == pytest.approx(1.0)


def test_fscore_and_chamfer_of_shifted_set():
    g = _grid_points()                     # spacing 0.1 >> the shift: the NN is the shifted twin
    p = g + torch.tensor([0.015, 0.0, 0.0], dtype=torch.float64)
    r = chamfer_and_fscore(p, g)
    assert r["chamfer"] == pytest.approx(0.015)
    assert r["precision@0.01"] == 0.0 and r["recall@0.01"] == 0.0 and r["fscore@0.01"] == 0.0
    assert r["fscore@0.02"] == pytest.approx(1.0)
    # Diagonal offset of length 0.03 (3D): chamfer equals the offset length.
    q = g + torch.tensor([0.01, 0.02, 0.02], dtype=torch.float64)
    assert chamfer_and_fscore(q, g)["chamfer"] == pytest.approx(0.03)


def test_fscore_precision_recall_asymmetry():
    g = _grid_points()
    far = g + torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)
    p = torch.cat([g, far])                # half the prediction is 4.6 away from the GT
    r = chamfer_and_fscore(p, g, thresholds=(0.01,))
    assert r["precision@0.01"] == pytest.approx(0.5) and r["recall@0.01"] == pytest.approx(1.0)
    assert r["fscore@0.01"] == pytest.approx(2 * 0.5 / 1.5, abs=1e-7)
    d_far = 5.0 - 0.4                      # the far copy's x is 5.0..5.4, the GT's x at most 0.4
    expected_d1 = float(nearest_distances(far, g).mean())
    assert expected_d1 > d_far - 1e-9
    assert r["chamfer"] == pytest.approx(0.5 * expected_d1 / 2)


def test_nearest_distances_chunked_matches_bruteforce():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(300, 3, generator=gen, dtype=torch.float64), torch.rand(200, 3, generator=gen, dtype=torch.float64)
    brute = (a[:, None] - b[None]).norm(dim=-1).min(dim=1).values
    assert torch.allclose(nearest_distances(a, b, chunk=7), brute, atol=1e-12)


def test_normalize_unit_diagonal():
    lo, hi = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([3.0, 4.0, 0.0])
    p = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    out = normalize_unit_diagonal(p, (lo, hi))
    assert torch.allclose(out, torch.tensor([[0.3, 0.4, 0.0], [-0.3, -0.4, 0.0]]))
    pts = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0], [1.0, 1.0, 0.0]])
    out2 = normalize_unit_diagonal(pts, pts)
    assert torch.allclose(out2.max(0).values - out2.min(0).values, torch.tensor([0.6, 0.8, 0.0]))
    assert torch.allclose((out2.max(0).values + out2.min(0).values) / 2, torch.zeros(3))
