"""Operators: Fit to Reference Image (synchronous in background mode, a worker thread behind a
modal timer in the UI), Image to 3D, Generate, Preview, view list editing and backend info."""
from __future__ import annotations

import os
import time
from typing import Any, List, Optional, Tuple

import bpy
import mathutils

from . import preferences
from .jobs import generate, image_to_3d, masks, status
from .jobs.fit import FitOutput, FitSettings, result_notes, run_fit
from .jobs.records import SceneError
from .jobs.runner import Runner
from .props import background_color_property, background_key_property, background_tolerance_property
from .scene import fit as scene_fit
from .scene import generate as generate_scene
from .scene import image_to_3d as image_to_3d_scene
from .scene import io as scene_io

_last_losses: List[float] = []


def _views_from_props(context: Any) -> Tuple[List[Tuple[Optional[str], str, Optional[str]]], List[str]]:
    """(camera, image path, mask path) from the panel, and temporary files to delete afterwards."""
    s = context.scene.dibr
    views: List[Tuple[Optional[str], str, Optional[str]]] = []
    temps: List[str] = []
    mask = bpy.path.abspath(s.mask_path) if s.mask_path else None
    if s.image_path:
        views.append((None, bpy.path.abspath(s.image_path), mask))
    elif s.image is not None:
        path, tmp = scene_fit.image_path_of(s.image)
        views.append((None, path, mask))
        if tmp:
            temps.append(path)
    for v in s.views:
        if v.camera is None or not v.image_path:
            raise SceneError("every extra view needs a camera and an image")
        views.append((v.camera.name, bpy.path.abspath(v.image_path),
                      bpy.path.abspath(v.mask_path) if v.mask_path else None))
    return views, temps


def _report_notes(op: Any, view_data: List[Any]) -> None:
    """Tell the user what was adapted to read the views (e.g. the image's aspect)."""
    for v in view_data:
        if v.note:
            op.report({"WARNING"}, v.note)


def _cleanup(paths: List[str]) -> None:
    for p in paths:
        try:
            os.remove(p)
        except OSError:
            pass


def _begin_modal(op: Any, context: Any, steps: int) -> set:
    """Start a modal job's timer, progress bar and handler; the operator class is busy until
    :func:`_end_modal`."""
    type(op)._busy = True
    wm = context.window_manager
    op._timer = wm.event_timer_add(0.1, window=context.window)
    wm.progress_begin(0, steps)
    wm.modal_handler_add(op)
    return {"RUNNING_MODAL"}


def _end_modal(op: Any, context: Any) -> None:
    """Remove a modal job's timer, progress bar and status text; the operator class is free again."""
    wm = context.window_manager
    if op._timer is not None:
        wm.event_timer_remove(op._timer)
    wm.progress_end()
    context.workspace.status_text_set(None)
    type(op)._busy = False



def _viewport_direction(context: Any) -> Optional[Tuple[float, float, float]]:
    """The 3D viewport's world viewing direction when the operator runs from one (not looking
    through the camera); None otherwise, so Image to 3D faces the scene camera instead."""
    space = getattr(context, "space_data", None)
    if space is None or getattr(space, "type", "") != "VIEW_3D" or space.region_3d is None:
        return None
    rv3d = space.region_3d
    if rv3d.view_perspective == "CAMERA":
        return None
    d = rv3d.view_rotation @ mathutils.Vector((0.0, 0.0, -1.0))
    return (float(d.x), float(d.y), float(d.z))

