"""Reconstruction benchmark of :func:`dibr_core.fit.fit`: in-project shapes rendered by the
project's renderer from a ring of cameras, fitted from a 1,280-face icosphere, with the
large-step optimiser and the original one (Adam on free offsets plus penalties) side by side.

Usage::

    python -m dibr_core.eval fit [--json] [--scenes head,bumpy] [--views 8] [--size 128]
        [--steps N] [--optimizers large_steps,adam] [--single-view] [--threads 1]
        [--remesh] [--remesh-edge-px 4] [--max-faces N]

(``--threads 1`` gives steadier timings on a busy machine; 0, the default, keeps torch's.)

Scenes (targets of 1,280 faces, the fit's own face count, so the roughness ratio compares
meshes of the same resolution; each scaled so its farthest vertex is 0.9 from the origin):

* ``head``: a smooth Suzanne-like head: an ellipsoid with two ears, a snout and a brow, each a
  smooth Gaussian bump of the radius (star-shaped, so a sphere can reach it).
* ``bumpy``: the project's bumpy sphere (:func:`dibr_core.scenes.blob`), finer detail.
* ``torus``: a torus (genus 1; a sphere cannot reach it, the silhouettes still constrain most
  of it), a hard case.

Cameras: ``--views`` perspective cameras (40 degree field of view, distance 3) on a ring at 15
degrees elevation; 4 held-out cameras the fit never sees (azimuths between the ring's, at 40
and -25 degrees elevation). References are the target rendered unlit with smooth vertex
colours at ``--size`` squared; the silhouette is the hard coverage.

Each optimiser runs with its own defaults: ``large_steps`` with :class:`FitOptions`' defaults,
``adam`` with them except the final halo, ``OLD_HALO_PX`` = 0.3 px, its default before the large
steps (at 0.1 px the original optimiser crumples more).

With ``--remesh`` every (scene, optimiser) case also runs with remeshing during the fit
(``FitOptions(remesh=True, target_edge_px=--remesh-edge-px, max_faces=--max-faces)``) from a
coarse start, the 320-face icosphere (level 2); its rows have ``remesh: true``, ``start_faces``
320 and ``faces`` the final face count (the roughness ratio then compares meshes of different
resolutions: finer triangles have smaller dihedral angles).

Metrics per fit:

* ``chamfer_pct``: symmetric Chamfer distance ((mean d(fit -> target) + mean d(target -> fit)) / 2,
  5,000 area samples each, fixed seed) in percent of the target's bounding-box diagonal.
* ``heldout_iou``: hard silhouette IoU in the held-out views (mean, and ``heldout_iou_min``).
* ``train_iou``: hard silhouette IoU in the fitted views (mean).
* ``self_intersecting_faces``: faces that intersect a non-adjacent face.
* ``roughness_ratio``: mean dihedral angle (between the normals of faces sharing an edge) of
  the fit divided by the target's.
* ``seconds``: wall time of the optimisation loop (:attr:`FitResult.seconds`); ``cpu_seconds``:
  the process's CPU time over the whole :func:`fit` call (steadier than wall time on a shared
  machine).

Prints a table on stderr and one JSON object on stdout (on one line with ``--json``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from dibr_core import scenes
from dibr_core.camera import Camera, look_at
from dibr_core.fit import OPTIMIZERS, FitOptions, FitView, fit
from dibr_core.losses import silhouette_iou
from dibr_core.mesh import icosphere
from dibr_core.mesh_queries import self_intersecting_faces
from dibr_core.surface_metrics import chamfer_percent, mean_dihedral_angle
from dibr_core.render import Meshes, RenderSettings, render

__all__ = ["add_arguments", "run", "SCENES", "OLD_HALO_PX", "self_intersecting_faces", "mean_dihedral_angle", "ring_cameras", "run_case"]

_FOV = math.radians(40.0)
_DISTANCE = 3.0
_EXTENT = 0.9
OLD_HALO_PX = 0.3   # the original optimiser's final halo before the large steps (the one default that changed)
_HELD_OUT = ((22.5, 40.0), (112.5, -25.0), (202.5, 40.0), (292.5, -25.0))   # (azimuth, elevation) degrees




# ---------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------
def _normalised(v: torch.Tensor) -> torch.Tensor:
    return v * (_EXTENT / float(v.norm(dim=-1).max()))


def head_mesh() -> Tuple[torch.Tensor, torch.Tensor]:
    """A smooth Suzanne-like head: (vertices (642, 3), faces (1280, 3))."""
    v, f, _ = icosphere(3, 1.0, dtype=torch.float64)
    r = torch.ones(v.shape[0], dtype=torch.float64)
    for centre, amp, width in (((0.95, 0.25, -0.1), 0.55, 0.25), ((-0.95, 0.25, -0.1), 0.55, 0.25),   # ears
                               ((0.0, -0.2, 1.0), 0.22, 0.35),                                      # snout
                               ((0.0, 0.35, 0.9), 0.08, 0.4)):                                      # brow
        c = torch.tensor(centre, dtype=torch.float64)
        c = c / c.norm()
        r = r + amp * torch.exp(-((v - c) ** 2).sum(-1) / (2 * width * width))
    v = v * r[:, None] * torch.tensor([0.85, 0.95, 0.8], dtype=torch.float64)
    return _normalised(v).float(), f


def bumpy_mesh() -> Tuple[torch.Tensor, torch.Tensor]:
    """The project's bumpy sphere at 1,280 faces."""
    v, f, _ = scenes.blob(3, dtype=torch.float64)
    return _normalised(v).float(), f


