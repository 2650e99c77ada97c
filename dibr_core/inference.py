"""Image -> textured mesh with the shipped predictor (:mod:`dibr_core.models.predictor`).

The weights in ``dibr_core/weights/predictor.pt`` were trained by
``python -m dibr_core.train predictor`` on the procedural data set (see
``dibr_core/weights/MODEL_CARD.md``). Inputs are framed like the training renders by
:func:`prepare_image`, the one framing shared by :func:`predict_mesh`, the predictor eval
(``python -m dibr_core.eval predictor``, which measures :func:`predict_mesh` itself) and the
Blender extension: a data-set render passes unchanged, any other picture is zoomed and shifted
just enough for its object to lie within the sizes and positions of the training renders
(:data:`FRAME_EXTENT`, :data:`FRAME_OFFSET`); RGB is zero outside the (hard) mask. The network's
mesh is then conformed to the picture's outline in its input view
(:func:`dibr_core.conform.conform_silhouette`; ``conform=False`` returns the network's mesh).

Example::

    from dibr_core.inference import predict_mesh
    mesh = predict_mesh(rgba)            # (H, W, 4) float in [0, 1], or (H, W, 3) with mask=
    mesh.vertices, mesh.faces, mesh.colors, mesh.face_uvs, mesh.texture
    mesh.input_view.iou, mesh.network_iou   # its silhouette IoU in its input view, conformed / not
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from dibr_core.models.checkpoints import file_sha256
from dibr_core.models.predictor import Predictor, coarse_template_faces, load_predictor, repair_output

if TYPE_CHECKING:
    from dibr_core.camera import Camera
    from dibr_core.ops import Fragments
    from dibr_core.fit import FitOptions, FitResult, FitView
    from dibr_core.models.generator import Generator

__all__ = ["PREDICTOR_WEIGHTS", "GENERATOR_WEIGHTS", "FRAME_EXTENT", "FRAME_OFFSET", "PredictedMesh", "load_shipped_predictor",
           "load_shipped_generator", "prepare_image", "predict_mesh", "InputView", "match_input_view",
           "input_view_iou", "RefinedPrediction", "refine_options", "refine_prediction", "REFINE_STEPS",
           "REFINE_RESOLUTION", "REFINE_REMESH", "REFINE_TEXTURE_SIZE"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PREDICTOR_WEIGHTS = WEIGHTS_DIR / "predictor.pt"
GENERATOR_WEIGHTS = WEIGHTS_DIR / "generator.pt"
# The framing of the training renders (python -m dibr_core.data generate --split train --grammar 1, all 24
# views of the first 20 shapes of each category, 6,240 images; see prepare_image): the 0.5th and
# 99.5th percentiles of the mask bounding box's diagonal as a fraction of the image side, and of
# its centre's offset from the image centre (rows down, columns right) as a fraction of the side.
# (Median diagonal 0.675, from 0.503 for airplanes to 0.757 for cabinets: no single size fits
# every category, so a picture is only brought into the range. The diagonal varies least of the
# box's measures: log-std 0.164, longer side 0.171, sqrt of the mask area 0.332.)
FRAME_EXTENT: Tuple[float, float] = (0.345, 0.828)
FRAME_OFFSET: Tuple[Tuple[float, float], Tuple[float, float]] = ((-0.039, 0.094), (-0.047, 0.055))

ImageLike = Union[np.ndarray, torch.Tensor]
# Pictures smaller than this on either side hold no usable object (prepare_image refuses them).
MIN_IMAGE_SIDE = 8
# A silhouette must leave at least this share of the picture as background (as the Blender side's).
MIN_BACKGROUND_FRACTION = 0.005


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
        input_view: the view the mesh was conformed in (:func:`predict_mesh` with ``conform``:
            the plain protocol camera at the azimuth :func:`match_input_view` found, its ``iou``
            the conformed mesh's silhouette IoU with the framed input), else None.
        network_iou: the network's mesh's silhouette IoU in ``input_view`` before it was
            conformed (NaN without ``conform``).
        network_vertices: (V, 3) the network's mesh before it was conformed (None without
            ``conform``); :func:`refine_prediction` starts its fit there.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor
    face_uvs: torch.Tensor
    texture: Optional[torch.Tensor]
    input_image: torch.Tensor
    input_view: Optional["InputView"] = None
    network_iou: float = float("nan")
    network_vertices: Optional[torch.Tensor] = None


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
        ValueError: on bad shapes, an image under :data:`MIN_IMAGE_SIDE` pixels on a side, float
            values outside [0, 1] (e.g. 0..255 floats), NaN, a missing mask for RGB input, an
            empty mask, or one that leaves less than :data:`MIN_BACKGROUND_FRACTION` of the
            picture as background (an opaque picture).
    """
    fn = "prepare_image"
    img = _as_image_tensor(fn, "image", image)
    if img.dim() != 3 or img.shape[-1] not in (3, 4):
        raise ValueError(f"{fn}(): image must have shape (H, W, 3 or 4), got {tuple(img.shape)}")
    if min(img.shape[0], img.shape[1]) < MIN_IMAGE_SIDE:
        raise ValueError(f"{fn}(): image is {img.shape[1]}x{img.shape[0]} pixels (shape {tuple(img.shape)}), too "
                         f"small to hold an object; give at least {MIN_IMAGE_SIDE} pixels on each side")
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
    covered = int(torch.count_nonzero(fg))          # (no int64 copy of the mask)
    if covered > (1.0 - MIN_BACKGROUND_FRACTION) * H * W:
        src = "mask" if mask is not None else "alpha channel"
        raise ValueError(f"{fn}(): the {src} of the {H}x{W} image covers {100.0 * covered / (H * W):.1f}% of it "
                         "(an opaque picture: no background to tell the object from); give a mask, or an RGBA "
                         "image whose alpha is 0 around the object")
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
                 repair: bool = True, conform: bool = True) -> PredictedMesh:
    """Predict a textured mesh from one image; see :func:`prepare_image` for the inputs.

    ``model`` defaults to :func:`load_shipped_predictor`. ``category`` (one of the 13 names) is
    a hint: the image's latent code is pulled into the category's latent Gaussian of the
    class-conditional generator (``generator``, default the shipped one, which must have been
    fitted on this predictor): its coordinates along the category's principal directions are
    clamped to 2.5 standard deviations (:meth:`Generator.project`), so an ambiguous image
    decodes to a plausible member of that category while an in-distribution one is unchanged.
    With ``repair`` (the default) the mesh's inside-out pockets (a thin part folded through
    itself) are removed by :func:`dibr_core.mesh_repair.untangle`. With ``conform`` (the
    default) the mesh is then warped parallel to the image plane of its input view (the plain
    protocol camera at the azimuth :func:`match_input_view` finds) until its silhouette matches
    the framed input's (:func:`dibr_core.conform.conform_silhouette`, a few milliseconds; kept
    only when it raises the silhouette IoU and adds no self-intersecting faces): the network's
    mesh has the right kind of shape, the warp gives it the picture's outline.

    Raises:
        ValueError: for an unknown category, or a generator fitted on another predictor.
    """
    if category is not None and not isinstance(category, str):
        raise ValueError(f"predict_mesh(): category must be None or a category name (str), got {category!r}")
    net = model if model is not None else load_shipped_predictor()
    x = prepare_image(image, mask, net.image_size)
    gen = None
    if category is not None:
        gen = generator if generator is not None else load_shipped_generator()
        if category not in gen.categories:
            raise ValueError(f"predict_mesh(): unknown category {category!r}; the category argument must be None "
                             f"or one of {', '.join(gen.categories)}")
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
    verts = out.vertices[0].float().contiguous()
    colors = out.colors[0].float().contiguous()
    view: Optional[InputView] = None
    network_iou = float("nan")
    network_verts: Optional[torch.Tensor] = None
    if conform:
        from dibr_core.conform import conform_silhouette

        S = int(x.shape[-1])
        # The view is searched with the mesh at a quarter of its faces (the same choices, a third of the time) ...
        coarse = coarse_template_faces()
        k = int(coarse.max()) + 1
        # ... and at CONFORM_MATCH_SIZE pixels (the same choices on the real-model set, in half the time).
        small = F.interpolate(x[None], size=(CONFORM_MATCH_SIZE, CONFORM_MATCH_SIZE), mode="bilinear",
                              align_corners=False, antialias=CONFORM_MATCH_SIZE < S)[0]
        matched = match_input_view(verts[:k], coarse, (small[3] > 0.5).float(), colors=colors[:k], rgb=small[:3])
        plain = InputView(matched.azimuth_deg, matched.elevation_deg)
        c = conform_silhouette(verts, net.faces, plain.camera(), x[3])
        network_verts = verts
        verts, network_iou = c.vertices.float().contiguous(), c.iou_before
        view = replace(plain, iou=c.iou, resolution=S)
    return PredictedMesh(vertices=verts, faces=net.faces.long().clone(), colors=colors,
                         face_uvs=net.face_uvs.float().clone(), texture=tex, input_image=x, input_view=view,
                         network_iou=network_iou, network_vertices=network_verts)


