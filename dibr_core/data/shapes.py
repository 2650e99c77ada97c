"""Procedural "ShapeNet-like" shapes: 13 categories built from convex parts.

A shape is a list of :class:`ConvexPart`. Each part is a closed convex triangle mesh whose faces
are counter-clockwise seen from outside (docs/conventions.md), together with the half-spaces of
its face planes: a point ``x`` is inside the part iff ``normals @ x <= offsets`` for every plane.
A point is inside the *shape* iff it is inside any part, so the occupancy of the union is exact
without any mesh boolean. Overlapping parts render correctly with a z-buffer.

Frames: world space, +Y up; vehicles and benches are long along X, their front faces +Z is not
assumed anywhere. After construction the whole shape is normalised like ShapeNetCore/NMR: its
bounding box is centred at the origin and scaled so that its **diagonal is 1** (default, so the
shape fits in [-0.5, 0.5]^3 and its longest side is between 0.58 and 1), or so that its longest
side is 1 (``normalize="longest"``).

Everything is deterministic given the seed of the ``numpy.random.Generator`` (see
:func:`make_shape`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

CATEGORIES: Tuple[str, ...] = (
    "airplane", "bench", "cabinet", "car", "chair", "display", "lamp",
    "loudspeaker", "rifle", "sofa", "table", "telephone", "watercraft",
)
"""The 13 ShapeNet categories of NMR / SoftRas / DIB-R, in the usual (synset) order."""


Vec = Union[Sequence[float], np.ndarray]
"""A 3-vector (or 2-vector for loft shifts) given as a sequence or an array."""


@dataclass(frozen=True)
class ConvexPart:
    """One convex part.

    Attributes:
        vertices: (V, 3) float64 corner positions.
        faces: (F, 3) int64 triangles, counter-clockwise seen from outside (outward normals).
        normals: (F, 3) float64 unit outward face-plane normals (one half-space per face;
            coplanar duplicates are harmless).
        offsets: (F,) float64 plane offsets: inside iff ``normals @ x <= offsets``.
        color: (3,) float64 RGB in [0, 1].
    """

    vertices: np.ndarray
    faces: np.ndarray
    normals: np.ndarray
    offsets: np.ndarray
    color: np.ndarray


Shape = List[ConvexPart]


# ----------------------------------------------------------------------------------------------
# Convex part construction
# ----------------------------------------------------------------------------------------------

def make_part(vertices: np.ndarray, faces: np.ndarray, color: Vec) -> ConvexPart:
    """Build a part from a closed convex mesh, orienting every face outward.

    Args:
        vertices: (V, 3) corners; faces: (F, 3) triangles of the convex hull in any orientation.
        color: RGB.
    Raises:
        ValueError: if the mesh is not convex (a vertex lies outside a face plane).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64).copy()
    centre = v.mean(axis=0)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    n = np.cross(b - a, c - a)                                   # (F, 3)
    norm = np.linalg.norm(n, axis=1)
    keep = norm > 1e-14 * max(1.0, float(np.abs(v).max()) ** 2)
    f, a, n, norm = f[keep], a[keep], n[keep], norm[keep]
    flip = np.einsum("ij,ij->i", n, (a - centre)) < 0
    f[flip] = f[flip][:, [0, 2, 1]]
    n[flip] = -n[flip]
    n = n / norm[:, None]
    d = np.einsum("ij,ij->i", n, a)
    scale = float(np.abs(v - centre).max())
    excess = float((v @ n.T - d[None, :]).max())
    if excess > 1e-7 * scale:
        raise ValueError(f"make_part(): mesh is not convex (a vertex is {excess:.3g} outside a face plane)")
    return ConvexPart(v, f, n, d, np.clip(np.asarray(color, dtype=np.float64), 0.0, 1.0))


def _loft(poly: np.ndarray, top_scale: float = 1.0, top_shift: Vec = (0.0, 0.0)) -> Tuple[np.ndarray, np.ndarray]:
    """Canonical loft: convex polygon (n, 2) at z=0 and ``top_scale*poly + top_shift`` at z=1.

    Corresponding edges are parallel, so every side quad is planar and the solid is convex.
    Returns vertices (2n, 3) and faces (4n - 4, 3) (caps are fans; orientation fixed later).
    """
    n = poly.shape[0]
    bot = np.concatenate([poly, np.zeros((n, 1))], axis=1)
    top = np.concatenate([poly * top_scale + np.asarray(top_shift)[None, :], np.ones((n, 1))], axis=1)
    verts = np.concatenate([bot, top], axis=0)
    faces: List[Tuple[int, int, int]] = []
    for i in range(1, n - 1):
        faces.append((0, i, i + 1))
        faces.append((n, n + i, n + i + 1))
    for i in range(n):
        j = (i + 1) % n
        faces.append((i, j, n + j))
        faces.append((i, n + j, n + i))
    return verts, np.asarray(faces, dtype=np.int64)


def _affine(verts: np.ndarray, A: np.ndarray, t: Vec) -> np.ndarray:
    """(V, 3) -> (V, 3): ``A @ v + t`` (affine maps keep convexity and planarity)."""
    return verts @ np.asarray(A, dtype=np.float64).T + np.asarray(t, dtype=np.float64)[None, :]


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


