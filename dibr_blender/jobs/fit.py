"""The fit as a job on plain arrays (no bpy): scene records in, fitted arrays out. It imports
torch and dibr_core only when run, so the extension registers without them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np

from .records import CameraData, MeshData, SceneError, ViewData


@dataclass(frozen=True)
class FitSettings:
    """User-facing fit options (the panel's and the batch CLI's).

    ``smoothness`` is the one smoothing knob: the lambda of the large-step optimiser
    (``FitOptions.large_steps_lambda``, the default optimiser), larger is smoother; the penalty
    weights keep dibr_core's defaults. ``remesh`` remeshes the surface during the fit towards
    edges of ``target_edge_px`` pixels within ``max_faces`` faces (None: no budget); the result
    then has new faces (written as new mesh data, not a shape key). ``optimize_cameras`` refines
    every view's camera pose (``optimize_focal`` also its focal length, and implies it);
    ``write_cameras`` moves the Blender cameras to the refined ones (scene side).
    """

    steps: int = 300
    max_side: int = 256
    optimize_vertices: bool = True
    optimize_colors: bool = True
    optimize_texture: bool = False
    optimize_lighting: bool = False
    lighting: str = "auto"          # "auto" (see resolve_lighting), "none", "sun", "sh"
    texture_size: int = 256
    smoothness: float = 10.0        # large-step lambda (FitOptions.large_steps_lambda)
    backend: str = "auto"
    remesh: bool = False
    max_faces: Optional[int] = None
    target_edge_px: float = 4.0
    optimize_cameras: bool = False
    optimize_focal: bool = False
    write_cameras: bool = False

    @property
    def remeshing(self) -> bool:
        """Whether the fit remeshes (remeshing moves vertices, so it needs the shape switch)."""
        return self.remesh and self.optimize_vertices

    @property
    def refining_cameras(self) -> bool:
        return self.optimize_cameras or self.optimize_focal


def check_settings(settings: FitSettings) -> None:
    """Raise SceneError (one line) for settings the fit cannot use."""
    if settings.max_faces is not None and settings.max_faces < 4:
        raise SceneError(f"the face budget (max faces) is {settings.max_faces}, below 4: a closed surface needs at "
                         "least 4 triangles (a tetrahedron); raise it, or give no budget")
    if not settings.target_edge_px > 0:
        raise SceneError(f"the target edge length must be a positive number of pixels, got {settings.target_edge_px}")
    if not settings.smoothness >= 0:
        raise SceneError(f"smoothness must be 0 or more, got {settings.smoothness}")
    if settings.write_cameras and not settings.refining_cameras:
        raise SceneError("writing the cameras back needs camera refinement: switch it on")


@dataclass
class FitOutput:
    vertices: np.ndarray            # (V, 3) world space (V changes when topology_changed)
    colors: Optional[np.ndarray]    # (V, 3) linear, the fitted colours (None when not fitted)
    texture: Optional[np.ndarray]   # (Ht, Wt, 3) linear, top to bottom
    face_uvs: Optional[np.ndarray]  # (F, 3, 2) used for the texture (per face of ``faces``)
    losses: List[float]
    steps: int
    seconds: float
    cancelled: bool
    views: List[dict]               # {"camera", "image", "silhouette_iou", "color_l1"[, "note"]}
    faces: Optional[np.ndarray] = None           # (F, 3) int64 final faces (the start's without remeshing)
    topology_changed: bool = False               # remeshing changed the faces: no shape key can hold it
    remeshes: int = 0
    self_intersecting_faces: int = 0             # faces crossing another face (on the written result after
                                                 # scene.fit.honest_report)
    carried_colors: Optional[np.ndarray] = None  # (V, 3) the start's colours on the remeshed vertices
                                                 # (topology_changed, colours not fitted)
    camera_corrections: List[dict] = field(default_factory=list)  # {"camera", "rotation_deg",
                                                 # "translation_pct", "focal_scale"} per view
    cameras: List[CameraData] = field(default_factory=list)       # per view, the refined camera
    loop_uvs: Optional[np.ndarray] = None        # (L, 2) the UVs made for a mesh without a UV map
                                                 # (MeshData.loop_uvs), to write with the texture
    source_positions: Optional[np.ndarray] = None  # (V, 3) world, topology_changed: each vertex's source
                                                 # point on the start surface (FitResult.source_positions)
    carried: str = ""                            # what writing a remeshed result carried from the old
                                                 # mesh (set by scene.fit.apply_result)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")

    @property
    def face_count(self) -> int:
        return int(len(self.faces)) if self.faces is not None else 0


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


def check_remesh_start(mesh: MeshData) -> None:
    """Remeshing needs the start mesh to be one closed 2-manifold: raise SceneError naming the
    mesh and every problem (holes, non-manifold edges, loose parts, ...) otherwise."""
    import torch

    from dibr_core.remesh import check_closed_manifold

    problems = check_closed_manifold(torch.from_numpy(mesh.faces), len(mesh.vertices)).problems(False)
    if problems:
        raise SceneError(f"mesh '{mesh.name}' is not one closed manifold surface, which remeshing needs: "
                         f"{'; '.join(problems)}; repair it (Mesh > Clean Up, fill the holes, separate the parts) or "
                         "turn remeshing off")


def _camera_record(start: CameraData, view: np.ndarray, projection: np.ndarray) -> CameraData:
    return CameraData(start.name, view.astype(np.float64), projection.astype(np.float64), start.width, start.height,
                      start.near, start.far)


def run_fit(mesh: MeshData, views: List[ViewData], settings: FitSettings,
            progress: Optional[Callable[[int, int, float], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None,
            preview: Optional[Callable[[np.ndarray], None]] = None) -> FitOutput:
    """Run dibr_core's fit on scene arrays; raises SceneError on unusable input (before any step).

    With remeshing there is no live preview (the vertex count changes during the fit)."""
    try:
        import torch

        from dibr_core.camera import Camera
        from dibr_core.fit import FitOptions, FitView, fit
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise SceneError(f"torch/dibr_core cannot be imported ({exc}); see the add-on preferences") from None
    if not views:
        raise SceneError("no views: give at least one camera with a reference image")
    check_settings(settings)
    if settings.remeshing:
        check_remesh_start(mesh)
    check_start_overlap(mesh, views)
    # Without UVs (and always with remeshing, after the last remesh) the fit makes its own
    # (dibr_core.uv.auto_uvs); the Blender side gives Smart UV Project's for meshes without a UV map.
    face_uvs = None if settings.remeshing else mesh.face_uvs
    fviews = []
    for v in views:
        cam = Camera(torch.from_numpy(v.camera.view).float()[None], torch.from_numpy(v.camera.projection).float()[None],
                     float(v.camera.near), float(v.camera.far))
        fviews.append(FitView(cam, torch.from_numpy(v.image).float(), torch.from_numpy(v.mask).float(),
                              v.camera.name))
    try:
        opts = FitOptions(
            steps=settings.steps, optimize_vertices=settings.optimize_vertices,
            optimize_colors=settings.optimize_colors, optimize_texture=settings.optimize_texture,
            optimize_lighting=settings.optimize_lighting, lighting=resolve_lighting(settings, mesh),
            texture_size=settings.texture_size, large_steps_lambda=settings.smoothness, perspective_correct=True,
            backend=settings.backend, remesh=settings.remeshing, max_faces=settings.max_faces,
            target_edge_px=settings.target_edge_px, optimize_cameras=settings.refining_cameras,
            optimize_focal=settings.optimize_focal)
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    tex0 = None
    if mesh.texture is not None and settings.optimize_texture and not settings.remeshing:
        tex0 = torch.from_numpy(mesh.texture).float()
    try:
        res = fit(torch.from_numpy(mesh.vertices).float(), torch.from_numpy(mesh.faces), fviews, opts,
                  colors=torch.from_numpy(mesh.colors).float() if mesh.colors is not None else None,
                  face_uvs=torch.from_numpy(face_uvs).float() if face_uvs is not None else None,
                  texture=tex0, progress=progress, should_stop=should_stop, sun=mesh.sun,
                  preview=(lambda _s, v: preview(v.numpy())) if (preview is not None and not settings.remeshing)
                  else None)
    except ValueError as exc:
        if not str(exc).startswith("fit(): "):  # dibr_core's own input checks name the function
            raise
        raise SceneError(f"mesh '{mesh.name}': {exc}") from None
    report = [{"camera": v.camera.name, "image": v.image_name, "silhouette_iou": m.silhouette_iou,
               "color_l1": m.color_l1, **({"note": v.note} if v.note else {})} for v, m in zip(views, res.views)]
    fitted_colors = res.colors.numpy() if (res.colors is not None and settings.optimize_colors) else None
    carried = None
    if res.topology_changed and fitted_colors is None and mesh.colors is not None and res.colors is not None:
        carried = res.colors.numpy()
    corrections = [{"camera": c.name, "rotation_deg": c.rotation_deg, "translation_pct": c.translation_pct,
                    "focal_scale": c.focal_scale} for c in res.camera_corrections]
    cameras = [_camera_record(v.camera, c.view[0].double().numpy(), c.projection[0].double().numpy())
               for v, c in zip(views, res.cameras)] if settings.refining_cameras else []
    return FitOutput(
        vertices=res.vertices.numpy(), colors=fitted_colors,
        texture=res.texture.numpy() if (res.texture is not None and settings.optimize_texture) else None,
        face_uvs=res.face_uvs.numpy() if res.face_uvs is not None else face_uvs,
        losses=res.losses, steps=res.steps, seconds=res.seconds, cancelled=res.cancelled, views=report,
        faces=res.faces.numpy() if res.faces is not None else mesh.faces.copy(),
        topology_changed=res.topology_changed, remeshes=res.remeshes,
        self_intersecting_faces=res.self_intersecting_faces, carried_colors=carried,
        camera_corrections=corrections, cameras=cameras,
        loop_uvs=None if res.topology_changed else mesh.loop_uvs,
        source_positions=(res.source_positions.numpy() if (res.topology_changed and res.source_positions is not None)
                          else None))


def result_notes(out: FitOutput) -> List[str]:
    """Lines that tell the user what the result is beyond the scores: why there is no shape key
    after remeshing, and each refined camera's correction."""
    lines = []
    if out.topology_changed:
        lines.append(f"remeshed to {out.face_count} faces: the vertex count changed, so the result is new mesh "
                     "data, not a shape key")
        if out.carried:
            lines.append(out.carried)
    for c in out.camera_corrections:
        lines.append(f"camera '{c['camera']}' corrected by {c['rotation_deg']:.2f} deg, moved "
                     f"{c['translation_pct']:.2f}% of its distance, focal x{c['focal_scale']:.4f}")
    return lines
