"""Fit steps shared by the operators and the batch CLI: gather inputs from the scene (with
every check done before anything is written) and apply a result to the scene."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import bpy
import numpy as np

from ..jobs.fit import FitOutput, FitSettings, check_settings, result_notes
from ..jobs.masks import BackgroundKey
from ..jobs.records import MeshData, SceneError, Snapshot, ViewData
from . import io
from .carry import carry_mesh_data


def image_path_of(img: Any) -> Tuple[str, bool]:
    """A readable file for an image datablock: its file, or a temporary PNG of its pixels.
    Returns (path, is_temporary)."""
    if img.source == "FILE" and not img.packed_file and img.filepath:
        path = bpy.path.abspath(img.filepath)
        if os.path.isfile(path):
            return path, False
    fd, path = tempfile.mkstemp(suffix=".png", prefix="dibr_ref_")
    os.close(fd)
    copy = img.copy()
    try:
        copy.filepath_raw = path
        copy.file_format = "PNG"
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return path, True


def gather(scene: Any, object_name: Optional[str], views: Sequence[Tuple[Any, ...]],
           settings: FitSettings, background: Optional[BackgroundKey] = None) -> Tuple[Any, MeshData, List[ViewData]]:
    """Validate and read everything the fit needs.

    Args:
        views: (camera name or None for the scene camera, image path[, mask path]) tuples.
        background: key the silhouette out of this background colour for views without a mask.
    Raises:
        SceneError with a one-line message naming what is wrong.
    """
    ob = io.get_object(object_name)
    if not views:
        raise SceneError("no reference image given")
    try:
        check_settings(settings)
    except SceneError as exc:
        raise SceneError(f"object '{ob.name}': {exc}") from None
    view_data = []
    for spec in views:
        cam_name, path = spec[0], spec[1]
        mask = spec[2] if len(spec) > 2 else None
        if cam_name:
            cam = bpy.data.objects.get(cam_name)
            if cam is None:
                raise SceneError(f"no camera named '{cam_name}'")
        else:
            cam = scene.camera
            if cam is None:
                raise SceneError("the scene has no active camera")
        view_data.append(io.read_view(cam, scene, path, settings.max_side, mask, background))
    mesh = io.read_mesh(ob, with_texture=settings.optimize_texture)
    lights, ambient = io.read_lights(scene, mesh.vertices.mean(0))
    if lights:  # the scene's lights, merged into one sun for the "sun" lighting model
        dirs = np.array([d * float(np.linalg.norm(c)) for d, c in lights]).sum(0)
        direction = dirs / max(float(np.linalg.norm(dirs)), 1e-9)
        mesh.sun = (direction, np.array([c for _, c in lights]).sum(0), ambient)
    if not mesh.same_topology and settings.optimize_vertices:
        raise SceneError(f"mesh '{ob.name}': modifiers change the vertex count; apply them before fitting")
    if settings.optimize_vertices:
        moving = io.moving_modifiers(ob)
        if moving:
            raise SceneError(f"mesh '{ob.name}': modifier(s) {', '.join(repr(n) for n in moving)} move the vertices, "
                             "so the fitted shape would be moved again; apply them (or turn them off) before "
                             "fitting the shape")
    if settings.remeshing:
        ngons = sum(1 for p in ob.data.polygons if p.loop_total > 4)
        if ngons:
            raise SceneError(f"mesh '{ob.name}' has {ngons} n-gon(s) (faces with more than 4 corners); remeshing "
                             "starts from one closed surface of triangles and quads: triangulate them (Face > "
                             "Triangulate Faces) or turn remeshing off")
    if settings.write_cameras:
        seen: dict = {}
        for v in view_data:
            if v.camera.name in seen:
                raise SceneError(f"camera '{v.camera.name}' sees two references ({seen[v.camera.name]} and "
                                 f"{v.image_name}); each view's camera is refined on its own, so it cannot be "
                                 "written back: give each reference its own camera, or do not write the cameras")
            seen[v.camera.name] = v.image_name
    if settings.optimize_texture and mesh.face_uvs is None and not settings.remeshing:
        loop_uvs, face_uvs = io.smart_uv_project(ob)
        if face_uvs.shape[0] != mesh.faces.shape[0]:
            raise SceneError(f"mesh '{ob.name}': Smart UV Project's UVs cover {face_uvs.shape[0]} triangles, the "
                             f"mesh has {mesh.faces.shape[0]}; add a UV map before fitting a texture")
        mesh.face_uvs, mesh.loop_uvs = face_uvs, loop_uvs
    return ob, mesh, view_data


FIT_NOTE = "dibr_fit_note"   # object property: why the last fit left no shape key (shown in the panel)


@dataclass
class Written:
    """What :func:`apply_result` changed beyond the start mesh's own data, to put it back with
    :func:`revert`: the mesh the object had before (when the result is new mesh data), and the
    cameras it moved (name -> ``io.camera_state``)."""

    old_mesh: Any = None
    cameras: Dict[str, Tuple[Any, ...]] = field(default_factory=dict)
    created_key: bool = False
    note_before: Optional[str] = None


def apply_result(ob: Any, out: FitOutput, settings: FitSettings, apply_geometry: bool = False,
                 texture_path: Optional[str] = None) -> Written:
    """Write the fit into ordinary Blender data: the shape key "DIB-R Fit" (or, with
    ``apply_geometry``, the mesh's positions), or new mesh data when remeshing changed the
    topology; colours, the texture and its UV map (``loop_uvs``: the UVs made for a mesh without
    a UV map, per loop); with ``settings.write_cameras`` the refined cameras. On an error
    everything written is put back before the exception goes on."""
    written = Written(note_before=ob.get(FIT_NOTE))
    snap = io.snapshot(ob)
    try:
        if out.topology_changed:
            assert out.faces is not None
            groups, active_group = [g.name for g in ob.vertex_groups], ob.vertex_groups.active_index
            written.old_mesh = io.replace_mesh_data(ob, out.vertices, out.faces)
            if out.source_positions is not None:
                out.carried = carry_mesh_data(ob, written.old_mesh, io.world_to_local(ob, out.source_positions),
                                              groups, active_group).note()
            if out.carried_colors is not None:
                old_attr = written.old_mesh.color_attributes.active_color
                io.write_point_colors(ob, out.carried_colors, old_attr.name if old_attr is not None else io.COLOR_ATTR)
        elif settings.optimize_vertices:
            written.created_key = io.write_shape_key(ob, out.vertices, apply=apply_geometry)
        if out.colors is not None:
            io.write_colors(ob, out.colors)
            if out.texture is None:
                io.wire_vertex_colors(ob)
        if out.texture is not None:
            if out.topology_changed and out.face_uvs is not None:
                io.write_uv_map(ob, out.face_uvs.reshape(-1, 2))   # one loop per triangle corner
            elif out.loop_uvs is not None and ob.data.uv_layers.active is None:
                io.write_uv_map(ob, out.loop_uvs)
            elif out.face_uvs is not None:
                io.ensure_uv_map(ob, out.face_uvs)
            io.write_texture(ob, out.texture, pack=texture_path is None, path=texture_path)
        if settings.write_cameras:
            write_cameras(out, written)
        if out.topology_changed:
            ob[FIT_NOTE] = result_notes(out)[0]
        elif FIT_NOTE in ob:
            del ob[FIT_NOTE]
    except Exception:
        revert(ob, written, snap)
        raise
    return written


def write_cameras(out: FitOutput, written: Written) -> None:
    """Move each view's Blender camera to its refined camera (see ``io.write_camera``)."""
    scales = {c["camera"]: float(c["focal_scale"]) for c in out.camera_corrections}
    for cam in out.cameras:
        cam_ob = bpy.data.objects.get(cam.name)
        if cam_ob is None or cam_ob.type != "CAMERA":
            raise SceneError(f"camera '{cam.name}' is gone; the refined cameras were not written")
        if cam.name not in written.cameras:
            written.cameras[cam.name] = io.camera_state(cam_ob)
        io.write_camera(cam_ob, cam.view, scales.get(cam.name, 1.0))


def revert(ob: Any, written: Written, snap: Optional[Snapshot] = None) -> None:
    """Put back what :func:`apply_result` wrote beyond the start mesh's data: the old mesh
    datablock and the cameras; with ``snap`` also the shape keys (``io.restore``)."""
    for name, state in written.cameras.items():
        cam_ob = bpy.data.objects.get(name)
        if cam_ob is not None:
            io.restore_camera(cam_ob, state)
    written.cameras.clear()
    if written.old_mesh is not None:
        io.put_back_mesh(ob, written.old_mesh)
        written.old_mesh = None
    if written.note_before is not None:
        ob[FIT_NOTE] = written.note_before
    elif FIT_NOTE in ob:
        del ob[FIT_NOTE]
    if snap is not None:
        io.restore(ob, snap, written.created_key)


def scores_as_seen(ob: Any, views: Sequence[ViewData]) -> List[float]:
    """The silhouette IoU of each view computed on what the user gets: the object's evaluated mesh
    (shape key, modifiers) after the result was written, rendered through the view's camera."""
    from ..jobs.heldout import silhouette_iou
    from ..jobs.preview import render_view

    mesh = io.read_mesh(ob, with_texture=False)
    black = np.zeros((len(mesh.vertices), 3))
    return [silhouette_iou(render_view(mesh, v, colors=black)[..., 3], v.mask) for v in views]


def honest_report(ob: Any, out: FitOutput, views: Sequence[ViewData], cameras_written: bool = False) -> None:
    """Replace each view's ``silhouette_iou`` in ``out.views`` by the score of what the user gets
    (:func:`scores_as_seen`; through the refined cameras when ``cameras_written``), keeping the
    optimiser's own as ``fit_silhouette_iou``; ``out.self_intersecting_faces`` becomes the count
    on the written, evaluated mesh (``dibr_core.mesh_queries.self_intersecting_faces``)."""
    import torch

    from dibr_core.mesh_queries import self_intersecting_faces

    refined = {c.name: c for c in out.cameras} if cameras_written else {}
    seen = [replace(v, camera=refined[v.camera.name]) if v.camera.name in refined else v for v in views]
    for entry, iou in zip(out.views, scores_as_seen(ob, seen)):
        entry["fit_silhouette_iou"] = entry["silhouette_iou"]
        entry["silhouette_iou"] = iou
    mesh = io.read_mesh(ob, with_texture=False)
    out.self_intersecting_faces = self_intersecting_faces(torch.from_numpy(mesh.vertices).double(),
                                                          torch.from_numpy(mesh.faces))


def preview_vertices(ob: Any, vertices_world: np.ndarray) -> None:
    """Show intermediate positions live (through the "DIB-R Fit" key)."""
    io.write_shape_key(ob, vertices_world, apply=False)


__all__ = ["Written", "apply_result", "gather", "honest_report", "image_path_of", "preview_vertices",
           "revert", "scores_as_seen", "write_cameras"]
