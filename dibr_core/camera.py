"""Cameras: view (world -> camera) and projection (camera -> clip) matrices.

Convention (docs/conventions.md): the camera looks down its -Z axis with +Y up and +X right,
as a Blender camera does. The projection is an OpenGL-style 4x4 matrix: ``clip = P @ [x, y, z, 1]``,
NDC ``x = clip_x / clip_w`` (-1 left, +1 right), ``y = clip_y / clip_w`` (+1 top, -1 bottom),
``z = clip_z / clip_w`` (-1 at the near plane, +1 at the far plane). Image row 0 is the top row.

Points are transformed with :func:`transform_points`, written elementwise (multiplies and adds
in a fixed order) rather than as a batched matmul: each result is the same correctly rounded
sum whatever the batch shape, the SIMD width or the BLAS library, so a mesh renders bit for bit
the same alone or padded into a batch, on any CPU. (A batched float32 matmul lets MKL choose
its summation order per shape and per CPU; the soft mask's sigmainv turns that last-bit change
into a 1e-5 change of alpha.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Union

import torch

from dibr_core.checks import check_tensor

Vec3 = Union[torch.Tensor, Sequence[float]]


def _as_batch3(fn: str, name: str, v: Vec3, dtype: torch.dtype, device: Optional[torch.device]) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=device)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    check_tensor(fn, name, t, ("B", 3), None, "float", finite=True)
    return t


def transform_points(points: torch.Tensor, linear: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Affine map of 3-vectors, bitwise independent of batch shape and BLAS.

    ``out[b, n, r] = ((p_x * M[b, r, 0] + p_y * M[b, r, 1]) + p_z * M[b, r, 2]) + offset[b, r]``,
    each product and sum a separate (correctly rounded, never fused) elementwise operation.

    Args:
        points: (B, N, 3) float.
        linear: (B, R, 3) or (1, R, 3) float, one row per output coordinate.
        offset: (B, R) or (1, R) float, or None for no offset.
    Returns:
        (B, N, R) float.
    """
    m = linear[:, None]                                    # (B, 1, R, 3)
    out = points[..., 0:1] * m[..., 0] + points[..., 1:2] * m[..., 1]
    out = out + points[..., 2:3] * m[..., 2]
    if offset is not None:
        out = out + offset[:, None, :]
    return out


