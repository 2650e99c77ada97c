"""The fit as a job on plain arrays (no bpy): scene records in, fitted arrays out. It imports
torch and dibr_core only when run, so the extension registers without them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from .records import MeshData, SceneError, ViewData


@dataclass(frozen=True)
class FitSettings:
    """User-facing fit options (the panel's and the batch CLI's)."""

    steps: int = 300
    max_side: int = 256
    optimize_vertices: bool = True
    optimize_colors: bool = True
    optimize_texture: bool = False
    optimize_lighting: bool = False
    lighting: str = "auto"          # "auto" (see resolve_lighting), "none", "sun", "sh"
    texture_size: int = 256
    smoothness: float = 5.0         # Laplacian weight
    backend: str = "auto"


@dataclass
class FitOutput:
    vertices: np.ndarray            # (V, 3) world space
    colors: Optional[np.ndarray]    # (V, 3) linear
    texture: Optional[np.ndarray]   # (Ht, Wt, 3) linear, top to bottom
    face_uvs: Optional[np.ndarray]  # (F, 3, 2) used for the texture
    losses: List[float]
    steps: int
    seconds: float
    cancelled: bool
    views: List[dict]               # {"camera", "image", "silhouette_iou", "color_l1"[, "note"]}

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def _where(mesh: MeshData, view: ViewData, covered: int) -> str:
    """Why the mesh misses the silhouette in ``view``: behind the camera, outside its frame, too
    small, or in view but beside the silhouette."""
    v = np.concatenate([mesh.vertices, np.ones((len(mesh.vertices), 1))], axis=1)
    cam = v @ view.camera.view.T
    if bool((cam[:, 2] >= 0).all()):
        return "it is behind the camera"
    clip = cam @ view.camera.projection.T
    w = clip[:, 3:4]
    front = w[:, 0] > 1e-9
    ndc = clip[front, :2] / w[front]
    if len(ndc) and any(bool(side.all()) for side in (ndc[:, 0] > 1, ndc[:, 0] < -1, ndc[:, 1] > 1, ndc[:, 1] < -1)):
        return "it is outside the camera's frame"
    if covered == 0:
        return "it covers no pixel of the image (too small or too far)"
    return "it is in view but beside the object's silhouette"


def check_start_overlap(mesh: MeshData, views: List[ViewData]) -> List[float]:
    """The start mesh's silhouette IoU with each reference; raises SceneError naming the view when
    the mesh does not overlap the silhouette at all there (the fit could not recover: it would run
    every step to an IoU of 0)."""
    from .preview import render_view

    ious = []
    for v in views:
        cover = render_view(mesh, v, colors=np.zeros((len(mesh.vertices), 3)))[..., 3] > 0.5
        target = v.mask > 0.5
        inter = int((cover & target).sum())
        if inter == 0:
            raise SceneError(
                f"mesh '{mesh.name}' does not overlap the silhouette of {v.image_name} in camera '{v.camera.name}' "
                f"at the start: {_where(mesh, v, int(cover.sum()))}; move or scale the mesh (or the camera) so that "
                "it covers part of the object in the reference, then fit again")
        ious.append(inter / float((cover | target).sum()))
    return ious


def resolve_lighting(settings: FitSettings, mesh: MeshData) -> str:
    """The lighting model of a fit: "auto" is "sun" with the scene's own lights (so the fitted
    colours are albedo, and Blender, shading them under the same lights, shows the reference),
    and "none" (colours as seen, shading baked in) when the scene has no light."""
    if settings.lighting != "auto":
        return settings.lighting
    return "sun" if mesh.sun is not None else "none"


def run_fit(mesh: MeshData, views: List[ViewData], settings: FitSettings,
            progress: Optional[Callable[[int, int, float], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None,
            preview: Optional[Callable[[np.ndarray], None]] = None) -> FitOutput:
    """Run dibr_core's fit on scene arrays; raises SceneError on unusable input."""
    try:
        import torch

        from dibr_core.camera import Camera
        from dibr_core.fit import FitOptions, FitView, fit
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SceneError(f"torch/dibr_core cannot be imported ({exc}); see the add-on preferences") from None
    from . import convert

    if not views:
        raise SceneError("no views: give at least one camera with a reference image")
    check_start_overlap(mesh, views)
    face_uvs = mesh.face_uvs
    if settings.optimize_texture and face_uvs is None:
        face_uvs = convert.spherical_face_uvs(mesh.vertices, mesh.faces)
    fviews = []
    for v in views:
        cam = Camera(torch.from_numpy(v.camera.view).float()[None], torch.from_numpy(v.camera.projection).float()[None],
                     float(v.camera.near), float(v.camera.far))
        fviews.append(FitView(cam, torch.from_numpy(v.image).float(), torch.from_numpy(v.mask).float(),
                              v.camera.name))
    opts = FitOptions(
        steps=settings.steps, optimize_vertices=settings.optimize_vertices, optimize_colors=settings.optimize_colors,
        optimize_texture=settings.optimize_texture, optimize_lighting=settings.optimize_lighting,
        lighting=resolve_lighting(settings, mesh), texture_size=settings.texture_size, w_laplacian=settings.smoothness,
        perspective_correct=True, backend=settings.backend)
    tex0 = torch.from_numpy(mesh.texture).float() if (mesh.texture is not None and settings.optimize_texture) else None
    res = fit(torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces), fviews, opts,
              colors=torch.from_numpy(mesh.colors).float() if mesh.colors is not None else None,
              face_uvs=torch.from_numpy(face_uvs).float() if face_uvs is not None else None,
              texture=tex0, progress=progress, should_stop=should_stop, sun=mesh.sun,
              preview=(lambda _s, v: preview(v.numpy())) if preview is not None else None)
    report = [{"camera": v.camera.name, "image": v.image_name, "silhouette_iou": m.silhouette_iou,
               "color_l1": m.color_l1, **({"note": v.note} if v.note else {})} for v, m in zip(views, res.views)]
    return FitOutput(
        vertices=res.vertices.numpy(), colors=res.colors.numpy() if (res.colors is not None and settings.optimize_colors)
        else None, texture=res.texture.numpy() if (res.texture is not None and settings.optimize_texture) else None,
        face_uvs=face_uvs, losses=res.losses, steps=res.steps, seconds=res.seconds, cancelled=res.cancelled,
        views=report)