# --------------------------------------------------------------------------- the input view

# predict_mesh searches the view it conforms the mesh in at this image size.
CONFORM_MATCH_SIZE = 48

# The training renders' camera protocol (dibr_core.data.dataset): elevation, distance and vertical
# field of view; the predictor's meshes are bounding-box centred at the origin with diagonal 1.
PROTOCOL_ELEVATION_DEG = 30.0
PROTOCOL_DISTANCE = 2.732
PROTOCOL_FOV_Y_DEG = 30.0
PROTOCOL_AZIMUTHS: Tuple[float, ...] = tuple(15.0 * k for k in range(24))
_NEAR, _FAR = 0.05, 100.0


@dataclass(frozen=True)
class InputView:
    """The protocol camera that sees a predicted mesh as its input picture shows it.

    The camera stands at ``azimuth_deg`` (degrees, the data set's convention: the eye at
    ``distance * (cos e sin a, sin e, cos e cos a)``), elevation ``elevation_deg``, looking at the
    origin (the prediction's bounding-box centre) with the ``fov_y_deg`` lens; its image is then
    zoomed by ``zoom`` and shifted by ``shift`` (NDC, x right, y up: ``ndc' = zoom * ndc + shift``)
    so that the mesh's projected box lands on the input's silhouette box.

    Attributes:
        iou: silhouette IoU of the (hard) render of the mesh it was matched on with the framed
            input mask it was matched against.
        resolution: side of the square image the IoU was measured at.
    """

    azimuth_deg: float
    elevation_deg: float = PROTOCOL_ELEVATION_DEG
    distance: float = PROTOCOL_DISTANCE
    fov_y_deg: float = PROTOCOL_FOV_Y_DEG
    zoom: float = 1.0
    shift: Tuple[float, float] = (0.0, 0.0)
    iou: float = float("nan")
    resolution: int = 0

    def camera(self, dtype: torch.dtype = torch.float64) -> "Camera":
        """The view as a :class:`dibr_core.camera.Camera` of batch 1 in the canonical frame."""
        return _protocol_cameras([self.azimuth_deg], self.elevation_deg, self.distance, self.fov_y_deg,
                                 torch.tensor([self.zoom], dtype=torch.float64),
                                 torch.tensor([self.shift], dtype=torch.float64)).to(dtype=dtype)


def _protocol_cameras(azimuths: Any, elevation_deg: Any, distance: float, fov_y_deg: float,
                      zoom: torch.Tensor, shift: torch.Tensor) -> "Camera":
    """(B,) azimuths (degrees), elevations (degrees, one or (B,)), (B,) zooms and (B, 2) NDC
    shifts -> a float64 Camera of batch B."""
    from dibr_core.camera import Camera, look_at

    az_deg = np.asarray(azimuths, dtype=np.float64)
    a = torch.as_tensor(np.radians(az_deg))
    e = torch.as_tensor(np.radians(np.broadcast_to(np.asarray(elevation_deg, dtype=np.float64), az_deg.shape)).copy())
    eye = torch.stack([distance * torch.cos(e) * torch.sin(a), distance * torch.sin(e),
                       distance * torch.cos(e) * torch.cos(a)], dim=1)
    view = look_at(eye, dtype=torch.float64)
    return Camera(view, _framed_projection(fov_y_deg, zoom, shift), _NEAR, _FAR)


def _framed_projection(fov_y_deg: float, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 4, 4) float64 protocol projections with the lens ``fov_y_deg`` whose images are zoomed
    by (B,) ``zoom`` and shifted by (B, 2) NDC ``shift``: ``ndc' = zoom * ndc + shift``."""
    from dibr_core.camera import perspective_projection

    P = perspective_projection(math.radians(fov_y_deg), 1.0, _NEAR, _FAR, torch.float64).expand(len(zoom), 4, 4).clone()
    # ndc' = zoom * ndc + shift, i.e. clip_xy' = zoom * clip_xy + shift * clip_w.
    P[:, :2] = zoom.view(-1, 1, 1) * P[:, :2] + shift.view(-1, 2, 1) * P[:, 3:4]
    return P


def _mask_box_ndc(mask: torch.Tensor) -> torch.Tensor:
    """(x0, x1, y0, y1) NDC box (y up) of the pixels above 0.5 of a (S, S) top-to-bottom mask."""
    m = mask > 0.5
    S = m.shape[0]
    rows = torch.nonzero(m.any(dim=1)).flatten()
    cols = torch.nonzero(m.any(dim=0)).flatten()
    return torch.tensor([-1.0 + 2.0 * float(cols[0]) / S, -1.0 + 2.0 * float(cols[-1] + 1) / S,
                         1.0 - 2.0 * float(rows[-1] + 1) / S, 1.0 - 2.0 * float(rows[0]) / S], dtype=torch.float64)


def _fragments(vertices: torch.Tensor, faces: torch.Tensor, camera: "Camera", size: int) -> "Fragments":
    """The rasterization of one mesh ((V, 3), (F, 3)) in each of B cameras at S x S, as
    :func:`dibr_core.render.render` does it (float32, no gradient)."""
    from dibr_core.render import Meshes, RenderSettings, rasterize_meshes

    B = camera.batch_size
    v = vertices.detach().float()[None].expand(B, -1, -1).contiguous()
    with torch.no_grad():
        return rasterize_meshes(Meshes(v, faces.long()), camera.to(dtype=torch.float32), RenderSettings(size, size))


def _unlit(frags: "Fragments", vertices: torch.Tensor, faces: torch.Tensor, camera: "Camera",
           colors: torch.Tensor) -> torch.Tensor:
    """(B, S, S, 3) unlit colours of one mesh's (V, 3) ``colors`` on its B-camera ``frags``
    (0 on background), as :func:`dibr_core.render.render` shades them with ``lighting=None``."""
    from dibr_core.ops import interpolate
    from dibr_core.render import RenderSettings

    B = camera.batch_size
    f = faces.long()
    c = colors.detach().float()[None].expand(B, -1, -1).contiguous()
    w = None
    if RenderSettings.perspective_correct:
        cam = camera.to(dtype=torch.float32)
        w = cam.to_clip(cam.to_camera(vertices.detach().float()[None].expand(B, -1, -1)))[..., 3][:, f]  # (B, F, 3)
    with torch.no_grad():
        return interpolate(c, frags, f, face_vertices_w=w).clamp(0.0, 1.0) * frags.mask[..., None]