def _dot3(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 3) . (..., 3) -> (...), summed left to right elementwise."""
    return (a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1]) + a[..., 2] * b[..., 2]


def look_at(eye: Vec3, at: Vec3 = (0.0, 0.0, 0.0), up: Vec3 = (0.0, 1.0, 0.0),
            dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
    """View matrices of cameras at ``eye`` looking at ``at``.

    Args:
        eye: (B, 3) or (3,) camera centres in world space.
        at: (B, 3) or (3,) points looked at.
        up: (B, 3) or (3,) world up hint (must not be parallel to the viewing direction).
    Returns:
        (B, 4, 4) world -> camera matrices: rows of the rotation are the camera x (right),
        y (up) and z (backwards) axes; z = normalize(eye - at), x = normalize(up x z), y = z x x.
    """
    fn = "look_at"
    e = _as_batch3(fn, "eye", eye, dtype, device)
    a = _as_batch3(fn, "at", at, dtype, e.device)
    u = _as_batch3(fn, "up", up, dtype, e.device)
    B = max(e.shape[0], a.shape[0], u.shape[0])
    e, a, u = e.expand(B, 3), a.expand(B, 3), u.expand(B, 3)
    z = e - a
    zn = z.norm(dim=-1, keepdim=True)
    bad = ~torch.isfinite(z).all(-1) | ~torch.isfinite(zn[..., 0])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{fn}(): eye - at overflows {dtype} (camera {i}: eye={e[i].tolist()}, "
                         f"at={a[i].tolist()}); use a smaller scene scale or dtype=torch.float64")
    if bool((zn <= 0).any()):
        raise ValueError(f"{fn}(): eye and at must differ, got identical points")
    z = z / zn
    un = u.norm(dim=-1)
    if bool((un <= 0).any()) or not bool(torch.isfinite(un).all()):
        raise ValueError(f"{fn}(): up must be a non-zero vector whose length is finite in {dtype}, got {u.tolist()}")
    x = torch.cross(u / un[:, None], z, dim=-1)
    xn = x.norm(dim=-1, keepdim=True)
    if bool((xn < 1e-12).any()):
        raise ValueError(f"{fn}(): up is parallel to the viewing direction; choose another up vector")
    x = x / xn
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], dim=1)  # (B, 3, 3)
    t = -torch.stack([_dot3(x, e), _dot3(y, e), _dot3(z, e)], dim=-1)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}(): the camera translation overflows {dtype} (eye={e.tolist()}); "
                         "use a smaller scene scale or dtype=torch.float64")
    view = torch.zeros(B, 4, 4, dtype=e.dtype, device=e.device)
    view[:, :3, :3] = R
    view[:, :3, 3] = t
    view[:, 3, 3] = 1
    return view


def perspective_projection(fov_y: float, aspect: float = 1.0, near: float = 0.1, far: float = 100.0,
                           dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
    """OpenGL perspective matrix (1, 4, 4).

    Args:
        fov_y: vertical field of view in radians, in (0, pi).
        aspect: width / height of the image (keeps pixels square).
        near, far: clip distances, 0 < near < far.
    """
    fn = "perspective_projection"
    if not (0 < fov_y < math.pi):
        raise ValueError(f"{fn}(): fov_y must be in (0, pi) radians, got {fov_y!r}")
    if not (aspect > 0):
        raise ValueError(f"{fn}(): aspect must be positive, got {aspect!r}")
    if not (0 < near < far):
        raise ValueError(f"{fn}(): need 0 < near < far, got near={near!r}, far={far!r}")
    f = 1.0 / math.tan(fov_y / 2)
    P = torch.zeros(1, 4, 4, dtype=dtype, device=device)
    P[0, 0, 0] = f / aspect
    P[0, 1, 1] = f
    P[0, 2, 2] = -(far + near) / (far - near)
    P[0, 2, 3] = -2 * far * near / (far - near)
    P[0, 3, 2] = -1
    return P


def orthographic_projection(half_height: float, aspect: float = 1.0, near: float = 0.1, far: float = 100.0,
                            dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> torch.Tensor:
    """OpenGL orthographic matrix (1, 4, 4): the view volume is
    [-half_height*aspect, half_height*aspect] x [-half_height, half_height] x [-far, -near]."""
    fn = "orthographic_projection"
    if not (half_height > 0 and aspect > 0):
        raise ValueError(f"{fn}(): half_height and aspect must be positive, got {half_height!r}, {aspect!r}")
    if not (0 <= near < far):
        raise ValueError(f"{fn}(): need 0 <= near < far, got near={near!r}, far={far!r}")
    P = torch.zeros(1, 4, 4, dtype=dtype, device=device)
    P[0, 0, 0] = 1.0 / (half_height * aspect)
    P[0, 1, 1] = 1.0 / half_height
    P[0, 2, 2] = -2.0 / (far - near)
    P[0, 2, 3] = -(far + near) / (far - near)
    P[0, 3, 3] = 1
    return P


@dataclass(frozen=True)
class Camera:
    """A batch of cameras.

    Attributes:
        view: (B, 4, 4) world -> camera (the inverse of the camera's world matrix).
        projection: (B, 4, 4) or (1, 4, 4) camera -> clip, OpenGL style.
        near, far: positive clip distances along the viewing direction. Faces with a corner
            nearer than ``near`` (or behind the camera) and faces entirely beyond ``far`` are
            culled, never clipped.
    """

    view: torch.Tensor
    projection: torch.Tensor
    near: float = 0.1
    far: float = 100.0

    def __post_init__(self) -> None:
        fn = "Camera"
        dims: dict = {}
        check_tensor(fn, "view", self.view, ("B", 4, 4), dims, "float", finite=True)
        check_tensor(fn, "projection", self.projection, (None, 4, 4), None, self.view.dtype, self.view.device, finite=True)
        if self.projection.shape[0] not in (1, self.view.shape[0]):
            raise ValueError(
                f"{fn}(): projection must have shape (1, 4, 4) or ({self.view.shape[0]}, 4, 4), got "
                f"{tuple(self.projection.shape)}"
            )
        if not (0 <= self.near < self.far):
            raise ValueError(f"{fn}(): need 0 <= near < far, got near={self.near!r}, far={self.far!r}")

    @property
    def batch_size(self) -> int:
        return int(self.view.shape[0])

    @staticmethod
    def perspective(view: torch.Tensor, fov_y: float, aspect: float = 1.0, near: float = 0.1,
                    far: float = 100.0) -> "Camera":
        """Perspective cameras from view matrices (B, 4, 4) and a vertical field of view (radians)."""
        P = perspective_projection(fov_y, aspect, near, far, view.dtype, view.device)
        return Camera(view, P, near, far)

    @staticmethod
    def orthographic(view: torch.Tensor, half_height: float, aspect: float = 1.0, near: float = 0.1,
                     far: float = 100.0) -> "Camera":
        P = orthographic_projection(half_height, aspect, near, far, view.dtype, view.device)
        return Camera(view, P, near, far)

    @staticmethod
    def from_world_matrix(camera_to_world: torch.Tensor, projection: torch.Tensor, near: float = 0.1,
                          far: float = 100.0) -> "Camera":
        """Cameras from their world matrices (B, 4, 4) (Blender's ``matrix_world``, no scale)."""
        check_tensor("Camera.from_world_matrix", "camera_to_world", camera_to_world, ("B", 4, 4), None, "float",
                     finite=True)
        return Camera(torch.linalg.inv(camera_to_world), projection.to(camera_to_world.dtype), near, far)

    def to(self, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> "Camera":
        return replace(self, view=self.view.to(device=device, dtype=dtype),
                       projection=self.projection.to(device=device, dtype=dtype))

    @property
    def center(self) -> torch.Tensor:
        """(B, 3) camera centres in world space."""
        R = self.view[:, :3, :3]
        t = self.view[:, None, :3, 3]
        return -transform_points(t, R.transpose(1, 2))[:, 0]

    def to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) world points -> (B, N, 3) camera-space points (visible ones have z < 0)."""
        return transform_points(points, self.view[:, :3, :3], self.view[:, :3, 3])

    def to_clip(self, points_camera: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) camera-space points -> (B, N, 4) clip coordinates."""
        P = self.projection
        return transform_points(points_camera, P[:, :, :3], P[:, :, 3])


def clip_to_ndc(clip: torch.Tensor) -> torch.Tensor:
    """(..., 4) clip coordinates -> (..., 3) NDC; w is kept away from 0 (such corners are culled)."""
    w = clip[..., 3:4]
    tiny = torch.finfo(clip.dtype).tiny ** 0.5
    w_safe = torch.where(w.abs() < tiny, torch.full_like(w, tiny), w)
    return clip[..., :3] / w_safe
