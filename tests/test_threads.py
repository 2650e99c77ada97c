"""dibr's CPU thread pool and thread settings: results independent of the kernels' thread count,
the pool survives fork() and does not hold up interpreter exit; the thread-setting API; the
benchmark's busy processes (--load) are always ended."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import dibr_core
from dibr_core import backend, interpolate, rasterize, soft_mask

ROOT = Path(__file__).resolve().parents[1]
HAS_CPP = dibr_core.backend_info().cpu_kernels
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")


def _scene(seed: int, B: int = 3, F: int = 400) -> tuple:
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(B, F, 1, 2, generator=g) * 1.6 - 0.8
    fvi = (centres + (torch.rand(B, F, 3, 2, generator=g) - 0.5) * 0.3).double()
    fvz = -1 - torch.rand(B, F, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 50, (F, 3), generator=g)
    attr = torch.rand(B, 50, 4, generator=g, dtype=torch.float64)
    return fvi, fvz, faces, attr


def _render_grads(fvi: torch.Tensor, fvz: torch.Tensor, faces: torch.Tensor, attr: torch.Tensor) -> list:
    v = fvi.clone().requires_grad_(True)
    a = attr.clone().requires_grad_(True)
    fr = rasterize(v, fvz, 37, 53, backend="cpu")
    out = interpolate(a, fr, faces, backend="cpu")
    sm = soft_mask(v, fr.face_idx, backend="cpu", sigmainv=3000.0, boxlen=0.08, knum=7)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    ((out * w).sum() + (sm * sm).sum()).backward()
    assert v.grad is not None and a.grad is not None
    return [fr.face_idx, fr.bary.detach(), out.detach(), sm.detach(), v.grad, a.grad]


@needs_cpp
def test_results_identical_for_any_kernel_thread_count() -> None:
    scene = _scene(3)
    results = []
    previous = backend.use_threads(1, torch_ops=None)
    try:
        for n in (1, 2, 3, 8, 1):
            backend.set_num_threads(n)
            assert backend.get_num_threads() == n
            results.append(_render_grads(*scene))
    finally:
        backend.restore_threads(previous)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            assert torch.equal(x, y)


@needs_cpp
def test_mesh_queries_identical_for_any_kernel_thread_count() -> None:
    mod = backend.extension()
    assert mod is not None
    g = torch.Generator().manual_seed(5)
    verts = torch.rand(60, 3, generator=g, dtype=torch.float64)
    faces = torch.randint(0, 60, (90, 3), generator=g)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    points = torch.rand(500, 3, generator=g, dtype=torch.float64)
    outs = []
    previous = backend.use_threads(1, torch_ops=None)
    try:
        for n in (1, 4):
            backend.set_num_threads(n)
            outs.append((mod.winding_numbers(verts, faces.contiguous(), points),
                         mod.intersecting_face_pairs(verts, faces.contiguous())))
    finally:
        backend.restore_threads(previous)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


_CHILD = textwrap.dedent("""
    import os, sys, torch
    from dibr_core import backend, rasterize, soft_mask
    backend.set_num_threads(4)
    g = torch.Generator().manual_seed(0)
    fvi = torch.rand(4, 300, 3, 2, generator=g) * 2 - 1
    fvz = -1 - torch.rand(4, 300, 3, generator=g)
    def run():
        fr = rasterize(fvi, fvz, 64, 64, backend="cpu")
        return fr.face_idx, soft_mask(fvi, fr.face_idx, backend="cpu")
    before = run()  # the pool's workers exist now
    MODE
""")


def _run_child(body: str) -> subprocess.CompletedProcess:
    code = _CHILD.replace("MODE", textwrap.dedent(body))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@needs_cpp
def test_pool_after_fork_and_at_exit() -> None:
    # A forked child (as DataLoader workers are) runs the kernels on a fresh pool and exits;
    # the parent keeps using its own pool; nobody hangs at exit.
    res = _run_child("""
pid = os.fork()
if pid == 0:
    after = run()
    ok = all(torch.equal(a, b) for a, b in zip(before, after))
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
again = run()
assert all(torch.equal(a, b) for a, b in zip(before, again))
print("child", os.waitstatus_to_exitcode(status))
""")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "child 0" in res.stdout


@needs_cpp
def test_pool_in_multiprocessing_fork_workers() -> None:
    res = _run_child("""
import multiprocessing as mp
def work(i):
    return [t.sum().item() for t in run()]
with mp.get_context("fork").Pool(2) as p:
    sums = p.map(work, range(4))
ref = [t.sum().item() for t in before]
assert all(s == ref for s in sums), (sums, ref)
print("ok")
""")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ok" in res.stdout


def test_thread_settings_api() -> None:
    assert backend.interactive_threads(1) == 1
    assert backend.interactive_threads(2) == 1
    assert backend.interactive_threads(16) == 15
    assert 1 <= backend.interactive_threads() <= max(1, backend.usable_cores())
    with pytest.raises(ValueError, match=r"interactive_threads\(\): cores must be an int >= 1, got 0"):
        backend.interactive_threads(0)
    with pytest.raises(ValueError, match=r"set_num_threads\(\): n must be an int >= 0, got -1"):
        backend.set_num_threads(-1)
    with pytest.raises(ValueError, match=r"use_threads\(\): torch_ops must be an int >= 1 or None, got 0"):
        backend.use_threads(1, torch_ops=0)
    torch_before = torch.get_num_threads()
    kernels_before = backend.get_num_threads()
    with backend.threads(3, torch_ops=1) as previous:
        assert previous.torch_ops == torch_before
        assert torch.get_num_threads() == 1
        assert backend.get_num_threads() == (3 if HAS_CPP else 1)
    assert torch.get_num_threads() == torch_before
    assert backend.get_num_threads() == kernels_before


def _busy_children(parent: int) -> list:
    """PIDs of the benchmark's busy processes started by ``parent``, from /proc."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"getppid" in cmd:
            found.append(int(d.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_busy_load_always_ends_its_processes() -> None:
    from dibr_core.bench import BusyLoad

    with BusyLoad(2) as load:
        assert len(_busy_children(os.getpid())) == 2
        load.set(True)
        load.set(False)
    assert _busy_children(os.getpid()) == []
    with pytest.raises(RuntimeError, match="boom"):
        with BusyLoad(1):
            assert len(_busy_children(os.getpid())) == 1
            raise RuntimeError("boom")
    assert _busy_children(os.getpid()) == []


@needs_cpp
def test_bench_load_rows_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    from dibr_core.bench import load_table, main

    assert main(["--workload", "predictor", "--backend", "cpu", "--pass", "forward", "--repeats", "2",
                 "--in-process", "--load", "1"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [(r["load"], r["repeats"]) for r in rows] == [(0, 2), (1, 2)]
    assert all(0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"] for r in rows)
    assert all(r["machine"]["torch_threads"] == 1 and r["machine"]["kernel_threads"] >= 1 for r in rows)
    table = load_table(rows)
    assert captured.err.strip() == table
    line = table.splitlines()[2].split("|")
    assert [c.strip() for c in line[1:5]] == ["predictor", "cpu", "forward", "1"]
    assert float(line[7]) == pytest.approx(rows[1]["median_ms"] / rows[0]["median_ms"], abs=0.006)
    assert _busy_children(os.getpid()) == []
