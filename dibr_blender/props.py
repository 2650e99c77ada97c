"""The panel's settings, stored on the scene (``scene.dibr``)."""
from __future__ import annotations

from typing import Any, Optional

import bpy

from . import preferences
from .jobs import generate, image_to_3d, masks
from .jobs.fit import FitSettings
from .scene.image_to_3d import REFINE_CAMERA_ITEMS


def background_key_property() -> Any:
    """The Background Key choice (panel and operator share it): see :mod:`.jobs.masks`."""
    return bpy.props.EnumProperty(
        name="Background Key", items=masks.KEY_ITEMS, default="NONE",
        description="Make the silhouette from a background colour (for opaque images without a mask)")


def background_color_property() -> Any:
    """The background colour to key out, as the image stores it."""
    return bpy.props.FloatVectorProperty(
        name="Background", subtype="COLOR_GAMMA", size=3, min=0.0, max=1.0, default=(0.0, 0.0, 0.0),
        description="Background colour to key out (as the image stores it)")


def background_tolerance_property() -> Any:
    """The largest per-channel difference from the background colour that is still background."""
    return bpy.props.FloatProperty(
        name="Tolerance", default=masks.DEFAULT_TOLERANCE, min=0.001, max=1.0,
        description="Largest per-channel difference from the background colour that is still background")


class DIBR_PG_view(bpy.types.PropertyGroup):
    """An extra view for multi-view fitting: a camera and its reference image."""

    camera: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Camera", type=bpy.types.Object, poll=lambda self, ob: ob.type == "CAMERA",
        description="Camera that saw the reference image")
    image_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Image", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Reference image; its alpha is the silhouette")
    mask_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Mask", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Optional silhouette image (alpha, or grey when opaque)")


