"""Isotropic remeshing of closed triangle meshes towards a target edge length, for fits whose
topology may change between optimisation steps (in the spirit of Botsch & Kobbelt, "A Remeshing
Approach to Multiresolution Modeling", 2004, and Palfinger, "Continuous Remeshing for Inverse
Rendering", 2022).

One :func:`remesh` call runs ``iterations`` rounds of

1. **split** every edge longer than 4/3 of its target (at its midpoint; repeated until no edge
   is that long),
2. **collapse** every edge shorter than 4/5 of its target into its midpoint, refusing a collapse
   that would break manifoldness (the two end points must share exactly the two opposite
   vertices), leave a vertex with fewer than 3 neighbours, turn a face by more than
   ``COLLAPSE_MAX_TURN_DEG`` (so no normal flips) or make an edge longer than 4/3 of the target,
3. **flip** edges whose flip brings the valences of the four vertices involved closer to 6,
   unless the flip would create an existing edge, fold the quad or cross a crease sharper than
   ``FLIP_MAX_DIHEDRAL_DEG``,
4. **tangential relaxation**: each vertex moves towards the centroid of its neighbours, along
   the tangent plane only (the step's component along the vertex normal is removed); a move that
   would turn a face by more than 90 degrees is undone.

Splits, collapses and flips run in batches: each pass applies a set of operations whose
neighbourhoods do not overlap (the best candidate of each neighbourhood wins: longest edge for
splits, shortest for collapses, largest valence gain for flips; ties go to the lower edge index),
so the result is deterministic and a 5k-face pass takes a few tens of milliseconds. The
computation runs in float64 numpy on the CPU; results come back in the input's dtype and device.

The target edge length is a scalar or one value per vertex (an edge's target is the mean of its
end points'); :func:`target_length_from_views` derives one from the views' pixel footprint.
With ``max_faces`` the target grows (uniformly) until the result has at most that many faces.

Per-vertex attributes (colours, an optimiser's moments, ...) are carried through: a vertex made
by a split or a collapse gets the mean of the edge's two end points, the other vertices keep
theirs (relaxation moves vertices but leaves their attributes as they are).

Topology: the input must be a closed, consistently oriented 2-manifold of triangles (check one
with :func:`check_closed_manifold`); each operation keeps it one, with the same Euler
characteristic (so the same genus) per connected part.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dibr_core.camera import Camera
from dibr_core.checks import check_positive, check_tensor

__all__ = ["ManifoldReport", "RemeshResult", "check_closed_manifold", "require_closed_manifold", "remesh",
           "pixel_footprint", "target_length_from_views", "SPLIT_RATIO", "COLLAPSE_RATIO"]

SPLIT_RATIO = 4.0 / 3.0          # split edges longer than this times the target
COLLAPSE_RATIO = 4.0 / 5.0       # collapse edges shorter than this times the target
COLLAPSE_MAX_TURN_DEG = 60.0     # a collapse may turn no remaining face by more than this
FLIP_MAX_DIHEDRAL_DEG = 60.0     # no flips across creases sharper than this
TARGET_VALENCE = 6
_MAX_PASSES = 64                 # split / collapse / flip passes per iteration, at most
_BUDGET_FILL = 0.9               # with max_faces, aim at this fraction of the budget
_INF = np.iinfo(np.int64).max

NDArray = np.ndarray


# ---------------------------------------------------------------------------------------------
# checking a start mesh
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ManifoldReport:
    """What :func:`check_closed_manifold` found in a triangle mesh.

    Attributes:
        vertices, faces, edges: counts (edges are undirected and unique).
        boundary_edges: edges used by one face only (holes).
        nonmanifold_edges: edges used by three or more faces.
        inconsistent_edges: edges used twice in the same direction (neighbouring faces wound
            against each other).
        nonmanifold_vertices: vertices whose faces form more than one fan (bow-ties), counted
            on edge-manifold meshes only.
        degenerate_faces: faces that repeat a vertex index.
        unused_vertices: vertices no face uses (loose vertices).
        parts: connected parts (vertices joined by faces' edges; unused vertices not counted).
        euler_characteristic: ``V - E + F`` over the used vertices.
        genus: ``1 - chi / 2`` for one closed orientable part, else None.
    """

    vertices: int
    faces: int
    edges: int
    boundary_edges: int
    nonmanifold_edges: int
    inconsistent_edges: int
    nonmanifold_vertices: int
    degenerate_faces: int
    unused_vertices: int
    parts: int
    euler_characteristic: int
    genus: Optional[int]

    def problems(self, allow_loose_parts: bool = False) -> List[str]:
        """Plain-language list of what keeps the mesh from being one closed 2-manifold."""
        out = []
        if self.faces == 0:
            out.append("no faces")
        if self.degenerate_faces:
            out.append(f"{self.degenerate_faces} degenerate faces (a vertex used twice)")
        if self.nonmanifold_edges:
            out.append(f"{self.nonmanifold_edges} non-manifold edges (3 or more faces on one edge)")
        if self.boundary_edges:
            out.append(f"{self.boundary_edges} boundary edges (the surface has holes)")
        if self.inconsistent_edges:
            out.append(f"{self.inconsistent_edges} edges between faces with opposite winding")
        if self.nonmanifold_vertices:
            out.append(f"{self.nonmanifold_vertices} non-manifold vertices (faces meeting at a point only)")
        if self.unused_vertices:
            out.append(f"{self.unused_vertices} loose vertices (used by no face)")
        if self.parts > 1 and not allow_loose_parts:
            out.append(f"{self.parts} loose parts (expected one connected surface)")
        return out

    @property
    def ok(self) -> bool:
        """True for one closed, consistently oriented 2-manifold without loose vertices."""
        return not self.problems()


def _check_faces_arg(fn: str, faces: object) -> torch.Tensor:
    if isinstance(faces, torch.Tensor) and faces.dim() == 2 and faces.shape[1] != 3:
        raise ValueError(f"{fn}(): faces must have shape (F, 3) (triangles), got ({faces.shape[0]}, "
                         f"{faces.shape[1]}); triangulate n-gons first")
    f = check_tensor(fn, "faces", faces, shape=("F", 3), dtype="int")
    if f.numel() and int(f.min()) < 0:
        raise ValueError(f"{fn}(): faces holds negative index {int(f.min())} (shape ({f.shape[0]}, 3))")
    return f


def _components(n: int, a: NDArray, b: NDArray) -> NDArray:
    """(n,) labels of the connected components of a graph on n nodes with edges (a, b): the
    smallest node index of each component."""
    label = np.arange(n, dtype=np.int64)
    while True:
        m = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def check_closed_manifold(faces: torch.Tensor, num_vertices: Optional[int] = None) -> ManifoldReport:
    """Check that a triangle mesh is one closed, consistently oriented 2-manifold.

    Args:
        faces: (F, 3) int, vertex indices per face (an (F, k) tensor with k != 3 is refused:
            triangulate n-gons first).
        num_vertices: the vertex count V (so unused vertices are counted); default
            ``faces.max() + 1``.

    Returns:
        A :class:`ManifoldReport`; ``report.ok`` says whether the mesh passes and
        ``report.problems()`` names what fails (non-manifold edge count, boundary edges, loose
        parts, ...).
    """
    fn = "check_closed_manifold"
    f = _check_faces_arg(fn, faces).detach().cpu().numpy().astype(np.int64)
    used_max = int(f.max()) + 1 if f.size else 0
    nv = used_max if num_vertices is None else int(num_vertices)
    if nv < used_max:
        raise ValueError(f"{fn}(): faces holds index {used_max - 1}, outside [0, {nv}) for num_vertices={nv}")
    nf = f.shape[0]
    degenerate = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])
    src = f.reshape(-1)
    dst = f[:, [1, 2, 0]].reshape(-1)
    used = np.zeros(max(nv, 1), dtype=bool)
    used[src] = True
    n_used = int(used[:nv].sum())
    base = max(nv, 1)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    keys, counts = np.unique(lo * base + hi, return_counts=True)
    _, dcounts = np.unique(src * base + dst, return_counts=True)
    n_edges = int(keys.size)
    boundary = int((counts == 1).sum())
    nonmanifold = int((counts > 2).sum())
    inconsistent = int((dcounts > 1).sum())
    # Bow-ties: the corners around each vertex, joined when their faces share an edge at the vertex.
    nm_vertices = 0
    if nonmanifold == 0 and nf and not degenerate.any():
        corner = np.arange(3 * nf)
        cv = src                                                  # vertex of corner 3f + k
        nxt = (corner // 3) * 3 + (corner % 3 + 1) % 3
        prv = (corner // 3) * 3 + (corner % 3 + 2) % 3
        # The corner's two edges at its vertex: (v, next) and (v, prev), keyed per vertex.
        k_out = cv * base + src[nxt]
        k_in = cv * base + src[prv]
        allk = np.concatenate([k_out, k_in])
        owner = np.concatenate([corner, corner])
        order = np.argsort(allk, kind="stable")
        sk, so = allk[order], owner[order]
        same = np.nonzero(sk[1:] == sk[:-1])[0]
        lab = _components(3 * nf, so[same], so[same + 1])
        fans = np.unique(cv * (3 * nf) + lab).size               # distinct (vertex, fan) pairs
        nm_vertices = fans - n_used
        if nm_vertices:
            fan_v = np.unique(cv * (3 * nf) + lab) // (3 * nf)
            nm_vertices = int((np.bincount(fan_v, minlength=nv) > 1).sum())
    parts = 0
    if nf:
        ea, eb = keys // base, keys % base
        lab_v = _components(nv, ea, eb)
        parts = int(np.unique(lab_v[used[:nv]]).size)
    chi = n_used - n_edges + nf
    closed = boundary == 0 and nonmanifold == 0 and inconsistent == 0 and nm_vertices == 0 and not degenerate.any()
    genus = (2 - chi) // 2 if closed and parts == 1 and chi % 2 == 0 else None
    return ManifoldReport(vertices=nv, faces=nf, edges=n_edges, boundary_edges=boundary,
                          nonmanifold_edges=nonmanifold, inconsistent_edges=inconsistent,
                          nonmanifold_vertices=int(nm_vertices), degenerate_faces=int(degenerate.sum()),
                          unused_vertices=nv - n_used, parts=parts, euler_characteristic=int(chi), genus=genus)


def require_closed_manifold(fn: str, faces: torch.Tensor, num_vertices: Optional[int] = None,
                            allow_loose_parts: bool = False) -> ManifoldReport:
    """:func:`check_closed_manifold`, raising ``ValueError`` naming ``fn`` and every problem
    when the mesh is not a closed 2-manifold (``allow_loose_parts`` accepts several parts)."""
    report = check_closed_manifold(faces, num_vertices)
    problems = report.problems(allow_loose_parts)
    if problems:
        raise ValueError(f"{fn}(): faces (shape ({report.faces}, 3), {report.vertices} vertices) is not a closed "
                         f"2-manifold: " + "; ".join(problems))
    return report


# ---------------------------------------------------------------------------------------------
# target edge length from the views
# ---------------------------------------------------------------------------------------------
def pixel_footprint(vertices: torch.Tensor, cameras: Sequence[Camera],
                    image_sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """World-space size of one pixel at each vertex, in the view where it is smallest.

    A pixel at clip depth ``w`` spans ``2 w / (P[1, 1] H)`` world units vertically and
    ``2 w / (P[0, 0] W)`` horizontally (``P`` the projection; ``w`` is the distance along the
    viewing axis for a perspective camera, 1 for an orthographic one); the smaller of the two is
    the footprint. A view counts for a vertex only when the vertex projects inside its image
    (occlusion is not considered).

    Args:
        vertices: (V, 3) float, world-space positions.
        cameras: one :class:`~dibr_core.camera.Camera` per view (each may hold a batch of
            cameras sharing that view's image size).
        image_sizes: ``(H, W)`` per entry of ``cameras``.

    Returns:
        (V,) float64 on the CPU; ``inf`` for a vertex no view sees.
    """
    fn = "pixel_footprint"
    check_tensor(fn, "vertices", vertices, shape=("V", 3), dtype="float", finite=True)
    if len(cameras) != len(image_sizes) or len(cameras) == 0:
        raise ValueError(f"{fn}(): need one (H, W) image size per camera and at least one camera, got "
                         f"{len(cameras)} cameras and {len(image_sizes)} image sizes")
    x = vertices.detach().double().cpu()
    best = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for cam, size in zip(cameras, image_sizes):
        if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
            raise ValueError(f"{fn}(): image_sizes must hold positive (H, W) pairs, got {tuple(size)}")
        H, W = int(size[0]), int(size[1])
        c = cam.to(device=torch.device("cpu"), dtype=torch.float64)
        B = c.batch_size
        xc = c.to_camera(x[None].expand(B, -1, -1))             # (B, V, 3)
        clip = c.to_clip(xc)                                     # (B, V, 4)
        P = c.projection.expand(B, 4, 4)
        w = clip[..., 3]
        safe_w = torch.where(w > 0, w, torch.ones_like(w))
        ndc = clip[..., :2] / safe_w[..., None]
        inside = (w > 0) & (ndc.abs() <= 1.0).all(dim=-1) & (xc[..., 2] < -c.near)
        size_y = 2.0 * w / (P[:, 1, 1].abs()[:, None] * H)
        size_x = 2.0 * w / (P[:, 0, 0].abs()[:, None] * W)
        fp = torch.where(inside, torch.minimum(size_x, size_y), torch.full_like(w, math.inf))
        best = torch.minimum(best, fp.min(dim=0).values)
    return best


def target_length_from_views(vertices: torch.Tensor, cameras: Sequence[Camera],
                             image_sizes: Sequence[Tuple[int, int]], pixels: float = 4.0,
                             per_vertex: bool = True) -> Union[torch.Tensor, float]:
    """A target edge length of about ``pixels`` pixels in the nearest view that sees each vertex
    (:func:`pixel_footprint` times ``pixels``).

    Args:
        vertices: (V, 3) float; cameras, image_sizes: as :func:`pixel_footprint`.
        pixels: edge length in pixels, > 0.
        per_vertex: return (V,) per-vertex targets (vertices no view sees get the largest
            target of the seen ones), else one float, the median over the seen vertices.

    Returns:
        (V,) float64 CPU tensor, or a float; ready for :func:`remesh`'s ``target_length``.

    Raises:
        ValueError: when no vertex projects inside any view.
    """
    fn = "target_length_from_views"
    check_positive(fn, "pixels", pixels)
    fp = pixel_footprint(vertices, cameras, image_sizes)
    seen = torch.isfinite(fp)
    if not bool(seen.any()):
        raise ValueError(f"{fn}(): no vertex of vertices (shape ({vertices.shape[0]}, 3)) projects inside any of the "
                         f"{len(cameras)} views")
    t = fp * float(pixels)
    if not per_vertex:
        return float(t[seen].median())
    return torch.where(seen, t, t[seen].max())


# ---------------------------------------------------------------------------------------------
# mesh state and topology (numpy, float64 / int64)
# ---------------------------------------------------------------------------------------------
class _Topology:
    """Edges of a closed, consistently oriented manifold mesh, and the vertex one-rings.

    Half-edge ``h = 3 f + k`` runs from ``faces[f, k]`` to ``faces[f, (k + 1) % 3]``; each
    undirected edge has two, ``he[e, 0]`` (running ``a -> b`` with ``a = ev[e, 0]``) and
    ``he[e, 1]`` (``b -> a``). ``opp[e]`` are the vertices opposite the edge in those two faces.
    One-rings are CSR lists: the half-edges leaving each vertex (``ring``, from ``start`` for
    ``valence`` entries): their heads are its neighbours, their faces its faces.
    """

    def __init__(self, F: NDArray, nv: int) -> None:
        self.F = F
        nf = F.shape[0]
        src = F.reshape(-1)
        dst = F[:, [1, 2, 0]].reshape(-1)
        self.src, self.dst = src, dst
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        key = lo * nv + hi
        order = np.argsort(key, kind="stable")
        if order.size % 2 or not np.array_equal(key[order[0::2]], key[order[1::2]]):
            raise AssertionError("remesh: the mesh stopped being closed and edge-manifold")
        pair = order.reshape(-1, 2)
        # Orient each edge by its first half-edge.
        self.he = pair
        self.ev = np.stack([src[pair[:, 0]], dst[pair[:, 0]]], axis=1)
        self.keys = key[pair[:, 0]]                               # sorted
        self.he_edge = np.empty(3 * nf, dtype=np.int64)
        self.he_edge[pair[:, 0]] = np.arange(pair.shape[0])
        self.he_edge[pair[:, 1]] = np.arange(pair.shape[0])
        third = (np.arange(3 * nf) // 3) * 3 + (np.arange(3 * nf) % 3 + 2) % 3
        self.opp = np.stack([src[third[pair[:, 0]]], src[third[pair[:, 1]]]], axis=1)
        self.ring = np.argsort(src, kind="stable")
        self.valence = np.bincount(src, minlength=nv)
        self.start = np.cumsum(self.valence) - self.valence
        self.nv = nv

    def gather(self, q: NDArray) -> Tuple[NDArray, NDArray]:
        """One-ring half-edges of the vertices ``q``: (owner, half-edge) pairs, owner the index
        into ``q``."""
        cnt = self.valence[q]
        owner = np.repeat(np.arange(q.size), cnt)
        offs = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(self.start[q], cnt)
        return owner, self.ring[offs]

    def has_edge(self, a: NDArray, b: NDArray) -> NDArray:
        k = np.minimum(a, b) * self.nv + np.maximum(a, b)
        pos = np.searchsorted(self.keys, k).clip(max=max(self.keys.size - 1, 0))
        return self.keys[pos] == k


def _cross(u: NDArray, v: NDArray) -> NDArray:
    """Row-wise cross products of (N, 3) arrays."""
    return np.stack([u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1], u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2],
                     u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]], axis=1)


def _dot(u: NDArray, v: NDArray) -> NDArray:
    """Row-wise dot products of (N, 3) arrays."""
    out: NDArray = np.einsum("ij,ij->i", u, v)
    return out


def _norm(u: NDArray) -> NDArray:
    out: NDArray = np.sqrt(_dot(u, u))
    return out


def _tri_normals(X: NDArray, F: NDArray) -> NDArray:
    p0, p1, p2 = X[F[:, 0]], X[F[:, 1]], X[F[:, 2]]
    return _cross(p1 - p0, p2 - p0)


def _unit(n: NDArray) -> NDArray:
    out: NDArray = n / np.maximum(_norm(n), 1e-300)[:, None]
    return out


def _select(n: int, rank: NDArray, claim_owner: NDArray, claim_item: NDArray, end_owner: NDArray,
            end_item: NDArray, n_items: int) -> NDArray:
    """Greedy non-conflicting set of candidates, best rank first (rank 0 is best).

    Candidate ``j`` touches the items (vertices or faces) ``claim_item[claim_owner == j]`` and
    owns ``end_item[end_owner == j]`` (a subset of its claims). Two selected candidates never
    have one's owned item among the other's claims. Each round selects every candidate that is
    the best owner of all the items it claims, then drops the candidates that own an item a
    selected one claims; rounds repeat until no candidate is left. Returns a bool mask (n,).
    """
    selected = np.zeros(n, dtype=bool)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        best = np.full(n_items, _INF, dtype=np.int64)
        live_end = alive[end_owner]
        np.minimum.at(best, end_item[live_end], rank[end_owner[live_end]])
        live_claim = alive[claim_owner]
        lost = live_claim & (best[claim_item] < rank[claim_owner])
        win = alive & (np.bincount(claim_owner[lost], minlength=n) == 0)
        selected |= win
        blocked = np.zeros(n_items, dtype=bool)
        blocked[claim_item[win[claim_owner]]] = True
        hit = np.bincount(end_owner[blocked[end_item]], minlength=n) > 0
        alive &= ~win & ~hit
    return selected


def _rank(order_keys: Tuple[NDArray, ...]) -> NDArray:
    """Dense rank (0 = best) of candidates sorted by the keys (last key primary, lexsort)."""
    order = np.lexsort(order_keys)
    r = np.empty(order.size, dtype=np.int64)
    r[order] = np.arange(order.size)
    return r


@dataclass
class _State:
    X: NDArray          # (V, 3) float64
    F: NDArray          # (F, 3) int64
    A: NDArray          # (V, 1 + C) float64: column 0 the target length, then the attributes
    splits: int = 0
    collapses: int = 0
    flips: int = 0


def _split_pass(s: _State) -> int:
    topo = _Topology(s.F, s.X.shape[0])
    a, b = topo.ev[:, 0], topo.ev[:, 1]
    length = _norm(s.X[a] - s.X[b])
    target = 0.5 * (s.A[a, 0] + s.A[b, 0])
    ratio = length / target
    cand = ratio > SPLIT_RATIO
    if not cand.any():
        return 0
    idx = np.nonzero(cand)[0]
    m = idx.size
    rank = _rank((idx, -ratio[idx]))
    owner = np.repeat(np.arange(m), 2)
    items = (topo.he[idx] // 3).reshape(-1)
    chosen = idx[_select(m, rank, owner, items, owner, items, s.F.shape[0])]
    n = chosen.size
    nv = s.X.shape[0]
    mid = nv + np.arange(n)
    s.X = np.concatenate([s.X, 0.5 * (s.X[a[chosen]] + s.X[b[chosen]])])
    s.A = np.concatenate([s.A, 0.5 * (s.A[a[chosen]] + s.A[b[chosen]])])
    h = topo.he[chosen].reshape(-1)                               # both half-edges of each edge
    vm = np.repeat(mid, 2)
    f, k = h // 3, h % 3
    va, vb, vc = s.F[f, k], s.F[f, (k + 1) % 3], s.F[f, (k + 2) % 3]
    F = s.F.copy()
    F[f] = np.stack([va, vm, vc], axis=1)
    s.F = np.concatenate([F, np.stack([vm, vb, vc], axis=1)])
    s.splits += n
    return n


def _collapse_pass(s: _State, cos_turn: float) -> int:
    X, F = s.X, s.F
    nv = X.shape[0]
    topo = _Topology(F, nv)
    a, b = topo.ev[:, 0], topo.ev[:, 1]
    c, d = topo.opp[:, 0], topo.opp[:, 1]
    length = _norm(X[a] - X[b])
    target = 0.5 * (s.A[a, 0] + s.A[b, 0])
    val = topo.valence
    cand = np.nonzero((length < COLLAPSE_RATIO * target) & (val[a] + val[b] >= 7) & (val[c] >= 4) & (val[d] >= 4))[0]
    if cand.size == 0:
        return 0
    ca, cb = a[cand], b[cand]
    n = cand.size
    # One-rings of both end points: (candidate, half-edge) pairs.
    oa, ha = topo.gather(ca)
    ob, hb = topo.gather(cb)
    owner = np.concatenate([oa, ob])
    hes = np.concatenate([ha, hb])
    nb = topo.dst[hes]
    # Link condition: exactly two common neighbours (the opposite vertices).
    keys = np.sort(owner * nv + nb)
    dup = keys[1:][keys[1:] == keys[:-1]] // nv
    ok = np.bincount(dup, minlength=n) == 2
    # No edge longer than the split threshold around the merged vertex.
    p = 0.5 * (X[ca] + X[cb])
    oa_, ob_ = ca[owner], cb[owner]
    po = p[owner]
    far = _norm(X[nb] - po) > SPLIT_RATIO * target[cand][owner]
    far &= (nb != oa_) & (nb != ob_)
    ok &= np.bincount(owner[far], minlength=n) == 0
    # No face turns by more than the allowed angle (the two faces of the edge disappear): the
    # half-edge leaving a or b in a face is (v, w) and the face is (v, w, u).
    w = nb
    u = topo.src[(hes // 3) * 3 + (hes % 3 + 2) % 3]
    gone = (w == oa_) | (w == ob_) | (u == oa_) | (u == ob_)
    xw, xu = X[w], X[u]
    n_old = _cross(xw - X[topo.src[hes]], xu - X[topo.src[hes]])
    n_new = _cross(xw - po, xu - po)
    bad = (_dot(n_old, n_new) <= cos_turn * _norm(n_old) * _norm(n_new)) & ~gone
    ok &= np.bincount(owner[bad], minlength=n) == 0
    if not ok.any():
        return 0
    # Non-conflicting set, shortest edge (relative to its target) first: no selected collapse
    # has an end point in another's one-ring, so each one's checks still hold after the others.
    keep_c = np.nonzero(ok)[0]
    ok_index = np.full(n, -1)
    ok_index[keep_c] = np.arange(keep_c.size)
    rank = _rank((cand[keep_c], (length[cand] / target[cand])[keep_c]))
    valid = ok[owner]
    m = keep_c.size
    end_owner = np.repeat(np.arange(m), 2)
    end_item = np.stack([ca[keep_c], cb[keep_c]], axis=1).reshape(-1)
    sel = keep_c[_select(m, rank, ok_index[owner[valid]], nb[valid], end_owner, end_item, nv)]
    ka, kb = ca[sel], cb[sel]
    X = X.copy()
    X[ka] = 0.5 * (X[ka] + X[kb])
    A = s.A.copy()
    A[ka] = 0.5 * (A[ka] + A[kb])
    remap = np.arange(nv)
    remap[kb] = ka
    drop = np.zeros(F.shape[0], dtype=bool)
    drop[topo.he[cand[sel]].reshape(-1) // 3] = True
    F = remap[F[~drop]]
    keep = np.ones(nv, dtype=bool)
    keep[kb] = False
    new_index = np.cumsum(keep) - 1
    s.F = new_index[F]
    s.X = X[keep]
    s.A = A[keep]
    s.collapses += sel.size
    return int(sel.size)


def _flip_pass(s: _State, cos_dihedral: float) -> int:
    X, F = s.X, s.F
    nv = X.shape[0]
    topo = _Topology(F, nv)
    a, b = topo.ev[:, 0], topo.ev[:, 1]
    c, d = topo.opp[:, 0], topo.opp[:, 1]
    v = topo.valence - TARGET_VALENCE
    before = v[a] ** 2 + v[b] ** 2 + v[c] ** 2 + v[d] ** 2
    after = (v[a] - 1) ** 2 + (v[b] - 1) ** 2 + (v[c] + 1) ** 2 + (v[d] + 1) ** 2
    gain = before - after
    cand = np.nonzero((gain > 0) & (topo.valence[a] > 3) & (topo.valence[b] > 3) & (c != d))[0]
    if cand.size:
        cand = cand[~topo.has_edge(c[cand], d[cand])]
    if cand.size == 0:
        return 0
    ca, cb, cc, cd = a[cand], b[cand], c[cand], d[cand]
    # Old faces (a, b, c) and (b, a, d); new faces (a, d, c) and (d, b, c).
    n0 = _unit(_cross(X[cb] - X[ca], X[cc] - X[ca]))
    n1 = _unit(_cross(X[ca] - X[cb], X[cd] - X[cb]))
    m0 = _unit(_cross(X[cd] - X[ca], X[cc] - X[ca]))
    m1 = _unit(_cross(X[cb] - X[cd], X[cc] - X[cd]))
    avg = _unit(n0 + n1)
    ok = (_dot(n0, n1) > cos_dihedral) & (_dot(m0, avg) > 0.0) & (_dot(m1, avg) > 0.0) & (_dot(m0, m1) > cos_dihedral)
    if not ok.any():
        return 0
    cand, ca, cb, cc, cd = cand[ok], ca[ok], cb[ok], cc[ok], cd[ok]
    n = cand.size
    rank = _rank((cand, -gain[cand]))
    owner = np.repeat(np.arange(n), 4)
    verts = np.stack([ca, cb, cc, cd], axis=1).reshape(-1)
    sel = np.nonzero(_select(n, rank, owner, verts, owner, verts, nv))[0]
    f0 = topo.he[cand[sel], 0] // 3
    f1 = topo.he[cand[sel], 1] // 3
    F = F.copy()
    F[f0] = np.stack([ca[sel], cd[sel], cc[sel]], axis=1)
    F[f1] = np.stack([cd[sel], cb[sel], cc[sel]], axis=1)
    s.F = F
    s.flips += sel.size
    return int(sel.size)


def _relax(s: _State, step: float) -> None:
    X, F = s.X, s.F
    nv = X.shape[0]
    src = F.reshape(-1)
    dst = F[:, [1, 2, 0]].reshape(-1)
    deg = np.bincount(src, minlength=nv).astype(np.float64)
    centroid: NDArray = np.stack([np.bincount(src, weights=X[dst, k], minlength=nv) for k in range(3)], axis=1)
    centroid = centroid / np.maximum(deg, 1.0)[:, None]
    fn = _tri_normals(X, F)
    normal = np.zeros_like(X)
    for k in range(3):
        normal += np.stack([np.bincount(F[:, k], weights=fn[:, j], minlength=nv) for j in range(3)], axis=1)
    normal = _unit(normal)
    delta = centroid - X
    delta -= _dot(delta, normal)[:, None] * normal
    new = X + step * delta
    # Undo the moves that turn a face by more than 90 degrees (repeat: undoing can expose another).
    moving = np.ones(nv, dtype=bool)
    for _ in range(8):
        fn_new = _tri_normals(new, F)
        flipped = _dot(fn_new, fn) <= 0.0
        if not flipped.any():
            break
        moving[F[flipped].reshape(-1)] = False
        new = np.where(moving[:, None], X + step * delta, X)
    else:
        new = X
    s.X = new


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
@dataclass
class RemeshResult:
    """What :func:`remesh` returns.

    Attributes:
        vertices: (V', 3) positions, in the input's dtype and device.
        faces: (F', 3) int64 (on the input faces' device), counter-clockwise seen from outside
            like the input.
        attributes: the remapped per-vertex attributes, same names, (V', ...) each, in each
            input's dtype and device.
        target_length: (V',) float64 CPU, the per-vertex target edge length used (after any
            growth for ``max_faces``); pass it back to the next call to keep the same target.
        splits, collapses, flips: operations applied.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    attributes: Dict[str, torch.Tensor] = field(default_factory=dict)
    target_length: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    splits: int = 0
    collapses: int = 0
    flips: int = 0

    @property
    def topology_changed(self) -> bool:
        return bool(self.splits or self.collapses or self.flips)


def _iteration(s: _State, relax_steps: int, relax_step: float, cos_turn: float, cos_dihedral: float) -> None:
    for _ in range(_MAX_PASSES):
        if _split_pass(s) == 0:
            break
    for _ in range(_MAX_PASSES):
        if _collapse_pass(s, cos_turn) == 0:
            break
    for _ in range(_MAX_PASSES):
        if _flip_pass(s, cos_dihedral) == 0:
            break
    for _ in range(relax_steps):
        _relax(s, relax_step)


def _expected_faces(s: _State) -> float:
    """Faces of an even remesh of the surface at the current targets (equilateral triangles with
    sides equal to the mean target of each face's corners)."""
    area = 0.5 * _norm(_tri_normals(s.X, s.F))
    t = s.A[s.F, 0].mean(axis=1)
    return float((area / (math.sqrt(3.0) / 4.0 * t * t)).sum())


def remesh(vertices: torch.Tensor, faces: torch.Tensor, target_length: Union[float, torch.Tensor],
           attributes: Optional[Mapping[str, torch.Tensor]] = None, iterations: int = 3,
           max_faces: Optional[int] = None, relax_steps: int = 2, relax_step: float = 0.5,
           allow_loose_parts: bool = False, check_input: bool = True) -> RemeshResult:
    """Isotropic remeshing of a closed triangle mesh towards a target edge length (see the
    module docstring for the operations).

    Between optimisation steps: remesh the current positions, then rebuild whatever depends on
    the topology (parameters, Laplacian, optimiser) from the result, carrying the optimiser's
    per-vertex state through ``attributes``::

        st = opt.state[x]                                  # torch.optim.Adam on x: (V, 3)
        r = remesh(x.detach(), faces, target, attributes={
            "exp_avg": st["exp_avg"], "exp_avg_sq": st["exp_avg_sq"], "colors": colors})
        x = torch.nn.Parameter(r.vertices); faces = r.faces
        opt = torch.optim.Adam([x], lr=lr)
        opt.state[x] = {"step": st["step"], "exp_avg": r.attributes["exp_avg"],
                        "exp_avg_sq": r.attributes["exp_avg_sq"]}
        target = r.target_length                            # or a new one from the views

    Args:
        vertices: (V, 3) float32 or float64 positions (detached; any device).
        faces: (F, 3) int triangles of one closed, consistently oriented 2-manifold
            (n-gons must be triangulated first).
        target_length: a positive float, or (V,) positive per-vertex targets (an edge's target
            is the mean of its end points').
        attributes: optional per-vertex float tensors, (V, ...) each, remapped: split and
            collapse vertices get the mean of the edge's two end points.
        iterations: rounds of split / collapse / flip / relax, >= 1 (one to three between fit
            steps; more to converge from far).
        max_faces: optional face budget, >= 4: the target grows uniformly (before the rounds,
            from the surface area, and again after them while the mesh is over budget) so the
            result has at most this many faces.
        relax_steps, relax_step: tangential relaxation steps per round and their size (a vertex
            moves by ``relax_step`` times its tangential offset to the neighbours' centroid).
        allow_loose_parts: accept a mesh of several closed parts (each is remeshed on its own).
        check_input: run :func:`require_closed_manifold` first (turn off only for meshes that
            came out of :func:`remesh`).

    Returns:
        A :class:`RemeshResult`.

    Raises:
        ValueError / TypeError: bad shapes, dtypes or values (naming the argument), a mesh that
            is not a closed 2-manifold (naming the problems), or a face budget that collapses
            cannot reach.
    """
    fn = "remesh"
    dims: Dict[str, int] = {}
    check_tensor(fn, "vertices", vertices, shape=("V", 3), dims=dims, dtype="float", finite=True, nonempty=("V",))
    f_t = _check_faces_arg(fn, faces)
    if f_t.numel() and int(f_t.max()) >= dims["V"]:
        raise ValueError(f"{fn}(): faces holds index {int(f_t.max())}, outside [0, {dims['V']}) for {dims['V']} "
                         f"vertices (shape ({f_t.shape[0]}, 3))")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"{fn}(): iterations must be an int >= 1, got {iterations!r}")
    if isinstance(relax_steps, bool) or not isinstance(relax_steps, int) or relax_steps < 0:
        raise ValueError(f"{fn}(): relax_steps must be an int >= 0, got {relax_steps!r}")
    check_positive(fn, "relax_step", relax_step)
    if max_faces is not None and (isinstance(max_faces, bool) or not isinstance(max_faces, int) or max_faces < 4):
        raise ValueError(f"{fn}(): max_faces must be an int >= 4 (a tetrahedron has 4 faces), got {max_faces!r}")
    nv = dims["V"]
    if isinstance(target_length, torch.Tensor):
        check_tensor(fn, "target_length", target_length, shape=("V",), dims=dims, dtype="float", finite=True)
        t = target_length.detach().double().cpu().numpy()
        if t.size and float(t.min()) <= 0:
            raise ValueError(f"{fn}(): target_length must be positive, got min {float(t.min())!r} "
                             f"(shape ({t.size},))")
    else:
        check_positive(fn, "target_length", target_length)
        t = np.full(nv, float(target_length))
    attrs = dict(attributes or {})
    cols: List[NDArray] = [t[:, None]]
    layout: List[Tuple[str, torch.Size, torch.dtype, torch.device, int]] = []
    for name, val in attrs.items():
        check_tensor(fn, f"attributes[{name!r}]", val, dtype="float", finite=True)
        if val.dim() < 1 or val.shape[0] != nv:
            raise ValueError(f"{fn}(): attributes[{name!r}] must have shape (V, ...) with V={nv}, got "
                             f"{tuple(val.shape)}")
        flat = val.detach().double().cpu().reshape(nv, -1).numpy()
        layout.append((name, val.shape[1:], val.dtype, val.device, flat.shape[1]))
        cols.append(flat)
    if check_input:
        require_closed_manifold(fn, f_t, nv, allow_loose_parts)
    s = _State(X=vertices.detach().double().cpu().numpy().copy(), F=f_t.detach().long().cpu().numpy().copy(),
               A=np.concatenate(cols, axis=1))
    if max_faces is not None:
        est = _expected_faces(s)
        if est > _BUDGET_FILL * max_faces:
            s.A[:, 0] *= math.sqrt(est / (_BUDGET_FILL * max_faces))
    cos_turn = math.cos(math.radians(COLLAPSE_MAX_TURN_DEG))
    cos_dihedral = math.cos(math.radians(FLIP_MAX_DIHEDRAL_DEG))
    for _ in range(iterations):
        _iteration(s, relax_steps, relax_step, cos_turn, cos_dihedral)
    if max_faces is not None:
        for _ in range(16):
            if s.F.shape[0] <= max_faces:
                break
            s.A[:, 0] *= max(1.05, math.sqrt(s.F.shape[0] / (_BUDGET_FILL * max_faces)))
            _iteration(s, relax_steps, relax_step, cos_turn, cos_dihedral)
        if s.F.shape[0] > max_faces:
            raise ValueError(f"{fn}(): max_faces={max_faces} cannot be reached: edge collapses stop at "
                             f"{s.F.shape[0]} faces (a closed surface of this genus needs more)")
    out_attrs: Dict[str, torch.Tensor] = {}
    col = 1
    for name, shape, dtype, device, width in layout:
        block = torch.from_numpy(np.ascontiguousarray(s.A[:, col:col + width]))
        out_attrs[name] = block.reshape(-1, *shape).to(dtype=dtype, device=device)
        col += width
    return RemeshResult(
        vertices=torch.from_numpy(s.X).to(dtype=vertices.dtype, device=vertices.device),
        faces=torch.from_numpy(s.F).to(device=f_t.device),
        attributes=out_attrs,
        target_length=torch.from_numpy(np.ascontiguousarray(s.A[:, 0])),
        splits=s.splits, collapses=s.collapses, flips=s.flips)
