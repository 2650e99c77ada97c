"""Small readers for the 3D model formats that Debian's game data packages ship, as used by the
real-model evaluation set (:mod:`dibr_core.data.realmodels`): AC3D ``.ac``, Wavefront ``.obj``
(with its ``.mtl``), Autodesk ``.3ds`` and MilkShape 3D ASCII (``.txt``).

Every reader returns a :class:`ModelMesh`: triangles (polygons are fanned), a material per
triangle and per-corner texture coordinates. Object hierarchies are flattened with their
transforms applied. Groups / objects / materials whose name matches one of ``exclude`` (fnmatch
patterns, case-insensitive) are dropped: game models carry effect geometry (exhaust flames,
lights, shadows) that is not part of the object.

Only what the evaluation set needs is read: geometry, diffuse colours and diffuse texture file
names. Lines, points, animation, normals and smoothing groups are ignored.
"""
from __future__ import annotations

import fnmatch
import re
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Material", "ModelMesh", "load_ac3d", "load_obj", "load_3ds", "load_ms3d_ascii", "load_model",
           "LOADERS"]

PathLike = Union[str, Path]


@dataclass
class Material:
    """A surface material: ``color`` (3,) diffuse RGB in [0, 1]; ``texture``: the diffuse texture
    file name as the model names it (resolved by :func:`find_texture`), or None."""

    name: str
    color: np.ndarray
    texture: Optional[str] = None


