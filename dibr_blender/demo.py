"""The main job: build the default scene (a target shape rendered with Cycles as the reference,
an icosphere to fit), run the headless fit, and write the result .blend, a before/after PNG and
the report.

    python -m dibr_blender.demo [--out out/blender_demo] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import List, Optional

import numpy as np


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/blender_demo")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    t0 = time.perf_counter()
    import bpy  # noqa: F401 - the bpy module (pip install bpy==5.0.1)

    import dibr_core
    from dibr_core.images import save_png

    from . import cli
    from .jobs import preview
    from .jobs.fit import FitSettings
    from .scene import default_scene
    from .scene import fit as scene_fit

    print(dibr_core.backend_info(), flush=True)
    blend, ref = default_scene.build(out, size=args.size)
    print(f"default scene: {blend} (reference rendered with Cycles: {ref}) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    settings = FitSettings(max_side=args.size)
    _, mesh0, views = scene_fit.gather(bpy.context.scene, None, [(None, ref)], settings)
    before = preview.render_view(mesh0, views[0])
    result_blend = os.path.join(out, "fitted.blend")
    report = os.path.join(out, "report.json")
    rc = cli.main(["fit", "--blend", blend, "--image", ref, "--steps", str(args.steps), "--resolution",
                   str(args.size), "--output", result_blend, "--report", report])
    if rc != 0:
        return rc
    bpy.ops.wm.open_mainfile(filepath=result_blend)
    _, mesh1, views1 = scene_fit.gather(bpy.context.scene, None, [(None, ref)], settings)
    after = preview.render_view(mesh1, views1[0])
    ref_rgba = np.concatenate([views1[0].image, views1[0].mask[..., None]], axis=-1)
    import torch

    def over_grey(rgba: np.ndarray) -> np.ndarray:
        a = rgba[..., 3:4]
        from .jobs.convert import linear_to_srgb

        return linear_to_srgb(rgba[..., :3]) * a + 0.25 * (1 - a)

    strip = np.concatenate([over_grey(ref_rgba), over_grey(before), over_grey(after)], axis=1)
    png = os.path.join(out, "before_after.png")
    save_png(png, torch.from_numpy(strip.astype(np.float32)))
    with open(report) as fh:
        rep = json.load(fh)
    print(f"reference | before | after: {png}")
    print(f"fitted scene: {result_blend}")
    print(f"report: {report} (silhouette IoU {rep['views'][0]['silhouette_iou']:.3f}, "
          f"colour L1 {rep['views'][0]['color_l1']:.4f}, fit {rep['seconds']:.1f} s)")
    print(f"main job done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
