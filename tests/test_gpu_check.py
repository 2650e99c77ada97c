"""tools/gpu_check.py, the prepared run of the GPU checks: what it writes and how it ends on a
machine without a GPU, and its summary table on recorded bench rows."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(workload: str, backend: str, pas: str, median: float) -> dict:
    return {"workload": workload, "backend": backend, "pass": pas, "median_ms": median, "p90_ms": median * 1.1}


def test_summary_puts_cuda_beside_cpu_and_the_targets(tmp_path: Path) -> None:
    gc = _load()
    rows = [_row("predictor", "cpu", "forward+backward", 9.0), _row("predictor", "cuda", "forward+backward", 0.45),
            _row("fit", "cpu", "forward+backward", 11.0), _row("fit", "cuda", "forward+backward", 0.9),
            _row("huge", "cuda", "forward", 3.0), {"workload": "large", "backend": "cuda", "skipped": "x"}]
    (tmp_path / "bench.log").write_text("".join(json.dumps(r) + "\n" for r in rows))
    check = gc.Check(tmp_path, quick=True, arch=None)
    assert gc.step_summary(check) == {"rc": 0}
    table = (tmp_path / "summary.md").read_text()
    assert "| predictor | forward+backward | 9 | 0.45 | 0.495 | 20x | 0.5 | yes |" in table
    assert "| fit | forward+backward | 11 | 0.9 | 0.99 | 12x | 0.5 | no |" in table
    assert "| huge | forward | - | 3 | 3.3 |  |  |  |" in table
    assert "| large |" not in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run on a machine without a GPU")
def test_without_a_gpu_it_records_the_machine_and_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(out),
                          "--skip", "build", "tests", "bench", "train"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "torch sees no CUDA GPU" in res.stdout
    env = json.loads((out / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["cuda_available"] is False
    records = (out / "summary.md").read_text()
    assert '"skipped": "no CUDA GPU"' in records or '"skipped": "compute-sanitizer is not on PATH"' in records
    assert sorted(p.name for p in out.iterdir()) == ["env.json", "summary.md"]


def test_a_step_past_the_deadline_is_recorded_not_run(tmp_path: Path) -> None:
    gc = _load()
    check = gc.Check(tmp_path, quick=True, arch=None, deadline=10.0)
    with pytest.raises(TimeoutError, match="deadline"):
        check.run("late", [sys.executable, "-c", "print(1)"], "late.log", timeout=60)
    assert not (tmp_path / "late.log").exists()
