"""Image -> textured mesh with the shipped predictor (:mod:`dibr_core.models.predictor`).

The weights in ``dibr_core/weights/predictor.pt`` were trained by
``python -m dibr_core.train predictor`` on the procedural data set (see
``dibr_core/weights/MODEL_CARD.md``). Inputs are framed like the training renders by
:func:`prepare_image`, the one framing shared by :func:`predict_mesh`, the predictor eval
(``python -m dibr_core.eval predictor``, which measures :func:`predict_mesh` itself) and the
Blender extension: a data-set render passes unchanged, any other picture is zoomed and shifted
just enough for its object to lie within the sizes and positions of the training renders
(:data:`FRAME_EXTENT`, :data:`FRAME_OFFSET`); RGB is zero outside the (hard) mask.

Example::

    from dibr_core.inference import predict_mesh
    mesh = predict_mesh(rgba)            # (H, W, 4) float in [0, 1], or (H, W, 3) with mask=
    mesh.vertices, mesh.faces, mesh.colors, mesh.face_uvs, mesh.texture
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from dibr_core.models.checkpoints import file_sha256
from dibr_core.models.predictor import Predictor, load_predictor, repair_output

if TYPE_CHECKING:
    from dibr_core.models.generator import Generator

__all__ = ["PREDICTOR_WEIGHTS", "GENERATOR_WEIGHTS", "FRAME_EXTENT", "FRAME_OFFSET", "PredictedMesh", "load_shipped_predictor",
           "load_shipped_generator", "prepare_image", "predict_mesh"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PREDICTOR_WEIGHTS = WEIGHTS_DIR / "predictor.pt"
GENERATOR_WEIGHTS = WEIGHTS_DIR / "generator.pt"
# The framing of the training renders (python -m dibr_core.data generate --split train, all 24
# views of the first 20 shapes of each category, 6,240 images; see prepare_image): the 0.5th and
# 99.5th percentiles of the mask bounding box's diagonal as a fraction of the image side, and of
# its centre's offset from the image centre (rows down, columns right) as a fraction of the side.
# (Median diagonal 0.675, from 0.503 for airplanes to 0.757 for cabinets: no single size fits
# every category, so a picture is only brought into the range. The diagonal varies least of the
# box's measures: log-std 0.164, longer side 0.171, sqrt of the mask area 0.332.)
FRAME_EXTENT: Tuple[float, float] = (0.345, 0.828)
FRAME_OFFSET: Tuple[Tuple[float, float], Tuple[float, float]] = ((-0.039, 0.094), (-0.047, 0.055))

ImageLike = Union[np.ndarray, torch.Tensor]


@dataclass(frozen=True)
class PredictedMesh:
    """A predicted textured mesh in the canonical object frame (y up, -z towards azimuth 0,
    bounding-box diagonal about 1, centred near the origin).

    Attributes:
        vertices: (V, 3) float32; faces: (F, 3) int64, counter-clockwise seen from outside.
        colors: (V, 3) float32 in [0, 1], the texture sampled at each vertex's UVs.
        face_uvs: (F, 3, 2) float32 per-corner UVs (OpenGL: v = 0 at the texture's bottom row).
        texture: (T, T, 3) float32 in [0, 1], rows top to bottom (row 0 is v = 1), or None for a
            model without a texture head.
        input_image: (4, S, S) float32, the framed RGBA the network saw.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor
    face_uvs: torch.Tensor
    texture: Optional[torch.Tensor]
    input_image: torch.Tensor


_CACHE: Dict[Tuple[str, str, float], Any] = {}


def _cached(fn: str, path: Optional[Union[str, Path]], default: Path, load: Callable[[Path], Any]) -> Any:
    """``load(file)`` once per file and modification time (``path`` or ``default``)."""
    p = Path(path) if path is not None else default
    if not p.is_file():
        raise FileNotFoundError(f"{fn}(): no weights file at {p}")
    key = (fn, str(p.resolve()), p.stat().st_mtime)
    if key not in _CACHE:
        _CACHE[key] = load(p)
    return _CACHE[key]


def load_shipped_predictor(path: Optional[Union[str, Path]] = None) -> Predictor:
    """The predictor (eval mode, float32) from ``path`` (default: the shipped weights), cached per
    file and modification time.

    Raises:
        FileNotFoundError: when the file does not exist.
    """
    model: Predictor = _cached("load_shipped_predictor", path, PREDICTOR_WEIGHTS, lambda p: load_predictor(p).float())
    return model


# Float inputs may stray this far outside [0, 1] (colour conversions); further means another range.
_RANGE_SLACK = 1e-3


def _as_image_tensor(fn: str, name: str, image: ImageLike) -> torch.Tensor:
    """``image`` as a CPU tensor in its own dtype (uint8, bool or float), sharing memory with a
    numpy array where possible; float values are checked to be finite and in [0, 1] without a
    float copy of the whole image."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
    else:
        a = np.asarray(image)
        if any(st < 0 for st in a.strides):
            a = np.ascontiguousarray(a)
        t = torch.as_tensor(a)
    if t.dtype not in (torch.uint8, torch.bool) and not t.is_floating_point():
        raise TypeError(f"{fn}(): {name} must be uint8, bool or float, got {t.dtype}")
    if t.is_floating_point() and t.numel() > 0:
        lo, hi = (float(x) for x in torch.aminmax(t))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"{fn}(): {name} has NaN or infinite values (shape {tuple(t.shape)})")
        if lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
            hint = " (0..255 values: divide by 255, or pass uint8)" if hi > 1.5 else ""
            raise ValueError(f"{fn}(): {name} is {str(t.dtype).replace('torch.', '')} with values in "
                             f"[{lo:.4g}, {hi:.4g}]; float images must be in [0, 1]{hint}")
    return t


def _unit_float(t: torch.Tensor) -> torch.Tensor:
    """uint8 (0..255), bool or float [0, 1] values as float32 in [0, 1]."""
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32).clamp(0.0, 1.0)


def _foreground(t: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: alpha or mask above 0.5, computed in the input's dtype (no float copy)."""
    if t.dtype == torch.bool:
        return t
    if t.dtype == torch.uint8:
        return t > 127                                   # v / 255 > 0.5
    return t > 0.5


def _frame_window(H: int, W: int, box: Tuple[int, int, int, int]) -> Tuple[int, int, int]:
    """The square source window ``(top, left, side)`` that :func:`prepare_image` resamples.

    ``box`` is the mask's bounding box ``(y0, y1, x0, x1)`` (end exclusive) in the (H, W) image.
    The start is the image itself, padded to a square about its centre. Its side is then
    changed only as far as needed to bring the box's diagonal into :data:`FRAME_EXTENT`
    (fractions of the side), and its centre only as far as needed to bring the box's centre
    into :data:`FRAME_OFFSET` and the whole box inside the window.
    """
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    diag = math.hypot(h, w)
    lo, hi = FRAME_EXTENT
    side = min(max(float(max(H, W)), diag / hi), diag / lo)
    centre = []
    for a0, a1, extent, (olo, ohi) in ((y0, y1, H, FRAME_OFFSET[0]), (x0, x1, W, FRAME_OFFSET[1])):
        c = 0.5 * (a0 + a1)
        room = max(0.5 * (1.0 - (a1 - a0) / side), 0.0)          # the box stays inside the window
        off = min(max((c - 0.5 * extent) / side, max(olo, -room)), min(ohi, room))
        centre.append(c - off * side)
    n = max(int(round(side)), 1)
    return int(round(centre[0] - 0.5 * n)), int(round(centre[1] - 0.5 * n)), n


def prepare_image(image: ImageLike, mask: Optional[ImageLike] = None, size: int = 64) -> torch.Tensor:
    """Frame a photo or render as the predictor's training renders are framed; the one input
    framing of :func:`predict_mesh`, the predictor eval and the Blender extension.

    The training renders (``python -m dibr_core.data generate``) see a unit-diagonal object from
    a fixed camera (distance 2.732, 30 degree field of view, looking at the object's centre), so
    the object's size and position in the image vary only within the ranges measured on the
    training views: the mask bounding box's diagonal within :data:`FRAME_EXTENT` of the image
    side and its centre within :data:`FRAME_OFFSET` of the image centre. A picture is framed
    by the smallest change that puts it in those ranges: the image, padded to a square, is
    kept where its object already lies in them (so a data-set render is passed through
    unchanged), and otherwise zoomed and shifted just onto the nearest edge of the ranges.
    The result is resampled to ``size`` x ``size`` (bilinear, antialiased when shrinking).

    Only the square window around the object is converted to float, so the memory used scales
    with the object, not with the photo (the input stays in its own dtype).

    Args:
        image: (H, W, 4) RGBA or (H, W, 3) RGB, float in [0, 1] or uint8, rows top to bottom.
        mask: (H, W) foreground mask (float in [0, 1], uint8 or bool); required for RGB, and
            replaces the alpha channel of RGBA when given.
        size: output side (the model's ``image_size``).

    Returns:
        (4, size, size) float32: RGB (zero outside the mask) and the hard mask (0 or 1).

    Raises:
        ValueError: on bad shapes, float values outside [0, 1] (e.g. 0..255 floats), NaN, a
            missing mask for RGB input, or an empty mask.
    """
    fn = "prepare_image"
    img = _as_image_tensor(fn, "image", image)
    if img.dim() != 3 or img.shape[-1] not in (3, 4) or img.shape[0] < 2 or img.shape[1] < 2:
        raise ValueError(f"{fn}(): image must have shape (H, W, 3 or 4), got {tuple(img.shape)}")
    if img.dtype == torch.bool:
        raise TypeError(f"{fn}(): image must be uint8 or float, got {img.dtype}")
    if size < 2:
        raise ValueError(f"{fn}(): size must be at least 2, got {size}")
    H, W = int(img.shape[0]), int(img.shape[1])
    if mask is not None:
        m = _as_image_tensor(fn, "mask", mask)
        if m.dim() == 3 and m.shape[-1] == 1:
            m = m[..., 0]
        if tuple(m.shape) != (H, W):
            raise ValueError(f"{fn}(): mask must have shape ({H}, {W}), got {tuple(m.shape)}")
        alpha_src = m
    elif img.shape[-1] == 4:
        alpha_src = img[..., 3]
    else:
        raise ValueError(f"{fn}(): an RGB image of shape {tuple(img.shape)} needs a mask (H, W)")
    fg = _foreground(alpha_src)
    rows = torch.nonzero(fg.any(dim=1)).flatten()
    if rows.numel() == 0:
        raise ValueError(f"{fn}(): the mask (or alpha channel) of the {H}x{W} image is empty")
    cols = torch.nonzero(fg.any(dim=0)).flatten()
    del fg
    top, left, n = _frame_window(H, W, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    # The window's part inside the image, converted to premultiplied float RGBA on an (n, n)
    # canvas that is zero outside the image.
    r0, r1 = max(top, 0), min(top + n, H)
    c0, c1 = max(left, 0), min(left + n, W)
    alpha = _unit_float(alpha_src[r0:r1, c0:c1])
    rgb = _unit_float(img[r0:r1, c0:c1, :3])
    canvas = torch.zeros(4, n, n, dtype=torch.float32)
    canvas[:3, r0 - top:r1 - top, c0 - left:c1 - left] = (rgb * alpha[..., None]).permute(2, 0, 1)
    canvas[3, r0 - top:r1 - top, c0 - left:c1 - left] = alpha
    del rgb, alpha
    out = F.interpolate(canvas[None], size=(size, size), mode="bilinear", align_corners=False,
                        antialias=n > size)[0]
    a = out[3]
    hard = (a > 0.5).float()
    rgb_out = (out[:3] / a.clamp_min(1e-6)).clamp(0.0, 1.0) * hard
    return torch.cat([rgb_out, hard[None]], dim=0).contiguous()


def load_shipped_generator(path: Optional[Union[str, Path]] = None) -> "Generator":
    """The generator (eval mode) from ``path`` (default: the shipped weights), cached per file."""
    from dibr_core.models.generator import load_generator

    gen: "Generator" = _cached("load_shipped_generator", path, GENERATOR_WEIGHTS, load_generator)
    return gen


def predict_mesh(image: ImageLike, mask: Optional[ImageLike] = None, model: Optional[Predictor] = None,
                 category: Optional[str] = None, generator: Optional["Generator"] = None,
                 repair: bool = True) -> PredictedMesh:
    """Predict a textured mesh from one image; see :func:`prepare_image` for the inputs.

    ``model`` defaults to :func:`load_shipped_predictor`. ``category`` (one of the 13 names) is
    a hint: the image's latent code is pulled into the category's latent Gaussian of the
    class-conditional generator (``generator``, default the shipped one, which must have been
    fitted on this predictor): its coordinates along the category's principal directions are
    clamped to 2.5 standard deviations (:meth:`Generator.project`), so an ambiguous image
    decodes to a plausible member of that category while an in-distribution one is unchanged.
    With ``repair`` (the default) the mesh's inside-out pockets (a thin part folded through
    itself) are removed by :func:`dibr_core.mesh_repair.untangle`.

    Raises:
        ValueError: for an unknown category, or a generator fitted on another predictor.
    """
    net = model if model is not None else load_shipped_predictor()
    x = prepare_image(image, mask, net.image_size)
    gen = None
    if category is not None:
        gen = generator if generator is not None else load_shipped_generator()
        gen.category_index(category)                  # raises ValueError for unknown names
        if model is None and generator is None:
            fitted_on = gen.meta.get("predictor_sha256")
            if fitted_on is not None and fitted_on != file_sha256(PREDICTOR_WEIGHTS):
                raise ValueError("predict_mesh(): the shipped generator was fitted on another predictor; "
                                 "refit it with python -m dibr_core.train generator")
    with torch.no_grad():
        z = net.encode(x[None])
        if gen is not None and category is not None:
            z = gen.project(z, category)
        out = net.decode(z)
        if repair:
            out = repair_output(out, net.faces)
    tex = out.texture[0].permute(1, 2, 0).float().contiguous() if out.texture is not None else None
    return PredictedMesh(vertices=out.vertices[0].float().contiguous(), faces=net.faces.long().clone(),
                         colors=out.colors[0].float().contiguous(), face_uvs=net.face_uvs.float().clone(),
                         texture=tex, input_image=x)
