"""A real-model evaluation set built from the 3D models of Debian's game data packages.

``python -m dibr_core.data realmodels [--out DIR] [--cache DIR]`` fetches the packages that
:data:`MANIFEST` names (``apt-get download``, into a cache outside git; only when run, never at
import or in tests), reads each listed model (:mod:`dibr_core.data.mesh_formats`), turns it into
the procedural set's canonical frame and category orientation, voxelises it, samples its surface
and renders it with the procedural set's protocol (:mod:`dibr_core.data.dataset`), and writes
``<out>/realmodels/<category>/<index:05d>.npz`` in the layout of a procedural split, so that
``python -m dibr_core.eval predictor --split realmodels`` reads it, plus
``<out>/realmodels/licences.json`` (per model: package, version, file, copyright, licence) and a
contact sheet per category.

Frame (as the procedural shapes): the manifest gives, per model, which of the file's signed axes
points forward (nose, bow, car front) and which points up; :func:`canonical_rotation` maps them to
+X and +Y (+Z = forward x up). The bounding box is then centred at the origin and its diagonal
scaled to 1 (:func:`normalize_to_unit_diagonal`).

Ground truth: occupancy (32^3 over [-0.5, 0.5]^3) is the voxels the surface passes through
(:func:`dibr_core.voxels.mark_surface_voxels`, as the procedural set) plus the voxels not reachable
from outside (:func:`solid_occupancy`: a flood fill of the outside that gaps up to about two
voxels wide do not let in, since game models are rarely closed); the 2,048 surface points are
area samples kept where they lie in a voxel that touches the outside.

Rendering: the models' textures (or material colours) are sampled at the corners of a copy of the
mesh subdivided to edges <= 0.03 (:func:`colour_mesh`), so the 64x64 renders keep most texture
detail with the renderer's vertex colours; every face is rendered from both sides (game models
have single-sided surfaces and mixed winding), and lighting is drawn per model from the
procedural set's distribution.

Packages whose data is reserved for independent evaluation (FlightGear, TORCS, Speed Dreams)
are refused (:func:`dibr_core.data.debian_assets.check_package_allowed`).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dibr_core.data.debian_assets import (check_package_allowed, fetch_package, licence_for, package_version,
                                          parse_copyright)
from dibr_core.data.mesh_formats import ModelMesh, find_texture, load_model
from dibr_core.data.shapes import CATEGORIES

if TYPE_CHECKING:
    from dibr_core.data.dataset import Randomization

__all__ = ["RealModel", "MANIFEST", "SPLIT", "validate_manifest", "canonical_rotation",
           "normalize_to_unit_diagonal", "solid_occupancy", "colour_mesh", "PreparedModel", "prepare_real_model",
           "real_item_arrays", "make_real_item", "build"]

SPLIT = "realmodels"
SUBDIVIDE_EDGE = 0.03


@dataclass(frozen=True)
class RealModel:
    """One manifest entry.

    Attributes:
        name: unique id (file-name safe); package: the Debian package; path: the model file in
            the package's installed tree (``archive.zip!member`` for a file inside a zip);
        category: one of :data:`dibr_core.data.shapes.CATEGORIES`;
        forward, up: the file's signed axes (``"+x"``, ``"-z"``, ...) mapped to +X and +Y: for
            vehicles the front and the top (the procedural airplanes, cars and boats point along
            +X); furniture keeps the procedural grammars' convention (front towards +Z, width
            along X), so there ``forward`` names the file's axis along the width;
        exclude: fnmatch patterns of parts / materials to drop (effects, shadows);
        note: what the model is; credit: the model's author where the package names one per
            model (attribution for CC-BY models);
        copyright_path: the path to look up in the package's copyright file when it differs from
            ``path`` (files packed into an archive that the copyright file names by folder).
    """

    name: str
    package: str
    path: str
    category: str
    forward: str
    up: str
    exclude: Tuple[str, ...] = ()
    note: str = ""
    credit: str = ""
    copyright_path: str = ""


_S3D = "usr/share/games/scorched3d/data/globalmods"
_GL = "usr/share/games/gl-117/models"
_CR = "usr/share/games/crrcsim/objects"
_TR = "usr/share/games/trigger-rally/data.zip!vehicles"
_SH = "usr/share/sweethome3d/furniture"


def _sh3d(name: str, archive: str, folder: str, category: str, note: str, credit: str) -> RealModel:
    """A Sweet Home 3D catalogue model: ``archive.sh3f!<lower-case archive>/<folder>/<folder>.obj``
    (y up, front towards +Z as the procedural furniture), licensed per archive."""
    inner = "katorlegaz" if archive == "KatorLegaz" else archive.lower()
    return RealModel(name, "sweethome3d-furniture", f"{_SH}/{archive}.sh3f!{inner}/{folder}/{folder}.obj", category,
                     "+x", "+y", note=note, credit=credit, copyright_path=f"{archive}/{folder}/{folder}.obj")


_CC0, _CCBY, _KL = "BlendSwap-CC-0", "BlendSwap-CC-BY", "KatorLegaz"

MANIFEST: Tuple[RealModel, ...] = (
    # airplanes
    RealModel("s3d_737", "scorched3d-data", f"{_S3D}/apoc/data/meshes/737ua/737ua.txt", "airplane", "+z", "+y",
              note="Boeing 737 airliner"),
    RealModel("s3d_cessna", "scorched3d-data", f"{_S3D}/apoc/data/meshes/cessna/cessna.txt", "airplane", "+z", "+y",
              note="Cessna high-wing light aircraft"),
    RealModel("s3d_f16", "scorched3d-data", f"{_S3D}/none/data/meshes/f16/f16.txt", "airplane", "+z", "+y",
              exclude=("lighting", "thrust", "flame"), note="F-16 fighter"),
    RealModel("s3d_f18", "scorched3d-data", f"{_S3D}/none/data/meshes/f18/f18.txt", "airplane", "+z", "+y",
              exclude=("lighting", "thrust", "flame*"), note="F/A-18 fighter"),
    RealModel("s3d_t38", "scorched3d-data", f"{_S3D}/none/data/meshes/t38/t38.txt", "airplane", "+z", "+y",
              exclude=("lighting", "thrust", "flame*"), note="T-38 jet trainer"),
    RealModel("gl117_gl14", "gl-117-data", f"{_GL}/gl-14.3ds", "airplane", "-x", "+z", note="fighter"),
    RealModel("gl117_gl16", "gl-117-data", f"{_GL}/gl-16.3ds", "airplane", "-x", "+z", note="fighter"),
    RealModel("gl117_gl29", "gl-117-data", f"{_GL}/gl-29.3ds", "airplane", "-x", "+z", note="fighter"),
    RealModel("gl117_transp1", "gl-117-data", f"{_GL}/transp1.3ds", "airplane", "-x", "+z",
              note="transport aircraft"),
    RealModel("crrc_biplane2", "crrcsim-data", f"{_CR}/biplane2.ac", "airplane", "+z", "+y", note="RC biplane"),
    RealModel("crrc_pilatusb4", "crrcsim-data", f"{_CR}/PilatusB4.ac", "airplane", "+z", "+y",
              note="Pilatus B4 glider"),
    RealModel("crrc_sport", "crrcsim-data", f"{_CR}/sport.ac", "airplane", "+z", "+y", note="RC sport plane"),
    # cars
    RealModel("trigger_fox", "trigger-rally-data", f"{_TR}/fox_wrc/fox_wrc.vehicle", "car", "+y", "+z",
              note="rally car with its four wheels"),
    RealModel("trigger_evo", "trigger-rally-data", f"{_TR}/evo_wrc/evo_wrc.vehicle", "car", "+y", "+z",
              note="rally car with its four wheels"),
    RealModel("trigger_cordo", "trigger-rally-data", f"{_TR}/cordo_wrc/cordo_wrc.vehicle", "car", "+y", "+z",
              note="rally car with its four wheels"),
    RealModel("gl117_pickup1", "gl-117-data", f"{_GL}/pickup1.3ds", "car", "-x", "+z", note="pickup truck"),
    RealModel("gl117_truck1", "gl-117-data", f"{_GL}/truck1.3ds", "car", "-x", "+z", note="truck"),
    RealModel("gl117_truck2", "gl-117-data", f"{_GL}/truck2.3ds", "car", "-x", "+z", note="truck"),
    # watercraft
    RealModel("s3d_carrier", "scorched3d-data", f"{_S3D}/none/data/meshes/carrier/carrier.txt", "watercraft",
              "+z", "+y", note="aircraft carrier"),
    RealModel("s3d_ddg24", "scorched3d-data", f"{_S3D}/none/data/meshes/ddg24/ddg24.txt", "watercraft",
              "+z", "+y", note="destroyer"),
    RealModel("s3d_destroyer", "scorched3d-data", f"{_S3D}/none/data/meshes/destroyer/destroyer.txt",
              "watercraft", "+z", "+y", note="destroyer"),
    RealModel("s3d_fishboat", "scorched3d-data", f"{_S3D}/none/data/meshes/fishboat/fishboat.txt", "watercraft",
              "+z", "+y", note="fishing boat"),
    RealModel("s3d_jollyroger", "scorched3d-data", f"{_S3D}/none/data/meshes/jollyroger/jollyroger.txt",
              "watercraft", "+z", "+y", note="pirate sailing ship"),
    RealModel("s3d_sailboat", "scorched3d-data", f"{_S3D}/none/data/meshes/sailboat/sailboat.txt", "watercraft",
              "+z", "+y", note="sailing boat"),
    RealModel("s3d_sub", "scorched3d-data", f"{_S3D}/none/data/meshes/sub/sub.txt", "watercraft", "+z", "+y",
              note="submarine"),
    RealModel("gl117_ship1", "gl-117-data", f"{_GL}/ship1.3ds", "watercraft", "-x", "+z", note="warship"),
    RealModel("gl117_ship2", "gl-117-data", f"{_GL}/ship2.3ds", "watercraft", "-x", "+z", note="warship"),
    RealModel("sh3d_rowboat", "sweethome3d-furniture", f"{_SH}/BlendSwap-CC-BY.sh3f!blendswap-cc-by/rowboat/rowboat.obj",
              "watercraft", "+z", "+y", note="rowing boat", credit="Asterlil",
              copyright_path="BlendSwap-CC-BY/rowboat/rowboat.obj"),
    # chairs
    _sh3d("sh3d_oak_chair", _CC0, "oakChair", "chair", "oak chair", "Doug C"),
    _sh3d("sh3d_plastic_chair", _CC0, "plasticChair", "chair", "plastic chair", "exL"),
    _sh3d("sh3d_white_chair", _CC0, "sillaBlanca", "chair", "chair", "Jviersalas"),
    _sh3d("sh3d_chair", _CC0, "chair", "chair", "upholstered chair", "JeffJeffer"),
    _sh3d("sh3d_antique_chair", _CC0, "antiqueChair", "chair", "antique chair", "Niuskir"),
    _sh3d("sh3d_thonet_chair", _CC0, "thonet", "chair", "bentwood chair", "JoelEapen"),
    _sh3d("sh3d_kitchen_chair", _CCBY, "kitchenChair", "chair", "kitchen chair", "Cisco336"),
    _sh3d("sh3d_dining_chair", _KL, "dining-chair", "chair", "dining chair", "Kator Legaz"),
    # tables
    _sh3d("sh3d_oak_table", _CC0, "oakTable", "table", "oak table", "Doug C"),
    _sh3d("sh3d_table", _CC0, "table", "table", "dining table", "MZiemys"),
    _sh3d("sh3d_round_table", _CCBY, "cafe_set_mota_table", "table", "round cafe table", "Voodoc"),
    _sh3d("sh3d_coffee_table", _CCBY, "coffeeTable", "table", "coffee table", "Nikitron"),
    _sh3d("sh3d_table2", _CCBY, "table", "table", "table", "Jay-Artist"),
    _sh3d("sh3d_folding_table", _KL, "folding-table", "table", "folding table", "Kator Legaz"),
    _sh3d("sh3d_glass_table", _KL, "glass-dining-table", "table", "glass dining table", "Kator Legaz"),
    # sofas
    _sh3d("sh3d_couch", _CC0, "couch", "sofa", "couch", "TowerCG"),
    _sh3d("sh3d_sofa", _CC0, "sofa2", "sofa", "sofa", "BlendSwap"),
    _sh3d("sh3d_winchester_sofa", _CC0, "winchesterSofa", "sofa", "chesterfield sofa", "Gnanasaireddy"),
    _sh3d("sh3d_sofa2", _CCBY, "sofa2", "sofa", "sofa", "Derte21"),
    _sh3d("sh3d_sofa3", _CCBY, "sofa3", "sofa", "sofa", "3dModeling"),
    _sh3d("sh3d_couch3", _CCBY, "couch3", "sofa", "couch", "MatBot"),
    _sh3d("sh3d_mid_century_sofa", _KL, "mid-century-sofa", "sofa", "mid-century sofa", "Kator Legaz"),
    # lamps
    _sh3d("sh3d_desk_lamp", _CC0, "desklamp", "lamp", "desk lamp", "ColdShiverGames"),
    _sh3d("sh3d_lamp", _CC0, "lamp2", "lamp", "table lamp", "Megeon"),
    _sh3d("sh3d_outdoor_lamp", _CC0, "outdoorLamp", "lamp", "outdoor lamp", "Mindfront"),
    _sh3d("sh3d_lamp2", _CCBY, "lamp", "lamp", "lamp", "Bulgakov"),
    _sh3d("sh3d_camping_lamp", _CCBY, "campingLamp", "lamp", "camping lamp", "Bloknayrb"),
    _sh3d("sh3d_vase_lamp", _KL, "pedestal-vase-lamp", "lamp", "pedestal vase lamp", "Kator Legaz"),
    _sh3d("sh3d_lamppost", _KL, "classic-lamppost", "lamp", "lamppost", "Kator Legaz"),
    # benches
    _sh3d("sh3d_bench", _CC0, "bench", "bench", "park bench", "Ulanbek"),
    _sh3d("sh3d_piano_bench", _CC0, "pianoBench", "bench", "piano bench", "Simonrepp"),
    _sh3d("sh3d_concrete_bench", _KL, "concrete-bench", "bench", "concrete bench", "Kator Legaz"),
    _sh3d("sh3d_painted_bench", _KL, "painted-bench", "bench", "painted bench", "Kator Legaz"),
    _sh3d("sh3d_bench2", _KL, "bench", "bench", "bench", "Kator Legaz"),
)
"""The models of the set, by category (airplane, car, watercraft, chair, table, sofa, lamp, bench)."""


def validate_manifest(manifest: Sequence[RealModel]) -> None:
    """Raise ValueError for a reserved package, an unknown category, a bad axis or a repeated name."""
    seen = set()
    for m in manifest:
        check_package_allowed(m.package)
        if m.category not in CATEGORIES:
            raise ValueError(f"validate_manifest(): {m.name}: unknown category {m.category!r}")
        canonical_rotation(m.forward, m.up)
        if m.name in seen:
            raise ValueError(f"validate_manifest(): model name {m.name!r} appears twice")
        seen.add(m.name)


def _axis(spec: str) -> np.ndarray:
    s = spec.strip().lower()
    if len(s) != 2 or s[0] not in "+-" or s[1] not in "xyz":
        raise ValueError(f"canonical_rotation(): an axis is '+x', '-y', ..., got {spec!r}")
    v = np.zeros(3)
    v["xyz".index(s[1])] = 1.0 if s[0] == "+" else -1.0
    return v


def canonical_rotation(forward: str, up: str) -> np.ndarray:
    """(3, 3) rotation R with ``R @ forward = +X``, ``R @ up = +Y`` (det +1)."""
    f, u = _axis(forward), _axis(up)
    if abs(float(f @ u)) > 0.5:
        raise ValueError(f"canonical_rotation(): forward {forward!r} and up {up!r} must be different axes")
    return np.stack([f, u, np.cross(f, u)])


def normalize_to_unit_diagonal(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray]:
    """Centre the bounding box of the used vertices at 0 and scale its diagonal to 1.

    Returns (V, 3) new vertices, the scale and the (3,) shift (``new = scale * v + shift``)."""
    used = vertices[np.unique(faces)] if len(faces) else vertices
    lo, hi = used.min(axis=0), used.max(axis=0)
    diag = float(np.linalg.norm(hi - lo))
    if diag <= 0:
        raise ValueError("normalize_to_unit_diagonal(): the mesh has no extent")
    s = 1.0 / diag
    shift = -(lo + hi) / 2 * s
    return vertices * s + shift, s, shift


def _dilate(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    for ax in range(a.ndim):
        out[(slice(None),) * ax + (slice(1, None),)] |= a[(slice(None),) * ax + (slice(None, -1),)]
        out[(slice(None),) * ax + (slice(None, -1),)] |= a[(slice(None),) * ax + (slice(1, None),)]
    return out


def solid_occupancy(surface: np.ndarray, gap: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Fill a (R, R, R) surface-voxel grid: the voxels that the outside cannot reach.

    The outside is flood-filled (6-connected) from the grid's border through voxels farther than
    ``gap`` voxels from the surface (so holes up to about ``2 gap`` voxels wide do not leak), then
    grown back by ``gap`` voxels, stopping at the surface.

    Returns (occupancy, outside) (R, R, R) bool grids.
    """
    pad = gap + 1
    surf = np.pad(np.asarray(surface, dtype=bool), pad)
    blocked = surf
    for _ in range(gap):
        blocked = _dilate(blocked)
    outside = np.zeros_like(surf)
    outside[0], outside[-1], outside[:, 0], outside[:, -1], outside[:, :, 0], outside[:, :, -1] = (True,) * 6
    outside &= ~blocked
    while True:
        grown = _dilate(outside) & ~blocked
        if np.array_equal(grown, outside):
            break
        outside = grown
    for _ in range(gap):
        outside = _dilate(outside) & ~surf
    core = (slice(pad, -pad),) * 3
    return ~outside[core], outside[core]


