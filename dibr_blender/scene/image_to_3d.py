"""Image to 3D in the scene, shared by the operator and the batch CLI: read the input image (a
file or a datablock), predict, add the textured mesh object at a location, and optionally refine
it with the fit. Every check and the prediction run before anything is added; when a later step
fails or is cancelled (the refine), everything this run added is removed again, so the scene is
never left half changed. :func:`run` does it all at once (the batch command); the operator calls
:func:`begin`, runs the refine job on a worker thread with a progress bar and Esc, then
:meth:`Started.finish` or :meth:`Started.abort`."""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import bpy
import mathutils
import numpy as np

from ..jobs import convert, image_to_3d, masks, meshes
from ..jobs.fit import FitOutput, FitSettings, run_fit
from ..jobs.records import CameraData, MeshData, SceneError, ViewData
from . import fit, io
from .objects import Created, add_mesh_object, select_only

# AUTO refines against the scene camera only when the prediction, placed at the 3D cursor, already
# overlaps the input's silhouette in that camera at least this much (silhouette IoU).
AUTO_SCENE_MIN_IOU = 0.5

REFINE_CAMERA_ITEMS = [
    ("AUTO", "Auto", "The scene camera when it sees the placed prediction as the image shows it, else a new camera "
                     "at the matching training view"),
    ("SCENE", "Scene Camera", "The scene's active camera sees the input image (its aspect is the render's)"),
    ("NEW", "New Camera", "A new camera at the training view (elevation 30 degrees) that best matches the input"),
]


@dataclass
class Request:
    """One Image to 3D run. The image comes from ``image_path`` (preferred) or the datablock
    ``image_name``; the silhouette from ``mask_path`` / ``mask_name``, else keyed from the
    ``background`` colour, else the image's alpha."""

    image_path: str = ""
    image_name: str = ""
    mask_path: str = ""
    mask_name: str = ""
    background: Optional[masks.BackgroundKey] = None
    category: str = "none"
    size: float = 1.0
    texture_size: int = 256          # 0: the predictor's native size
    refine_steps: int = image_to_3d.REFINE_STEPS   # 0: no refine
    refine_camera: str = "AUTO"      # see REFINE_CAMERA_ITEMS
    refine_resolution: int = image_to_3d.REFINE_RESOLUTION
    backend: str = "auto"
    name: str = image_to_3d.OBJECT_NAME
    # Turn the object to face this world viewing direction (the 3D viewport's, from the panel);
    # None: the scene camera's forward axis, when the scene has a camera. See facing_rotation_deg.
    facing: Optional[Tuple[float, float, float]] = None
    face_view: bool = True


@dataclass
class Inputs:
    rgba: np.ndarray                  # (H, W, 4) display (sRGB-encoded) values, rows top to bottom
    mask: Optional[np.ndarray]        # (H, W) or None: the image's alpha
    label: str                        # file path or "image 'NAME'"
    image_path: Optional[str]         # the file, when the image came from one
    image: Any                        # the datablock, when it came from one
    mask_file: Optional[str]
    mask_image: Any
    source: str = "alpha"             # where the silhouette came from (the report's "silhouette")


def _abspath(path: str) -> str:
    return os.path.abspath(bpy.path.abspath(path)) if path else ""


