"""Tests for dibr_core.mesh."""
from __future__ import annotations

import math

import pytest
import torch

from dibr_core.mesh import (
    edge_face_adjacency,
    face_normals,
    gather_faces,
    icosphere,
    mesh_edges,
    uniform_laplacian,
    vertex_normals,
)


@pytest.fixture(scope="module")
def sphere3() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return icosphere(3, dtype=torch.float64)


# ------------------------------------------------------------------------------------ icosphere
@pytest.mark.parametrize("level,nv,nf", [(0, 12, 20), (3, 642, 1280), (5, 10242, 20480)])
def test_icosphere_counts(level: int, nv: int, nf: int) -> None:
    v, f, uv = icosphere(level)
    assert v.shape == (nv, 3) and v.dtype == torch.float32
    assert f.shape == (nf, 3) and f.dtype == torch.int64
    assert uv.shape == (nf, 3, 2) and uv.dtype == torch.float32
    assert int(f.min()) == 0 and int(f.max()) == nv - 1


def test_icosphere_on_sphere_and_radius() -> None:
    v, _, _ = icosphere(2, radius=0.35, dtype=torch.float64)
    torch.testing.assert_close(v.norm(dim=-1), torch.full((v.shape[0],), 0.35, dtype=torch.float64))
    # poles on +-Y
    assert torch.isclose(v[:, 1].max(), torch.tensor(0.35, dtype=torch.float64))
    assert torch.isclose(v[:, 1].min(), torch.tensor(-0.35, dtype=torch.float64))


def test_icosphere_deterministic() -> None:
    a = icosphere(3)
    b = icosphere(3)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_icosphere_outward_winding(sphere3: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    v, f, _ = sphere3
    n = face_normals(v[None], f)[0]
    centroid = v[f].mean(dim=1)
    assert bool(((n * centroid).sum(-1) > 0).all())


@pytest.mark.parametrize("level", [1, 3])
def test_icosphere_closed_manifold(level: int) -> None:
    v, f, _ = icosphere(level)
    edges = mesh_edges(f)
    e2, adj = edge_face_adjacency(f)
    # Closed: every edge is interior (exactly two faces) and 3F = 2E.
    assert torch.equal(edges, e2)
    assert 3 * f.shape[0] == 2 * edges.shape[0]
    assert v.shape[0] - edges.shape[0] + f.shape[0] == 2
    # Each half-edge appears exactly once with each orientation (consistent winding).
    directed = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    keys = directed[:, 0] * v.shape[0] + directed[:, 1]
    assert torch.unique(keys).numel() == keys.numel()


def test_icosphere_uvs(sphere3: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    v, f, uv = sphere3
    u, vv = uv[..., 0], uv[..., 1]
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.5
    assert float(vv.min()) >= 0.0 and float(vv.max()) <= 1.0
    # Per-face u spread is small, so no face straddles the seam.
    assert float((u.max(dim=1).values - u.min(dim=1).values).max()) < 0.5
    # Some faces did need the +1 shift.
    assert float(u.max()) > 1.0
    # v matches the height: v = 1 - acos(y) / pi.
    y = v[f][..., 1]
    torch.testing.assert_close(vv, 1.0 - torch.acos(y.clamp(-1, 1)) / math.pi)
    # u matches the azimuth modulo 1 at non-pole corners.
    p = v[f]
    nonpole = (p[..., 0] ** 2 + p[..., 2] ** 2) > 1e-12
    az = torch.remainder(torch.atan2(p[..., 0], p[..., 2]) / (2 * math.pi) + 0.5, 1.0)
    diff = torch.remainder(u - az + 0.5, 1.0) - 0.5
    assert float(diff[nonpole].abs().max()) < 1e-9
    # Front of the sphere (+Z) is the middle of the texture; the bottom pole has v = 0.
    front = int(torch.argmax(p[..., 2].reshape(-1)))
    assert abs(float(u.reshape(-1)[front]) - 0.5) < 1e-9
    assert float(vv.min()) == 0.0 and float(vv.max()) == 1.0


def test_icosphere_bad_args() -> None:
    with pytest.raises(ValueError, match=r"icosphere\(\): level"):
        icosphere(-1)
    with pytest.raises(ValueError, match=r"icosphere\(\): radius"):
        icosphere(1, radius=0.0)
    with pytest.raises(TypeError, match=r"icosphere\(\): dtype"):
        icosphere(1, dtype=torch.int64)


# ------------------------------------------------------------------------------------ normals
def _tetra(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)
    f = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return v[None], f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_face_normals_tetrahedron(dtype: torch.dtype) -> None:
    v, f = _tetra(dtype)
    n = face_normals(v, f)
    expected = torch.tensor([[0.0, 0.0, -1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]], dtype=dtype)
    torch.testing.assert_close(n[0], expected)
    nu = face_normals(v, f, unit=True)
    torch.testing.assert_close(nu[0, 3], torch.full((3,), 1 / math.sqrt(3), dtype=dtype))
    assert n.dtype == dtype


def test_face_normals_degenerate_no_nan() -> None:
    v = torch.zeros(1, 3, 3, dtype=torch.float64, requires_grad=True)
    f = torch.tensor([[0, 1, 2]])
    n = face_normals(v, f, unit=True)
    n.sum().backward()
    assert torch.equal(n, torch.zeros_like(n))
    assert v.grad is not None and bool(torch.isfinite(v.grad).all())


def test_vertex_normals_tetrahedron() -> None:
    v, f = _tetra()
    vn = vertex_normals(v, f)[0]
    # Vertex 0 touches the three axis faces (area-weighted normals -z, -y, -x, each of length 1).
    torch.testing.assert_close(vn[0], torch.full((3,), -1 / math.sqrt(3), dtype=torch.float64))
    # Vertex 1: faces (0,2,1) -> (0,0,-1), (0,1,3) -> (0,-1,0), (1,2,3) -> (1,1,1); sum (1,0,0).
    torch.testing.assert_close(vn[1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(vn.norm(dim=-1), torch.ones(4, dtype=torch.float64))


def test_vertex_normals_sphere_outward(sphere3: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    v, f, _ = sphere3
    vn = vertex_normals(v[None], f)[0]
    assert float((vn * v).sum(-1).min()) > 0.999


def test_vertex_normals_isolated_vertex_is_zero() -> None:
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]]])
    vn = vertex_normals(v, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(vn[0, :3], torch.tensor([[0.0, 0, 1]] * 3))
    assert torch.equal(vn[0, 3], torch.zeros(3))


def test_normals_bad_input() -> None:
    v, f = _tetra()
    with pytest.raises(ValueError, match=r"face_normals\(\): vertices must have shape \(B, V, 3\)"):
        face_normals(v[0], f)
    with pytest.raises(ValueError, match=r"vertex_normals\(\): faces holds index 7"):
        vertex_normals(v, f + 4)
    with pytest.raises(TypeError, match=r"face_normals\(\): faces must have dtype"):
        face_normals(v, f.float())


# ------------------------------------------------------------------------------------ topology
def test_mesh_edges_and_adjacency_square() -> None:
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    edges = mesh_edges(f)
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [2, 3]]
    e, adj = edge_face_adjacency(f)
    assert e.tolist() == [[0, 2]] and adj.tolist() == [[0, 1]]


def test_edge_face_adjacency_tetrahedron() -> None:
    _, f = _tetra()
    e, adj = edge_face_adjacency(f)
    assert e.shape == (6, 2) and adj.shape == (6, 2)
    for (a, b), (f1, f2) in zip(e.tolist(), adj.tolist()):
        assert f1 < f2
        assert a in f[f1].tolist() and b in f[f1].tolist()
        assert a in f[f2].tolist() and b in f[f2].tolist()


def test_edge_face_adjacency_non_manifold() -> None:
    f = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    with pytest.raises(ValueError, match=r"edge_face_adjacency\(\): faces is not manifold: edge \(0, 1\)"):
        edge_face_adjacency(f)


# ------------------------------------------------------------------------------------ laplacian
def test_uniform_laplacian_literal() -> None:
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [3, 3, 3]]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 2, 3]])
    lap = uniform_laplacian(v, f)[0]
    expected = torch.tensor(
        [[2 / 3, 2 / 3, 0], [-0.5, 0.5, 0], [-2 / 3, -2 / 3, 0], [0.5, -0.5, 0], [0, 0, 0]], dtype=torch.float64
    )
    torch.testing.assert_close(lap, expected)