def torus_mesh(major: int = 40, minor: int = 16) -> Tuple[torch.Tensor, torch.Tensor]:
    """A torus (radii 1 and 0.4, axis +Y, tilted 30 degrees about X): 2 * major * minor faces."""
    i = torch.arange(major, dtype=torch.float64)[:, None] * (2 * math.pi / major)
    j = torch.arange(minor, dtype=torch.float64)[None, :] * (2 * math.pi / minor)
    ring = 1.0 + 0.4 * torch.cos(j)
    v = torch.stack([ring * torch.cos(i), 0.4 * torch.sin(j).expand(major, minor), ring * torch.sin(i)], -1)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float64)
    v = v.reshape(-1, 3) @ rot.T
    a = torch.arange(major)[:, None] * minor + torch.arange(minor)[None, :]
    b = ((torch.arange(major)[:, None] + 1) % major) * minor + torch.arange(minor)[None, :]
    a1 = torch.arange(major)[:, None] * minor + (torch.arange(minor)[None, :] + 1) % minor
    b1 = ((torch.arange(major)[:, None] + 1) % major) * minor + (torch.arange(minor)[None, :] + 1) % minor
    f = torch.cat([torch.stack([a, a1, b], -1).reshape(-1, 3), torch.stack([b, a1, b1], -1).reshape(-1, 3)])
    # Orient outward: the normal of face 0 must point away from the tube's centre line.
    tri = v[f[0]]
    n = torch.cross(tri[1] - tri[0], tri[2] - tri[0], dim=-1)
    centre = tri.mean(0)
    axis_pt = rot @ torch.tensor([math.cos(0.0), 0.0, math.sin(0.0)], dtype=torch.float64)
    if float((n * (centre - axis_pt)).sum()) < 0:
        f = f[:, [0, 2, 1]]
    return _normalised(v).float(), f


SCENES: Dict[str, Callable[[], Tuple[torch.Tensor, torch.Tensor]]] = {
    "head": head_mesh, "bumpy": bumpy_mesh, "torus": torus_mesh}


def ring_cameras(n: int, elevation_deg: float = 15.0) -> Camera:
    """``n`` cameras on a ring around +Y at ``elevation_deg``, looking at the origin."""
    return _cameras([(360.0 * k / n, elevation_deg) for k in range(n)])


def _cameras(angles: Sequence[Tuple[float, float]]) -> Camera:
    eyes = []
    for az, el in angles:
        a, e = math.radians(az), math.radians(el)
        eyes.append([_DISTANCE * math.cos(e) * math.sin(a), _DISTANCE * math.sin(e),
                     _DISTANCE * math.cos(e) * math.cos(a)])
    return Camera.perspective(look_at(torch.tensor(eyes)), _FOV)


def _split(cams: Camera) -> List[Camera]:
    proj = cams.projection
    return [Camera(cams.view[k:k + 1], proj[k:k + 1] if proj.shape[0] > 1 else proj, cams.near, cams.far)
            for k in range(cams.batch_size)]


