"""Grammar 2 of the procedural shapes: the parts that real objects have.

Grammar 1 (:mod:`dibr_core.data.shapes`, the default of :func:`~dibr_core.data.grammars.make_shape`)
draws one template per category with random proportions. Grammar 2 (``make_shape(..., grammar=2)``,
``python -m dibr_core.data generate --grammar 2``) draws, per category, among the variants that
real objects show, and builds them from the same parameterised convex parts (boxes, lofts,
prisms as cylinders, ellipsoids), so occupancy and surface samples stay exact:

* airplane: airliner / fighter / light aircraft / bomber; low, mid or high wings; straight,
  swept or delta planform; engines in under-wing pods (on pylons), on the rear fuselage, in
  the nose (propeller disc) or on the wings' leading edge; conventional, T-tail or twin-fin tails.
* car: sedan, hatchback, van, pickup (open bed) or SUV cabins over a body with four wheels
  (12-sided prisms) set in wheel arches (the body is a union around rectangular arch openings),
  windows as a dark band, bumpers.
* watercraft: pointed (vee) hull, flat barge (with deck cargo), catamaran (two hulls and a
  bridging deck) or ship (tall hull); superstructures (stacked decks, bridge, funnels) and masts
  (with a sail or a radar cross-tree).
* chair: four straight or splayed legs, office pedestal with a five-spoke base, sled runners or a
  solid base; solid, slatted, ladder or low backs; none, open or panel arms.
* sofa: plinth or legs, low/high/rolled/no arms, solid or cushioned back, optional chaise (L shape).
* bench: slab ends, four legs or A-frame trestles; slatted or solid seat; none, slatted or solid
  back; optional end arms.
* table: four legs (optionally with apron and a lower shelf), trestle ends with a stretcher,
  round pedestal, round on three or four legs, desk with a drawer block.
* cabinet, lamp, rifle: a few cheap variants (legs or plinth and handles; tripod and arc lamps;
  scope and bipod); display, loudspeaker and telephone use grammar 1's builders.

Frames and normalisation are grammar 1's (+Y up; vehicles long along X, nose towards +X).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from dibr_core.data import shapes as g1
from dibr_core.data.shapes import Shape, box, cylinder, ellipsoid, loft, rot_x, rot_y, seat_cushions

__all__ = ["GRAMMAR2", "VARIANTS", "describe"]

_u = g1._u
_color = g1._color

#: The variant names each grammar-2 builder chooses among (documentation and tests).
VARIANTS: Dict[str, Dict[str, tuple]] = {
    "airplane": {"kind": ("airliner", "fighter", "light", "bomber"), "wing": ("low", "mid", "high"),
                 "planform": ("straight", "swept", "delta"),
                 "engines": ("none", "underwing", "rear", "nose", "wing_nacelle"),
                 "tail": ("conventional", "t_tail", "twin_fin")},
    "car": {"cabin": ("sedan", "hatchback", "van", "pickup", "suv")},
    "watercraft": {"hull": ("pointed", "barge", "catamaran", "ship"), "top": ("superstructure", "mast", "none", "cargo")},
    "chair": {"base": ("legs", "splayed", "pedestal", "sled", "solid"), "back": ("solid", "slats", "ladder", "low"),
              "arms": ("none", "open", "panel")},
    "sofa": {"arms": ("low", "high", "rolled", "none"), "back": ("solid", "cushions"), "base": ("plinth", "legs")},
    "bench": {"legs": ("slab", "four", "trestle"), "back": ("none", "slats", "solid")},
    "table": {"kind": ("four_legs", "trestle", "pedestal", "round_legs", "desk")},
}

_AIRFOIL = g1._AIRFOIL
_NOTES: Optional[Dict[str, str]] = None


def _note(**choices: str) -> None:
    """Record the variant choices of the shape being built (for :func:`describe`)."""
    if _NOTES is not None:
        _NOTES.update(choices)


def describe(category: str, seed: int) -> Dict[str, str]:
    """The variant choices (keys of :data:`VARIANTS`) of ``make_shape(category, seed, grammar=2)``,
    found by building the shape once (not thread-safe)."""
    global _NOTES
    _NOTES = {}
    try:
        GRAMMAR2[category](np.random.default_rng(seed))
        return dict(_NOTES)
    finally:
        _NOTES = None


def _wing(parts: Shape, rng: np.random.Generator, x0: float, y0: float, root: float, span: float, taper: float,
          sweep: float, dihedral: float, thick: float, color: np.ndarray, z0: float = 0.0) -> None:
    """A pair of wings (or tail planes): root chord ``root`` at (x0, y0, +-z0), tips ``span`` out,
    leading edge swept back (towards -X) by ``sweep``."""
    for side in (1.0, -1.0):
        A = np.array([[root, 0, 0], [0, thick, 0], [0, 0, side * span]])
        parts.append(loft(_AIRFOIL, A, (x0, y0, side * z0), color, taper, (-sweep / root, dihedral / thick)))


def _fin(parts: Shape, x0: float, y0: float, z0: float, chord: float, height: float, thick: float,
         sweep: float, taper: float, color: np.ndarray) -> None:
    """A vertical fin rising from (x0, y0, z0), tip swept back by ``sweep``."""
    A = np.array([[chord, 0, 0], [0, 0, height], [0, thick, 0]])
    parts.append(loft(_AIRFOIL, A, (x0, y0, z0), color, taper, (-sweep / chord, 0.0)))


def _airplane2(rng: np.random.Generator) -> Shape:
    v = VARIANTS["airplane"]
    kind = str(rng.choice(v["kind"]))
    body = _color(rng, str(rng.choice(["light", "metal", "paint"])))
    wingc = body if rng.random() < 0.6 else _color(rng, str(rng.choice(["light", "metal", "paint", "dark"])))
    metal = _color(rng, "metal")
    if kind == "fighter":
        L, r = _u(rng, 0.9, 1.2), _u(rng, 0.045, 0.07)
        planform = "delta" if rng.random() < 0.55 else "swept"
        wing = str(rng.choice(["mid", "high", "low"]))
        engines = "none"
        tail = "twin_fin" if rng.random() < 0.4 else "conventional"
    elif kind == "light":
        L, r = _u(rng, 0.7, 0.95), _u(rng, 0.05, 0.08)
        planform = "straight"
        wing = "high" if rng.random() < 0.6 else "low"
        engines = "nose"
        tail = "t_tail" if rng.random() < 0.2 else "conventional"
    elif kind == "bomber":
        L, r = _u(rng, 0.8, 1.1), _u(rng, 0.04, 0.07)
        planform = str(rng.choice(["straight", "swept"]))
        wing = str(rng.choice(["mid", "high"]))
        engines = "wing_nacelle" if planform == "straight" else "underwing"
        tail = str(rng.choice(["conventional", "twin_fin"]))
    else:   # airliner
        L, r = _u(rng, 0.9, 1.25), _u(rng, 0.045, 0.08)
        planform = "swept"
        wing = "low" if rng.random() < 0.75 else str(rng.choice(["mid", "high"]))
        engines = "underwing" if rng.random() < 0.7 else "rear"
        tail = "t_tail" if engines == "rear" or rng.random() < 0.15 else "conventional"
    # Fuselage: a 12-sided barrel with tapered nose and tail cones (or one ellipsoid).
    if rng.random() < 0.75:
        xn, xt = L * _u(rng, 0.25, 0.35), -L * _u(rng, 0.15, 0.3)
        parts: Shape = [cylinder((xt, 0, 0), (xn, 0, 0), r, body, sides=12)]
        parts.append(cylinder((xn, 0, 0), (L / 2, -0.3 * r, 0), r, body, r1=r * _u(rng, 0.05, 0.3), sides=12))
        parts.append(cylinder((xt, 0, 0), (-L / 2, 0.5 * r, 0), r, body, r1=r * _u(rng, 0.15, 0.35), sides=12))
    else:
        parts = [ellipsoid((0, 0, 0), (L / 2, r, r * _u(rng, 0.9, 1.2)), body)]
    thick = _u(rng, 0.018, 0.035)
    yw = {"low": -0.7 * r, "mid": 0.0, "high": 0.85 * r}[wing]
    if planform == "delta":
        root = L * _u(rng, 0.4, 0.6)
        span, taper = root * _u(rng, 0.6, 0.9), _u(rng, 0.05, 0.15)
        sweep = root * (1 - taper) * _u(rng, 0.85, 1.0)
        xw = -L * _u(rng, 0.0, 0.15)
    else:
        root = L * (_u(rng, 0.12, 0.2) if kind != "fighter" else _u(rng, 0.2, 0.3))
        span = L * (_u(rng, 0.4, 0.6) if kind != "fighter" else _u(rng, 0.25, 0.35))
        taper = _u(rng, 0.6, 1.0) if planform == "straight" else _u(rng, 0.25, 0.5)
        sweep = span * (_u(rng, 0.0, 0.08) if planform == "straight" else _u(rng, 0.35, 0.8))
        xw = L * _u(rng, -0.05, 0.12)
    dihedral = span * _u(rng, 0.0, 0.1) if wing == "low" else span * _u(rng, -0.06, 0.03)
    _wing(parts, rng, xw, yw, root, span, taper, sweep, dihedral, thick, wingc)
    # Tail.
    xt0 = -L / 2 + L * 0.02
    fh = L * _u(rng, 0.12, 0.22)
    fc = L * _u(rng, 0.12, 0.2)
    hs, hc = span * _u(rng, 0.3, 0.42), L * _u(rng, 0.08, 0.14)
    if planform == "delta" and rng.random() < 0.5:
        hs = 0.0                                       # tailless delta
    if tail == "twin_fin":
        zf = min(r * 1.2, 0.06)
        for s in (1.0, -1.0):
            _fin(parts, xt0 + fc / 2, r * 0.3, s * zf, fc, fh * 0.8, thick * 0.8, fc * 0.5, 0.5, wingc)
        if hs > 0:
            _wing(parts, rng, xt0 + hc / 2, 0.0, hc, hs, 0.5, hc * 0.4, 0.0, thick * 0.7, wingc)
    else:
        _fin(parts, xt0 + fc / 2, r * 0.3, 0.0, fc, fh, thick * 0.8, fc * _u(rng, 0.3, 0.9), _u(rng, 0.4, 0.7), wingc)
        if hs > 0:
            yh = r * 0.3 + fh * 0.95 if tail == "t_tail" else 0.1 * r
            xh = xt0 + hc / 2 - (fc * 0.6 if tail == "t_tail" else 0.0)
            _wing(parts, rng, xh, yh, hc, hs, 0.5, hc * 0.5, 0.0, thick * 0.7, wingc)
    # Engines.
    if engines == "underwing":
        n = 1 if rng.random() < 0.7 else 2
        er, el = _u(rng, 0.025, 0.045), L * _u(rng, 0.12, 0.2)
        for k in range(n):
            frac = 0.35 if n == 1 else 0.28 + 0.35 * k
            z = span * frac
            xe = xw - sweep * frac + root * 0.6
            ye = yw - thick - er * 1.3 + dihedral * frac
            for s in (1.0, -1.0):
                parts.append(cylinder((xe, ye, s * z), (xe - el, ye, s * z), er, metal, r1=er * 0.85, sides=12))
                parts.append(box((xe - el * 0.6, ye + er * 0.8, s * z), (el * 0.5, er * 1.1, thick * 0.8), metal))
    elif engines == "rear":
        er, el = _u(rng, 0.025, 0.04), L * _u(rng, 0.12, 0.18)
        xe = -L / 2 + fc * 1.1 + el
        for s in (1.0, -1.0):
            parts.append(cylinder((xe, r * 0.4, s * (r + er)), (xe - el, r * 0.4, s * (r + er)), er, metal, sides=12))
    elif engines == "nose":
        pr = r * _u(rng, 1.8, 3.0)
        parts.append(cylinder((L / 2 + 0.005, -0.3 * r, 0), (L / 2 + 0.015, -0.3 * r, 0), pr, _color(rng, "dark"),
                              sides=16))
    elif engines == "wing_nacelle":
        er, el = _u(rng, 0.025, 0.04), root * _u(rng, 0.9, 1.3)
        for frac in (0.3, 0.6):
            z = span * frac
            xe = xw - sweep * frac + root * 0.5 + el * 0.3
            for s in (1.0, -1.0):
                parts.append(cylinder((xe, yw, s * z), (xe - el, yw, s * z), er, body, r1=er * 0.6, sides=12))
    _note(kind=kind, wing=wing, planform=planform, engines=engines, tail=tail)
    if kind != "fighter" and rng.random() < 0.5:      # a cockpit canopy / cabin window band
        parts.append(ellipsoid((L * 0.38, r * 0.45, 0), (L * 0.06, r * 0.5, r * 0.6), _color(rng, "screen")))
    elif kind == "fighter":
        parts.append(ellipsoid((L * 0.22, r * 0.75, 0), (L * 0.1, r * 0.55, r * 0.55), _color(rng, "screen")))
    return parts


def _cabin(c0: float, c1: float, H: float, front: float, rear: float) -> np.ndarray:
    """(4, 2) convex side profile (x, y) of a cabin from x = c0 to c1, height H, the roof shortened by
    the windscreen run ``front`` and the rear-window run ``rear`` (scaled down to leave a roof of at
    least a fifth of the length)."""
    room = 0.8 * (c1 - c0)
    if front + rear > room:
        k = room / (front + rear)
        front, rear = front * k, rear * k
    return np.array([[c0, 0.0], [c1, 0.0], [c1 - front, H], [c0 + rear, H]])


def _car2(rng: np.random.Generator) -> Shape:
    cabin = str(rng.choice(VARIANTS["car"]["cabin"]))
    paint, dark, glass = _color(rng, "paint"), _color(rng, "dark"), _color(rng, "screen")
    L, W = _u(rng, 0.9, 1.15), _u(rng, 0.4, 0.5)
    wr = _u(rng, 0.07, 0.1) * (1.2 if cabin in ("suv", "pickup") else 1.0)
    ww = _u(rng, 0.06, 0.09)
    wb = L * _u(rng, 0.58, 0.68)                       # wheelbase
    ride = wr * _u(rng, 0.45, 0.7)                     # sill height
    belt = wr * 2 + _u(rng, 0.02, 0.08)                # body top (belt line)
    if cabin == "van":
        belt = wr * 2 + _u(rng, 0.03, 0.06)
    arch = wr * 1.15
    xf, xr = wb / 2, -wb / 2
    top0 = wr + arch * 0.75                            # arch opening top: body above it runs full length
    parts: Shape = [box((0, (top0 + belt) / 2, 0), (L, belt - top0, W), paint)]
    # Sill between the arches, bumpers before and after them.
    parts.append(box((0, (ride + top0) / 2, 0), (xf - xr - 2 * arch, top0 - ride, W), paint))
    fl, rl = L / 2 - (xf + arch), (xr - arch) + L / 2
    nose_drop = _u(rng, 0.0, 0.4)
    prof = np.array([[0, ride], [fl, ride + (top0 - ride) * nose_drop * 0.5], [fl, top0], [0, top0]])
    parts.append(loft(prof, np.diag([1.0, 1.0, W]), (xf + arch, 0, -W / 2), paint))
    parts.append(box((xr - arch - rl / 2, (ride + top0) / 2, 0), (rl, top0 - ride, W), paint))
    # Wheels in the arches.
    for x in (xf, xr):
        for s in (1.0, -1.0):
            z0 = s * (W / 2 - ww * 0.9)
            parts.append(cylinder((x, wr, z0), (x, wr, z0 + s * ww), wr, dark, sides=12))
    # Cabin profile (x, y) extruded across the car.
    H = _u(rng, 0.12, 0.18)
    cw = W * _u(rng, 0.82, 0.92)
    if cabin == "sedan":
        c0, c1 = -L * _u(rng, 0.28, 0.36), L * _u(rng, 0.1, 0.2)
        prof = _cabin(c0, c1, H, H * _u(rng, 1.0, 1.6), H * _u(rng, 0.6, 1.0))
    elif cabin == "hatchback":
        c0, c1 = -L / 2 + 0.01, L * _u(rng, 0.1, 0.2)
        prof = _cabin(c0, c1, H, H * _u(rng, 1.0, 1.6), H * _u(rng, 0.2, 0.5))
    elif cabin == "van":
        H = _u(rng, 0.2, 0.3)
        c0, c1 = -L / 2, L / 2 - L * _u(rng, 0.05, 0.2)
        prof = _cabin(c0, c1, H, H * _u(rng, 0.2, 0.5), 0.0)
    elif cabin == "pickup":
        H = _u(rng, 0.13, 0.2)
        c0, c1 = -L * _u(rng, 0.05, 0.15), L * _u(rng, 0.15, 0.25)
        prof = _cabin(c0, c1, H, H * 0.5, 0.0)
        bed_l = c0 + L / 2 - 0.01
        for s in (1.0, -1.0):                          # bed walls, tailgate
            parts.append(box((-L / 2 + bed_l / 2, belt + 0.03, s * (W / 2 - 0.01)), (bed_l, 0.06, 0.02), paint))
        parts.append(box((-L / 2 + 0.01, belt + 0.03, 0), (0.02, 0.06, W), paint))
    else:   # suv
        H = _u(rng, 0.15, 0.22)
        c0, c1 = -L / 2 + 0.02, L * _u(rng, 0.1, 0.2)
        prof = _cabin(c0, c1, H, H * _u(rng, 0.6, 1.0), 0.01)
    parts.append(loft(prof, np.diag([1.0, 1.0, cw]), (0, belt, -cw / 2), paint))
    _note(cabin=cabin)
    # Windows: a dark band slightly proud of the cabin sides.
    wb_prof = prof.copy()
    cx = wb_prof[:, 0].mean()
    wb_prof[:, 0] = cx + (wb_prof[:, 0] - cx) * 0.92
    wb_prof[:, 1] = H * 0.15 + wb_prof[:, 1] * 0.7
    parts.append(loft(wb_prof, np.diag([1.0, 1.0, cw + 0.01]), (0, belt, -(cw + 0.01) / 2), glass))
    if rng.random() < 0.6:                             # bumpers
        bh = _u(rng, 0.02, 0.04)
        for x in (L / 2, -L / 2):
            parts.append(box((x, ride + bh, 0), (0.03, bh * 2, W * 1.01), dark))
    return parts


def _hull(parts: Shape, L: float, W: float, H: float, vee: float, bow: float, x0: float, z0: float,
          color: np.ndarray, bow_scale: float) -> None:
    """Hull of length L from x0 - L/2 (deck at y = 0, keel at -H), the last ``bow`` of it tapering
    to ``bow_scale``."""
    sec = np.array([[-W / 2, 0], [-W / 2 * vee, -H], [W / 2 * vee, -H], [W / 2, 0]])
    Lm = L * (1 - bow)
    A = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]) @ np.diag([1.0, 1.0, Lm])
    parts.append(loft(sec, A, (x0 - L / 2, 0, z0), color))
    A2 = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]]) @ np.diag([1.0, 1.0, L - Lm])
    parts.append(loft(sec, A2, (x0 - L / 2 + Lm, 0, z0), color, top_scale=bow_scale, top_shift=(0.0, -H * 0.0)))


def _watercraft2(rng: np.random.Generator) -> Shape:
    v = VARIANTS["watercraft"]
    hull_kind = str(rng.choice(v["hull"]))
    hull = _color(rng, str(rng.choice(["paint", "light", "dark"])))
    deck = _color(rng, str(rng.choice(["light", "wood", "metal"])))
    L = _u(rng, 0.9, 1.2)
    parts: Shape = []
    if hull_kind == "pointed":
        W, H = L * _u(rng, 0.16, 0.3), _u(rng, 0.08, 0.18)
        _hull(parts, L, W, H, _u(rng, 0.2, 0.6), _u(rng, 0.25, 0.4), 0.0, 0.0, hull, 0.06)
    elif hull_kind == "barge":
        W, H = L * _u(rng, 0.25, 0.4), _u(rng, 0.06, 0.12)
        _hull(parts, L, W, H, _u(rng, 0.9, 1.0), _u(rng, 0.06, 0.12), 0.0, 0.0, hull, _u(rng, 0.7, 0.9))
    elif hull_kind == "catamaran":
        W, H = L * _u(rng, 0.35, 0.5), _u(rng, 0.06, 0.12)
        hw = W * _u(rng, 0.18, 0.28)
        for s in (1.0, -1.0):
            _hull(parts, L, hw, H, _u(rng, 0.3, 0.7), _u(rng, 0.2, 0.35), 0.0, s * (W - hw) / 2, hull, 0.05)
        parts.append(box((-L * 0.05, 0.015, 0), (L * _u(rng, 0.5, 0.75), 0.03, W * 0.9), deck))
    else:   # ship: tall hull
        W, H = L * _u(rng, 0.13, 0.2), _u(rng, 0.12, 0.2)
        _hull(parts, L, W, H, _u(rng, 0.5, 0.8), _u(rng, 0.2, 0.3), 0.0, 0.0, hull, 0.1)
        parts.append(box((0, 0.005, 0), (L * 0.85, 0.01, W * 0.98), deck))
    top = str(rng.choice(("superstructure", "mast", "none"), p=[0.55, 0.3, 0.15]))
    if hull_kind == "barge" and rng.random() < 0.6:
        top = "cargo"
    if hull_kind == "catamaran" and top == "none":
        top = "mast"
    _note(hull=hull_kind, top=top)
    if top == "superstructure":
        n = int(rng.integers(1, 4))
        xs = L * _u(rng, -0.35, 0.1)
        bl, bw, y = L * _u(rng, 0.15, 0.35), W * _u(rng, 0.5, 0.85), 0.0
        for i in range(n):
            bh = _u(rng, 0.05, 0.1)
            parts.append(box((xs + i * bl * 0.1, y + bh / 2, 0), (bl, bh, bw), deck))
            y += bh
            bl, bw = bl * _u(rng, 0.55, 0.85), bw * _u(rng, 0.8, 0.95)
        parts.append(box((xs + bl * 0.3, y - 0.02, 0), (bl * 0.6, 0.04, bw * 1.3), _color(rng, "screen")))
        if rng.random() < 0.6:                          # funnel
            fr = W * _u(rng, 0.08, 0.15)
            fx = xs - bl * 0.8
            parts.append(cylinder((fx, 0.0, 0), (fx - 0.02, y + _u(rng, 0.04, 0.1), 0), fr, _color(rng, "paint"),
                                  sides=10))
        if rng.random() < 0.5:                          # radar mast
            parts.append(cylinder((xs, y, 0), (xs, y + _u(rng, 0.1, 0.25), 0), 0.008, _color(rng, "metal"), sides=6))
    elif top == "mast":
        mh = _u(rng, 0.4, 0.9) * L
        mx = _u(rng, -0.05, 0.15) * L
        mast = _color(rng, str(rng.choice(["wood", "metal"])))
        parts.append(cylinder((mx, -0.02, 0), (mx, mh, 0), 0.012, mast, sides=8))
        if rng.random() < 0.75:
            sail = np.array([[0.0, 0.06], [-L * _u(rng, 0.3, 0.5), 0.06], [0.0, mh * 0.95]])
            parts.append(loft(sail, np.diag([1.0, 1.0, 0.01]), (mx - 0.015, 0, -0.005), _color(rng, "light")))
            if rng.random() < 0.5:                      # jib
                jib = np.array([[0.0, 0.06], [L * _u(rng, 0.2, 0.4), 0.06], [0.0, mh * 0.8]])
                parts.append(loft(jib, np.diag([1.0, 1.0, 0.008]), (mx + 0.015, 0, -0.004), _color(rng, "light")))
        else:
            parts.append(box((mx, mh * 0.8, 0), (0.02, 0.015, W * 0.8), mast))
        if rng.random() < 0.5:                          # cabin
            parts.append(box((mx - L * 0.15, 0.03, 0), (L * 0.25, 0.06, W * 0.5), deck))
    elif top == "cargo":
        n = int(rng.integers(2, 6))
        cl = L * 0.8 / n
        ch = _u(rng, 0.04, 0.09)
        c0 = _color(rng, "paint")
        for i in range(n):
            h = ch * (1.0 if rng.random() < 0.7 else 2.0)
            parts.append(box((-L * 0.4 + cl * (i + 0.5), h / 2, 0), (cl * 0.92, h, W * _u(rng, 0.6, 0.85)), c0))
    return parts


def _legs4(parts: Shape, rng: np.random.Generator, W: float, D: float, H: float, lw: float, inset: float,
           color: np.ndarray, splay: float = 0.0, round_legs: bool = False) -> None:
    """Four legs from y = 0 to H under the corners of a W x D top, splayed outward by ``splay`` at the floor."""
    for sx in (1.0, -1.0):
        for sz in (1.0, -1.0):
            x, z = sx * (W / 2 - lw - inset), sz * (D / 2 - lw - inset)
            if splay > 0 or round_legs:
                parts.append(cylinder((x + sx * splay, 0, z + sz * splay), (x, H, z), lw / 2 + 0.004, color, sides=8))
            else:
                parts.append(box((x, H / 2, z), (lw, H, lw), color))


def _chair2(rng: np.random.Generator) -> Shape:
    v = VARIANTS["chair"]
    base = str(rng.choice(v["base"], p=[0.35, 0.15, 0.2, 0.15, 0.15]))
    back = str(rng.choice(v["back"]))
    arms = str(rng.choice(v["arms"], p=[0.55, 0.3, 0.15]))
    _note(base=base, back=back, arms=arms)
    seat, leg = _color(rng, str(rng.choice(["wood", "fabric", "dark"]))), _color(rng, str(rng.choice(["wood", "metal", "dark"])))
    W, D, H, t = _u(rng, 0.4, 0.6), _u(rng, 0.4, 0.6), _u(rng, 0.38, 0.5), _u(rng, 0.03, 0.1)
    parts: Shape = [box((0, H, 0), (W, t, D), seat)]
    lw = _u(rng, 0.025, 0.06)
    if base == "legs":
        _legs4(parts, rng, W, D, H, lw, 0.0, leg, round_legs=rng.random() < 0.5)
        if rng.random() < 0.4:                           # stretchers
            for s in (1.0, -1.0):
                parts.append(box((s * (W / 2 - lw), H * 0.25, 0), (lw * 0.6, lw * 0.6, D - 2 * lw), leg))
    elif base == "splayed":
        _legs4(parts, rng, W, D, H, lw, W * 0.08, leg, splay=_u(rng, 0.04, 0.1))
    elif base == "pedestal":
        ph = H * _u(rng, 0.25, 0.4)
        parts.append(cylinder((0, ph, 0), (0, H, 0), _u(rng, 0.02, 0.035), leg, sides=10))
        parts.append(cylinder((0, ph - 0.05, 0), (0, ph + 0.01, 0), 0.045, leg, sides=10))
        rs = _u(rng, 0.25, 0.35)
        for k in range(5):
            a = 2 * np.pi * k / 5 + _u(rng, 0, 0.01)
            tip = (rs * np.cos(a), 0.03, rs * np.sin(a))
            parts.append(cylinder((0, ph - 0.03, 0), tip, 0.018, leg, sides=6))
            parts.append(ellipsoid((tip[0], 0.02, tip[2]), (0.025, 0.02, 0.025), _color(rng, "dark")))
    elif base == "sled":
        for s in (1.0, -1.0):
            x = s * (W / 2 - lw)
            parts.append(box((x, 0.01, 0), (lw, 0.02, D * 1.05), leg))
            for sz in (1.0, -1.0):
                parts.append(cylinder((x, 0.0, sz * D * 0.5), (x, H, sz * (D / 2 - lw)), lw / 2, leg, sides=6))
    else:   # solid block base
        parts.append(box((0, H / 2, 0), (W * _u(rng, 0.85, 1.0), H, D * _u(rng, 0.85, 1.0)), seat))
    bh, tilt = _u(rng, 0.35, 0.65), _u(rng, 0.0, 0.3)
    if back == "low":
        bh = _u(rng, 0.15, 0.25)
    bt = _u(rng, 0.025, 0.07)
    R = rot_x(-tilt)
    y_mid, z_mid = H + t / 2 + bh / 2 * np.cos(tilt), -D / 2 + bt / 2 + bh / 2 * np.sin(tilt)
    if back in ("solid", "low"):
        parts.append(box((0, y_mid, z_mid), (W, bh, bt), seat, R))
    else:
        for s in (1.0, -1.0):                             # posts
            parts.append(box((s * (W / 2 - lw / 2), y_mid, z_mid), (lw, bh, bt), leg, R))
        top_h = bh * _u(rng, 0.12, 0.25)
        up = np.array([0.0, np.cos(tilt), np.sin(tilt)])
        parts.append(box(np.array([0, y_mid, z_mid]) + up * (bh - top_h) / 2, (W, top_h, bt), leg, R))
        if back == "slats":
            n = int(rng.integers(2, 6))
            inner = W - 2 * lw
            for i in range(n):
                x = -inner / 2 + inner * (i + 0.5) / n
                parts.append(box((x, y_mid, z_mid), (inner / n * 0.45, bh * 0.98, bt * 0.6), leg, R))
        else:
            for k in range(int(rng.integers(1, 3))):
                off = -bh / 2 + (k + 1) * (bh - top_h) / 3
                parts.append(box(np.array([0, y_mid, z_mid]) + up * off, (W, top_h * 0.6, bt * 0.7), leg, R))
    if arms == "open":
        ah = _u(rng, 0.15, 0.25)
        for s in (1.0, -1.0):
            parts.append(box((s * (W / 2 - 0.02), H + ah, -0.02), (0.04, 0.03, D * 0.85), leg))
            parts.append(box((s * (W / 2 - 0.02), H + ah / 2, D * 0.3), (0.03, ah, 0.03), leg))
    elif arms == "panel":
        ah = _u(rng, 0.15, 0.25)
        for s in (1.0, -1.0):
            parts.append(box((s * (W / 2 + 0.03), H + ah / 2 - 0.05, 0), (0.06, ah + t + 0.05, D), seat))
    return parts


def _sofa2(rng: np.random.Generator) -> Shape:
    v = VARIANTS["sofa"]
    arms, back, base = str(rng.choice(v["arms"])), str(rng.choice(v["back"])), str(rng.choice(v["base"]))
    _note(arms=arms, back=back, base=base)
    fab, cush = _color(rng, "fabric"), _color(rng, "fabric")
    if rng.random() < 0.5:
        cush = fab
    L, D, Hb = _u(rng, 1.0, 1.9), _u(rng, 0.5, 0.85), _u(rng, 0.15, 0.28)
    bh, bt = _u(rng, 0.25, 0.5), _u(rng, 0.1, 0.2)
    ride = _u(rng, 0.08, 0.16) if base == "legs" else _u(rng, 0.0, 0.03)
    aw = _u(rng, 0.08, 0.2) if arms != "none" else 0.0
    ah = {"low": _u(rng, 0.08, 0.18), "high": _u(rng, 0.2, 0.35), "rolled": _u(rng, 0.15, 0.25), "none": 0.0}[arms]
    parts: Shape = [box((0, ride + Hb / 2, 0), (L, Hb, D), fab),
                    box((0, ride + (Hb + bh) / 2, -D / 2 + bt / 2), (L, Hb + bh, bt), fab)]
    if back == "cushions":
        n = int(rng.integers(2, 4))
        inner = L - 2 * aw
        for i in range(n):
            x = -inner / 2 + inner * (i + 0.5) / n
            parts.append(box((x, ride + Hb + bh * 0.45, -D / 2 + bt + 0.05), (inner / n * 0.95, bh * 0.75, 0.1), cush,
                             rot_x(-0.15)))
    for s in (1.0, -1.0):
        if arms in ("low", "high"):
            parts.append(box((s * (L / 2 - aw / 2), ride + (Hb + ah) / 2, 0), (aw, Hb + ah, D), fab))
        elif arms == "rolled":
            parts.append(box((s * (L / 2 - aw / 2), ride + (Hb + ah) / 2 - aw / 4, 0), (aw, Hb + ah - aw / 2, D), fab))
            parts.append(cylinder((s * (L / 2 - aw / 2), ride + Hb + ah - aw / 2, D / 2),
                                  (s * (L / 2 - aw / 2), ride + Hb + ah - aw / 2, -D / 2), aw * 0.62, fab, sides=12))
    parts += seat_cushions(rng, L, D, Hb, aw, bt, ride, cush)
    if rng.random() < 0.25:                              # chaise: an L-shaped extension
        s = 1.0 if rng.random() < 0.5 else -1.0
        cl = _u(rng, 0.4, 0.7)
        parts.append(box((s * (L / 2 - aw - L * 0.15), ride + Hb / 2, D / 2 + cl / 2), (L * 0.3, Hb, cl), fab))
    if base == "legs":
        leg = _color(rng, str(rng.choice(["dark", "wood", "metal"])))
        for sx in (1.0, -1.0):
            for sz in (1.0, -1.0):
                x, z = sx * (L / 2 - 0.06), sz * (D / 2 - 0.06)
                parts.append(cylinder((x, 0, z), (x, ride, z), 0.022, leg, r1=0.03, sides=8))
    return parts


def _bench2(rng: np.random.Generator) -> Shape:
    v = VARIANTS["bench"]
    legs, back = str(rng.choice(v["legs"])), str(rng.choice(v["back"], p=[0.4, 0.35, 0.25]))
    _note(legs=legs, back=back)
    wood, metal = _color(rng, "wood"), _color(rng, str(rng.choice(["metal", "dark", "wood"])))
    L, D, H, t = _u(rng, 1.0, 1.8), _u(rng, 0.3, 0.5), _u(rng, 0.35, 0.5), _u(rng, 0.03, 0.07)
    parts: Shape = []
    if rng.random() < 0.5:                              # slatted seat
        n = int(rng.integers(3, 6))
        for i in range(n):
            z = -D / 2 + D * (i + 0.5) / n
            parts.append(box((0, H, z), (L, t, D / n * 0.8), wood))
    else:
        parts.append(box((0, H, 0), (L, t, D), wood))
    xe = L / 2 - _u(rng, 0.05, 0.2)
    if legs == "slab":
        for s in (1.0, -1.0):
            parts.append(box((s * xe, H / 2, 0), (0.05, H, D * 0.95), metal))
    elif legs == "four":
        lw = _u(rng, 0.03, 0.06)
        _legs4(parts, rng, 2 * xe + lw, D, H, lw, 0.0, metal)
    else:   # trestle: A-frames
        for s in (1.0, -1.0):
            for sz in (1.0, -1.0):
                parts.append(cylinder((s * xe, 0, sz * D * 0.5), (s * xe, H, sz * D * 0.15), 0.025, metal, sides=6))
            parts.append(box((s * xe, H * 0.35, 0), (0.03, 0.03, D * 0.7), metal))
    if back != "none":
        bh, tilt = _u(rng, 0.25, 0.45), _u(rng, 0.0, 0.3)
        R = rot_x(-tilt)
        y, z = H + 0.02 + bh / 2 * np.cos(tilt), -D / 2 + 0.03 + bh / 2 * np.sin(tilt)
        if back == "solid":
            parts.append(box((0, y, z), (L, bh, t), wood, R))
        else:
            up = np.array([0.0, np.cos(tilt), np.sin(tilt)])
            for k in range(int(rng.integers(2, 4))):
                off = -bh / 2 + bh * (k + 0.5) / 3
                parts.append(box(np.array([0, y, z]) + up * off, (L, bh / 3 * 0.7, t * 0.7), wood, R))
            for s in (1.0, -1.0):
                parts.append(box((s * xe, y, z - 0.02), (0.04, bh, 0.03), metal, R))
    if rng.random() < 0.35:                              # end arms
        for s in (1.0, -1.0):
            parts.append(box((s * (L / 2 - 0.03), H + 0.12, 0), (0.04, 0.03, D * 0.9), metal))
            parts.append(box((s * (L / 2 - 0.03), H + 0.06, D * 0.35), (0.03, 0.12, 0.03), metal))
    return parts


def _table2(rng: np.random.Generator) -> Shape:
    kind = str(rng.choice(VARIANTS["table"]["kind"], p=[0.35, 0.15, 0.15, 0.15, 0.2]))
    _note(kind=kind)
    top, leg = _color(rng, str(rng.choice(["wood", "light", "metal", "dark"]))), \
        _color(rng, str(rng.choice(["wood", "metal", "dark"])))
    H, t = _u(rng, 0.45, 0.8), _u(rng, 0.025, 0.07)
    W, D = _u(rng, 0.7, 1.7), _u(rng, 0.45, 1.0)
    parts: Shape = []
    if kind in ("four_legs", "desk", "trestle"):
        parts.append(box((0, H - t / 2, 0), (W, t, D), top))
    if kind == "four_legs":
        lw, inset = _u(rng, 0.03, 0.08), _u(rng, 0.0, 0.1)
        _legs4(parts, rng, W, D, H - t, lw, inset, leg, round_legs=rng.random() < 0.3)
        if rng.random() < 0.5:                           # apron
            ah = _u(rng, 0.04, 0.1)
            parts.append(box((0, H - t - ah / 2, 0), (W - 2 * inset - 2 * lw, ah, D - 2 * inset - 2 * lw), leg))
        if rng.random() < 0.3:                           # lower shelf
            parts.append(box((0, H * 0.2, 0), (W - 2 * inset - lw, 0.02, D - 2 * inset - lw), top))
    elif kind == "desk":
        dw = W * _u(rng, 0.25, 0.4)
        s = 1.0 if rng.random() < 0.5 else -1.0
        parts.append(box((s * (W / 2 - dw / 2), (H - t) / 2, 0), (dw, H - t, D * 0.95), top))
        for k in range(int(rng.integers(2, 5))):
            hh = (H - t) / 4
            parts.append(box((s * (W / 2 - dw / 2), hh * (k + 0.5), D * 0.475 + 0.005), (dw * 0.85, hh * 0.85, 0.01),
                             leg))
        parts.append(box((-s * (W / 2 - 0.03), (H - t) / 2, 0), (0.04, H - t, D * 0.95), top))
    elif kind == "trestle":
        for s in (1.0, -1.0):
            x = s * (W / 2 - _u(rng, 0.08, 0.2))
            parts.append(box((x, (H - t) / 2, 0), (0.05, H - t, D * 0.6), leg))
            parts.append(box((x, 0.02, 0), (0.07, 0.04, D * 0.8), leg))
        parts.append(box((0, H * 0.3, 0), (W * 0.7, 0.04, 0.04), leg))
    else:
        R = _u(rng, 0.3, 0.6)
        parts.append(cylinder((0, H - t, 0), (0, H, 0), R, top, sides=20))
        if kind == "pedestal":
            parts.append(cylinder((0, 0.02, 0), (0, H - t, 0), _u(rng, 0.03, 0.08), leg, sides=10))
            if rng.random() < 0.5:
                parts.append(cylinder((0, 0, 0), (0, 0.03, 0), R * _u(rng, 0.4, 0.7), leg, sides=16))
            else:
                for k in range(4):
                    a = np.pi / 2 * k + np.pi / 4
                    parts.append(box((np.cos(a) * R * 0.3, 0.02, np.sin(a) * R * 0.3), (R * 0.6, 0.04, 0.05), leg,
                                     rot_y(-a)))
        else:
            n = int(rng.integers(3, 5))
            for k in range(n):
                a = 2 * np.pi * k / n
                x, z = np.cos(a) * R * 0.7, np.sin(a) * R * 0.7
                parts.append(cylinder((x * 1.1, 0, z * 1.1), (x, H - t, z), 0.022, leg, sides=8))
    return parts


def _cabinet2(rng: np.random.Generator) -> Shape:
    parts = g1._cabinet(rng)
    handle = _color(rng, "metal")
    lo, hi = g1.shape_bbox(parts)
    W, D = hi[0] - lo[0], hi[2] - lo[2]
    if rng.random() < 0.6:                               # a handle on each drawer/door front (0.02 thick)
        for p in list(parts):
            ext = p.vertices.max(axis=0) - p.vertices.min(axis=0)
            if ext[2] < 0.025 and ext[1] > 0.03:
                c = (p.vertices.min(axis=0) + p.vertices.max(axis=0)) / 2
                parts.append(box((c[0], c[1], p.vertices.max(axis=0)[2] + 0.01), (W * 0.25, 0.02, 0.02), handle))
    if rng.random() < 0.4:                               # on legs
        lift = _u(rng, 0.08, 0.2)
        parts = g1.transform_shape(parts, 1.0, np.array([0.0, lift, 0.0]))
        _legs4(parts, rng, W, D, lift + lo[1] + 0.01, 0.035, 0.02, _color(rng, str(rng.choice(["dark", "metal", "wood"]))))
    return parts


def _lamp2(rng: np.random.Generator) -> Shape:
    if rng.random() < 0.5:
        return g1._lamp(rng)
    metal, shade = _color(rng, str(rng.choice(["metal", "dark"]))), _color(rng, str(rng.choice(["light", "fabric"])))
    H = _u(rng, 0.7, 1.3)
    parts: Shape = []
    if rng.random() < 0.5:                               # tripod floor lamp
        for k in range(3):
            ang = 2 * np.pi * k / 3
            parts.append(cylinder((np.cos(ang) * H * 0.25, 0, np.sin(ang) * H * 0.25), (0, H * 0.6, 0), 0.012, metal, sides=6))
        parts.append(cylinder((0, H * 0.55, 0), (0, H, 0), 0.012, metal, sides=6))
        sr = _u(rng, 0.12, 0.25)
        parts.append(cylinder((0, H - 0.05, 0), (0, H + _u(rng, 0.1, 0.25), 0), sr, shade, r1=sr * _u(rng, 0.6, 1.0),
                              sides=16))
    else:                                                # arc / desk lamp with a cone head
        parts.append(cylinder((0, 0, 0), (0, 0.04, 0), _u(rng, 0.12, 0.2), metal, sides=16))
        a = np.array([0.0, H * _u(rng, 0.4, 0.6), 0.0])
        b = a + np.array([H * _u(rng, 0.25, 0.5), H * _u(rng, 0.1, 0.4), 0.0])
        parts.append(cylinder((0, 0, 0), a, 0.014, metal, sides=6))
        parts.append(cylinder(a, b, 0.014, metal, sides=6))
        hr = _u(rng, 0.07, 0.15)
        parts.append(cylinder(b + np.array([0, 0.02, 0]), b - np.array([hr * 0.3, hr * 1.2, 0]), hr * 0.3, shade,
                              r1=hr, sides=16))
    return parts


def _rifle2(rng: np.random.Generator) -> Shape:
    parts = g1._rifle(rng)
    metal = _color(rng, "dark")
    lo, hi = g1.shape_bbox(parts)
    if rng.random() < 0.5:                               # scope
        y = hi[1] + 0.03
        parts.append(cylinder((-0.08, y, 0), (0.12, y, 0), 0.022, metal, sides=10))
        parts.append(box((0.02, hi[1] + 0.01, 0), (0.04, 0.03, 0.02), metal))
    if rng.random() < 0.4:                               # bipod
        x = hi[0] * _u(rng, 0.4, 0.7)
        for s in (1.0, -1.0):
            parts.append(cylinder((x, 0.0, 0), (x + 0.03, -0.18, s * 0.06), 0.008, metal, sides=6))
    return parts


GRAMMAR2: Dict[str, Callable[[np.random.Generator], Shape]] = {
    "airplane": _airplane2, "bench": _bench2, "cabinet": _cabinet2, "car": _car2, "chair": _chair2,
    "display": g1._display, "lamp": _lamp2, "loudspeaker": g1._loudspeaker, "rifle": _rifle2, "sofa": _sofa2,
    "table": _table2, "telephone": g1._telephone, "watercraft": _watercraft2,
}
"""Grammar-2 builders by category (unnormalised shapes; see the module docstring)."""


def _check_registry(names: List[str]) -> None:
    missing = set(names) - set(GRAMMAR2)
    if missing:
        raise RuntimeError(f"grammar 2 misses categories {sorted(missing)}")


_check_registry(list(g1.CATEGORIES))
