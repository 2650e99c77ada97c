"""The bridge between a Blender scene and plain arrays: reading meshes, cameras, lights and
reference images, and writing fitted geometry, colours and textures back. All bpy access of
the extension's data path lives here; the conversions themselves are in ``convert`` (pure)."""
from __future__ import annotations

import math
import os
from typing import Any, Callable, List, Optional, Tuple, TypeVar

import bpy
import mathutils
import numpy as np

from ..jobs import convert, masks
from ..jobs.records import CameraData, MeshData, SceneError, Snapshot, ViewData

T = TypeVar("T")

FIT_KEY = "DIB-R Fit"
COLOR_ATTR = "DIB-R Color"
TEXTURE_NAME = "DIB-R Texture"
UV_NAME = "DIB-R UV"


def get_object(name: Optional[str]) -> Any:
    """The named object, or the active one; it must be a mesh with faces."""
    if name:
        ob = bpy.data.objects.get(name)
        if ob is None:
            raise SceneError(f"no object named '{name}' in the scene")
    else:
        view_layer: Any = bpy.context.view_layer
        ob = view_layer.objects.active
        if ob is None:
            raise SceneError("no active object: select the mesh to fit")
    if ob.type != "MESH":
        raise SceneError(f"object '{ob.name}' is a {ob.type.lower()}, not a mesh")
    data: Any = ob.data
    if len(data.polygons) == 0:
        raise SceneError(f"mesh '{ob.name}' has no faces")
    return ob


def read_mesh(ob: Any, with_texture: bool = True, depsgraph: Any = None) -> MeshData:
    """Evaluated mesh (modifiers applied, n-gons triangulated) in world space (evaluated in
    ``depsgraph``, default the context's)."""
    dg = depsgraph if depsgraph is not None else bpy.context.evaluated_depsgraph_get()
    ev = ob.evaluated_get(dg)
    me = ev.to_mesh()
    try:
        me.calc_loop_triangles()
        V = len(me.vertices)
        T = len(me.loop_triangles)
        if V == 0 or T == 0:
            raise SceneError(f"mesh '{ob.name}' is empty after modifiers")
        co = np.empty(V * 3, dtype=np.float32)
        me.vertices.foreach_get("co", co)
        tri = np.empty(T * 3, dtype=np.int32)
        me.loop_triangles.foreach_get("vertices", tri)
        loops = np.empty(T * 3, dtype=np.int32)
        me.loop_triangles.foreach_get("loops", loops)
        M = np.array(ev.matrix_world, dtype=np.float64)
        verts = (co.reshape(V, 3).astype(np.float64) @ M[:3, :3].T + M[:3, 3]).astype(np.float32)
        face_uvs = None
        if me.uv_layers.active is not None:
            uv = np.empty(len(me.loops) * 2, dtype=np.float32)
            me.uv_layers.active.data.foreach_get("uv", uv)
            face_uvs = uv.reshape(-1, 2)[loops].reshape(T, 3, 2)
        colors = None
        attr = me.color_attributes.active_color
        if attr is not None:
            n = len(attr.data)
            rgba = np.empty(n * 4, dtype=np.float32)
            attr.data.foreach_get("color", rgba)  # linear for both byte and float attributes
            rgb = rgba.reshape(n, 4)[:, :3]
            if attr.domain == "POINT":
                colors = rgb.copy()
            elif attr.domain == "CORNER":
                lv = np.empty(len(me.loops), dtype=np.int32)
                me.loops.foreach_get("vertex_index", lv)
                colors = convert.corner_to_vertex(rgb, lv, V)
        texture = _find_base_texture(ob) if with_texture else None
        same = V == len(ob.data.vertices)
        return MeshData(ob.name, verts, tri.reshape(T, 3).astype(np.int64), face_uvs, colors, texture, M, same)
    finally:
        ev.to_mesh_clear()


