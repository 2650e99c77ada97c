"""Every GPU check of the CUDA kernels in one run, for a machine with an NVIDIA GPU.

    python3 tools/gpu_check.py --out DIR [--quick] [--arch 9.0] [--skip STEP ...] [--deadline S]

Run it with a CUDA build of torch that has ``ninja``, ``pytest``, ``hypothesis``, ``numpy``,
``pillow`` and ``tqdm`` beside it (any recent torch: the extension is built for it here, into a
build folder of its own, so the project's CPU build in ``dibr_core/_build`` is left alone). It
needs no network. Steps, each under a time limit and all of them inside ``--deadline`` seconds
(default 540, so that a device command of 10 minutes ends with its summary written); a failing
step is recorded and the next runs:

    env       the card, driver, torch, CUDA, nvcc and Python versions      -> env.json
    build     the extension with its CUDA kernels for the card's arch       -> build.log
    tests     tests/test_cuda.py and the GPU training test (pytest)        -> tests.log
    sanitize  compute-sanitizer memcheck and racecheck over one small case  -> sanitize.log
    bench     python -m dibr_core.bench, kernel workloads, cpu and cuda,
              plus the reference path on the predictor workload             -> bench.log
    train     a short predictor training run on the CPU and on the GPU     -> train.json
    summary   the figures beside the GPU issue's targets                    -> summary.md

At most 7 files are written to ``--out``. ``--quick`` shortens the bench and the training
(for trying the script on a CPU-only machine, where the GPU steps report that they were skipped).
The exit status is 1 when a step failed, else 2 when torch sees no CUDA GPU (the GPU checks did
not run), else 0.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["env", "build", "tests", "sanitize", "bench", "train", "summary"]
# The GPU issue's targets, forward + backward on an H100/H200-class card (ms).
TARGETS_MS = {"predictor": 0.5, "fit": 0.5, "large": 5.0}

# One small case per op, forward and backward, for compute-sanitizer (run as a script).
SANITIZE_CASE = """
import torch
from dibr_core import interpolate, rasterize, soft_mask
from dibr_core.ops import set_deterministic
g = torch.Generator().manual_seed(0)
B, F, S = 2, 300, 48
fvi = ((torch.rand(B, F, 1, 2, generator=g) * 2 - 1) * 1.1
       + (torch.rand(B, F, 3, 2, generator=g) - 0.5) * 0.4).cuda().requires_grad_()
fvz = -(torch.rand(B, F, 3, generator=g) * 4 + 1).cuda()
valid = (torch.rand(B, F, generator=g) > 0.15).cuda()
faces = torch.randint(0, 200, (F, 3), generator=g).cuda()
colors = torch.rand(B, 200, 3, generator=g).cuda().requires_grad_()
for det in (False, True):
    set_deterministic(det)
    frags = rasterize(fvi, fvz, S, S, valid, backend="cuda")
    rgb = interpolate(colors, frags, faces, backend="cuda")
    alpha = soft_mask(fvi, frags.face_idx, backend="cuda")
    (rgb.square().sum() + alpha.square().sum()).backward()
