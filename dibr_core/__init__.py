"""dibr_core: the DIB-R differentiable renderer for PyTorch, on CPU (C++) and GPU.

Dimension letters used in every docstring:

* B: batch (meshes, cameras, images)      * V: vertices per mesh
* F: faces per mesh                       * H, W: image rows and columns
* D: feature channels per vertex/corner   * C: texture/image channels
* L: lights                               * K: candidates per pixel (soft mask)

Coordinates follow docs/conventions.md: camera looks down -Z with +Y up (as in Blender),
NDC x right and y up in [-1, 1], image row 0 at the top, counter-clockwise front faces.
"""
from dibr_core.backend import BackendInfo, backend_info
from dibr_core.ops import Fragments, interpolate, rasterize, soft_mask

__version__ = "0.1.0"

__all__ = [
    "BackendInfo",
    "Fragments",
    "backend_info",
    "interpolate",
    "rasterize",
    "soft_mask",
]
