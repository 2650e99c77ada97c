"""Benchmark of the DIB-R kernels: one JSON line per (workload, backend, pass).

    python -m dibr_core.bench [--workload predictor fit large huge] [--backend reference cpu cuda]
                              [--pass forward backward] [--repeats N] [--load N]
                              [--threads N] [--torch-threads N]

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

Threads: the C++ kernels use all usable cores (``--threads``). For the kernel workloads on the
compiled backends, torch's own ops (camera, gathers, loss, their backward) run on one thread
(``--torch-threads``, 0 for torch's default), the setting ``dibr_core.backend.use_threads``
recommends for rendering loops on small images; the reference backend (all torch) and the model
workloads (networks) keep torch's default. Rows record both counts under ``machine``.

``--load N`` measures each pass twice in the same process, on a quiet machine and beside N busy
processes (``while True: pass``, started and always stopped by the benchmark), in alternating
blocks of repeats so that drift of the machine affects both alike. It prints a row per load
(``"load": 0`` and ``"load": N``) and, at the end, a table of the loaded medians and 90th
percentiles next to the quiet ones with their ratios (on stderr, so stdout stays JSON lines).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Callable, Dict, List, Optional, Tuple, Type

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


# A busy process: one core's worth of Python bytecode until its parent is gone (so that even a
# benchmark killed with SIGKILL leaves no busy loop behind for more than a fraction of a second).
_BUSY_LOOP = """
import os, sys
parent = int(sys.argv[1])
try:  # Linux: die with the parent even if it cannot clean up (SIGKILL)
    import ctypes
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except Exception:
    pass
sys.stdout.write("r")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""


class BusyLoad:
    """Context manager owning ``n`` busy processes (one ``while True: pass`` each).

    They start paused; :meth:`set` resumes (``SIGCONT``) or pauses (``SIGSTOP``) them, so that
    quiet and loaded blocks can alternate without process start-up in between. Leaving the
    context always ends them (also on errors and Ctrl-C), and they end by themselves when the
    process that started them is gone.
    """

    SETTLE_S = 0.05  # after resuming, the busy loops get this long to be running everywhere

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: List[subprocess.Popen] = []
        self.running = False

    def __enter__(self) -> "BusyLoad":
        try:
            for _ in range(self.n):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-c", _BUSY_LOOP, str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            for p in self.procs:  # each writes one byte when its loop starts
                assert p.stdout is not None
                if p.stdout.read(1) != b"r":
                    raise RuntimeError("BusyLoad: a busy process failed to start")
            self.running = True
            self.set(False)
        except BaseException:
            self.close()
            raise
        return self

    def set(self, running: bool) -> None:
        """Resume (True) or pause (False) the busy processes."""
        if running == self.running:
            return
        for p in self.procs:
            p.send_signal(signal.SIGCONT if running else signal.SIGSTOP)
        self.running = running
        if running:
            time.sleep(self.SETTLE_S)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()  # SIGKILL also ends a paused process
        for p in self.procs:
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs = []
        self.running = False

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


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


def thread_plan(workload: str, backend: str, threads: Optional[int] = None,
                torch_threads: Optional[int] = None) -> Tuple[int, Optional[int]]:
    """(threads of the C++ kernels, torch's intra-op threads or None to keep torch's default)
    for one configuration: by default the kernels use all usable cores and, for the kernel
    workloads on the compiled backends, torch's own ops one thread, the setting that
    ``dibr_core.backend.use_threads`` recommends for rendering loops on small images. The
    reference backend (all torch) and the model workloads (networks) keep torch's default."""
    from dibr_core.backend import usable_cores

    kernels = threads if threads else usable_cores()
    if torch_threads is None:
        return kernels, (1 if backend != "reference" and workload in WORKLOADS else None)
    return kernels, (torch_threads if torch_threads > 0 else None)


def measure(workload: str, backend: str, passes: List[str], repeats: Optional[int], load: int = 0,
            threads: Optional[int] = None, torch_threads: Optional[int] = None) -> List[dict]:
    """Rows of one (workload, backend): one per pass, two with ``load`` (quiet and loaded)."""
    from dibr_core.backend import threads as thread_settings

    kernels, torch_ops = thread_plan(workload, backend, threads, torch_threads)
    with thread_settings(kernels, torch_ops):
        if workload not in MODEL_WORKLOADS:
            return _measure(workload, backend, passes, repeats, load)
        # The models are torch code; the backend chooses how the mesh repair's queries run.
        saved = os.environ.get("DIBR_BACKEND")
        os.environ["DIBR_BACKEND"] = "reference" if backend == "reference" else "auto"
        try:
            return _measure(workload, backend, passes, repeats, load)
        finally:
            if saved is None:
                del os.environ["DIBR_BACKEND"]
            else:
                os.environ["DIBR_BACKEND"] = saved


