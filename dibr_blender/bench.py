"""Benchmarks of the Blender side, one JSON line each (bpy module, CPU):

    python -m dibr_blender.bench [--skip-fit] [--load N]

* ``scene_io_100k``: read the evaluated mesh of a 100k-vertex object into arrays, then write
  fitted positions (shape key) and colours (attribute) back.
* ``default_fit``: the main job's fit (256x256, 300 steps, about 5k faces) on the default scene,
  with the thread settings of the panel's fit (:func:`dibr_blender.jobs.threads.fit_threads`).
  With ``--load N`` it runs again beside N busy processes (``dibr_core.bench.BusyLoad``) and
  prints the loaded/quiet ratio of the times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import List, Optional

import numpy as np


def bench_scene_io(repeats: int = 5) -> dict:
    import bpy

    from .scene import default_scene
    from .scene import io as scene_io

    bpy.ops.wm.read_homefile(use_empty=True)
    n = 317  # 317^2 = 100,489 vertices, 2 * 316^2 = 199,712 triangles
    ys, xs = np.mgrid[0:n, 0:n]
    verts = np.stack([xs.ravel() / n, ys.ravel() / n, np.zeros(n * n)], axis=1).astype(np.float32)
    q = (ys[:-1, :-1] * n + xs[:-1, :-1]).ravel()
    faces = np.concatenate([np.stack([q, q + 1, q + n + 1], 1), np.stack([q, q + n + 1, q + n], 1)])
    ob = default_scene._mesh_object("Grid", verts, faces)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = scene_io.read_mesh(ob, with_texture=False)
        moved = data.vertices + np.float32(0.01)
        scene_io.write_shape_key(ob, moved)
        scene_io.write_colors(ob, np.full((moved.shape[0], 3), 0.5, np.float32))
        times.append(time.perf_counter() - t0)
    return {"benchmark": "scene_io_100k", "vertices": int(verts.shape[0]), "triangles": int(faces.shape[0]),
            "median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": repeats}


def bench_default_fit(steps: int = 300, size: int = 256, load: int = 0) -> dict:
    import bpy

    from dibr_core.bench import BusyLoad

    from .jobs.fit import FitSettings, run_fit
    from .jobs.threads import fit_threads
    from .scene import default_scene
    from .scene import fit as scene_fit

    folder = tempfile.mkdtemp(prefix="dibr_bench_")
    blend, ref = default_scene.build(folder, size=size)
    bpy.ops.wm.open_mainfile(filepath=blend)
    settings = FitSettings(steps=steps, max_side=size)
    _, mesh, views = scene_fit.gather(bpy.context.scene, None, [(None, ref)], settings)

    def timed() -> tuple:
        t0 = time.perf_counter()
        with fit_threads(interactive=True):
            result = run_fit(mesh, views, settings)
        return time.perf_counter() - t0, result

    total, out = timed()
    row = {"benchmark": "default_fit", "faces": int(mesh.faces.shape[0]), "size": size, "steps": out.steps,
           "seconds": round(total, 2), "ms_per_step": round(1000 * total / max(1, out.steps), 2),
           "silhouette_iou": round(out.views[0]["silhouette_iou"], 4)}
    if load > 0:
        with BusyLoad(load) as busy:
            busy.set(True)
            loaded, _ = timed()
        row.update({"load": load, "loaded_seconds": round(loaded, 2), "loaded_ratio": round(loaded / total, 2)})
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--load", type=int, default=0, help="also time the fit beside N busy processes")
    args = parser.parse_args(argv)
    import torch

    machine = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    print(json.dumps({**bench_scene_io(), "machine": machine}), flush=True)
    if not args.skip_fit:
        print(json.dumps({**bench_default_fit(load=max(0, args.load)), "machine": machine}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