def test_uniform_laplacian_zero_cases() -> None:
    # Centre of a regular hexagon fan: the mean of its ring is the centre.
    ang = torch.arange(6, dtype=torch.float64) * (math.pi / 3)
    ring = torch.stack([torch.cos(ang), torch.sin(ang), torch.zeros(6, dtype=torch.float64)], -1)
    v = torch.cat([torch.zeros(1, 3, dtype=torch.float64), ring])[None]
    f = torch.tensor([[0, 1 + k, 1 + (k + 1) % 6] for k in range(6)])
    lap = uniform_laplacian(v, f)[0]
    torch.testing.assert_close(lap[0], torch.zeros(3, dtype=torch.float64))
    assert float(lap[1:].norm(dim=-1).min()) > 0.1
    # Constant offsets (a translation) have zero Laplacian everywhere.
    _, fs, _ = icosphere(2)
    const = torch.tensor([0.3, -1.0, 2.0]).expand(2, 162, 3)
    assert float(uniform_laplacian(const, fs).abs().max()) < 1e-6


def test_uniform_laplacian_batch_and_grad() -> None:
    v, f, _ = icosphere(1, dtype=torch.float64)
    x = torch.randn(2, v.shape[0], 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: uniform_laplacian(t, f), (x,))


# ------------------------------------------------------------------------------------ gather
def test_gather_faces_shared_and_batched() -> None:
    values = torch.arange(2 * 4 * 2, dtype=torch.float32).reshape(2, 4, 2)
    f = torch.tensor([[0, 1, 2], [3, 2, 1]])
    out = gather_faces(values, f)
    assert out.shape == (2, 2, 3, 2)
    torch.testing.assert_close(out[1, 1, 0], values[1, 3])
    torch.testing.assert_close(out[0, 0], values[0, :3])
    fb = torch.stack([f, f.flip(0)])
    outb = gather_faces(values, fb)
    assert outb.shape == (2, 2, 3, 2)
    torch.testing.assert_close(outb[0], out[0])
    torch.testing.assert_close(outb[1, 0], values[1, [3, 2, 1]])
    with pytest.raises(ValueError, match=r"gather_faces\(\): faces must have shape \(B, F, 3\) with B=2"):
        gather_faces(values, fb[:1])