def _evaluated_positions(ob: Any) -> np.ndarray:
    """(V, 3) float64 object-space positions of the evaluated mesh."""
    ev = ob.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    try:
        co = np.empty(len(me.vertices) * 3, dtype=np.float32)
        me.vertices.foreach_get("co", co)
        return co.reshape(-1, 3).astype(np.float64)
    finally:
        ev.to_mesh_clear()


def moving_modifiers(ob: Any) -> List[str]:
    """Names of the object's viewport modifiers when together they move its vertices (keeping
    their number): a fitted shape written under them would be moved by them again. Found by
    evaluating the mesh with the modifiers on and off (restored after)."""
    on = [m for m in ob.modifiers if m.show_viewport]
    if not on:
        return []
    view_layer: Any = bpy.context.view_layer
    with_mods = _evaluated_positions(ob)
    try:
        for m in on:
            m.show_viewport = False
        view_layer.update()
        without = _evaluated_positions(ob)
    finally:
        for m in on:
            m.show_viewport = True
        view_layer.update()
    if with_mods.shape != without.shape:
        return []
    tol = 1e-6 * (max(float(np.ptp(without, axis=0).max()), 1e-9) if len(without) else 1.0)
    if float(np.abs(with_mods - without).max(initial=0.0)) <= tol:
        return []
    moving = []
    for m in on:  # name the ones that matter: those whose removal alone changes the result
        try:
            m.show_viewport = False
            view_layer.update()
            alone = _evaluated_positions(ob)
        finally:
            m.show_viewport = True
            view_layer.update()
        if alone.shape != with_mods.shape or float(np.abs(alone - with_mods).max(initial=0.0)) > tol:
            moving.append(m.name)
    return moving or [m.name for m in on]


def _find_base_texture(ob: Any) -> Optional[np.ndarray]:
    """The image feeding the Base Color of the object's first material, if any."""
    mat = ob.active_material
    if mat is None or mat.node_tree is None:
        return None
    for node in mat.node_tree.nodes:
        if node.type == "BSDF_PRINCIPLED":
            links = node.inputs["Base Color"].links
            if links and links[0].from_node.type == "TEX_IMAGE" and links[0].from_node.image is not None:
                return image_to_array(links[0].from_node.image)[..., :3]
    return None


def _pixels(img: Any) -> np.ndarray:
    """(H, W, 4) float32 pixels of an image datablock as Blender stores them (bottom row first)."""
    w, h = img.size
    if w == 0 or h == 0:
        raise SceneError(f"image '{img.name}' has no pixels (missing or unreadable file?)")
    px = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    return px.reshape(h, w, 4)


def image_to_array(img: Any) -> np.ndarray:
    """(H, W, 4) float32, linear RGB + alpha, rows top to bottom."""
    arr = _pixels(img)
    if not img.is_float and img.colorspace_settings.name == "sRGB":
        arr[..., :3] = convert.srgb_to_linear(arr[..., :3])
    return convert.flip_rows(arr)


def load_image(path: str) -> np.ndarray:
    """Read an image file through Blender (any format it knows) without leaving a datablock.
    Returns (H, W, 4) linear RGBA, rows top to bottom; see ``image_has_alpha``."""
    return _load(path)[0]


def image_has_alpha(img: Any) -> bool:
    """Whether the file behind an image datablock stores an alpha channel: for a PNG file, its
    colour type (and tRNS chunk); otherwise the bits per pixel (RGBA 8, 16 or 32 bits)."""
    if img.source == "FILE" and not img.packed_file and img.filepath:
        from_png = masks.png_has_alpha(bpy.path.abspath(img.filepath_raw or img.filepath))
        if from_png is not None:
            return from_png
    return int(img.depth) in (32, 64, 128)


def _read_file(path: str, read: Callable[[Any], T]) -> T:
    """``read(datablock)`` of an image file loaded through Blender; the datablock is removed after."""
    if not os.path.isfile(path):
        raise SceneError(f"image file not found: {path}")
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as exc:
        raise SceneError(f"cannot read image {path}: {str(exc).strip().splitlines()[-1]}") from None
    try:
        if img.size[0] == 0 or img.size[1] == 0:
            raise SceneError(f"cannot read image {path}: not an image file Blender can decode")
        return read(img)
    finally:
        bpy.data.images.remove(img)


