"""Mesh utilities: the template icosphere, normals, edge topology and the uniform Laplacian.

Conventions:
    * ``faces`` index the vertex axis and are wound counter-clockwise when the face is seen
      from outside, so ``(v1 - v0) x (v2 - v0)`` points outward.
    * Batched vertex tensors are ``(B, V, 3)``; a single ``faces`` tensor ``(F, 3)`` is shared by
      the whole batch.
    * Everything is plain differentiable PyTorch and works for float32 and float64 on any device.
"""
from __future__ import annotations

import math
from typing import Dict, List, Tuple, Union

import torch

from dibr_core.checks import check_index_range, check_positive, check_tensor

__all__ = [
    "icosphere",
    "face_normals",
    "vertex_normals",
    "mesh_edges",
    "edge_face_adjacency",
    "uniform_laplacian",
    "gather_faces",
]

Device = Union[str, torch.device, None]

_FACE_NORMAL_EPS = 1e-12
_VERTEX_NORMAL_EPS = 1e-12


# ---------------------------------------------------------------------------------------------
# icosphere
# ---------------------------------------------------------------------------------------------
def _icosahedron() -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit icosahedron (float64, CPU) with one vertex on each pole of the Y axis.

    Vertex 0 is the north pole (0, 1, 0), vertices 1-5 the upper ring at latitude atan(1/2),
    vertices 6-10 the lower ring (rotated by 36 degrees) and vertex 11 the south pole.
    """
    lat = math.atan(0.5)
    cl, sl = math.cos(lat), math.sin(lat)
    pts: List[Tuple[float, float, float]] = [(0.0, 1.0, 0.0)]
    for k in range(5):
        az = 2.0 * math.pi * k / 5.0
        pts.append((cl * math.sin(az), sl, cl * math.cos(az)))
    for k in range(5):
        az = 2.0 * math.pi * (k + 0.5) / 5.0
        pts.append((cl * math.sin(az), -sl, cl * math.cos(az)))
    pts.append((0.0, -1.0, 0.0))
    verts = torch.tensor(pts, dtype=torch.float64)

    tris: List[Tuple[int, int, int]] = []
    for k in range(5):
        k1 = (k + 1) % 5
        tris.append((0, 1 + k, 1 + k1))  # top cap
        tris.append((11, 6 + k, 6 + k1))  # bottom cap
        tris.append((1 + k, 1 + k1, 6 + k))  # middle band, pointing down
        tris.append((6 + k, 6 + k1, 1 + k1))  # middle band, pointing up
    faces = torch.tensor(tris, dtype=torch.int64)

    # Orient every face counter-clockwise seen from outside (normal . centroid > 0).
    tri = verts[faces]
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    inward = (normal * tri.mean(dim=1)).sum(dim=-1) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    return verts, faces


def _subdivide(verts: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """One 1-to-4 midpoint subdivision with the new vertices pushed onto the unit sphere."""
    nv = verts.shape[0]
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    starts = torch.stack([a, b, c], dim=1).reshape(-1)
    ends = torch.stack([b, c, a], dim=1).reshape(-1)
    lo, hi = torch.minimum(starts, ends), torch.maximum(starts, ends)
    keys, inverse = torch.unique(lo * nv + hi, sorted=True, return_inverse=True)
    mid = (verts[keys // nv] + verts[keys % nv]) * 0.5
    mid = mid / torch.linalg.vector_norm(mid, dim=-1, keepdim=True)
    mid_idx = (inverse + nv).reshape(-1, 3)  # columns: midpoint of ab, bc, ca
    ab, bc, ca = mid_idx[:, 0], mid_idx[:, 1], mid_idx[:, 2]
    new_faces = torch.cat(
        [
            torch.stack([a, ab, ca], dim=1),
            torch.stack([ab, b, bc], dim=1),
            torch.stack([ca, bc, c], dim=1),
            torch.stack([ab, bc, ca], dim=1),
        ],
        dim=0,
    )
    return torch.cat([verts, mid], dim=0), new_faces


def _sphere_face_uvs(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-corner spherical UVs (float64) for a unit sphere with poles on +-Y."""
    x, y, z = verts[:, 0], verts[:, 1], verts[:, 2]
    # u = 0.5 faces the +Z direction, grows towards +X; the seam is the -Z meridian.
    u = torch.remainder(torch.atan2(x, z) / (2.0 * math.pi) + 0.5, 1.0)
    v = 1.0 - torch.acos(y.clamp(-1.0, 1.0)) / math.pi
    pole = (x * x + z * z) < 1e-20

    fu = u[faces]  # (F, 3)
    fv = v[faces]
    fpole = pole[faces]
    big = torch.full_like(fu, float("inf"))
    u_max = torch.where(fpole, -big, fu).max(dim=1, keepdim=True).values
    u_min = torch.where(fpole, big, fu).min(dim=1, keepdim=True).values
    straddles = (u_max - u_min) > 0.5
    fu = torch.where(straddles & (fu < 0.5) & ~fpole, fu + 1.0, fu)
    # A pole corner takes the mean u of the face's other corners (a face has at most one pole).
    others = torch.where(fpole, torch.zeros_like(fu), fu).sum(dim=1, keepdim=True)
    n_others = (~fpole).sum(dim=1, keepdim=True).clamp_min(1).to(fu.dtype)
    fu = torch.where(fpole, others / n_others, fu)
    return torch.stack([fu, fv], dim=-1)


