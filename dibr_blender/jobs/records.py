"""Plain-array records that cross the boundary between the Blender scene and dibr_core
(no bpy import). Images are (H, W, C) float32, rows top to bottom, linear colour."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np


class SceneError(Exception):
    """Bad input in the scene or the arguments; the message is shown to the user as is."""


@dataclass
class MeshData:
    """The evaluated mesh in world space. vertices (V, 3), faces (F, 3) int64, face_uvs (F, 3, 2)
    or None, colors (V, 3) linear or None, texture (H, W, 3) linear top-to-bottom or None."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    face_uvs: Optional[np.ndarray]
    colors: Optional[np.ndarray]
    texture: Optional[np.ndarray]
    world_matrix: np.ndarray
    same_topology: bool
    sun: Optional[tuple] = None  # (direction (3,), strength (3,), ambient (3,)) from the scene
    loop_uvs: Optional[np.ndarray] = None  # (L, 2) UVs made for a mesh without a UV map (per loop of
                                           # the object's own mesh; written as a UV map with the result)


@dataclass
class CameraData:
    name: str
    view: np.ndarray         # (4, 4)
    projection: np.ndarray   # (4, 4)
    width: int
    height: int
    near: float
    far: float


@dataclass
class ViewData:
    camera: CameraData
    image: np.ndarray        # (H, W, 3) linear, top to bottom
    mask: np.ndarray         # (H, W)
    image_name: str
    note: str = ""           # what was adapted to read this view (shown to the user)


@dataclass
class Snapshot:
    """What a fit may change, to restore it exactly on cancel or error."""

    object_name: str
    had_shape_keys: bool
    key_values: Dict[str, float] = field(default_factory=dict)
    active_shape_key_index: int = 0
    show_only_shape_key: bool = False