_SQUARE = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


def box(center: Vec, size: Vec, color: Vec,
        rot: Optional[np.ndarray] = None) -> ConvexPart:
    """Box of edge lengths ``size`` (3,), rotated by ``rot`` (3, 3) about its centre."""
    v, f = _loft(_SQUARE)
    v = (v - np.array([0.0, 0.0, 0.5])) * np.asarray(size, dtype=np.float64)[None, :]
    R = np.eye(3) if rot is None else rot
    return make_part(_affine(v, R, center), f, color)


def _frame(axis: np.ndarray) -> np.ndarray:
    """(3, 3) matrix whose columns u, v, w are orthonormal with w = axis / |axis|."""
    w = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(w[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(helper, w)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(w, u), w], axis=1)


def _ngon(n: int) -> np.ndarray:
    t = 2 * np.pi * (np.arange(n) + 0.5) / n
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def cylinder(p0: Vec, p1: Vec, r0: float, color: Vec,
             r1: Optional[float] = None, sides: int = 12, squash: float = 1.0) -> ConvexPart:
    """Prism / frustum with a regular ``sides``-gon section from ``p0`` (radius r0) to ``p1`` (r1).

    ``squash`` scales the section along its second axis (elliptic sections).
    """
    a, b = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    r1 = r0 if r1 is None else r1
    v, f = _loft(_ngon(sides), top_scale=r1 / r0)
    F = _frame(b - a)
    A = F @ np.diag([r0, r0 * squash, float(np.linalg.norm(b - a))])
    return make_part(_affine(v, A, a), f, color)


def loft(poly: np.ndarray, A: np.ndarray, t: Vec, color: Vec,
         top_scale: float = 1.0, top_shift: Vec = (0.0, 0.0)) -> ConvexPart:
    """General loft of a convex polygon (n, 2) mapped by the affine ``A @ v + t`` (A (3, 3))."""
    v, f = _loft(np.asarray(poly, dtype=np.float64), top_scale, top_shift)
    return make_part(_affine(v, A, t), f, color)


def _icosphere1() -> Tuple[np.ndarray, np.ndarray]:
    """Unit icosphere with one subdivision: 42 vertices, 80 faces (convex)."""
    p = (1 + 5 ** 0.5) / 2
    v = np.array([[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p],
                  [0, -1, -p], [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]], dtype=np.float64)
    f = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
         (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5),
         (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    verts = [x / np.linalg.norm(x) for x in v]
    mid: Dict[Tuple[int, int], int] = {}

    def midpoint(i: int, j: int) -> int:
        key = (min(i, j), max(i, j))
        if key not in mid:
            m = verts[i] + verts[j]
            verts.append(m / np.linalg.norm(m))
            mid[key] = len(verts) - 1
        return mid[key]

    out = []
    for a, b, c in f:
        ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
        out += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    return np.asarray(verts), np.asarray(out, dtype=np.int64)


_ICO = _icosphere1()


def ellipsoid(center: Vec, radii: Vec, color: Vec,
              rot: Optional[np.ndarray] = None) -> ConvexPart:
    """Convex 80-face polytope inscribed in the ellipsoid of semi-axes ``radii``."""
    R = np.eye(3) if rot is None else rot
    return make_part(_affine(_ICO[0], R @ np.diag(np.asarray(radii, dtype=np.float64)), center), _ICO[1], color)


# ----------------------------------------------------------------------------------------------
# Colours
# ----------------------------------------------------------------------------------------------

_PALETTES: Dict[str, List[Tuple[float, float, float]]] = {
    "wood": [(0.55, 0.36, 0.2), (0.7, 0.5, 0.3), (0.4, 0.26, 0.15), (0.8, 0.65, 0.45)],
    "metal": [(0.6, 0.6, 0.62), (0.35, 0.35, 0.38), (0.75, 0.75, 0.78)],
    "dark": [(0.12, 0.12, 0.13), (0.2, 0.2, 0.22), (0.25, 0.22, 0.2)],
    "paint": [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.9, 0.9, 0.92), (0.15, 0.5, 0.2), (0.9, 0.7, 0.1)],
    "fabric": [(0.5, 0.2, 0.2), (0.3, 0.35, 0.5), (0.55, 0.5, 0.4), (0.3, 0.45, 0.3), (0.65, 0.6, 0.55)],
    "light": [(0.92, 0.92, 0.9), (0.85, 0.87, 0.9), (0.95, 0.9, 0.8)],
    "screen": [(0.05, 0.08, 0.15), (0.1, 0.15, 0.3)],
}


def _color(rng: np.random.Generator, palette: str) -> np.ndarray:
    options = _PALETTES[palette]
    base = np.asarray(options[int(rng.integers(len(options)))])
    return np.asarray(np.clip(base + rng.normal(0.0, 0.04, 3), 0.0, 1.0))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# ----------------------------------------------------------------------------------------------
# Category grammars (units before normalisation; +Y up)
# ----------------------------------------------------------------------------------------------

