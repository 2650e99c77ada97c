"""Built-in scenes: small procedural meshes, textures and a default camera and lights."""
from __future__ import annotations

import math
from typing import Tuple

import torch

from dibr_core.camera import Camera, look_at
from dibr_core.mesh import icosphere


def checker_texture(size: int = 64, squares: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 3, size, size) two-colour checkerboard with a red band at the top rows."""
    i = torch.arange(size)
    cell = size // squares
    board = ((i[:, None] // cell + i[None, :] // cell) % 2).to(dtype)
    a = torch.tensor([0.95, 0.85, 0.35], dtype=dtype)
    b = torch.tensor([0.15, 0.35, 0.75], dtype=dtype)
    tex = board[..., None] * a + (1 - board[..., None]) * b
    tex[: max(1, size // 16)] = torch.tensor([0.9, 0.1, 0.1], dtype=dtype)
    return tex.permute(2, 0, 1).unsqueeze(0).contiguous()


def blob(level: int = 4, dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A bumpy sphere: (vertices (V, 3), faces (F, 3), face_uvs (F, 3, 2))."""
    v, f, uv = icosphere(level, 1.0, dtype=dtype)
    x, y, z = v.unbind(-1)
    r = 1.0 + 0.12 * torch.sin(3 * x) * torch.cos(2 * y) + 0.08 * torch.sin(4 * z)
    return v * r[:, None], f, uv


def default_camera(aspect: float = 1.0, distance: float = 3.2, elevation_deg: float = 20.0,
                   azimuth_deg: float = 30.0, fov_deg: float = 40.0, dtype: torch.dtype = torch.float32) -> Camera:
    """A perspective camera on a sphere around the origin, +Y up."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    eye = [distance * math.cos(el) * math.sin(az), distance * math.sin(el), distance * math.cos(el) * math.cos(az)]
    return Camera.perspective(look_at(eye, dtype=dtype), math.radians(fov_deg), aspect, 0.1, 100.0)