def _soup(mesh: ModelMesh, vertices: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(F, 3, 3) corner positions, (F, 3, 2) uvs, (F,) materials."""
    return vertices[mesh.faces], mesh.uvs.copy(), mesh.face_material.copy()


def subdivide(tri: np.ndarray, uvs: np.ndarray, mats: np.ndarray, max_edge: float,
              max_levels: int = 5) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split triangles with an edge longer than ``max_edge`` into 4 (midpoints), repeatedly.

    Args: tri (F, 3, 3), uvs (F, 3, 2), mats (F,). Returns the same for the subdivided soup.
    """
    for _ in range(max_levels):
        e = np.linalg.norm(tri - np.roll(tri, -1, axis=1), axis=2).max(axis=1)
        big = e > max_edge
        if not big.any():
            break
        t, u = tri[big], uvs[big]
        mt, mu = (t + np.roll(t, -1, axis=1)) / 2, (u + np.roll(u, -1, axis=1)) / 2    # m0 = mid(0,1), ...
        new_t = [np.stack([t[:, 0], mt[:, 0], mt[:, 2]], 1), np.stack([mt[:, 0], t[:, 1], mt[:, 1]], 1),
                 np.stack([mt[:, 2], mt[:, 1], t[:, 2]], 1), np.stack([mt[:, 0], mt[:, 1], mt[:, 2]], 1)]
        new_u = [np.stack([u[:, 0], mu[:, 0], mu[:, 2]], 1), np.stack([mu[:, 0], u[:, 1], mu[:, 1]], 1),
                 np.stack([mu[:, 2], mu[:, 1], u[:, 2]], 1), np.stack([mu[:, 0], mu[:, 1], mu[:, 2]], 1)]
        tri = np.concatenate([tri[~big]] + new_t)
        uvs = np.concatenate([uvs[~big]] + new_u)
        mats = np.concatenate([mats[~big]] + [mats[big]] * 4)
    return tri, uvs, mats


def _load_texture(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


def colour_mesh(mesh: ModelMesh, vertices: np.ndarray, max_edge: float = SUBDIVIDE_EDGE
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A coloured triangle soup of ``mesh`` (with ``vertices`` in the final frame) for rendering.

    Faces are subdivided to edges <= ``max_edge``; each corner takes its material's texture at
    its uv (nearest texel, repeat wrap, v up) or the material's diffuse colour.

    Returns vertices (3 F', 3), faces (F', 3) int64 (unshared corners), colours (3 F', 3) in [0, 1].
    """
    tri, uvs, mats = subdivide(*_soup(mesh, vertices), max_edge=max_edge)
    cols = np.zeros(tri.shape)
    for k, mat in enumerate(mesh.materials):
        sel = mats == k
        if not sel.any():
            continue
        tex_path = find_texture(mesh.source_dir, mat.texture) if mat.texture else None
        if tex_path is None:
            cols[sel] = mat.color
            continue
        tex = _load_texture(tex_path)
        H, W = tex.shape[:2]
        u = uvs[sel][..., 0]
        v = uvs[sel][..., 1]
        x = np.floor(np.mod(u, 1.0) * W).astype(np.int64).clip(0, W - 1)
        y = np.floor(np.mod(1.0 - v, 1.0) * H).astype(np.int64).clip(0, H - 1)
        cols[sel] = tex[y, x]
    F = tri.shape[0]
    return tri.reshape(-1, 3), np.arange(3 * F, dtype=np.int64).reshape(F, 3), cols.reshape(-1, 3)


def surface_samples(vertices: np.ndarray, faces: np.ndarray, keep: np.ndarray, n: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n, 3) area samples of the mesh, preferring those in voxels where ``keep`` (R, R, R) is True."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    p = area / area.sum()
    R = keep.shape[0]
    picked: List[np.ndarray] = []
    others: List[np.ndarray] = []
    for _ in range(20):
        f = rng.choice(len(faces), size=4 * n, p=p)
        r1, r2 = rng.random(4 * n), rng.random(4 * n)
        s = np.sqrt(r1)
        pts = a[f] * (1 - s)[:, None] + b[f] * (s * (1 - r2))[:, None] + c[f] * (s * r2)[:, None]
        idx = np.clip(np.floor((pts + 0.5) * R).astype(np.int64), 0, R - 1)
        ok = keep[idx[:, 0], idx[:, 1], idx[:, 2]]
        picked.append(pts[ok])
        others.append(pts[~ok])
        if sum(len(x) for x in picked) >= n:
            break
    out = np.concatenate(picked + others)
    return out[:n]


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class PreparedModel:
    """A real model in the data set's frame, ready to render (:func:`prepare_real_model`):
    (V, 3) unit-diagonal vertices and (F, 3) faces, the occupancy grid and surface samples, the
    coloured subdivided copy ((Vc, 3), (Fc, 3), (Vc, 3) colours), the protocol light drawn for
    the model, and its seed."""

    vertices: np.ndarray
    faces: np.ndarray
    occupancy: np.ndarray
    points: np.ndarray
    color_vertices: np.ndarray
    color_faces: np.ndarray
    colors: np.ndarray
    light: Tuple[np.ndarray, np.ndarray, np.ndarray]
    seed: int


def prepare_real_model(model: RealModel, mesh: ModelMesh, max_edge: float = SUBDIVIDE_EDGE) -> PreparedModel:
    """Frame, voxelise, sample and colour one model (see the module doc); ``max_edge``: the
    colour copy's longest edge (:func:`colour_mesh`)."""
    from dibr_core.data.dataset import N_SURFACE_POINTS, OCCUPANCY_RES, protocol_lighting
    from dibr_core.voxels import mark_surface_voxels

    if len(mesh.faces) == 0:
        raise ValueError(f"prepare_real_model(): {model.name} has no faces")
    R = canonical_rotation(model.forward, model.up)
    v, _, _ = normalize_to_unit_diagonal(mesh.vertices @ R.T, mesh.faces)
    surf = mark_surface_voxels(v, mesh.faces, OCCUPANCY_RES)
    occ, outside = solid_occupancy(surf)
    boundary = occ & _dilate(outside)
    seed = _seed(model.name)
    aux = np.random.default_rng([seed, 1])
    pts = surface_samples(v, mesh.faces, boundary, N_SURFACE_POINTS, aux)
    light = protocol_lighting(aux)
    cv, cf, cc = colour_mesh(mesh, v, max_edge)
    return PreparedModel(v, mesh.faces, occ, pts, cv, cf, cc, light, seed)


def real_item_arrays(model: RealModel, prepared: PreparedModel, split: str, index: int, licence: Dict[str, str],
                     variant: int = 0, randomize: Optional["Randomization"] = None) -> Dict[str, np.ndarray]:
    """The ``.npz`` arrays of one render set of a prepared model: the protocol's cameras and the
    model's protocol light, or, with ``randomize``, the training renders' randomisation drawn
    from the stream ``default_rng([seed, 3, variant])`` (cameras and lighting as
    :func:`dibr_core.data.dataset.make_item`; the model's colours scaled by a brightness draw
    and tinted per channel)."""
    import torch

    from dibr_core.data.dataset import (N_VIEWS, identity_arrays, protocol_cameras, random_lighting, random_views,
                                        render_views, shape_arrays)

    p = prepared
    light_dir, light_color, ambient = p.light
    views, cams = protocol_cameras(N_VIEWS)
    colors, fov = p.colors, None
    if randomize is not None:
        r = randomize
        dr = np.random.default_rng([p.seed, 3, variant])
        light_dir, light_color, ambient = random_lighting(dr, r)
        colors = np.clip(p.colors * dr.uniform(*r.brightness) * (1.0 + dr.uniform(-0.15, 0.15, 3)), 0.0, 1.0)
        cams = random_views(dr, N_VIEWS, r)
        views = torch.from_numpy(cams["views"])
        fov = cams["fov_y_deg"]
    both = np.concatenate([p.color_faces, p.color_faces[:, ::-1]])   # both sides: game meshes are single-sided
    images = render_views(p.color_vertices, both, colors, views, light_dir, light_color, ambient, fov_y_deg=fov)
    return {
        "images": images,
        **cams,
        **shape_arrays(p.occupancy, p.points, p.color_vertices, p.color_faces, colors, light_dir, light_color,
                       ambient),
        **identity_arrays(model.category, split, index, p.seed % 2 ** 63, "diagonal"),
        "randomized": np.array(randomize is not None),
        "model_name": np.array(model.name),
        "package": np.array(model.package),
        "package_version": np.array(licence.get("version", "")),
        "source_file": np.array(model.path),
        "licence": np.array(licence["licence"]),
        "copyright": np.array(licence["copyright"]),
    }


def make_real_item(model: RealModel, mesh: ModelMesh, index: int, licence: Dict[str, str]) -> Dict[str, np.ndarray]:
    """The ``.npz`` arrays of one model of the evaluation set (the procedural item's keys, see
    :mod:`dibr_core.data.dataset`, plus ``model_name``, ``package``, ``source_file``, ``licence``,
    ``copyright``, ``package_version``), rendered with the protocol."""
    return real_item_arrays(model, prepare_real_model(model, mesh), SPLIT, index, licence)


def _model_file(tree: Path, model: RealModel) -> Path:
    """The model file on disk, extracting the members of ``archive.zip!folder/...`` next to the archive."""
    if "!" not in model.path:
        return tree / model.path
    import zipfile

    archive, member = model.path.split("!", 1)
    folder = member.rsplit("/", 1)[0] + "/"
    out = tree / (archive + ".d")
    target = out / member
    if not target.is_file():
        with zipfile.ZipFile(tree / archive) as z:
            for name in z.namelist():
                if name.startswith(folder) and not name.endswith("/"):
                    z.extract(name, out)
    return target


def build(out: Optional[Union[str, Path]] = None, cache: Optional[Union[str, Path]] = None,
          manifest: Sequence[RealModel] = MANIFEST, names: Optional[Sequence[str]] = None,
          progress: bool = True) -> Dict[str, Any]:
    """Fetch, convert and render the manifest's models into ``out/realmodels`` (see the module doc).

    Returns ``{"models": n, "seconds": wall time, "download_bytes": size of the .deb files used,
    "per_category": {category: n}}``.
    """
    from PIL import Image

    from dibr_core.data.dataset import contact_sheet, default_data_dir

    validate_manifest(manifest)
    chosen = [m for m in manifest if names is None or m.name in names]
    root = (Path(out) if out is not None else default_data_dir()) / SPLIT
    t0 = time.perf_counter()
    if names is None and root.is_dir():                  # a full rebuild leaves no stale items
        for old in root.glob("*/*.npz"):
            old.unlink()
    trees: Dict[str, Tuple[Path, Path]] = {}
    licences: Dict[str, Dict[str, str]] = {}
    counts: Dict[str, int] = {}
    sheets: Dict[str, List[np.ndarray]] = {}
    for m in chosen:
        if m.package not in trees:
            trees[m.package] = fetch_package(m.package, cache)
        deb, tree = trees[m.package]
        stanzas = parse_copyright((tree / "usr/share/doc" / m.package / "copyright").read_text(encoding="utf-8"))
        st = licence_for(stanzas, m.copyright_path or m.path.replace("!", "/"))
        lic = {"package": m.package, "version": package_version(deb), "file": m.path, "licence": st.licence,
               "copyright": st.copyright, "category": m.category, "note": m.note, "credit": m.credit}
        mesh = load_model(_model_file(tree, m), exclude=m.exclude)
        index = counts.get(m.category, 0)
        item = make_real_item(m, mesh, index, lic)
        path = root / m.category / f"{index:05d}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **item)
        counts[m.category] = index + 1
        licences[m.name] = {**lic, "item": f"{SPLIT}/{m.category}/{index:05d}.npz"}
        sheets.setdefault(m.category, []).append(item["images"][3])
        if progress:
            print(f"{m.name}: {len(mesh.faces)} faces, occupancy {int(np.unpackbits(item['occupancy_bits']).sum())} "
                  f"voxels, {lic['licence']}", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "licences.json").write_text(json.dumps(licences, indent=2, sort_keys=True) + "\n")
    for cat, ims in sheets.items():
        Image.fromarray(contact_sheet(ims)).save(root / f"contact_{cat}.png")
    size = sum(deb.stat().st_size for deb, _ in trees.values())
    return {"models": len(chosen), "seconds": time.perf_counter() - t0, "download_bytes": size,
            "per_category": counts}