_AIRFOIL = np.array([[-0.5, 0.0], [-0.3, 0.5], [0.2, 0.4], [0.5, 0.0], [0.2, -0.25], [-0.3, -0.3]])


def _airplane(rng: np.random.Generator) -> Shape:
    body, wingc = _color(rng, "light"), _color(rng, rng.choice(["light", "metal", "paint"]))
    L, r = _u(rng, 0.8, 1.2), _u(rng, 0.04, 0.08)
    parts = [ellipsoid((0, 0, 0), (L / 2, r, r), body)]
    span, chord, sweep = _u(rng, 0.35, 0.55), _u(rng, 0.12, 0.25), _u(rng, 0.0, 0.25)
    taper, dihedral, thick = _u(rng, 0.3, 0.8), _u(rng, -0.03, 0.08), _u(rng, 0.02, 0.04)
    xw, yw = _u(rng, -0.1, 0.1) * L, _u(rng, -0.6, 0.3) * r
    for side in (1.0, -1.0):
        A = np.array([[chord, 0, 0], [0, thick, 0], [0, 0, side * span]])
        parts.append(loft(_AIRFOIL, A, (xw, yw, 0), wingc, taper, (sweep / chord, dihedral / thick)))
        ts, tc = span * _u(rng, 0.3, 0.45), chord * _u(rng, 0.4, 0.6)
        A = np.array([[tc, 0, 0], [0, thick * 0.7, 0], [0, 0, side * ts]])
        parts.append(loft(_AIRFOIL, A, (-0.45 * L + tc / 2, 0.3 * r, 0), wingc, 0.6, (0.3, 0.0)))
    fh = _u(rng, 0.1, 0.2)
    A = np.array([[chord * 0.7, 0, 0], [0, 0, fh], [0, thick * 0.7, 0]])
    parts.append(loft(_AIRFOIL, A, (-0.45 * L + chord * 0.3, r * 0.5, 0), wingc, 0.5, (0.4, 0.0)))
    for k in range(int(rng.integers(0, 3))):
        z = span * (0.3 + 0.3 * k)
        er = _u(rng, 0.025, 0.04)
        for side in (1.0, -1.0):
            parts.append(cylinder((xw + chord * 0.5, yw - er * 1.2, side * z), (xw - chord * 0.6, yw - er * 1.2, side * z),
                                  er, _color(rng, "metal"), sides=10))
    return parts


def _bench(rng: np.random.Generator) -> Shape:
    wood, metal = _color(rng, "wood"), _color(rng, rng.choice(["metal", "dark"]))
    L, D, H, t = _u(rng, 1.0, 1.6), _u(rng, 0.3, 0.5), _u(rng, 0.35, 0.5), _u(rng, 0.03, 0.07)
    parts = [box((0, H, 0), (L, t, D), wood)]
    if rng.random() < 0.5:
        for s in (1, -1):
            parts.append(box((s * (L / 2 - 0.05), H / 2, 0), (0.04, H, D * 0.9), metal))
    else:
        lw = _u(rng, 0.03, 0.06)
        for sx in (1, -1):
            for sz in (1, -1):
                parts.append(box((sx * (L / 2 - 0.08), H / 2, sz * (D / 2 - 0.05)), (lw, H, lw), metal))
    if rng.random() < 0.6:
        bh, tilt = _u(rng, 0.25, 0.45), _u(rng, 0.0, 0.3)
        parts.append(box((0, H + bh / 2 + 0.02, -D / 2 + 0.03), (L, bh, t), wood, rot_x(-tilt)))
    return parts


def _cabinet(rng: np.random.Generator) -> Shape:
    body, front = _color(rng, rng.choice(["wood", "light"])), _color(rng, rng.choice(["wood", "light", "dark"]))
    W, H, D = _u(rng, 0.5, 1.0), _u(rng, 0.6, 1.2), _u(rng, 0.35, 0.6)
    ph = _u(rng, 0.03, 0.08)
    parts = [box((0, ph + H / 2, 0), (W, H, D), body), box((0, ph / 2, 0), (W * 0.92, ph, D * 0.92), _color(rng, "dark"))]
    if rng.random() < 0.5:
        o = _u(rng, 0.01, 0.05)
        parts.append(box((0, ph + H + 0.015, o / 2), (W + 2 * o, 0.03, D + o), body))
    n = int(rng.integers(2, 5))
    gap = 0.02
    h = (H - gap * (n + 1)) / n
    for i in range(n):
        y = ph + gap + h / 2 + i * (h + gap)
        parts.append(box((0, y, D / 2 + 0.01), (W - 2 * gap, h, 0.02), front))
    return parts


