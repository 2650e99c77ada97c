"""Cutting a silhouette's holes through a closed mesh fitted in one view.

A closed genus-0 surface fitted to a silhouette with holes (the gaps between a chair's legs, the
slats of a bench back) can only cover each hole with a thin membrane: two sheets of the surface,
one facing the camera and one facing away, both projecting into the hole. :func:`carve_view_holes`
cuts such membranes out and stitches a tube between the two openings, so the result is again
one closed, consistently oriented surface, one genus higher per hole, whose silhouette in that
view has the hole.

For each hole of the target silhouette (background pixels that the silhouette encloses, not
connected to the image border; at least ``min_pixels`` of them), the faces whose projected
centroid lies in the hole are the membrane. It is cut when those faces form exactly two patches,
each a topological disk (one boundary loop), the nearer facing the camera and the farther facing
away, and their boundary loops run around the hole the same way in the image; the two loops are
then joined by a strip of triangles, zipped along their image-space arc length. Any other case
(one sheet, several membranes behind each other, a patch with a handle) leaves that hole as it
is, and so does a hole whose tube would cross the surface (more self-intersecting faces than
before) or meet a hole cut before it. The tube's corners take the UVs of the loop vertex they start from (so each tube triangle has
one colour); the tube lies along the view direction and is not seen from the fitted view.

numpy on the CPU; meant for the few-thousand-face surfaces of the Image to 3D refine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from dibr_core.camera import Camera, clip_to_ndc
from dibr_core.checks import check_index_range, check_tensor
from dibr_core.mesh import edge_face_adjacency, mesh_edges
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.remesh import _components, check_closed_manifold
from dibr_core.silhouettes import enclosed_holes

__all__ = ["CarveResult", "carve_view_holes"]


@dataclass(frozen=True)
class CarveResult:
    """The result of :func:`carve_view_holes`.

    Attributes:
        vertices: (V', 3) the kept vertices (unused ones dropped), in the input's dtype.
        faces: (F', 3) int64, the kept faces and the tubes' faces.
        face_uvs: (F', 3, 2) or None (as given).
        vertex_index: (V',) int64, each kept vertex's index in the input (to carry per-vertex data).
        holes: how many holes were cut (the genus added).
        skipped: holes of the silhouette that were left as they are.
        reasons: why, one line per skipped hole.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_uvs: Optional[torch.Tensor]
    vertex_index: torch.Tensor
    holes: int
    skipped: int
    reasons: Tuple[str, ...] = ()


def _project(vertices: np.ndarray, camera: Camera, H: int, W: int) -> Tuple[np.ndarray, np.ndarray]:
    """(V, 2) pixel positions (column, row; rows top to bottom, pixel centres at +0.5) and (V,)
    depths (distance along the view axis) of world points in ``camera``."""
    v = torch.from_numpy(vertices)[None].to(camera.view.dtype)
    cam = camera.to_camera(v)
    ndc = clip_to_ndc(camera.to_clip(cam))[0].numpy().astype(np.float64)
    px = np.stack([(ndc[:, 0] + 1.0) * 0.5 * W, (1.0 - ndc[:, 1]) * 0.5 * H], axis=1)
    return px, -cam[0, :, 2].numpy().astype(np.float64)


def _boundary_loop(faces: np.ndarray) -> Optional[List[int]]:
    """The boundary of a set of faces as the loop the *rest* of the mesh sees (its half-edges
    reversed), when it is one simple loop; else None."""
    he = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    inner = {(int(a), int(b)) for a, b in he}
    nxt: Dict[int, int] = {}
    for a, b in he:
        if (int(b), int(a)) not in inner:        # a boundary half-edge a -> b of the patch
            if int(b) in nxt:
                return None                       # a vertex where two boundary runs meet
            nxt[int(b)] = int(a)                  # the rest of the mesh has b -> a
    if not nxt:
        return None
    start = next(iter(nxt))
    loop = [start]
    while True:
        v = nxt[loop[-1]]
        if v == start:
            break
        if len(loop) > len(nxt):
            return None
        loop.append(v)
    return loop if len(loop) == len(nxt) else None


def _is_disk(faces: np.ndarray) -> bool:
    """Whether faces form a topological disk (Euler characteristic 1; the loop is checked apart)."""
    n_e = len(mesh_edges(torch.from_numpy(faces)))
    return len(np.unique(faces)) - n_e + len(faces) == 1


def _problems(faces: np.ndarray) -> List[str]:
    """What keeps faces (whose unused vertex indices are allowed) from one closed, consistently
    oriented 2-manifold."""
    used = np.unique(faces)
    remap = np.zeros(int(used.max()) + 1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return check_closed_manifold(torch.from_numpy(remap[faces])).problems()


def _arc(px: np.ndarray) -> np.ndarray:
    """(n,) arc-length parameters in [0, 1) of a closed polygon's vertices."""
    seg = np.linalg.norm(np.roll(px, -1, axis=0) - px, axis=1)
    total = max(float(seg.sum()), 1e-12)
    return np.concatenate([[0.0], np.cumsum(seg)[:-1]]) / total


def _signed_area(px: np.ndarray) -> float:
    x, y = px[:, 0], px[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _zip(a: List[int], b: List[int], px: np.ndarray) -> np.ndarray:
    """Triangles joining loop ``a`` (as the rest of the mesh sees it) to loop ``b`` (given in the
    opposite sense, so both run the same way round): each contains the reverse of its loop edge,
    so the strip continues the mesh's orientation."""
    # start b where the two loops, matched by arc length, lie closest in the image (all rotations)
    ta = _arc(px[a])
    best, k_best = np.inf, 0
    for k in range(len(b)):
        bk = b[k:] + b[:k]
        tb = _arc(px[bk])
        pos = np.stack([np.interp(ta, np.append(tb, 1.0), np.append(px[bk][:, c], px[bk][0, c])) for c in (0, 1)], axis=1)
        d = float(np.linalg.norm(pos - px[a], axis=1).sum())
        if d < best:
            best, k_best = d, k
    b = b[k_best:] + b[:k_best]
    tb = _arc(px[b])
    n, m = len(a), len(b)
    tris: List[Tuple[int, int, int]] = []
    i = j = 0
    while i < n or j < m:
        next_a = ta[i + 1] if i + 1 < n else 1.0
        next_b = tb[j + 1] if j + 1 < m else 1.0
        if j >= m or (i < n and next_a <= next_b):
            tris.append((a[(i + 1) % n], a[i], b[j % m]))
            i += 1
        else:
            tris.append((b[j], b[(j + 1) % m], a[i % n]))
            j += 1
    return np.asarray(tris, dtype=np.int64)


GROW_ROUNDS = 2   # how many times a hole's patches grow by a ring of faces when its tube fails


def _grown(part: np.ndarray, neighbours: Tuple[np.ndarray, np.ndarray], facing: np.ndarray,
           front: bool) -> np.ndarray:
    """``part`` plus its edge neighbours that face the same way (towards the camera for ``front``)."""
    src, dst = neighbours
    inside = np.zeros(len(facing), dtype=bool)
    inside[part] = True
    add = dst[inside[src] & ~inside[dst] & (facing[dst] == front)]
    return np.unique(np.concatenate([part, add]))


def _try_tube(f: np.ndarray, parts: List[np.ndarray], removed: np.ndarray, touched: np.ndarray,
              tubes: List[np.ndarray], px: np.ndarray, vertices: torch.Tensor,
              crossings: int) -> Tuple[Optional[np.ndarray], str]:
    """The tube replacing two patches, or None and why (``retry:`` when growing may help);
    ``vertices`` (V, 3) float64 on the CPU."""
    if not all(_is_disk(f[idx]) for idx in parts):
        return None, "a patch is not a disk"
    la, lb = (_boundary_loop(f[idx]) for idx in parts)
    if la is None or lb is None or set(la) & set(lb):
        return None, "the patches' boundaries are not two separate simple loops"
    lb_rev = lb[::-1]
    if np.sign(_signed_area(px[la])) != np.sign(_signed_area(px[lb_rev])):
        return None, "the loops run round the hole in opposite senses"
    both = np.concatenate(parts)
    if touched[f[both]].any() or removed[both].any():
        return None, "it meets a hole cut before"
    tube = _zip(la, lb_rev, px)
    keep = ~removed
    keep[both] = False
    trial = np.concatenate([f[keep]] + tubes + [tube])
    problems = _problems(trial)
    if problems:
        return None, f"retry:the tube would leave {problems[0]}"
    n_x = self_intersecting_faces(vertices, torch.from_numpy(trial))
    if n_x > crossings:
        return None, f"retry:the tube would cross the surface ({n_x} self-intersecting faces, {crossings} before)"
    return tube, ""


def carve_view_holes(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, mask: torch.Tensor,
                     face_uvs: Optional[torch.Tensor] = None, min_pixels: int = 4) -> CarveResult:
    """Cut the holes of the silhouette ``mask`` (seen by ``camera``) through the closed mesh
    (see the module docstring).

    Args:
        vertices: (V, 3) float; faces: (F, 3) int64, a closed, consistently oriented (outward)
            triangle mesh.
        camera: one camera (batch 1) in which ``mask`` was taken.
        mask: (H, W) silhouette in [0, 1].
        face_uvs: (F, 3, 2) per-corner UVs, carried to the kept faces (None: none).
        min_pixels: holes of fewer pixels are left alone.

    Returns:
        :class:`CarveResult` (``holes`` 0: the mesh as given, unused vertices never dropped).
    """
    fn = "carve_view_holes"
    dims: Dict[str, int] = {}
    check_tensor(fn, "vertices", vertices, ("V", 3), dims, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), dims, "int", vertices.device)
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    check_tensor(fn, "mask", mask, ("H", "W"), dims, None)
    if face_uvs is not None:
        check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), dims, "float", finite=True)
    if camera.view.shape[0] != 1:
        raise ValueError(f"{fn}(): camera must hold one camera, got a batch of {camera.view.shape[0]}")
    v = vertices.detach().cpu().double().numpy()
    f = faces.detach().cpu().long().numpy()
    V, Fn = v.shape[0], f.shape[0]
    labels = enclosed_holes(mask, min_pixels).numpy()
    H, W = labels.shape
    n_holes = int(labels.max())
    if n_holes == 0:
        return CarveResult(vertices, faces.long(), face_uvs, torch.arange(V), 0, 0)
    px, depth = _project(v, camera, H, W)
    cpx = px[f].mean(axis=1)
    col = np.clip(np.floor(cpx[:, 0]).astype(np.int64), 0, W - 1)
    row = np.clip(np.floor(cpx[:, 1]).astype(np.int64), 0, H - 1)
    inside = (cpx[:, 0] >= 0) & (cpx[:, 0] < W) & (cpx[:, 1] >= 0) & (cpx[:, 1] < H)
    face_hole = np.where(inside, labels[row, col], 0)
    # facing: the normal against the direction from the camera centre to the face
    centre = camera.center[0].detach().cpu().double().numpy()
    p = v[f]
    normal = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    facing = np.einsum("ij,ij->i", normal, p.mean(axis=1) - centre) < 0
    # connected patches of hole faces (sharing an edge, within one hole)
    pairs = edge_face_adjacency(torch.from_numpy(f))[1].numpy()
    fa, fb = pairs[:, 0], pairs[:, 1]
    neighbours = (np.concatenate([fa, fb]), np.concatenate([fb, fa]))
    link = (face_hole[fa] > 0) & (face_hole[fa] == face_hole[fb])
    patch = _components(Fn, fa[link], fb[link])
    reasons: List[str] = []
    removed = np.zeros(Fn, dtype=bool)
    touched = np.zeros(V, dtype=bool)     # vertices of the patches cut so far
    tubes: List[np.ndarray] = []
    cut = 0
    v64 = torch.from_numpy(v)
    crossings = self_intersecting_faces(v64, torch.from_numpy(f))
    for h in range(1, n_holes + 1):
        members = np.nonzero(face_hole == h)[0]
        ids = np.unique(patch[members])
        groups = sorted((members[patch[members] == i] for i in ids), key=len, reverse=True)
        # the membrane: the largest patch facing the camera and the largest facing away (smaller
        # fragments, a face or two along the hole's edge, stay)
        front = [g for g in groups if facing[g].mean() > 0.5]
        back = [g for g in groups if facing[g].mean() <= 0.5]
        if not front or not back:
            reasons.append(f"hole {h}: no patch faces {'the camera' if not front else 'away'} in it")
            continue
        parts = [front[0], back[0]]
        if sum(len(g) for g in groups) - len(parts[0]) - len(parts[1]) > 0.1 * (len(parts[0]) + len(parts[1])):
            reasons.append(f"hole {h}: {len(groups)} patches of faces project into it, more than a membrane")
            continue
        if float(depth[f[parts[0]]].mean()) >= float(depth[f[parts[1]]].mean()):
            reasons.append(f"hole {h}: the patch facing the camera is not the nearer")
            continue
        # a tube that would cross the surface or duplicate an edge is tried again with both
        # patches grown by one ring of faces (their loops move out from the hole's rim)
        why = ""
        for grow in range(GROW_ROUNDS + 1):
            if grow:
                parts = [_grown(p_, neighbours, facing, front_side) for p_, front_side in zip(parts, (True, False))]
            tube, why = _try_tube(f, parts, removed, touched, tubes, px, v64, crossings)
            if tube is not None or not why.startswith("retry:"):
                break
        if tube is None:
            reasons.append(f"hole {h}: {why.removeprefix('retry:')}")
            continue
        both = np.concatenate(parts)
        removed[both] = True
        touched[f[both]] = True
        tubes.append(tube)
        cut += 1
    if cut == 0:
        return CarveResult(vertices, faces.long(), face_uvs, torch.arange(V), 0, n_holes, tuple(reasons))
    kept = np.nonzero(~removed)[0]
    new_faces = np.concatenate([f[kept]] + tubes)
    used = np.unique(new_faces)
    remap = np.full(V, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    out_uvs: Optional[torch.Tensor] = None
    if face_uvs is not None:
        uv = face_uvs.detach().cpu().double().numpy()
        # one UV per vertex for the tubes: that of one of its corners in a kept face
        vert_uv = np.zeros((V, 2))
        vert_uv[f[kept].reshape(-1)] = uv[kept].reshape(-1, 2)
        tube_uvs = [np.repeat(vert_uv[t[:, 0]][:, None, :], 3, axis=1) for t in tubes]
        out_uvs = torch.from_numpy(np.concatenate([uv[kept]] + tube_uvs)).to(face_uvs.dtype)
    return CarveResult(vertices=vertices[torch.from_numpy(used)],
                       faces=torch.from_numpy(remap[new_faces]).to(vertices.device),
                       face_uvs=out_uvs, vertex_index=torch.from_numpy(used), holes=cut, skipped=n_holes - cut,
                       reasons=tuple(reasons))