def summarize(times: List[float]) -> Dict[str, float]:
    """Median, quartiles, 90th percentile, min, mean and max (ms) of a list of timings (ms)."""
    t = sorted(times)
    n = len(t)
    return {
        "median_ms": round(statistics.median(t), 3),
        "q1_ms": round(t[n // 4], 3),
        "q3_ms": round(t[(3 * n) // 4], 3),
        "p90_ms": round(t[(9 * n) // 10], 3),
        "min_ms": round(t[0], 3),
        "mean_ms": round(statistics.fmean(t), 3),
        "max_ms": round(t[-1], 3),
    }


def time_runs(run: Callable[[], None], n: int, load: Optional[BusyLoad] = None,
              block: int = 5) -> Tuple[List[float], List[float]]:
    """Timings (ms) of ``n`` calls of ``run`` on a quiet machine and, with ``load``, of ``n``
    more beside its busy processes, in alternating blocks of ``block`` calls."""
    quiet: List[float] = []
    loaded: List[float] = []
    phases = ((False, quiet), (True, loaded)) if load is not None else ((False, quiet),)
    if load is None:
        block = n
    try:
        while any(len(out) < n for _, out in phases):
            for busy, out in phases:
                if load is not None:
                    load.set(busy)
                for _ in range(min(block, n - len(out))):
                    t0 = time.perf_counter()
                    run()
                    out.append((time.perf_counter() - t0) * 1000)
    finally:
        if load is not None:
            load.set(False)
    return quiet, loaded


def _measure(workload: str, backend: str, passes: List[str], repeats: Optional[int], load: int = 0) -> List[dict]:
    import dibr_core

    device = torch.device("cuda" if backend == "cuda" else "cpu")
    if workload in MODEL_WORKLOADS:
        run = make_model_case(workload)
        passes = ["forward"]
    else:
        run = make_case(workload, backend, device)
    rows = []
    busy = BusyLoad(load) if load > 0 else None
    with busy if busy is not None else contextlib.nullcontext():
        for p in passes:
            bwd = p == "backward"
            run(bwd)  # warm-up (JIT caches, allocator)
            t0 = time.perf_counter()
            run(bwd)
            one = time.perf_counter() - t0
            n = repeats if repeats is not None else max(3, min(50, int(2.0 / max(one, 1e-4))))
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            quiet, loaded = time_runs(lambda: run(bwd), n, busy)
            peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            for n_busy, times in ((0, quiet), (load, loaded)) if busy is not None else ((0, quiet),):
                rows.append({
                    "workload": workload,
                    "backend": backend,
                    "pass": "forward" if not bwd else "forward+backward",
                    **summarize(times),
                    "repeats": n,
                    "load": n_busy,
                    "peak_memory_mb": round(peak, 1),
                    "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
                    "machine": {
                        "cpu": _cpu_model(),
                        "cpu_cores": os.cpu_count(),
                        "torch_threads": torch.get_num_threads(),
                        "kernel_threads": dibr_core.backend.get_num_threads(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    },
                    "versions": {"dibr_core": dibr_core.__version__, "torch": torch.__version__,
                                 "python": platform.python_version()},
                })
    return rows


def load_table(rows: List[dict]) -> str:
    """Markdown table of the loaded rows next to the quiet ones (medians and 90th percentiles,
    ms) with their ratios, and the reference's time over this backend's where both ran."""
    quiet = {(r["workload"], r["backend"], r["pass"]): r for r in rows if r.get("load") == 0 and "median_ms" in r}
    lines = ["| workload | backend | pass | load | quiet median | loaded median | ratio | quiet p90 | loaded p90 "
             "| ratio | reference / this, quiet / loaded |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        key = (r.get("workload"), r.get("backend"), r.get("pass"))
        q = quiet.get(key)
        if not r.get("load") or q is None:
            continue
        ref_q = quiet.get((key[0], "reference", key[2]))
        ref_l = next((x for x in rows if x.get("load") == r["load"] and "median_ms" in x
                      and (x["workload"], x["backend"], x["pass"]) == (key[0], "reference", key[2])), None)
        vs_ref = (f"{ref_q['median_ms'] / q['median_ms']:.0f}x / {ref_l['median_ms'] / r['median_ms']:.0f}x"
                  if ref_q is not None and ref_l is not None and key[1] != "reference" else "")
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {r['load']} | {q['median_ms']:.1f} | {r['median_ms']:.1f} "
                     f"| {r['median_ms'] / q['median_ms']:.2f} | {q['p90_ms']:.1f} | {r['p90_ms']:.1f} "
                     f"| {r['p90_ms'] / q['p90_ms']:.2f} | {vs_ref} |")
    return "\n".join(lines)


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


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
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="also measure beside N busy processes (started and stopped here); print both and ratios")
    parser.add_argument("--threads", type=int, default=0, metavar="N",
                        help="threads of the C++ kernels (default: all usable cores)")
    parser.add_argument("--torch-threads", type=int, default=None, metavar="N",
                        help="torch's intra-op threads, 0: torch's default (default: 1 for the kernel workloads on "
                             "the compiled backends, as dibr_core.backend.use_threads recommends; else torch's)")
    args = parser.parse_args(argv)
    if args.load < 0 or args.threads < 0 or (args.torch_threads or 0) < 0:
        parser.error("--load, --threads and --torch-threads must be >= 0")
    rows: List[dict] = []
    # SIGTERM ends the run through the normal exit path, so that the busy processes are ended.
    restore = (signal.signal(signal.SIGTERM, _raise_on_sigterm)
               if args.load and threading.current_thread() is threading.main_thread() else None)
    try:
        _run_all(args, rows)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)
    if args.load:
        print(load_table(rows), file=sys.stderr, flush=True)
    return 0


def _run_all(args: argparse.Namespace, rows: List[dict]) -> None:
    """Measure every (workload, backend) of ``args``; print the rows and append them to ``rows``."""
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
                for row in measure(w, b, args.passes, args.repeats, args.load, args.threads, args.torch_threads):
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                continue
            cmd = [sys.executable, "-m", "dibr_core.bench", "--in-process", "--workload", w, "--backend", b,
                   "--pass", *args.passes, "--load", str(args.load)]
            if args.repeats is not None:
                cmd += ["--repeats", str(args.repeats)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.torch_threads is not None:
                cmd += ["--torch-threads", str(args.torch_threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(json.dumps({"workload": w, "backend": b, "error": out.stderr.strip().splitlines()[-1:]}),
                      flush=True)
                continue
            # The child prints only JSON lines on stdout (its table goes to stderr and is dropped).
            rows += [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            sys.stdout.write(out.stdout)
            sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