torch.cuda.synchronize()
print("sanitize case ran", float(fvi.grad.abs().sum()), float(colors.grad.abs().sum()))
"""


class Check:
    """The run's state: the output folder, the environment every step runs with, and the steps' records."""

    def __init__(self, out: Path, quick: bool, arch: Optional[str], deadline: float = 540.0) -> None:
        self.out = out
        self.end = time.monotonic() + deadline
        self.quick = quick
        self.arch = arch
        self.build_dir = Path(tempfile.gettempdir()) / "dibr_gpu_check_build"
        self.env = dict(os.environ, DIBR_BUILD_DIR=str(self.build_dir), PYTHONUNBUFFERED="1",
                        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.records: Dict[str, dict] = {}
        import torch

        self.cuda = torch.cuda.is_available()

    def limit(self, seconds: float) -> int:
        """``seconds``, cut to what is left before the deadline (keeping 15 s for the summary)."""
        left = self.end - time.monotonic() - 15
        if left < 5:
            raise TimeoutError("no time left before the deadline")
        return int(min(seconds, left))

    def run(self, name: str, cmd: List[str], log: str, timeout: int, append: bool = False) -> dict:
        """Run ``cmd`` in the repository root under ``timeout`` seconds (cut to the deadline);
        its output goes to ``out/log``. Returns the record."""
        timeout = self.limit(timeout)
        t0 = time.perf_counter()
        with open(self.out / log, "a" if append else "w") as fh:
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                    timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = 124
                fh.write(f"\n[gpu_check] {name}: stopped after its {timeout} s limit\n")
        rec = {"rc": rc, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"[gpu_check] {name}: rc {rc} in {rec['seconds']} s", flush=True)
        return rec


def gpu_arch() -> Optional[str]:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}"


def step_env(c: Check) -> dict:
    import torch

    info: dict = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available(), "cpu_cores": os.cpu_count()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, capability=gpu_arch(), gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count)
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
                           capture_output=True, text=True)
        info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    sys.path.insert(0, str(ROOT))
    from dibr_core import _ext

    nvcc = _ext.find_nvcc()
    info["nvcc"] = nvcc
    if nvcc:
        v = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
        info["nvcc_version"] = v[-1] if v else ""
    sanitizer = shutil.which("compute-sanitizer")
    info["compute_sanitizer"] = sanitizer
    (c.out / "env.json").write_text(json.dumps(info, indent=1) + "\n")
    print("[gpu_check] env:", json.dumps(info), flush=True)
    c.cuda = bool(info["cuda_available"])
    return {"rc": 0, **{k: info.get(k) for k in ("gpu", "torch", "torch_cuda", "nvcc_version")}}


def step_build(c: Check) -> dict:
    arch = c.arch or gpu_arch() or "9.0"
    c.env["TORCH_CUDA_ARCH_LIST"] = arch
    c.env.setdefault("MAX_JOBS", str(os.cpu_count() or 2))
    code = ("import json, dibr_core\n"
            "from dibr_core import _ext\n"
            "m = _ext.build(verbose=True)\n"
            "info = dibr_core.backend_info()\n"
            "print('BUILD', json.dumps({'with_cuda': bool(m.with_cuda()), 'cuda_kernels': info.cuda_kernels}))\n"
            "raise SystemExit(0 if m.with_cuda() else 3)\n")
    rec = c.run("build", [sys.executable, "-c", code], "build.log", timeout=360)
    rec["arch"] = arch
    return rec


def step_tests(c: Check) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py",
           "tests/test_predictor.py::test_cuda_training_matches_cpu_training",
           "tests/test_predictor.py::test_training_device_is_checked"]
    rec = c.run("tests", cmd, "tests.log", timeout=240)
    tail = (c.out / "tests.log").read_text().strip().splitlines()[-1:]
    rec["result"] = tail[0] if tail else ""
    return rec


def step_sanitize(c: Check) -> dict:
    sanitizer = shutil.which("compute-sanitizer")
    if sanitizer is None:
        return {"rc": 0, "skipped": "compute-sanitizer is not on PATH"}
    if not c.cuda:
        return {"rc": 0, "skipped": "no CUDA GPU"}
    case = Path(tempfile.gettempdir()) / "dibr_sanitize_case.py"
    case.write_text(SANITIZE_CASE)
    rec: dict = {"rc": 0}
    for i, tool in enumerate(("memcheck", "racecheck")):
        r = c.run(f"sanitize {tool}", [sanitizer, "--tool", tool, "--error-exitcode", "9",
                                       sys.executable, str(case)], "sanitize.log", timeout=120, append=i > 0)
        rec[tool] = r["rc"]
        rec["rc"] = rec["rc"] or r["rc"]
    return rec


def step_bench(c: Check) -> dict:
    workloads = ["predictor", "fit"] if c.quick else ["predictor", "fit", "large", "huge"]
    runs = [["--workload", *workloads, "--backend", "cpu", "cuda"],
            ["--workload", "predictor", "--backend", "reference", "--repeats", "2"]]
    if c.quick:
        runs[0] += ["--repeats", "5"]
    rec: dict = {"rc": 0}
    for i, args in enumerate(runs):
        r = c.run(f"bench {args[-1]}", [sys.executable, "-m", "dibr_core.bench", *args], "bench.log", timeout=240,
                  append=i > 0)
        rec["rc"] = rec["rc"] or r["rc"]
    rec["rows"] = len([r for r in _bench_rows(c.out) if "median_ms" in r])
    print(f"[gpu_check] bench: {rec['rows']} rows", flush=True)
    return rec


def _bench_rows(out: Path) -> List[dict]:
    """The JSON rows of ``out/bench.log`` (its other lines are the commands and their messages)."""
    log = out / "bench.log"
    return [json.loads(ln) for ln in log.read_text().splitlines() if ln.startswith("{")] if log.exists() else []


def step_train(c: Check) -> dict:
    steps = 6 if c.quick else 60
    per_category = 2 if c.quick else 8
    data = Path(tempfile.gettempdir()) / "dibr_gpu_check_data"
    code = f"""