def _renders(vertices: torch.Tensor, faces: torch.Tensor, camera: "Camera", size: int,
             colors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """One mesh ((V, 3), (F, 3), optional (V, 3) colours) in each of B cameras: (B, S, S) bool
    coverage and (B, S, S, 3) unlit colours (zero without ``colors``), as
    :func:`dibr_core.render.render` would give them, from its rasterization pass alone."""
    frags = _fragments(vertices, faces, camera, size)
    if colors is None:
        return frags.mask, torch.zeros(camera.batch_size, size, size, 3)
    return frags.mask, _unlit(frags, vertices, faces, camera, colors)


def _hard_masks(vertices: torch.Tensor, faces: torch.Tensor, camera: "Camera", size: int) -> torch.Tensor:
    """(B, S, S) bool coverage of one mesh ((V, 3), (F, 3)) in each of the B cameras."""
    return _renders(vertices, faces, camera, size)[0]


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-batch IoU of (B, S, S) bool masks."""
    inter = (a & b).sum(dim=(-2, -1)).double()
    return inter / (a | b).sum(dim=(-2, -1)).double().clamp_min(1.0)


def input_view_iou(vertices: torch.Tensor, faces: torch.Tensor, view: InputView, mask: torch.Tensor) -> float:
    """Silhouette IoU of a mesh ((V, 3) canonical vertices, (F, 3) faces) rendered (hard mask) in
    ``view`` with a framed input mask ((S, S), rows top to bottom, foreground above 0.5)."""
    S = int(mask.shape[-1])
    cover = _hard_masks(vertices, faces, view.camera(), S)
    return float(_iou(cover, (mask > 0.5)[None])[0])


# Candidate views whose silhouette IoU is within this of the best one are told apart by colour.
MATCH_IOU_TIE = 0.03
# Elevations (degrees) match_input_view tries by default.
MATCH_ELEVATIONS: Tuple[float, ...] = (PROTOCOL_ELEVATION_DEG,)


def match_input_view(vertices: torch.Tensor, faces: torch.Tensor, mask: torch.Tensor,
                     azimuths: Optional[Sequence[float]] = None, colors: Optional[torch.Tensor] = None,
                     rgb: Optional[torch.Tensor] = None,
                     elevations: Optional[Sequence[float]] = None) -> InputView:
    """The protocol view whose render of the mesh best matches ``mask`` (silhouette IoU).

    For every candidate azimuth (default: the 24 protocol azimuths, 15 degrees apart) two
    cameras are tried: the protocol camera itself, and the same zoomed and shifted so that the
    mesh's projected bounding box gets the longer side and the centre of the mask's box; the
    candidate with the highest IoU wins.
    With ``colors`` and ``rgb``, the candidates within :data:`MATCH_IOU_TIE` of the best IoU
    (a symmetric silhouette seen from the front and from the back) are told apart by the mean
    colour difference where render and mask overlap: the predicted colours show the input's
    side.

    Args:
        vertices: (V, 3) canonical vertices (the prediction's frame); faces: (F, 3).
        mask: (S, S) framed input silhouette (e.g. ``prepare_image(...)[3]``), rows top to bottom.
        azimuths: candidate azimuths in degrees.
        colors: (V, 3) the mesh's vertex colours; rgb: (3, S, S) the framed input's colours.
        elevations: candidate elevations in degrees (default :data:`MATCH_ELEVATIONS`); every
            azimuth is tried at each.

    Raises:
        ValueError: an empty mask, or bad shapes.
    """
    from dibr_core.camera import Camera
    from dibr_core.ops import Fragments

    fn = "match_input_view"
    if mask.dim() != 2 or mask.shape[0] != mask.shape[1] or mask.shape[0] < 2:
        raise ValueError(f"{fn}(): mask must have shape (S, S), got {tuple(mask.shape)}")
    if not bool((mask > 0.5).any()):
        raise ValueError(f"{fn}(): the mask ({mask.shape[0]}x{mask.shape[1]}) is empty")
    if vertices.dim() != 2 or vertices.shape[-1] != 3 or faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"{fn}(): vertices must be (V, 3) and faces (F, 3), got {tuple(vertices.shape)} and "
                         f"{tuple(faces.shape)}")
    az1 = [float(a) for a in (azimuths if azimuths is not None else PROTOCOL_AZIMUTHS)]
    if not az1:
        raise ValueError(f"{fn}(): azimuths is empty")
    el1 = [float(e) for e in (elevations if elevations is not None else MATCH_ELEVATIONS)]
    if not el1 or not all(-90.0 < e < 90.0 for e in el1):
        raise ValueError(f"{fn}(): elevations must be a non-empty list of degrees in (-90, 90), got {el1}")
    az = [a for _ in el1 for a in az1]
    el = [e for e in el1 for _ in az1]
    B = len(az)
    S = int(mask.shape[0])
    base = _protocol_cameras(az, el, PROTOCOL_DISTANCE, PROTOCOL_FOV_Y_DEG,
                             torch.ones(B, dtype=torch.float64), torch.zeros(B, 2, dtype=torch.float64))
    v = vertices.detach().double()[None].expand(B, -1, -1)
    clip = base.to_clip(base.to_camera(v))
    ndc = clip[..., :2] / clip[..., 3:4]                                  # (B, V, 2)
    lo, hi = ndc.min(dim=1).values, ndc.max(dim=1).values
    box = _mask_box_ndc(mask)
    side_t = max(float(box[1] - box[0]), float(box[3] - box[2]))
    zoom = side_t / (hi - lo).max(dim=1).values.clamp_min(1e-9)
    centre_t = torch.stack([0.5 * (box[0] + box[1]), 0.5 * (box[2] + box[3])])
    shift = centre_t[None] - zoom[:, None] * 0.5 * (lo + hi)
    # Every azimuth twice: the plain protocol camera (a picture framed like the training renders
    # shows the prediction so) and the one whose box lands on the mask's box.
    az, el = az + az, el + el
    zoom = torch.cat([torch.ones(B, dtype=torch.float64), zoom])
    shift = torch.cat([torch.zeros(B, 2, dtype=torch.float64), shift])
    cams = Camera(base.view.repeat(2, 1, 1), _framed_projection(PROTOCOL_FOV_Y_DEG, zoom, shift),
                  base.near, base.far)
    target = (mask > 0.5)[None]
    frags = _fragments(vertices, faces, cams, S)
    cover = frags.mask
    ious = _iou(cover, target)
    best = int(torch.argmax(ious))
    close = torch.nonzero(ious >= ious[best] - MATCH_IOU_TIE).flatten()
    if colors is not None and rgb is not None and len(close) > 1:
        # Only the near-ties are shaded.
        sub = Fragments(frags.face_idx[close], frags.bary[close], frags.num_faces)
        shade = _unlit(sub, vertices, faces, Camera(cams.view[close], cams.projection[close], cams.near, cams.far),
                       colors)
        both = (cover[close] & target).float()
        err = ((shade - rgb.permute(1, 2, 0)[None].float()).abs().mean(-1) * both).sum((1, 2)) / both.sum((1, 2)).clamp_min(1.0)
        best = int(close[int(torch.argmin(err))])
    return InputView(az[best], el[best], zoom=float(zoom[best]), shift=(float(shift[best, 0]), float(shift[best, 1])),
                     iou=float(ious[best]), resolution=S)


# --------------------------------------------------------------------------- the refine

# Back-offs toward the prediction (fractions of the refine), candidates for what the refine returns.
REFINE_BACKOFF: Tuple[float, ...] = (1.0, 0.75, 0.5, 0.25)
# The default refine (tuned on the procedural test split and the real-model set, see MODEL_CARD.md
# "Input-view fidelity").
REFINE_STEPS = 100
REFINE_RESOLUTION = 128
# The refine keeps the fit's state every this many steps (candidates for what it returns).
REFINE_CHECK_EVERY = 5
# When the whole refine adds self-intersecting faces, the fit goes on from its last state that adds
# none, for the steps that were left (at least REFINE_RETRY_STEPS), with these stiffer options
# (None: no second pass).
REFINE_RETRY: Optional[Dict[str, Any]] = {"large_steps_lambda": 30.0, "w_laplacian": 5.0}
REFINE_RETRY_STEPS = 20
# The refine's time budget (seconds from its start): its fit passes stop when it is spent but for
# REFINE_CHOICE_RESERVE_S, kept for choosing among the candidates (which stops trying further
# candidates once the whole budget is spent); the second pass is skipped when fewer than
# REFINE_RETRY_STEPS of its steps would fit. So the default refine keeps to about 5 s on a busy
# machine and returns the best candidate it has by then.
REFINE_TIME_BUDGET_S: Optional[float] = 5.0
REFINE_CHOICE_RESERVE_S = 0.8


# The refine remeshes the surface (:mod:`dibr_core.remesh`) towards edges of ``target_edge_px``
# pixels of its image every ``remesh_every`` steps in the first ``remesh_until`` of its steps, so
# thin parts (wings, legs, lamp arms) get the vertices they need: the prediction's 642 vertices lie
# 5-8 px apart at 128 px. The texture is then made on the final surface (automatic UVs, the
# colours baked in) and painted from there. Measured on the real-model set and the procedural test
# split (MODEL_CARD.md, "Input-view fidelity").
REFINE_REMESH: Dict[str, Any] = {"target_edge_px": 2.0, "remesh_every": 20, "remesh_until": 0.6, "max_faces": 5000}
# Side of the texture a remeshing refine paints (the fit's automatic UVs).
REFINE_TEXTURE_SIZE = 256
# Cut the holes of the input's silhouette (a chair back's gaps, between a table's legs) through
# the remeshed result, where the fit could only cover them with a membrane
# (:func:`dibr_core.carve.carve_view_holes`); kept when it raises the input-view IoU.
REFINE_CARVE = True
# The carve is skipped when less than this is left of the refine's time budget (it takes 0.01-0.1 s).
REFINE_CARVE_S = 0.3


# After the refine's choice (and the hole cut), its result is conformed to the picture's outline
# with fine bandwidths only (:func:`dibr_core.conform.conform_silhouette`; the holes are not filled,
# so the edges of cut holes stay where they are); kept when it raises the input-view IoU and adds no
# self-intersecting faces (``conformed``). None: no conform.
REFINE_CONFORM: Optional[Tuple[Tuple[float, ...], ...]] = ((0.05, 0.03, 0.02), (0.03, 0.02))
# The conform is skipped when less than this is left of the refine's time budget (it takes 0.01-0.05 s).
REFINE_CONFORM_S = 0.2
# Last, what the refine returns is cut by the picture's background through its volume
# (:func:`dibr_core.volume_carve.carve_view_volume`, outside and holes alike, on a grid of
# REFINE_VOLUME_CARVE_SCALE voxels per side per pixel of the refine's image side, at least 16:
# 64 at the default 128 px): a see-through pixel says nothing lies on its ray, and the membrane cut and the
# conform leave some of those rays covered (a chair back's slats, a chandelier's arms). The new
# surface takes the nearest old vertex's colour and a baked texture on automatic UVs; it is kept
# when it raises the input-view IoU by REFINE_VOLUME_CARVE_GAIN (``volume_carved``); parts of
# fewer than REFINE_VOLUME_CARVE_MIN_FACES faces (crumbs of the cut) are dropped. 0: no cut.
REFINE_VOLUME_CARVE_SCALE = 0.5
REFINE_VOLUME_CARVE_GAIN = 0.004
REFINE_VOLUME_CARVE_MIN_FACES = 64
# Background pixels within this many pixels of the silhouette that the cut spares (a guard against a
# slightly-off view cutting thin parts away). Measured on both refine records: a margin of 1 keeps the
# real models at 0.945 (the cut then gains 0.004 on 2 % of them instead of 16 %: the gaps it fills are
# one or two pixels wide at 128 px) for 3D IoU 0.485 instead of 0.484 (procedural 0.657 instead of 0.652).
REFINE_VOLUME_CARVE_MARGIN = 0
# Seconds the volume cut may need (it is skipped when fewer are left of the budget).
REFINE_VOLUME_CARVE_S = 0.8


def refine_options(steps: int = REFINE_STEPS, remesh: bool = True, **overrides: Any) -> "FitOptions":
    """The :class:`dibr_core.fit.FitOptions` of :func:`refine_prediction`: vertices by large
    steps, unlit colours (display values, as the input), bilinear texture lookups as in training;
    with ``remesh`` (the default) the surface is remeshed (:data:`REFINE_REMESH`) and a new
    :data:`REFINE_TEXTURE_SIZE` texture is painted on it, without it the prediction's topology and
    UV texture are kept. ``overrides`` replace any field."""
    from dibr_core.fit import FitOptions

    fields: Dict[str, Any] = dict(steps=steps, optimize_vertices=True, optimize_colors=False, optimize_texture=True,
                                  lighting="none", texture_filter="bilinear", texture_padding=1,
                                  large_steps_lambda=3.0, lr_large_steps=0.02, lr_texture=0.05,
                                  halo_start_px=2.0, halo_px=0.1, w_laplacian=1.0, w_flatten=0.02)
    if remesh:
        fields.update(remesh=True, texture_size=REFINE_TEXTURE_SIZE, **REFINE_REMESH)
    fields.update(overrides)
    return FitOptions(**fields)


@dataclass(frozen=True)
class RefinedPrediction:
    """The result of :func:`refine_prediction`.

    Attributes:
        mesh: what to use: the refined mesh, or the prediction itself when ``kept_prediction``.
            When ``remeshed`` it has its own faces, UVs and texture (the remeshed surface).
        refined: the refined mesh (the fit's result with its inside-out pockets removed), also
            when it was not kept: the remeshing pass's result, or, after it was rejected
            (``remesh_rejected``), the refine on the prediction's topology; after a second pass
            (``retried``) that pass's result.
        view: the input view the refine fitted in (matched on the prediction).
        prediction_iou, refined_iou: input-view silhouette IoU (hard render in ``view`` against
            the framed input mask at ``resolution``) of the prediction and of ``refined``.
        iou: that of ``mesh``.
        refine_fraction: how much of the refine ``mesh`` holds: 1 the whole of it (``refined``);
            less for an earlier state of the fit (the share of its pass's steps it had run) or a
            back-off toward the prediction (``prediction + f * (refined - prediction)``, ``f`` from
            :data:`REFINE_BACKOFF`), returned when it has the highest IoU among the candidates
            that add no self-intersecting faces and do not lower the IoU (the whole refine then
            added crossings or overlapped less); 0 the prediction itself.
        kept_prediction: ``refine_fraction`` is 0: every candidate lowered the IoU or added
            self-intersecting faces (or the refine was cancelled), so ``mesh`` is the prediction.
        self_intersections: self-intersecting faces of (the prediction, ``refined``).
        steps: fit steps run (both passes); seconds: wall time of the whole refine (matching
            included); cancelled: ``should_stop`` stopped the fit.
        color_l1: the fit's masked colour error in the view after the fit.
        reference: (4, R, R) the framed input the refine compared with.
        retried: the first pass's whole result added self-intersecting faces, so the fit went on
            from its last state that added none with stiffer options (:data:`REFINE_RETRY`) for a
            second pass, and ``refined`` is that pass's result.
        retry_skipped: the second pass was due but skipped, because fewer than
            :data:`REFINE_RETRY_STEPS` of its steps fitted in ``time_budget_s`` (the first pass's
            candidates are returned).
        timed_out: the time budget stopped a pass before its last step, or the choice before it
            had tried every candidate (what is returned is the best candidate it had).
        remeshed: ``mesh`` is the remeshing pass's surface (new topology; see :func:`refine_options`).
        remesh_rejected: the remeshing pass ran, but each of its candidates added self-intersecting
            faces or lowered the IoU, so the refine ran again on the prediction's topology.
        holes: holes of the picture's silhouette cut through ``mesh`` (its genus; see
            :data:`REFINE_CARVE`).
        conformed: ``mesh`` was then conformed to the picture's outline (:data:`REFINE_CONFORM`).
        volume_carved: ``mesh`` was last cut by the picture's background through its volume
            (:data:`REFINE_VOLUME_CARVE_SCALE`): a new voxel-resolution surface (new topology, also
            after ``remesh_rejected``) with a colour per vertex and a texture baked on new UVs
            (``holes`` counts the membrane cuts only). Only a remeshing refine (the default
            options) makes it; one that keeps the prediction's topology never does.
    """

    mesh: PredictedMesh
    refined: PredictedMesh
    view: InputView
    resolution: int
    prediction_iou: float
    refined_iou: float
    iou: float
    kept_prediction: bool
    refine_fraction: float
    self_intersections: Tuple[int, int]
    steps: int
    seconds: float
    cancelled: bool
    color_l1: float
    reference: torch.Tensor
    retried: bool = False
    retry_skipped: bool = False
    timed_out: bool = False
    remeshed: bool = False
    remesh_rejected: bool = False
    holes: int = 0
    conformed: bool = False
    volume_carved: bool = False


class _Untangled:
    """Each candidate's vertices with their inside-out pockets removed, its input-view IoU and its
    self-intersecting faces, each computed once (the choice of both passes and the search for the
    second pass's start share them; untangling a crossed state is the refine's costliest check)."""

    def __init__(self, faces: torch.Tensor, view: InputView, target: torch.Tensor) -> None:
        self.faces, self.view, self.target = faces, view, target
        # keyed by the tensor's id; each entry keeps its tensor, so the id is not reused
        self._v: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._iou: Dict[int, Tuple[torch.Tensor, float]] = {}
        self._crossings: Dict[int, Tuple[torch.Tensor, int]] = {}
        # the longest one candidate's checks (untangle, IoU, crossings) have taken so far
        self.check_seconds = 0.0

    def _timed(self, fn: Callable[[], Any]) -> Any:
        import time

        t = time.perf_counter()
        out = fn()
        self.check_seconds = max(self.check_seconds, time.perf_counter() - t)
        return out

    def vertices(self, raw: torch.Tensor) -> torch.Tensor:
        from dibr_core.mesh_repair import untangle

        if id(raw) not in self._v:
            self._v[id(raw)] = (raw, self._timed(lambda: untangle(raw, self.faces)[0].float().contiguous()))
        return self._v[id(raw)][1]

    def iou(self, v: torch.Tensor) -> float:
        if id(v) not in self._iou:
            self._iou[id(v)] = (v, input_view_iou(v, self.faces, self.view, self.target))
        return self._iou[id(v)][1]

    def crossings(self, v: torch.Tensor) -> int:
        from dibr_core.mesh_queries import self_intersecting_faces

        if id(v) not in self._crossings:
            self._crossings[id(v)] = (v, self_intersecting_faces(v, self.faces))
        return self._crossings[id(v)][1]


def _texture_vertex_colors(texture: torch.Tensor, faces: torch.Tensor, face_uvs: torch.Tensor,
                           n_vertices: int) -> torch.Tensor:
    """(V, 3): a (T, T, 3) texture sampled (bilinear) at every corner's UVs ((F, 3, 2)), averaged
    per vertex (the predictor's rule for its vertex colours)."""
    from dibr_core.texture import sample_texture

    tex = texture.float().permute(2, 0, 1)[None].contiguous()
    corner = sample_texture(tex, face_uvs.float().reshape(1, -1, 2).contiguous())[0]          # (3F, 3)
    idx = faces.reshape(-1).long()
    acc = corner.new_zeros(n_vertices, 3).index_add_(0, idx, corner)
    count = torch.bincount(idx, minlength=n_vertices).clamp_min(1).to(acc.dtype)
    return acc / count[:, None]


def _fit_with_states(v: torch.Tensor, faces: torch.Tensor, fview: "FitView", opts: "FitOptions",
                     colors: Optional[torch.Tensor], face_uvs: Optional[torch.Tensor], texture: Optional[torch.Tensor],
                     progress: Optional[Callable[[int, int, float], None]], should_stop: Optional[Callable[[], bool]],
                     offset: int, total: Optional[int]) -> Tuple["FitResult", List[Tuple[int, torch.Tensor]]]:
    """:func:`dibr_core.fit.fit` of one view, with its states every :data:`REFINE_CHECK_EVERY` steps
    (``(step, (V, 3) vertices)``, the end excluded); ``progress`` sees steps from ``offset`` of ``total``."""
    from dibr_core.fit import fit

    states: List[Tuple[int, torch.Tensor]] = []

    def keep_state(step: int, vertices: torch.Tensor) -> None:
        if step < opts.steps:
            states.append((step, vertices.float()))

    report = progress
    if progress is not None and (offset or total):
        def report(step: int, steps: int, loss: float) -> None:
            assert progress is not None
            progress(offset + step, total if total is not None else offset + steps, loss)

    res = fit(v, faces, [fview], opts, colors=colors, face_uvs=face_uvs, texture=texture, progress=report,
              should_stop=should_stop, preview=keep_state, preview_every=REFINE_CHECK_EVERY)
    return res, states


def _color_l1(res: "FitResult") -> float:
    """The fit's masked colour error in its (one) view after the fit."""
    return float(res.views[0].color_l1) if res.views else float("nan")


def _refined_mesh(prediction: PredictedMesh, res: "FitResult", memo: _Untangled) -> Tuple[PredictedMesh, float, int]:
    """The fit's result as a mesh with its inside-out pockets removed, its input-view IoU and its
    self-intersecting faces (``memo`` is for the result's faces: the prediction's, or the
    remeshed ones with the fit's UVs)."""
    faces = memo.faces
    verts = memo.vertices(res.vertices.detach().float())
    remeshed = not torch.equal(faces, prediction.faces.long())
    face_uvs = res.face_uvs
    if face_uvs is None:
        from dibr_core.uv import auto_uvs

        face_uvs = auto_uvs(verts, faces) if remeshed else prediction.face_uvs
    face_uvs = face_uvs.float().contiguous()
    if res.texture is not None:
        tex: Optional[torch.Tensor] = res.texture.float().contiguous()
        colors = _texture_vertex_colors(res.texture, faces, face_uvs, verts.shape[0])
    else:
        tex = None
        colors = res.colors.float() if res.colors is not None else prediction.colors
    refined = PredictedMesh(vertices=verts, faces=faces if remeshed else prediction.faces, colors=colors.contiguous(),
                            face_uvs=face_uvs, texture=tex, input_image=prediction.input_image)
    return refined, memo.iou(verts), memo.crossings(verts)


def _choose_refined(prediction: PredictedMesh, refined: PredictedMesh,
                    states: Sequence[Tuple[int, torch.Tensor]], steps: int, memo: _Untangled,
                    before: float, crossings_before: int,
                    deadline: Optional[float] = None, backoff: bool = True) -> Tuple[PredictedMesh, float, float, bool]:
    """What the refine returns: ``(mesh, refine_fraction, input-view IoU, timed_out)``.

    The candidates are the refined mesh, its back-offs toward the prediction
    (:data:`REFINE_BACKOFF`; only with ``backoff``, which needs the prediction's topology) and the
    fit's earlier states (``states``: ``(step, (V, 3) vertices)`` of the refined mesh's topology,
    fraction ``step / steps``), each with its inside-out pockets removed; the one with the highest
    input-view IoU that adds no self-intersecting faces and does not lower the IoU wins (the
    prediction itself when none qualifies). Textures and colours are the refined ones. No
    candidate is untangled that would end past ``deadline`` (``time.perf_counter()``) at twice the
    longest time one check has taken so far (``memo.check_seconds``; ``timed_out``); the refined
    mesh itself is always tried."""
    import time

    v0 = prediction.vertices.detach().float()
    # latest first: when the deadline cuts the list short, the candidates with the most refine are in
    raw: List[Tuple[float, torch.Tensor]] = [(step / max(steps, 1), v) for step, v in reversed(states)]
    if backoff:
        raw += [(f, v0 + f * (refined.vertices - v0)) for f in REFINE_BACKOFF if f != 1.0]
    raw.sort(key=lambda c: -c[0])
    scored: List[Tuple[float, float, torch.Tensor]] = [(memo.iou(refined.vertices), 1.0, refined.vertices)]
    timed_out = False
    for f, v in raw:
        # no candidate is started that would end past the deadline at the longest a check has taken
        if deadline is not None and time.perf_counter() + 2.0 * memo.check_seconds > deadline:
            timed_out = True
            break
        vu = memo.vertices(v)
        scored.append((memo.iou(vu), f, vu))
    # Highest IoU first; among equal IoUs the larger fraction (the whole refine before its states).
    order = sorted(range(len(scored)), key=lambda k: (-scored[k][0], -scored[k][1]))
    for k in order:
        score, f, v = scored[k]
        if score < before:
            break
        if memo.crossings(v) <= crossings_before:
            if v is refined.vertices:
                return refined, 1.0, score, timed_out
            return PredictedMesh(vertices=v, faces=refined.faces, colors=refined.colors, face_uvs=refined.face_uvs,
                                 texture=refined.texture, input_image=prediction.input_image), f, score, timed_out
    return prediction, 0.0, before, timed_out


def _carved(mesh: PredictedMesh, iou: float, view: InputView, target: torch.Tensor) -> Tuple[PredictedMesh, float, int]:
    """``mesh`` with the holes of ``target`` cut through it when that raises its input-view IoU
    (the carve adds no self-intersecting faces), with its IoU and the holes cut."""
    from dibr_core.carve import carve_view_holes

    c = carve_view_holes(mesh.vertices, mesh.faces.long(), view.camera(torch.float32), target, mesh.face_uvs)
    if c.holes == 0:
        return mesh, iou, 0
    after = input_view_iou(c.vertices, c.faces, view, target)
    if after <= iou:
        return mesh, iou, 0
    assert c.face_uvs is not None
    carved = PredictedMesh(vertices=c.vertices.contiguous(), faces=c.faces, colors=mesh.colors[c.vertex_index].contiguous(),
                           face_uvs=c.face_uvs.contiguous(), texture=mesh.texture, input_image=mesh.input_image)
    return carved, after, c.holes


def _conformed(mesh: PredictedMesh, iou: float, view: InputView, target: torch.Tensor) -> Tuple[PredictedMesh, float, bool]:
    """``mesh`` conformed to ``target``'s outline in ``view`` (:data:`REFINE_CONFORM`) when that
    raises its input-view IoU (the conform adds no self-intersecting faces), with its IoU and
    whether it was."""
    from dibr_core.conform import conform_silhouette

    if REFINE_CONFORM is None:
        return mesh, iou, False
    c = conform_silhouette(mesh.vertices, mesh.faces.long(), view.camera(), target, schedule=REFINE_CONFORM,
                           fill=False)
    if not c.kept:
        return mesh, iou, False
    v = c.vertices.float().contiguous()
    after = input_view_iou(v, mesh.faces, view, target)
    if after <= iou:
        return mesh, iou, False
    return replace(mesh, vertices=v), after, True


def _volume_carved(mesh: PredictedMesh, iou: float, view: InputView,
                   target: torch.Tensor) -> Tuple[PredictedMesh, float, bool]:
    """``mesh`` cut by ``target``'s background through its volume (:data:`REFINE_VOLUME_CARVE_SCALE`)
    when that raises its input-view IoU by :data:`REFINE_VOLUME_CARVE_GAIN`, with its IoU and
    whether it was."""
    from dibr_core.surface_metrics import nearest_points
    from dibr_core.texture_bake import bake_vertex_colors
    from dibr_core.uv import auto_uvs
    from dibr_core.volume_carve import carve_view_volume

    if REFINE_VOLUME_CARVE_SCALE <= 0:
        return mesh, iou, False
    res = max(16, int(round(REFINE_VOLUME_CARVE_SCALE * int(target.shape[-1]))))
    c = carve_view_volume(mesh.vertices, mesh.faces.long(), view.camera(torch.float32), target, res=res,
                          holes_only=False, margin=REFINE_VOLUME_CARVE_MARGIN,
                          min_part_faces=REFINE_VOLUME_CARVE_MIN_FACES)
    if c.removed_voxels == 0 or c.faces.shape[0] == 0:
        return mesh, iou, False
    verts, faces = c.vertices, c.faces
    after = input_view_iou(verts, faces, view, target)
    if after < iou + REFINE_VOLUME_CARVE_GAIN:
        return mesh, iou, False
    colors = mesh.colors.float()[nearest_points(verts, mesh.vertices.float())[1]].contiguous()
    face_uvs = auto_uvs(verts, faces).float().contiguous()
    texture = None
    if mesh.texture is not None:
        T = int(mesh.texture.shape[0])
        texture = bake_vertex_colors(faces, colors, face_uvs, T)[0].permute(1, 2, 0).float().contiguous()
    return PredictedMesh(vertices=verts, faces=faces, colors=colors, face_uvs=face_uvs, texture=texture,
                         input_image=mesh.input_image), after, True


# Before the remeshing fit, the prediction as returned (conformed to the outline) is remeshed to
# the fit's edge length and the picture's holes are cut through it (:func:`dibr_core.carve.carve_view_holes`);
# when that raises its input-view IoU by at least REFINE_EARLY_CARVE_GAIN (a cut of a few stray
# pixels gives the fit handles it does not need), the fit starts from that surface instead of the
# network's mesh, and when that pass is rejected the plain remeshing pass runs in what is left.
# Its membranes are cleaner than after the fit: on the real models 18 of the 40 holes are cut there
# (20 after the fit, partly other ones).
REFINE_EARLY_CARVE = True
REFINE_EARLY_CARVE_GAIN = 0.004


def _early_carved(v0: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, view: InputView, target: torch.Tensor,
                  opts: "FitOptions") -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
    """((V', 3) vertices, (F', 3) faces, (V', 3) colours, holes) of ``v0`` ((V, 3), ``faces``
    (F, 3), ``colors`` (V, 3)) remeshed like the fit's first remesh, with the holes of ``target``
    cut through it in ``view``; None when no hole is cut or the cut raises the IoU by less than
    :data:`REFINE_EARLY_CARVE_GAIN`."""
    from dibr_core.carve import carve_view_holes
    from dibr_core.remesh import remesh, target_length_from_views
    from dibr_core.silhouettes import enclosed_holes

    if int(enclosed_holes(target, 4).max()) == 0:
        return None
    cam = view.camera(torch.float32)
    R = int(target.shape[-1])
    tl = target_length_from_views(v0.float(), [cam], [(R, R)], pixels=opts.target_edge_px)
    r = remesh(v0.float(), faces.long(), tl, attributes={"colors": colors.float()}, max_faces=opts.max_faces,
               check_input=False)
    c = carve_view_holes(r.vertices.float(), r.faces.long(), cam, target, None)
    if c.holes == 0:
        return None
    gain = input_view_iou(c.vertices, c.faces, view, target) - input_view_iou(r.vertices, r.faces, view, target)
    if gain < REFINE_EARLY_CARVE_GAIN:
        return None
    return c.vertices.float().contiguous(), c.faces.long(), r.attributes["colors"][c.vertex_index].float(), c.holes


_OPTIMIZERS_WARM = False


def _warm_optimizers() -> None:
    """Construct one throwaway torch optimiser, once per process: the first optimiser a process
    makes imports torch's compiler stack (``Optimizer.add_param_group`` is wrapped to keep the
    compiler out, and that wrapper imports it; about 1.5 s on the 2-core machine), which would
    otherwise come out of the first refine's time budget."""
    global _OPTIMIZERS_WARM
    if not _OPTIMIZERS_WARM:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
        _OPTIMIZERS_WARM = True


@dataclass
class _Pass:
    """What one fit pass of :func:`refine_prediction` (and its second, stiffer pass) gave: the
    chosen candidate (``fraction`` 0: the prediction), the last result, and the flags."""

    steps: int = 0
    color_l1: float = float("nan")
    timed_out: bool = False
    cancelled: bool = False
    remeshed: bool = False
    chosen: Optional[PredictedMesh] = None
    refined: Optional[PredictedMesh] = None
    fraction: float = 0.0
    iou: float = 0.0
    after: float = float("nan")
    crossings: int = 0
    retried: bool = False
    retry_skipped: bool = False


def refine_prediction(prediction: PredictedMesh, image: ImageLike, mask: Optional[ImageLike] = None,
                      steps: int = REFINE_STEPS, resolution: int = REFINE_RESOLUTION,
                      options: Optional["FitOptions"] = None, view: Optional[InputView] = None,
                      azimuths: Optional[Sequence[float]] = None,
                      progress: Optional[Callable[[int, int, float], None]] = None,
                      should_stop: Optional[Callable[[], bool]] = None,
                      time_budget_s: Optional[float] = REFINE_TIME_BUDGET_S) -> RefinedPrediction:
    """Fit a prediction to the picture it came from, in its input view (the Image to 3D refine).

    The input is framed by :func:`prepare_image` at ``resolution``; the protocol camera that
    sees the prediction as the picture shows it is found by :func:`match_input_view` (unless
    ``view`` is given); then :func:`dibr_core.fit.fit` moves the vertices (large steps) and
    paints the texture so that the render in that view matches the framed picture (silhouette
    and colours). By default (``options.remesh``, see :func:`refine_options`) the fit remeshes
    the surface in its first steps, so the result has its own topology, UVs and texture
    (``remeshed``); without it the prediction's faces, UVs and texture size are kept. The
    result's inside-out pockets are removed (:func:`dibr_core.mesh_repair.untangle`). When it
    adds self-intersecting faces, the fit goes on from its last state (kept every
    :data:`REFINE_CHECK_EVERY` steps; after the last remesh) that adds none, with the stiffer
    :data:`REFINE_RETRY` options, and what is returned is the candidate with the highest
    input-view IoU among those that add no self-intersecting faces: the result of either pass,
    the fit's states, or, on the prediction's topology, the result backed off toward the
    prediction (:data:`REFINE_BACKOFF`). A remeshed result then gets the holes of the picture's
    silhouette cut through it where that raises its input-view IoU (:data:`REFINE_CARVE`,
    ``holes``). When no remeshed candidate qualifies, the refine runs
    again on the prediction's topology (``remesh_rejected``; skipped when the budget is spent);
    when no candidate keeps the input-view silhouette IoU and the crossings as they were, the
    prediction is kept (``kept_prediction``). What is returned is finally conformed to the
    picture's outline where that raises its IoU (:data:`REFINE_CONFORM`, ``conformed``), and cut by
    the picture's background through its volume where that raises it further
    (:data:`REFINE_VOLUME_CARVE_SCALE`, ``volume_carved``). The
    fit starts from the network's mesh (``prediction.network_vertices``) when
    :func:`predict_mesh` conformed it, and its candidates must beat the prediction as returned.

    Args:
        prediction: the :func:`predict_mesh` result for ``image`` (canonical frame).
        image, mask: the picture as given to :func:`predict_mesh` ((H, W, 4) RGBA or (H, W, 3) RGB
            with an (H, W) mask).
        steps: fit steps (0: only measure the prediction's input-view IoU).
        resolution: side of the framed image the refine compares (>= 16).
        options: the fit's options (default :func:`refine_options` with ``steps``; its ``steps``
            then wins over the argument).
        view: the input view (default: matched on the prediction over ``azimuths``).
        progress, should_stop: passed to the fit (``progress(step, steps, loss)``, counting on
            through later passes; ``should_stop()`` True cancels, and the prediction is kept).
        time_budget_s: seconds from the start after which the refine returns the best candidate
            it has (the fit passes stop :data:`REFINE_CHOICE_RESERVE_S` earlier, ``timed_out``);
            the second pass is skipped when fewer than :data:`REFINE_RETRY_STEPS` of its steps
            would fit (``retry_skipped``); None: no limit.

    Raises:
        ValueError: bad input (as :func:`prepare_image`), ``steps`` < 0 or ``resolution`` < 16.
    """
    import time
    from dataclasses import replace

    from dibr_core.fit import FitView
    from dibr_core.mesh_queries import self_intersecting_faces

    fn = "refine_prediction"
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"{fn}(): steps must be an int >= 0, got {steps!r}")
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 16:
        raise ValueError(f"{fn}(): resolution must be an int >= 16, got {resolution!r}")
    _warm_optimizers()   # a one-off import, before the budget's clock starts
    t0 = time.perf_counter()
    ref = prepare_image(image, mask, resolution)
    target = ref[3]
    faces = prediction.faces.long()
    v0 = prediction.vertices.detach().float()
    if view is None:
        view = match_input_view(v0, faces, target, azimuths, prediction.colors, ref[:3])
    before = input_view_iou(v0, faces, view, target)
    opts = options if options is not None else refine_options(steps)
    crossings_before = self_intersecting_faces(v0, faces)
    if opts.steps == 0:
        return RefinedPrediction(prediction, prediction, view, resolution, before, before, before, True, 0.0,
                                 (crossings_before, crossings_before), 0, time.perf_counter() - t0, False,
                                 float("nan"), ref)
    fview = FitView(view.camera(torch.float32), ref[:3].permute(1, 2, 0).contiguous(), target.contiguous(), "input")
    has_tex = prediction.texture is not None
    if not has_tex:
        opts = replace(opts, optimize_texture=False, optimize_colors=True)
    # The budget stops the fit passes (not a cancel: their candidates are still chosen from).
    fit_deadline = None if time_budget_s is None else t0 + max(time_budget_s - REFINE_CHOICE_RESERVE_S, 0.0)
    deadline = None if time_budget_s is None else t0 + time_budget_s
    hit = {"deadline": False}

    def stop() -> bool:
        if should_stop is not None and should_stop():
            return True
        if fit_deadline is not None and time.perf_counter() >= fit_deadline:
            hit["deadline"] = True
            return True
        return False

    def run(start: torch.Tensor, opts_p: "FitOptions", colors: Optional[torch.Tensor],
            face_uvs: Optional[torch.Tensor], texture: Optional[torch.Tensor], offset: int,
            start_faces: Optional[torch.Tensor] = None) -> _Pass:
        """A fit pass from ``start`` (the prediction's topology, or a remesh of it with
        ``opts_p.remesh``) and, when its whole result adds self-intersecting faces, a second,
        stiffer pass on the result's topology from its last state that adds none."""
        hit["deadline"] = False
        f0 = faces if start_faces is None else start_faces
        res, states = _fit_with_states(start, f0, fview, opts_p, colors, face_uvs, texture, progress, stop,
                                       offset, None)
        out = _Pass(steps=res.steps, color_l1=_color_l1(res), timed_out=hit["deadline"],
                    cancelled=res.cancelled and not hit["deadline"], remeshed=res.topology_changed)
        if out.cancelled:
            return out
        memo = _Untangled(res.faces.long() if res.faces is not None else f0, view, target)
        out.refined, out.after, out.crossings = _refined_mesh(prediction, res, memo)
        if opts_p.remesh:
            # the candidates share the result's topology: its states after the last remesh
            ran = [k for k in opts_p.remesh_steps() if k < res.steps]
            states = [(k, v) for k, v in states if k > (max(ran) if ran else -1)]
        out.chosen, out.fraction, out.iou, late = _choose_refined(prediction, out.refined, states, res.steps, memo,
                                                                  before, crossings_before, deadline,
                                                                  backoff=not out.remeshed)
        out.timed_out = out.timed_out or late
        if out.crossings <= crossings_before or REFINE_RETRY is None:
            return out
        # The whole pass adds crossings: go on from its last state that adds none, stiffer (on the
        # remeshed topology only from such a state: the prediction is another topology). Skipped
        # when, at the first pass's time per step, fewer than REFINE_RETRY_STEPS steps would fit
        # before the budget stops the fit (checked before and after the search for the start).
        def no_time() -> bool:
            return (fit_deadline is not None and time.perf_counter()
                    + res.seconds / max(res.steps, 1) * REFINE_RETRY_STEPS > fit_deadline)

        out.retry_skipped = no_time()
        if out.retry_skipped:
            return out
        start_step, start2 = 0, (None if out.remeshed else start)
        for step, v in reversed(states):
            vu = memo.vertices(v)
            if memo.crossings(vu) <= crossings_before:
                start_step, start2 = step, vu
                break
        if start2 is None:
            return out
        n2 = max(opts_p.steps - start_step, REFINE_RETRY_STEPS)
        out.retry_skipped = no_time()
        if out.retry_skipped:
            return out
        # the halo goes on narrowing from where it was at that state (FitOptions: geometric over
        # 70% of the steps)
        t_halo = min(1.0, start_step / max(0.7 * (opts_p.steps - 1), 1.0))
        halo = opts_p.halo_start_px * (opts_p.halo_px / opts_p.halo_start_px) ** t_halo
        opts2 = replace(opts_p, steps=n2, halo_start_px=halo, remesh=False, **REFINE_RETRY)
        tex = res.texture.float() if res.texture is not None else None
        hit["deadline"] = False
        res2, states2 = _fit_with_states(start2, memo.faces, fview, opts2,
                                         res.colors.float() if tex is None and res.colors is not None else None,
                                         out.refined.face_uvs if tex is not None else None, tex, progress, stop,
                                         offset + res.steps, offset + res.steps + n2)
        out.steps += res2.steps
        out.cancelled = res2.cancelled and not hit["deadline"]
        out.timed_out = out.timed_out or hit["deadline"]
        if out.cancelled:
            return out
        out.refined, out.after, out.crossings = _refined_mesh(prediction, res2, memo)
        out.retried, out.color_l1 = True, _color_l1(res2)
        chosen2, fraction2, iou2, late = _choose_refined(prediction, out.refined, states2, res2.steps, memo, before,
                                                         crossings_before, deadline, backoff=not out.remeshed)
        out.timed_out = out.timed_out or late
        if iou2 >= out.iou:
            out.chosen, out.fraction, out.iou = chosen2, fraction2, iou2
        return out

    def result(p: _Pass, steps_run: int, chosen: Optional[PredictedMesh] = None, fraction: float = 0.0,
               iou: float = before, **flags: Any) -> RefinedPrediction:
        """The refine's result from a pass; ``chosen`` None: the prediction is kept."""
        has_result = p.refined is not None
        return RefinedPrediction(chosen if chosen is not None else prediction, p.refined or prediction, view,
                                 resolution, before, p.after if has_result else before,
                                 iou if chosen is not None else before, chosen is None,
                                 fraction if chosen is not None else 0.0,
                                 (crossings_before, p.crossings if has_result else crossings_before), steps_run,
                                 time.perf_counter() - t0, p.cancelled, p.color_l1, ref, p.retried,
                                 p.retry_skipped, p.timed_out, **flags)

    # The fit starts from the network's mesh where predict_mesh conformed it (measured on the
    # real-model set: input-view IoU 0.934 as returned, against 0.925 from the conformed mesh,
    # whose fine-scale warp the remeshing fit does not improve on as often); the candidates must
    # still beat the prediction as returned.
    start = prediction.network_vertices.detach().float() if prediction.network_vertices is not None else v0
    offset, remesh_rejected = 0, False
    new_topology = opts.remesh and opts.optimize_vertices   # may the result have its own faces (the volume cut)

    def finish(mesh: PredictedMesh, iou: float) -> Tuple[PredictedMesh, float, Dict[str, bool]]:
        """The chosen ``mesh`` conformed to the outline and then cut through its volume (where
        the budget leaves time and each raises the IoU), its IoU and those two flags."""
        conformed = vcarved = False
        if deadline is None or time.perf_counter() + REFINE_CONFORM_S < deadline:
            mesh, iou, conformed = _conformed(mesh, iou, view, target)
        if new_topology and (deadline is None or time.perf_counter() + REFINE_VOLUME_CARVE_S < deadline):
            mesh, iou, vcarved = _volume_carved(mesh, iou, view, target)
        return mesh, iou, {"conformed": conformed, "volume_carved": vcarved}

    if new_topology:
        # The remeshing refine; when none of its candidates qualifies, the refine runs again on
        # the prediction's topology.
        early = _early_carved(v0, faces, prediction.colors.float(), view, target, opts) if REFINE_EARLY_CARVE else None
        if early is not None:
            first = run(early[0], opts, early[2], None, None, 0, early[1])
            if not first.cancelled and first.fraction <= 0.0 and (
                    fit_deadline is None or time.perf_counter() < fit_deadline):
                # the carved start's pass was rejected: the plain remeshing pass in what is left
                early_steps = first.steps
                early = None
                first = run(start, opts, prediction.colors.float(), None, None, early_steps)
                first.steps += early_steps
        else:
            first = run(start, opts, prediction.colors.float(), None, None, 0)
        if first.cancelled:
            return result(first, first.steps)
        if first.fraction > 0.0:
            assert first.chosen is not None
            chosen, iou, holes = first.chosen, first.iou, 0
            if first.remeshed and REFINE_CARVE and (deadline is None or time.perf_counter() + REFINE_CARVE_S < deadline):
                chosen, iou, holes = _carved(chosen, iou, view, target)
            chosen, iou, flags = finish(chosen, iou)
            return result(first, first.steps, chosen, first.fraction, iou, remeshed=first.remeshed,
                          holes=holes + (early[3] if early is not None else 0), **flags)
        offset, remesh_rejected = first.steps, True
        if fit_deadline is not None and time.perf_counter() >= fit_deadline:   # no time left for another
            first.timed_out = True
            return result(first, offset, remesh_rejected=True)
        opts = replace(opts, remesh=False)
        # What is left of the budget is short now: the fallback starts from the prediction as
        # returned (conformed), which a short fit improves more often than the network's mesh.
        start = v0
    out = run(start, opts, prediction.colors.float() if not has_tex else None,
              prediction.face_uvs.float() if has_tex else None,
              prediction.texture.float() if prediction.texture is not None else None, offset)
    if out.cancelled or out.fraction <= 0.0:
        return result(out, offset + out.steps, None, out.fraction, out.iou, remesh_rejected=remesh_rejected)
    assert out.chosen is not None
    final, iou, flags = finish(out.chosen, out.iou)
    return result(out, offset + out.steps, final, out.fraction, iou, remesh_rejected=remesh_rejected, **flags)
