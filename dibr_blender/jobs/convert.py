"""Pure conversions between Blender's conventions and dibr_core's (no bpy import).

Blender cameras look down their local -Z axis with +Y up, exactly dibr_core's camera frame, so
the view matrix is the inverse of the camera's (unscaled) world matrix and world coordinates
(Z up) pass through unchanged. The projection reproduces Blender's own
``Object.calc_matrix_camera`` (sensor fit, lens shift, clip range, pixel aspect; perspective and
orthographic). Blender images store rows bottom to top; dibr_core's run top to bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class CameraParams:
    """The Blender camera and render settings that define a projection."""

    type: str = "PERSP"            # "PERSP" or "ORTHO" ("PANO" is not supported)
    lens: float = 50.0             # mm
    sensor_width: float = 36.0     # mm
    sensor_height: float = 24.0    # mm
    sensor_fit: str = "AUTO"       # "AUTO", "HORIZONTAL", "VERTICAL"
    shift_x: float = 0.0
    shift_y: float = 0.0
    clip_start: float = 0.1
    clip_end: float = 100.0
    ortho_scale: float = 6.0
    res_x: int = 1920              # pixels, after the resolution percentage
    res_y: int = 1080
    pixel_aspect_x: float = 1.0
    pixel_aspect_y: float = 1.0


def projection_matrix(c: CameraParams) -> np.ndarray:
    """(4, 4) OpenGL-style projection equal to Blender's ``calc_matrix_camera``."""
    if c.type not in ("PERSP", "ORTHO"):
        raise ValueError(f"projection_matrix(): camera type must be PERSP or ORTHO, got {c.type!r}")
    if c.res_x <= 0 or c.res_y <= 0:
        raise ValueError(f"projection_matrix(): resolution must be positive, got {c.res_x}x{c.res_y}")
    if not (0 < c.clip_start < c.clip_end):
        raise ValueError(f"projection_matrix(): need 0 < clip_start < clip_end, got {c.clip_start}, {c.clip_end}")
    ycor = c.pixel_aspect_y / c.pixel_aspect_x
    winx, winy = float(c.res_x), float(c.res_y)
    if c.sensor_fit == "AUTO":
        horizontal = c.pixel_aspect_x * winx >= c.pixel_aspect_y * winy
        sensor = c.sensor_width
    elif c.sensor_fit == "HORIZONTAL":
        horizontal, sensor = True, c.sensor_width
    elif c.sensor_fit == "VERTICAL":
        horizontal, sensor = False, c.sensor_height
    else:
        raise ValueError(f"projection_matrix(): unknown sensor_fit {c.sensor_fit!r}")
    if c.type == "PERSP":
        pixsize = sensor * c.clip_start / c.lens
    else:
        pixsize = c.ortho_scale
    viewfac = winx if horizontal else ycor * winy
    pixsize /= viewfac
    dx = c.shift_x * viewfac
    dy = c.shift_y * viewfac
    xmin, xmax = (-0.5 * winx + dx) * pixsize, (0.5 * winx + dx) * pixsize
    ymin, ymax = (-0.5 * ycor * winy + dy) * pixsize, (0.5 * ycor * winy + dy) * pixsize
    n, f = c.clip_start, c.clip_end
    P = np.zeros((4, 4))
    if c.type == "PERSP":
        P[0, 0] = 2 * n / (xmax - xmin)
        P[1, 1] = 2 * n / (ymax - ymin)
        P[0, 2] = (xmax + xmin) / (xmax - xmin)
        P[1, 2] = (ymax + ymin) / (ymax - ymin)
        P[2, 2] = -(f + n) / (f - n)
        P[2, 3] = -2 * f * n / (f - n)
        P[3, 2] = -1
    else:
        P[0, 0] = 2 / (xmax - xmin)
        P[1, 1] = 2 / (ymax - ymin)
        P[0, 3] = -(xmax + xmin) / (xmax - xmin)
        P[1, 3] = -(ymax + ymin) / (ymax - ymin)
        P[2, 2] = -2 / (f - n)
        P[2, 3] = -(f + n) / (f - n)
        P[3, 3] = 1
    return P


ASPECT_TOLERANCE = 0.01   # relative difference of width/height below which two aspects match


def with_image_aspect(c: CameraParams, width: int, height: int) -> Tuple[CameraParams, bool]:
    """The camera as it would render an image of ``width`` x ``height`` pixels: unchanged when the
    render resolution has the image's aspect (within 1%), else the image's own resolution with
    square pixels, the camera's lens, sensor fit and shift kept (what Blender renders after
    setting the resolution to the image's). Returns (params, whether the aspect was replaced)."""
    if width <= 0 or height <= 0:
        raise ValueError(f"with_image_aspect(): image size must be positive, got {width}x{height}")
    if abs((width / height) / (c.res_x / c.res_y) - 1.0) <= ASPECT_TOLERANCE:
        return c, False
    return replace(c, res_x=int(width), res_y=int(height), pixel_aspect_x=1.0, pixel_aspect_y=1.0), True


def view_matrix(camera_world: np.ndarray) -> np.ndarray:
    """(4, 4) world -> camera from a camera's world matrix (scale removed)."""
    M = np.asarray(camera_world, dtype=np.float64)
    if M.shape != (4, 4):
        raise ValueError(f"view_matrix(): camera_world must have shape (4, 4), got {M.shape}")
    R = M[:3, :3]
    norms = np.linalg.norm(R, axis=0)
    if np.any(norms < 1e-12):
        raise ValueError("view_matrix(): the camera's world matrix has a zero scale")
    U = np.eye(4)
    U[:3, :3] = R / norms
    U[:3, 3] = M[:3, 3]
    return np.linalg.inv(U)


