"""Image to 3D, the steps that need no Blender (no bpy import; torch and dibr_core are imported
only inside the functions that predict or render, so registration stays instant).

The shipped predictor (``dibr_core.inference.predict_mesh``) returns a textured mesh in the
canonical object frame of its training renders: +Y up, bounding-box diagonal about 1;
:func:`dibr_blender.jobs.meshes.mesh_arrays` turns it into plain arrays ready for Blender.

Colours: the network reproduces the stored (sRGB-encoded) values of its input images, so its
texture goes unchanged into an sRGB image and its vertex colours are decoded to linear for the
float colour attribute; Blender then shows the input's colours.

The refine (on by default, :data:`REFINE_STEPS` steps) is ``dibr_core.inference.refine_prediction``:
the fit, started from the prediction, in the input view. That view is the training protocol's
(elevation 30 degrees, distance 2.732 x the scale, 30 degree vertical field of view, square image)
whose silhouette of the predicted mesh best matches the framed input over the 24 protocol
azimuths, zoomed and shifted so that the mesh's projected box lands on the input's silhouette box
(``dibr_core.inference.match_input_view``); :func:`protocol_view` turns it into a Blender camera.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import convert, masks
from .meshes import BlenderMesh, canonical_to_blender

OBJECT_NAME = "DIB-R Image to 3D"
CAMERA_NAME = "DIB-R Image to 3D Camera"

# dibr_core.data.shapes.CATEGORIES, repeated here so that registering the extension does not
# import dibr_core (and torch); tests/test_image_to_3d_pure.py checks that they agree.
CATEGORIES: Tuple[str, ...] = (
    "airplane", "bench", "cabinet", "car", "chair", "display", "lamp",
    "loudspeaker", "rifle", "sofa", "table", "telephone", "watercraft",
)
CATEGORY_ITEMS: List[Tuple[str, str, str]] = [("none", "None", "No category hint")] + [
    (c, c.capitalize(), f"Hint that the image shows a {c}") for c in CATEGORIES]

# The training renders' camera protocol (dibr_core.data.dataset).
PROTOCOL_ELEVATION_DEG = 30.0
PROTOCOL_DISTANCE = 2.732
PROTOCOL_FOV_Y_DEG = 30.0
PROTOCOL_AZIMUTH_STEP_DEG = 15.0
PROTOCOL_N_AZIMUTHS = 24
SENSOR_HEIGHT = 24.0          # mm, Blender's default; the camera uses the vertical sensor fit
PROTOCOL_LENS = SENSOR_HEIGHT / (2.0 * math.tan(math.radians(PROTOCOL_FOV_Y_DEG) / 2.0))
# dibr_core.inference.REFINE_STEPS / REFINE_RESOLUTION, repeated so that registering does not
# import dibr_core; tests/test_image_to_3d_pure.py checks that they agree.
REFINE_STEPS = 100
REFINE_RESOLUTION = 128
# An opaque picture (no alpha, or alpha 1 everywhere) without a mask is keyed on its border colour
# when at least this share of its border pixels lies within half the key's tolerance of the median.
UNIFORM_BORDER_FRACTION = 0.95


# --------------------------------------------------------------------------- inputs

def silhouette(rgba: np.ndarray, has_alpha: bool) -> np.ndarray:
    """A mask image's silhouette: its alpha, or its first (grey) channel when it has no alpha."""
    return np.ascontiguousarray(rgba[..., 3] if has_alpha else rgba[..., 0], dtype=np.float32)


def auto_background_key(rgb: np.ndarray) -> Optional[masks.BackgroundKey]:
    """The key of an opaque picture (no alpha, no mask) on a plain background: its border colour
    (:func:`masks.border_color`) when at least :data:`UNIFORM_BORDER_FRACTION` of its outermost
    pixels lie within half the default tolerance of it; None for a busy border (a photo), which
    needs a mask or an explicit background colour."""
    a = np.asarray(rgb, dtype=np.float64)[..., :3]
    if a.ndim != 3 or min(a.shape[:2]) < 2:
        return None
    ring = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]], axis=0)
    bg = masks.border_color(a)
    close = np.abs(ring - bg).max(axis=-1) <= 0.5 * masks.DEFAULT_TOLERANCE
    if float(close.mean()) < UNIFORM_BORDER_FRACTION:
        return None
    return masks.BackgroundKey(tuple(float(c) for c in bg))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the predictor

