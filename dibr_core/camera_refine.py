"""Per-view camera corrections optimised jointly with a fit (for photos whose cameras were
placed by hand).

A correction moves one camera in coordinates that keep the optimisation well conditioned.
Turning a camera a little sideways (a pan) and moving it a little sideways change the image of a
small, distant object almost the same way, a shift; they differ only by parallax. Optimised as
"rotation about the camera's centre" and "translation", the two parameters are strongly coupled
and the fit crawls along the valley between them. Instead, with the camera's starting
orientation ``O`` (camera -> world rotation, columns its right, up and backward axes), centre
``c`` and the mesh's centre ``p`` at distance ``d``:

* ``omega[0], omega[1]``: an orbit about ``p`` around the camera's right and up axes (the object
  is seen from another direction: the parallax signal),
* ``omega[2]``: a roll about the camera's viewing axis,
* ``tau`` (3,): a translation along the camera's own axes in units of ``d`` (mostly an image shift
  and a zoom),
* ``s``: the focal length times ``exp(s)``.

    Q = O Exp(omega[0], omega[1], 0) O^T          (world rotation of the orbit)
    O' = Q O Rz(omega[2]),   c' = p + Q (c - p) + d O' tau,
    view' = [O'^T | -O'^T c'],   projection'[0, 0] and [1, 1] times exp(s).

All start at zero (the camera as given) and are differentiable through the renderer; Adam's
per-parameter step sizes then cope with the weak orbit gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from dibr_core.camera import Camera

__all__ = ["axis_angle_matrix", "CameraCorrection", "CameraParams"]


def axis_angle_matrix(omega: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (3, 3) of the axis-angle vector omega (3,) (Rodrigues' formula), smooth
    at 0 (the sine and cosine factors use their series for tiny angles)."""
    theta2 = (omega * omega).sum()
    theta = torch.sqrt(theta2 + 1e-30)
    small = theta2 < 1e-8
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / (theta2 + 1e-30))
    zero = omega.new_zeros(())
    k = torch.stack([torch.stack([zero, -omega[2], omega[1]]), torch.stack([omega[2], zero, -omega[0]]),
                     torch.stack([-omega[1], omega[0], zero])])
    return torch.eye(3, dtype=omega.dtype, device=omega.device) + a * k + b * (k @ k)


@dataclass(frozen=True)
class CameraCorrection:
    """How far the fit moved one camera.

    Attributes:
        name: the view's name.
        rotation_deg: angle of the orientation change, degrees.
        translation: (x, y, z) move of the camera's centre in world units.
        translation_pct: length of that move in percent of the camera's starting distance to
            the mesh's centre.
        focal_scale: new focal length over the old one (1 when the focal length is not refined).
    """

    name: str
    rotation_deg: float
    translation: Tuple[float, float, float]
    translation_pct: float
    focal_scale: float


class CameraParams:
    """The correction parameters of one view (see the module docstring).

    Args:
        camera: the starting camera (batch 1).
        target: (3,) the point whose distance scales the move (the mesh's centre).
        focal: also create the focal parameter's gradient (else it stays 0).
    """

    def __init__(self, camera: Camera, target: torch.Tensor, focal: bool) -> None:
        dt, dev = camera.view.dtype, camera.view.device
        self.camera = camera
        self.center = camera.center[0].detach()
        self.orientation = camera.view[0, :3, :3].detach().T
        self.target = target.detach().to(dt)
        self.distance = float((self.center - self.target).norm().clamp(min=1e-6))
        self.omega = torch.zeros(3, dtype=dt, device=dev, requires_grad=True)
        self.tau = torch.zeros(3, dtype=dt, device=dev, requires_grad=True)
        self.log_focal = torch.zeros((), dtype=dt, device=dev, requires_grad=focal)

    def parameters(self) -> list:
        return [self.omega, self.tau] + ([self.log_focal] if self.log_focal.requires_grad else [])

    def current(self) -> Camera:
        """The corrected camera (batch 1), differentiable in the parameters."""
        O = self.orientation
        zero = self.omega.new_zeros(())
        Q = O @ axis_angle_matrix(torch.stack([self.omega[0], self.omega[1], zero])) @ O.T
        roll = axis_angle_matrix(torch.stack([zero, zero, self.omega[2]]))
        O2 = Q @ O @ roll
        c = self.target + Q @ (self.center - self.target) + self.distance * (O2 @ self.tau)
        R = O2.T
        top = torch.cat([R, -(R @ c)[:, None]], dim=1)
        view = torch.cat([top, self.camera.view[0, 3:]], dim=0)[None]
        P = self.camera.projection
        scale = torch.cat([torch.exp(self.log_focal).expand(2), torch.ones(2, dtype=P.dtype, device=P.device)])
        return Camera(view, P * scale[None, :, None], self.camera.near, self.camera.far)

    def final(self) -> Camera:
        """The corrected camera without gradient history."""
        with torch.no_grad():
            return self.current()

    def correction(self, name: str) -> CameraCorrection:
        """How far the camera has moved from where it started."""
        with torch.no_grad():
            return self._correction(name)

    def _correction(self, name: str) -> CameraCorrection:
        cam = self.final()
        R0, R1 = self.camera.view[0, :3, :3].double(), cam.view[0, :3, :3].double()
        cos = float(((torch.trace(R1 @ R0.T) - 1.0) / 2.0).clamp(-1.0, 1.0))
        move = (cam.center[0] - self.center).double()
        m = move.tolist()
        return CameraCorrection(name, math.degrees(math.acos(cos)), (m[0], m[1], m[2]),
                                100.0 * float(move.norm()) / self.distance, float(torch.exp(self.log_focal)))