def _render_masks(v: torch.Tensor, f: torch.Tensor, cams: Camera, size: int,
                  colors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    B = cams.batch_size
    settings = RenderSettings(height=size, width=size, perspective_correct=True)
    with torch.no_grad():
        out = render(Meshes(v[None].expand(B, -1, -1).contiguous(), f), cams,
                     colors=colors[None].expand(B, -1, -1).contiguous() if colors is not None else None,
                     settings=settings)
    return out.rgb, out.mask


def run_case(scene: str, optimizer: str, views: int = 8, size: int = 128, steps: Optional[int] = None,
             options: Optional[FitOptions] = None, remesh: bool = False, remesh_edge_px: float = 4.0,
             max_faces: Optional[int] = None) -> Dict[str, object]:
    """Fit one scene with one optimiser; returns the metrics (see the module docstring).

    ``remesh``: remesh during the fit from the coarse (320-face) start, towards edges of
    ``remesh_edge_px`` pixels within ``max_faces``."""
    tv, tf = SCENES[scene]()
    colours = (0.5 + 0.4 * tv / _EXTENT).clamp(0.0, 1.0)
    cams = ring_cameras(views) if views > 1 else _cameras([(30.0, 15.0)])
    rgb, mask = _render_masks(tv, tf, cams, size, colours)
    fviews = [FitView(c, rgb[k], mask[k], f"ring{k}") for k, c in enumerate(_split(cams))]
    if options is None:   # each optimiser with its own defaults
        options = FitOptions(halo_px=OLD_HALO_PX) if optimizer == "adam" else FitOptions()
    opts = replace(options, optimizer=optimizer, steps=options.steps if steps is None else steps)
    if remesh:
        opts = replace(opts, remesh=True, target_edge_px=remesh_edge_px, max_faces=max_faces)
    v0, f0, _ = icosphere(2 if remesh else 3, 0.7)
    cpu0 = time.process_time()
    res = fit(v0, f0, fviews, opts)
    cpu = time.process_time() - cpu0
    v = res.vertices
    f = res.faces if res.faces is not None else f0
    ho = _cameras(_HELD_OUT)
    _, ho_target = _render_masks(tv, tf, ho, size)
    _, ho_fit = _render_masks(v, f, ho, size)
    ho_iou = silhouette_iou(ho_fit, ho_target)
    return {
        "scene": scene, "optimizer": optimizer, "remesh": remesh, "views": views, "size": size, "steps": res.steps,
        "start_faces": int(f0.shape[0]), "faces": int(f.shape[0]),
        "chamfer_pct": round(chamfer_percent(v, f, tv, tf), 4),
        "heldout_iou": round(float(ho_iou.mean()), 4),
        "heldout_iou_min": round(float(ho_iou.min()), 4),
        "train_iou": round(sum(m.silhouette_iou for m in res.views) / len(res.views), 4),
        "self_intersecting_faces": self_intersecting_faces(v, f),
        "roughness_ratio": round(mean_dihedral_angle(v, f) / mean_dihedral_angle(tv, tf), 3),
        "seconds": round(res.seconds, 2),
        "cpu_seconds": round(cpu, 2),
    }


def _table(rows: List[Dict[str, object]]) -> str:
    cols = ["scene", "views", "optimizer", "remesh", "faces", "chamfer_pct", "heldout_iou", "train_iou", "self_intersecting_faces",
            "roughness_ratio", "seconds", "cpu_seconds"]
    head = "| " + " | ".join(cols) + " |"
    lines = [head, "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fit benchmark's own options (``python -m dibr_core.eval fit``)."""
    p.add_argument("--scenes", default="head,bumpy", help=f"comma-separated, from {sorted(SCENES)}")
    p.add_argument("--views", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=None, help="default: FitOptions().steps")
    p.add_argument("--optimizers", default="large_steps,adam", help=f"comma-separated, from {OPTIMIZERS}")
    p.add_argument("--single-view", action="store_true", help="also fit the first scene from one view")
    p.add_argument("--remesh", action="store_true",
                   help="also run every case with remeshing during the fit, from a 320-face icosphere")
    p.add_argument("--remesh-edge-px", type=float, default=4.0, help="remeshing's target edge length in pixels")
    p.add_argument("--max-faces", type=int, default=None, help="remeshing's face budget (>= 4)")


def run(a: argparse.Namespace) -> Dict[str, object]:
    """Run every (scene, optimiser) case; a table goes to stderr, the report is returned.

    Raises:
        ValueError: an unknown scene or optimiser, fewer than 1 view or a size under 16.
    """
    names = [s for s in a.scenes.split(",") if s]
    bad = [s for s in names if s not in SCENES]
    if bad or not names:
        raise ValueError(f"eval fit: unknown scene(s) {bad} in --scenes; choose from {sorted(SCENES)}")
    optimizers = [o for o in a.optimizers.split(",") if o]
    bad = [o for o in optimizers if o not in OPTIMIZERS]
    if bad or not optimizers:
        raise ValueError(f"eval fit: unknown optimiser(s) {bad} in --optimizers; choose from {OPTIMIZERS}")
    if a.views < 1 or a.size < 16:
        raise ValueError(f"eval fit: --views must be >= 1 and --size >= 16, got {a.views} and {a.size}")
    if not a.remesh_edge_px > 0 or (a.max_faces is not None and a.max_faces < 4):
        raise ValueError(f"eval fit: --remesh-edge-px must be > 0 and --max-faces >= 4, got {a.remesh_edge_px} "
                         f"and {a.max_faces}")
    t0 = time.perf_counter()
    rows = []
    cases = [(s, a.views) for s in names] + ([(names[0], 1)] if a.single_view else [])
    for scene, n_views in cases:
        for opt in optimizers:
            for rm in ((False, True) if a.remesh else (False,)):
                row = run_case(scene, opt, n_views, a.size, a.steps, remesh=rm, remesh_edge_px=a.remesh_edge_px,
                               max_faces=a.max_faces)
                rows.append(row)
                if a.progress:
                    print(json.dumps(row), file=sys.stderr, flush=True)
    print(_table(rows), file=sys.stderr)
    return {"benchmark": "fit", "threads": torch.get_num_threads(), "rows": rows,
            "total_seconds": round(time.perf_counter() - t0, 1)}