def predict(image: np.ndarray, mask: Optional[np.ndarray], category: Optional[str] = None) -> Tuple[Any, bool]:
    """Run the shipped predictor. Returns (PredictedMesh, whether the category was passed on).

    Raises:
        ImportError: torch or dibr_core cannot be imported; FileNotFoundError: no weights file;
        ValueError: bad input (empty mask, bad shapes).
    """
    from dibr_core import inference

    hint = category if category and category != "none" else None
    return inference.predict_mesh(image, mask, category=hint), hint is not None


def _scrub(value: Any) -> Any:
    """Drop absolute paths (of the machine that trained the model) from the weights' metadata."""
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items() if not (isinstance(v, str) and os.path.isabs(v))}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


_META_CACHE: Dict[Tuple[str, float, Tuple[str, ...]], Optional[Dict[str, Any]]] = {}


def weights_meta(path: Any, config_keys: Sequence[str] = ("model_config",)) -> Optional[Dict[str, Any]]:
    """The informative metadata of a weights file, without absolute paths: its ``config_keys``
    entries and its ``meta`` dictionary merged; None when the file cannot be read. Cached per
    file and modification time. Shared by Image to 3D (the predictor) and Generate (the generator)."""
    keys = tuple(config_keys)
    try:
        cache_key = (str(path), os.stat(path).st_mtime, keys)
    except OSError:
        return None
    if cache_key not in _META_CACHE:
        meta: Optional[Dict[str, Any]] = None
        try:
            import torch

            state = torch.load(path, map_location="cpu", weights_only=True)
            meta = {**{k: _scrub(state.get(k, {})) for k in keys}, **_scrub(state.get("meta", {}))}
        except Exception:  # noqa: BLE001 - the metadata is informative only
            meta = None
        _META_CACHE[cache_key] = meta
    cached = _META_CACHE[cache_key]
    return None if cached is None else dict(cached)


def weights_info() -> Dict[str, Any]:
    """``{"weights": file name, "predictor": model config and metadata}`` of the shipped weights
    (no absolute paths)."""
    from dibr_core import inference

    path = inference.PREDICTOR_WEIGHTS
    return {"weights": path.name, "predictor": weights_meta(path, ("model_config",))}


# --------------------------------------------------------------------------- the protocol camera

@dataclass(frozen=True)
class ProtocolView:
    """A protocol camera around an object of scale 1 centred at the origin (Blender frame).

    ``lens`` (mm, vertical sensor fit on a ``SENSOR_HEIGHT`` sensor) and ``shift_x/y`` (in units
    of the image side) are the protocol's 30 degree lens zoomed and shifted so that the mesh's
    silhouette box matches the framed input's. ``iou``: silhouette IoU with the framed input.
    """

    azimuth_deg: float
    elevation_deg: float = PROTOCOL_ELEVATION_DEG
    distance: float = PROTOCOL_DISTANCE
    lens: float = PROTOCOL_LENS
    shift_x: float = 0.0
    shift_y: float = 0.0
    iou: float = float("nan")


def protocol_eye(azimuth_deg: float, elevation_deg: float = PROTOCOL_ELEVATION_DEG,
                 distance: float = PROTOCOL_DISTANCE) -> np.ndarray:
    """The training protocol's eye in Blender coordinates: the canonical eye
    ``d (cos e sin a, sin e, cos e cos a)`` rotated to +Z up (azimuth 0 looks from -Y)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye_c = np.array([[distance * math.cos(e) * math.sin(a), distance * math.sin(e),
                       distance * math.cos(e) * math.cos(a)]])
    return canonical_to_blender(eye_c)[0]


def look_at(eye: np.ndarray, target: np.ndarray, up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) world matrix of a Blender camera at ``eye`` looking at ``target`` (local -Z forward,
    +Y up, +Z world up)."""
    eye = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("look_at(): the view direction is parallel to up")
    right /= np.linalg.norm(right)
    cam_up = np.cross(right, fwd)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = right, cam_up, -fwd, eye
    return M


