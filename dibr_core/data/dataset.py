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
* with ``--textured`` only: ``texture`` (Ht, Wt, 3) uint8 atlas and ``face_uvs`` (F, 3, 2) float32.

and ``<out>/<split>/contact_<category>.png``: the first 8 shapes of the category, one view each.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dibr_core.camera import Camera, look_at
from dibr_core.data.shapes import (CATEGORIES, Shape, make_shape, occupancy, procedural_texture, shape_mesh,
                                   surface_points)
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


def make_camera(views: torch.Tensor) -> Camera:
    """Perspective cameras of the protocol for (B, 4, 4) view matrices."""
    return Camera.perspective(views, math.radians(FOV_Y_DEG), 1.0, near=0.1, far=100.0)


def render_views(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, views: torch.Tensor,
                 light_direction: np.ndarray, light_color: np.ndarray, ambient: np.ndarray,
                 size: int = IMAGE_SIZE, texture: Optional[np.ndarray] = None,
                 face_uvs: Optional[np.ndarray] = None) -> np.ndarray:
    """Render one mesh in B views -> (B, size, size, 4) uint8 RGBA, alpha = hard mask.

    Args:
        vertices: (V, 3); faces: (F, 3) counter-clockwise from outside; colors: (V, 3) in [0, 1];
        views: (B, 4, 4) float32; light_direction: (3,) unit, toward the light; light_color,
        ambient: (3,); texture: optional (Ht, Wt, 3) in [0, 1] (replaces the vertex colours,
        rendered perspective-correct) with face_uvs (F, 3, 2).
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
        out = render(Meshes(v.contiguous(), f), make_camera(views), colors=c.contiguous(), face_uvs=uv_t,
                     texture=tex_t, lighting=lights, settings=settings)
    rgba = torch.cat([out.rgb * out.mask[..., None], out.mask[..., None]], dim=-1)
    return np.asarray(np.round(rgba.clamp(0, 1).numpy() * 255.0).astype(np.uint8))


def make_item(category: str, split: str, index: int, n_views: int = N_VIEWS,
              size: int = IMAGE_SIZE, normalize: str = "diagonal", textured: bool = False) -> Dict[str, np.ndarray]:
    """Build, voxelise, sample and render one shape; returns the arrays stored in the ``.npz``.

    ``normalize``: ``"diagonal"`` (bbox diagonal 1, ShapeNetCore-v1-like, default) or
    ``"longest"`` (longest side 1; bigger in the frame, may touch the image border).
    ``textured``: render with :func:`dibr_core.data.shapes.procedural_texture` (its own random
    stream, so geometry, lighting and points are the same as untextured) and store
    ``texture`` (Ht, Wt, 3) uint8 and ``face_uvs`` (F, 3, 2) float32.
    """
    seed = shape_seed(category, split, index)
    shape: Shape = make_shape(category, seed, normalize)
    aux = np.random.default_rng([seed, 1])          # lighting and point sampling, own stream
    v, f, col = shape_mesh(shape)
    occ = occupancy(shape, OCCUPANCY_RES)
    pts = surface_points(shape, N_SURFACE_POINTS, aux)
    az_light = aux.uniform(0, 2 * np.pi)
    el_light = aux.uniform(np.radians(20), np.radians(80))
    light_dir = np.array([np.cos(el_light) * np.sin(az_light), np.sin(el_light), np.cos(el_light) * np.cos(az_light)])
    light_color = np.full(3, aux.uniform(0.4, 0.6))
    ambient = np.full(3, aux.uniform(0.4, 0.6))
    views, az = view_matrices(n_views)
    extra: Dict[str, np.ndarray] = {}
    if textured:
        tex, uvs, _ = procedural_texture(shape, np.random.default_rng([seed, 2]))
        tex = np.round(tex * 255.0) / 255.0                 # render exactly what is stored
        extra = {"texture": np.round(tex * 255.0).astype(np.uint8), "face_uvs": uvs.astype(np.float32)}
        images = render_views(v, f, col, views, light_dir, light_color, ambient, size, tex, uvs)
    else:
        images = render_views(v, f, col, views, light_dir, light_color, ambient, size)
    return {
        **extra,
        "images": images,
        "views": views.numpy().astype(np.float32),
        "projection": make_camera(views[:1]).projection[0].numpy().astype(np.float32),
        "azimuths_deg": az.astype(np.float32),
        "elevation_deg": np.array(ELEVATION_DEG, dtype=np.float32),
        "distance": np.array(DISTANCE, dtype=np.float32),
        "fov_y_deg": np.array(FOV_Y_DEG, dtype=np.float32),
        "occupancy_bits": np.packbits(occ.reshape(-1)),
        "occupancy_res": np.array(OCCUPANCY_RES, dtype=np.int64),
        "surface_points": pts.astype(np.float16),
        "vertices": v.astype(np.float32),
        "faces": f.astype(np.int32),
        "vertex_colors": col.astype(np.float32),
        "light_direction": light_dir.astype(np.float32),
        "light_color": light_color.astype(np.float32),
        "ambient": ambient.astype(np.float32),
        "category_id": np.array(CATEGORIES.index(category), dtype=np.int64),
        "category": np.array(category),
        "split": np.array(split),
        "index": np.array(index, dtype=np.int64),
        "seed": np.array(seed, dtype=np.int64),
        "normalize": np.array(normalize),
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
             normalize: str = "diagonal", textured: bool = False) -> Dict[str, float]:
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
        item = make_item(c, split, i, n_views, size, normalize, textured)
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
