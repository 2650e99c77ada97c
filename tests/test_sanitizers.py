"""The C++ kernels under AddressSanitizer and UndefinedBehaviorSanitizer: build them with
`build.py ext --sanitize` and run the kernel, fuzz, bad-input and mesh-repair tests against that build in a
subprocess with the ASan runtime preloaded. Any sanitizer report fails the run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kernels_under_asan_and_ubsan() -> None:
    if os.environ.get("DIBR_SANITIZE") == "1":
        pytest.skip("already running under the sanitizers")
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not available")
    libasan = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    libstdcxx = subprocess.run([cxx, "-print-file-name=libstdc++.so"], capture_output=True, text=True).stdout.strip()
    if not libasan or not Path(libasan).exists():
        pytest.skip("libasan not available")
    build = subprocess.run([sys.executable, str(ROOT / "build.py"), "ext", "--sanitize"], cwd=ROOT,
                           capture_output=True, text=True, timeout=1500)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    # libstdc++ is preloaded too: python itself does not link it, and ASan's C++ exception
    # interceptor needs it present at start-up (else every C++ throw aborts).
    env = dict(os.environ, DIBR_SANITIZE="1",
               LD_PRELOAD=f"{Path(libasan).resolve()} {Path(libstdcxx).resolve()}",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1", PYTHONHASHSEED="0")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                          "tests/test_kernels.py", "tests/test_fuzz.py", "tests/test_bad_input.py",
                          "tests/test_mesh_repair.py",
                          "-k", "not without_compiler"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    out = run.stdout[-4000:] + run.stderr[-4000:]
    assert run.returncode == 0, out
    assert "ERROR: AddressSanitizer" not in out and "runtime error:" not in out, out
    # prove the sanitized build was the one loaded
    probe = subprocess.run([sys.executable, "-c", "import dibr_core; print(dibr_core.backend_info().reason)"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "_build_sanitize" in probe.stdout, probe.stdout + probe.stderr


def test_a_sanitizer_build_keeps_out_of_the_plain_build_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With DIBR_BUILD_DIR set, the sanitizer build goes to a folder of its own inside it, so a
    sanitizer run never replaces the plain module that other processes load from there."""
    from dibr_core import _ext

    monkeypatch.setenv("DIBR_BUILD_DIR", str(tmp_path / "b"))
    monkeypatch.delenv("DIBR_SANITIZE", raising=False)
    assert _ext.default_build_dir() == tmp_path / "b"
    monkeypatch.setenv("DIBR_SANITIZE", "1")
    assert _ext.default_build_dir() == tmp_path / "b" / "_build_sanitize"
    assert (tmp_path / "b" / "_build_sanitize").is_dir()