def facing_rotation_deg(azimuth_deg: float, view_direction: Any) -> Optional[float]:
    """The turn about +Z (degrees, counter-clockwise seen from above, in (-180, 180]) that makes
    the protocol view at ``azimuth_deg`` look at the object along ``view_direction``'s horizontal
    part ((3,) world direction, e.g. a camera's forward axis): after the turn, the object shows that
    viewer the side the input image shows. None when the direction is (nearly) vertical.

    The protocol eye at azimuth a lies horizontally at angle a - 90 degrees from +X (azimuth 0
    looks from -Y), so it looks along a + 90 degrees; a turn by t moves it to azimuth a + t."""
    d = np.asarray(view_direction, dtype=np.float64).reshape(3)
    horizontal = float(np.hypot(d[0], d[1]))
    if not horizontal > 1e-6 * max(1.0, float(np.linalg.norm(d))):
        return None
    turn = math.degrees(math.atan2(d[1], d[0])) - azimuth_deg - 90.0
    turn = (turn + 180.0) % 360.0 - 180.0
    return 180.0 if turn == -180.0 else turn


def camera_world(view: ProtocolView, scale: float = 1.0, location: Any = (0.0, 0.0, 0.0)) -> np.ndarray:
    """(4, 4) world matrix of the protocol camera for an object of ``scale`` at ``location``."""
    loc = np.asarray(location, dtype=np.float64)
    eye = loc + scale * protocol_eye(view.azimuth_deg, view.elevation_deg, view.distance)
    return look_at(eye, loc)


def camera_params(view: ProtocolView, resolution: int, scale: float = 1.0) -> convert.CameraParams:
    """Blender camera settings of ``view`` rendering a square ``resolution`` image."""
    return convert.CameraParams(type="PERSP", lens=view.lens, sensor_width=SENSOR_HEIGHT,
                                sensor_height=SENSOR_HEIGHT, sensor_fit="VERTICAL", shift_x=view.shift_x,
                                shift_y=view.shift_y, clip_start=0.05 * scale, clip_end=100.0 * scale,
                                res_x=resolution, res_y=resolution)


def project_ndc(vertices: np.ndarray, world: np.ndarray, params: convert.CameraParams) -> np.ndarray:
    """(N, 2) NDC (x right, y up, [-1, 1] across the image) of world points seen by a camera."""
    P = convert.projection_matrix(params) @ convert.view_matrix(world)
    v = np.asarray(vertices, dtype=np.float64)
    h = np.concatenate([v, np.ones((v.shape[0], 1))], axis=1) @ P.T
    return h[:, :2] / h[:, 3:4]


def protocol_view(view: Any, azimuth_offset_deg: float = 0.0) -> ProtocolView:
    """The Blender camera of a ``dibr_core.inference.InputView`` (``ndc' = zoom * ndc + shift``): the
    lens zoomed by ``zoom`` and shifted by ``-shift / 2`` (Blender's lens shift moves the content by
    ``-2 shift`` in NDC on a square image with the vertical fit); its azimuth turned by
    ``azimuth_offset_deg`` (the object's turn about Z)."""
    return ProtocolView(float(view.azimuth_deg) + azimuth_offset_deg, float(view.elevation_deg), float(view.distance),
                        PROTOCOL_LENS * float(view.zoom), -0.5 * float(view.shift[0]), -0.5 * float(view.shift[1]),
                        float(view.iou))


