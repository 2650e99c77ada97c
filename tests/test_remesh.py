"""remesh: edge lengths near the target, topology (closed manifold, genus) kept, face budget,
attributes carried through, no self-intersections, better triangles, determinism, bad input;
check_closed_manifold's diagnoses; the target length from the views' pixel footprint."""
from __future__ import annotations

import math
from typing import Tuple

import pytest
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import intersecting_face_pairs
from dibr_core.remesh import (COLLAPSE_RATIO, SPLIT_RATIO, check_closed_manifold, pixel_footprint, remesh,
                              require_closed_manifold, target_length_from_views)

Mesh = Tuple[torch.Tensor, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# meshes
# ---------------------------------------------------------------------------------------------
def _torus(n_major: int = 24, n_minor: int = 10, R: float = 1.0, r: float = 0.4) -> Mesh:
    """A closed torus (genus 1) around the Y axis, a grid of quads split into triangles, wound
    counter-clockwise seen from outside."""
    i = torch.arange(n_major, dtype=torch.float64)[:, None] * (2 * math.pi / n_major)
    j = torch.arange(n_minor, dtype=torch.float64)[None, :] * (2 * math.pi / n_minor)
    ring = R + r * torch.cos(j)
    v = torch.stack([ring * torch.cos(i), r * torch.sin(j).expand(n_major, n_minor), ring * torch.sin(i)],
                    dim=-1).reshape(-1, 3)

    def idx(a: int, b: int) -> int:
        return (a % n_major) * n_minor + (b % n_minor)

    tris = []
    for a in range(n_major):
        for b in range(n_minor):
            p, q, s, t = idx(a, b), idx(a + 1, b), idx(a + 1, b + 1), idx(a, b + 1)
            tris += [(p, s, q), (p, t, s)]
    return v, torch.tensor(tris, dtype=torch.int64)


def _uv_sphere(segments: int = 48, rings: int = 8) -> Mesh:
    """A latitude-longitude sphere: slivers at the poles (a badly shaped closed mesh)."""
    verts = [(0.0, 1.0, 0.0)]
    for k in range(1, rings):
        th = math.pi * k / rings
        for s in range(segments):
            ph = 2 * math.pi * s / segments
            verts.append((math.sin(th) * math.sin(ph), math.cos(th), math.sin(th) * math.cos(ph)))
    verts.append((0.0, -1.0, 0.0))
    south = len(verts) - 1

    def ring_v(k: int, s: int) -> int:
        return 1 + (k - 1) * segments + s % segments

    tris = []
    for s in range(segments):
        tris.append((0, ring_v(1, s), ring_v(1, s + 1)))
        tris.append((south, ring_v(rings - 1, s + 1), ring_v(rings - 1, s)))
        for k in range(1, rings - 1):
            a, b, c, d = ring_v(k, s), ring_v(k, s + 1), ring_v(k + 1, s + 1), ring_v(k + 1, s)
            tris += [(a, d, c), (a, c, b)]
    return torch.tensor(verts, dtype=torch.float64), torch.tensor(tris, dtype=torch.int64)


def _edge_lengths(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = torch.unique(torch.sort(e, dim=1).values, dim=0)
    return (v[e[:, 0]] - v[e[:, 1]]).norm(dim=1)


def _min_angles(v: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """(F,) smallest interior angle of each face, in degrees."""
    t = v[f]
    out = []
    for k in range(3):
        u = t[:, (k + 1) % 3] - t[:, k]
        w = t[:, (k + 2) % 3] - t[:, k]
        c = (u * w).sum(-1) / (u.norm(dim=-1) * w.norm(dim=-1))
        out.append(torch.rad2deg(torch.acos(c.clamp(-1, 1))))
    return torch.stack(out, dim=1).min(dim=1).values


def _signed_volume(v: torch.Tensor, f: torch.Tensor) -> float:
    t = v[f]
    return float((t[:, 0] * torch.cross(t[:, 1], t[:, 2], dim=-1)).sum() / 6.0)


# ---------------------------------------------------------------------------------------------
# check_closed_manifold
# ---------------------------------------------------------------------------------------------
def test_check_closed_manifold_accepts_sphere_and_torus_with_their_genus() -> None:
    _, f, _ = icosphere(2)
    rep = check_closed_manifold(f)
    assert rep.ok and rep.genus == 0 and rep.euler_characteristic == 2 and rep.parts == 1
    v, f = _torus()
    rep = check_closed_manifold(f, v.shape[0])
    assert rep.ok and rep.genus == 1 and rep.euler_characteristic == 0
    assert _signed_volume(v, f) > 0                       # the helper winds outward


def test_check_closed_manifold_names_each_problem() -> None:
    v, f, _ = icosphere(1)
    nv = v.shape[0]
    hole = check_closed_manifold(f[1:], nv)
    assert hole.boundary_edges == 3 and not hole.ok and "3 boundary edges" in " ".join(hole.problems())
    fin = torch.cat([f, torch.tensor([[int(f[0, 0]), int(f[0, 1]), nv]])])   # a third face on an edge
    rep = check_closed_manifold(fin)
    assert rep.nonmanifold_edges == 1 and any("non-manifold edges" in p for p in rep.problems())
    two = torch.cat([f, f + nv])
    rep = check_closed_manifold(two)
    assert rep.parts == 2 and rep.genus is None and "2 loose parts" in " ".join(rep.problems())
    assert rep.problems(allow_loose_parts=True) == []
    flipped = f.clone()
    flipped[0] = flipped[0, [0, 2, 1]]
    assert check_closed_manifold(flipped).inconsistent_edges == 3
    assert check_closed_manifold(f, nv + 2).unused_vertices == 2
    # Two tetrahedra sharing one vertex: a bow-tie.
    tet = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    bow = torch.cat([tet, torch.where(tet == 0, tet, tet + 3)])
    rep = check_closed_manifold(bow)
    assert rep.nonmanifold_vertices == 1 and rep.nonmanifold_edges == 0 and rep.boundary_edges == 0


def test_check_closed_manifold_refuses_ngons() -> None:
    quads = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    with pytest.raises(ValueError, match=r"check_closed_manifold\(\): faces must have shape \(F, 3\) \(triangles\), "
                                         r"got \(2, 4\); triangulate n-gons first"):
        check_closed_manifold(quads)


# ---------------------------------------------------------------------------------------------
# remesh: lengths, topology, budget
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level,target", [(2, 0.1), (4, 0.25)])     # refine 0.3 -> 0.1, coarsen 0.08 -> 0.25
def test_edge_lengths_land_near_the_target(level: int, target: float) -> None:
    v, f, _ = icosphere(level, dtype=torch.float64)
    r = remesh(v, f, target, iterations=4)
    rel = _edge_lengths(r.vertices, r.faces) / target
    # Stated band: mean within 10 % of the target, >= 90 % of the edges inside the split and
    # collapse thresholds [4/5, 4/3], every edge inside [1/2, 8/5].
    assert abs(float(rel.mean()) - 1.0) < 0.10, float(rel.mean())
    inside = ((rel >= COLLAPSE_RATIO) & (rel <= SPLIT_RATIO)).double().mean()
    assert float(inside) >= 0.90, float(inside)
    assert float(rel.min()) >= 0.5 and float(rel.max()) <= 1.6, (float(rel.min()), float(rel.max()))
    # The surface stays on the sphere (chord midpoints sit a little inside it, tangential moves
    # a hair outside).
    radius = r.vertices.norm(dim=1)
    assert float(radius.max()) < 1.002 and float(radius.min()) > 0.95


@pytest.mark.parametrize("target", [0.08, 0.4])
def test_sphere_and_torus_stay_closed_manifolds_of_their_genus(target: float) -> None:
    for v, f in [icosphere(2, dtype=torch.float64)[:2], _torus()]:
        before = check_closed_manifold(f, v.shape[0])
        r = remesh(v, f, target, iterations=3)
        after = require_closed_manifold("test", r.faces, r.vertices.shape[0])
        assert after.genus == before.genus and after.euler_characteristic == before.euler_characteristic
        assert r.splits + r.collapses > 0
        vol0, vol1 = _signed_volume(v, f), _signed_volume(r.vertices, r.faces)
        assert 0.85 * vol0 < vol1 < 1.02 * vol0, (vol0, vol1)        # still wound outward, same shape


def test_loose_parts_are_remeshed_each_on_its_own_when_allowed() -> None:
    v, f, _ = icosphere(2, dtype=torch.float64)
    tv, tf = _torus()
    verts = torch.cat([v, tv + torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)])
    faces = torch.cat([f, tf + v.shape[0]])
    r = remesh(verts, faces, 0.15, allow_loose_parts=True)
    rep = check_closed_manifold(r.faces, r.vertices.shape[0])
    assert rep.problems(allow_loose_parts=True) == [] and rep.parts == 2
    assert rep.euler_characteristic == 2 + 0


@pytest.mark.parametrize("max_faces", [300, 1000])
def test_face_budget_is_respected(max_faces: int) -> None:
    v, f, _ = icosphere(3, dtype=torch.float64)
    r = remesh(v, f, 0.02, max_faces=max_faces)          # 0.02 alone would give about 36k faces
    assert r.faces.shape[0] <= max_faces
    assert r.faces.shape[0] >= 0.6 * max_faces            # the budget is used, not undershot far
    assert check_closed_manifold(r.faces, r.vertices.shape[0]).ok
    assert float(r.target_length.min()) > 0.02            # the target grew


def test_face_budget_below_what_the_genus_allows_is_an_error() -> None:
    v, f = _torus()
    with pytest.raises(ValueError, match=r"remesh\(\): max_faces=8 cannot be reached: edge collapses stop at \d+ faces"):
        remesh(v, f, 0.1, max_faces=8)


@pytest.mark.parametrize("seed", range(4))
def test_crumpled_meshes_with_uneven_targets_stay_closed_manifolds(seed: int) -> None:
    """Fit-like input: a sphere or torus crumpled by noise (faces folded over, self-intersecting)
    and a per-vertex target varying by 6x."""
    g = torch.Generator().manual_seed(seed)
    v, f = icosphere(2, dtype=torch.float64)[:2] if seed % 2 == 0 else _torus(16, 8)
    before = check_closed_manifold(f, v.shape[0])
    L = float(_edge_lengths(v, f).mean())
    v = v + 0.6 * L * torch.randn(v.shape, generator=g, dtype=torch.float64)
    target = L * (0.3 + 1.5 * torch.rand(v.shape[0], generator=g, dtype=torch.float64))
    r = remesh(v, f, target, iterations=2)
    after = check_closed_manifold(r.faces, r.vertices.shape[0])
    assert after.ok, after.problems()
    assert after.genus == before.genus
    assert bool(torch.isfinite(r.vertices).all())


# ---------------------------------------------------------------------------------------------
# remesh: attributes, geometry, quality, determinism
# ---------------------------------------------------------------------------------------------
def test_attributes_follow_splits_and_collapses() -> None:
    v, f, _ = icosphere(2, dtype=torch.float64)
    v = v * torch.tensor([1.0, 0.6, 1.4], dtype=torch.float64)       # uneven edges: splits and collapses
    M = torch.tensor([[0.3, -1.0], [2.0, 0.5], [-0.7, 0.25]], dtype=torch.float64)
    lin = v @ M + torch.tensor([0.1, -2.0], dtype=torch.float64)
    ident = torch.arange(v.shape[0], dtype=torch.float32)
    block = torch.randn(v.shape[0], 2, 3, generator=torch.Generator().manual_seed(0))
    attrs = {"linear": lin, "ident": ident, "block": block}
    r = remesh(v, f, 0.2, attributes=attrs, relax_steps=0)         # no relaxation: vertices stay put
    assert r.splits > 0 and r.collapses > 0
    torch.testing.assert_close(r.attributes["linear"], r.vertices @ M + torch.tensor([0.1, -2.0], dtype=torch.float64),
                               atol=1e-12, rtol=0)
    assert r.attributes["ident"].dtype == torch.float32 and r.attributes["ident"].shape == (r.vertices.shape[0],)
    assert r.attributes["block"].shape == (r.vertices.shape[0], 2, 3)
    # Vertices never touched keep their values exactly.
    same = (r.vertices[:, None, :] == v[None, :, :]).all(-1)          # (V', V)
    rows, cols = torch.nonzero(same, as_tuple=True)
    assert rows.numel() > 0
    torch.testing.assert_close(r.attributes["block"][rows], block[cols], atol=0, rtol=0)
    torch.testing.assert_close(r.attributes["ident"][rows], ident[cols], atol=0, rtol=0)


def test_adam_continues_after_a_remesh_with_its_state_carried() -> None:
    """The recipe of remesh's docstring: moments remapped, the step count kept."""
    v, f, _ = icosphere(2, dtype=torch.float32)
    x = torch.nn.Parameter(v.clone())
    opt = torch.optim.Adam([x], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        (x - 1.2 * v).pow(2).sum().backward()                  # grow the sphere
        opt.step()
    st = opt.state[x]
    r = remesh(x.detach(), f, 0.1, attributes={"exp_avg": st["exp_avg"], "exp_avg_sq": st["exp_avg_sq"]})
    assert r.faces.shape[0] > f.shape[0]
    x2 = torch.nn.Parameter(r.vertices)
    opt2 = torch.optim.Adam([x2], lr=0.01)
    opt2.state[x2] = {"step": st["step"], "exp_avg": r.attributes["exp_avg"], "exp_avg_sq": r.attributes["exp_avg_sq"]}
    # The moments of a radial pull stay radial (outward) at the new vertices.
    radial = (r.attributes["exp_avg"] * r.vertices).sum(dim=1)
    assert bool((radial < 0).all())                           # gradient of the loss points inward
    opt2.zero_grad()
    target = 1.2 * r.vertices / r.vertices.norm(dim=1, keepdim=True)
    (x2 - target).pow(2).sum().backward()
    opt2.step()
    assert float(opt2.state[x2]["step"]) == 4.0
    assert x2.shape == r.vertices.shape and bool(torch.isfinite(x2).all())


@pytest.mark.parametrize("target", [0.1, 0.35])
def test_no_self_intersections_on_a_smooth_sphere(target: float) -> None:
    v, f, _ = icosphere(3, dtype=torch.float64)
    r = remesh(v, f, target)
    assert intersecting_face_pairs(r.vertices, r.faces).shape[0] == 0


def test_triangle_quality_improves_on_a_badly_shaped_mesh() -> None:
    v, f = _uv_sphere()
    before = _min_angles(v, f)
    target = float(_edge_lengths(v, f).mean())
    r = remesh(v, f, target, iterations=5)
    after = _min_angles(r.vertices, r.faces)
    assert float(before.min()) < 8.0                               # the start really is bad
    assert float(after.min()) > 2.0 * float(before.min()), (float(before.min()), float(after.min()))
    assert float(after.mean()) > float(before.mean()) + 5.0, (float(before.mean()), float(after.mean()))
    assert check_closed_manifold(r.faces, r.vertices.shape[0]).ok


def test_per_vertex_target_gives_finer_edges_where_it_is_small() -> None:
    v, f, _ = icosphere(3, dtype=torch.float64)
    target = torch.where(v[:, 1] > 0, 0.06, 0.25).double()
    r = remesh(v, f, target, iterations=4)
    t = r.faces
    c = r.vertices[t].mean(dim=1)
    el = (r.vertices[t[:, 1]] - r.vertices[t[:, 0]]).norm(dim=1)
    top, bottom = el[c[:, 1] > 0.5].mean(), el[c[:, 1] < -0.5].mean()
    assert float(bottom) > 2.5 * float(top), (float(top), float(bottom))


def test_deterministic_and_dtype_kept() -> None:
    v, f, _ = icosphere(2, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    v = v + 0.02 * torch.randn(v.shape, generator=g)
    a = remesh(v, f, 0.12, attributes={"c": v.clone()})
    b = remesh(v, f, 0.12, attributes={"c": v.clone()})
    assert a.vertices.dtype == torch.float32 and a.faces.dtype == torch.int64
    assert torch.equal(a.vertices, b.vertices) and torch.equal(a.faces, b.faces)
    assert torch.equal(a.attributes["c"], b.attributes["c"])
    assert (a.splits, a.collapses, a.flips) == (b.splits, b.collapses, b.flips)


# ---------------------------------------------------------------------------------------------
# remesh: bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input_is_named() -> None:
    v, f, _ = icosphere(1, dtype=torch.float64)
    nv = v.shape[0]
    with pytest.raises(ValueError, match=r"remesh\(\): faces must have shape \(F, 3\) \(triangles\), got \(3, 4\); "
                                         r"triangulate n-gons first"):
        remesh(v, torch.tensor([[0, 1, 2, 3], [0, 2, 3, 4], [1, 2, 3, 4]]), 0.2)
    with pytest.raises(ValueError, match=r"remesh\(\): faces \(shape \(160, 3\), 84 vertices\) is not a closed "
                                         r"2-manifold: 2 loose parts"):
        remesh(torch.cat([v, v + 3]), torch.cat([f, f + nv]), 0.2)
    fin = torch.cat([f, torch.tensor([[int(f[0, 0]), int(f[0, 1]), nv]])])
    with pytest.raises(ValueError, match=r"remesh\(\): faces .* is not a closed 2-manifold: 1 non-manifold edges"):
        remesh(torch.cat([v, v[:1] + 1]), fin, 0.2)
    with pytest.raises(ValueError, match=r"remesh\(\): .*boundary edges"):
        remesh(v, f[2:], 0.2)
    with pytest.raises(ValueError, match=r"remesh\(\): max_faces must be an int >= 4 .*got 3"):
        remesh(v, f, 0.2, max_faces=3)
    with pytest.raises(ValueError, match=r"remesh\(\): target_length must be a finite positive number, got -0.1"):
        remesh(v, f, -0.1)
    with pytest.raises(ValueError, match=r"remesh\(\): target_length must have shape \(V,\) with V=42, got \(41,\)"):
        remesh(v, f, torch.full((nv - 1,), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"remesh\(\): target_length must be positive"):
        remesh(v, f, torch.zeros(nv, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"remesh\(\): attributes\['c'\] must have shape \(V, \.\.\.\) with V=42, "
                                         r"got \(40, 3\)"):
        remesh(v, f, 0.2, attributes={"c": torch.zeros(40, 3)})
    with pytest.raises(ValueError, match=r"remesh\(\): vertices must have shape \(V, 3\), got \(42, 2\)"):
        remesh(v[:, :2], f, 0.2)
    with pytest.raises(ValueError, match=r"remesh\(\): faces holds index 42, outside \[0, 42\)"):
        remesh(v, torch.where(f == 0, nv, f), 0.2)


# ---------------------------------------------------------------------------------------------
# target length from the views
# ---------------------------------------------------------------------------------------------
def test_pixel_footprint_matches_the_camera_geometry() -> None:
    fov = math.radians(60.0)
    cam = Camera.perspective(look_at((0.0, 0.0, 5.0), dtype=torch.float64), fov, aspect=2.0)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 3.0], [40.0, 0.0, 0.0]], dtype=torch.float64)
    fp = pixel_footprint(pts, [cam], [(100, 200)])
    # Square pixels: 2 z tan(fov / 2) / H at depth z; the last point is outside the image.
    assert fp[0].item() == pytest.approx(2 * 5.0 * math.tan(fov / 2) / 100, rel=1e-12)
    assert fp[1].item() == pytest.approx(2 * 2.0 * math.tan(fov / 2) / 100, rel=1e-12)
    assert math.isinf(fp[2].item())
    # A second, nearer and sharper view wins; an orthographic one has a constant footprint.
    near = Camera.perspective(look_at((0.0, 0.0, 2.0), dtype=torch.float64), fov)
    fp2 = pixel_footprint(pts[:1], [cam, near], [(100, 100), (400, 400)])
    assert fp2[0].item() == pytest.approx(2 * 2.0 * math.tan(fov / 2) / 400, rel=1e-12)
    ortho = Camera.orthographic(look_at((0.0, 0.0, 5.0), dtype=torch.float64), half_height=1.5)
    assert pixel_footprint(pts[:2], [ortho], [(60, 60)]).tolist() == pytest.approx([0.05, 0.05], rel=1e-12)


def test_target_length_from_views() -> None:
    fov = math.radians(60.0)
    cam = Camera.perspective(look_at((0.0, 0.0, 5.0), dtype=torch.float64), fov)
    pts = torch.tensor([[0.0, 0.0, 0.0], [40.0, 0.0, 0.0]], dtype=torch.float64)
    per = target_length_from_views(pts, [cam], [(100, 100)], pixels=4.0)
    assert isinstance(per, torch.Tensor)
    expected = 4.0 * 2 * 5.0 * math.tan(fov / 2) / 100
    assert per.tolist() == pytest.approx([expected, expected], rel=1e-12)      # the unseen one gets the largest
    assert target_length_from_views(pts, [cam], [(100, 100)], per_vertex=False) == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"target_length_from_views\(\): no vertex of vertices \(shape \(1, 3\)\) "
                                         r"projects inside any of the 1 views"):
        target_length_from_views(pts[1:], [cam], [(100, 100)])
    with pytest.raises(ValueError, match=r"pixel_footprint\(\): need one \(H, W\) image size per camera"):
        pixel_footprint(pts, [cam], [])
    with pytest.raises(ValueError, match=r"target_length_from_views\(\): pixels must be a finite positive number"):
        target_length_from_views(pts, [cam], [(100, 100)], pixels=0.0)