class DIBR_OT_fit(bpy.types.Operator):
    """Fit the active mesh's shape, colours and texture to the reference image(s) with DIB-R"""

    bl_idname = "dibr.fit"
    bl_label = "Fit to Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    _timer: Any = None
    _runner: Optional[Runner] = None
    _busy: bool = False  # one interactive fit at a time

    @classmethod
    def poll(cls, context: Any) -> bool:
        ob = context.active_object
        return ob is not None and ob.type == "MESH" and not cls._busy

    def execute(self, context: Any) -> set:
        status.load_backend()  # imports torch/dibr_core now; the panel then shows device and backend
        settings = context.scene.dibr.to_fit_settings()
        temps: List[str] = []
        try:
            views, temps = _views_from_props(context)
            ob, mesh, view_data = scene_fit.gather(context.scene, context.active_object.name, views, settings,
                                                      context.scene.dibr.to_background())
            _report_notes(self, view_data)
            t0 = time.perf_counter()

            def progress(step: int, total: int, loss: float) -> None:
                if step == total or step % max(1, total // 10) == 0:
                    print(f"DIB-R fit: step {step}/{total} loss {loss:.5f}", flush=True)

            out = run_fit(mesh, view_data, settings, progress=progress)
            snap = scene_io.snapshot(ob)
            _write(ob, out, settings, view_data, snap, context.scene.dibr.apply_shape)
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            _cleanup(temps)
        _last_losses[:] = out.losses
        _report_result(self, out, time.perf_counter() - t0)
        return {"FINISHED"}

    def invoke(self, context: Any, event: Any) -> set:
        if bpy.app.background:
            return self.execute(context)
        status.load_backend()
        settings = context.scene.dibr.to_fit_settings()
        try:
            views, self._temps = _views_from_props(context)
            ob, mesh, view_data = scene_fit.gather(context.scene, context.active_object.name, views, settings,
                                                      context.scene.dibr.to_background())
            _report_notes(self, view_data)
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._ob_name = ob.name
        self._views = view_data
        self._settings = settings
        self._snapshot = scene_io.snapshot(ob)
        self._created_key = False
        self._t0 = time.perf_counter()
        self._runner = Runner(lambda progress, stop, preview: run_fit(mesh, view_data, settings, progress, stop,
                                                                      preview)).start()
        return _begin_modal(self, context, settings.steps)

    def _finish(self, context: Any) -> None:
        _end_modal(self, context)
        _cleanup(getattr(self, "_temps", []))

    def _restore(self) -> None:
        ob = bpy.data.objects.get(self._ob_name)
        if ob is not None:
            scene_io.restore(ob, self._snapshot, self._created_key)

    def modal(self, context: Any, event: Any) -> set:
        runner = self._runner
        assert runner is not None
        if event.type == "ESC":
            runner.cancel()
            runner.join()
            self._restore()
            self._finish(context)
            self.report({"WARNING"}, "DIB-R fit cancelled; the mesh is unchanged")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        st = runner.state()
        context.window_manager.progress_update(st.step)
        context.workspace.status_text_set(f"DIB-R fit: step {st.step}/{st.total}  loss {st.loss:.4f}  (Esc to cancel)")
        ob = bpy.data.objects.get(self._ob_name)
        preview = runner.take_preview()  # none with remeshing (the vertex count changes)
        if preview is not None and ob is not None and self._settings.optimize_vertices:
            try:
                created = scene_io.write_shape_key(ob, preview, apply=False)
                self._created_key = self._created_key or created
            except SceneError:
                pass
        if not st.done:
            return {"RUNNING_MODAL"}
        if st.error is not None or ob is None:
            self._restore()
            self._finish(context)
            self.report({"ERROR"}, st.error or "the object was deleted during the fit")
            return {"CANCELLED"}
        out: FitOutput = st.result
        try:
            self._restore()  # drop the live preview key, then write the result for real
            _write(ob, out, self._settings, self._views, self._snapshot, context.scene.dibr.apply_shape)
        except SceneError as exc:
            self._finish(context)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self._finish(context)
        _last_losses[:] = out.losses
        _report_result(self, out, time.perf_counter() - self._t0)
        return {"FINISHED"}


def _write(ob: Any, out: FitOutput, settings: FitSettings, views: List[Any], snap: Any, apply_shape: bool) -> None:
    """Write a finished fit and score what the user gets; on an error everything is put back
    (new mesh data, moved cameras, shape keys) and the SceneError goes on."""
    written = scene_fit.Written()
    try:
        written = scene_fit.apply_result(ob, out, settings, apply_shape)
        scene_fit.honest_report(ob, out, views, cameras_written=settings.write_cameras)
    except Exception:
        scene_fit.revert(ob, written, snap)
        raise


def _report_result(op: Any, out: FitOutput, seconds: float) -> None:
    op.report({"INFO"}, _summary(out, seconds))
    for line in result_notes(out):
        op.report({"INFO"}, f"DIB-R fit: {line}")


def _summary(out: FitOutput, seconds: float) -> str:
    ious = ", ".join(f"{v['camera']} IoU {v['silhouette_iou']:.3f}" for v in out.views)
    return f"DIB-R fit: {out.steps} steps in {seconds:.1f} s, loss {out.final_loss:.4f}; {ious}"


class DIBR_OT_image_to_3d(bpy.types.Operator):
    """Predict a textured mesh from one image (its alpha or a mask is the silhouette) and add it at
    the 3D cursor; optionally refine it with the DIB-R fit"""

    bl_idname = "dibr.image_to_3d"
    bl_label = "Image to 3D"
    bl_options = {"REGISTER", "UNDO"}

    image_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Image", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Image file of one object (used before Image Name)")
    image_name: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Image Name", description="Image datablock to use when no file is given")
    mask_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Mask", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Optional silhouette image (its alpha, or grey when it has none); default: the image's alpha")
    mask_name: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Mask Name", description="Optional silhouette image datablock (when no mask file is given)")
    background_key: background_key_property()  # type: ignore[valid-type]
    background_color: background_color_property()  # type: ignore[valid-type]
    background_tolerance: background_tolerance_property()  # type: ignore[valid-type]
    category: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Category", items=image_to_3d.CATEGORY_ITEMS, default="none",
        description="What the image shows (a hint, stored on the object)")
    size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Size", default=1.0, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Bounding-box diagonal of the predicted object (the refine may change it by a few per cent)")
    texture_size: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=256, min=0, max=4096,
        description="Side of the texture image in pixels (the prediction is resized bilinearly); 0 keeps the "
                    "predictor's own size")
    face_view: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Face View", default=True,
        description="Turn the object about Z so that the side the image shows faces the 3D viewport (the scene camera when not run from a viewport)")
    refine: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Refine with Fit", default=True,
        description="Fit shape and texture to the image in its input view after the prediction (a few seconds)")
    refine_steps: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Refine Steps", default=image_to_3d.REFINE_STEPS, min=1, max=100000,
        description="Fit steps of the refine")
    refine_camera: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Refine Camera", items=image_to_3d_scene.REFINE_CAMERA_ITEMS, default="AUTO",
        description="The camera that sees the image during the refine")
    refine_resolution: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Refine Resolution", default=image_to_3d.REFINE_RESOLUTION, min=16, max=2048,
        description="Longer side, in pixels, of the images the refine compares")

    def request(self) -> image_to_3d_scene.Request:
        return image_to_3d_scene.Request(
            image_path=self.image_path, image_name=self.image_name, mask_path=self.mask_path,
            mask_name=self.mask_name,
            background=masks.from_panel(self.background_key, tuple(self.background_color), self.background_tolerance),
            category=self.category, size=self.size, texture_size=self.texture_size,
            refine_steps=self.refine_steps if self.refine else 0, refine_camera=self.refine_camera,
            refine_resolution=self.refine_resolution, backend=preferences.backend(bpy.context),
            facing=_viewport_direction(bpy.context), face_view=self.face_view)

    _timer: Any = None
    _runner: Optional[Runner] = None
    _started: Optional[image_to_3d_scene.Started] = None
    _busy: bool = False  # one interactive refine at a time

    @classmethod
    def poll(cls, context: Any) -> bool:
        return not cls._busy

    @staticmethod
    def _log(line: str) -> None:
        print(f"DIB-R Image to 3D: {line}", flush=True)

    def execute(self, context: Any) -> set:
        status.load_backend()
        scene = context.scene
        collection = context.collection or scene.collection
        try:
            ob, report = image_to_3d_scene.run(scene, collection, tuple(scene.cursor.location), self.request(),
                                               log=self._log)
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, image_to_3d.summary(report))
        return {"FINISHED"}

    def invoke(self, context: Any, event: Any) -> set:
        """With a refine in the UI: predict and add the object now, then run the refine as a job
        with a progress bar; Esc removes everything this run added."""
        if bpy.app.background or not self.refine:
            return self.execute(context)
        status.load_backend()
        scene = context.scene
        collection = context.collection or scene.collection
        try:
            started = image_to_3d_scene.begin(scene, collection, tuple(scene.cursor.location), self.request(),
                                              log=self._log)
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        job = started.refine
        assert job is not None
        self._started = started
        self._runner = Runner(lambda progress, stop, preview: job.run(progress, stop)).start()
        return _begin_modal(self, context, job.steps)

    def _finish(self, context: Any) -> None:
        _end_modal(self, context)

    def modal(self, context: Any, event: Any) -> set:
        runner, started = self._runner, self._started
        assert runner is not None and started is not None and started.refine is not None
        if event.type == "ESC":
            runner.cancel()
            runner.join()
            started.abort()
            self._finish(context)
            self.report({"WARNING"}, "DIB-R Image to 3D cancelled; nothing was added")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        st = runner.state()
        context.window_manager.progress_update(st.step)
        context.workspace.status_text_set(
            f"DIB-R Image to 3D: refine step {st.step}/{st.total}  loss {st.loss:.4f}  (Esc to cancel)")
        if not st.done:
            return {"RUNNING_MODAL"}
        try:
            if st.error is not None:
                raise SceneError(f"the refine failed: {st.error}")
            refine = started.refine.apply(st.result)
            _, report = started.finish(refine)
        except (SceneError, ReferenceError) as exc:
            started.abort()
            self._finish(context)
            self.report({"ERROR"}, f"{exc}; nothing was added")
            return {"CANCELLED"}
        self._finish(context)
        self.report({"INFO"}, image_to_3d.summary(report))
        return {"FINISHED"}