def match_view(prediction: Any, rgba: np.ndarray, mask: Optional[np.ndarray], resolution: int) -> Any:
    """The input view of a prediction (``dibr_core.inference.match_input_view`` on the input framed
    at ``resolution``, colours breaking silhouette ties)."""
    from dibr_core import inference

    ref = inference.prepare_image(rgba, mask, size=resolution)
    return inference.match_input_view(prediction.vertices, prediction.faces, ref[3], colors=prediction.colors,
                                      rgb=ref[:3])


def network_view_iou(prediction: Any, rgba: np.ndarray, mask: Optional[np.ndarray], view: Any,
                     resolution: int) -> Optional[float]:
    """The silhouette IoU in ``view`` (at ``resolution``, as ``match_view`` measures the
    prediction) of the network's mesh before ``predict_mesh`` conformed it; None when it was not
    conformed."""
    from dibr_core import inference

    if getattr(prediction, "network_vertices", None) is None:
        return None
    ref = inference.prepare_image(rgba, mask, size=resolution)
    return inference.input_view_iou(prediction.network_vertices, prediction.faces, view, ref[3])


def refine(prediction: Any, rgba: np.ndarray, mask: Optional[np.ndarray], steps: int, resolution: int,
           view: Any = None, backend: str = "auto", progress: Optional[Any] = None,
           should_stop: Optional[Any] = None) -> Any:
    """``dibr_core.inference.refine_prediction`` (a ``RefinedPrediction``) with the default options
    and ``steps``; touches no Blender data (it runs on the operator's worker thread)."""
    from dibr_core import inference

    return inference.refine_prediction(prediction, rgba, mask, steps=steps, resolution=resolution,
                                       options=inference.refine_options(steps, backend=backend), view=view,
                                       progress=progress, should_stop=should_stop)


def to_blender(vertices: Any, mesh: BlenderMesh, turn_deg: float = 0.0) -> np.ndarray:
    """(V, 3) canonical vertices (a refined prediction) placed as ``mesh`` (the prediction made
    Blender data by ``mesh_arrays``: its centre and scale), turned by ``turn_deg`` about Z, then
    stood on the ground plane (lowest point at z = 0) -> (V, 3) float32."""
    v = np.asarray(vertices.detach().cpu().numpy() if hasattr(vertices, "detach") else vertices, dtype=np.float64)
    out = canonical_to_blender(v - np.asarray(mesh.centre, dtype=np.float64)) * mesh.scale
    t = math.radians(turn_deg)
    c, s = math.cos(t), math.sin(t)
    out = out @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]).T
    out[:, 2] -= out[:, 2].min()
    return out.astype(np.float32)


def self_intersections(vertices: np.ndarray, faces: np.ndarray) -> int:
    """How many faces of a closed mesh cross another face ((V, 3) vertices, (F, 3) faces), as the
    input-view refine (``dibr_core.inference.refine_prediction``) counts them."""
    import torch

    from dibr_core.mesh_queries import self_intersecting_faces

    v = torch.from_numpy(np.asarray(vertices, dtype=np.float64))
    f = torch.from_numpy(np.asarray(faces, dtype=np.int64))
    return self_intersecting_faces(v, f)


def clean_refined(vertices: np.ndarray, faces: np.ndarray) -> Tuple[np.ndarray, int]:
    """A refined surface with its inside-out pockets removed (``dibr_core.mesh_repair.untangle``),
    as (V, 3) float32, and its count of self-intersecting face pairs after that."""
    import torch

    from dibr_core.mesh_repair import untangle

    v, _ = untangle(torch.from_numpy(np.asarray(vertices, dtype=np.float64)),
                    torch.from_numpy(np.asarray(faces, dtype=np.int64)))
    out = v.numpy().astype(np.float32)
    return out, self_intersections(out, faces)


# --------------------------------------------------------------------------- the report

