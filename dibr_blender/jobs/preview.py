"""Preview images as arrays (no bpy): the DIB-R render beside the reference, and a loss curve;
``dibr_blender.scene.io.write_image`` puts them into image datablocks."""
from __future__ import annotations

from typing import Any, List

import numpy as np

from .records import MeshData, ViewData


def render_view(mesh: MeshData, view: ViewData, colors: Any = None) -> np.ndarray:
    """(H, W, 4) DIB-R render (linear RGB + coverage) of the mesh from the view's camera."""
    import torch

    from dibr_core.camera import Camera
    from dibr_core.render import Meshes, RenderSettings, render

    cam = Camera(torch.from_numpy(view.camera.view).float()[None], torch.from_numpy(view.camera.projection).float()[None],
                 float(view.camera.near), float(view.camera.far))
    cols = colors if colors is not None else mesh.colors
    col_t = torch.from_numpy(np.asarray(cols)).float()[None] if cols is not None else None
    with torch.no_grad():
        out = render(Meshes(torch.from_numpy(mesh.vertices).float()[None], torch.from_numpy(mesh.faces)), cam,
                     colors=col_t, settings=RenderSettings(view.camera.height, view.camera.width))
    # Display with the hard coverage as alpha (the soft halo carries no colour).
    return np.concatenate([out.rgb[0].numpy(), out.mask[0, ..., None].numpy()], axis=-1)


def side_by_side(mesh: MeshData, view: ViewData) -> np.ndarray:
    """(H, 2W, 4): reference | DIB-R render."""
    ref = np.concatenate([view.image, view.mask[..., None]], axis=-1)
    return np.concatenate([ref, render_view(mesh, view)], axis=1).astype(np.float32)


def loss_curve(losses: List[float], width: int = 256, height: int = 128) -> np.ndarray:
    """(H, W, 4) plot of the loss per step (log scale), white on dark grey."""
    img = np.zeros((height, width, 4), dtype=np.float32)
    img[..., :3] = 0.08
    img[..., 3] = 1.0
    if not losses:
        return img
    y = np.log10(np.maximum(np.asarray(losses, dtype=np.float64), 1e-12))
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1e-9)
    xs = np.linspace(0, width - 1, len(y)).astype(int)
    ys = ((hi - y) / span * (height - 9) + 4).astype(int)
    for k in range(len(xs)):
        y0 = ys[k] if k == 0 else min(ys[k], ys[k - 1])
        y1 = ys[k] if k == 0 else max(ys[k], ys[k - 1])
        img[y0:y1 + 1, xs[k], :3] = 1.0
    return img

