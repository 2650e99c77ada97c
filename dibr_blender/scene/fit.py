"""Fit steps shared by the operators and the batch CLI: gather inputs from the scene (with
every check done before anything is written) and apply a result to the scene."""
from __future__ import annotations

import os
import tempfile
from typing import Any, List, Optional, Sequence, Tuple

import bpy
import numpy as np

from ..jobs.fit import FitOutput, FitSettings
from ..jobs.masks import BackgroundKey
from ..jobs.records import MeshData, SceneError, ViewData
from . import io


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
    if settings.optimize_texture and mesh.face_uvs is None:
        if any(p.loop_total != 3 for p in ob.data.polygons) or not mesh.same_topology:
            raise SceneError(f"mesh '{ob.name}' has no UV map; add one (or triangulate) to fit a texture")
    return ob, mesh, view_data


def apply_result(ob: Any, out: FitOutput, settings: FitSettings, apply_geometry: bool = False,
                 texture_path: Optional[str] = None) -> bool:
    """Write the fit into ordinary Blender data. Returns True when the "DIB-R Fit" key was created."""
    created = False
    if settings.optimize_vertices:
        created = io.write_shape_key(ob, out.vertices, apply=apply_geometry)
    if out.colors is not None:
        io.write_colors(ob, out.colors)
        if out.texture is None:
            io.wire_vertex_colors(ob)
    if out.texture is not None:
        if out.face_uvs is not None:
            io.ensure_uv_map(ob, out.face_uvs)
        io.write_texture(ob, out.texture, pack=texture_path is None, path=texture_path)
    return created


def scores_as_seen(ob: Any, views: Sequence[ViewData]) -> List[float]:
    """The silhouette IoU of each view computed on what the user gets: the object's evaluated mesh
    (shape key, modifiers) after the result was written, rendered through the view's camera."""
    from ..jobs.preview import render_view

    mesh = io.read_mesh(ob, with_texture=False)
    ious = []
    for v in views:
        cover = render_view(mesh, v, colors=np.zeros((len(mesh.vertices), 3)))[..., 3] > 0.5
        target = v.mask > 0.5
        ious.append(float((cover & target).sum()) / max(1.0, float((cover | target).sum())))
    return ious


def honest_report(ob: Any, out: FitOutput, views: Sequence[ViewData]) -> None:
    """Replace each view's ``silhouette_iou`` in ``out.views`` by the score of what the user gets
    (:func:`scores_as_seen`), keeping the optimiser's own as ``fit_silhouette_iou``."""
    for entry, iou in zip(out.views, scores_as_seen(ob, views)):
        entry["fit_silhouette_iou"] = entry["silhouette_iou"]
        entry["silhouette_iou"] = iou


def preview_vertices(ob: Any, vertices_world: np.ndarray) -> None:
    """Show intermediate positions live (through the "DIB-R Fit" key)."""
    io.write_shape_key(ob, vertices_world, apply=False)


__all__ = ["apply_result", "gather", "honest_report", "image_path_of", "preview_vertices", "scores_as_seen"]
