"""Meshes as Blender data, with no Blender (no bpy import): the arrays a predicted or generated
mesh becomes (:class:`BlenderMesh`, :func:`mesh_arrays`) and the texture helpers both features share.

* vertices rotated from the predictor's canonical frame (+Y up) to Blender's +Z up with
  ``(x, y, z) -> (x, -z, y)`` (a proper rotation, so counter-clockwise-from-outside winding and
  outward normals are kept), the bounding-box centre moved to the origin and scaled so that the
  bounding-box diagonal is ``size`` (metres);
* one polygon of three loops per triangle, in face order, with its per-corner UVs (the OpenGL
  convention of the predictor, v = 0 at the bottom, is Blender's);
* per-vertex colours as linear RGBA for a float colour attribute;
* the texture resized to ``texture_size`` (bilinear with repeat wrapping, as the texture is
  sampled; a box filter when it shrinks), as RGBA pixels bottom row first for an 8-bit sRGB
  image datablock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Tuple

import numpy as np

from . import convert

TEXTURE_SUFFIX = " Texture"   # the texture image of object X is "X Texture"

# The rotation canonical (+Y up) -> Blender (+Z up): (x, y, z) -> (x, -z, y).
AXES = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def canonical_to_blender(v: np.ndarray) -> np.ndarray:
    """(N, 3) canonical (+Y up) -> Blender (+Z up) coordinates, ``(x, y, z) -> (x, -z, y)``."""
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"canonical_to_blender(): expected (N, 3), got {a.shape}")
    return a @ AXES.T


def bbox_diagonal(v: np.ndarray) -> float:
    a = np.asarray(v, dtype=np.float64)
    return float(np.linalg.norm(a.max(0) - a.min(0)))


# --------------------------------------------------------------------------- textures

def resize_texture(texture: np.ndarray, n: int) -> np.ndarray:
    """(T, T, C) -> (n, n, C), rows top to bottom. Enlarging is bilinear with repeat wrapping (the
    way the texture is sampled, so the seam stays seamless); shrinking is a box filter."""
    t = np.asarray(texture, dtype=np.float64)
    if t.ndim != 3 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"resize_texture(): expected (H, W, C), got {t.shape}")
    if n < 1:
        raise ValueError(f"resize_texture(): size must be positive, got {n}")
    H, W = t.shape[:2]
    if (H, W) == (n, n):
        return t.astype(np.float32)
    if n < H or n < W:
        return convert.resize_image(t.astype(np.float32), n, n)

    def axis(size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = (np.arange(n) + 0.5) * size / n - 0.5        # output pixel centres in source texels
        x0 = np.floor(x)
        f = x - x0
        i0 = x0.astype(np.int64) % size
        return i0, (i0 + 1) % size, f

    y0, y1, fy = axis(H)
    x0, x1, fx = axis(W)
    fy = fy[:, None, None]
    fx = fx[None, :, None]
    top = t[y0][:, x0] * (1 - fx) + t[y0][:, x1] * fx
    bottom = t[y1][:, x0] * (1 - fx) + t[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def texture_pixels(texture: np.ndarray, n: int) -> np.ndarray:
    """A texture (T, T, 3) in [0, 1], rows top to bottom, as (n, n, 4) float32 RGBA pixels
    bottom row first (Blender's order), alpha 1."""
    t = resize_texture(texture, n)
    rgba = np.concatenate([np.clip(t[..., :3], 0.0, 1.0), np.ones(t.shape[:2] + (1,), np.float32)], axis=-1)
    return convert.flip_rows(rgba).astype(np.float32)


def pixels_to_texture(pixels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`texture_pixels` at the same size: RGB rows top to bottom."""
    return convert.flip_rows(np.asarray(pixels)[..., :3]).astype(np.float32)


def sample_texture_np(texture: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear lookup with repeat wrapping of a (H, W, C) top-to-bottom texture at (N, 2) OpenGL
    UVs (v = 0 at the bottom row), as ``dibr_core.texture.sample_texture`` does. -> (N, C)."""
    t = np.asarray(texture, dtype=np.float64)
    H, W = t.shape[:2]
    uv = np.asarray(uvs, dtype=np.float64)
    x = uv[:, 0] * W - 0.5
    y = (1.0 - uv[:, 1]) * H - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    ix0, iy0 = x0.astype(np.int64) % W, y0.astype(np.int64) % H
    ix1, iy1 = (ix0 + 1) % W, (iy0 + 1) % H
    return ((t[iy0, ix0] * (1 - fx) + t[iy0, ix1] * fx) * (1 - fy)
            + (t[iy1, ix0] * (1 - fx) + t[iy1, ix1] * fx) * fy)


def vertex_colors_from_texture(texture: np.ndarray, faces: np.ndarray, face_uvs: np.ndarray,
                               n_vertices: int) -> np.ndarray:
    """(V, C): the texture sampled at every corner's UVs, averaged per vertex (the predictor's rule)."""
    corner = sample_texture_np(texture, np.asarray(face_uvs).reshape(-1, 2))
    return convert.corner_to_vertex(corner, np.asarray(faces).reshape(-1), n_vertices)


# --------------------------------------------------------------------------- mesh arrays

@dataclass
class BlenderMesh:
    """A predicted mesh as Blender data.

    Attributes:
        vertices: (V, 3) float32 object-space positions (+Z up, bounding-box centre at the origin,
            diagonal ``size``); faces: (F, 3) int32, counter-clockwise from outside.
        loop_vertices: (3F,) int32 ``Mesh.loops`` ``vertex_index``; loop_start, loop_total: (F,)
            int32 ``Mesh.polygons`` data (one triangle per polygon, loops in face order).
        face_uvs: (F, 3, 2) float32 per-corner UVs; corner_uvs: the same as (3F, 2) per loop.
        colors: (V, 4) float32 linear RGBA for a float colour attribute.
        texture: (n, n, 4) float32 sRGB-encoded RGBA pixels, bottom row first (for an 8-bit sRGB
            image's ``pixels``), or None for a predictor without a texture head.
        native_texture_size: the predictor's texture side (None without a texture).
        scale: canonical -> Blender scale factor (``size`` / the predicted diagonal).
        centre: (3,) the canonical bounding-box centre that was moved to the origin.
    """

    vertices: np.ndarray
    faces: np.ndarray
    loop_vertices: np.ndarray
    loop_start: np.ndarray
    loop_total: np.ndarray
    face_uvs: np.ndarray
    corner_uvs: np.ndarray
    colors: np.ndarray
    texture: Optional[np.ndarray]
    native_texture_size: Optional[int]
    scale: float
    centre: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def colors_rgb(self) -> np.ndarray:
        return self.colors[:, :3]

    @property
    def texture_size(self) -> Optional[int]:
        return None if self.texture is None else int(self.texture.shape[0])


def as_array(x: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def mesh_arrays(predicted: Any, size: float = 1.0, texture_size: int = 0) -> BlenderMesh:
    """Blender-ready arrays from a ``dibr_core.inference.PredictedMesh`` (or anything with its
    ``vertices``, ``faces``, ``colors``, ``face_uvs`` and ``texture``, tensors or arrays).

    Args:
        size: bounding-box diagonal of the result, in scene units (metres).
        texture_size: side of the output texture; 0 keeps the predictor's native size.
    """
    if not (size > 0 and math.isfinite(size)):
        raise ValueError(f"mesh_arrays(): size must be positive, got {size}")
    if texture_size < 0:
        raise ValueError(f"mesh_arrays(): texture_size must be >= 0, got {texture_size}")
    v = as_array(predicted.vertices)
    f = as_array(predicted.faces)
    col = as_array(predicted.colors)
    uv = as_array(predicted.face_uvs)
    tex = None if predicted.texture is None else as_array(predicted.texture)
    v = v.astype(np.float64)
    f = f.astype(np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"mesh_arrays(): bad shapes vertices {v.shape}, faces {f.shape}")
    F = f.shape[0]
    lo, hi = v.min(0), v.max(0)
    centre = 0.5 * (lo + hi)
    diag = float(np.linalg.norm(hi - lo))
    if not diag > 1e-12:
        raise ValueError("mesh_arrays(): the predicted mesh is degenerate (zero size)")
    scale = size / diag
    verts = (canonical_to_blender(v - centre) * scale).astype(np.float32)
    rgb = convert.srgb_to_linear(np.clip(col.astype(np.float64), 0.0, 1.0))
    colors = np.concatenate([rgb, np.ones((rgb.shape[0], 1))], axis=1).astype(np.float32)
    pixels = None
    native = None
    if tex is not None:
        native = int(tex.shape[0])
        pixels = texture_pixels(tex, texture_size or native)
    uv = uv.astype(np.float32).reshape(F, 3, 2)
    return BlenderMesh(
        vertices=verts, faces=f.astype(np.int32), loop_vertices=f.astype(np.int32).reshape(-1),
        loop_start=np.arange(0, 3 * F, 3, dtype=np.int32), loop_total=np.full(F, 3, dtype=np.int32),
        face_uvs=uv, corner_uvs=uv.reshape(-1, 2).copy(), colors=colors, texture=pixels,
        native_texture_size=native, scale=float(scale), centre=centre)


def on_ground(mesh: BlenderMesh) -> BlenderMesh:
    """The mesh moved up so that its lowest point is at z = 0: placed at a location (the 3D
    cursor), it stands on that location's horizontal plane instead of sinking half into it. The
    object origin is then the centre of the bounding box's bottom face."""
    v = np.array(mesh.vertices, dtype=np.float32, copy=True)
    v[:, 2] -= v[:, 2].min()
    return replace(mesh, vertices=v)


def rotate_z(mesh: BlenderMesh, degrees: float) -> BlenderMesh:
    """The mesh turned about the +Z axis through the origin (counter-clockwise seen from above);
    a rotation, so the winding and the height above the ground plane are kept."""
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    R = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    v = (np.asarray(mesh.vertices, dtype=np.float64) @ R.T).astype(np.float32)
    return replace(mesh, vertices=v)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals of counter-clockwise triangles (Blender's rule)."""
    v = np.asarray(vertices, dtype=np.float64)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    n = np.cross(b - a, c - a)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