def _load(path: str, raw: bool = False) -> Tuple[np.ndarray, bool]:
    def read(img: Any) -> Tuple[np.ndarray, bool]:
        if raw:  # data, not colour: read the stored values
            cs: Any = img.colorspace_settings
            cs.name = "Non-Color"
        return image_to_array(img), image_has_alpha(img)

    return _read_file(path, read)


def camera_params(cam_ob: Any, scene: Any) -> convert.CameraParams:
    cam = cam_ob.data
    r = scene.render
    pct = r.resolution_percentage / 100.0
    return convert.CameraParams(
        type=cam.type, lens=cam.lens, sensor_width=cam.sensor_width, sensor_height=cam.sensor_height,
        sensor_fit=cam.sensor_fit, shift_x=cam.shift_x, shift_y=cam.shift_y, clip_start=cam.clip_start,
        clip_end=cam.clip_end, ortho_scale=cam.ortho_scale, res_x=max(1, int(r.resolution_x * pct)),
        res_y=max(1, int(r.resolution_y * pct)), pixel_aspect_x=r.pixel_aspect_x, pixel_aspect_y=r.pixel_aspect_y)


def read_camera(cam_ob: Any, scene: Any, max_side: int,
                image_size: Optional[Tuple[int, int]] = None) -> CameraData:
    """The camera's exact projection and view, and the fit resolution (longer side <= max_side).
    With ``image_size`` (width, height) of a reference whose aspect differs from the render's, the
    camera is taken as it renders that image (``convert.with_image_aspect``)."""
    if cam_ob is None:
        raise SceneError("the scene has no camera")
    if cam_ob.type != "CAMERA":
        raise SceneError(f"object '{cam_ob.name}' is not a camera")
    params = camera_params(cam_ob, scene)
    if params.type not in ("PERSP", "ORTHO"):
        raise SceneError(f"camera '{cam_ob.name}' is {params.type.lower()}; only perspective and "
                         "orthographic cameras are supported")
    if image_size is not None:
        params = convert.with_image_aspect(params, *image_size)[0]
    P = convert.projection_matrix(params)
    view = convert.view_matrix(np.array(cam_ob.matrix_world))
    w, h = convert.fit_resolution(params.res_x, params.res_y, max_side)
    return CameraData(cam_ob.name, view, P, w, h, params.clip_start, params.clip_end)


def read_view(cam_ob: Any, scene: Any, image_path: str, max_side: int, mask_path: Optional[str] = None,
              background: Optional[masks.BackgroundKey] = None) -> ViewData:
    """A camera and its reference image (resized to the fit resolution). The silhouette is
    ``mask_path``'s alpha (or its red channel when it has no alpha), else the mask keyed from the
    ``background`` colour, else the image's alpha. An empty silhouette, or one that covers the
    whole image (an opaque render), is refused with a SceneError."""
    cam = read_camera(cam_ob, scene, max_side)  # checks the camera before reading the image
    rgba, has_alpha = _load(image_path)
    H, W = rgba.shape[:2]
    try:
        masks.check_image_size(W, H, f"image {image_path}")
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    params = camera_params(cam_ob, scene)
    note = ""
    if convert.with_image_aspect(params, W, H)[1]:
        cam = read_camera(cam_ob, scene, max_side, image_size=(W, H))
        note = (f"{os.path.basename(image_path)} is {W}x{H} but the render is {params.res_x}x{params.res_y}: "
                f"camera '{cam_ob.name}' is used at the image's aspect (sensor fit {cam_ob.data.sensor_fit.lower()})")
    if mask_path:
        m, m_alpha = _load(mask_path, raw=True)
        mask = m[..., 3] if m_alpha else m[..., 0]
    elif background is not None:
        mask = masks.key_mask(convert.linear_to_srgb(rgba[..., :3]), background)
    else:
        if not has_alpha:
            raise SceneError(f"image {image_path} has no alpha channel; give a mask image for the silhouette "
                             "or key out the background colour")
        mask = rgba[..., 3]
    try:
        masks.check_silhouette(mask, image_path, from_alpha=not mask_path and background is None)
    except ValueError as exc:
        raise SceneError(f"view of camera '{cam_ob.name}': {exc}") from None
    rgba = convert.resize_image(rgba, cam.width, cam.height)
    mask = convert.resize_image(np.ascontiguousarray(mask)[..., None], cam.width, cam.height)[..., 0]
    return ViewData(cam, rgba[..., :3].copy(), np.ascontiguousarray(mask, dtype=np.float32),
                    os.path.basename(image_path), note)


