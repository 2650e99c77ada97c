"""Drop-in replacements for ``kaolin.render.mesh``'s DIB-R functions, with CPU support.

Same names, argument order, shapes and defaults as Kaolin, so switching is a change of import::

    # from kaolin.render.mesh import rasterize, dibr_soft_mask, prepare_vertices
    from dibr_core.kaolin import rasterize, dibr_soft_mask, prepare_vertices

Semantics follow Kaolin: screen-linear interpolation, back faces culled only through
``valid_faces`` (or ``face_normals_z >= 0``), soft-mask candidates in face order.
``backend='cuda'`` (Kaolin's default) means "the fastest dibr_core backend for the tensors'
device"; ``'cpu'``, ``'reference'`` and ``'auto'`` are accepted too. The nvdiffrast backends
are not available.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as tnf

from dibr_core.camera import transform_points
from dibr_core.checks import check_tensor
from dibr_core.ops import interpolate
from dibr_core.ops import rasterize as _rasterize
from dibr_core.ops import soft_mask as _soft_mask

Features = Union[torch.Tensor, Sequence[torch.Tensor]]

__all__ = [
    "dibr_rasterization",
    "dibr_soft_mask",
    "face_normals",
    "generate_perspective_projection",
    "index_vertices_by_faces",
    "mask_iou",
    "perspective_camera",
    "prepare_vertices",
    "rasterize",
    "rotate_translate_points",
    "spherical_harmonic_lighting",
    "texture_mapping",
]


def _backend(fn: str, backend: str) -> str:
    if backend in ("nvdiffrast", "nvdiffrast_fwd"):
        raise ValueError(f"{fn}(): backend {backend!r} is not available in dibr_core; use 'cuda' (default), "
                         "'cpu' or 'reference'")
    return "auto" if backend == "cuda" else backend


def rasterize(
    height: int,
    width: int,
    face_vertices_z: torch.Tensor,
    face_vertices_image: torch.Tensor,
    face_features: Features,
    valid_faces: Optional[torch.Tensor] = None,
    multiplier: Optional[float] = None,
    eps: Optional[float] = None,
    backend: str = "cuda",
) -> Tuple[Union[torch.Tensor, Tuple[torch.Tensor, ...]], torch.Tensor]:
    """Kaolin's ``rasterize``: interpolated features (B, H, W, D) (a tuple for a list of features)
    and face_idx (B, H, W) int64 with -1 on background.

    Args:
        height, width: image size.
        face_vertices_z: (B, F, 3) camera-space z of the corners (negative in front of the camera).
        face_vertices_image: (B, F, 3, 2) corners in NDC.
        face_features: (B, F, 3, D) or a list of (B, F, 3, D_i).
        valid_faces: (B, F) bool, optional.
        multiplier: default 1000; eps: default 1e-8.
        backend: 'cuda' (best available), 'cpu', 'reference' or 'auto'.
    """
    fn = "rasterize"
    is_list = not isinstance(face_features, torch.Tensor)
    feats: List[torch.Tensor] = list(face_features) if is_list else [face_features]  # type: ignore[arg-type, list-item]
    frags = _rasterize(face_vertices_image, face_vertices_z, height, width, valid_faces,
                       multiplier=1000.0 if multiplier is None else multiplier,
                       eps=1e-8 if eps is None else eps, backend=_backend(fn, backend))
    widths = []
    for i, f in enumerate(feats):
        check_tensor(fn, f"face_features[{i}]" if is_list else "face_features", f,
                     (face_vertices_image.shape[0], face_vertices_image.shape[1], 3, None), None, "float")
        widths.append(int(f.shape[-1]))
    out = interpolate(torch.cat(feats, dim=-1), frags, backend=_backend(fn, backend))
    parts = torch.split(out, widths, dim=-1)
    return (tuple(parts) if is_list else parts[0]), frags.face_idx


def dibr_soft_mask(
    face_vertices_image: torch.Tensor,
    selected_face_idx: torch.Tensor,
    sigmainv: float = 7000,
    boxlen: float = 0.02,
    knum: int = 30,
    multiplier: float = 1000.0,
) -> torch.Tensor:
    """Kaolin's ``dibr_soft_mask``: (B, H, W) soft silhouette (1 on covered pixels)."""
    return _soft_mask(face_vertices_image, selected_face_idx, sigmainv=sigmainv, boxlen=boxlen, knum=knum,
                      multiplier=multiplier)


