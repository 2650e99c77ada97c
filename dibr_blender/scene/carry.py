"""Carry a mesh's own data onto its remeshed replacement.

A fit with remeshing gives the object new mesh data (:func:`io.replace_mesh_data`), whose
vertices and faces no longer correspond to the old ones. What the old mesh held beyond its
shape is looked up on the old surface at each new element's *source point*
(``FitResult.source_positions``: where on the start surface a vertex descends from, carried
through the remeshing), with the old mesh's triangles in a BVH tree:

- vertex-group weights: per new vertex, the old weights interpolated (barycentric) on the
  old triangle nearest its source point;
- material slot per face: that of the old polygon nearest the face's source centroid;
- UV maps, by name (the active one stays active): per face corner, the old UVs interpolated on
  the old triangle nearest the corner's source point; where that tears the face across a UV
  seam (its UV triangle flips or grows more than twice as large as the alternative), the face
  takes all three corners from the one old triangle nearest its source centroid instead
  (barycentric coordinates extended beyond that triangle).

Shape keys are not carried (their offsets were made for the old vertices, and the fit started
from their mix); :func:`carry_mesh_data` says how many were left behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple

import numpy as np

__all__ = ["Carried", "carry_mesh_data", "OldSurface", "barycentric"]


@dataclass
class Carried:
    """What :func:`carry_mesh_data` wrote onto the new mesh."""

    vertex_groups: int = 0
    uv_maps: List[str] = field(default_factory=list)
    material_faces: bool = False
    shape_keys_left: int = 0

    def note(self) -> str:
        """One line for the report, or "" when the old mesh held nothing to carry."""
        parts = []
        if self.vertex_groups:
            parts.append(f"{self.vertex_groups} vertex group weight(s)")
        if self.uv_maps:
            parts.append("UV map(s) " + ", ".join(f"'{n}'" for n in self.uv_maps))
        if self.material_faces:
            parts.append("the faces' material slots")
        line = f"carried from the old mesh: {'; '.join(parts)}" if parts else ""
        if self.shape_keys_left:
            left = f"{self.shape_keys_left} shape key(s) not carried (they belong to the old vertices; the old " \
                   "mesh data keeps them)"
            line = f"{line}; {left}" if line else left
        return line


def barycentric(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of (N, 3) points projected onto the planes of (N, 3, 3)
    triangles (corner k = ``tri[:, k]``); (N, 3), rows summing to 1. Degenerate triangles give
    (1/3, 1/3, 1/3)."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00 = np.einsum("ij,ij->i", v0, v0)
    d01 = np.einsum("ij,ij->i", v0, v1)
    d11 = np.einsum("ij,ij->i", v1, v1)
    d20 = np.einsum("ij,ij->i", v2, v0)
    d21 = np.einsum("ij,ij->i", v2, v1)
    den = d00 * d11 - d01 * d01
    ok = den > 1e-30 * np.maximum(d00 * d11, 1e-300)
    safe = np.where(ok, den, 1.0)
    v = np.where(ok, (d11 * d20 - d01 * d21) / safe, 1.0 / 3.0)
    w = np.where(ok, (d00 * d21 - d01 * d20) / safe, 1.0 / 3.0)
    return np.stack([1.0 - v - w, v, w], axis=1)


class OldSurface:
    """The old mesh's triangles ((V, 3) positions, (T, 3) vertex indices) in Blender's BVH tree,
    built once for every lookup."""

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray) -> None:
        from mathutils.bvhtree import BVHTree

        self.vertices, self.triangles = vertices, triangles
        self.tree: Any = BVHTree.FromPolygons([tuple(map(float, v)) for v in vertices],
                                              [tuple(map(int, t)) for t in triangles], all_triangles=True)

    def nearest(self, points: np.ndarray) -> np.ndarray:
        """Index of the triangle nearest to each of the (N, 3) ``points``; (N,) int64."""
        from mathutils import Vector

        out = np.empty(len(points), dtype=np.int64)
        for i, p in enumerate(points):
            hit = self.tree.find_nearest(Vector((float(p[0]), float(p[1]), float(p[2]))))
            out[i] = hit[2] if hit[2] is not None else 0
        return out

    def nearest_inside(self, points: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The nearest triangle of each of the (N, 3) ``points`` and the point's barycentric
        coordinates on it, clamped into the triangle: (N,) int64, (N, 3)."""
        t = self.nearest(points)
        bary = np.clip(barycentric(points, self.vertices[self.triangles[t]]), 0.0, 1.0)
        return t, bary / np.maximum(bary.sum(axis=1, keepdims=True), 1e-12)