class DIBR_OT_generate(bpy.types.Operator):
    """Generate textured objects of a category with the shipped generator, on a grid around the
    3D cursor, in the collection "DIB-R Generated" (made when missing)"""

    bl_idname = "dibr.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}

    # count and seed have no hard limits (Blender would clamp silently): out-of-range values from
    # scripts are reported as errors instead.
    category: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Category", items=generate.CATEGORY_ITEMS, default="chair",
        description="Category of the generated objects ('All' cycles through the categories)")
    count: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Count", default=1, soft_min=1, soft_max=generate.MAX_COUNT,
        description=f"Number of objects (1 to {generate.MAX_COUNT}), laid out on a near-square grid")
    seed: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Seed", default=0, soft_min=0,
        description="Random seed: the same seed gives the same objects, and object k does not depend on Count")
    size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Size", default=1.0, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Bounding-box diagonal of each object")
    spacing: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Spacing", default=1.5, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Distance between the centres of neighbouring objects on the grid")
    texture_size: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=256, min=0, max=4096,
        description="Side of each texture image in pixels (resized bilinearly); 0 keeps the generator's own size")
    temperature: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Temperature", default=1.0, min=0.0, soft_max=2.0,
        description="Spread of the samples around the category's mean shape (0: the mean shape, 1: as trained)")

    def request(self) -> generate_scene.Request:
        return generate_scene.Request(category=self.category, count=self.count, seed=self.seed, size=self.size,
                                      spacing=self.spacing, texture_size=self.texture_size,
                                      temperature=self.temperature)

    def execute(self, context: Any) -> set:
        status.load_backend()
        scene = context.scene
        try:
            _, report = generate_scene.run(scene, tuple(scene.cursor.location), self.request(),
                                           log=lambda line: print(f"DIB-R Generate: {line}", flush=True))
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, generate.summary(report))
        return {"FINISHED"}