def read_inputs(req: Request) -> Inputs:
    """The input image and silhouette; raises SceneError with one line for bad input."""
    path = _abspath(req.image_path)
    img: Any = None
    if path:
        rgba, has_alpha = io.load_image_display(path)
        label = path
    elif req.image_name:
        img = bpy.data.images.get(req.image_name)
        if img is None:
            raise SceneError(f"no image named '{req.image_name}'")
        rgba, has_alpha = io.image_display_values(img), io.image_has_alpha(img)
        label = f"image '{img.name}'"
    else:
        raise SceneError("no input image: give an image file or an image datablock")
    try:
        masks.check_image_size(rgba.shape[1], rgba.shape[0], label)
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    mask: Optional[np.ndarray] = None
    source = "alpha"
    mpath = _abspath(req.mask_path)
    mimg: Any = None
    if mpath:
        m, m_alpha = io.load_image_display(mpath)
        mask = image_to_3d.silhouette(m, m_alpha)
    elif req.mask_name:
        mimg = bpy.data.images.get(req.mask_name)
        if mimg is None:
            raise SceneError(f"no mask image named '{req.mask_name}'")
        mask = image_to_3d.silhouette(io.image_display_values(mimg), io.image_has_alpha(mimg))
    elif req.background is not None:
        mask = masks.key_mask(rgba[..., :3], req.background)
        source = f"keyed on {req.background.describe()}"
    elif not has_alpha or masks.background_fraction(rgba[..., 3]) < masks.MIN_BACKGROUND_FRACTION:
        # An opaque picture: key it on its border colour when that is one plain colour.
        key = image_to_3d.auto_background_key(rgba[..., :3])
        what = "has no alpha channel" if not has_alpha else "is opaque (alpha 1 everywhere)"
        if key is None:
            raise SceneError(f"{label} {what} and its border is not one plain colour, so the object cannot be "
                             "told from the background; give a mask image (--mask) or the background colour "
                             "(--background-color, or the panel's Background Key)")
        mask = masks.key_mask(rgba[..., :3], key)
        source = f"keyed on {key.describe()} (automatic: the image {what})"
    if mpath or req.mask_name:
        source = "mask image"
    elif req.background is None and mask is None:
        source = "alpha"
    if mask is not None and mask.shape != rgba.shape[:2]:
        mask = convert.resize_image(mask[..., None], rgba.shape[1], rgba.shape[0])[..., 0]
    try:
        masks.check_silhouette(mask if mask is not None else rgba[..., 3], label, from_alpha=mask is None)
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    return Inputs(rgba, mask, label, path or None, img, mpath or None, mimg, source)


@dataclass
class _Plan:
    """Refine decisions made before anything is added."""

    mode: str                                  # "SCENE" or "NEW"
    view: Optional[image_to_3d.ProtocolView] = None   # the new camera (NEW), turned with the object
    reason: str = ""                           # why AUTO chose this camera


@dataclass
class _InputView:
    """The prediction's input view (a ``dibr_core.inference.InputView``, canonical frame) and the
    object's turn about Z (degrees) that the Blender camera follows."""

    view: Any
    turn: float = 0.0

    def blender(self) -> image_to_3d.ProtocolView:
        return image_to_3d.protocol_view(self.view, self.turn)


def scene_camera_overlap(scene: Any, inputs: Inputs, mesh: meshes.BlenderMesh, location: np.ndarray,
                         resolution: int) -> float:
    """Silhouette IoU of the prediction placed at ``location`` seen by the scene camera (at the
    input's aspect) against the input's silhouette: how well that camera matches the image."""
    from ..jobs.preview import render_view

    H, W = inputs.rgba.shape[:2]
    cam = io.read_camera(scene.camera, scene, resolution, image_size=(W, H))
    sil = inputs.mask if inputs.mask is not None else inputs.rgba[..., 3]
    target = convert.resize_image(np.ascontiguousarray(sil, dtype=np.float32)[..., None], cam.width, cam.height)[..., 0]
    md = MeshData("prediction", (mesh.vertices.astype(np.float64) + location).astype(np.float32),
                  mesh.faces.astype(np.int64), None, None, None, np.eye(4), True)
    view = ViewData(cam, np.zeros((cam.height, cam.width, 3), np.float32), target, inputs.label)
    cover = render_view(md, view, colors=np.zeros((len(md.vertices), 3)))[..., 3] > 0.5
    t = target > 0.5
    return float((cover & t).sum()) / max(1.0, float((cover | t).sum()))