import json, sys, tempfile, time
from pathlib import Path
import torch
from dibr_core.data.dataset import generate
from dibr_core.train.predictor import train
data = Path({str(data)!r})
if not (data / "train").exists():
    generate(data, "train", per_category={per_category}, n_views=24, size=64, progress=False)
result = {{"steps": {steps}, "batch": 8, "views": 2, "image_size": 64}}
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
for dev in devices:
    with tempfile.TemporaryDirectory() as run:
        train(data, run, steps=2, batch=8, views=2, lr=1e-4, seed=0, progress=False, device=dev)  # warm-up
        t0 = time.perf_counter()
        res = train(data, Path(run) / "timed", steps={steps}, batch=8, views=2, lr=1e-4, seed=0, progress=False,
                    device=dev, log_every=10, ckpt_every=10**9)
        sec = time.perf_counter() - t0
    result[dev] = {{"steps_per_second": round({steps} / sec, 2), "ms_per_step": round(1000 * sec / {steps}, 1),
                    "last_loss": round(res.last_loss, 5), "torch_threads": torch.get_num_threads()}}
if "cuda" in result:
    result["gpu_over_cpu"] = round(result["cuda"]["steps_per_second"] / result["cpu"]["steps_per_second"], 1)
print("TRAIN", json.dumps(result))
"""
    rec = c.run("train", [sys.executable, "-c", code], "train.json", timeout=240)
    text = (c.out / "train.json").read_text()
    line = next((ln for ln in text.splitlines() if ln.startswith("TRAIN ")), None)
    if line is not None:
        result = json.loads(line[len("TRAIN "):])
        (c.out / "train.json").write_text(json.dumps(result, indent=1) + "\n")
        rec["result"] = result
    elif rec["rc"] == 0:
        rec["rc"] = 1
    return rec


def _ms(row: Optional[dict], key: str) -> str:
    return "-" if row is None else f"{row[key]:.3g}"


def step_summary(c: Check) -> dict:
    lines = ["# GPU check", "", "```", json.dumps({k: v for k, v in c.records.items()}, indent=1), "```", ""]
    timed = {(r["workload"], r["backend"], r["pass"]): r for r in _bench_rows(c.out) if "median_ms" in r}
    if timed:
        lines += ["| workload | pass | cpu median (ms) | cuda median (ms) | cuda p90 (ms) | cpu / cuda | target | met |",
                  "|---|---|---|---|---|---|---|---|"]
        for w in ("predictor", "fit", "large", "huge"):
            for p in ("forward", "forward+backward"):
                cpu, gpu = timed.get((w, "cpu", p)), timed.get((w, "cuda", p))
                if cpu is None and gpu is None:
                    continue
                target = TARGETS_MS.get(w) if p == "forward+backward" else None
                ratio = f"{cpu['median_ms'] / gpu['median_ms']:.0f}x" if cpu and gpu else ""
                met = "" if target is None or gpu is None else ("yes" if gpu["median_ms"] <= target else "no")
                lines.append(f"| {w} | {p} | {_ms(cpu, 'median_ms')} | {_ms(gpu, 'median_ms')} | {_ms(gpu, 'p90_ms')} "
                             f"| {ratio} | {target if target else ''} | {met} |")
    (c.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    return {"rc": 0}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python3 tools/gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for the step's files (created)")
    p.add_argument("--quick", action="store_true", help="a short bench and training run (trying the script out)")
    p.add_argument("--arch", default=None, help="TORCH_CUDA_ARCH_LIST (default: the visible card's, else 9.0)")
    p.add_argument("--skip", nargs="*", default=[], choices=STEPS, help="steps to leave out")
    p.add_argument("--deadline", type=float, default=540.0, help="seconds for all the steps together")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    c = Check(a.out, a.quick, a.arch, a.deadline)
    funcs = {"env": step_env, "build": step_build, "tests": step_tests, "sanitize": step_sanitize,
             "bench": step_bench, "train": step_train, "summary": step_summary}
    for name in STEPS:
        if name in a.skip:
            continue
        try:
            c.records[name] = funcs[name](c)
        except Exception as exc:  # noqa: BLE001 - a broken step is recorded; the next one runs
            c.records[name] = {"rc": 1, "error": f"{type(exc).__name__}: {exc}"}
            print(f"[gpu_check] {name}: {type(exc).__name__}: {exc}", flush=True)
    failed = [k for k, v in c.records.items() if v.get("rc")]
    print(f"[gpu_check] done; failed steps: {failed or 'none'}", flush=True)
    if failed:
        return 1
    if not c.cuda:
        print("[gpu_check] torch sees no CUDA GPU: the GPU checks did not run", flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