def icosphere(
    level: int = 3,
    radius: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: Device = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Subdivided icosahedron projected onto a sphere, with spherical per-corner UVs.

    The base icosahedron has a vertex on each pole of the Y axis (the renderer's camera uses +Y
    up); each level splits every triangle into four and pushes the new vertices onto the sphere.
    Level ``n`` has ``10 * 4**n + 2`` vertices and ``20 * 4**n`` faces (level 3: 642 / 1280, the
    DIB-R template; level 5: 10242 / 20480). The result is deterministic: it is built in float64
    on the CPU and only then cast and moved.

    UVs follow the OpenGL convention: ``u = azimuth / (2*pi)`` with the azimuth
    ``atan2(x, z) + pi`` (so ``u = 0.5`` faces +Z, ``u`` grows towards +X and the seam ``u = 0/1``
    is the -Z meridian), and ``v = 1 - polar_angle / pi``, i.e. ``v = 0`` at ``y = -radius`` and
    ``v = 1`` at ``y = +radius``. A face that straddles the seam gets ``u + 1`` on its corners
    with ``u < 0.5`` so its UVs are contiguous (``u`` may then reach up to 1.5; sample with wrap
    mode ``"repeat"``). A pole corner gets the mean ``u`` of the face's other two corners.

    Args:
        level: number of subdivisions, ``>= 0``.
        radius: sphere radius, ``> 0``.
        dtype: floating dtype of ``vertices`` and ``face_uvs``.
        device: device of the outputs.

    Returns:
        A tuple ``(vertices, faces, face_uvs)``:
            vertices: (V, 3) ``dtype``, points on the sphere.
            faces: (F, 3) int64, counter-clockwise seen from outside.
            face_uvs: (F, 3, 2) ``dtype``, per-corner (u, v).

    Raises:
        ValueError: if ``level`` is negative or ``radius`` is not a positive finite number.
        TypeError: if ``level`` is not an int or ``dtype`` is not floating.
    """
    fn = "icosphere"
    if isinstance(level, bool) or not isinstance(level, int):
        raise TypeError(f"{fn}(): level must be an int, got {type(level).__name__}")
    if level < 0:
        raise ValueError(f"{fn}(): level must be >= 0, got {level}")
    check_positive(fn, "radius", radius)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}(): dtype must be a floating torch.dtype, got {dtype!r}")

    verts, faces = _icosahedron()
    for _ in range(level):
        verts, faces = _subdivide(verts, faces)
    uvs = _sphere_face_uvs(verts, faces)
    verts = verts * float(radius)
    return (
        verts.to(device=device, dtype=dtype),
        faces.to(device=device),
        uvs.to(device=device, dtype=dtype),
    )


# ---------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------
def _check_mesh(fn: str, vertices: torch.Tensor, faces: torch.Tensor, vname: str = "vertices") -> torch.Tensor:
    """Check ``vertices`` (B, V, 3) float and ``faces`` (F, 3) int; return faces as int64."""
    dims: Dict[str, int] = {}
    check_tensor(fn, vname, vertices, shape=("B", "V", 3), dims=dims, dtype="float", finite=True)
    check_tensor(fn, "faces", faces, shape=("F", 3), dims=dims, dtype="int", device=vertices.device)
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    return faces.long()


def _check_faces(fn: str, faces: torch.Tensor) -> torch.Tensor:
    check_tensor(fn, "faces", faces, shape=("F", 3), dtype="int")
    if faces.numel() > 0 and int(faces.min()) < 0:
        raise ValueError(f"{fn}(): faces holds negative index {int(faces.min())}")
    return faces.long()


# ---------------------------------------------------------------------------------------------
# normals
# ---------------------------------------------------------------------------------------------
def _face_normals(vertices: torch.Tensor, faces: torch.Tensor, unit: bool) -> torch.Tensor:
    v0 = vertices[:, faces[:, 0]]
    v1 = vertices[:, faces[:, 1]]
    v2 = vertices[:, faces[:, 2]]
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    if unit:
        # Smooth everywhere: degenerate faces give a zero vector, never NaN.
        n = n / torch.sqrt((n * n).sum(dim=-1, keepdim=True) + _FACE_NORMAL_EPS**2)
    return n


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, unit: bool = False) -> torch.Tensor:
    """Per-face normals ``(v1 - v0) x (v2 - v0)``.

    Unnormalised normals have length twice the face area. With ``unit=True`` they are divided by
    ``sqrt(|n|^2 + 1e-24)``, which keeps degenerate faces at a zero vector instead of NaN.

    Args:
        vertices: (B, V, 3) float, vertex positions.
        faces: (F, 3) int, vertex indices per face.
        unit: return unit-length normals.

    Returns:
        (B, F, 3) float, the face normals.
    """
    f = _check_mesh("face_normals", vertices, faces)
    return _face_normals(vertices, f, unit)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Smooth unit vertex normals.

    Each vertex normal is the sum of the unnormalised (so area-weighted) normals of its adjacent
    faces, normalised as ``n / (|n| + 1e-12)``. Vertices used by no face get a zero normal.

    Args:
        vertices: (B, V, 3) float, vertex positions.
        faces: (F, 3) int, vertex indices per face.

    Returns:
        (B, V, 3) float, unit vertex normals.
    """
    f = _check_mesh("vertex_normals", vertices, faces)
    fn_ = _face_normals(vertices, f, unit=False)  # (B, F, 3)
    acc = torch.zeros_like(vertices)
    for k in range(3):
        acc = acc.index_add(1, f[:, k], fn_)
    length: torch.Tensor = torch.linalg.vector_norm(acc, dim=-1, keepdim=True)
    return acc / (length + _VERTEX_NORMAL_EPS)


# ---------------------------------------------------------------------------------------------
# topology
# ---------------------------------------------------------------------------------------------
def _half_edge_keys(faces: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Undirected key ``lo * n + hi`` of the 3F half-edges, ordered ``face * 3 + corner``."""
    starts = faces.reshape(-1)
    ends = faces[:, [1, 2, 0]].reshape(-1)
    lo, hi = torch.minimum(starts, ends), torch.maximum(starts, ends)
    n = int(hi.max()) + 1 if hi.numel() > 0 else 1
    return lo * n + hi, n


def _mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    keys, n = _half_edge_keys(faces)
    keys = torch.unique(keys, sorted=True)
    return torch.stack([keys // n, keys % n], dim=1)


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges of a triangle mesh.

    Args:
        faces: (F, 3) int, vertex indices per face.

    Returns:
        (E, 2) int64, each edge as ``(lo, hi)`` with ``lo < hi``, rows sorted lexicographically.
    """
    return _mesh_edges(_check_faces("mesh_edges", faces))


def _edge_face_adjacency(fn: str, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    keys, n = _half_edge_keys(faces)
    sorted_keys, order = torch.sort(keys, stable=True)
    uniq, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    if bool((counts > 2).any()):
        bad = int(uniq[counts > 2][0])
        raise ValueError(
            f"{fn}(): faces is not manifold: edge ({bad // n}, {bad % n}) is shared by "
            f"{int(counts[counts > 2][0])} faces (at most 2 allowed)"
        )
    starts = torch.cumsum(counts, dim=0) - counts
    interior = counts == 2
    first = order[starts[interior]] // 3
    second = order[starts[interior] + 1] // 3
    ukeys = uniq[interior]
    edges = torch.stack([ukeys // n, ukeys % n], dim=1)
    return edges, torch.stack([first, second], dim=1)


def edge_face_adjacency(faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two faces sharing each interior edge of a manifold triangle mesh.

    Boundary edges (used by a single face) are skipped, so for a closed mesh every edge is
    returned.

    Args:
        faces: (F, 3) int, vertex indices per face.

    Returns:
        A tuple ``(edges, faces_of_edge)``:
            edges: (E, 2) int64, interior edges ``(lo, hi)``, ``lo < hi``, sorted
                lexicographically (the same order as :func:`mesh_edges` when there is no
                boundary).
            faces_of_edge: (E, 2) int64, the indices of the two faces sharing each edge, in
                increasing order.

    Raises:
        ValueError: if an edge is shared by more than two faces.
    """
    fn = "edge_face_adjacency"
    return _edge_face_adjacency(fn, _check_faces(fn, faces))


def _uniform_laplacian(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    edges = _mesh_edges(faces)
    a, b = edges[:, 0], edges[:, 1]
    nv = values.shape[1]
    nb_sum = torch.zeros_like(values).index_add(1, a, values[:, b]).index_add(1, b, values[:, a])
    ones = torch.ones(a.shape[0], dtype=values.dtype, device=values.device)
    degree = torch.zeros(nv, dtype=values.dtype, device=values.device).index_add(0, a, ones).index_add(0, b, ones)
    has_nb = (degree > 0).to(values.dtype)[None, :, None]
    mean = nb_sum / degree.clamp_min(1.0)[None, :, None]
    return (mean - values) * has_nb


def uniform_laplacian(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Uniform (umbrella) Laplacian: mean of the 1-ring neighbours minus the vertex.

    Computed by scatter-adding over the unique edges (no dense V x V matrix). Vertices without
    neighbours give 0.

    Args:
        vertices: (B, V, 3) float, vertex positions (or any per-vertex 3-vectors, e.g. offsets).
        faces: (F, 3) int, vertex indices per face.

    Returns:
        (B, V, 3) float, ``mean_{j in N(i)} x_j - x_i`` per vertex.
    """
    f = _check_mesh("uniform_laplacian", vertices, faces)
    return _uniform_laplacian(vertices, f)


def gather_faces(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-corner copies of per-vertex values (``index_vertices_by_faces``).

    Args:
        values: (B, V, D) any dtype, per-vertex values.
        faces: (F, 3) int shared by the batch, or (B, F, 3) int per batch element.

    Returns:
        (B, F, 3, D), ``out[b, f, k] = values[b, faces[f, k]]`` (or ``faces[b, f, k]``).
    """
    fn = "gather_faces"
    dims: Dict[str, int] = {}
    check_tensor(fn, "values", values, shape=("B", "V", "D"), dims=dims)
    if not isinstance(faces, torch.Tensor) or faces.dim() != 3:
        check_tensor(fn, "faces", faces, shape=("F", 3), dims=dims, dtype="int", device=values.device)
    else:
        check_tensor(fn, "faces", faces, shape=("B", "F", 3), dims=dims, dtype="int", device=values.device)
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    return gather_faces_unchecked(values, faces)


def gather_faces_unchecked(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """:func:`gather_faces` without the argument checks, for internal hot paths.

    One ``index_select`` over the flattened (B * V, D) values: its backward is an ``index_add_``,
    about twice as fast on the CPU as the sorting ``index_put_`` behind advanced indexing, and
    deterministic.
    """
    B, V = values.shape[0], values.shape[1]
    f = faces.long()
    F = f.shape[-2]
    if f.dim() == 2:
        flat = f.reshape(1, -1) if B == 1 else f.reshape(1, -1) + torch.arange(B, device=f.device)[:, None] * V
    else:
        flat = f.reshape(B, -1) + torch.arange(B, device=f.device)[:, None] * V
    rows = values.reshape(B * V, *values.shape[2:])
    return torch.index_select(rows, 0, flat.reshape(-1)).view(B, F, 3, *values.shape[2:])
