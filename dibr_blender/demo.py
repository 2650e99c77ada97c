"""The main job: a multi-view reconstruction judged from views the fit never saw.

1. The scene (:func:`dibr_blender.scene.default_scene.build_reconstruction`): a smooth orange
   head (Suzanne, subdivided once) rendered by Cycles from 8 cameras on a ring (15 degrees
   elevation, 128 x 128, transparent film): the references; Blender's icosphere (1,280 faces)
   to fit; 4 held-out cameras between the ring's azimuths, one from above and one from below.
2. The fit: the batch command ``fit`` with one ``--view CAMERA=IMAGE`` per ring camera, default
   settings (writes ``fitted.blend`` and ``report.json``).
3. The judgement: the target, the start and the result rendered by Cycles from the held-out
   cameras at ``--size`` squared, put into ``before_after.png`` (one row per held-out view,
   columns target | before | after), and a ``heldout`` section added to ``report.json``:
   per view the silhouette IoU of the result's evaluated mesh against the target's Cycles alpha,
   the Chamfer distance (% of the target's bounding-box diagonal), the roughness ratio and the
   self-intersecting faces of the result (the start's figures under ``heldout.start``).

    python -m dibr_blender.demo [--out out/blender_demo] [--steps N] [--size 256] [--samples 16]
                                [--views 1..8]

(``--views N`` fits to the first N ring references only, e.g. 1 for a single-view fit; Cycles
renders at 16 samples without denoising: at 256 x 256 their noise is hardly visible, and each
takes about a second on 2 cores.)
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

REFERENCE_SIZE = 128
GAP = 4                                   # pixels between the grid's cells
BACKGROUND = np.array([0.22, 0.22, 0.24])  # sRGB behind the transparent renders


def grid_image(rows: List[List[np.ndarray]]) -> np.ndarray:
    """(H', W', 3) sRGB grid of (H, W, 4) sRGB straight-alpha images over ``BACKGROUND``, with
    ``GAP`` black pixels between cells."""
    h, w = rows[0][0].shape[:2]
    n_r, n_c = len(rows), max(len(r) for r in rows)
    out = np.zeros((n_r * h + (n_r - 1) * GAP, n_c * w + (n_c - 1) * GAP, 3), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            a = img[..., 3:4]
            y, x = i * (h + GAP), j * (w + GAP)
            out[y:y + h, x:x + w] = img[..., :3] * a + BACKGROUND * (1 - a)
    return out


def _surface(ob: Any) -> Tuple[np.ndarray, np.ndarray]:
    from .scene import io

    mesh = io.read_mesh(ob, with_texture=False)
    return mesh.vertices, mesh.faces


def _ious(ob: Any, heldout_views: List[Any]) -> List[float]:
    """Per view the silhouette IoU of ``ob``'s evaluated mesh against the target's Cycles alpha."""
    from .scene import fit as scene_fit

    return scene_fit.scores_as_seen(ob, heldout_views)


# The main job remeshes during the fit: from Blender's 1,280-face icosphere the large steps alone
# leave the head's ears webbed to it (held-out IoU 0.83 from above); remeshing towards 4-pixel
# edges within 6,000 faces gives the ears their own surface (0.93).
DEFAULT_FIT_ARGS = "--remesh --max-faces 6000"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/blender_demo")
    parser.add_argument("--steps", type=int, default=None, help="fit steps (default: the batch command's)")
    parser.add_argument("--size", type=int, default=256, help="side of the held-out judging renders")
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples of every render")
    parser.add_argument("--fit-args", default=DEFAULT_FIT_ARGS, metavar="'ARGS'",
                        help="more arguments for the batch fit command (default: %(default)r; '' fits at the "
                             "batch command's defaults, without remeshing)")
    parser.add_argument("--views", type=int, default=8, choices=range(1, 9), metavar="1..8",
                        help="fit to the first N ring references (default: all 8)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    t0 = time.perf_counter()
    import bpy  # noqa: F401 - the bpy module (pip install bpy==5.0.1)

    import dibr_core
    from dibr_core.images import load_png, save_png

    import torch

    from . import cli
    from .jobs import heldout
    from .scene import default_scene as ds
    from .scene import io

    print(dibr_core.backend_info(), flush=True)
    rec = ds.build_reconstruction(os.path.join(out, "scene"), size=REFERENCE_SIZE, samples=args.samples)
    print(f"scene: {rec.blend}: {len(rec.views)} references rendered with Cycles ({REFERENCE_SIZE}x{REFERENCE_SIZE}) "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)

    # The target and the start from the held-out cameras (Cycles, --size squared).
    judge = os.path.join(out, "heldout")
    os.makedirs(judge, exist_ok=True)
    t1 = time.perf_counter()
    scene: Any = bpy.context.scene
    ds.setup_cycles(scene, args.size, args.samples)
    target: Any = bpy.data.objects[rec.target]
    target.hide_set(False)
    target_png = ds.render_cameras(scene, rec.heldout, judge, "target", show=[rec.target])
    before_png = ds.render_cameras(scene, rec.heldout, judge, "before", show=[rec.start])
    views = [io.read_view(bpy.data.objects[name], scene, path, args.size) for name, path in zip(rec.heldout, target_png)]
    target_surface = _surface(target)
    start: Any = bpy.data.objects[rec.start]
    target_rgba = [load_png(p).numpy() for p in target_png]
    before_rgba = [load_png(p).numpy() for p in before_png]
    start_figures = {"ious": _ious(start, views), "surface": heldout.surface_metrics(*_surface(start), *target_surface),
                     "color_errors": [heldout.color_error(b, t) for b, t in zip(before_rgba, target_rgba)]}
    print(f"held-out renders of the target and the start in {time.perf_counter() - t1:.1f} s", flush=True)

    # The fit: the batch command, one --view per ring camera, default settings.
    result_blend = os.path.join(out, "fitted.blend")
    report_path = os.path.join(out, "report.json")
    fit_args = ["fit", "--blend", rec.blend]
    for cam, ref in rec.views[:args.views]:
        fit_args += ["--view", f"{cam}={ref}"]
    if args.steps is not None:
        fit_args += ["--steps", str(args.steps)]
    fit_args += shlex.split(args.fit_args)
    t2 = time.perf_counter()
    rc = cli.main([*fit_args, "--output", result_blend, "--report", report_path])
    if rc != 0:
        return rc
    fit_wall = time.perf_counter() - t2

    # The result from the held-out cameras.
    t3 = time.perf_counter()
    bpy.ops.wm.open_mainfile(filepath=result_blend)
    scene = bpy.context.scene
    ds.setup_cycles(scene, args.size, args.samples)
    result: Any = bpy.data.objects[rec.start]
    after_png = ds.render_cameras(scene, rec.heldout, judge, "after", show=[rec.start])
    after_rgba = [load_png(p).numpy() for p in after_png]
    section = heldout.heldout_section(
        rec.heldout, _ious(result, views), heldout.surface_metrics(*_surface(result), *target_surface),
        color_errors=[heldout.color_error(a, t) for a, t in zip(after_rgba, target_rgba)], start=start_figures,
        resolution=args.size, samples=args.samples, fit_views=len(rec.views[:args.views]))
    print(f"held-out renders and metrics of the result in {time.perf_counter() - t3:.1f} s", flush=True)

    rows = [list(r) for r in zip(target_rgba, before_rgba, after_rgba)]
    png = os.path.join(out, "before_after.png")
    save_png(png, torch.from_numpy(grid_image(rows)))
    with open(report_path) as fh:
        report: Dict[str, Any] = json.load(fh)
    report["heldout"] = section
    with open(report_path, "w") as fh:
        json.dump(report, fh, indent=1)

    train = [v.get("silhouette_iou") for v in report.get("views", []) if v.get("silhouette_iou") is not None]
    print(f"\nfit of {section['fit_views']} views: {report.get('steps')} steps in {fit_wall:.1f} s"
          + (f", mean training-view IoU {np.mean(train):.3f}" if train else "")
          + (f", {report['faces']} faces" if report.get("faces") is not None else "")
          + (f", self-intersecting faces {report['self_intersecting_faces']}"
             if report.get("self_intersecting_faces") is not None else ""))
    print(f"held-out views (never seen by the fit; Cycles {args.size}x{args.size}):")
    for line in heldout.summary(section):
        print(line)
    print(f"before_after.png (rows: {', '.join(rec.heldout)}; columns: target | before | after): {png}")
    print(f"fitted scene: {result_blend}")
    print(f"report: {report_path}")
    print(f"main job done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