def _plan_refine(req: Request, scene: Any, inputs: Inputs, placed: meshes.BlenderMesh, location: np.ndarray,
                 matched: _InputView) -> _Plan:
    """The refine's camera. ``placed`` is the prediction as it is added at ``location`` (standing
    on the ground plane); ``matched``: the input's view of the prediction."""
    mode = req.refine_camera.upper()
    if mode not in ("AUTO", "SCENE", "NEW"):
        raise SceneError(f"refine camera must be AUTO, SCENE or NEW, got {req.refine_camera!r}")
    reason = ""
    if mode == "AUTO":
        if scene.camera is None:
            mode, reason = "NEW", "the scene has no camera"
        else:
            io.read_camera(scene.camera, scene, req.refine_resolution)  # refuses odd cameras now
            iou = scene_camera_overlap(scene, inputs, placed, location, req.refine_resolution)
            if iou >= AUTO_SCENE_MIN_IOU:
                mode, reason = "SCENE", f"the scene camera '{scene.camera.name}' sees the prediction as the image does (IoU {iou:.2f})"
            else:
                mode, reason = "NEW", (f"the scene camera '{scene.camera.name}' does not see the prediction at the "
                                       f"3D cursor as the image shows it (IoU {iou:.2f} < {AUTO_SCENE_MIN_IOU})")
    if mode == "SCENE":
        if scene.camera is None:
            raise SceneError("the scene has no active camera to refine against")
        io.read_camera(scene.camera, scene, req.refine_resolution)  # refuses odd cameras now
        return _Plan("SCENE", reason=reason)
    return _Plan("NEW", view=matched.blender(), reason=reason)


def facing_direction(scene: Any, req: Request) -> Optional[np.ndarray]:
    """The world viewing direction the object is turned to face: ``req.facing``, else the scene
    camera's forward axis (-Z of its world matrix), else None (no turn)."""
    if not req.face_view:
        return None
    if req.facing is not None:
        return np.asarray(req.facing, dtype=np.float64)
    if scene.camera is None:
        return None
    return -np.array(scene.camera.matrix_world, dtype=np.float64)[:3, 2]


@dataclass
class CoreRefine:
    """What the input-view refine (``dibr_core.inference.refine_prediction``) needs: the prediction
    (canonical frame), the picture and its silhouette, and the matched view."""

    prediction: Any
    rgba: np.ndarray
    mask: Optional[np.ndarray]
    view: _InputView


