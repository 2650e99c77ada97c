"""``render``: meshes + cameras + lighting -> RGB, soft alpha, depth, normals and face index.

The pipeline is DIB-R's: project the vertices, rasterize (nearest face, barycentric weights),
interpolate per-corner attributes, shade per pixel, and add the soft silhouette on the
background. Everything after rasterization is ordinary differentiable PyTorch code.
Lighting and normals are computed in world space, so lights stay fixed as cameras move.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from dibr_core.camera import Camera, clip_to_ndc
from dibr_core.checks import as_index, check_index_range, check_positive, check_scaled_range, check_tensor, describe
from dibr_core.lighting import lambertian, normalize, phong, pow2_scale, spherical_harmonics
from dibr_core.mesh import gather_faces_unchecked
from dibr_core.ops import Fragments, interpolate, rasterize, soft_mask
from dibr_core.texture import face_texture_lod, pixel_lod, sample_texture


@dataclass(frozen=True)
class Meshes:
    """A batch of B triangle meshes.

    Attributes:
        vertices: (B, V, 3) float, world-space positions.
        faces: (F, 3) int64 shared by the batch, or (B, F, 3) per mesh; counter-clockwise
            seen from the front.
        face_mask: (B, F) bool or None: False marks padding faces (see :meth:`from_list`).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    face_mask: Optional[torch.Tensor] = None

    @staticmethod
    def from_list(meshes: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> "Meshes":
        """Pad meshes of different sizes into one batch; padding faces are masked out.

        Args:
            meshes: B pairs (vertices (V_b, 3), faces (F_b, 3)).
        """
        if len(meshes) == 0:
            raise ValueError("Meshes.from_list(): meshes is empty")
        V = max(int(v.shape[0]) for v, _ in meshes)
        F = max(int(f.shape[0]) for _, f in meshes)
        v0 = meshes[0][0]
        verts = v0.new_zeros(len(meshes), V, 3)
        faces = torch.zeros(len(meshes), F, 3, dtype=torch.int64, device=v0.device)
        mask = torch.zeros(len(meshes), F, dtype=torch.bool, device=v0.device)
        for b, (v, f) in enumerate(meshes):
            check_tensor("Meshes.from_list", f"meshes[{b}] vertices", v, ("V", 3), None, "float", v0.device)
            check_tensor("Meshes.from_list", f"meshes[{b}] faces", f, ("F", 3), None, "int", v0.device)
            verts[b, : v.shape[0]] = v
            faces[b, : f.shape[0]] = f.long()
            mask[b, : f.shape[0]] = True
        return Meshes(verts, faces, mask)


@dataclass(frozen=True)
class DirectionalLights:
    """Lambertian lighting: ``albedo * (ambient + sum_l color_l * max(0, n . d_l))``.

    Attributes:
        directions: (B, L, 3) world-space unit vectors pointing toward each light.
        colors: (B, L, 3) light RGB intensities.
        ambient: (B, 3) ambient RGB.
    """

    directions: torch.Tensor
    colors: torch.Tensor
    ambient: torch.Tensor


@dataclass(frozen=True)
class PhongLight:
    """Phong lighting with one white directional light (DIB-R's Phong shader).

    Attributes:
        direction: (B, 3) world-space unit vector toward the light.
        material: (B, 3, 3) rows: ambient, diffuse, specular RGB.
        shininess: (B, 1) positive exponent.
    """

    direction: torch.Tensor
    material: torch.Tensor
    shininess: torch.Tensor


@dataclass(frozen=True)
class SHLighting:
    """Order-2 spherical-harmonics lighting (DIB-R's constants) in world space.

    Attributes:
        coefficients: (B, 9) shared by RGB, or (B, 3, 9) per channel.
    """

    coefficients: torch.Tensor


Lighting = Union[None, DirectionalLights, PhongLight, SHLighting]


@dataclass(frozen=True)
class RenderSettings:
    """Rasterization and shading options.

    Attributes:
        height, width: image size.
        backface_culling: skip faces whose projection is clockwise (seen from behind).
        perspective_correct: perspective-correct interpolation and depth test (right for
            textures); False reproduces DIB-R (screen-linear weights, screen-linear z test).
        smooth_normals: interpolate area-weighted vertex normals (else flat face normals).
        sigmainv, boxlen, knum: soft-mask parameters (see ``soft_mask``).
        multiplier, eps: rasterizer arithmetic (see ``rasterize``).
        texture_filter: ``"bilinear"``, ``"nearest"`` or ``"mipmap"`` (trilinear over a mip pyramid,
            with a per-face level of detail from :func:`dibr_core.texture.face_texture_lod`'s
            ``"max"`` rule, held constant for the gradients); texture_wrap: ``"repeat"`` or
            ``"clamp"``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"``.
    """

    height: int = 256
    width: int = 256
    backface_culling: bool = True
    perspective_correct: bool = False
    smooth_normals: bool = True
    sigmainv: float = 7000.0
    boxlen: float = 0.02
    knum: int = 30
    multiplier: float = 1000.0
    eps: float = 1e-8
    texture_filter: str = "bilinear"
    texture_wrap: str = "repeat"
    backend: str = "auto"

    def __post_init__(self) -> None:
        """Validate the fields; integer fields accept numpy integers (stored as int)."""
        fn = "RenderSettings"
        for name, lo, hi in (("height", 1, None), ("width", 1, None), ("knum", 1, 4096)):
            value = getattr(self, name)
            v = as_index(value)
            if v is None or v < lo or (hi is not None and v > hi):
                bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise ValueError(f"{fn}(): {name} must be an int {bound}, got {describe(value)}")
            object.__setattr__(self, name, v)
        for name in ("sigmainv", "boxlen", "multiplier"):
            check_positive(fn, name, getattr(self, name))
        check_positive(fn, "eps", self.eps, allow_zero=True)
        if self.texture_filter not in ("bilinear", "nearest", "mipmap"):
            raise ValueError(f"{fn}(): texture_filter must be 'bilinear', 'nearest' or 'mipmap', "
                             f"got {self.texture_filter!r}")
        if self.texture_wrap not in ("repeat", "clamp"):
            raise ValueError(f"{fn}(): texture_wrap must be 'repeat' or 'clamp', got {self.texture_wrap!r}")


@dataclass(frozen=True)
class RenderOutput:
    """Images of a batch, all with rows top to bottom.

    Attributes:
        rgb: (B, H, W, 3) shaded colour clamped to [0, 1], 0 on background.
        alpha: (B, H, W) DIB-R soft silhouette (1 on covered pixels).
        depth: (B, H, W) distance along the viewing axis (-z_cam), 0 on background.
        normals: (B, H, W, 3) world-space unit normals, 0 on background.
        face_idx: (B, H, W) int64 face index, -1 on background.
        mask: (B, H, W) float hard coverage (1 covered, 0 background).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor
    face_idx: torch.Tensor
    mask: torch.Tensor

    def detach(self) -> "RenderOutput":
        return RenderOutput(**{f.name: getattr(self, f.name).detach() for f in fields(self)})


def _gather(values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """values (B, V, D), faces (F, 3) or (B, F, 3) -> (B, F, 3, D)."""
    return gather_faces_unchecked(values, faces)


def _smooth_normals(face_n: torch.Tensor, faces: torch.Tensor, V: int) -> torch.Tensor:
    """Area-weighted vertex normals from unnormalised face normals (B, F, 3) -> (B, V, 3)."""
    B, F = face_n.shape[:2]
    f = faces if faces.dim() == 3 else faces.unsqueeze(0).expand(B, F, 3)
    flat = (f + torch.arange(B, device=f.device)[:, None, None] * V).reshape(-1)
    src = face_n.unsqueeze(2).expand(B, F, 3, 3).reshape(-1, 3)
    acc = torch.zeros(B * V, 3, dtype=face_n.dtype, device=face_n.device).index_add(0, flat, src)
    return acc.view(B, V, 3)


@dataclass(frozen=True)
class _Rasterized:
    """What :func:`render` and :func:`rasterize_meshes` share: the checked inputs (camera
    expanded to the batch), the projection and the rasterization."""

    verts: torch.Tensor         # (B, V, 3)
    faces: torch.Tensor         # (F, 3) or (B, F, 3) int64
    dims: Dict[str, int]        # B, V, F
    camera: Camera              # batch B
    p_cam: torch.Tensor         # (B, V, 3) camera-space positions
    clip: torch.Tensor          # (B, V, 4)
    fvi: torch.Tensor           # (B, F, 3, 2) NDC corners (culled faces moved to -10)
    visible: torch.Tensor       # (B, F) bool, not culled
    fw: torch.Tensor            # (B, F, 3) clip w of the corners
    frags: Fragments


def _rasterized(fn: str, meshes: Meshes, camera: Camera, settings: RenderSettings) -> _Rasterized:
    """Check ``meshes`` and ``camera`` (errors name ``fn``), project and rasterize."""
    dims: Dict[str, int] = {}
    verts = check_tensor(fn, "meshes.vertices", meshes.vertices, ("B", "V", 3), dims, "float", finite=True)
    dev, dt = verts.device, verts.dtype
    faces = meshes.faces
    if isinstance(faces, torch.Tensor) and faces.dim() == 3:
        check_tensor(fn, "meshes.faces", faces, ("B", "F", 3), dims, "int", dev)
    else:
        check_tensor(fn, "meshes.faces", faces, ("F", 3), dims, "int", dev)
    if dims["V"] == 0 or dims["F"] == 0:
        raise ValueError(f"{fn}(): meshes are empty (V={dims['V']}, F={dims['F']})")
    check_index_range(fn, "meshes.faces", faces, dims["V"], "vertices")
    faces = faces.long()
    B, V, F = dims["B"], dims["V"], dims["F"]
    if meshes.face_mask is not None:
        check_tensor(fn, "meshes.face_mask", meshes.face_mask, ("B", "F"), dims, "bool", dev)
    if camera.view.dtype != dt or camera.view.device != dev:
        raise TypeError(f"{fn}(): camera has dtype {camera.view.dtype} on {camera.view.device}, "
                        f"vertices have {dt} on {dev}; they must match")
    if camera.batch_size not in (1, B):
        raise ValueError(f"{fn}(): camera batch must be 1 or B={B}, got {camera.batch_size}")
    if camera.batch_size != B:
        camera = Camera(camera.view.expand(B, 4, 4), camera.projection, camera.near, camera.far)
    H, W = settings.height, settings.width

    # Projection.
    p_cam = camera.to_camera(verts)                      # (B, V, 3)
    clip = camera.to_clip(p_cam)                         # (B, V, 4)
    ndc = clip_to_ndc(clip)                              # (B, V, 3)
    fv_cam = _gather(p_cam, faces)                       # (B, F, 3, 3)
    fvi = _gather(ndc[..., :2], faces)                   # (B, F, 3, 2)
    depth_c = -fv_cam[..., 2]                            # (B, F, 3) distance along the view axis
    visible = (depth_c >= camera.near).all(-1) & (depth_c <= camera.far).any(-1)
    visible = visible & (_gather(clip[..., 3:], faces)[..., 0] > 0).all(-1)
    if meshes.face_mask is not None:
        visible = visible & meshes.face_mask
    # Keep culled faces' image positions finite and out of the way.
    fvi = torch.where(visible[..., None, None], fvi, torch.full_like(fvi, -10.0))
    drawable = visible
    if settings.backface_culling:
        e1 = fvi[:, :, 1] - fvi[:, :, 0]
        e2 = fvi[:, :, 2] - fvi[:, :, 0]
        signed_area = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
        drawable = drawable & (signed_area > 0)
    fw = _gather(clip[..., 3:], faces)[..., 0]
    if settings.perspective_correct:
        key = -_gather(ndc[..., 2:], faces)[..., 0]
    else:
        key = fv_cam[..., 2]
    key = torch.where(visible[..., None], key, torch.zeros_like(key))
    check_scaled_range(fn, "meshes.vertices projected to NDC", fvi, settings.multiplier)
    frags: Fragments = rasterize(fvi, key.detach(), H, W, drawable, multiplier=settings.multiplier,
                                 eps=settings.eps, backend=settings.backend)
    return _Rasterized(verts, faces, dims, camera, p_cam, clip, fvi, visible, fw, frags)


def rasterize_meshes(meshes: Meshes, camera: Camera, settings: RenderSettings = RenderSettings()) -> Fragments:
    """The rasterization pass of :func:`render` alone: the nearest drawn face and barycentric
    weights at every pixel (same projection, culling and rules as :func:`render`), without the
    soft silhouette, attributes or shading. ``face_idx >= 0`` (``Fragments.mask``) is the hard
    coverage: much cheaper than a full render when only the silhouette is needed.

    Args:
        meshes: B meshes; camera: B cameras or one; settings: only ``height``, ``width``,
            ``backface_culling``, ``perspective_correct``, ``multiplier``, ``eps`` and
            ``backend`` are used.

    Returns:
        :class:`dibr_core.ops.Fragments`: ``face_idx`` (B, H, W), ``bary`` (B, H, W, 3).
    """
    return _rasterized("rasterize_meshes", meshes, camera, settings).frags


def render(
    meshes: Meshes,
    camera: Camera,
    *,
    colors: Optional[torch.Tensor] = None,
    face_uvs: Optional[torch.Tensor] = None,
    texture: Optional[torch.Tensor] = None,
    lighting: Lighting = None,
    settings: RenderSettings = RenderSettings(),
) -> RenderOutput:
    """Render a batch of meshes with DIB-R.

    The albedo is the texture sampled at the interpolated UVs when ``texture`` is given, else
    the interpolated vertex colours, else white. ``lighting=None`` is the vertex-colour (unlit)
    model. Faces with a corner closer than ``camera.near`` or behind the camera, and faces
    entirely beyond ``camera.far``, are culled (never clipped); culled faces take no part in the
    soft mask either.

    Args:
        meshes: B meshes (:class:`Meshes`).
        camera: B cameras, or one camera (batch 1) shared by all meshes.
        colors: (B, V, 3) per-vertex RGB in [0, 1], optional.
        face_uvs: (B, F, 3, 2) or (F, 3, 2) per-corner UVs (OpenGL: v = 0 at the bottom).
        texture: (B, 3, Ht, Wt) or (1, 3, Ht, Wt) RGB texture; needs ``face_uvs``.
        lighting: None, :class:`DirectionalLights`, :class:`PhongLight` or :class:`SHLighting`.
        settings: :class:`RenderSettings`.

    Returns:
        :class:`RenderOutput`.
    """
    fn = "render"
    r = _rasterized(fn, meshes, camera, settings)
    verts, faces, dims, camera, frags = r.verts, r.faces, r.dims, r.camera, r.frags
    p_cam, clip, fvi, visible, fw = r.p_cam, r.clip, r.fvi, r.visible, r.fw
    dt, dev = verts.dtype, verts.device
    B, V, F = dims["B"], dims["V"], dims["F"]
    H, W = settings.height, settings.width
    alpha = soft_mask(fvi, frags.face_idx, sigmainv=settings.sigmainv, boxlen=settings.boxlen, knum=settings.knum,
                      multiplier=settings.multiplier, valid_faces=visible, backend=settings.backend)
    pc_w = torch.where(visible[..., None], fw, torch.ones_like(fw)) if settings.perspective_correct else None

    # Attributes: per-vertex ones in one interpolation, per-corner ones (flat normals, UVs) in another.
    fv_world = _gather(verts, faces)                     # (B, F, 3, 3)
    e1 = fv_world[:, :, 1] - fv_world[:, :, 0]
    e2 = fv_world[:, :, 2] - fv_world[:, :, 0]
    # On meshes whose edges are so long (or short) that their cross products would overflow (or
    # underflow), the edges are divided by a power of two per mesh (exact) near the longest edge;
    # normals are normalised, so the scale cancels. Other meshes are left unscaled, so their normals
    # stay bitwise independent of faces added to the mesh (normalize's epsilon is not scale-free).
    longest = torch.maximum(e1.detach().abs().amax(dim=(1, 2)), e2.detach().abs().amax(dim=(1, 2)))
    info = torch.finfo(longest.dtype)
    extreme = (longest > info.max ** 0.5 / 64) | ((longest > 0) & (longest < info.tiny ** 0.5 * 64))
    edge_scale = torch.where(extreme, pow2_scale(longest), torch.ones_like(longest))
    face_n = torch.cross(e1 / edge_scale[:, None, None], e2 / edge_scale[:, None, None], dim=-1)
    vert_feats: List[torch.Tensor] = [-p_cam[..., 2:], verts]
    corner_feats: List[torch.Tensor] = []
    if settings.smooth_normals:
        vert_feats.append(_smooth_normals(face_n, faces, V))
    else:
        corner_feats.append(face_n.unsqueeze(2).expand(B, F, 3, 3))
    if colors is not None:
        check_tensor(fn, "colors", colors, ("B", "V", 3), dims, dt, dev, finite=True)
        vert_feats.append(colors)
    if texture is not None:
        if face_uvs is None:
            raise ValueError(f"{fn}(): texture needs face_uvs (B, F, 3, 2)")
        check_tensor(fn, "texture", texture, (None, 3, None, None), dims, dt, dev, finite=True)
        if texture.shape[0] not in (1, B):
            raise ValueError(f"{fn}(): texture must have shape (1 or {B}, 3, Ht, Wt), got {tuple(texture.shape)}")
    if face_uvs is not None:
        if face_uvs.dim() == 3:
            check_tensor(fn, "face_uvs", face_uvs, ("F", 3, 2), dims, dt, dev, finite=True)
            face_uvs = face_uvs.unsqueeze(0).expand(B, F, 3, 2)
        check_tensor(fn, "face_uvs", face_uvs, ("B", "F", 3, 2), dims, dt, dev, finite=True)
        corner_feats.append(face_uvs)
    vattr = interpolate(torch.cat(vert_feats, dim=-1), frags, faces, face_vertices_w=pc_w, backend=settings.backend)
    depth = vattr[..., 0]
    world_pos = vattr[..., 1:4]
    k = 4
    if settings.smooth_normals:
        normals = normalize(vattr[..., k:k + 3])
        k += 3
    vcolors = vattr[..., k:k + 3] if colors is not None else None
    cattr = (interpolate(torch.cat(corner_feats, dim=-1), frags, face_vertices_w=pc_w, backend=settings.backend)
             if corner_feats else None)
    if not settings.smooth_normals:
        assert cattr is not None
        normals = normalize(cattr[..., :3])
    hard = frags.mask.to(dt)
    if texture is not None:
        assert cattr is not None
        uv = cattr[..., -2:]
        lod = None
        if settings.texture_filter == "mipmap":
            assert face_uvs is not None
            flod = face_texture_lod(fvi.detach(), face_uvs.detach(), (H, W), (texture.shape[2], texture.shape[3]))
            lod = pixel_lod(flod, frags.face_idx)
        albedo = sample_texture(texture, uv, settings.texture_filter,  # type: ignore[arg-type]
                                settings.texture_wrap, lod=lod)  # type: ignore[arg-type]
    elif vcolors is not None:
        albedo = vcolors
    else:
        albedo = hard.unsqueeze(-1).expand(B, H, W, 3)

    if lighting is None:
        shaded = albedo
    elif isinstance(lighting, DirectionalLights):
        shaded = lambertian(albedo, normals, lighting.directions, lighting.colors, lighting.ambient)
    elif isinstance(lighting, PhongLight):
        eye = camera.center[:, None, None, :]
        view_dirs = normalize(eye - world_pos)
        shaded = phong(albedo, normals, view_dirs, lighting.direction, lighting.material, lighting.shininess)
    elif isinstance(lighting, SHLighting):
        shaded = spherical_harmonics(albedo, normals, lighting.coefficients)
    else:
        raise TypeError(f"{fn}(): lighting must be None, DirectionalLights, PhongLight or SHLighting, "
                        f"got {type(lighting).__name__}")
    rgb = (shaded * hard.unsqueeze(-1)).clamp(0.0, 1.0)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth * hard, normals=normals * hard.unsqueeze(-1),
                        face_idx=frags.face_idx, mask=hard)