def fit_resolution(res_x: int, res_y: int, max_side: int) -> Tuple[int, int]:
    """(width, height) scaled so the longer side is at most max_side, aspect kept."""
    s = min(1.0, max_side / max(res_x, res_y))
    return max(1, int(round(res_x * s))), max(1, int(round(res_y * s)))


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def flip_rows(img: np.ndarray) -> np.ndarray:
    """Blender pixel order (bottom row first) <-> dibr_core's (top row first)."""
    return np.ascontiguousarray(img[::-1])


def resize_image(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-average (box) resize of an (H, W, C) float image to (height, width, C)."""
    H, W = img.shape[:2]
    if (H, W) == (height, width):
        return img.astype(np.float32, copy=True)
    ys = np.linspace(0, H, height + 1)
    xs = np.linspace(0, W, width + 1)
    # integrate with a summed-area table for exact box filtering
    sat = np.zeros((H + 1, W + 1) + img.shape[2:], dtype=np.float64)
    sat[1:, 1:] = np.cumsum(np.cumsum(img.astype(np.float64), axis=0), axis=1)

    def interp(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        y0 = np.clip(np.floor(y).astype(int), 0, H - 1)
        x0 = np.clip(np.floor(x).astype(int), 0, W - 1)
        fy = (y - y0)[:, None]
        fx = (x - x0)[None, :]
        if img.ndim == 3:
            fy, fx = fy[..., None], fx[..., None]
        a = sat[y0][:, x0]
        b = sat[y0][:, x0 + 1]
        c = sat[y0 + 1][:, x0]
        d = sat[y0 + 1][:, x0 + 1]
        return a + (b - a) * fx + (c - a) * fy + (d - c - b + a) * fx * fy

    S = interp(ys, xs)
    area = np.outer(np.diff(ys), np.diff(xs))
    if img.ndim == 3:
        area = area[..., None]
    out = (S[1:, 1:] - S[:-1, 1:] - S[1:, :-1] + S[:-1, :-1]) / area
    return out.astype(np.float32)


@dataclass(frozen=True)
class LightParams:
    """A Blender light, reduced to what the conversion needs."""

    type: str                       # "SUN", "POINT", "SPOT", "AREA"
    color: Tuple[float, float, float]
    energy: float                   # sun: W/m^2 (irradiance); others: W
    world_matrix: np.ndarray        # (4, 4)


def light_to_directional(light: LightParams, target: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Approximate a Blender light by a directional light at ``target`` (the mesh centre).

    Returns (direction toward the light (3,), RGB radiance scale (3,)) such that a Lambertian
    surface of albedo a lit by it has radiance ``a * scale * max(0, n . direction)``, matching
    Cycles' diffuse shading for a sun (``E / pi``) and, for point, spot and area lights, the
    irradiance of an isotropic point source of power P at the target distance r
    (``P / (4 pi^2 r^2)``; spot cones and area extents are ignored).
    """
    M = np.asarray(light.world_matrix, dtype=np.float64)
    color = np.asarray(light.color, dtype=np.float64)
    if light.type == "SUN":
        d = M[:3, :3] @ np.array([0.0, 0.0, 1.0])
        n = np.linalg.norm(d)
        return d / max(n, 1e-12), color * light.energy / math.pi
    to_light = M[:3, 3] - np.asarray(target, dtype=np.float64)
    r = float(np.linalg.norm(to_light))
    if r < 1e-9:
        raise ValueError("light_to_directional(): the light sits at the mesh centre")
    scale = light.energy / (4 * math.pi * math.pi * r * r)
    return to_light / r, color * scale


def spherical_face_uvs(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3, 2) spherical UVs around the bounding-box centre, seams fixed per face (u may
    exceed 1; sample with repeat)."""
    c = 0.5 * (vertices.min(0) + vertices.max(0))
    p = vertices - c
    r = np.linalg.norm(p, axis=1) + 1e-12
    u = 0.5 + np.arctan2(p[:, 0], -p[:, 1]) / (2 * math.pi)
    v = 0.5 + np.arcsin(np.clip(p[:, 2] / r, -1, 1)) / math.pi
    pole = (np.hypot(p[:, 0], p[:, 1]) < 1e-6 * r)[faces]  # u is undefined at the poles
    fu = u[faces]
    fv = v[faces]
    big = np.where(pole, -np.inf, fu).max(1)
    small = np.where(pole, np.inf, fu).min(1)
    seam = (big - small) > 0.5
    fu = np.where(seam[:, None] & (fu < 0.5), fu + 1.0, fu)
    n_ok = np.maximum((~pole).sum(1), 1)
    mean_u = np.where(pole, 0.0, fu).sum(1) / n_ok
    fu = np.where(pole, mean_u[:, None], fu)
    return np.stack([fu, fv], axis=-1).astype(np.float32)


def corner_to_vertex(values: np.ndarray, corner_vertex: np.ndarray, n_vertices: int) -> np.ndarray:
    """Average per-corner values (N, C) onto vertices (V, C)."""
    out = np.zeros((n_vertices, values.shape[1]), dtype=np.float64)
    cnt = np.zeros(n_vertices, dtype=np.float64)
    np.add.at(out, corner_vertex, values)
    np.add.at(cnt, corner_vertex, 1.0)
    return (out / np.maximum(cnt, 1.0)[:, None]).astype(np.float32)