@dataclass
class ModelMesh:
    """A triangle soup with materials.

    Attributes:
        vertices: (V, 3) float64; faces: (F, 3) int64 indices into ``vertices``;
        uvs: (F, 3, 2) float64 per-corner texture coordinates (0 where the model has none);
        face_material: (F,) int64 index into ``materials``; materials: the materials;
        source_dir: folder of the model file (textures are looked up there).
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    face_material: np.ndarray
    materials: List[Material]
    source_dir: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        F = int(self.faces.shape[0])
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"ModelMesh(): faces must be (F, 3), got {self.faces.shape}")
        if self.uvs.shape != (F, 3, 2) or self.face_material.shape != (F,):
            raise ValueError(f"ModelMesh(): uvs must be ({F}, 3, 2) and face_material ({F},), got "
                             f"{self.uvs.shape} and {self.face_material.shape}")


class _Builder:
    """Accumulates triangles from polygons (fans) with per-corner uvs."""

    def __init__(self) -> None:
        self.vertices: List[np.ndarray] = []
        self.n_vertices = 0
        self.faces: List[Tuple[int, int, int]] = []
        self.uvs: List[np.ndarray] = []
        self.mats: List[int] = []
        self.materials: List[Material] = []

    def add_vertices(self, v: np.ndarray) -> int:
        """Append (N, 3) vertices; returns the index of the first."""
        base = self.n_vertices
        self.vertices.append(np.asarray(v, dtype=np.float64).reshape(-1, 3))
        self.n_vertices += int(self.vertices[-1].shape[0])
        return base

    def add_polygon(self, idx: Sequence[int], uv: Optional[np.ndarray], material: int) -> None:
        """A polygon with n >= 3 corners (global vertex indices) as n - 2 triangles."""
        n = len(idx)
        if n < 3:
            return
        uv_arr = np.zeros((n, 2)) if uv is None else np.asarray(uv, dtype=np.float64).reshape(n, 2)
        for k in range(1, n - 1):
            self.faces.append((int(idx[0]), int(idx[k]), int(idx[k + 1])))
            self.uvs.append(uv_arr[[0, k, k + 1]])
            self.mats.append(material)

    def build(self, source_dir: Path) -> ModelMesh:
        verts = np.concatenate(self.vertices) if self.vertices else np.zeros((0, 3))
        faces = np.asarray(self.faces, dtype=np.int64).reshape(-1, 3)
        uvs = np.asarray(self.uvs, dtype=np.float64).reshape(-1, 3, 2)
        mats = np.asarray(self.mats, dtype=np.int64).reshape(-1)
        if not self.materials:
            self.materials.append(Material("default", np.full(3, 0.7)))
        return ModelMesh(verts, faces, uvs, mats, self.materials, source_dir)


def _excluded(name: str, exclude: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name.lower(), p.lower()) for p in exclude)


def _tokens(line: str) -> List[str]:
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


# ----------------------------------------------------------------------------------------------
# AC3D

def load_ac3d(path: PathLike, exclude: Sequence[str] = ()) -> ModelMesh:
    """Read an AC3D ``.ac`` file: MATERIAL lines, nested OBJECTs with ``loc`` / ``rot`` (row-major
    3x3, applied as ``rot @ v + loc`` in the parent's frame), ``texture``, ``texrep``, vertices
    and SURF polygons (line surfaces are skipped). Objects named in ``exclude`` (and their kids)
    are dropped."""
    path = Path(path)
    lines = path.read_text(encoding="latin-1").splitlines()
    if not lines or not lines[0].startswith("AC3D"):
        raise ValueError(f"load_ac3d(): {path} is not an AC3D file (first line {lines[:1]!r})")
    b = _Builder()
    tex_materials: Dict[Tuple[int, str], int] = {}
    n_file_materials = 0
    pos = 1

    def next_line() -> str:
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            raise ValueError(f"load_ac3d(): {path} ends early")
        line = lines[pos]
        pos += 1
        return line

    while pos < len(lines) and lines[pos].startswith("MATERIAL"):
        t = _tokens(lines[pos])
        rgb = np.array([float(x) for x in t[t.index("rgb") + 1: t.index("rgb") + 4]])
        b.materials.append(Material(t[1], np.clip(rgb, 0, 1)))
        n_file_materials += 1
        pos += 1

    def material_for(mat: int, texture: Optional[str]) -> int:
        if texture is None:
            return mat
        key = (mat, texture)
        if key not in tex_materials:
            base = b.materials[mat] if 0 <= mat < n_file_materials else Material("default", np.ones(3))
            b.materials.append(Material(f"{base.name}+{texture}", base.color, texture))
            tex_materials[key] = len(b.materials) - 1
        return tex_materials[key]

    def read_object(parent_rot: np.ndarray, parent_loc: np.ndarray, skip: bool) -> None:
        header = _tokens(next_line())
        if header[:1] != ["OBJECT"]:
            raise ValueError(f"load_ac3d(): {path} line {pos}: expected OBJECT, got {header}")
        rot, loc = np.eye(3), np.zeros(3)
        texture: Optional[str] = None
        texrep = np.ones(2)
        texoff = np.zeros(2)
        name = ""
        local = np.zeros((0, 3))
        base = 0
        while True:
            t = _tokens(next_line())
            key = t[0]
            if key == "name":
                name = t[1] if len(t) > 1 else ""
            elif key == "loc":
                loc = np.array([float(x) for x in t[1:4]])
            elif key == "rot":
                rot = np.array([float(x) for x in t[1:10]]).reshape(3, 3)
            elif key == "texture":
                texture = t[1] if len(t) > 1 else None
            elif key == "texrep":
                texrep = np.array([float(x) for x in t[1:3]])
            elif key == "texoff":
                texoff = np.array([float(x) for x in t[1:3]])
            elif key == "numvert":
                n = int(t[1])
                local = np.array([[float(x) for x in next_line().split()[:3]] for _ in range(n)]).reshape(-1, 3)
            elif key == "numsurf":
                world_rot = parent_rot @ rot
                world_loc = parent_rot @ loc + parent_loc
                drop = skip or _excluded(name, exclude)
                if not drop:
                    base = b.add_vertices(local @ world_rot.T + world_loc)
                for _ in range(int(t[1])):
                    surf = _tokens(next_line())
                    kind = int(surf[1], 0) & 0xF
                    mat = 0
                    st = _tokens(next_line())
                    while st[0] != "refs":
                        if st[0] == "mat":
                            mat = int(st[1])
                        st = _tokens(next_line())
                    refs = [next_line().split() for _ in range(int(st[1]))]
                    if drop or kind != 0:
                        continue
                    idx = [base + int(r[0]) for r in refs]
                    uv = np.array([[float(r[1]), float(r[2])] if len(r) >= 3 else [0.0, 0.0] for r in refs])
                    b.add_polygon(idx, uv * texrep + texoff, material_for(mat, texture))
            elif key == "kids":
                world_rot = parent_rot @ rot
                world_loc = parent_rot @ loc + parent_loc
                for _ in range(int(t[1])):
                    read_object(world_rot, world_loc, skip or _excluded(name, exclude))
                return
            # other keys (data, crease, url, subdiv, folded, hidden, locked) are ignored

    while pos < len(lines) and lines[pos].strip():
        read_object(np.eye(3), np.zeros(3), False)
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
    return b.build(path.parent)


# ----------------------------------------------------------------------------------------------
# Wavefront OBJ

def _read_mtl(path: Path) -> Dict[str, Material]:
    out: Dict[str, Material] = {}
    cur: Optional[Material] = None
    for raw in path.read_text(encoding="latin-1").splitlines():
        t = raw.strip().split()
        if not t:
            continue
        if t[0] == "newmtl":
            cur = Material(" ".join(t[1:]), np.full(3, 0.7))
            out[cur.name] = cur
        elif cur is not None and t[0] == "Kd" and len(t) >= 4:
            cur.color = np.clip(np.array([float(x) for x in t[1:4]]), 0, 1)
        elif cur is not None and t[0] == "map_Kd" and len(t) >= 2:
            cur.texture = t[-1]
    return out


def load_obj(path: PathLike, exclude: Sequence[str] = (), extra: Sequence[Tuple[PathLike, np.ndarray]] = (),
             placement: Optional[np.ndarray] = None) -> ModelMesh:
    """Read a Wavefront ``.obj`` (``v``, ``vt``, ``f`` with negative indices, ``usemtl``, ``o`` /
    ``g``, ``mtllib``), its vertices mapped by the (4, 4) ``placement`` (default identity).
    ``extra``: more ``.obj`` files, each placed by its own (4, 4) matrix (e.g. the wheels of a
    vehicle), merged into the result."""
    path = Path(path)
    b = _Builder()
    mat_index: Dict[str, int] = {}
    first = np.eye(4) if placement is None else np.asarray(placement, dtype=np.float64)
    for p, M in [(path, first)] + [(Path(q), np.asarray(m, dtype=np.float64)) for q, m in extra]:
        mtl: Dict[str, Material] = {}
        v_list: List[List[float]] = []
        vt_list: List[List[float]] = []
        polys: List[Tuple[List[int], List[int], int]] = []
        cur_mat, group = -1, ""
        for raw in p.read_text(encoding="latin-1").splitlines():
            t = raw.strip().split()
            if not t or t[0].startswith("#"):
                continue
            if t[0] == "v":
                v_list.append([float(x) for x in t[1:4]])
            elif t[0] == "vt":
                vt_list.append([float(x) for x in t[1:3]] + [0.0] * max(0, 3 - len(t)))
            elif t[0] == "mtllib":
                lib = p.parent / " ".join(t[1:])
                if lib.is_file():
                    mtl.update(_read_mtl(lib))
            elif t[0] == "usemtl":
                name = " ".join(t[1:])
                if name not in mat_index:
                    # A name missing from a one-material library means that material (renamed files).
                    only = next(iter(mtl.values())) if len(mtl) == 1 else Material(name, np.full(3, 0.7))
                    b.materials.append(mtl.get(name, only))
                    mat_index[name] = len(b.materials) - 1
                cur_mat = mat_index[name]
            elif t[0] in ("o", "g"):
                group = " ".join(t[1:])
            elif t[0] == "f":
                if _excluded(group, exclude) or (cur_mat >= 0 and _excluded(b.materials[cur_mat].name, exclude)):
                    continue
                vi, ti = [], []
                for c in t[1:]:
                    parts = c.split("/")
                    k = int(parts[0])
                    vi.append(k - 1 if k > 0 else len(v_list) + k)
                    if len(parts) > 1 and parts[1]:
                        k = int(parts[1])
                        ti.append(k - 1 if k > 0 else len(vt_list) + k)
                polys.append((vi, ti if len(ti) == len(vi) else [], cur_mat))
        verts = np.asarray(v_list, dtype=np.float64).reshape(-1, 3)
        verts = verts @ M[:3, :3].T + M[:3, 3]
        base = b.add_vertices(verts)
        vt = np.asarray(vt_list, dtype=np.float64).reshape(-1, 2)
        if any(m < 0 for _, _, m in polys):
            b.materials.append(Material("default", np.full(3, 0.7)))
            default = len(b.materials) - 1
        for vi, ti, m in polys:
            b.add_polygon([base + i for i in vi], vt[ti] if ti else None, m if m >= 0 else default)
    return b.build(path.parent)


# ----------------------------------------------------------------------------------------------
# 3DS

def _chunks(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    """(id, data start, chunk end) of the chunks in data[start:end]."""
    out = []
    while start + 6 <= end:
        cid, length = struct.unpack_from("<HI", data, start)
        if length < 6 or start + length > end:
            break
        out.append((cid, start + 6, start + length))
        start += length
    return out


def _cstring(data: bytes, start: int) -> Tuple[str, int]:
    stop = data.index(b"\0", start)
    return data[start:stop].decode("latin-1"), stop + 1


def _color_chunk(data: bytes, start: int, end: int) -> Optional[np.ndarray]:
    for cid, s, _ in _chunks(data, start, end):
        if cid in (0x0010, 0x0013):
            return np.array(struct.unpack_from("<3f", data, s))
        if cid in (0x0011, 0x0012):
            return np.array(struct.unpack_from("<3B", data, s), dtype=np.float64) / 255.0
    return None


def load_3ds(path: PathLike, exclude: Sequence[str] = ()) -> ModelMesh:
    """Read an Autodesk ``.3ds`` file: materials (name 0xA000, diffuse 0xA020, texture map
    0xA200 / file 0xA300) and triangle meshes (0x4100: vertices 0x4110, faces 0x4120 with
    material groups 0x4130, uvs 0x4140). Vertices are stored in world space in 3DS, so the
    local matrix (0x4160) is not applied."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 6 or struct.unpack_from("<H", data, 0)[0] != 0x4D4D:
        raise ValueError(f"load_3ds(): {path} is not a 3DS file")
    b = _Builder()
    mat_index: Dict[str, int] = {}
    objects: List[Tuple[str, int, int]] = []
    for cid, s, e in _chunks(data, 6, len(data)):
        if cid != 0x3D3D:
            continue
        for cid2, s2, e2 in _chunks(data, s, e):
            if cid2 == 0xAFFF:
                name, color, tex = "", np.full(3, 0.7), None
                for cid3, s3, e3 in _chunks(data, s2, e2):
                    if cid3 == 0xA000:
                        name = _cstring(data, s3)[0]
                    elif cid3 == 0xA020:
                        c = _color_chunk(data, s3, e3)
                        color = c if c is not None else color
                    elif cid3 == 0xA200:
                        for cid4, s4, _ in _chunks(data, s3, e3):
                            if cid4 == 0xA300:
                                tex = _cstring(data, s4)[0] or None
                b.materials.append(Material(name, np.clip(color, 0, 1), tex))
                mat_index[name] = len(b.materials) - 1
            elif cid2 == 0x4000:
                objects.append((_cstring(data, s2)[0], s2, e2))
    b.materials.append(Material("default", np.full(3, 0.7)))
    default = len(b.materials) - 1
    for name, s, e in objects:
        if _excluded(name, exclude):
            continue
        _, s = _cstring(data, s)
        for cid, s2, e2 in _chunks(data, s, e):
            if cid != 0x4100:
                continue
            verts = np.zeros((0, 3))
            uv = np.zeros((0, 2))
            faces = np.zeros((0, 3), dtype=np.int64)
            fmat: Optional[np.ndarray] = None
            for cid3, s3, e3 in _chunks(data, s2, e2):
                if cid3 == 0x4110:
                    n = struct.unpack_from("<H", data, s3)[0]
                    verts = np.frombuffer(data, "<f4", 3 * n, s3 + 2).reshape(n, 3).astype(np.float64)
                elif cid3 == 0x4140:
                    n = struct.unpack_from("<H", data, s3)[0]
                    uv = np.frombuffer(data, "<f4", 2 * n, s3 + 2).reshape(n, 2).astype(np.float64)
                elif cid3 == 0x4120:
                    n = struct.unpack_from("<H", data, s3)[0]
                    faces = np.frombuffer(data, "<u2", 4 * n, s3 + 2).reshape(n, 4)[:, :3].astype(np.int64)
                    fmat = np.full(n, default, dtype=np.int64)
                    for cid4, s4, _ in _chunks(data, s3 + 2 + 8 * n, e3):
                        if cid4 == 0x4130:
                            mname, p = _cstring(data, s4)
                            k = struct.unpack_from("<H", data, p)[0]
                            sel = np.frombuffer(data, "<u2", k, p + 2).astype(np.int64)
                            m = mat_index.get(mname, default)
                            if _excluded(mname, exclude):
                                m = -1
                            fmat[sel[sel < n]] = m
            if len(faces) == 0:
                continue
            assert fmat is not None
            keep = (fmat >= 0) & (faces < len(verts)).all(axis=1)
            base = b.add_vertices(verts)
            uv_full = uv if len(uv) == len(verts) else np.zeros((len(verts), 2))
            for f, m in zip(faces[keep], fmat[keep]):
                b.add_polygon([base + int(i) for i in f], uv_full[f], int(m))
    return b.build(path.parent)


# ----------------------------------------------------------------------------------------------
# MilkShape 3D ASCII

def load_ms3d_ascii(path: PathLike, exclude: Sequence[str] = ()) -> ModelMesh:
    """Read a MilkShape 3D ASCII file (Scorched3D's ``.txt`` meshes): ``Meshes:`` (name, flags,
    material; vertices ``flags x y z u v bone``; normals; triangles ``flags v1 v2 v3 n1 n2 n3
    group``) and ``Materials:`` (diffuse colour, colour map file)."""
    path = Path(path)
    lines = [ln for ln in path.read_text(encoding="latin-1").splitlines() if ln.strip() and not ln.startswith("//")]
    if not any(ln.startswith("Meshes:") for ln in lines):
        raise ValueError(f"load_ms3d_ascii(): {path} has no 'Meshes:' section")
    b = _Builder()
    pos = next(i for i, ln in enumerate(lines) if ln.startswith("Meshes:"))
    n_meshes = int(lines[pos].split(":")[1])
    pos += 1
    meshes = []
    for _ in range(n_meshes):
        head = _tokens(lines[pos])
        name, mat = head[0], int(head[2])
        pos += 1
        nv = int(lines[pos])
        vv = np.array([[float(x) for x in lines[pos + 1 + i].split()[1:6]] for i in range(nv)]).reshape(-1, 5)
        pos += 1 + nv
        nn = int(lines[pos])
        pos += 1 + nn
        nt = int(lines[pos])
        tri = np.array([[int(x) for x in lines[pos + 1 + i].split()[1:4]] for i in range(nt)], dtype=np.int64)
        pos += 1 + nt
        meshes.append((name, mat, vv, tri.reshape(-1, 3)))
    mats: List[Material] = []
    if pos < len(lines) and lines[pos].startswith("Materials:"):
        n_mats = int(lines[pos].split(":")[1])
        pos += 1
        for _ in range(n_mats):
            name = _tokens(lines[pos])[0]
            diffuse = np.array([float(x) for x in lines[pos + 2].split()[:3]])
            cmap = _tokens(lines[pos + 7])
            tex = cmap[0] if cmap and cmap[0] else None
            mats.append(Material(name, np.clip(diffuse, 0, 1), tex))
            pos += 9
    b.materials.extend(mats)
    b.materials.append(Material("default", np.full(3, 0.7)))
    default = len(b.materials) - 1
    for name, mat, vv, tri in meshes:
        m = mat if 0 <= mat < len(mats) else default
        if _excluded(name, exclude) or (m != default and _excluded(mats[m].name, exclude)) or len(tri) == 0:
            continue
        base = b.add_vertices(vv[:, :3])
        uv = vv[:, 3:5] * np.array([1.0, -1.0]) + np.array([0.0, 1.0])     # MilkShape v runs downwards
        for f in tri:
            b.add_polygon([base + int(i) for i in f], uv[f], m)
    return b.build(path.parent)


def _vec(text: str) -> np.ndarray:
    return np.array([float(x) for x in text.replace(",", " ").split()])


def load_trigger_vehicle(path: PathLike, exclude: Sequence[str] = ()) -> ModelMesh:
    """Read a Trigger Rally ``.vehicle`` file: its body part's ``.obj`` (``model``, placed by
    ``scale`` and ``pos``) and a copy of ``genparams``' ``wheelmodel`` (scaled by ``wheelscale``)
    at every ``wheel``'s ``pos``, scaled by ``wheelscale`` times the wheel's ``radius`` (as the game
    does), all in the vehicle's frame (+Y forward, +Z up)."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    root = ET.parse(path).getroot()
    gen = root.find("genparams")
    part = root.find("part")
    if gen is None or part is None or "model" not in part.attrib:
        raise ValueError(f"load_trigger_vehicle(): {path} has no genparams or body part with a model")
    body = np.eye(4)
    body[:3, :3] *= float(part.get("scale", "1"))
    body[:3, 3] = _vec(part.get("pos", "0 0 0"))
    extra: List[Tuple[PathLike, np.ndarray]] = []
    wheel_model = gen.get("wheelmodel")
    if wheel_model:
        for w in part.findall("wheel"):
            m = np.eye(4)
            m[:3, :3] *= float(gen.get("wheelscale", "1")) * float(w.get("radius", "1"))
            pos = _vec(w.get("pos", "0 0 0"))
            if pos[0] < 0:                                  # the left wheels face outwards too
                m[:3, :3] = m[:3, :3] @ np.diag([-1.0, -1.0, 1.0])
            m[:3, 3] = pos
            extra.append((path.parent / wheel_model, m))
    return load_obj(path.parent / part.attrib["model"], exclude, extra=extra, placement=body)


LOADERS: Dict[str, Callable[..., ModelMesh]] = {
    ".ac": load_ac3d, ".obj": load_obj, ".3ds": load_3ds, ".txt": load_ms3d_ascii, ".vehicle": load_trigger_vehicle,
}
"""File suffix -> reader."""


def load_model(path: PathLike, exclude: Sequence[str] = ()) -> ModelMesh:
    """Read ``path`` with the reader for its suffix (:data:`LOADERS`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in LOADERS:
        raise ValueError(f"load_model(): no reader for {suffix!r} files ({path}); known: {sorted(LOADERS)}")
    return LOADERS[suffix](path, exclude=exclude)


def find_texture(source_dir: Path, name: str) -> Optional[Path]:
    """The file a model's texture name refers to: the name's last path component (``\\`` or
    ``/`` separated), looked up case-insensitively in ``source_dir`` and its parent, also with
    other image suffixes (``.bmp`` / ``.png`` / ``.jpg`` / ``.tga`` / ``.rgb`` / ``.sgi``)."""
    base = re.split(r"[\\/]", name.strip())[-1]
    if not base:
        return None
    stem = base.rsplit(".", 1)[0].lower()
    want = {base.lower()} | {f"{stem}.{s}" for s in ("bmp", "png", "jpg", "jpeg", "tga", "rgb", "sgi")}
    for folder in (source_dir, source_dir.parent, source_dir.parent / "textures"):
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.name.lower() in want:
                return p
    return None