def read_lights(scene: Any, target: np.ndarray) -> Tuple[List[Tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Visible lights as directional lights at ``target``, and the world colour as ambient."""
    lights = []
    for ob in scene.objects:
        if ob.type != "LIGHT" or ob.hide_render:
            continue
        L = ob.data
        lights.append(convert.light_to_directional(
            convert.LightParams(L.type, tuple(L.color), float(L.energy), np.array(ob.matrix_world)), target))
    ambient = np.zeros(3)
    world = scene.world
    if world is not None and world.node_tree is not None:
        bg = world.node_tree.nodes.get("Background")
        if bg is not None:
            col = np.array(bg.inputs["Color"].default_value[:3], dtype=np.float64)
            ambient = col * float(bg.inputs["Strength"].default_value)
    elif world is not None:
        ambient = np.array(world.color[:3], dtype=np.float64)
    return lights, ambient


# --- write-back -----------------------------------------------------------------------------

def snapshot(ob: Any) -> Snapshot:
    keys = ob.data.shape_keys
    snap = Snapshot(ob.name, keys is not None, active_shape_key_index=ob.active_shape_key_index,
                    show_only_shape_key=ob.show_only_shape_key)
    if keys is not None:
        snap.key_values = {kb.name: kb.value for kb in keys.key_blocks}
    return snap


def restore(ob: Any, snap: Snapshot, created_key: bool) -> None:
    """Undo what a fit wrote: remove the key it created, restore key values and flags."""
    keys = ob.data.shape_keys
    if keys is not None and created_key and FIT_KEY in keys.key_blocks:
        ob.shape_key_remove(keys.key_blocks[FIT_KEY])
    if not snap.had_shape_keys and ob.data.shape_keys is not None:
        ob.shape_key_clear()
    keys = ob.data.shape_keys
    if keys is not None:
        for kb in keys.key_blocks:
            if kb.name in snap.key_values:
                kb.value = snap.key_values[kb.name]
    ob.active_shape_key_index = snap.active_shape_key_index
    ob.show_only_shape_key = snap.show_only_shape_key
    ob.data.update()


def world_to_local(ob: Any, vertices_world: np.ndarray) -> np.ndarray:
    M = np.array(ob.matrix_world, dtype=np.float64)
    Minv = np.linalg.inv(M)
    return (vertices_world.astype(np.float64) @ Minv[:3, :3].T + Minv[:3, 3]).astype(np.float32)


def write_shape_key(ob: Any, vertices_world: np.ndarray, apply: bool = False) -> bool:
    """Write fitted positions as the shape key "DIB-R Fit" (value 1), or into the mesh.
    Returns True when the key was created by this call."""
    me = ob.data
    local = world_to_local(ob, vertices_world)
    if local.shape[0] != len(me.vertices):
        raise SceneError(f"mesh '{ob.name}': modifiers change the vertex count "
                         f"({len(me.vertices)} -> {local.shape[0]}); apply them before fitting")
    if apply:
        me.vertices.foreach_set("co", local.ravel())
        me.update()
        return False
    created = False
    if me.shape_keys is None:
        ob.shape_key_add(name="Basis", from_mix=False)
    kb = me.shape_keys.key_blocks.get(FIT_KEY)
    if kb is None:
        kb = ob.shape_key_add(name=FIT_KEY, from_mix=False)
        created = True
    kb.data.foreach_set("co", local.ravel())
    kb.value = 1.0
    me.update()
    return created


def fill_triangles(me: Any, vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Fill the empty mesh datablock ``me`` with (V, 3) vertices and (F, 3) triangles (one
    polygon per face, loops in face order), compute its edges and validate it. Returns True
    when validation had to correct something (the input was not a valid mesh)."""
    F = len(faces)
    me.vertices.add(len(vertices))
    me.loops.add(3 * F)
    me.polygons.add(F)
    me.vertices.foreach_set("co", np.ascontiguousarray(vertices, dtype=np.float32).ravel())
    me.loops.foreach_set("vertex_index", np.ascontiguousarray(faces, dtype=np.int32).ravel())
    me.polygons.foreach_set("loop_start", np.arange(0, 3 * F, 3, dtype=np.int32))
    me.polygons.foreach_set("loop_total", np.full(F, 3, dtype=np.int32))
    me.update(calc_edges=True)
    return bool(me.validate())


def replace_mesh_data(ob: Any, vertices_world: np.ndarray, faces: np.ndarray) -> Any:
    """Give ``ob`` a new mesh datablock of triangles (a fit that changed the topology): named
    after the old one plus " DIB-R Fit", with the old mesh's materials and shading (smooth when
    most of its faces were). The old datablock is kept (undo and cancel put it back; without
    users it is dropped when the file is saved). Returns the old mesh."""
    old = ob.data
    me = bpy.data.meshes.new(f"{old.name} DIB-R Fit")
    try:
        if fill_triangles(me, world_to_local(ob, vertices_world), faces):
            raise SceneError(f"mesh '{ob.name}': the remeshed surface is not a valid mesh")
        for mat in old.materials:
            me.materials.append(mat)
        smooth = np.empty(len(old.polygons), dtype=bool)
        old.polygons.foreach_get("use_smooth", smooth)
        if len(smooth) and smooth.mean() >= 0.5:
            me.shade_smooth()
    except Exception:
        bpy.data.meshes.remove(me)
        raise
    ob.data = me
    return old


def put_back_mesh(ob: Any, old: Any) -> None:
    """Undo :func:`replace_mesh_data`: ``old`` becomes the object's mesh again and the new one
    is removed when nothing else uses it."""
    new = ob.data
    if new == old:
        return
    ob.data = old
    if new.users == 0:
        bpy.data.meshes.remove(new)


def write_point_colors(ob: Any, colors: np.ndarray, name: str) -> None:
    """Colours (V, 3) linear as the float point attribute ``name``, made active (the start
    mesh's colours carried onto a remeshed surface)."""
    me = ob.data
    attr = me.color_attributes.get(name) or me.color_attributes.new(name, "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([colors.astype(np.float32), np.ones((colors.shape[0], 1), np.float32)], axis=1)
    attr.data.foreach_set("color", rgba.ravel())
    me.color_attributes.active_color = attr
    me.color_attributes.render_color_index = me.color_attributes.find(name)
    me.update()


def camera_state(cam_ob: Any) -> Tuple[Any, ...]:
    """What :func:`write_camera` changes, to put it back with :func:`restore_camera`."""
    d = cam_ob.data
    return (cam_ob.matrix_world.copy(), d, d.lens, d.ortho_scale, d.shift_x, d.shift_y)


def restore_camera(cam_ob: Any, state: Tuple[Any, ...]) -> None:
    matrix, data, lens, ortho, sx, sy = state
    made = cam_ob.data if cam_ob.data != data else None
    cam_ob.data = data
    data.lens, data.ortho_scale, data.shift_x, data.shift_y = lens, ortho, sx, sy
    cam_ob.matrix_world = matrix
    if made is not None and made.users == 0:
        bpy.data.cameras.remove(made)


def write_camera(cam_ob: Any, view: np.ndarray, focal_scale: float = 1.0) -> None:
    """Move a Blender camera to a refined dibr camera: the world matrix becomes the inverse of
    ``view`` (4, 4) (both look down local -Z with +Y up), keeping the object's scale; a focal
    scale ``k`` != 1 multiplies the lens (an orthographic camera's scale by 1/k) and the lens
    shift by ``k``: dibr's refinement scales the projection's first two rows, which zooms about
    the image centre, and Blender's shift is in units of the sensor, independent of the lens.
    Camera data shared with other objects is copied first when the focal length changes."""
    R = np.asarray(view, dtype=np.float64)
    M = np.linalg.inv(R)
    scale = np.linalg.norm(np.array(cam_ob.matrix_world, dtype=np.float64)[:3, :3], axis=0)
    M[:3, :3] = M[:3, :3] * scale[None, :]
    cam_ob.matrix_world = mathutils.Matrix(M.tolist())
    if abs(focal_scale - 1.0) > 1e-9:
        if cam_ob.data.users > 1:
            cam_ob.data = cam_ob.data.copy()
        d = cam_ob.data
        if d.type == "ORTHO":
            d.ortho_scale = d.ortho_scale / focal_scale
        else:
            d.lens = d.lens * focal_scale
        d.shift_x, d.shift_y = d.shift_x * focal_scale, d.shift_y * focal_scale


def write_colors(ob: Any, colors: np.ndarray) -> None:
    """Vertex colours (linear) as the float colour attribute "DIB-R Color", made active."""
    me = ob.data
    attr = me.color_attributes.get(COLOR_ATTR)
    if attr is None or attr.domain != "POINT" or attr.data_type != "FLOAT_COLOR":
        if attr is not None:
            me.color_attributes.remove(attr)
        attr = me.color_attributes.new(COLOR_ATTR, "FLOAT_COLOR", "POINT")
    if len(attr.data) != colors.shape[0]:
        raise SceneError(f"mesh '{ob.name}': colour count {colors.shape[0]} != vertex count {len(attr.data)}")
    rgba = np.concatenate([colors.astype(np.float32), np.ones((colors.shape[0], 1), np.float32)], axis=1)
    attr.data.foreach_set("color", rgba.ravel())
    me.color_attributes.active_color = attr
    me.color_attributes.render_color_index = me.color_attributes.find(COLOR_ATTR)
    me.update()


def ensure_uv_map(ob: Any, face_uvs: np.ndarray) -> None:
    """Create the UV map "DIB-R UV" from per-triangle UVs when the mesh has no UV map.
    Only for meshes whose polygons are triangles (the evaluated triangulation maps 1:1)."""
    me = ob.data
    if me.uv_layers.active is not None:
        return
    if any(p.loop_total != 3 for p in me.polygons):
        raise SceneError(f"mesh '{ob.name}' has no UV map and is not all triangles; add a UV map first")
    me.calc_loop_triangles()
    loops = np.empty(len(me.loop_triangles) * 3, dtype=np.int32)
    me.loop_triangles.foreach_get("loops", loops)
    per_loop = np.zeros((len(me.loops), 2), dtype=np.float32)
    per_loop[loops] = face_uvs.reshape(-1, 2)
    write_uv_map(ob, per_loop)


def write_uv_map(ob: Any, loop_uvs: np.ndarray) -> None:
    """The UV map "DIB-R UV" (made active) from UVs per loop (L, 2) of the object's mesh."""
    me = ob.data
    if loop_uvs.shape != (len(me.loops), 2):
        raise SceneError(f"mesh '{ob.name}': {loop_uvs.shape[0]} UVs for {len(me.loops)} face corners")
    uv = me.uv_layers.get(UV_NAME) or me.uv_layers.new(name=UV_NAME)
    uv.data.foreach_set("uv", np.ascontiguousarray(loop_uvs, dtype=np.float32).ravel())
    me.uv_layers.active = uv
    me.update()


SMART_UV_ANGLE = math.radians(66.0)   # Smart UV Project's default angle limit
SMART_UV_MARGIN = 0.02                 # island margin (UV units): room for the fit's island padding


def smart_uv_project(ob: Any) -> Tuple[np.ndarray, np.ndarray]:
    """UVs for a mesh without a UV map from Blender's Smart UV Project, leaving the scene as it
    was: the operator runs on a copy of the object in a temporary scene (so neither the user's
    mesh, selection nor modes change), and the copy's evaluated mesh gives the UVs of the fit's
    triangles.

    Returns:
        loop_uvs: (L, 2) float32 per loop of ``ob``'s mesh (to write as a UV map with the result),
        face_uvs: (T, 3, 2) float32 per triangle corner of the evaluated mesh (as ``read_mesh``).
    """
    tmp_scene = bpy.data.scenes.new("DIB-R Smart UV")
    tmp_me = ob.data.copy()
    tmp = ob.copy()
    tmp.data = tmp_me
    try:
        tmp_scene.collection.objects.link(tmp)
        layer = tmp_scene.view_layers[0]
        layer.objects.active = tmp
        tmp.select_set(True, view_layer=layer)
        with bpy.context.temp_override(scene=tmp_scene, view_layer=layer, active_object=tmp, object=tmp,
                                       selected_objects=[tmp], selected_editable_objects=[tmp]):
            bpy.ops.object.mode_set(mode="EDIT")
            try:
                with bpy.context.temp_override(edit_object=tmp):
                    bpy.ops.mesh.select_all(action="SELECT")
                    bpy.ops.uv.smart_project(angle_limit=SMART_UV_ANGLE, island_margin=SMART_UV_MARGIN)
            finally:
                bpy.ops.object.mode_set(mode="OBJECT")
        if tmp_me.uv_layers.active is None:
            raise SceneError(f"mesh '{ob.name}': Smart UV Project made no UV map")
        loop_uvs = np.empty(len(tmp_me.loops) * 2, dtype=np.float32)
        tmp_me.uv_layers.active.data.foreach_get("uv", loop_uvs)
        layer.update()
        face_uvs = read_mesh(tmp, with_texture=False, depsgraph=layer.depsgraph).face_uvs
        if face_uvs is None:
            raise SceneError(f"mesh '{ob.name}': the modifiers drop the UV map Smart UV Project made")
        return loop_uvs.reshape(-1, 2), face_uvs
    finally:
        bpy.data.objects.remove(tmp)
        bpy.data.meshes.remove(tmp_me)
        bpy.data.scenes.remove(tmp_scene)


def write_image(name: str, rgba: np.ndarray) -> Any:
    """Write (H, W, 4) linear top-to-bottom pixels into the float image datablock ``name``
    (created, or replaced when its size differs)."""
    h, w = rgba.shape[:2]
    img = bpy.data.images.get(name)
    if img is None or tuple(img.size) != (w, h):
        if img is not None:
            bpy.data.images.remove(img)
        img = bpy.data.images.new(name, w, h, alpha=True, float_buffer=True)
    pixels: Any = img.pixels
    pixels.foreach_set(convert.flip_rows(rgba).astype(np.float32).ravel())
    img.update()
    return img


def write_texture(ob: Any, texture: np.ndarray, pack: bool = True, path: Optional[str] = None) -> Any:
    """Fitted texture (H, W, 3) linear top-to-bottom as the image "DIB-R Texture", packed or
    saved, wired Image Texture -> Principled BSDF Base Color in the object's material."""
    h, w = texture.shape[:2]
    img = write_image(TEXTURE_NAME, np.concatenate([texture, np.ones((h, w, 1), np.float32)], axis=-1))
    if path:
        img.filepath_raw = path
        img.file_format = "PNG"
        img.save()
    elif pack:
        img.pack()
    _wire_material(ob, img=img)
    return img


def _wire_material(ob: Any, img: Any = None, color_attribute: Optional[str] = None) -> None:
    mat = ob.active_material
    if mat is None:
        mat = bpy.data.materials.new("DIB-R Material")
        ob.data.materials.append(mat)
    nt = mat.node_tree
    bsdf = next((n for n in nt.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next((n for n in nt.nodes if n.type == "OUTPUT_MATERIAL"), None) or nt.nodes.new("ShaderNodeOutputMaterial")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    if img is not None:
        node = next((n for n in nt.nodes if n.type == "TEX_IMAGE" and n.image == img), None)
        if node is None:
            node = nt.nodes.new("ShaderNodeTexImage")
            node.image = img
            node.location = (bsdf.location.x - 300, bsdf.location.y)
        nt.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    elif color_attribute is not None:
        node = next((n for n in nt.nodes if n.type == "VERTEX_COLOR"), None)
        if node is None:
            node = nt.nodes.new("ShaderNodeVertexColor")
            node.location = (bsdf.location.x - 300, bsdf.location.y)
        node.layer_name = color_attribute
        nt.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])


def wire_vertex_colors(ob: Any) -> None:
    """Show the fitted colour attribute in Cycles and EEVEE (Color Attribute -> Base Color)."""
    _wire_material(ob, color_attribute=COLOR_ATTR)


# --- Image to 3D ----------------------------------------------------------------------------

def image_display_values(img: Any) -> np.ndarray:
    """(H, W, 4) float32 of an image datablock as displayed: sRGB-encoded RGB (what an 8-bit file
    stores; float images are encoded from linear) + alpha, rows top to bottom."""
    arr = _pixels(img)
    if img.is_float and img.colorspace_settings.name not in ("Non-Color", "Raw"):
        arr[..., :3] = convert.linear_to_srgb(arr[..., :3])
    return convert.flip_rows(arr)


def load_image_display(path: str) -> Tuple[np.ndarray, bool]:
    """Read an image file through Blender without leaving a datablock: (display values as in
    ``image_display_values``, whether the file has an alpha channel)."""
    return _read_file(path, lambda img: (image_display_values(img), image_has_alpha(img)))


def new_mesh_object(name: str, vertices: np.ndarray, faces: np.ndarray, collection: Any,
                    smooth: bool = True) -> Any:
    """A new triangle-mesh object (one polygon per face, loops in face order) linked to ``collection``."""
    me = bpy.data.meshes.new(name)
    try:
        fill_triangles(me, vertices, faces)
        if smooth and hasattr(me, "shade_smooth"):
            me.shade_smooth()
        ob = bpy.data.objects.new(name, me)
    except Exception:
        bpy.data.meshes.remove(me)
        raise
    collection.objects.link(ob)
    return ob


def new_texture_image(name: str, pixels: np.ndarray) -> Any:
    """A new 8-bit sRGB image from (H, W, 4) sRGB-encoded pixels, bottom row first, packed into
    the .blend (so it travels with the file and the glTF export)."""
    h, w = pixels.shape[:2]
    img = bpy.data.images.new(name, w, h, alpha=True, float_buffer=False)
    set_texture_pixels(img, pixels)
    return img


def set_texture_pixels(img: Any, pixels: np.ndarray) -> None:
    """Replace an image's pixels (bottom row first) and pack it again."""
    px: Any = img.pixels
    px.foreach_set(np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0).ravel())
    img.update()
    img.pack()


def make_matte(mat: Any) -> None:
    """A purely diffuse Principled BSDF (Specular IOR Level 0, Roughness 1). Predicted and generated
    colours come from Lambertian renders; the default specular layer (IOR 1.5) would add a white
    sheen that washes them out (measured in Cycles under a white world: the Image to 3D chair's
    mean blue 0.24 lit against 0.11 in its own texture)."""
    bsdf = next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)
    if bsdf is not None:
        bsdf.inputs["Specular IOR Level"].default_value = 0.0
        bsdf.inputs["Roughness"].default_value = 1.0


def wire_texture(ob: Any, img: Any) -> None:
    """Image Texture ``img`` -> Principled BSDF Base Color of the object's material (made when missing)."""
    _wire_material(ob, img=img)
