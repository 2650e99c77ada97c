"""Fitting a mesh to reference images through DIB-R: a pure optimisation loop (no threads,
no I/O, no Blender), used by the Blender extension and runnable on its own.

The mesh's vertices move either by the large-step method (the default,
``optimizer="large_steps"``: Nicolet et al. 2021, see :mod:`dibr_core.large_steps`; the optimiser
works on ``u = (I + lambda L) x`` with a uniform-rate Adam, so every step is a smooth
deformation) or by Adam on free offsets (``optimizer="adam"``, the original method). Both can
add penalties: the uniform Laplacian of the offsets, normal consistency and edge-length
evenness. The vertex colours and/or a UV texture are optimised, and so, optionally, is the
lighting (spherical harmonics, or one sun: direction and strength). Each view is a camera with
a reference image whose alpha is the silhouette.

Remeshing (``FitOptions.remesh``): every ``remesh_every`` steps during the first
``remesh_until`` of the fit (starting at step 0), the current surface is remeshed isotropically
(:func:`dibr_core.remesh.remesh`) towards edges of ``target_edge_px`` pixels in the nearest view
that sees them (:func:`dibr_core.remesh.target_length_from_views`), within ``max_faces``. After
each remesh the Laplacian system and the large-step parameterisation are rebuilt on the new
topology, the optimisers' per-vertex moments and the vertex colours are carried through the
remesh's attribute remapping, and the penalties' rest shape (``base``) becomes the remeshed
surface. The start mesh must be one closed 2-manifold (``remesh_allow_loose_parts`` accepts
several closed parts).

Textures: a UV texture is sampled with ``texture_filter`` (mip-mapped by default, so texels
smaller than a pixel do not alias) and its islands are padded by ``texture_padding`` texels
before every render (:func:`dibr_core.texture_bake.pad_texture_islands` with a precomputed
index), so bilinear and mip lookups at seams never read untouched texels. Without ``face_uvs``
the UVs come from :func:`dibr_core.uv.auto_uvs`; without an initial texture, given vertex
colours are baked into it (:func:`dibr_core.texture_bake.bake_vertex_colors`). With remeshing,
UVs cannot follow the topology changes, so the rule is: the texture is created (auto UVs, bake of
the current vertex colours) right after the last remesh and optimised from there on; before that
the vertex colours carry the appearance (they are optimised in that phase even when
``optimize_colors`` is off). ``face_uvs`` / ``texture`` arguments are therefore refused with
remeshing on.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from dibr_core.camera import Camera
from dibr_core.camera_refine import CameraCorrection, CameraParams
from dibr_core.color_fill import face_view_cosines, harmonic_fill, vertex_visibility
from dibr_core.checks import as_index, check_index_range, check_positive, check_tensor, describe
from dibr_core.large_steps import STEP_TOL, LaplacianSystem, UniformAdam
from dibr_core.losses import edge_length_loss, flatten_loss, iou_loss, laplacian_loss, masked_l1, silhouette_iou
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.remesh import remesh as remesh_mesh
from dibr_core.remesh import require_closed_manifold, target_length_from_views
from dibr_core.render import DirectionalLights, Meshes, RenderOutput, RenderSettings, SHLighting, render
from dibr_core.texture_bake import bake_vertex_colors, island_padding_index, pad_texture_islands, uv_coverage
from dibr_core.uv import auto_uvs

LIGHTING_MODELS = ("none", "sh", "sun")
OPTIMIZERS = ("large_steps", "adam")
TEXTURE_FILTERS = ("bilinear", "nearest", "mipmap")


@dataclass(frozen=True)
class FitView:
    """One reference view.

    Attributes:
        camera: a single camera (batch 1).
        image: (H, W, 3) float linear RGB in [0, 1], rows top to bottom.
        mask: (H, W) float in [0, 1], the reference silhouette (the image's alpha).
        name: label used in reports (e.g. the Blender camera's name).
    """

    camera: Camera
    image: torch.Tensor
    mask: torch.Tensor
    name: str = "view"


@dataclass(frozen=True)
class FitOptions:
    """What to optimise and how.

    Attributes:
        steps: Adam iterations.
        optimize_vertices, optimize_colors, optimize_texture, optimize_lighting: switches.
        lighting: "none" (unlit colours), "sh" (9 spherical-harmonics coefficients per
            channel) or "sun" (one directional light plus ambient).
        texture_size: side of the square UV texture when it is optimised.
        lr_vertices: step size for the vertex offsets, relative to the mesh's size.
        lr_colors, lr_texture, lr_lighting: step sizes of the other parameters.
        w_silhouette, w_color, w_laplacian, w_flatten, w_edge: loss weights.
        halo_px: width in pixels at which the soft silhouette falls to 0.5 at the end of the fit
            (sets sigmainv); the fit starts at ``halo_start_px`` and narrows geometrically, which
            gives a wide capture range first and a nearly unbiased edge at the end (a wide halo
            leaves the hard edge about half a halo inside the target; at 0.3 px that still shrank
            a 60 px object by about 1 %, which held silhouette IoUs near 0.975 and biased
            refined cameras by about 1 % of their distance, hence 0.1).
        perspective_correct: perspective-correct interpolation (recommended with textures).
        backend: kernel backend.
        optimizer: how the vertices move: ``"large_steps"`` (default; ``u = (I + lambda L) x`` with
            the uniform-rate Adam of :class:`dibr_core.large_steps.UniformAdam`) or ``"adam"``
            (Adam on free offsets, step ``lr_vertices``; the penalties then do all the smoothing).
        large_steps_lambda: lambda of ``I + lambda L`` (``L`` the combinatorial Laplacian): larger
            is smoother; 0 gives plain uniform-rate steps on the positions. It acts per edge, so
            on a finer mesh the same lambda smooths over a shorter distance (10 was tuned on the
            642-vertex icosphere; docs/benchmarks.md). The penalties (``w_laplacian`` etc.)
            apply with either optimiser; with large steps they change little.
        lr_large_steps: step size of the large-step optimiser, relative to the mesh's size (the
            largest entry of a step on ``u`` is about this times the bounding-box diagonal).
        optimize_cameras: refine every view's camera pose jointly (see
            :mod:`dibr_core.camera_refine`); ``optimize_focal`` also its focal length (and implies the pose).
        lr_cameras: Adam step of the camera corrections (radians, and fractions of the camera's
            distance to the mesh; log focal scale).
        remesh: remesh the surface during the fit (see the module docstring); the start mesh
            must then be a closed 2-manifold. Off by default: in the reconstruction benchmark
            it gains little over the large steps from the 1,280-face start (docs/benchmarks.md)
            while it changes the topology (no shape key on the Blender side) and refuses
            non-manifold start meshes.
        remesh_every: steps between remeshes (the first is at step 0).
        remesh_until: fraction of the steps during which remeshing happens, in [0, 1].
        target_edge_px: target edge length in pixels of the nearest view that sees the edge.
        max_faces: face budget of the remeshed surface (>= 4), or None for no budget.
        remesh_iterations: split / collapse / flip / relax rounds per remesh.
        remesh_allow_loose_parts: accept a start mesh of several closed parts.
        texture_filter: how the optimised texture is sampled: ``"mipmap"`` (default),
            ``"bilinear"`` or ``"nearest"``.
        texture_padding: texels of island padding applied before every render (0: none).
        fill_unseen_colors: at the end of the fit, replace the fitted vertex colours of the
            vertices the views do not see well by the harmonic interpolation of the seen ones
            (see :mod:`dibr_core.color_fill`; only when ``optimize_colors``). Without it a few-view
            fit leaves the unseen side at the start colour, with speckle where the views graze
            the surface. Positions, texture and lighting are not changed.
        fill_min_pixels: how much a vertex must be seen to keep its fitted colour: the pixels of
            its faces over all views, each counted a third per corner and weighted by the
            cosine between the face's normal and the direction to the camera (so grazing views
            count little) and by the reference silhouette (:func:`dibr_core.color_fill.vertex_visibility`).
        color_facing_power: weight each pixel of the colour loss by the cosine between its face's
            normal and the direction to the camera to this power, so grazing views count less
            (0, the default: every pixel alike). Measured on the main job's head (mean colour
            error in sRGB in its 4 held-out Cycles views, with the fill): from one view 0.057 at
            0, 0.058 at 1, 0.060 at 2; from 8 views 0.038 at 0, 0.040 at 1. The fill of the
            vertices seen only at grazing angles does what this was meant for.
    """

    steps: int = 300
    optimize_vertices: bool = True
    optimize_colors: bool = True
    optimize_texture: bool = False
    optimize_lighting: bool = False
    lighting: str = "none"
    texture_size: int = 256
    lr_vertices: float = 0.01
    lr_colors: float = 0.05
    lr_texture: float = 0.05
    lr_lighting: float = 0.02
    w_silhouette: float = 1.0
    w_color: float = 1.0
    w_laplacian: float = 5.0
    w_flatten: float = 0.02
    w_edge: float = 0.0
    halo_px: float = 0.1
    halo_start_px: float = 2.0
    perspective_correct: bool = True
    backend: str = "auto"
    optimizer: str = "large_steps"
    large_steps_lambda: float = 10.0
    lr_large_steps: float = 0.01
    optimize_cameras: bool = False
    optimize_focal: bool = False
    lr_cameras: float = 0.002
    remesh: bool = False
    remesh_every: int = 25
    remesh_until: float = 0.6
    target_edge_px: float = 4.0
    max_faces: Optional[int] = None
    remesh_iterations: int = 2
    remesh_allow_loose_parts: bool = False
    texture_filter: str = "mipmap"
    texture_padding: int = 4
    fill_unseen_colors: bool = True
    fill_min_pixels: float = 1.0
    color_facing_power: float = 0.0

    def __post_init__(self) -> None:
        """Validate the fields (integer fields accept numpy integers, stored as int)."""
        fn = "FitOptions"
        for name, lo in (("steps", 0), ("texture_size", 1), ("remesh_every", 1), ("remesh_iterations", 1),
                         ("texture_padding", 0)):
            value = getattr(self, name)
            v = as_index(value)
            if v is None or v < lo:
                raise ValueError(f"{fn}(): {name} must be an int >= {lo}, got {describe(value)}")
            object.__setattr__(self, name, v)
        if self.lighting not in LIGHTING_MODELS:
            raise ValueError(f"{fn}(): lighting must be one of {LIGHTING_MODELS}, got {self.lighting!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"{fn}(): optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("lr_vertices", "lr_colors", "lr_texture", "lr_lighting", "lr_large_steps", "lr_cameras",
                     "large_steps_lambda", "w_silhouette", "w_color", "w_laplacian", "w_flatten", "w_edge"):
            check_positive(fn, name, getattr(self, name), allow_zero=True)
        # The halo narrows geometrically from halo_start_px to halo_px: both must be positive.
        check_positive(fn, "halo_px", self.halo_px)
        check_positive(fn, "halo_start_px", self.halo_start_px)
        check_positive(fn, "target_edge_px", self.target_edge_px)
        check_positive(fn, "fill_min_pixels", self.fill_min_pixels, allow_zero=True)
        check_positive(fn, "color_facing_power", self.color_facing_power, allow_zero=True)
        flag = self.fill_unseen_colors
        # numpy's bool is named bool_ before numpy 2 and bool since.
        numpy_bool = type(flag).__module__ == "numpy" and type(flag).__name__ in ("bool_", "bool")
        if not (isinstance(flag, bool) or numpy_bool or (isinstance(flag, int) and flag in (0, 1))):
            raise ValueError(f"{fn}(): fill_unseen_colors must be a bool, got {describe(self.fill_unseen_colors)}")
        object.__setattr__(self, "fill_unseen_colors", bool(self.fill_unseen_colors))
        if not (0.0 <= self.remesh_until <= 1.0):
            raise ValueError(f"{fn}(): remesh_until must lie in [0, 1] (a fraction of the steps), "
                             f"got {self.remesh_until!r}")
        if self.max_faces is not None:
            mf = as_index(self.max_faces)
            if mf is None or mf < 4:
                raise ValueError(f"{fn}(): max_faces must be None or an int >= 4 (a tetrahedron has 4 faces), "
                                 f"got {describe(self.max_faces)}")
            object.__setattr__(self, "max_faces", mf)
        if self.texture_filter not in TEXTURE_FILTERS:
            raise ValueError(f"{fn}(): texture_filter must be one of {TEXTURE_FILTERS}, got {self.texture_filter!r}")

    def remesh_steps(self) -> List[int]:
        """The steps before which the surface is remeshed (empty without ``remesh``)."""
        if not (self.remesh and self.optimize_vertices) or self.steps == 0:
            return []
        until = self.remesh_until * self.steps
        return [s for s in range(0, self.steps, self.remesh_every) if s < until]

    def optimized(self) -> List[str]:
        """Names of the parameter groups this fit moves (empty: nothing to optimise)."""
        groups = [name for name, on in (("vertices", self.optimize_vertices), ("colors", self.optimize_colors),
                                        ("texture", self.optimize_texture)) if on]
        if self.optimize_lighting and self.lighting != "none":
            groups.append("lighting")
        if self.optimize_cameras or self.optimize_focal:
            groups.append("cameras")
        return groups


@dataclass
class ViewMetrics:
    name: str
    silhouette_iou: float
    color_l1: float


@dataclass
class FitResult:
    """Optimised parameters and the fit's history.

    Attributes:
        vertices: (V, 3) fitted positions (same frame as the input).
        colors: (V, 3) fitted vertex colours in [0, 1], or None.
        texture: (Ht, Wt, 3) fitted texture in [0, 1] (rows top to bottom), or None.
        sh: (3, 9) SH coefficients, or None; sun: (direction (3,), strength (3,), ambient (3,)), or None.
        losses: loss per step; steps: steps run; seconds: wall time; cancelled: stopped early.
        views: metrics per view after the fit.
        cameras: the views' cameras after the fit (refined when ``optimize_cameras`` or ``optimize_focal``, else as given).
        camera_corrections: per view, how far refinement moved its camera (empty without it).
        faces: (F', 3) int64 final faces (the input's unless remeshing changed the topology).
        topology_changed: whether remeshing changed the faces (then ``vertices`` / ``colors``
            no longer correspond to the input's vertices, and a shape key cannot express the fit).
        self_intersecting_faces: faces of the result that intersect a non-adjacent face.
        face_uvs: (F', 3, 2) the UVs of ``texture`` (given, or made by auto UVs), or None.
        remeshes: how many times the surface was remeshed.
        source_positions: (V', 3) per result vertex, a point near the start mesh's surface that
            it descends from (the start positions carried through remeshing like the colours: a
            split or collapse vertex gets the mean of its edge's end points); without remeshing
            the start positions. Data on the start mesh (weights, UVs, materials) can be looked
            up there for the new vertices.
        filled_colors: vertices whose colour :attr:`FitOptions.fill_unseen_colors` replaced.
    """

    vertices: torch.Tensor
    colors: Optional[torch.Tensor]
    texture: Optional[torch.Tensor]
    sh: Optional[torch.Tensor]
    sun: Optional[tuple]
    losses: List[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    cancelled: bool = False
    views: List[ViewMetrics] = field(default_factory=list)
    cameras: List[Camera] = field(default_factory=list)
    camera_corrections: List[CameraCorrection] = field(default_factory=list)
    faces: Optional[torch.Tensor] = None
    topology_changed: bool = False
    self_intersecting_faces: int = 0
    face_uvs: Optional[torch.Tensor] = None
    remeshes: int = 0
    filled_colors: int = 0
    source_positions: Optional[torch.Tensor] = None

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else float("nan")


def _settings_for(view: FitView, opts: FitOptions, halo_px: float) -> RenderSettings:
    H, W = view.mask.shape
    px = 2.0 / max(H, W)  # one pixel in NDC
    halo = max(halo_px, 0.05) * px
    return RenderSettings(height=H, width=W, sigmainv=math.log(2.0) / (halo * halo), boxlen=4.0 * halo,
                          knum=30, perspective_correct=opts.perspective_correct, backend=opts.backend,
                          texture_filter=opts.texture_filter)


def _swap_param(opt: torch.optim.Optimizer, old: torch.Tensor, new: torch.Tensor,
                state: Dict[str, object]) -> None:
    """Put ``new`` in place of ``old`` in ``opt``'s groups, with the optimiser state ``state``."""
    for group in opt.param_groups:
        group["params"] = [new if p is old else p for p in group["params"]]
    opt.state.pop(old, None)
    if state:
        opt.state[new] = state


class _Texturing:
    """A UV layout with its island-padding index: ``texture(logits)`` is the padded (1, 3, Ht, Wt)
    texture the renderer samples."""

    def __init__(self, face_uvs: torch.Tensor, size: Tuple[int, int], pixels: int, backend: str) -> None:
        self.face_uvs = face_uvs
        self.index: Optional[torch.Tensor] = None
        if pixels > 0:
            cover = uv_coverage(face_uvs, size, backend=backend)
            self.index = island_padding_index(cover, pixels)

    def texture(self, logits: torch.Tensor) -> torch.Tensor:
        tex = torch.sigmoid(logits).permute(2, 0, 1)[None]
        return pad_texture_islands(tex, index=self.index) if self.index is not None else tex


def _uvs_for(vertices: torch.Tensor, faces: torch.Tensor, opts: FitOptions) -> torch.Tensor:
    """Automatic UVs with room for the island padding between charts."""
    margin = min(0.2, max(1.0 / 128, 2.0 * max(opts.texture_padding, 1) / opts.texture_size))
    return auto_uvs(vertices.detach(), faces, margin=margin)


def fit(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    views: List[FitView],
    options: FitOptions = FitOptions(),
    colors: Optional[torch.Tensor] = None,
    face_uvs: Optional[torch.Tensor] = None,
    texture: Optional[torch.Tensor] = None,
    progress: Optional[Callable[[int, int, float], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
    preview: Optional[Callable[[int, torch.Tensor], None]] = None,
    preview_every: int = 10,
    sun: Optional[tuple] = None,
) -> FitResult:
    """Fit a mesh to reference views.

    Args:
        vertices: (V, 3) float initial positions.
        faces: (F, 3) int64, counter-clockwise.
        views: one or more :class:`FitView`.
        options: :class:`FitOptions`.
        colors: (V, 3) initial vertex colours in [0, 1] (default mid grey).
        face_uvs: (F, 3, 2) UVs of the texture; None with ``optimize_texture`` makes them with
            :func:`dibr_core.uv.auto_uvs` (refused with remeshing, see the module docstring).
        texture: (Ht, Wt, 3) initial texture in [0, 1] (default: ``colors`` baked into the UVs
            when given, else mid grey).
        progress: called as progress(step, steps, loss) after each step.
        should_stop: polled before each step; True stops the fit (result has cancelled=True).
        preview: called as preview(step, vertices (V, 3)) every ``preview_every`` steps, with a
            detached copy of the current positions (for live display; with remeshing V changes).
        sun: initial (direction toward the light (3,), RGB strength (3,), RGB ambient (3,)) for
            the "sun" lighting model, e.g. the scene's light; a default light otherwise.

    Returns:
        :class:`FitResult`.
    """
    fn = "fit"
    dims: dict = {}
    check_tensor(fn, "vertices", vertices, ("V", 3), dims, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), dims, "int", vertices.device)
    if dims["V"] == 0 or dims["F"] == 0:
        raise ValueError(f"{fn}(): the mesh is empty (V={dims['V']}, F={dims['F']})")
    check_index_range(fn, "faces", faces, dims["V"], "vertices")
    if not views:
        raise ValueError(f"{fn}(): views is empty; give at least one camera with a reference image")
    remesh_at = set(options.remesh_steps())
    if remesh_at and (face_uvs is not None or texture is not None):
        raise ValueError(f"{fn}(): with options.remesh the topology changes, so face_uvs / texture cannot follow it; "
                         "leave them None (the texture is then made with automatic UVs after the last remesh)")
    if face_uvs is not None:
        check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), dims, "float", finite=True)
    if texture is not None:
        check_tensor(fn, "texture", texture, ("Ht", "Wt", 3), None, "float", finite=True)
    if remesh_at:
        require_closed_manifold(fn, faces, dims["V"], options.remesh_allow_loose_parts)
    if options.steps > 0 and not options.optimized():
        raise ValueError(f"{fn}(): nothing to optimise: options.optimize_vertices, optimize_colors and "
                         f"optimize_texture are off, and optimize_lighting={options.optimize_lighting} with "
                         f"lighting={options.lighting!r}; switch one on, or use steps=0 to evaluate only")
    for k, view in enumerate(views):
        vd: dict = {}
        check_tensor(fn, f"views[{k}].image", view.image, ("H", "W", 3), vd, "float", finite=True)
        check_tensor(fn, f"views[{k}].mask", view.mask, ("H", "W"), vd, "float", finite=True)
        if view.camera.batch_size != 1:
            raise ValueError(f"{fn}(): views[{k}].camera must hold one camera, got {view.camera.batch_size}")
        if not bool((view.mask > 0.5).any()):
            raise ValueError(f"{fn}(): views[{k}] ({view.name!r}): the reference silhouette (mask) is empty; "
                             "give an image whose alpha covers the object")
    dev, dt = vertices.device, vertices.dtype
    faces = faces.long()
    V = vertices.shape[0]
    base = vertices.detach().clone()
    source = base.clone()           # per vertex: where on the start surface it came from (carried by remeshing)
    scale = float((base.max(0).values - base.min(0).values).norm().clamp(min=1e-6))

    large_steps = options.optimize_vertices and options.optimizer == "large_steps"
    offsets = torch.zeros_like(base, requires_grad=not large_steps)
    system: Optional[LaplacianSystem] = None
    u: Optional[torch.Tensor] = None
    if large_steps:
        system = LaplacianSystem(faces, V, options.large_steps_lambda, dtype=dt, device=dev)
        u = system.apply(base).detach().requires_grad_(True)

    def positions(final: bool = False) -> torch.Tensor:
        """(V, 3) current vertex positions (``final``: solved to full precision)."""
        if system is not None:
            assert u is not None
            return system.inverse(u) if final else system.inverse(u, STEP_TOL)
        return base + offsets
    col0 = colors.detach().clamp(0.02, 0.98) if colors is not None else torch.full((V, 3), 0.5, dtype=dt, device=dev)
    color_logits = torch.logit(col0).clone().requires_grad_(True)
    use_texture = texture is not None or options.optimize_texture
    # With remeshing the texture starts after the last remesh (created then, see below).
    late_texture = bool(remesh_at) and use_texture
    texture_from = max(remesh_at) if late_texture else 0
    tex_logits: Optional[torch.Tensor] = None
    texturing: Optional[_Texturing] = None

    def make_texture(init: Optional[torch.Tensor], uv_in: Optional[torch.Tensor],
                     vcols: Optional[torch.Tensor]) -> torch.Tensor:
        """(Ht, Wt, 3) initial texture logits on the current mesh (sets ``texturing``)."""
        nonlocal texturing
        uv = uv_in.to(dt) if uv_in is not None else _uvs_for(positions(final=True), faces, options)
        size = (init.shape[0], init.shape[1]) if init is not None else (options.texture_size, options.texture_size)
        texturing = _Texturing(uv, size, options.texture_padding, options.backend)
        if init is not None:
            t0 = init.detach().to(dt)
        elif vcols is not None:
            t0 = bake_vertex_colors(faces, vcols.detach().to(dt), uv, size, pixels=options.texture_padding,
                                    backend=options.backend)[0].permute(1, 2, 0)
        else:
            t0 = torch.full((size[0], size[1], 3), 0.5, dtype=dt, device=dev)
        return torch.logit(t0.clamp(0.02, 0.98)).clone().requires_grad_(True)

    if use_texture and not late_texture:
        tex_logits = make_texture(texture, face_uvs, colors)
    sh = torch.zeros(1, 3, 9, dtype=dt, device=dev)
    sh[:, :, 0] = 1.0 / 0.2820948  # constant irradiance 1: colours unchanged at the start
    sh.requires_grad_(True)
    if sun is not None:
        sun_dir, sun_strength, ambient = (torch.as_tensor(x, dtype=dt, device=dev).reshape(3).clone() for x in sun)
    else:
        sun_dir = torch.tensor([0.3, -0.4, 1.0], dtype=dt, device=dev)
        sun_strength = torch.full((3,), 0.8, dtype=dt, device=dev)
        ambient = torch.full((3,), 0.3, dtype=dt, device=dev)
    for t in (sun_dir, sun_strength, ambient):
        t.requires_grad_(True)

    groups = []
    uniform_opt: Optional[UniformAdam] = None
    if large_steps:
        assert u is not None
        uniform_opt = UniformAdam([u], lr=options.lr_large_steps * scale)
    elif options.optimize_vertices:
        groups.append({"params": [offsets], "lr": options.lr_vertices * scale})
    # Before a late texture exists, the vertex colours carry the appearance (and seed its bake).
    if options.optimize_colors or (late_texture and options.optimize_texture):
        groups.append({"params": [color_logits], "lr": options.lr_colors})
    if use_texture and options.optimize_texture and tex_logits is not None:
        groups.append({"params": [tex_logits], "lr": options.lr_texture})
    if options.optimize_lighting and options.lighting == "sh":
        groups.append({"params": [sh], "lr": options.lr_lighting})
    if options.optimize_lighting and options.lighting == "sun":
        groups.append({"params": [sun_dir, sun_strength, ambient], "lr": options.lr_lighting})
    cam_params: List[CameraParams] = []
    if options.optimize_cameras or options.optimize_focal:
        centre = (base.max(0).values + base.min(0).values) / 2
        cam_params = [CameraParams(v.camera, centre, options.optimize_focal) for v in views]
        groups.append({"params": [p for c in cam_params for p in c.parameters()], "lr": options.lr_cameras})
    opt = torch.optim.Adam(groups) if groups else None
    if opt is None and late_texture and options.optimize_texture:
        opt = torch.optim.Adam([{"params": [color_logits], "lr": options.lr_colors}])
    def halo_at(step: int) -> float:
        if options.steps <= 1:
            return options.halo_px
        t = min(1.0, step / (0.7 * (options.steps - 1)))  # reach the final width at 70% of the steps
        return options.halo_start_px * (options.halo_px / options.halo_start_px) ** t

    def lighting_now():  # type: ignore[no-untyped-def]
        if options.lighting == "sh":
            return SHLighting(sh)
        if options.lighting == "sun":
            d = sun_dir / sun_dir.norm().clamp(min=1e-8)
            return DirectionalLights(d.view(1, 1, 3), sun_strength.view(1, 1, 3), ambient.view(1, 3))
        return None

    def render_view(k: int, halo_px: float, verts: torch.Tensor) -> RenderOutput:
        tex = texturing.texture(tex_logits) if (texturing is not None and tex_logits is not None) else None
        cam = cam_params[k].current() if cam_params else views[k].camera
        return render(Meshes(verts, faces), cam, colors=torch.sigmoid(color_logits)[None],
                      face_uvs=texturing.face_uvs[None] if (tex is not None and texturing is not None) else None,
                      texture=tex, lighting=lighting_now(), settings=_settings_for(views[k], options, halo_px))

    image_sizes = [(int(v.mask.shape[0]), int(v.mask.shape[1])) for v in views]
    remeshes = 0
    topology_changed = False

    def do_remesh() -> None:
        """Remesh the current surface and rebuild everything that depends on the topology."""
        nonlocal base, faces, V, offsets, system, u, color_logits, uniform_opt, remeshes, topology_changed, source
        with torch.no_grad():
            x = positions(final=True).detach()
            target = target_length_from_views(x, [v.camera for v in views], image_sizes,
                                              pixels=options.target_edge_px)
            attrs: Dict[str, torch.Tensor] = {"colors": color_logits.detach(), "source": source}
            cstate = opt.state.get(color_logits, {}) if opt is not None else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in cstate:
                    attrs["c_" + key] = cstate[key]
            if uniform_opt is not None and u is not None and uniform_opt.state.get(u):
                attrs["u_m"], attrs["u_v"] = uniform_opt.state[u]["m"], uniform_opt.state[u]["v"]
            ostate = opt.state.get(offsets, {}) if (opt is not None and system is None) else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in ostate:
                    attrs["o_" + key] = ostate[key]
            r = remesh_mesh(x, faces, target, attributes=attrs, iterations=options.remesh_iterations,
                            max_faces=options.max_faces, allow_loose_parts=options.remesh_allow_loose_parts,
                            check_input=False)
        remeshes += 1
        topology_changed = topology_changed or r.topology_changed
        faces = r.faces.to(dev).long()
        V = r.vertices.shape[0]
        base = r.vertices.detach().clone()
        a = r.attributes
        source = a["source"]
        new_colors = a["colors"].clone().requires_grad_(True)
        if opt is not None:
            st: Dict[str, object] = {}
            if "c_exp_avg" in a:
                st = {"step": cstate["step"], "exp_avg": a["c_exp_avg"], "exp_avg_sq": a["c_exp_avg_sq"]}
            _swap_param(opt, color_logits, new_colors, st)
        color_logits = new_colors
        if system is not None:
            system = LaplacianSystem(faces, V, options.large_steps_lambda, dtype=dt, device=dev)
            new_u = system.apply(base).detach().requires_grad_(True)
            assert uniform_opt is not None and u is not None
            old_state = uniform_opt.state.get(u, {})
            uniform_opt = UniformAdam([new_u], lr=options.lr_large_steps * scale)
            if "u_m" in a:
                uniform_opt.state[new_u] = {"t": old_state["t"], "m": a["u_m"], "v": a["u_v"]}
            u = new_u
        else:
            new_off = torch.zeros_like(base, requires_grad=True)
            if opt is not None:
                st = {}
                if "o_exp_avg" in a:
                    st = {"step": ostate["step"], "exp_avg": a["o_exp_avg"], "exp_avg_sq": a["o_exp_avg_sq"]}
                _swap_param(opt, offsets, new_off, st)
            offsets = new_off

    def start_texture() -> None:
        """Create the texture on the final topology (after the last remesh) and optimise it."""
        nonlocal tex_logits, opt
        tex_logits = make_texture(None, None, torch.sigmoid(color_logits))
        if options.optimize_texture:
            if opt is None:
                opt = torch.optim.Adam([{"params": [tex_logits], "lr": options.lr_texture}])
            else:
                opt.add_param_group({"params": [tex_logits], "lr": options.lr_texture})

    with torch.no_grad():
        start = positions()[None]
        for k, view in enumerate(views):
            if not bool((render_view(k, options.halo_px, start).mask > 0).any()):
                raise ValueError(f"{fn}(): views[{k}] ({view.name!r}): the camera sees nothing of the mesh; "
                                 "aim it at the object")

    result_losses: List[float] = []
    cancelled = False
    t_start = time.perf_counter()
    step = 0
    for step in range(options.steps):
        if should_stop is not None and should_stop():
            cancelled = True
            break
        if step in remesh_at:
            do_remesh()
        if late_texture and step == texture_from and tex_logits is None:
            start_texture()
        assert opt is not None or uniform_opt is not None or options.steps == 0
        loss = vertices.new_zeros(())
        verts_now = positions()[None]
        for k, view in enumerate(views):
            out = render_view(k, halo_at(step), verts_now)
            loss = loss + options.w_silhouette * iou_loss(out.alpha, view.mask[None])
            if options.w_color > 0:
                cmask = view.mask[None] * out.mask
                if options.color_facing_power > 0:   # grazing pixels count less
                    cam = cam_params[k].current() if cam_params else view.camera
                    cos = face_view_cosines(verts_now[0], faces, cam) ** options.color_facing_power
                    cmask = cmask * torch.where(out.face_idx >= 0, cos[out.face_idx.clamp(min=0)], 0.0)
                loss = loss + options.w_color * masked_l1(out.rgb, view.image[None], cmask)
        loss = loss / len(views)
        if options.optimize_vertices:
            if options.w_laplacian > 0:
                loss = loss + options.w_laplacian * laplacian_loss((verts_now - base) / scale, faces)
            if options.w_flatten > 0:
                loss = loss + options.w_flatten * flatten_loss(verts_now, faces)
            if options.w_edge > 0:
                loss = loss + options.w_edge * edge_length_loss(verts_now / scale, faces)
        if opt is None and uniform_opt is None:
            result_losses.append(float(loss.detach()))
            break
        for o in (opt, uniform_opt):
            if o is not None:
                o.zero_grad(set_to_none=True)
        loss.backward()
        for o in (opt, uniform_opt):
            if o is not None:
                o.step()
        result_losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, options.steps, result_losses[-1])
        if preview is not None and (step + 1) % max(1, preview_every) == 0:
            with torch.no_grad():
                preview(step + 1, positions().detach().clone())
    seconds = time.perf_counter() - t_start

    if late_texture and tex_logits is None:   # stopped before the texture phase
        start_texture()
    metrics = []
    filled = 0
    with torch.no_grad():
        final = positions(final=True).detach()
        if options.fill_unseen_colors and options.optimize_colors and result_losses:
            color_logits, filled = _fill_unseen(final, faces, color_logits, views, options,
                                                [render_view(k, options.halo_px, final[None]).face_idx
                                                 for k in range(len(views))],
                                                [cam_params[k].current() if cam_params else views[k].camera
                                                 for k in range(len(views))])
        for k, view in enumerate(views):
            out = render_view(k, options.halo_px, final[None])
            iou = float(silhouette_iou(out.mask, (view.mask[None] > 0.5).to(dt))[0])
            l1 = float(masked_l1(out.rgb, view.image[None], (view.mask[None] > 0.5).to(dt) * out.mask))
            metrics.append(ViewMetrics(view.name, iou, l1))
    sun = None
    if options.lighting == "sun":
        d = (sun_dir / sun_dir.norm().clamp(min=1e-8)).detach()
        sun = (d, sun_strength.detach().clone(), ambient.detach().clone())
    return FitResult(
        vertices=final.clone(),
        colors=torch.sigmoid(color_logits).detach(),
        texture=(texturing.texture(tex_logits)[0].permute(1, 2, 0).detach()
                 if (tex_logits is not None and texturing is not None) else None),
        sh=sh.detach()[0] if options.lighting == "sh" else None,
        sun=sun,
        losses=result_losses,
        steps=len(result_losses),
        seconds=seconds,
        cancelled=cancelled,
        views=metrics,
        cameras=[c.final() for c in cam_params] if cam_params else [v.camera for v in views],
        camera_corrections=[c.correction(v.name) for c, v in zip(cam_params, views)],
        faces=faces.clone(),
        topology_changed=topology_changed,
        self_intersecting_faces=self_intersecting_faces(final.cpu(), faces.cpu()),
        face_uvs=texturing.face_uvs.detach().clone() if texturing is not None else None,
        remeshes=remeshes,
        source_positions=source.clone(),
        filled_colors=filled,
    )


def _fill_unseen(vertices: torch.Tensor, faces: torch.Tensor, color_logits: torch.Tensor, views: List[FitView],
                 options: FitOptions, face_idx: List[torch.Tensor],
                 cameras: List[Camera]) -> Tuple[torch.Tensor, int]:
    """The colour logits with the vertices seen less than ``options.fill_min_pixels`` filled
    harmonically from the others (:mod:`dibr_core.color_fill`), and how many were filled.

    Args:
        vertices: (V, 3) final positions; faces: (F, 3); color_logits: (V, 3);
        face_idx: per view the (1, H, W) face buffer of the final render; cameras: per view the
            camera of that render.
    """
    V = vertices.shape[0]
    seen = torch.zeros(V, dtype=torch.float64, device=vertices.device)
    for view, fidx, cam in zip(views, face_idx, cameras):
        cos = face_view_cosines(vertices, faces, cam.to(dtype=vertices.dtype))
        covered = fidx[0] >= 0
        w = torch.zeros_like(view.mask, dtype=torch.float64)
        w[covered] = cos[fidx[0][covered]].double() * (view.mask[covered] > 0.5).double()
        seen += vertex_visibility(faces, V, fidx[0][None], w[None])
    known = seen >= options.fill_min_pixels
    if bool(known.all()) or not bool(known.any()):
        return color_logits, 0
    before = torch.sigmoid(color_logits.detach())
    cols = harmonic_fill(before, faces, known)
    logits = torch.logit(cols.clamp(1e-6, 1 - 1e-6))
    logits[known] = color_logits.detach()[known]   # seen vertices: bit for bit
    return logits, int(((cols != before).any(-1) & ~known).sum())