def dibr_rasterization(
    height: int,
    width: int,
    face_vertices_z: torch.Tensor,
    face_vertices_image: torch.Tensor,
    face_features: Features,
    face_normals_z: torch.Tensor,
    sigmainv: float = 7000,
    boxlen: float = 0.02,
    knum: int = 30,
    multiplier: Optional[float] = None,
    eps: Optional[float] = None,
    rast_backend: str = "cuda",
) -> Tuple[Union[torch.Tensor, Tuple[torch.Tensor, ...]], torch.Tensor, torch.Tensor]:
    """Kaolin's ``dibr_rasterization``: (features, soft_mask, face_idx); faces with
    ``face_normals_z >= 0`` (B, F) are drawn."""
    check_tensor("dibr_rasterization", "face_normals_z", face_normals_z,
                 (face_vertices_image.shape[0], face_vertices_image.shape[1]), None, "float")
    feats, face_idx = rasterize(height, width, face_vertices_z, face_vertices_image, face_features,
                                face_normals_z >= 0.0, multiplier, eps, rast_backend)
    m = 1000.0 if multiplier is None else multiplier
    soft = dibr_soft_mask(face_vertices_image, face_idx, sigmainv, boxlen, knum, m)
    return feats, soft, face_idx


def texture_mapping(texture_coordinates: torch.Tensor, texture_maps: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Kaolin's ``texture_mapping``: sample textures at UV coordinates, dense or sparse.

    As in Kaolin: UVs are clamped to [0, 1] (v = 0 is the bottom row of the texture), texel
    centres sit at ``(i + 0.5) / size`` (``grid_sample`` with ``align_corners=False``) and samples
    beyond the outer texel centres take the edge texel (``padding_mode="border"``), so a
    bilinear lookup at u = 0 gives the first texel, not half of it blended with black.

    Args:
        texture_coordinates: (B, H, W, 2) per-pixel UVs, or (B, N, 2) UVs of N points (any
            (B, ..., 2)).
        texture_maps: (B, C, h, w) float textures.
        mode: ``"nearest"`` (Kaolin's default) or ``"bilinear"``.
    Returns:
        (B, H, W, C) or (B, N, C): the coordinates' shape with the last axis replaced by C.
    """
    fn = "texture_mapping"
    check_tensor(fn, "texture_maps", texture_maps, ("B", "C", "h", "w"), None, "float", nonempty=("C", "h", "w"))
    uv = check_tensor(fn, "texture_coordinates", texture_coordinates, None, None, texture_maps.dtype,
                      texture_maps.device)
    B = int(texture_maps.shape[0])
    if uv.dim() < 3 or uv.shape[0] != B or uv.shape[-1] != 2:
        raise ValueError(f"{fn}(): texture_coordinates must have shape ({B}, H, W, 2) or ({B}, N, 2) to match "
                         f"texture_maps {tuple(texture_maps.shape)}, got {tuple(uv.shape)}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"{fn}(): mode must be 'nearest' or 'bilinear', got {mode!r}")
    flat = uv.reshape(B, -1, 1, 2).clamp(0.0, 1.0)
    # [0, 1] UVs with v up -> grid_sample's [-1, 1] with y down.
    grid = torch.cat([flat[..., :1] * 2 - 1, 1 - flat[..., 1:] * 2], dim=-1)
    out = tnf.grid_sample(texture_maps, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2).reshape(*uv.shape[:-1], texture_maps.shape[1])


def spherical_harmonic_lighting(imnormal: torch.Tensor, lights: torch.Tensor) -> torch.Tensor:
    """Kaolin's (deprecated) ``spherical_harmonic_lighting``: normals (B, H, W, 3), lights (B, 9)
    -> (B, H, W) using Kaolin's unconvolved basis and band-1 order (x, z, y)."""
    fn = "spherical_harmonic_lighting"
    check_tensor(fn, "imnormal", imnormal, ("B", None, None, 3), None, "float")
    check_tensor(fn, "lights", lights, (imnormal.shape[0], 9), None, "float")
    x, y, z = imnormal.unbind(-1)
    c1, c2, c3, c4, c5 = 0.4886025119, 1.09254843059, 0.94617469575, 0.77254840404, 0.38627420202
    bands = torch.stack([
        torch.full_like(x, 0.28209479177), c1 * x, c1 * z, c1 * y, c2 * (x * y), c2 * (y * z),
        c3 * (z * z) - 0.31539156525, c4 * (x * z), c5 * (x * x - y * y),
    ], dim=-1)
    return (bands * lights.view(-1, 1, 1, 9)).sum(-1)


def generate_perspective_projection(fovyangle: float, ratio: float = 1.0, dtype: torch.dtype = torch.float) -> torch.Tensor:
    """Kaolin's projection vector (3, 1): (1/(ratio tan(fovy/2)), 1/tan(fovy/2), -1)."""
    t = math.tan(fovyangle / 2)
    return torch.tensor([[1.0 / (ratio * t)], [1.0 / t], [-1.0]], dtype=dtype)


def rotate_translate_points(points: torch.Tensor, camera_rot: torch.Tensor, camera_trans: torch.Tensor) -> torch.Tensor:
    """``R (p - c)``: points (B, N, 3), rotations (B, 3, 3) whose rows are the camera axes,
    camera centres (B, 3) -> (B, N, 3) camera-space points (elementwise, see ``transform_points``)."""
    return transform_points(points - camera_trans.view(-1, 1, 3), camera_rot)


def perspective_camera(points: torch.Tensor, camera_proj: torch.Tensor) -> torch.Tensor:
    """Project camera-space points (B, N, 3) with a (3, 1) projection vector -> (B, N, 2)."""
    p = points * camera_proj.view(1, 1, 3).to(points.dtype)
    return p[..., :2] / p[..., 2:3]


def index_vertices_by_faces(vertices_features: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """(B, V, D) per-vertex values, faces (F, 3) -> (B, F, 3, D)."""
    from dibr_core.mesh import gather_faces_unchecked

    return gather_faces_unchecked(vertices_features, faces)


def face_normals(face_vertices: torch.Tensor, unit: bool = False) -> torch.Tensor:
    """(B, F, 3, 3) corners -> (B, F, 3) normals (v1 - v0) x (v2 - v0), unit length if asked."""
    n = torch.cross(face_vertices[:, :, 1] - face_vertices[:, :, 0], face_vertices[:, :, 2] - face_vertices[:, :, 0],
                    dim=-1)
    return tnf.normalize(n, dim=-1) if unit else n


def prepare_vertices(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera_proj: torch.Tensor,
    camera_rot: Optional[torch.Tensor] = None,
    camera_trans: Optional[torch.Tensor] = None,
    camera_transform: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kaolin's ``prepare_vertices``: move vertices (B, V, 3) to the cameras, project them and
    gather them by faces (F, 3).

    Either ``camera_rot`` (B, 3, 3) and ``camera_trans`` (B, 3), or ``camera_transform``
    (B, 4, 3) applied as ``[p, 1] @ T``.

    Returns:
        face_vertices_camera (B, F, 3, 3), face_vertices_image (B, F, 3, 2),
        face_normals (B, F, 3) unit, in camera space.
    """
    fn = "prepare_vertices"
    check_tensor(fn, "vertices", vertices, ("B", "V", 3), None, "float", finite=True)
    check_tensor(fn, "faces", faces, ("F", 3), None, "int")
    if camera_transform is None:
        if camera_rot is None or camera_trans is None:
            raise ValueError(f"{fn}(): give camera_transform, or both camera_rot and camera_trans")
        vertices_camera = rotate_translate_points(vertices, camera_rot, camera_trans)
    else:
        if camera_rot is not None or camera_trans is not None:
            raise ValueError(f"{fn}(): camera_rot and camera_trans must be None when camera_transform is given")
        check_tensor(fn, "camera_transform", camera_transform, (None, 4, 3), None, vertices.dtype, vertices.device)
        vertices_camera = transform_points(vertices, camera_transform[:, :3].transpose(1, 2), camera_transform[:, 3])
    vertices_image = perspective_camera(vertices_camera, camera_proj)
    fvc = index_vertices_by_faces(vertices_camera, faces)
    fvi = index_vertices_by_faces(vertices_image, faces)
    return fvc, fvi, face_normals(fvc, unit=True)


def mask_iou(lhs_mask: torch.Tensor, rhs_mask: torch.Tensor) -> torch.Tensor:
    """Kaolin's ``mask_iou`` loss: 1 - mean IoU of (B, H, W) masks."""
    inter = (lhs_mask * rhs_mask).sum(dim=(1, 2))
    union = (lhs_mask + rhs_mask - lhs_mask * rhs_mask).sum(dim=(1, 2))
    return 1 - (inter / (union + 1e-10)).mean()