class DIBR_OT_preview(bpy.types.Operator):
    """Render the DIB-R view of the active mesh beside the reference, and the last loss curve"""

    bl_idname = "dibr.preview"
    bl_label = "Preview DIB-R Render"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set:
        from .jobs import preview

        temps: List[str] = []
        ob = context.active_object
        if ob is None or ob.type != "MESH":
            self.report({"ERROR"}, "DIB-R preview: no active mesh object; select the mesh to preview")
            return {"CANCELLED"}
        try:
            views, temps = _views_from_props(context)
            settings = context.scene.dibr.to_fit_settings()
            ob, mesh, view_data = scene_fit.gather(context.scene, context.active_object.name, views[:1], settings,
                                                      context.scene.dibr.to_background())
            img = preview.side_by_side(mesh, view_data[0])
        except SceneError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        finally:
            _cleanup(temps)
        scene_io.write_image("DIB-R Preview", img)
        if _last_losses:
            scene_io.write_image("DIB-R Loss", preview.loss_curve(_last_losses))
        self.report({"INFO"}, "DIB-R preview written to the image 'DIB-R Preview'")
        return {"FINISHED"}


class DIBR_OT_view_add(bpy.types.Operator):
    """Add a camera + reference image pair for multi-view fitting"""

    bl_idname = "dibr.view_add"
    bl_label = "Add View"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set:
        context.scene.dibr.views.add()
        return {"FINISHED"}


class DIBR_OT_view_remove(bpy.types.Operator):
    """Remove the last extra view"""

    bl_idname = "dibr.view_remove"
    bl_label = "Remove View"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: Any) -> set:
        views = context.scene.dibr.views
        if len(views):
            views.remove(len(views) - 1)
        return {"FINISHED"}


class DIBR_OT_backend_info(bpy.types.Operator):
    """Report which DIB-R backend runs (imports torch on first use)"""

    bl_idname = "dibr.backend_info"
    bl_label = "DIB-R Backend Info"
    bl_options = {"REGISTER"}

    def execute(self, context: Any) -> set:
        line = status.load_backend()
        self.report({"INFO"}, line)
        return {"FINISHED"}


CLASSES = [DIBR_OT_fit, DIBR_OT_image_to_3d, DIBR_OT_generate, DIBR_OT_preview, DIBR_OT_view_add, DIBR_OT_view_remove,
           DIBR_OT_backend_info]