def _car(rng: np.random.Generator) -> Shape:
    paint, dark = _color(rng, "paint"), _color(rng, "dark")
    L, W, Hb, ride = _u(rng, 0.9, 1.1), _u(rng, 0.4, 0.5), _u(rng, 0.15, 0.25), _u(rng, 0.06, 0.12)
    parts = [box((0, ride + Hb / 2, 0), (L, Hb, W), paint)]
    cl, ch, cx = L * _u(rng, 0.4, 0.6), _u(rng, 0.1, 0.18), _u(rng, -0.15, 0.1) * L
    tl = cl * _u(rng, 0.5, 0.8)
    trap = np.array([[-cl / 2, 0], [cl / 2, 0], [tl / 2 + 0.05 * cl, ch], [-tl / 2, ch]])
    A = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, W * 0.9]])
    parts.append(loft(trap, A, (cx, ride + Hb, -W * 0.45), dark))
    wr = _u(rng, 0.07, 0.11)
    for sx in (1, -1):
        for sz in (1, -1):
            z0 = sz * (W / 2 - 0.04)
            parts.append(cylinder((sx * L * 0.32, wr, z0), (sx * L * 0.32, wr, z0 + sz * 0.08), wr, dark, sides=12))
    return parts


def _chair(rng: np.random.Generator) -> Shape:
    seat, leg = _color(rng, rng.choice(["wood", "fabric"])), _color(rng, rng.choice(["wood", "metal", "dark"]))
    W, D, H, t = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.5), _u(rng, 0.04, 0.08)
    parts = [box((0, H, 0), (W, t, D), seat)]
    lw = _u(rng, 0.03, 0.06)
    round_legs = rng.random() < 0.5
    for sx in (1, -1):
        for sz in (1, -1):
            x, z = sx * (W / 2 - lw), sz * (D / 2 - lw)
            if round_legs:
                parts.append(cylinder((x, 0, z), (x, H, z), lw / 2 + 0.005, leg, sides=8))
            else:
                parts.append(box((x, H / 2, z), (lw, H, lw), leg))
    bh, tilt = _u(rng, 0.35, 0.6), _u(rng, 0.0, 0.25)
    back = box((0, 0, 0), (W, bh, t * 0.8), seat, rot_x(-tilt))
    shift = np.array([0, H + t / 2 + bh / 2 * np.cos(tilt), -D / 2 + t * 0.4 - bh / 2 * np.sin(tilt)])
    parts.append(make_part(back.vertices + shift, back.faces, seat))
    if rng.random() < 0.3:
        for s in (1, -1):
            parts.append(box((s * (W / 2 - 0.02), H + 0.12, 0), (0.04, 0.03, D * 0.9), leg))
            parts.append(box((s * (W / 2 - 0.02), H + 0.06, D * 0.35), (0.03, 0.12, 0.03), leg))
    return parts


def _display(rng: np.random.Generator) -> Shape:
    bezel, screen = _color(rng, "dark"), _color(rng, "screen")
    W = _u(rng, 0.7, 1.0)
    Hs = W / _u(rng, 1.33, 1.78)
    neck, tk = _u(rng, 0.08, 0.25), _u(rng, 0.03, 0.06)
    y0 = 0.02 + neck + Hs / 2
    parts = [box((0, y0, 0), (W, Hs, tk), bezel), box((0, y0, tk / 2 + 0.003), (W * 0.94, Hs * 0.9, 0.008), screen),
             box((0, 0.02 + neck / 2 + 0.05, -tk), (0.08, neck + 0.1, 0.04), bezel)]
    if rng.random() < 0.5:
        parts.append(box((0, 0.01, -tk), (W * _u(rng, 0.3, 0.5), 0.02, _u(rng, 0.15, 0.25)), bezel))
    else:
        parts.append(cylinder((0, 0, -tk), (0, 0.02, -tk), _u(rng, 0.1, 0.15), bezel, sides=16))
    return parts


def _lamp(rng: np.random.Generator) -> Shape:
    metal, shade = _color(rng, rng.choice(["metal", "dark"])), _color(rng, rng.choice(["light", "fabric"]))
    br, bh = _u(rng, 0.12, 0.25), _u(rng, 0.02, 0.05)
    H = _u(rng, 0.5, 1.2)
    parts = [cylinder((0, 0, 0), (0, bh, 0), br, metal, sides=16)]
    pr = _u(rng, 0.01, 0.025)
    top = np.array([0.0, H, 0.0])
    if rng.random() < 0.4:
        mid = np.array([0.0, H * _u(rng, 0.4, 0.7), 0.0])
        top = mid + np.array([_u(rng, 0.15, 0.35), H - mid[1], 0.0]) * np.array([1, _u(rng, 0.3, 0.6), 1])
        parts.append(cylinder((0, 0, 0), mid, pr, metal, sides=8))
        parts.append(cylinder(mid, top, pr, metal, sides=8))
    else:
        parts.append(cylinder((0, 0, 0), top, pr, metal, sides=8))
    sr0, sr1, sh = _u(rng, 0.12, 0.3), _u(rng, 0.05, 0.15), _u(rng, 0.12, 0.3)
    parts.append(cylinder(top - np.array([0, sh * 0.6, 0]), top + np.array([0, sh * 0.4, 0]), sr0, shade, r1=sr1, sides=16))
    return parts


def _loudspeaker(rng: np.random.Generator) -> Shape:
    body, cone = _color(rng, rng.choice(["dark", "wood"])), _color(rng, "dark")
    W, H, D = _u(rng, 0.3, 0.5), _u(rng, 0.5, 1.1), _u(rng, 0.3, 0.5)
    parts = [box((0, H / 2, 0), (W, H, D), body)]
    n = int(rng.integers(1, 4))
    for i in range(n):
        y = H * (i + 0.5) / n
        r = min(W * _u(rng, 0.25, 0.42), H / n * 0.4)
        parts.append(cylinder((0, y, D / 2 - 0.01), (0, y, D / 2 + 0.015), r, cone, r1=r * 0.8, sides=16))
    return parts


