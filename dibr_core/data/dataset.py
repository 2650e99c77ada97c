"""NMR/SoftRas-style renders of the procedural shapes, cached as one ``.npz`` per shape.

Protocol (docs/data-and-models.md section 2.1): 64x64 RGBA, 24 azimuths 15 degrees apart,
elevation 30 degrees, camera distance 2.732, 30 degree vertical field of view, one directional
light plus ambient (Lambertian, flat shading so each convex part's faces stay visible), alpha =
the hard coverage mask. View ``k`` has its eye at
``(d cos(e) sin(a_k), d sin(e), d cos(e) cos(a_k))`` with ``a_k = 15 k`` degrees, looking at the
origin with +Y up (view 0 looks from +Z towards -Z).

Seeds: ``seed = split_id * 2**40 + category_id * 2**32 + index`` (train 0, val 1, test 2), so the
splits and categories never share a shape.

Files: ``<out>/<split>/<category>/<index:05d>.npz`` with

* ``images`` (24, 64, 64, 4) uint8 RGBA (RGB 0 where alpha is 0);
* ``views`` (24, 4, 4) float32 world -> camera matrices; ``projection`` (4, 4) float32;
  ``azimuths_deg`` (24,), ``elevation_deg``, ``distance``, ``fov_y_deg``;
* ``occupancy_bits`` ``np.packbits`` of the (32, 32, 32) bool occupancy (C order, [ix, iy, iz]
  over [-0.5, 0.5]^3, see :func:`dibr_core.data.shapes.occupancy`), ``occupancy_res``;
* ``surface_points`` (2048, 3) float16 area samples of the union's surface;
* ``vertices`` (V, 3) float32, ``faces`` (F, 3) int32, ``vertex_colors`` (V, 3) float32;
* ``light_direction`` (3,), ``light_color`` (3,), ``ambient`` (3,) float32;
* ``category_id``, ``category``, ``split``, ``index``, ``seed``, ``normalize``;
* with ``--textured`` only: ``texture`` (Ht, Wt, 3) uint8 atlas and ``face_uvs`` (F, 3, 2) float32;
* ``grammar`` (1 or 2, see :func:`dibr_core.data.grammars.make_shape`) and ``randomized`` (bool);
  randomised items (``--randomize``, :class:`Randomization`, meant for training renders) store
  per-view ``azimuths_deg``, ``elevation_deg``, ``distance``, ``fov_y_deg`` (24,) and
  ``projection`` (24, 4, 4), and their own lighting and part colours.

and ``<out>/<split>/contact_<category>.png``: the first 8 shapes of the category, one view each.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.data.grammars import make_shape
from dibr_core.data.shapes import (CATEGORIES, PATTERNS2, Shape, occupancy, procedural_texture,
                                   shape_mesh, surface_points)
from dibr_core.render import DirectionalLights, Meshes, RenderSettings, render

IMAGE_SIZE = 64
N_VIEWS = 24
AZIMUTH_STEP_DEG = 15.0
ELEVATION_DEG = 30.0
DISTANCE = 2.732
FOV_Y_DEG = 30.0
N_SURFACE_POINTS = 2048
OCCUPANCY_RES = 32
SPLITS: Tuple[str, ...] = ("train", "val", "test")
CONTACT_SHAPES = 8
CONTACT_VIEW = 3


def default_data_dir() -> Path:
    """``$DIBR_DATA`` if set, else ``~/.cache/dibr/data`` (outside git)."""
    env = os.environ.get("DIBR_DATA")
    return Path(env) if env else Path.home() / ".cache" / "dibr" / "data"


def shape_seed(category: str, split: str, index: int) -> int:
    """Deterministic seed; disjoint ranges per (split, category): index must be < 2**32."""
    if split not in SPLITS:
        raise ValueError(f"shape_seed(): split must be one of {SPLITS}, got {split!r}")
    if category not in CATEGORIES:
        raise ValueError(f"shape_seed(): unknown category {category!r}")
    if not 0 <= index < 2 ** 32:
        raise ValueError(f"shape_seed(): index must be in [0, 2**32), got {index}")
    return SPLITS.index(split) * 2 ** 40 + CATEGORIES.index(category) * 2 ** 32 + index


def view_matrices(n_views: int = N_VIEWS, elevation_deg: float = ELEVATION_DEG, distance: float = DISTANCE,
                  azimuth_step_deg: float = AZIMUTH_STEP_DEG) -> Tuple[torch.Tensor, np.ndarray]:
    """(n_views, 4, 4) float32 view matrices and (n_views,) azimuths in degrees."""
    az = np.arange(n_views) * azimuth_step_deg
    a, e = np.radians(az), math.radians(elevation_deg)
    eye = np.stack([distance * math.cos(e) * np.sin(a), np.full_like(a, distance * math.sin(e)),
                    distance * math.cos(e) * np.cos(a)], axis=1)
    return look_at(torch.from_numpy(eye).float()), az


def make_camera(views: torch.Tensor, fov_y_deg: Optional[torch.Tensor] = None) -> Camera:
    """Perspective cameras of the protocol for (B, 4, 4) view matrices; ``fov_y_deg`` (B,)
    gives each camera its own vertical field of view (default: the protocol's 30 degrees)."""
    if fov_y_deg is None:
        return Camera.perspective(views, math.radians(FOV_Y_DEG), 1.0, near=0.1, far=100.0)
    fov = torch.as_tensor(fov_y_deg, dtype=views.dtype, device=views.device).reshape(-1)
    if fov.shape[0] != views.shape[0] or not bool(((fov > 0) & (fov < 180)).all()):
        raise ValueError(f"make_camera(): fov_y_deg must be ({views.shape[0]},) degrees in (0, 180), "
                         f"got shape {tuple(fov.shape)}")
    near, far = 0.1, 100.0
    f = 1.0 / torch.tan(torch.deg2rad(fov) / 2)
    P = torch.zeros(views.shape[0], 4, 4, dtype=views.dtype, device=views.device)
    P[:, 0, 0] = f
    P[:, 1, 1] = f
    P[:, 2, 2] = -(far + near) / (far - near)
    P[:, 2, 3] = -2 * far * near / (far - near)
    P[:, 3, 2] = -1
    return Camera(views, P, near, far)


@dataclass(frozen=True)
class Randomization:
    """Domain randomisation of the training renders (``generate --randomize``); every draw comes
    from the item's own stream ``default_rng([seed, 3])``, so an item is reproducible.

    Camera, per view: elevation uniform in ``elevation_deg``; azimuth ``15 k`` degrees plus a
    uniform jitter of +-``azimuth_jitter_deg``; field of view uniform in ``fov_deg``; the distance
    keeps the object's apparent size at ``zoom`` times the protocol's (uniform), i.e.
    ``d = DISTANCE * tan(15 deg) / tan(fov / 2) / zoom``, so the framing stays within the range
    that :func:`dibr_core.inference.prepare_image` maps inputs to while perspective varies.
    Lighting, per item: light elevation and azimuth (uniform), strength ``light`` and ambient
    ``ambient`` (uniform, grey), a light tint of +-``tint`` per channel.
    Materials, per item: with probability ``p_recolor`` every part gets a random colour (uniform
    RGB), else the grammar's palette colours; each part's brightness is scaled by a factor
    uniform in ``brightness`` (specular-like variation between parts); each part is patterned
    with probability ``p_pattern`` from :data:`dibr_core.data.shapes.PATTERNS2`.
    """

    elevation_deg: Tuple[float, float] = (15.0, 45.0)
    azimuth_jitter_deg: float = 7.5
    fov_deg: Tuple[float, float] = (22.0, 40.0)
    zoom: Tuple[float, float] = (0.85, 1.15)
    light_elevation_deg: Tuple[float, float] = (10.0, 85.0)
    light: Tuple[float, float] = (0.2, 0.9)
    ambient: Tuple[float, float] = (0.2, 0.7)
    tint: float = 0.06
    p_recolor: float = 0.35
    brightness: Tuple[float, float] = (0.7, 1.3)
    p_pattern: float = 0.7


DEFAULT_RANDOMIZATION = Randomization()


def random_views(rng: np.random.Generator, n_views: int = N_VIEWS,
                 r: Randomization = DEFAULT_RANDOMIZATION) -> Dict[str, np.ndarray]:
    """Jittered cameras (see :class:`Randomization`): ``views`` and ``projection`` (n, 4, 4)
    float32, ``azimuths_deg``, ``elevation_deg``, ``distance``, ``fov_y_deg`` (n,) float32."""
    az = np.arange(n_views) * AZIMUTH_STEP_DEG + rng.uniform(-r.azimuth_jitter_deg, r.azimuth_jitter_deg, n_views)
    el = rng.uniform(*r.elevation_deg, n_views)
    fov = rng.uniform(*r.fov_deg, n_views)
    zoom = rng.uniform(*r.zoom, n_views)
    dist = DISTANCE * math.tan(math.radians(FOV_Y_DEG) / 2) / np.tan(np.radians(fov) / 2) / zoom
    a, e = np.radians(az), np.radians(el)
    eye = np.stack([dist * np.cos(e) * np.sin(a), dist * np.sin(e), dist * np.cos(e) * np.cos(a)], axis=1)
    views = look_at(torch.from_numpy(eye).float())
    fov32 = fov.astype(np.float32)
    projection = make_camera(views, torch.from_numpy(fov32)).projection.numpy().astype(np.float32)
    return {"views": views.numpy().astype(np.float32), "projection": projection,
            "azimuths_deg": az.astype(np.float32), "elevation_deg": el.astype(np.float32),
            "distance": dist.astype(np.float32), "fov_y_deg": fov32}


def random_lighting(rng: np.random.Generator,
                    r: Randomization = DEFAULT_RANDOMIZATION) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A randomised light (see :class:`Randomization`): (3,) direction, (3,) tinted colour and
    (3,) grey ambient."""
    direction = light_direction(rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(*r.light_elevation_deg)))
    color = np.clip(rng.uniform(*r.light) + rng.uniform(-r.tint, r.tint, 3), 0.0, 1.0)
    return direction, color, np.full(3, rng.uniform(*r.ambient))


def randomize_materials(shape: Shape, rng: np.random.Generator,
                        r: Randomization = DEFAULT_RANDOMIZATION) -> Shape:
    """The shape with randomised part colours (see :class:`Randomization`); geometry unchanged."""
    recolor = rng.random() < r.p_recolor
    out = []
    for p in shape:
        base = rng.uniform(0.05, 0.95, 3) if recolor else p.color
        out.append(replace(p, color=np.clip(base * rng.uniform(*r.brightness), 0.0, 1.0)))
    return out


def render_views(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, views: torch.Tensor,
                 light_direction: np.ndarray, light_color: np.ndarray, ambient: np.ndarray,
                 size: int = IMAGE_SIZE, texture: Optional[np.ndarray] = None,
                 face_uvs: Optional[np.ndarray] = None, fov_y_deg: Optional[np.ndarray] = None) -> np.ndarray:
    """Render one mesh in B views -> (B, size, size, 4) uint8 RGBA, alpha = hard mask.

    Args:
        vertices: (V, 3); faces: (F, 3) counter-clockwise from outside; colors: (V, 3) in [0, 1];
        views: (B, 4, 4) float32; light_direction: (3,) unit, toward the light; light_color,
        ambient: (3,); texture: optional (Ht, Wt, 3) in [0, 1] (replaces the vertex colours,
        rendered perspective-correct) with face_uvs (F, 3, 2); fov_y_deg: optional (B,) per-view
        fields of view (default the protocol's).
    """
    B = int(views.shape[0])
    v = torch.from_numpy(np.asarray(vertices, dtype=np.float32))[None].expand(B, -1, -1)
    f = torch.from_numpy(np.asarray(faces, dtype=np.int64))
    c = torch.from_numpy(np.asarray(colors, dtype=np.float32))[None].expand(B, -1, -1)
    lights = DirectionalLights(
        directions=torch.from_numpy(np.asarray(light_direction, dtype=np.float32)).view(1, 1, 3).expand(B, 1, 3),
        colors=torch.from_numpy(np.asarray(light_color, dtype=np.float32)).view(1, 1, 3).expand(B, 1, 3),
        ambient=torch.from_numpy(np.asarray(ambient, dtype=np.float32)).view(1, 3).expand(B, 3),
    )
    settings = RenderSettings(height=size, width=size, smooth_normals=False, perspective_correct=texture is not None)
    tex_t = uv_t = None
    if texture is not None:
        if face_uvs is None:
            raise ValueError("render_views(): texture needs face_uvs")
        tex_t = torch.from_numpy(np.asarray(texture, dtype=np.float32)).permute(2, 0, 1)[None].contiguous()
        uv_t = torch.from_numpy(np.asarray(face_uvs, dtype=np.float32))
    with torch.no_grad():
        fov_t = None if fov_y_deg is None else torch.from_numpy(np.asarray(fov_y_deg, dtype=np.float32))
        out = render(Meshes(v.contiguous(), f), make_camera(views, fov_t), colors=c.contiguous(), face_uvs=uv_t,
                     texture=tex_t, lighting=lights, settings=settings)
    rgba = torch.cat([out.rgb * out.mask[..., None], out.mask[..., None]], dim=-1)
    return np.asarray(np.round(rgba.clamp(0, 1).numpy() * 255.0).astype(np.uint8))


def light_direction(azimuth: float, elevation: float) -> np.ndarray:
    """(3,) unit direction towards a light at ``azimuth`` / ``elevation`` (radians; +Y up,
    azimuth 0 along +Z)."""
    return np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation), np.cos(elevation) * np.cos(azimuth)])


def protocol_lighting(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The protocol's light, drawn from ``rng``: (3,) direction (azimuth uniform, elevation
    20–80°), (3,) grey colour and (3,) grey ambient, each 0.4–0.6."""
    az = rng.uniform(0, 2 * np.pi)
    el = rng.uniform(np.radians(20), np.radians(80))
    light_color = np.full(3, rng.uniform(0.4, 0.6))
    ambient = np.full(3, rng.uniform(0.4, 0.6))
    return light_direction(az, el), light_color, ambient


def protocol_cameras(n_views: int) -> Tuple[torch.Tensor, Dict[str, np.ndarray]]:
    """The protocol's ``n_views`` cameras: (n_views, 4, 4) view matrices and the stored camera
    arrays (``views``, ``projection`` (4, 4), ``azimuths_deg``, ``elevation_deg``, ``distance``,
    ``fov_y_deg``)."""
    views, az = view_matrices(n_views)
    return views, {
        "views": views.numpy().astype(np.float32),
        "projection": make_camera(views[:1]).projection[0].numpy().astype(np.float32),
        "azimuths_deg": az.astype(np.float32),
        "elevation_deg": np.array(ELEVATION_DEG, dtype=np.float32),
        "distance": np.array(DISTANCE, dtype=np.float32),
        "fov_y_deg": np.array(FOV_Y_DEG, dtype=np.float32),
    }


def shape_arrays(occ: np.ndarray, points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                 colors: np.ndarray, light_dir: np.ndarray, light_color: np.ndarray,
                 ambient: np.ndarray) -> Dict[str, np.ndarray]:
    """The stored arrays of a shape and its light: packed (R, R, R) occupancy, (P, 3) surface
    points, the (V, 3) / (F, 3) / (V, 3) rendered mesh and the (3,) light."""
    return {
        "occupancy_bits": np.packbits(occ.reshape(-1)),
        "occupancy_res": np.array(OCCUPANCY_RES, dtype=np.int64),
        "surface_points": points.astype(np.float16),
        "vertices": vertices.astype(np.float32),
        "faces": faces.astype(np.int32),
        "vertex_colors": colors.astype(np.float32),
        "light_direction": light_dir.astype(np.float32),
        "light_color": light_color.astype(np.float32),
        "ambient": ambient.astype(np.float32),
    }


def identity_arrays(category: str, split: str, index: int, seed: int, normalize: str) -> Dict[str, np.ndarray]:
    """The stored arrays that say which item this is."""
    return {
        "category_id": np.array(CATEGORIES.index(category), dtype=np.int64),
        "category": np.array(category),
        "split": np.array(split),
        "index": np.array(index, dtype=np.int64),
        "seed": np.array(seed, dtype=np.int64),
        "normalize": np.array(normalize),
    }


def make_item(category: str, split: str, index: int, n_views: int = N_VIEWS,
              size: int = IMAGE_SIZE, normalize: str = "diagonal", textured: bool = False,
              grammar: int = 1, randomize: Optional[Randomization] = None) -> Dict[str, np.ndarray]:
    """Build, voxelise, sample and render one shape; returns the arrays stored in the ``.npz``.

    ``normalize``: ``"diagonal"`` (bbox diagonal 1, ShapeNetCore-v1-like, default) or
    ``"longest"`` (longest side 1; bigger in the frame, may touch the image border).
    ``textured``: render with :func:`dibr_core.data.shapes.procedural_texture` (its own random
    stream, so geometry, lighting and points are the same as untextured) and store
    ``texture`` (Ht, Wt, 3) uint8 and ``face_uvs`` (F, 3, 2) float32.
    ``grammar``: the shape grammar (1, the default, or 2; see :func:`make_shape`).
    ``randomize``: domain randomisation of materials, lighting and cameras (:class:`Randomization`,
    its own random stream); then ``azimuths_deg``, ``elevation_deg``, ``distance`` and
    ``fov_y_deg`` are (n_views,) arrays and ``projection`` is (n_views, 4, 4). Geometry,
    occupancy and surface points do not depend on it.
    """
    seed = shape_seed(category, split, index)
    shape: Shape = make_shape(category, seed, normalize, grammar)
    aux = np.random.default_rng([seed, 1])          # lighting and point sampling, own stream
    v, f, col = shape_mesh(shape)
    occ = occupancy(shape, OCCUPANCY_RES)
    pts = surface_points(shape, N_SURFACE_POINTS, aux)
    light_dir, light_color, ambient = protocol_lighting(aux)
    views, cams = protocol_cameras(n_views)
    fov: Optional[np.ndarray] = None
    patterns = None
    if randomize is not None:
        r = randomize
        dr = np.random.default_rng([seed, 3])
        light_dir, light_color, ambient = random_lighting(dr, r)
        shape = randomize_materials(shape, dr, r)
        col = shape_mesh(shape)[2]
        cams = random_views(dr, n_views, r)
        views = torch.from_numpy(cams["views"])
        fov = cams["fov_y_deg"]
        patterns = (PATTERNS2, r.p_pattern)
    extra: Dict[str, np.ndarray] = {}
    if textured:
        if patterns is None:
            tex, uvs, _ = procedural_texture(shape, np.random.default_rng([seed, 2]))
        else:
            tex, uvs, _ = procedural_texture(shape, np.random.default_rng([seed, 2]), patterns[1], patterns[0])
        tex = np.round(tex * 255.0) / 255.0                 # render exactly what is stored
        extra = {"texture": np.round(tex * 255.0).astype(np.uint8), "face_uvs": uvs.astype(np.float32)}
        images = render_views(v, f, col, views, light_dir, light_color, ambient, size, tex, uvs, fov)
    else:
        images = render_views(v, f, col, views, light_dir, light_color, ambient, size, fov_y_deg=fov)
    return {
        **extra,
        "images": images,
        **cams,
        **shape_arrays(occ, pts, v, f, col, light_dir, light_color, ambient),
        **identity_arrays(category, split, index, seed, normalize),
        "grammar": np.array(grammar, dtype=np.int64),
        "randomized": np.array(randomize is not None),
    }


def load_item(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """Load an ``.npz`` item; adds ``occupancy`` (res, res, res) bool unpacked from the bits."""
    with np.load(path) as z:
        item = {k: z[k] for k in z.files}
    res = int(item["occupancy_res"])
    item["occupancy"] = np.unpackbits(item["occupancy_bits"])[: res ** 3].reshape(res, res, res).astype(bool)
    return item


def item_path(out: Path, split: str, category: str, index: int) -> Path:
    return out / split / category / f"{index:05d}.npz"


def contact_sheet(images: Sequence[np.ndarray], background: float = 1.0) -> np.ndarray:
    """Tile (H, W, 4) uint8 RGBA images in one row over a grey level -> (H, n W, 3) uint8."""
    tiles = []
    for im in images:
        a = im[..., 3:4].astype(np.float32) / 255.0
        rgb = im[..., :3].astype(np.float32) * a + 255.0 * background * (1 - a)
        tiles.append(np.round(rgb).astype(np.uint8))
    return np.concatenate(tiles, axis=1)


def generate(out: Optional[Union[str, Path]] = None, split: str = "train", per_category: int = 10,
             categories: Optional[Sequence[str]] = None, n_views: int = N_VIEWS, size: int = IMAGE_SIZE,
             start_index: int = 0, overwrite: bool = False, progress: bool = True,
             normalize: str = "diagonal", textured: bool = False, grammar: int = 1,
             randomize: Optional[Randomization] = None) -> Dict[str, float]:
    """Generate ``per_category`` shapes of each category into ``out`` (resumable: existing files
    are kept unless ``overwrite``) and a contact sheet per category.

    Returns:
        ``{"shapes": n generated, "seconds": wall time, "seconds_per_shape": ...}``.
    """
    from PIL import Image
    from tqdm import tqdm

    root = Path(out) if out is not None else default_data_dir()
    cats = list(categories) if categories else list(CATEGORIES)
    for c in cats:
        if c not in CATEGORIES:
            raise ValueError(f"generate(): unknown category {c!r}; expected some of {CATEGORIES}")
    jobs = [(c, i) for c in cats for i in range(start_index, start_index + per_category)]
    made = 0
    t0 = time.perf_counter()
    sheets: Dict[str, List[np.ndarray]] = {c: [] for c in cats}
    bar = tqdm(jobs, desc=f"{split}", unit="shape", disable=not progress)
    for c, i in bar:
        path = item_path(root, split, c, i)
        view = min(CONTACT_VIEW, n_views - 1)
        if path.exists() and not overwrite:
            if len(sheets[c]) < CONTACT_SHAPES:
                sheets[c].append(load_item(path)["images"][view])
            continue
        item = make_item(c, split, i, n_views, size, normalize, textured, grammar, randomize)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **item)
        tmp.replace(path)
        made += 1
        if len(sheets[c]) < CONTACT_SHAPES:
            sheets[c].append(item["images"][view])
        bar.set_postfix(s_per_shape=f"{(time.perf_counter() - t0) / made:.3f}")
    for c, ims in sheets.items():
        if ims:
            Image.fromarray(contact_sheet(ims)).save(root / split / f"contact_{c}.png")
    dt = time.perf_counter() - t0
    return {"shapes": float(made), "seconds": dt, "seconds_per_shape": dt / max(made, 1)}
