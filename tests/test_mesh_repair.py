"""mesh_queries and mesh_repair: intersecting faces, the fast inverted-face test against the brute-force one, and
untangling of inside-out pockets."""
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dibr_core
from dibr_core.eval.gen_metrics import signed_volume
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import intersecting_face_pairs, inverted_faces, winding_numbers
from dibr_core.mesh_repair import inverted_faces_fast, untangle

WEIGHTS = Path(__file__).resolve().parent.parent / "dibr_core" / "weights"
needs_cpp = pytest.mark.skipif(not dibr_core.backend_info().cpu_kernels, reason="C++ extension not built")


def _crossed_disk(depth: float = 0.3):
    """A flattened sphere (a disk 0.2 thick) whose top sheet is pushed down through the bottom
    sheet around the centre: the region between the crossed sheets is inside-out."""
    v, f, _ = icosphere(3, 1.0, dtype=torch.float64)
    v = v.clone()
    v[:, 2] *= 0.1
    r2 = v[:, 0] ** 2 + v[:, 1] ** 2
    top = v[:, 2] > 1e-9
    v[top, 2] -= depth * torch.exp(-r2[top] / 0.08)
    return v, f


def test_intersecting_pairs_of_simple_triangles() -> None:
    a = [[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]
    crossing = [[0.2, 0.2, -1], [0.2, 0.2, 1], [2, 2, 0]]
    shared_crossing = [[0.0, 0, 0], [0.3, 0.3, -1], [0.3, 0.3, 1]]
    shared_touching = [[0.0, 0, 0], [0.3, 0.3, 1], [0.5, 0.1, 1]]
    far = [[5.0, 5, 5], [6, 5, 5], [5, 6, 5]]
    for other, expect in ((crossing, [[0, 1]]), (far, [])):
        v = torch.tensor(a + other)
        got = intersecting_face_pairs(v, torch.tensor([[0, 1, 2], [3, 4, 5]]))
        assert got.tolist() == expect
    # faces sharing corner 0: crossing beyond it counts, touching only at it does not
    for other, expect in ((shared_crossing, [[0, 1]]), (shared_touching, [])):
        v = torch.tensor(a + other[1:])
        got = intersecting_face_pairs(v, torch.tensor([[0, 1, 2], [0, 3, 4]]))
        assert got.tolist() == expect


def test_sphere_has_no_intersections_or_inverted_faces() -> None:
    v, f, _ = icosphere(3, 1.0)
    g = torch.Generator().manual_seed(0)
    v = v * (1 + 0.1 * torch.rand(v.shape[0], 1, generator=g))       # bumpy but embedded
    assert intersecting_face_pairs(v, f).shape == (0, 2)
    assert not inverted_faces_fast(v, f).any()
    out, report = untangle(v, f)
    assert out is v and report.iterations == 0 and report.valid and report.moved == 0


def test_fast_inverted_test_matches_brute_force_on_a_crossed_disk() -> None:
    v, f = _crossed_disk()
    brute = inverted_faces(v, f)
    assert int(brute.sum()) >= 8                   # the pocket is there
    assert intersecting_face_pairs(v, f).shape[0] > 0
    assert torch.equal(inverted_faces_fast(v, f), brute)


def test_untangle_removes_the_pocket_and_moves_only_its_sheets() -> None:
    v, f = _crossed_disk()
    before = int(inverted_faces(v, f).sum())
    out, report = untangle(v, f)
    assert out.dtype == v.dtype and out.shape == v.shape
    assert report.inverted_before == before and report.inverted_after == 0 and report.valid
    assert not inverted_faces(out, f).any()
    assert signed_volume(out, f) > 0
    moved = (out - v).norm(dim=-1)
    assert report.max_move == pytest.approx(float(moved.max()))
    # only the crossed centre moves, and by about the pocket's depth
    far = (v[:, 0] ** 2 + v[:, 1] ** 2) > 0.5
    assert float(moved[far].max()) == 0.0
    assert float(moved.max()) < 0.5


def test_untangle_is_deterministic_and_keeps_float32() -> None:
    v, f = _crossed_disk()
    a, _ = untangle(v.float(), f)
    b, _ = untangle(v.float(), f)
    assert a.dtype == torch.float32 and torch.equal(a, b)


def test_bad_input_is_named() -> None:
    v, f, _ = icosphere(1, 1.0)
    with pytest.raises(ValueError, match=r"untangle\(\): vertices must have shape \(V, 3\)"):
        untangle(v[:, :2], f)
    with pytest.raises(ValueError, match=r"inverted_faces_fast\(\): faces must have shape \(F, 3\)"):
        inverted_faces_fast(v, f[:, :2])
    with pytest.raises(ValueError, match=r"intersecting_face_pairs\(\): faces index outside"):
        intersecting_face_pairs(v, f + 1000)
    with pytest.raises(ValueError, match=r"untangle\(\): need max_iters >= 0"):
        untangle(v, f, max_iters=-1)


@pytest.mark.skipif(not (WEIGHTS / "generator.pt").is_file(), reason="no shipped generator weights")
def test_fast_test_and_untangle_on_raw_generator_samples() -> None:
    from dibr_core.models.generator import load_generator

    gen = load_generator()
    faces = gen.decoder.faces
    raw = gen.sample("lamp", 10, seed=0, repair=False)       # some lamps fold their thin parts
    n_bad = 0
    for v in raw.vertices:
        brute = inverted_faces(v, faces)
        n_bad += int(bool(brute.any()))
        assert torch.equal(inverted_faces_fast(v, faces), brute)
        fixed, report = untangle(v, faces)
        assert report.valid and not inverted_faces(fixed, faces).any()
        assert report.max_move < 0.1                          # the unit-diagonal frame
    assert n_bad >= 2


def _test_meshes():
    v, f, _ = icosphere(3, 1.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    bumpy = v * (1 + 0.3 * torch.rand(v.shape[0], 1, generator=g, dtype=torch.float64))
    crumpled = v + 0.15 * torch.randn(v.shape, generator=g, dtype=torch.float64)    # many intersections
    return [(bumpy, f), _crossed_disk(), (crumpled, f)]


@needs_cpp
def test_cpp_winding_numbers_match_the_reference() -> None:
    g = torch.Generator().manual_seed(3)
    for v, f in _test_meshes():
        pts = 1.5 * torch.rand(300, 3, generator=g, dtype=torch.float64) - 0.75
        cpp = winding_numbers(v, f, pts, backend="cpu")
        ref = winding_numbers(v, f, pts, backend="reference")
        assert cpp.dtype == torch.float64 and cpp.shape == (300,)
        torch.testing.assert_close(cpp, ref, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"winding_numbers\(\): there is no CUDA kernel"):
        winding_numbers(v, f, pts, backend="cuda")


@needs_cpp
def test_cpp_intersecting_pairs_and_fast_test_match_the_reference() -> None:
    counts = []
    for v, f in _test_meshes():
        cpp = intersecting_face_pairs(v, f, backend="cpu")
        ref = intersecting_face_pairs(v, f, backend="reference")
        assert torch.equal(cpp, ref)
        counts.append(cpp.shape[0])
        assert torch.equal(inverted_faces_fast(v, f, backend="cpu"), inverted_faces_fast(v, f, backend="reference"))
        a, ra = untangle(v, f, backend="cpu")
        b, rb = untangle(v, f, backend="reference")
        assert (ra.inverted_before, ra.inverted_after, ra.iterations, ra.moved) == \
            (rb.inverted_before, rb.inverted_after, rb.iterations, rb.moved)
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0)
    assert counts[0] == 0 and counts[1] > 0 and counts[2] > 100


@needs_cpp
def test_cpp_ray_distances_match_the_reference() -> None:
    from dibr_core.mesh_queries import ray_distances

    g = torch.Generator().manual_seed(4)
    for v, f in _test_meshes():
        idx = torch.randint(0, v.shape[0], (200,), generator=g)
        dirs = torch.randn(200, 3, generator=g, dtype=torch.float64)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        skip = torch.where(torch.arange(200) % 2 == 0, idx, torch.full_like(idx, -1))
        origins = v[idx] + 1e-3 * dirs
        cpp = ray_distances(v, f.long(), origins, dirs, skip, backend="cpu")
        ref = ray_distances(v, f.long(), origins, dirs, skip, backend="reference")
        assert torch.equal(torch.isinf(cpp), torch.isinf(ref)) and torch.isfinite(ref).sum() > 50
        torch.testing.assert_close(cpp[torch.isfinite(cpp)], ref[torch.isfinite(ref)], atol=1e-12, rtol=0)


@needs_cpp
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([0.05, 0.2, 0.6]), st.booleans())
def test_fuzz_cpp_queries_and_fast_test_against_the_reference(seed: int, noise: float, snap: bool) -> None:
    """Random crumplings of a small sphere (optionally snapped to a coarse grid, which makes
    touching and coplanar faces): the C++ pairs equal the torch ones, the winding numbers agree,
    and the fast inverted-face test decides as the brute-force judge."""
    v, f, _ = icosphere(1, 1.0, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    v = v + noise * torch.randn(v.shape, generator=g, dtype=torch.float64)
    if snap:
        v = torch.round(v * 8) / 8
    assert torch.equal(intersecting_face_pairs(v, f, backend="cpu"), intersecting_face_pairs(v, f, backend="reference"))
    pts = torch.randn(50, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(winding_numbers(v, f, pts, backend="cpu"), winding_numbers(v, f, pts, backend="reference"),
                               atol=1e-9, rtol=0)
    brute = inverted_faces(v, f)
    assert bool(inverted_faces_fast(v, f).any()) == bool(brute.any())