class DIBR_PG_settings(bpy.types.PropertyGroup):
    image_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Reference", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Reference image seen by the scene camera; its alpha channel is the silhouette to match")
    image: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Image", type=bpy.types.Image, description="Reference image datablock (used when no file is set)")
    mask_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Mask", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Optional silhouette image for the reference (alpha, or grey when it has no alpha)")
    background_key: background_key_property()  # type: ignore[valid-type]
    background_color: background_color_property()  # type: ignore[valid-type]
    background_tolerance: background_tolerance_property()  # type: ignore[valid-type]
    views: bpy.props.CollectionProperty(type=DIBR_PG_view)  # type: ignore[valid-type]
    steps: bpy.props.IntProperty(name="Steps", default=300, min=1, max=100000,  # type: ignore[valid-type]
                                 description="Optimisation steps")
    resolution: bpy.props.IntProperty(name="Resolution", default=256, min=16, max=2048,  # type: ignore[valid-type]
                                      description="Longer side, in pixels, of the images the fit compares")
    fit_shape: bpy.props.BoolProperty(name="Shape", default=True,  # type: ignore[valid-type]
                                      description="Move the vertices (large smooth steps, see Smoothness)")
    fit_colors: bpy.props.BoolProperty(name="Vertex Colors", default=True,  # type: ignore[valid-type]
                                       description="Fit a colour per vertex (written as the 'DIB-R Color' attribute)")
    fit_texture: bpy.props.BoolProperty(name="Texture", default=False,  # type: ignore[valid-type]
                                        description="Fit a UV texture (Smart UV Project makes a UV map when the mesh has none)")
    fit_lighting: bpy.props.BoolProperty(name="Lighting", default=False,  # type: ignore[valid-type]
                                         description="Fit the lighting of the chosen model too")
    lighting: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Lighting", default="AUTO", description="Lighting model used when comparing with the reference",
        items=[("AUTO", "Auto", "The scene's lights (colours become albedo, shaded again by Blender); Unlit "
                                "when the scene has no light"),
               ("NONE", "Unlit", "Colours as seen (shading baked into the colours)"),
               ("SUN", "Sun", "One directional light plus ambient (Lambertian)"),
               ("SH", "Spherical Harmonics", "Order-2 spherical-harmonics environment light")])
    texture_size: bpy.props.IntProperty(name="Texture Size", default=256, min=16, max=4096)  # type: ignore[valid-type]
    smoothness: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Smoothness", default=10.0, min=0.0, soft_max=100.0, max=10000.0,
        description="How smoothly the surface moves: lambda of the large-step optimiser (I + lambda L); larger is "
                    "smoother, 0 moves every vertex on its own. It acts per edge: a finer mesh needs a larger value "
                    "for the same smoothness")
    remesh: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Remesh", default=False,
        description="Remesh the surface during the fit towards even triangles of Edge Length pixels (the mesh must "
                    "be one closed surface). The vertex count changes, so the result is new mesh data, not a "
                    "shape key")
    max_faces: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Max Faces", default=0, min=0, soft_max=200000,
        description="Face budget of the remeshed surface (at least 4); 0: no budget")
    target_edge_px: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Edge Length", default=4.0, min=0.25, soft_max=32.0, max=1024.0, subtype="PIXEL",
        description="Target edge length of the remeshed surface, in pixels of the nearest view that sees it")
    refine_cameras: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Refine Cameras", default=False,
        description="Correct every view's camera pose jointly with the fit (for cameras placed by hand); the "
                    "report gives each camera's correction")
    refine_focal: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Focal Length", default=False, description="Also correct each camera's focal length")
    write_cameras: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Write Cameras", default=False,
        description="Move the cameras to the refined ones (and set their focal lengths when refined); undoable")
    apply_shape: bpy.props.BoolProperty(name="Apply Shape", default=False,  # type: ignore[valid-type]
                                        description="Write positions into the mesh instead of a 'DIB-R Fit' shape key")

    # Image to 3D (copied into the operator's properties by the panel)
    i3d_image_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Image", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Image file of one object; its alpha is the silhouette")
    i3d_image: bpy.props.PointerProperty(  # type: ignore[valid-type]
        name="Image", type=bpy.types.Image, description="Image datablock (used when no file is set)")
    i3d_mask_path: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Mask", subtype="FILE_PATH", options=preferences.FILE_PATH_OPTIONS,
        description="Optional silhouette image (alpha, or grey when it has no alpha); default: the image's alpha")
    i3d_background_key: background_key_property()  # type: ignore[valid-type]
    i3d_background_color: background_color_property()  # type: ignore[valid-type]
    i3d_background_tolerance: background_tolerance_property()  # type: ignore[valid-type]
    i3d_category: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Category", items=image_to_3d.CATEGORY_ITEMS, default="none",
        description="What the image shows (a hint, stored on the object)")
    i3d_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Size", default=1.0, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Bounding-box diagonal of the new object")
    i3d_texture_size: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=256, min=0, max=4096,
        description="Side of the texture image in pixels; 0 keeps the predictor's own size")
    i3d_face_view: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Face View", default=True,
        description="Turn the object about Z so that the side the image shows faces the 3D viewport (the scene camera when not run from a viewport)")
    i3d_refine: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Refine with Fit", default=True,
        description="Fit shape and texture to the image in its input view after the prediction (a few seconds)")
    i3d_refine_steps: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Steps", default=image_to_3d.REFINE_STEPS, min=1, max=100000, description="Fit steps of the refine")
    i3d_refine_camera: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Camera", items=REFINE_CAMERA_ITEMS, default="AUTO", description="The camera that sees the image")

    # Generate (copied into the operator's properties by the panel)
    gen_category: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Category", items=generate.CATEGORY_ITEMS, default="chair",
        description="Category of the generated objects ('All' cycles through the categories)")
    gen_count: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Count", default=1, min=1, max=generate.MAX_COUNT,
        description="Number of objects, laid out on a near-square grid around the 3D cursor")
    gen_seed: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Seed", default=0, min=0, description="Random seed: the same seed gives the same objects")
    gen_size: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Size", default=1.0, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Bounding-box diagonal of each object")
    gen_spacing: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Spacing", default=1.5, min=1e-4, soft_max=100.0, subtype="DISTANCE", unit="LENGTH",
        description="Distance between the centres of neighbouring objects")
    gen_texture_size: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Texture Size", default=256, min=0, max=4096,
        description="Side of each texture image in pixels; 0 keeps the generator's own size")
    gen_temperature: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Temperature", default=1.0, min=0.0, soft_max=2.0,
        description="Spread of the samples around the category's mean shape (0: the mean shape)")

    def to_background(self) -> Optional[masks.BackgroundKey]:
        """The fit's background key (None: the silhouette is the alpha or the mask image)."""
        return masks.from_panel(self.background_key, tuple(self.background_color), self.background_tolerance)

    def to_fit_settings(self) -> FitSettings:
        return FitSettings(steps=self.steps, max_side=self.resolution, optimize_vertices=self.fit_shape,
                           optimize_colors=self.fit_colors, optimize_texture=self.fit_texture,
                           optimize_lighting=self.fit_lighting, lighting=self.lighting.lower(),
                           texture_size=self.texture_size, smoothness=self.smoothness,
                           backend=preferences.backend(), remesh=self.remesh,
                           max_faces=self.max_faces if self.max_faces > 0 else None,
                           target_edge_px=self.target_edge_px, optimize_cameras=self.refine_cameras,
                           optimize_focal=self.refine_cameras and self.refine_focal,
                           write_cameras=self.refine_cameras and self.write_cameras)


CLASSES: list[Any] = [DIBR_PG_view, DIBR_PG_settings]


def register_props() -> None:
    prop: Any = bpy.props.PointerProperty
    setattr(bpy.types.Scene, "dibr", prop(type=DIBR_PG_settings))


def unregister_props() -> None:
    delattr(bpy.types.Scene, "dibr")