def make_report(*, object_name: str, mesh: BlenderMesh, category: Optional[str], category_passed: bool,
                size: float, seconds: float, predict_seconds: float, image: str,
                weights: Optional[Dict[str, Any]] = None, refine: Optional[Dict[str, Any]] = None,
                output: Optional[str] = None, export: Optional[str] = None,
                facing: Optional[Dict[str, Any]] = None, input_view: Optional[Dict[str, Any]] = None,
                silhouette_source: str = "alpha") -> Dict[str, Any]:
    """The JSON report of one Image to 3D run (the batch command writes it; the operator prints
    its summary). ``image``: the input's file name (no folder) or ``image 'NAME'``.
    ``input_view``: the input-view silhouette IoU ``{"prediction", "refined", "result", "camera",
    "network"}`` (``refined`` None without a refine; ``network``: the network's mesh before
    ``predict_mesh`` conformed it to the input's silhouette, in the same view and resolution as
    ``prediction`` (:func:`network_view_iou`), None when it was not conformed);
    ``silhouette_source``: where the silhouette came from."""
    w = weights or {}
    return {
        "command": "image-to-3d",
        "object": object_name,
        "image": image,
        "vertices": int(mesh.vertices.shape[0]),
        "faces": int(mesh.faces.shape[0]),
        "category": category if category and category != "none" else None,
        "category_passed_to_predictor": bool(category_passed),
        "size": float(size),
        "scale": mesh.scale,
        "texture_size": mesh.texture_size,
        "native_texture_size": mesh.native_texture_size,
        "seconds": round(float(seconds), 3),
        "predict_seconds": round(float(predict_seconds), 3),
        "facing": facing,
        "silhouette": silhouette_source,
        "input_view_iou": input_view,
        "refine": refine,
        "output": output,
        "export": export,
        "weights": w.get("weights"),
        "predictor": w.get("predictor"),
    }


def summary(report: Dict[str, Any]) -> str:
    """One line for the operator's report: the object, and its input-view silhouette IoU before
    and after the refine."""
    line = (f"DIB-R Image to 3D: '{report['object']}' ({report['vertices']} vertices, {report['faces']} faces"
            + (f", {report['texture_size']} px texture" if report.get("texture_size") else "")
            + f") in {report['seconds']:.2f} s")
    iv = report.get("input_view_iou") or {}
    r = report.get("refine")
    if r:
        line += (f"; input-view silhouette IoU {r['prediction_silhouette_iou']:.3f} -> "
                 f"{r['silhouette_iou']:.3f} after {r['steps']} refine steps against '{r['camera']}'")
        if 0.0 < r.get("refine_fraction", 1.0) < 1.0:
            x = r.get("self_intersections") or {}
            why = ("would add self-intersecting faces" if x.get("refined", 0) > x.get("prediction", 0) else
                   "overlaps less")
            line += f" ({100 * r['refine_fraction']:.0f}% of the refine; the whole {why} at {r['refined_silhouette_iou']:.3f})"
        if r.get("kept_prediction"):
            line += " (kept the prediction: " + (r.get("kept_reason") or "the refine did not improve it") + ")"
        if r.get("remeshed"):
            holes = int(r.get("holes") or 0)
            line += "; the refine remeshed the surface" + (
                f" and cut {holes} hole{'s' if holes != 1 else ''} of the picture through it" if holes else "")
        if r.get("volume_carved"):
            line += "; the result was cut by the picture's background through its volume"
        if r.get("timed_out"):
            line += "; the refine stopped at its time budget and returned its best state by then"
    elif iv.get("prediction") is not None:
        line += f"; input-view silhouette IoU {iv['prediction']:.3f} (no refine"
        if iv.get("network") is not None:
            line += f"; the network's mesh {iv['network']:.3f} before it was conformed to the picture's outline"
        line += ")"
    return line


__all__ = ["CATEGORIES", "CATEGORY_ITEMS", "REFINE_RESOLUTION", "REFINE_STEPS", "ProtocolView", "auto_background_key",
           "camera_params", "camera_world", "make_report", "match_view", "network_view_iou", "predict", "protocol_view",
           "refine", "to_blender", "weights_info", "weights_meta"]