def _rifle(rng: np.random.Generator) -> Shape:
    metal, wood = _color(rng, "dark"), _color(rng, rng.choice(["wood", "dark"]))
    L = _u(rng, 0.9, 1.2)
    rl, rh = L * _u(rng, 0.2, 0.3), _u(rng, 0.05, 0.08)
    parts = [box((0, 0, 0), (rl, rh, 0.04), metal),
             cylinder((rl / 2 - 0.01, rh * 0.2, 0), (rl / 2 + L * _u(rng, 0.35, 0.45), rh * 0.2, 0), _u(rng, 0.01, 0.018), metal, sides=8)]
    sl = L * _u(rng, 0.25, 0.35)
    stock = np.array([[0.0, -rh / 2], [0.0, rh / 2], [-sl, rh * 0.3], [-sl, -rh * _u(rng, 1.2, 2.0)]])
    parts.append(loft(stock, np.diag([1.0, 1.0, 0.045]), (-rl / 2 + 0.01, 0, -0.0225), wood))
    mag = box((rl * 0.15, -rh / 2 - 0.05, 0), (0.04, _u(rng, 0.08, 0.16), 0.03), metal, rot_z(_u(rng, -0.3, 0.0)))
    parts.append(mag)
    parts.append(box((-rl * 0.3, -rh / 2 - 0.04, 0), (0.03, 0.08, 0.03), wood, rot_z(0.3)))
    if rng.random() < 0.5:
        parts.append(cylinder((-rl * 0.3, rh / 2 + 0.03, 0), (rl * 0.4, rh / 2 + 0.03, 0), 0.02, metal, sides=10))
    return parts


def seat_cushions(rng: np.random.Generator, length: float, depth: float, base_height: float, arm_width: float,
                  back_thickness: float, ride: float, color: Vec) -> Shape:
    """1 to 3 seat cushions side by side between a sofa's arms, on its base (draws their count,
    then their height, from ``rng``)."""
    n = int(rng.integers(1, 4))
    inner = length - 2 * arm_width
    ch = _u(rng, 0.05, 0.1)
    return [box((-inner / 2 + inner * (i + 0.5) / n, ride + base_height + ch / 2, back_thickness / 2),
                (inner / n * 0.97, ch, depth - back_thickness), color) for i in range(n)]


def _sofa(rng: np.random.Generator) -> Shape:
    fab, cush = _color(rng, "fabric"), _color(rng, "fabric")
    L, D, Hb = _u(rng, 1.0, 1.8), _u(rng, 0.5, 0.8), _u(rng, 0.15, 0.3)
    aw, ah, bh, bt = _u(rng, 0.08, 0.2), _u(rng, 0.15, 0.3), _u(rng, 0.3, 0.5), _u(rng, 0.1, 0.2)
    ride = _u(rng, 0.0, 0.08)
    parts = [box((0, ride + Hb / 2, 0), (L, Hb, D), fab),
             box((0, ride + (Hb + bh) / 2, -D / 2 + bt / 2), (L, Hb + bh, bt), fab)]
    for s in (1, -1):
        parts.append(box((s * (L / 2 - aw / 2), ride + (Hb + ah) / 2, 0), (aw, Hb + ah, D), fab))
    parts += seat_cushions(rng, L, D, Hb, aw, bt, ride, cush)
    if ride > 0.03:
        for sx in (1, -1):
            for sz in (1, -1):
                parts.append(cylinder((sx * (L / 2 - 0.05), 0, sz * (D / 2 - 0.05)),
                                      (sx * (L / 2 - 0.05), ride, sz * (D / 2 - 0.05)), 0.02, _color(rng, "dark"), sides=8))
    return parts


def _table(rng: np.random.Generator) -> Shape:
    top, leg = _color(rng, rng.choice(["wood", "light", "metal"])), _color(rng, rng.choice(["wood", "metal", "dark"]))
    H, t = _u(rng, 0.5, 0.8), _u(rng, 0.03, 0.07)
    if rng.random() < 0.7:
        W, D = _u(rng, 0.8, 1.6), _u(rng, 0.5, 1.0)
        parts = [box((0, H - t / 2, 0), (W, t, D), top)]
        lw, inset = _u(rng, 0.04, 0.08), _u(rng, 0.0, 0.1)
        for sx in (1, -1):
            for sz in (1, -1):
                parts.append(box((sx * (W / 2 - lw - inset), (H - t) / 2, sz * (D / 2 - lw - inset)), (lw, H - t, lw), leg))
    else:
        R = _u(rng, 0.35, 0.6)
        parts = [cylinder((0, H - t, 0), (0, H, 0), R, top, sides=20),
                 cylinder((0, 0.02, 0), (0, H - t, 0), _u(rng, 0.03, 0.07), leg, sides=10),
                 cylinder((0, 0, 0), (0, 0.03, 0), R * _u(rng, 0.4, 0.7), leg, sides=16)]
    return parts


