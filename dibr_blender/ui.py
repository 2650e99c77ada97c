"""The sidebar panel: View3D > Sidebar > DIB-R (draw code only)."""
from __future__ import annotations

from typing import Any

import bpy

from .jobs import status


def _switch(layout: Any, s: Any, name: str, *shown: str, **texts: str) -> None:
    """A checkbox ``name`` and, while it is on, one row of the options ``shown`` (``texts``:
    labels by option name)."""
    layout.prop(s, name)
    if getattr(s, name):
        row = layout.row(align=True)
        for option in shown:
            if option in texts:
                row.prop(s, option, text=texts[option])
            else:
                row.prop(s, option)


def _background_key(layout: Any, s: Any, prefix: str) -> None:
    """The Background Key row (mode, and the colour and tolerance when keying)."""
    row = layout.row(align=True)
    row.prop(s, prefix + "background_key", text="Key")
    mode = getattr(s, prefix + "background_key")
    if mode == "COLOR":
        row.prop(s, prefix + "background_color", text="")
    if mode != "NONE":
        row.prop(s, prefix + "background_tolerance", text="Tol.")


class DIBR_PT_main(bpy.types.Panel):
    bl_label = "DIB-R"
    bl_idname = "DIBR_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DIB-R"

    def draw(self, context: Any) -> None:
        layout = self.layout
        if layout is None:
            return
        s = context.scene.dibr
        col = layout.column()
        col.label(text="Reference (scene camera)")
        col.prop(s, "image_path", text="")
        if not s.image_path:
            col.template_ID(s, "image", open="image.open")
        col.prop(s, "mask_path", text="Mask")
        _background_key(col, s, "")
        box = layout.box()
        box.label(text="Extra views")
        for v in s.views:
            row = box.row(align=True)
            row.prop(v, "camera", text="")
            row.prop(v, "image_path", text="")
            row.prop(v, "mask_path", text="")
        row = box.row(align=True)
        row.operator("dibr.view_add", icon="ADD", text="Add")
        row.operator("dibr.view_remove", icon="REMOVE", text="Remove")
        col = layout.column(heading="Optimise")
        col.prop(s, "fit_shape")
        col.prop(s, "fit_colors")
        col.prop(s, "fit_texture")
        col.prop(s, "fit_lighting")
        layout.prop(s, "lighting")
        if s.fit_texture:
            layout.prop(s, "texture_size")
        layout.prop(s, "steps")
        layout.prop(s, "resolution")
        layout.prop(s, "smoothness")
        col = layout.column()
        _switch(col, s, "remesh", "max_faces", "target_edge_px")
        _switch(col, s, "refine_cameras", "refine_focal", "write_cameras")
        row = layout.row()
        row.enabled = not s.remesh
        row.prop(s, "apply_shape")
        layout.operator("dibr.fit", icon="MOD_SHRINKWRAP")
        ob = context.active_object
        note = ob.get("dibr_fit_note") if ob is not None else None
        if note:
            layout.label(text=f"Last fit: {note}", icon="INFO")
        layout.operator("dibr.preview", icon="IMAGE_DATA")
        row = layout.row()
        row.label(text=status.backend_line())
        row.operator("dibr.backend_info", text="", icon="INFO")


class DIBR_PT_image_to_3d(bpy.types.Panel):
    bl_label = "Image to 3D"
    bl_idname = "DIBR_PT_image_to_3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DIB-R"
    bl_parent_id = "DIBR_PT_main"

    def draw(self, context: Any) -> None:
        layout = self.layout
        if layout is None:
            return
        s = context.scene.dibr
        col = layout.column()
        col.prop(s, "i3d_image_path", text="")
        if not s.i3d_image_path:
            col.template_ID(s, "i3d_image", open="image.open")
        col.prop(s, "i3d_mask_path", text="Mask")
        _background_key(col, s, "i3d_")
        col.prop(s, "i3d_category")
        col.prop(s, "i3d_size")
        col.prop(s, "i3d_texture_size")
        col.prop(s, "i3d_face_view")
        _switch(col, s, "i3d_refine", "i3d_refine_steps", "i3d_refine_camera", i3d_refine_camera="")
        op = layout.operator("dibr.image_to_3d", icon="MESH_MONKEY")
        op.image_path = s.i3d_image_path
        op.image_name = s.i3d_image.name if (s.i3d_image is not None and not s.i3d_image_path) else ""
        op.mask_path = s.i3d_mask_path
        op.mask_name = ""
        op.background_key = s.i3d_background_key
        op.background_color = s.i3d_background_color
        op.background_tolerance = s.i3d_background_tolerance
        op.category = s.i3d_category
        op.size = s.i3d_size
        op.texture_size = s.i3d_texture_size
        op.face_view = s.i3d_face_view
        op.refine = s.i3d_refine
        op.refine_steps = s.i3d_refine_steps
        op.refine_camera = s.i3d_refine_camera


class DIBR_PT_generate(bpy.types.Panel):
    bl_label = "Generate"
    bl_idname = "DIBR_PT_generate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "DIB-R"
    bl_parent_id = "DIBR_PT_main"

    def draw(self, context: Any) -> None:
        layout = self.layout
        if layout is None:
            return
        s = context.scene.dibr
        col = layout.column()
        col.prop(s, "gen_category")
        row = col.row(align=True)
        row.prop(s, "gen_count")
        row.prop(s, "gen_seed")
        col.prop(s, "gen_size")
        col.prop(s, "gen_spacing")
        col.prop(s, "gen_texture_size")
        header, body = layout.panel("DIBR_generate_advanced", default_closed=True)
        header.label(text="Advanced")
        if body is not None:
            body.prop(s, "gen_temperature")
        op = layout.operator("dibr.generate", icon="MESH_ICOSPHERE")
        op.category = s.gen_category
        op.count = s.gen_count
        op.seed = s.gen_seed
        op.size = s.gen_size
        op.spacing = s.gen_spacing
        op.texture_size = s.gen_texture_size
        op.temperature = s.gen_temperature


CLASSES = [DIBR_PT_main, DIBR_PT_image_to_3d, DIBR_PT_generate]
