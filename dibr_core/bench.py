"""Benchmark of the DIB-R kernels: one JSON line per (workload, backend, pass).

    python -m dibr_core.bench [--workload predictor fit large huge] [--backend reference cpu cuda]
                              [--pass forward backward] [--repeats N]

Workloads (icospheres, each mesh of a batch seen from its own camera, filling about half of
the image):
  predictor  B=16, 642 vertices / 1280 faces, 64x64
  fit        B=1, 10242 vertices / 20480 faces, 256x256
  large      B=1, 40962 vertices / 81920 faces, 512x512
  huge       B=1, 655362 vertices / 1310720 faces, 1024x1024 (GPU only)
Model workloads (CPU, forward only, shipped weights; batch 1, as an artist's click or a
pipeline's per-item call uses them):
  inference  image -> textured mesh: framing a 64x64 RGBA render + the predictor + the repair
  generate   one textured object of the class-conditional generator (sampling, decoding and
             the repair of inside-out pockets), cycling through the 13 categories
  Both include mesh_repair's queries: backend ``cpu`` runs them in the C++ kernels,
  ``reference`` in torch.
  remesh     one remesh round (dibr_core.remesh, numpy, so measured once, on the reference row)
             of a 5120-face icosphere jittered by 0.2 edge lengths, at its own edge length
Passes: ``forward`` (projection, rasterize, soft mask, interpolated RGB) and ``backward``
(the same plus the backward of an L2 loss to the vertices and the vertex colours).
Each (workload, backend) runs in its own process so the reported peak memory is its own.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

WORKLOADS: Dict[str, Tuple[int, int, int]] = {
    # name: (batch, icosphere level, image size)
    "predictor": (16, 3, 64),
    "fit": (1, 5, 256),
    "large": (1, 6, 512),
    "huge": (1, 8, 1024),
}
GPU_ONLY = {"huge"}
MODEL_WORKLOADS = ("inference", "generate", "remesh")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_model_case(workload: str) -> Callable[[bool], None]:
    """Closure running one batch-1 call of a shipped model (see the module docstring)."""
    if workload == "inference":
        from dibr_core.data.dataset import make_item
        from dibr_core.inference import load_shipped_predictor, predict_mesh

        model = load_shipped_predictor()
        image = make_item("chair", "test", 0, n_views=1)["images"][0]

        def run_inference(backward: bool) -> None:
            predict_mesh(image, model=model)

        return run_inference
    if workload == "generate":
        from dibr_core.inference import load_shipped_generator

        gen = load_shipped_generator()
        counter = [0]

        def run_generate(backward: bool) -> None:
            counter[0] += 1
            gen.sample(gen.categories[counter[0] % len(gen.categories)], 1, seed=counter[0])

        return run_generate
    if workload == "remesh":
        from dibr_core.mesh import icosphere, mesh_edges
        from dibr_core.remesh import remesh

        v, f, _ = icosphere(4, dtype=torch.float64)
        e = mesh_edges(f)
        length = float((v[e[:, 0]] - v[e[:, 1]]).norm(dim=1).mean())
        jittered = v + 0.2 * length * torch.randn(v.shape, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64)

        def run_remesh(backward: bool) -> None:
            remesh(jittered, f, length, iterations=1)

        return run_remesh
    raise ValueError(f"make_model_case(): unknown workload {workload!r}")


def make_case(workload: str, backend: str, device: torch.device) -> Callable[[bool], None]:
    """Build the inputs once; return a closure running one forward (+ backward) pass."""
    from dibr_core import interpolate, rasterize, soft_mask
    from dibr_core.camera import Camera, clip_to_ndc, look_at
    from dibr_core.mesh import gather_faces_unchecked, icosphere

    B, level, size = WORKLOADS[workload]
    v, f, _ = icosphere(level, 1.0, device=device)
    g = torch.Generator().manual_seed(0)
    verts = v[None].expand(B, -1, -1).contiguous()
    colors = torch.rand(B, v.shape[0], 3, generator=g).to(device)
    eyes = torch.tensor([[3.0 * math.sin(0.4 * b), 0.8, 3.0 * math.cos(0.4 * b)] for b in range(B)])
    cam = Camera.perspective(look_at(eyes, device=device).to(device), math.radians(45), 1.0)
    target_rgb = torch.rand(B, size, size, 3, generator=g).to(device)
    target_a = (torch.rand(B, size, size, generator=g) > 0.5).float().to(device)
    faces = f.to(device)

    def run(backward: bool) -> None:
        vv = verts.detach().requires_grad_(backward)
        cc = colors.detach().requires_grad_(backward)
        clip = cam.to_clip(cam.to_camera(vv))
        ndc = clip_to_ndc(clip)
        fvi = gather_faces_unchecked(ndc[..., :2], faces)
        fvz = gather_faces_unchecked(clip[..., 3:], faces)[..., 0].neg()
        e1 = fvi[:, :, 1] - fvi[:, :, 0]
        e2 = fvi[:, :, 2] - fvi[:, :, 0]
        front = (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) > 0
        frags = rasterize(fvi, fvz.detach(), size, size, front, backend=backend)
        rgb = interpolate(cc, frags, faces, backend=backend)
        alpha = soft_mask(fvi, frags.face_idx, backend=backend)
        if backward:
            loss = ((rgb - target_rgb) ** 2).mean() + ((alpha - target_a) ** 2).mean()
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def measure(workload: str, backend: str, passes: List[str], repeats: Optional[int]) -> List[dict]:
    if workload not in MODEL_WORKLOADS:
        return _measure(workload, backend, passes, repeats)
    # The models are torch code; the backend chooses how the mesh repair's queries run.
    saved = os.environ.get("DIBR_BACKEND")
    os.environ["DIBR_BACKEND"] = "reference" if backend == "reference" else "auto"
    try:
        return _measure(workload, backend, passes, repeats)
    finally:
        if saved is None:
            del os.environ["DIBR_BACKEND"]
        else:
            os.environ["DIBR_BACKEND"] = saved


def _measure(workload: str, backend: str, passes: List[str], repeats: Optional[int]) -> List[dict]:
    import dibr_core

    device = torch.device("cuda" if backend == "cuda" else "cpu")
    if workload in MODEL_WORKLOADS:
        run = make_model_case(workload)
        passes = ["forward"]
    else:
        run = make_case(workload, backend, device)
    rows = []
    for p in passes:
        bwd = p == "backward"
        run(bwd)  # warm-up (JIT caches, allocator)
        t0 = time.perf_counter()
        run(bwd)
        one = time.perf_counter() - t0
        n = repeats if repeats is not None else max(3, min(50, int(2.0 / max(one, 1e-4))))
        times = []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(n):
            t0 = time.perf_counter()
            run(bwd)
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        q1 = times[len(times) // 4]
        q3 = times[(3 * len(times)) // 4]
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        rows.append({
            "workload": workload,
            "backend": backend,
            "pass": "forward" if not bwd else "forward+backward",
            "median_ms": round(statistics.median(times), 3),
            "q1_ms": round(q1, 3),
            "q3_ms": round(q3, 3),
            "min_ms": round(times[0], 3),
            "mean_ms": round(statistics.fmean(times), 3),
            "max_ms": round(times[-1], 3),
            "repeats": n,
            "peak_memory_mb": round(peak, 1),
            "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
            "machine": {
                "cpu": _cpu_model(),
                "cpu_cores": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            },
            "versions": {"dibr_core": dibr_core.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        })
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", nargs="+", default=["predictor", "fit", "large", "huge", *MODEL_WORKLOADS],
                        choices=[*WORKLOADS, *MODEL_WORKLOADS])
    parser.add_argument("--backend", nargs="+", default=["reference", "cpu", "cuda"],
                        choices=["reference", "cpu", "cuda"])
    parser.add_argument("--pass", dest="passes", nargs="+", default=["forward", "backward"],
                        choices=["forward", "backward"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default: about 2 s worth)")
    parser.add_argument("--in-process", action="store_true", help="do not spawn a process per configuration")
    args = parser.parse_args(argv)
    import dibr_core

    info = dibr_core.backend_info()
    for w in args.workload:
        for b in args.backend:
            skip = None
            if b == "cuda" and not info.cuda_kernels:
                skip = "no CUDA GPU or CUDA kernels"
            elif b != "cuda" and w in GPU_ONLY:
                skip = "GPU-only workload"
            elif w in MODEL_WORKLOADS and b == "cuda":
                skip = "model workloads run on the CPU (reference: torch mesh queries; cpu: the C++ ones)"
            elif w == "remesh" and b != "reference":
                skip = "remesh is numpy code: measured once, on the reference row"
            elif b == "cpu" and not info.cpu_kernels:
                skip = "C++ kernels unavailable: " + info.reason
            if skip:
                print(json.dumps({"workload": w, "backend": b, "skipped": skip}), flush=True)
                continue
            if args.in_process:
                for row in measure(w, b, args.passes, args.repeats):
                    print(json.dumps(row), flush=True)
                continue
            cmd = [sys.executable, "-m", "dibr_core.bench", "--in-process", "--workload", w, "--backend", b,
                   "--pass", *args.passes]
            if args.repeats is not None:
                cmd += ["--repeats", str(args.repeats)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(json.dumps({"workload": w, "backend": b, "error": out.stderr.strip().splitlines()[-1:]}),
                      flush=True)
                continue
            sys.stdout.write(out.stdout)
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
