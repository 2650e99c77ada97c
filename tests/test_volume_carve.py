"""Carving a closed mesh by one view's background through its volume (dibr_core.volume_carve)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dibr_core.inference import InputView, _hard_masks, input_view_iou
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.remesh import check_closed_manifold
from dibr_core.volume_carve import carve_view_volume, marching_tetrahedra


def _grid(n: int) -> np.ndarray:
    """(n, n, n, 3) sample positions over [-1, 1]^3."""
    return np.stack(np.meshgrid(*[np.linspace(-1.0, 1.0, n)] * 3, indexing="ij"), -1)


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    return float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0)


def test_marching_tetrahedra_gives_a_closed_outward_sphere() -> None:
    """The level set of a radial field: one closed genus-0 surface, outward (positive volume
    within 1 % of the ball's), every vertex within a tenth of a cell of the sphere."""
    n = 41
    r = np.linalg.norm(_grid(n), axis=-1) * (n - 1) / 2.0          # radius in grid units
    v, f = marching_tetrahedra(14.0 - r, 0.0)
    rep = check_closed_manifold(torch.from_numpy(f), v.shape[0])
    assert rep.ok and rep.parts == 1 and rep.genus == 0, rep.problems()
    centre = (n - 1) / 2.0
    dist = np.linalg.norm(v - centre, axis=1)
    assert np.abs(dist - 14.0).max() < 0.1
    ball = 4.0 / 3.0 * np.pi * 14.0 ** 3
    assert abs(_signed_volume(v - centre, f) / ball - 1.0) < 0.01


def test_marching_tetrahedra_keeps_the_genus_and_any_binary_field_closed() -> None:
    g = _grid(40)
    torus = (np.sqrt(g[..., 0] ** 2 + g[..., 1] ** 2) - 0.5) ** 2 + g[..., 2] ** 2
    v, f = marching_tetrahedra(0.04 - torus, 0.0)
    rep = check_closed_manifold(torch.from_numpy(f), v.shape[0])
    assert rep.ok and rep.parts == 1 and rep.genus == 1, rep.problems()
    # a random 0/1 field (handles everywhere, samples touching along edges and corners only):
    # still closed, manifold (no bow-tie vertices either) and consistently oriented
    occ = np.pad((np.random.default_rng(0).random((12, 12, 12)) > 0.5).astype(np.float64), 1)
    v, f = marching_tetrahedra(occ, 0.5)
    rep = check_closed_manifold(torch.from_numpy(f), v.shape[0])
    assert rep.boundary_edges == 0 and rep.nonmanifold_edges == 0 and rep.inconsistent_edges == 0
    assert rep.degenerate_faces == 0 and rep.nonmanifold_vertices == 0 and rep.ok, rep.problems()
    assert rep.genus is not None and rep.genus > 10
    assert _signed_volume(v, f) > 0.0
    with pytest.raises(ValueError, match=r"marching_tetrahedra\(\): field must be \(Nx, Ny, Nz\)"):
        marching_tetrahedra(np.zeros((4, 4)))


def _slab() -> tuple:
    """A thick disk (an icosphere flattened along z to a third) facing the azimuth-0,
    elevation-0 camera, and that view."""
    v, f, _ = icosphere(3, 0.4)
    return v * torch.tensor([1.0, 1.0, 0.33]), f, InputView(0.0, 0.0)


@pytest.mark.float_sensitive   # which voxel centres fall on which pixel follows projected positions
def test_a_hole_of_the_view_is_cut_through_the_volume() -> None:
    """A square hole in the disk's silhouette: the carved surface is one closed genus-1 surface
    that leaves the hole's pixels uncovered and keeps the rest of the silhouette; the outside of
    the silhouette is carved only when asked (holes_only=False)."""
    v, f, view = _slab()
    cam = view.camera()
    target = _hard_masks(v, f, cam, 64)[0].float()
    target[26:38, 26:38] = 0.0
    c = carve_view_volume(v, f, cam, target, res=48)
    rep = check_closed_manifold(c.faces, c.vertices.shape[0])
    assert rep.ok and rep.parts == 1 and rep.genus == 1, rep.problems()
    assert c.removed_voxels > 0 and c.removed_voxels < c.occupied_voxels
    assert self_intersecting_faces(c.vertices, c.faces) == 0
    covered = _hard_masks(c.vertices, c.faces, cam, 64)[0]
    assert not bool(covered[28:36, 28:36].any()) and bool(covered[20, 32])
    before, after = input_view_iou(v, f, view, target), input_view_iou(c.vertices, c.faces, view, target)
    # measured: 0.849 -> 0.927 (the grid's 48 voxels round the hole's corners)
    assert before < 0.9 and after > 0.9, (before, after)
    # a target smaller than the disk (its right half cut off, reaching the border): kept with
    # holes_only, carved without
    half = _hard_masks(v, f, cam, 64)[0].float()
    half[:, 40:] = 0.0
    kept = carve_view_volume(v, f, cam, half, res=48)
    assert kept.removed_voxels == 0 and bool(_hard_masks(kept.vertices, kept.faces, cam, 64)[0][:, 44:].any())
    cut = carve_view_volume(v, f, cam, half, res=48, holes_only=False)
    assert cut.removed_voxels > 0 and not bool(_hard_masks(cut.vertices, cut.faces, cam, 64)[0][:, 42:].any())
    # a margin spares the background next to the silhouette: fewer voxels go, columns 40-42 stay
    spared = carve_view_volume(v, f, cam, half, res=48, holes_only=False, margin=3)
    assert 0 < spared.removed_voxels < cut.removed_voxels
    assert bool(_hard_masks(spared.vertices, spared.faces, cam, 64)[0][:, 41].any())


def test_a_mesh_beyond_the_unit_cube_is_carved_whole() -> None:
    """A disk moved half its size sideways (past x = 0.5) and scaled up: the grid follows it, so
    the carved surface keeps its whole extent, and the hole is cut."""
    v, f, view = _slab()
    v = v * 1.5 + torch.tensor([0.35, 0.0, 0.0])
    cam = InputView(0.0, 0.0, distance=4.0).camera()
    target = _hard_masks(v, f, cam, 64)[0].float()
    rows, cols = torch.nonzero(target > 0.5, as_tuple=True)
    r0, c0 = int(rows.float().mean()), int(cols.float().mean())
    target[r0 - 5:r0 + 5, c0 - 5:c0 + 5] = 0.0
    c = carve_view_volume(v, f, cam, target, res=48)
    rep = check_closed_manifold(c.faces, c.vertices.shape[0])
    assert rep.ok and rep.parts == 1 and rep.genus == 1, rep.problems()
    lo, hi = v.min(dim=0).values, v.max(dim=0).values
    assert torch.allclose(c.vertices.min(dim=0).values, lo, atol=0.05)
    assert torch.allclose(c.vertices.max(dim=0).values, hi, atol=0.05), (c.vertices.max(dim=0).values, hi)
    assert float(hi[0]) > 0.8


def test_carve_view_volume_rejects_bad_arguments() -> None:
    v, f, view = _slab()
    cam = view.camera()
    with pytest.raises(ValueError, match=r"carve_view_volume\(\): mask must have shape \(H, W\)"):
        carve_view_volume(v, f, cam, torch.ones(2, 8, 8))
    with pytest.raises(ValueError, match=r"carve_view_volume\(\): vertices must have shape \(V, 3\)"):
        carve_view_volume(v[:, :2], f, cam, torch.ones(8, 8))
    with pytest.raises(ValueError, match=r"carve_view_volume\(\): camera must hold one view"):
        two = type(cam)(cam.view.repeat(2, 1, 1), cam.projection.repeat(2, 1, 1), cam.near, cam.far)
        carve_view_volume(v, f, two, torch.ones(8, 8))
    with pytest.raises(ValueError, match=r"carve_view_volume\(\): res must be an int >= 4"):
        carve_view_volume(v, f, cam, torch.ones(8, 8), res=2)


@pytest.mark.float_sensitive
def test_the_refine_cuts_its_result_by_the_pictures_background() -> None:
    """inference._volume_carved: a result that covers a hole and overhangs the picture's outline
    comes back cut by both, closed, with a colour per vertex (from the nearest old vertex) and a
    texture baked on new UVs; a result that already matches the picture is returned as it is."""
    from dibr_core import inference

    v, f, view = _slab()
    uv = icosphere(3, 0.4)[2]
    cam = view.camera()
    colors = torch.rand(v.shape[0], 3, generator=torch.Generator().manual_seed(1))
    mesh = inference.PredictedMesh(vertices=v, faces=f, colors=colors, face_uvs=uv,
                                   texture=torch.rand(32, 32, 3), input_image=torch.zeros(4, 64, 64))
    exact = _hard_masks(v, f, cam, 128)[0].float()   # the refine's image side (a 64-voxel grid)
    iou = input_view_iou(v, f, view, exact)
    same, same_iou, cut = inference._volume_carved(mesh, iou, view, exact)
    assert not cut and same is mesh and same_iou == iou
    target = exact.clone()
    target[52:76, 52:76] = 0.0
    target[:, 88:] = 0.0
    iou = input_view_iou(v, f, view, target)
    out, after, cut = inference._volume_carved(mesh, iou, view, target)
    # measured: 0.750 -> 0.949
    assert cut and after > iou + inference.REFINE_VOLUME_CARVE_GAIN and after > 0.93, (iou, after)
    assert after == pytest.approx(input_view_iou(out.vertices, out.faces, view, target))
    rep = check_closed_manifold(out.faces, out.vertices.shape[0])
    assert rep.ok and rep.genus == 1, rep.problems()
    assert out.colors.shape == (out.vertices.shape[0], 3)
    # every new colour is one of the old ones (the nearest vertex's)
    d = torch.cdist(out.colors, colors, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert float(d.max()) < 1e-6
    assert out.face_uvs.shape == (out.faces.shape[0], 3, 2) and float(out.face_uvs.min()) >= 0.0
    assert float(out.face_uvs.max()) <= 1.0
    assert out.texture is not None and out.texture.shape == (32, 32, 3)