def _telephone(rng: np.random.Generator) -> Shape:
    body, screen = _color(rng, rng.choice(["dark", "light"])), _color(rng, "screen")
    if rng.random() < 0.8:
        W, H, T = _u(rng, 0.4, 0.55), 1.0, _u(rng, 0.05, 0.1)
        c = _u(rng, 0.03, 0.08)
        oct_ = np.array([[-W / 2 + c, -H / 2], [W / 2 - c, -H / 2], [W / 2, -H / 2 + c], [W / 2, H / 2 - c],
                         [W / 2 - c, H / 2], [-W / 2 + c, H / 2], [-W / 2, H / 2 - c], [-W / 2, -H / 2 + c]])
        parts = [loft(oct_, np.diag([1.0, 1.0, T]), (0, 0, -T / 2), body),
                 box((0, 0, T / 2 + 0.004), (W * 0.88, H * 0.85, 0.008), screen)]
    else:
        W, D = _u(rng, 0.6, 0.9), _u(rng, 0.5, 0.8)
        trap = np.array([[-D / 2, 0], [D / 2, 0], [D / 2 - 0.05, 0.12], [-D / 2 + 0.1, 0.22]])
        A = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]]) @ np.diag([1.0, 1.0, W])
        parts = [loft(trap, A, (W / 2, 0, 0), body)]
        parts.append(box((0, 0.27, -D * 0.2), (W * 0.9, 0.07, 0.12), body))
        for s in (1, -1):
            parts.append(box((s * W * 0.4, 0.22, -D * 0.2), (0.12, 0.06, 0.14), body))
        parts.append(box((0, 0.17, D * 0.15), (W * 0.5, 0.01, D * 0.3), screen, rot_x(0.35)))
    return parts


def _watercraft(rng: np.random.Generator) -> Shape:
    hull, deck = _color(rng, rng.choice(["paint", "light", "dark"])), _color(rng, rng.choice(["light", "wood"]))
    L, W, H = _u(rng, 0.9, 1.2), _u(rng, 0.18, 0.35), _u(rng, 0.08, 0.2)
    vee = _u(rng, 0.3, 0.8)
    sec = np.array([[-W / 2, 0], [-W / 2 * vee, -H], [W / 2 * vee, -H], [W / 2, 0]])   # section in (z, y)
    Lm = L * _u(rng, 0.6, 0.75)
    A = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]) @ np.diag([1.0, 1.0, Lm])     # loft along +X
    parts = [loft(sec, A, (-L / 2, 0, 0), hull)]
    A2 = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]) @ np.diag([1.0, 1.0, L - Lm])
    parts.append(loft(sec, A2, (-L / 2 + Lm, 0, 0), hull, top_scale=0.08))
    if rng.random() < 0.6:
        for i in range(int(rng.integers(1, 4))):
            bl, bw, bh = L * _u(rng, 0.1, 0.3) / (i + 1), W * _u(rng, 0.5, 0.8), _u(rng, 0.06, 0.14)
            parts.append(box((-L * 0.2 + i * 0.05, bh / 2 + i * bh * 0.9, 0), (bl, bh, bw), deck))
    else:
        mh = _u(rng, 0.4, 0.8)
        mx = _u(rng, -0.1, 0.1) * L
        parts.append(cylinder((mx, -0.02, 0), (mx, mh, 0), 0.012, _color(rng, "wood"), sides=8))
        sail = np.array([[0.0, 0.05], [-L * _u(rng, 0.3, 0.45), 0.05], [0.0, mh * 0.95]])
        parts.append(loft(sail, np.diag([1.0, 1.0, 0.01]), (mx - 0.015, 0, -0.005), _color(rng, "light")))
    return parts


GRAMMAR1: Dict[str, Callable[[np.random.Generator], Shape]] = {
    "airplane": _airplane, "bench": _bench, "cabinet": _cabinet, "car": _car, "chair": _chair,
    "display": _display, "lamp": _lamp, "loudspeaker": _loudspeaker, "rifle": _rifle, "sofa": _sofa,
    "table": _table, "telephone": _telephone, "watercraft": _watercraft,
}


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------

def transform_shape(shape: Shape, scale: float, shift: np.ndarray) -> Shape:
    """Apply ``x -> scale * x + shift`` (scale > 0) to every part, keeping the half-spaces exact."""
    out = []
    for p in shape:
        v = p.vertices * scale + shift[None, :]
        out.append(ConvexPart(v, p.faces, p.normals, p.offsets * scale + p.normals @ shift, p.color))
    return out


def shape_bbox(shape: Shape) -> Tuple[np.ndarray, np.ndarray]:
    """(3,), (3,): min and max corners of the shape's vertices."""
    v = np.concatenate([p.vertices for p in shape], axis=0)
    return v.min(axis=0), v.max(axis=0)


