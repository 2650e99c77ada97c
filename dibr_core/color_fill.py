"""Vertex colours where the views see nothing: which vertices the views see, and a harmonic fill
of the others from the seen ones.

After a fit from one or a few views, the vertices no view sees keep their start colour (mid
grey), and the vertices at the edge of what the views see take colours from a few pixels where
the surface is seen at a grazing angle (where the renderer's shading matches the reference
least), which shows as speckle. :func:`vertex_visibility` measures how well each vertex is seen:
every covered pixel of every view gives each corner of its face a third of its weight, the
weight being the cosine between the face's normal and the direction to the camera (0 for back
faces and at grazing angles) times the reference's silhouette there. Vertices below a threshold
count as unseen, and :func:`harmonic_fill` replaces their colours by the harmonic interpolation
of the seen ones over the mesh's edge graph: the solution of ``L x = 0`` on the unseen vertices
(``L`` the combinatorial Laplacian, every unseen colour the mean of its neighbours') with the
seen colours as boundary values, so the colours continue smoothly from the seen region.
"""
from __future__ import annotations

import warnings

import torch

from dibr_core.camera import Camera
from dibr_core.checks import check_index_range, check_tensor
from dibr_core.large_steps import DENSE_MAX, _pcg
from dibr_core.mesh import face_normals, mesh_edges

__all__ = ["face_view_cosines", "vertex_visibility", "harmonic_fill"]

_FILL_TOL = 1e-7    # relative residual of the conjugate gradient (float64; colours need no more)


def face_view_cosines(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera) -> torch.Tensor:
    """(F,) cosine between each face's unit normal and the direction from its centroid to the
    camera's centre, clamped at 0 (back faces); no gradient.

    Args:
        vertices: (V, 3) float world positions; faces: (F, 3) int (counter-clockwise is the front);
        camera: one camera (batch 1). An orthographic camera is taken as seen from its centre too.
    """
    fn = "face_view_cosines"
    check_tensor(fn, "vertices", vertices, ("V", 3), None, "float")
    check_tensor(fn, "faces", faces, ("F", 3), None, "int", vertices.device)
    if camera.batch_size != 1:
        raise ValueError(f"{fn}(): camera must hold one camera, got {camera.batch_size}")
    with torch.no_grad():
        v = vertices.detach()
        f = faces.long()
        n = face_normals(v[None], f, unit=True)[0]
        centre = camera.center[0].to(v)
        d = centre - v[f].mean(1)
        d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        return (n * d).sum(-1).clamp(min=0.0)


def vertex_visibility(faces: torch.Tensor, num_vertices: int, face_idx: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """(V,) how much of each vertex the views see: every covered pixel gives each of its face's
    corners a third of its weight.

    Args:
        faces: (F, 3) int.
        num_vertices: V.
        face_idx: (N, H, W) int, the face covering each pixel, -1 on background (a render's
            ``face_idx``, one image per view).
        weights: (N, H, W) float pixel weights (e.g. the reference silhouette times the face's
            :func:`face_view_cosines`).
    """
    fn = "vertex_visibility"
    dims: dict = {}
    check_tensor(fn, "faces", faces, ("F", 3), dims, "int")
    check_tensor(fn, "face_idx", face_idx, ("N", "H", "W"), dims, "int", faces.device)
    check_tensor(fn, "weights", weights, ("N", "H", "W"), dims, "float", faces.device)
    check_index_range(fn, "faces", faces, num_vertices, "vertices")
    covered = face_idx >= 0
    if bool((face_idx[covered] >= dims["F"]).any()):
        raise ValueError(f"{fn}(): face_idx holds indices >= F={dims['F']} (faces of another mesh?)")
    per_face = torch.zeros(dims["F"], dtype=torch.float64, device=faces.device)
    per_face.index_add_(0, face_idx[covered].long(), weights[covered].detach().double())
    corners = faces.long().reshape(-1)
    out = torch.zeros(num_vertices, dtype=torch.float64, device=faces.device)
    return out.index_add_(0, corners, (per_face / 3.0).repeat_interleave(3))


def harmonic_fill(values: torch.Tensor, faces: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``values`` with the rows of the unknown vertices replaced by the harmonic interpolation of
    the known rows over the mesh's edges (each unknown value the mean of its neighbours').

    Unknown vertices of a connected part without any known vertex, and vertices on no edge,
    keep their values. Known rows are returned unchanged (bit for bit). No gradient. Up to
    ``dibr_core.large_steps.DENSE_MAX`` unknown vertices the system is solved densely (exact to
    rounding), above by the Jacobi-preconditioned conjugate gradient to a relative residual of 1e-7.

    Args:
        values: (V, C) float, e.g. vertex colours.
        faces: (F, 3) int.
        known: (V,) bool, the vertices whose values are kept and act as boundary values.

    Returns:
        (V, C) tensor of ``values``' dtype.
    """
    fn = "harmonic_fill"
    dims: dict = {}
    check_tensor(fn, "values", values, ("V", "C"), dims, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), None, "int", values.device)
    check_tensor(fn, "known", known, ("V",), dims, torch.bool, values.device)
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    out = values.detach().clone()
    if bool(known.all()) or not bool(known.any()) or faces.shape[0] == 0:
        return out
    e = mesh_edges(faces.long())
    a, b = e[:, 0], e[:, 1]
    # The unknown vertices connected to a known one (through unknown ones): grow from the known.
    reached = known.clone()
    while True:
        grown = reached.clone()
        grown[a[reached[b]]] = True
        grown[b[reached[a]]] = True
        if bool((grown == reached).all()):
            break
        reached = grown
    solve = reached & ~known
    if not bool(solve.any()):
        return out
    V = dims["V"]
    idx = torch.full((V,), -1, dtype=torch.long, device=values.device)
    n = int(solve.sum())
    idx[solve] = torch.arange(n, device=values.device)
    x = values.detach().double()
    ones = torch.ones(a.shape[0], dtype=torch.float64, device=values.device)
    degree = torch.zeros(V, dtype=torch.float64, device=values.device).index_add(0, a, ones).index_add(0, b, ones)
    # Rows of the unknown vertices: degree * x_i - sum over unknown neighbours = sum over known neighbours.
    rhs = torch.zeros(n, x.shape[1], dtype=torch.float64, device=values.device)
    for i, j in ((a, b), (b, a)):
        to_known = solve[i] & known[j]
        rhs.index_add_(0, idx[i[to_known]], x[j[to_known]])
    both = solve[a] & solve[b]
    ia, ib = idx[a[both]], idx[b[both]]
    diag = degree[solve]
    rows = torch.cat([ia, ib, torch.arange(n, device=values.device)])
    cols = torch.cat([ib, ia, torch.arange(n, device=values.device)])
    vals = torch.cat([-ones[both], -ones[both], diag])
    with warnings.catch_warnings():   # torch's notes on its sparse tensors being in beta
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n)).coalesce()
        if n <= DENSE_MAX:   # small: a dense Cholesky solve, exact to rounding
            sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(coo.to_dense()))
        else:
            sol = _pcg(coo.to_sparse_csr(), diag, rhs, None, _FILL_TOL)
    out[solve] = sol.to(out.dtype)
    return out