def _old_triangles(old: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The old mesh's loop triangles: positions (V, 3), vertex indices (T, 3), loop indices
    (T, 3) and polygon index (T,)."""
    old.calc_loop_triangles()
    T = len(old.loop_triangles)
    co = np.empty(3 * len(old.vertices), dtype=np.float64)
    old.vertices.foreach_get("co", co)
    tv = np.empty(3 * T, dtype=np.int64)
    tl = np.empty(3 * T, dtype=np.int64)
    tp = np.empty(T, dtype=np.int64)
    old.loop_triangles.foreach_get("vertices", tv)
    old.loop_triangles.foreach_get("loops", tl)
    old.loop_triangles.foreach_get("polygon_index", tp)
    return co.reshape(-1, 3), tv.reshape(-1, 3), tl.reshape(-1, 3), tp


def _old_weights(old: Any, n_groups: int) -> np.ndarray:
    """(V_old, G) weights of the G vertex groups in the old mesh (0 where unassigned)."""
    W = np.zeros((len(old.vertices), n_groups), dtype=np.float64)
    for v in old.vertices:
        for g in v.groups:
            if g.group < W.shape[1]:
                W[v.index, g.group] = g.weight
    return W


def _uv_area(uv: np.ndarray) -> np.ndarray:
    """Signed areas of (F, 3, 2) UV triangles; (F,)."""
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def carry_mesh_data(ob: Any, old: Any, source_local: np.ndarray, groups: Sequence[str] = (),
                    active_group: int = -1) -> Carried:
    """Carry ``old``'s vertex groups (with their weights), per-face material slots and UV maps
    onto the object's new triangle mesh ``ob.data`` (see the module docstring).

    Args:
        ob: the object, whose ``data`` is the new mesh (triangles, loops in face order).
        old: the mesh datablock it had before.
        source_local: (V_new, 3) each new vertex's source point, in the object's local frame.
        groups: the object's vertex-group names while it had ``old`` (Blender keeps them with
            the mesh data, so the new mesh starts without them), in index order; they are made
            again, empty ones too, so modifiers that name them keep working.
        active_group: the active group's index then.
    """
    me = ob.data
    carried = Carried(shape_keys_left=max(len(old.shape_keys.key_blocks) - 1, 0) if old.shape_keys else 0)
    if len(old.polygons) == 0 or len(me.polygons) == 0:
        return carried
    co, tv, tl, tp = _old_triangles(old)
    surface = OldSurface(co, tv)
    F = len(me.polygons)
    faces = np.empty(3 * F, dtype=np.int64)
    me.loops.foreach_get("vertex_index", faces)
    faces = faces.reshape(F, 3)
    src = np.asarray(source_local, dtype=np.float64)
    W = np.zeros((0, 0))
    if groups:
        made = [ob.vertex_groups.get(name) or ob.vertex_groups.new(name=name) for name in groups]
        if 0 <= active_group < len(made):
            ob.vertex_groups.active_index = made[active_group].index
        W = _old_weights(old, len(groups))
    uv_names = [uv.name for uv in old.uv_layers]
    # Each new vertex on the old surface: for the weights, and per face corner for the UVs.
    vt, vbary = surface.nearest_inside(src) if (W.any() or uv_names) else (None, None)
    if W.any():
        assert vt is not None and vbary is not None
        new_w = np.einsum("nk,nkg->ng", vbary, W[tv[vt]])
        for g, vg in enumerate(made):
            idx = np.nonzero(new_w[:, g] > 1e-6)[0]
            for i in idx:
                vg.add([int(i)], float(new_w[i, g]), "REPLACE")
            carried.vertex_groups += int(len(idx) > 0)
    mats = np.empty(len(old.polygons), dtype=np.int64)
    old.polygons.foreach_get("material_index", mats)
    mixed_materials = len(old.materials) > 1 and bool((mats != mats[0]).any())
    if not (uv_names or mixed_materials):
        return carried
    t = surface.nearest(src[faces].mean(axis=1))                    # each face's triangle
    if mixed_materials:
        me.polygons.foreach_set("material_index", mats[tp[t]].astype(np.int32))
        carried.material_faces = True
    if uv_names:
        assert vt is not None and vbary is not None
        corners = src[faces].reshape(-1, 3)                         # (3F, 3) corner source points
        # one triangle per face (the one nearest its centroid) ...
        bary_f = barycentric(corners, np.repeat(co[tv[t]], 3, axis=0))
        loops_f = np.repeat(tl[t], 3, axis=0)                       # (3F, 3) its loops
        # ... or per corner, the triangle nearest the corner's vertex
        bary_c = vbary[faces.ravel()]
        loops_c = tl[vt[faces.ravel()]]
        active = old.uv_layers.active.name if old.uv_layers.active is not None else None
        for name in uv_names:
            uv_old = np.empty(2 * len(old.loops), dtype=np.float64)
            old.uv_layers[name].data.foreach_get("uv", uv_old)
            uv_old = uv_old.reshape(-1, 2)
            by_face = np.einsum("nk,nkc->nc", bary_f, uv_old[loops_f]).reshape(F, 3, 2)
            by_corner = np.einsum("nk,nkc->nc", bary_c, uv_old[loops_c]).reshape(F, 3, 2)
            a_f, a_c = _uv_area(by_face), _uv_area(by_corner)
            torn = (a_c * a_f < 0) | (np.abs(a_c) > 2.0 * np.abs(a_f) + 1e-12)
            uv_new = np.where(torn[:, None, None], by_face, by_corner).reshape(-1, 2)
            layer = me.uv_layers.new(name=name)
            layer.data.foreach_set("uv", uv_new.astype(np.float32).ravel())
            carried.uv_maps.append(name)
        if active is not None:
            me.uv_layers.active = me.uv_layers[active]
    return carried