@dataclass
class RefineJob:
    """The refine of a just-added object: :meth:`run` (which may run on a worker thread; it
    touches no Blender data), then :meth:`apply` on the main thread. Against a new camera (the
    input view) it is ``dibr_core.inference.refine_prediction`` (``core``); against the scene
    camera, :func:`~dibr_blender.jobs.fit.run_fit` on ``settings``, ``mesh`` and ``views``."""

    settings: FitSettings
    mesh: Any
    views: List[ViewData]
    ob: Any
    img: Any
    blender_mesh: meshes.BlenderMesh
    camera_name: str
    camera_created: bool
    resolution: int
    extra: Dict[str, Any]
    temps: List[str]
    t0: float
    core: Optional[CoreRefine] = None
    created: Optional[Created] = None

    @property
    def steps(self) -> int:
        return self.settings.steps

    def run(self, progress: Optional[Callable[[int, int, float], None]] = None,
            should_stop: Optional[Callable[[], bool]] = None) -> Any:
        """The refine itself (no Blender data): a ``RefinedPrediction`` or a ``FitOutput``."""
        if self.core is not None:
            c = self.core
            try:
                return image_to_3d.refine(c.prediction, c.rgba, c.mask, self.settings.steps, self.resolution,
                                          view=c.view.view, backend=self.settings.backend, progress=progress,
                                          should_stop=should_stop)
            except ValueError as exc:
                raise SceneError(str(exc)) from None
        return run_fit(self.mesh, self.views, self.settings, progress=progress, should_stop=should_stop)

    def progress_logger(self, log: Callable[[str], None]) -> Callable[[int, int, float], None]:
        every = max(1, self.settings.steps // 5)

        def progress(step: int, total: int, loss: float) -> None:
            if step % every == 0 or step == total:
                log(f"refine: step {step}/{total} loss {loss:.5f} ({time.perf_counter() - self.t0:.1f} s)")
        return progress

    def cleanup(self) -> None:
        """Remove the temporary image files written for the fit."""
        for p in self.temps:
            try:
                os.remove(p)
            except OSError:
                pass
        self.temps.clear()

    def apply(self, out: Any) -> Dict[str, Any]:
        """Write the refined shape, texture and colours into the object (unless the refine kept the
        prediction); returns the report's ``refine`` block."""
        if self.core is not None:
            return self._apply_core(out)
        return self._apply_fit(out)

    def _apply_core(self, r: Any) -> Dict[str, Any]:
        ob, img, mesh = self.ob, self.img, self.blender_mesh
        assert self.core is not None
        # New faces when the surface was remeshed or cut through its volume (never with a kept prediction).
        new_faces = bool(r.remeshed) or bool(r.volume_carved)
        if not r.kept_prediction:
            local = image_to_3d.to_blender(r.mesh.vertices, mesh, self.core.view.turn)
            M = np.array(ob.matrix_world, dtype=np.float64)
            world = local @ M[:3, :3].T + M[:3, 3]
            if new_faces:
                # New topology: the object gets new mesh data (the predicted one, added by this
                # run, goes) with the refine's UVs; the texture keeps the image's size.
                faces = r.mesh.faces.detach().cpu().numpy().astype(np.int64)
                old = io.replace_mesh_data(ob, world, faces)
                if self.created is not None:
                    self.created.add(bpy.data.meshes, ob.data)
                name = old.name
                if old.users == 0:
                    bpy.data.meshes.remove(old)
                    ob.data.name = name
                io.write_uv_map(ob, r.mesh.face_uvs.detach().cpu().numpy().reshape(-1, 2))
            else:
                io.write_shape_key(ob, world, apply=True)
            if r.mesh.texture is not None and img is not None:
                tex = r.mesh.texture.detach().cpu().numpy()      # display (sRGB-encoded) values
                io.set_texture_pixels(img, meshes.texture_pixels(tex, int(img.size[0])))
            io.write_colors(ob, convert.srgb_to_linear(np.clip(r.mesh.colors.detach().cpu().numpy(), 0.0, 1.0)))
        reason = ""
        if r.kept_prediction:
            reason = ("cancelled" if r.cancelled else
                      "the refine lowered the overlap" if r.refined_iou < r.prediction_iou else
                      "the refine added self-intersecting faces")
        return {"camera": self.camera_name, "camera_created": self.camera_created, "steps": r.steps,
                "resolution": self.resolution, "silhouette_iou": round(r.iou, 4),
                "prediction_silhouette_iou": round(r.prediction_iou, 4),
                "refined_silhouette_iou": round(r.refined_iou, 4), "kept_prediction": r.kept_prediction,
                "kept_reason": reason or None, "refine_fraction": r.refine_fraction,
                "retried": bool(r.retried), "retry_skipped": bool(r.retry_skipped),
                "timed_out": bool(r.timed_out),
                "self_intersections": {"prediction": r.self_intersections[0], "refined": r.self_intersections[1]},
                "remeshed": bool(r.remeshed), "remesh_rejected": bool(r.remesh_rejected),
                "holes": int(r.holes), "conformed": bool(r.conformed),
                "volume_carved": bool(r.volume_carved),
                "vertices": len(ob.data.vertices), "faces": len(ob.data.polygons),
                "texture_size": int(img.size[0]) if img is not None else None,
                "color_l1": r.color_l1, "refine_seconds": round(r.seconds, 3),
                "seconds": round(time.perf_counter() - self.t0, 3), **self.extra}

    def _apply_fit(self, out: FitOutput) -> Dict[str, Any]:
        """The scene-camera fit: when the refined object overlaps the image's silhouette less than
        the prediction did (scored on what the user gets), the prediction is kept."""
        ob, img, mesh = self.ob, self.img, self.blender_mesh
        before = fit.scores_as_seen(ob, self.views)[0]
        faces = np.asarray(mesh.faces)
        crossings_before = image_to_3d.self_intersections(self.mesh.vertices, faces)
        refined, crossings = image_to_3d.clean_refined(out.vertices, faces)
        # The refine may move the lowest point off the ground plane: stand the result on it again
        # (scored below as placed, since that is what the user gets).
        io.write_shape_key(ob, meshes.on_ground(replace(mesh, vertices=refined)).vertices, apply=True)
        if out.texture is not None and img is not None:
            n = int(img.size[0])
            io.set_texture_pixels(img, meshes.texture_pixels(convert.linear_to_srgb(out.texture), n))
            colors = meshes.vertex_colors_from_texture(out.texture, faces, mesh.face_uvs, len(mesh.vertices))
            io.write_colors(ob, colors)
        elif out.colors is not None:
            io.write_colors(ob, out.colors)
        after = fit.scores_as_seen(ob, self.views)[0]  # what the user gets
        # Keep the prediction when the refine overlaps the image less or leaves faces crossing
        # each other that the prediction did not have (a surface an artist cannot use as it is).
        kept = after < before or crossings > crossings_before
        if kept:  # the refine made it worse: put the prediction back
            io.write_shape_key(ob, self.mesh.vertices, apply=True)
            if img is not None and mesh.texture is not None:
                io.set_texture_pixels(img, mesh.texture)
            io.write_colors(ob, mesh.colors_rgb)
        return {"camera": self.camera_name, "camera_created": self.camera_created, "steps": out.steps,
                "resolution": self.resolution, "final_loss": out.final_loss,
                "silhouette_iou": before if kept else after, "prediction_silhouette_iou": before,
                "refined_silhouette_iou": after,
                "kept_prediction": kept,
                "kept_reason": ("the refine lowered the overlap" if after < before else
                                "the refine added self-intersecting faces") if kept else None,
                "self_intersections": {"prediction": crossings_before, "refined": crossings},
                "fit_silhouette_iou": out.views[0]["silhouette_iou"], "color_l1": out.views[0]["color_l1"],
                "seconds": round(time.perf_counter() - self.t0, 3), **self.extra}


def _refine_job(req: Request, plan: _Plan, scene: Any, ob: Any, img: Any, location: np.ndarray,
                mesh: meshes.BlenderMesh, inputs: Inputs, created: Created, pred: Any, matched: _InputView,
                log: Callable[[str], None]) -> RefineJob:
    has_tex = img is not None
    settings = FitSettings(steps=req.refine_steps, max_side=req.refine_resolution, optimize_vertices=True,
                           optimize_colors=not has_tex, optimize_texture=has_tex, lighting="none",
                           texture_size=mesh.texture_size or 256, backend=req.backend)
    temps: List[str] = []
    t0 = time.perf_counter()
    extra: Dict[str, Any] = {}
    core: Optional[CoreRefine] = None
    views: List[ViewData] = []
    fit_mesh: Any = None
    try:
        if plan.mode == "SCENE":
            path = inputs.image_path
            if path is None:
                path, tmp = fit.image_path_of(inputs.image)
                if tmp:
                    temps.append(path)
            mask_path = inputs.mask_file
            if mask_path is None and inputs.mask_image is not None:
                mask_path, tmp = fit.image_path_of(inputs.mask_image)
                if tmp:
                    temps.append(mask_path)
            background = req.background
            if background is None and inputs.mask is not None and mask_path is None:
                # A silhouette keyed automatically: the scene fit keys the same way.
                background = image_to_3d.auto_background_key(inputs.rgba[..., :3])
            _, fit_mesh, views = fit.gather(scene, ob.name, [(None, path, mask_path)], settings, background)
            cam_name = scene.camera.name
            log(f"refine: {settings.steps} steps against camera '{cam_name}' at {views[0].camera.width}x"
                f"{views[0].camera.height}")
        else:
            assert plan.view is not None
            cam_ob = _add_camera(plan.view, mesh.scale, location, req.refine_resolution, created)
            cam_name = cam_ob.name
            core = CoreRefine(pred, inputs.rgba, inputs.mask, matched)
            extra = {"azimuth_deg": plan.view.azimuth_deg, "elevation_deg": plan.view.elevation_deg,
                     "lens_mm": round(plan.view.lens, 3), "initial_silhouette_iou": round(plan.view.iou, 4)}
            log(f"refine: {settings.steps} steps in the input view (camera '{cam_name}') at "
                f"{req.refine_resolution}x{req.refine_resolution}")
    except BaseException:
        for p in temps:
            try:
                os.remove(p)
            except OSError:
                pass
        raise
    if plan.reason:
        extra["camera_choice"] = plan.reason
    return RefineJob(settings, fit_mesh, views, ob, img, mesh, cam_name, plan.mode == "NEW",
                     req.refine_resolution, extra, temps, t0, core, created)


def _add_camera(view: image_to_3d.ProtocolView, scale: float, location: np.ndarray, resolution: int,
                created: Created) -> Any:
    params = image_to_3d.camera_params(view, resolution, scale)
    data = created.add(bpy.data.cameras, bpy.data.cameras.new(image_to_3d.CAMERA_NAME))
    data.type = "PERSP"
    data.sensor_fit = "VERTICAL"
    data.sensor_width = params.sensor_width
    data.sensor_height = params.sensor_height
    data.lens = params.lens
    data.shift_x = params.shift_x
    data.shift_y = params.shift_y
    data.clip_start = params.clip_start
    data.clip_end = params.clip_end
    cam = created.add(bpy.data.objects, bpy.data.objects.new(image_to_3d.CAMERA_NAME, data))
    created.scene.collection.objects.link(cam)
    # A Matrix from the rows: Blender would read a nested list column by column.
    cam.matrix_world = mathutils.Matrix(image_to_3d.camera_world(view, scale, location).tolist())
    if created.scene.camera is None:
        created.scene.camera = cam
    return cam


@dataclass
class Started:
    """An Image to 3D run whose object is in the scene: ``refine`` (None without one) still has
    to run; then :meth:`finish` gives the object and its report, or :meth:`abort` removes
    everything the run added."""

    ob: Any
    refine: Optional[RefineJob]
    created: Created
    report_args: Dict[str, Any]
    t0: float

    def finish(self, refine: Optional[Dict[str, Any]] = None) -> Tuple[Any, Dict[str, Any]]:
        if self.refine is not None:
            self.refine.cleanup()
        select_only(bpy.context.view_layer, [self.ob], active=self.ob)
        args = dict(self.report_args)
        if refine is not None:
            # The refine's own before / after (in the scene camera when it refined against that).
            args["input_view"] = {**args["input_view"], "prediction": refine["prediction_silhouette_iou"],
                                  "refined": refine["refined_silhouette_iou"], "result": refine["silhouette_iou"],
                                  "camera": refine["camera"]}
        report = image_to_3d.make_report(object_name=self.ob.name, seconds=time.perf_counter() - self.t0,
                                         refine=refine, **args)
        if refine is not None and (refine.get("remeshed") or refine.get("volume_carved")):   # the refine's mesh data
            report.update(vertices=refine["vertices"], faces=refine["faces"], texture_size=refine["texture_size"])
        return self.ob, report

    def abort(self) -> None:
        if self.refine is not None:
            self.refine.cleanup()
        self.created.rollback()


def begin(scene: Any, collection: Any, location: Sequence[float], req: Request,
          log: Callable[[str], None] = lambda s: None) -> Started:
    """Check the request, predict, find the input view, add the object (and the refine camera)
    and prepare the refine. Raises SceneError for bad input; nothing stays added when it raises."""
    t0 = time.perf_counter()
    if not (req.size > 0 and math.isfinite(req.size)):
        raise SceneError(f"size must be positive, got {req.size}")
    if req.texture_size < 0:
        raise SceneError(f"texture size must be 0 (native) or positive, got {req.texture_size}")
    if req.refine_steps < 0:
        raise SceneError(f"refine steps must be 0 (no refine) or positive, got {req.refine_steps}")
    if req.refine_resolution < 16:
        raise SceneError(f"refine resolution must be at least 16, got {req.refine_resolution}")
    if req.category not in ("none", *image_to_3d.CATEGORIES):
        raise SceneError(f"unknown category {req.category!r}; expected none or one of "
                         f"{', '.join(image_to_3d.CATEGORIES)}")
    inputs = read_inputs(req)
    log(f"input {inputs.label} ({inputs.rgba.shape[1]}x{inputs.rgba.shape[0]}), silhouette: {inputs.source}")
    try:
        t1 = time.perf_counter()
        pred, passed = image_to_3d.predict(inputs.rgba, inputs.mask, req.category)
        predict_seconds = time.perf_counter() - t1
        weights = image_to_3d.weights_info()
        # The input view: the protocol camera that sees the prediction as the image shows it.
        matched = _InputView(image_to_3d.match_view(pred, inputs.rgba, inputs.mask, req.refine_resolution))
        network_iou = image_to_3d.network_view_iou(pred, inputs.rgba, inputs.mask, matched.view,
                                                   req.refine_resolution)
    except ImportError as exc:
        raise SceneError(f"torch/dibr_core cannot be imported ({exc}); see the add-on preferences") from None
    except (ValueError, FileNotFoundError) as exc:
        raise SceneError(str(exc)) from None
    centred = meshes.mesh_arrays(pred, req.size, req.texture_size)
    direction = facing_direction(scene, req)
    facing: Optional[Dict[str, Any]] = None
    if direction is not None:
        turn = image_to_3d.facing_rotation_deg(matched.view.azimuth_deg, direction)
        if turn is not None:  # the mesh and its matching view turn together
            centred = meshes.rotate_z(centred, turn)
            matched.turn = turn
            facing = {"input_view_azimuth_deg": matched.view.azimuth_deg, "turn_deg": round(turn, 3),
                      "direction": [round(float(x), 6) for x in direction],
                      "source": "given" if req.facing is not None else f"camera '{scene.camera.name}'"}
            log(f"turned {turn:.1f} degrees about Z to face the view (input view azimuth "
                f"{matched.view.azimuth_deg:.0f} degrees)")
    mesh = meshes.on_ground(centred)  # stands on the cursor's ground plane
    log(f"predicted {len(mesh.vertices)} vertices, {len(mesh.faces)} faces in {predict_seconds:.3f} s "
        f"(weights {weights.get('weights')}); input-view silhouette IoU {matched.view.iou:.3f}")
    loc = np.asarray(location, dtype=np.float64).reshape(3)
    source = os.path.basename(inputs.image_path) if inputs.image_path else inputs.label
    try:
        plan = _plan_refine(req, scene, inputs, mesh, loc, matched) if req.refine_steps > 0 else None
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    if plan is not None and plan.reason:
        log(f"refine camera {'scene' if plan.mode == 'SCENE' else 'new'}: {plan.reason}")
    view_layer: Any = bpy.context.view_layer

    created = Created(scene)
    try:
        ob, img = add_mesh_object(req.name, mesh, collection, loc, created,
                                  {"dibr_category": req.category, "dibr_image": source})
        view_layer.update()
        centre = loc + np.array([0.0, 0.0, float(mesh.vertices[:, 2].max()) / 2.0])  # the bounding-box centre
        job = (_refine_job(req, plan, scene, ob, img, centre, mesh, inputs, created, pred, matched, log)
               if plan is not None else None)
    except BaseException:
        created.rollback()
        raise
    report_args = {"mesh": mesh, "category": req.category, "category_passed": passed, "size": req.size,
                   "predict_seconds": predict_seconds, "image": source, "weights": weights, "facing": facing,
                   "silhouette_source": inputs.source,
                   "input_view": {"prediction": round(matched.view.iou, 4), "refined": None,
                                  "result": round(matched.view.iou, 4), "resolution": req.refine_resolution,
                                  "azimuth_deg": matched.view.azimuth_deg,
                                  "network": _rounded(network_iou)}}
    return Started(ob, job, created, report_args, t0)


def _rounded(x: Optional[float]) -> Optional[float]:
    """``x`` rounded to 4 places for the report, None for None or NaN."""
    return None if x is None or x != x else round(float(x), 4)


def run(scene: Any, collection: Any, location: Sequence[float], req: Request,
        log: Callable[[str], None] = lambda s: None) -> Tuple[Any, Dict[str, Any]]:
    """Predict, add the object and refine it, all at once (the batch command; the operator runs
    the refine as a cancellable job). Returns (object, report dict; see
    ``image_to_3d.make_report``).

    Raises:
        SceneError: bad input (nothing was added) or a failed refine (what was added is removed).
    """
    started = begin(scene, collection, location, req, log)
    refine = None
    try:
        if started.refine is not None:
            job = started.refine
            refine = job.apply(job.run(progress=job.progress_logger(log)))
    except BaseException:
        started.abort()
        raise
    return started.finish(refine)


__all__ = ["REFINE_CAMERA_ITEMS", "CoreRefine", "RefineJob", "Request", "Started", "begin", "read_inputs", "run"]