def normalize_shape(shape: Shape, mode: str = "diagonal") -> Shape:
    """Centre the bounding box at 0 and scale its diagonal (``"diagonal"``) or longest side
    (``"longest"``) to 1."""
    lo, hi = shape_bbox(shape)
    ext = hi - lo
    if mode == "diagonal":
        size = float(np.linalg.norm(ext))
    elif mode == "longest":
        size = float(ext.max())
    else:
        raise ValueError(f"normalize_shape(): mode must be 'diagonal' or 'longest', got {mode!r}")
    s = 1.0 / size
    return transform_shape(shape, s, -(lo + hi) / 2 * s)


def make_shape(category: str, seed: int, normalize: str = "diagonal") -> Shape:
    """Build the grammar-1 shape of ``category`` for ``seed`` (deterministic: same seed, same
    arrays): the shapes of the shipped data set, unchanged. Both grammars are drawn through
    :func:`dibr_core.data.grammars.make_shape`."""
    if category not in GRAMMAR1:
        raise ValueError(f"make_shape(): unknown category {category!r}; expected one of {CATEGORIES}")
    return normalize_shape(GRAMMAR1[category](np.random.default_rng(seed)), normalize)


def shape_mesh(shape: Shape) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the parts: vertices (V, 3) float64, faces (F, 3) int64, vertex colours (V, 3).

    Parts keep their own vertices (no welding), so flat shading shows each part's faces.
    """
    verts, faces, cols = [], [], []
    off = 0
    for p in shape:
        verts.append(p.vertices)
        faces.append(p.faces + off)
        cols.append(np.broadcast_to(p.color, p.vertices.shape))
        off += p.vertices.shape[0]
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(cols).astype(np.float64)


def inside_parts(shape: Shape, points: np.ndarray, strict: bool = False, tol: float = 1e-9) -> np.ndarray:
    """(P, 3) points -> (len(shape), P) bool: point inside each part (closed, or open if ``strict``).

    Closed: ``normals @ x <= offsets + tol``; strict: ``normals @ x < offsets - tol``.
    """
    pts = np.asarray(points, dtype=np.float64)
    out = np.zeros((len(shape), pts.shape[0]), dtype=bool)
    for i, p in enumerate(shape):
        s = pts @ p.normals.T - p.offsets[None, :]               # (P, F)
        out[i] = (s < -tol).all(axis=1) if strict else (s <= tol).all(axis=1)
    return out


def voxel_centers(res: int = 32) -> np.ndarray:
    """(res, res, res, 3) centres of the voxels of [-0.5, 0.5]^3, indexed [ix, iy, iz]."""
    c = (np.arange(res) + 0.5) / res - 0.5
    return np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)


def occupancy(shape: Shape, res: int = 32, mark_surface: bool = True) -> np.ndarray:
    """(res, res, res) bool occupancy of the union over [-0.5, 0.5]^3, indexed [ix, iy, iz].

    A voxel is occupied if its centre is inside any part (exact half-space test) or, when
    ``mark_surface`` (default, binvox-like, keeps parts thinner than a voxel), if a part's surface
    passes through it (:func:`dibr_core.voxels.mark_surface_voxels`, the same routine that
    :func:`dibr_core.voxels.voxelize_mesh` uses, so GT and predictions are voxelised alike).
    """
    centres = voxel_centers(res).reshape(-1, 3)
    occ = inside_parts(shape, centres).any(axis=0).reshape(res, res, res)
    if mark_surface:
        from dibr_core.voxels import mark_surface_voxels

        v, f, _ = shape_mesh(shape)
        occ |= mark_surface_voxels(v, f, res)
    return occ


def part_areas(part: ConvexPart) -> np.ndarray:
    """(F,) triangle areas."""
    v = part.vertices
    a, b, c = v[part.faces[:, 0]], v[part.faces[:, 1]], v[part.faces[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def surface_points(shape: Shape, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) points uniformly distributed (by area) on the surface of the union.

    Each part is sampled by area; samples strictly inside another part are rejected, and the
    sampling repeats until ``n`` points are kept.
    """
    v, f, _ = shape_mesh(shape)
    owner = np.concatenate([np.full(p.faces.shape[0], i) for i, p in enumerate(shape)])
    areas = np.concatenate([part_areas(p) for p in shape])
    prob = areas / areas.sum()
    kept: List[np.ndarray] = []
    total = 0
    for _ in range(100):
        m = max(2 * (n - total), 64)
        fi = rng.choice(f.shape[0], size=m, p=prob)
        r1, r2 = np.sqrt(rng.random(m))[:, None], rng.random(m)[:, None]
        a, b, c = v[f[fi, 0]], v[f[fi, 1]], v[f[fi, 2]]
        pts = (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c
        ins = inside_parts(shape, pts, strict=True, tol=1e-7)    # (parts, m)
        ins[owner[fi], np.arange(m)] = False
        ok = ~ins.any(axis=0)
        kept.append(pts[ok])
        total += int(ok.sum())
        if total >= n:
            break
    out = np.concatenate(kept)
    if out.shape[0] < n:
        raise RuntimeError("surface_points(): the union has (almost) no visible surface")
    return out[:n]


# ----------------------------------------------------------------------------------------------
# Optional procedural textures
# ----------------------------------------------------------------------------------------------

PATTERNS: Tuple[str, ...] = ("plain", "stripes", "checker", "noise", "wood")
"""Patterns of grammar-1 data (the shipped set); the first is the plain colour."""
PATTERNS2: Tuple[str, ...] = PATTERNS + ("dots", "panels", "gradient", "bands")
"""Patterns of the randomised training renders: also dots, panel seams, a brightness ramp
(specular-like) and wide two-tone bands (a livery) in a second random colour."""
_TILE = 16
_PAD = 1


def _pattern_tile(kind: str, color: np.ndarray, rng: np.random.Generator, n: int = _TILE) -> np.ndarray:
    """(n, n, 3) tile of ``kind`` modulating ``color`` (values in [0, 1])."""
    y, x = np.meshgrid(np.arange(n) + 0.5, np.arange(n) + 0.5, indexing="ij")
    if kind == "stripes":
        period = float(rng.integers(3, 7))
        m = 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * (x + y * rng.uniform(-0.5, 0.5)) / period))
    elif kind == "checker":
        k = int(rng.integers(2, 5))
        m = np.where(((x // k) + (y // k)) % 2 == 0, 1.0, 0.7)
    elif kind == "noise":
        coarse = rng.uniform(0.75, 1.05, (5, 5))
        idx = np.minimum((np.arange(n) * 4.0 / (n - 1)).round().astype(np.int64), 4)
        m = coarse[idx][:, idx] + rng.normal(0, 0.03, (n, n))
    elif kind == "wood":
        m = 0.85 + 0.15 * np.sin(2 * np.pi * (x + 1.5 * np.sin(y / 3.0 + rng.uniform(0, 6))) / rng.uniform(3, 6))
    elif kind == "dots":
        k = int(rng.integers(3, 6))
        d = np.hypot((x % k) - k / 2, (y % k) - k / 2)
        m = np.where(d < k * rng.uniform(0.2, 0.35), rng.uniform(0.4, 0.7), 1.0)
    elif kind == "panels":
        k = int(rng.integers(4, 9))
        m = np.where((np.floor(x) % k == 0) | (np.floor(y) % k == 0), rng.uniform(0.5, 0.75), 1.0)
    elif kind == "gradient":
        t = (y * np.cos(rng.uniform(0, np.pi)) + x * np.sin(rng.uniform(0, np.pi))) / n
        m = rng.uniform(0.6, 0.85) + rng.uniform(0.3, 0.6) * np.clip(np.abs(t), 0, 1)
    elif kind == "bands":
        other = rng.uniform(0.05, 0.95, 3)
        cut = rng.uniform(0.3, 0.7) * n
        mask = (y < cut)[..., None] if rng.random() < 0.5 else (x < cut)[..., None]
        return np.asarray(np.clip(np.where(mask, other[None, None, :], color[None, None, :]), 0.0, 1.0))
    else:
        m = np.ones((n, n))
    return np.clip(color[None, None, :] * m[..., None], 0.0, 1.0)


def procedural_texture(shape: Shape, rng: np.random.Generator, p_pattern: float = 0.5,
                       patterns: Tuple[str, ...] = PATTERNS) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """A texture atlas with one padded tile per part, and box-projected per-corner UVs.

    Each part gets, with probability ``p_pattern``, a pattern from ``patterns`` (default
    :data:`PATTERNS`; :data:`PATTERNS2` for randomised renders; the first entry is plain) (else plain)
    in its colour. A face is mapped by dropping the axis its normal is most aligned with and
    scaling the part's bounding box on the two other axes onto the part's tile.

    Returns:
        texture: (Ht, Wt, 3) float64 in [0, 1], rows top to bottom;
        face_uvs: (F, 3, 2) per-corner OpenGL UVs (v = 0 at the bottom), in the face order of
            :func:`shape_mesh`; patterns: the pattern name of each part.
    """
    side = _TILE + 2 * _PAD
    Ht, Wt = side, side * len(shape)
    tex = np.zeros((Ht, Wt, 3))
    uvs: List[np.ndarray] = []
    names: List[str] = []
    for i, p in enumerate(shape):
        kind = str(rng.choice(patterns[1:])) if rng.random() < p_pattern else "plain"
        names.append(kind)
        tile = _pattern_tile(kind, p.color, rng)
        tex[:, i * side:(i + 1) * side] = np.pad(tile, ((_PAD, _PAD), (_PAD, _PAD), (0, 0)), mode="edge")
        lo, hi = p.vertices.min(axis=0), p.vertices.max(axis=0)
        local = (p.vertices - lo) / np.maximum(hi - lo, 1e-12)                       # (V, 3) in [0, 1]
        axis = np.abs(p.normals).argmax(axis=1)                                      # (F,)
        keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]                              # (F, 2)
        corner = local[p.faces]                                                      # (F, 3, 3)
        st = np.take_along_axis(corner, keep[:, None, :].repeat(3, axis=1), axis=2)  # (F, 3, 2)
        u = (i * side + _PAD + st[..., 0] * _TILE) / Wt
        v = 1.0 - (_PAD + st[..., 1] * _TILE) / Ht
        uvs.append(np.stack([u, v], axis=-1))
    return tex, np.concatenate(uvs), names
