#!/usr/bin/env python3
"""Project tasks. Each sets up the pinned environment `.venv/` first (creating or reusing it).

    python3 build.py demo            # the main job: fit a sphere to a Cycles render of the default scene
    python3 build.py test            # the whole test suite (and mypy), then the float-sensitive tests
                                     # again under two other CPU code paths (--no-code-paths skips them)
    python3 build.py ext [--sanitize]  # build the C++ kernels ahead of time (ninja + torch cpp_extension)
    python3 build.py package [--platform linux-x64|windows-x64|macos-arm64|macos-x64 ...]
                                     # Blender extension zips in dist/ (tools/package.py --help)

Only the standard library is used until the environment exists; the tasks then re-run
inside `.venv/bin/python`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
STAMP = VENV / ".dibr-installed"
# Shared libraries the bpy module links against (present on most desktops; installed on bare servers).
APT_PACKAGES = ["libx11-6", "libxrender1", "libxfixes3", "libxi6", "libxkbcommon0", "libsm6", "libice6",
                "libgl1", "libegl1", "libxxf86vm1"]
SYSTEM_LIBS = ["libX11.so.6", "libXrender.so.1", "libXfixes.so.3", "libXi.so.6", "libxkbcommon.so.0",
               "libSM.so.6", "libICE.so.6", "libGL.so.1"]


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def run(cmd: list, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], check=True, **kw)


def find_python311() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    for name in ("python3.11",):
        exe = shutil.which(name)
        if exe:
            return exe
    sys.exit("build.py: Python 3.11 is required (bpy 5.0.1 ships only for CPython 3.11)")


def ensure_system_libs() -> None:
    """Install the X11/GL client libraries bpy needs when they are missing (root + apt only)."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        return
    missing = [lib for lib in SYSTEM_LIBS if lib not in listing]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        log(f"warning: missing system libraries {missing}; bpy may not import")
        return
    log(f"installing system libraries for bpy: {missing}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *APT_PACKAGES], check=False, env=env)


def requirements_hash() -> str:
    h = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        h.update((ROOT / name).read_bytes())
    return h.hexdigest()


def ensure_venv() -> None:
    """Create or reuse .venv with the pinned requirements and the project in editable mode."""
    ensure_system_libs()
    want = requirements_hash()
    if VENV_PY.exists() and STAMP.exists() and STAMP.read_text().strip() == want:
        return
    t0 = time.time()
    if not VENV_PY.exists():
        run([find_python311(), "-m", "venv", str(VENV)])
    pip = [str(VENV_PY), "-m", "pip", "--disable-pip-version-check"]
    run(pip + ["install", "-q", "-r", str(ROOT / "requirements.txt")])
    run(pip + ["install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    STAMP.write_text(want)
    log(f"environment ready in {time.time() - t0:.0f} s")


def reexec_in_venv() -> None:
    ensure_venv()
    if not in_venv():
        os.execv(str(VENV_PY), [str(VENV_PY), str(ROOT / "build.py"), *sys.argv[1:]])


def preload_asan() -> None:
    """Re-run this process with the ASan runtime preloaded (the sanitized module is imported
    once built, and ASan must come first in the library list)."""
    if "libasan" in os.environ.get("LD_PRELOAD", ""):
        return
    cxx = shutil.which("g++") or "g++"
    lib = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    std = subprocess.run([cxx, "-print-file-name=libstdc++.so"], capture_output=True, text=True).stdout.strip()
    if not lib or not Path(lib).exists():
        sys.exit("build.py: --sanitize needs gcc's libasan (apt-get install libasan8)")
    preload = f"{Path(lib).resolve()} {Path(std).resolve()}"
    env = dict(os.environ, LD_PRELOAD=preload, ASAN_OPTIONS="detect_leaks=0")
    os.execve(sys.executable, [sys.executable, str(ROOT / "build.py"), *sys.argv[1:]], env)


def build_ext(sanitize: bool = False, verbose: bool = False) -> None:
    if sanitize:
        preload_asan()
    sys.path.insert(0, str(ROOT))
    from dibr_core import _ext

    build_dir = _ext.PACKAGE_DIR / ("_build_sanitize" if sanitize else "_build")
    if (build_dir / "build_info.json").exists():
        import json

        info = json.loads((build_dir / "build_info.json").read_text())
        want = _ext.source_hash(_ext.SANITIZE_FLAGS if sanitize else ())
        if info.get("hash") == want and (build_dir / f"{_ext.MODULE_NAME}.so").exists():
            log("C++ extension is up to date")
            return
    t0 = time.time()
    log("building the C++ extension with ninja (about a minute on 2 cores)")
    _ext.build(build_dir, verbose=verbose, sanitize=sanitize)
    log(f"C++ extension built in {time.time() - t0:.0f} s -> {build_dir.relative_to(ROOT)}")


# The tests marked float_sensitive run again under these CPU code paths, so that a machine whose
# MKL or ATen picks other SIMD kernels (an AVX-512 Xeon, an old CPU) cannot break the suite
# unnoticed: MKL's AVX2 kernels, then SSE4.2 kernels with ATen's scalar (non-vectorised) code.
CODE_PATHS = [
    {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"},
]
FLOAT_MARK = "float_sensitive"
PYTEST_NO_TESTS = 5  # pytest's exit code when the selection holds no test


def code_path_args(extra: list) -> list:
    """pytest arguments of a code-path pass: the caller's selection, narrowed to FLOAT_MARK."""
    args = list(extra)
    for i, a in enumerate(args):
        if a == "-m" and i + 1 < len(args):
            args[i + 1] = f"({args[i + 1]}) and {FLOAT_MARK}"
            return args
        if a.startswith("-m") and len(a) > 2:
            args[i] = f"-m({a[2:]}) and {FLOAT_MARK}"
            return args
    return args + ["-m", FLOAT_MARK]


def cmd_test(extra: list, code_paths: bool = True) -> int:
    build_ext()
    env = dict(os.environ)
    env.setdefault("PYTHONHASHSEED", "0")
    t0 = time.time()
    rc = subprocess.run([str(VENV_PY), "-m", "pytest", "-q", *extra], cwd=ROOT, env=env).returncode
    log(f"pytest finished with exit code {rc} in {time.time() - t0:.0f} s")
    if not code_paths:
        return rc
    for forced in CODE_PATHS:
        label = " ".join(f"{k}={v}" for k, v in forced.items())
        t1 = time.time()
        p = subprocess.run([str(VENV_PY), "-m", "pytest", "-q", "-p", "no:cacheprovider", *code_path_args(extra)],
                           cwd=ROOT, env={**env, **forced}).returncode
        if p == PYTEST_NO_TESTS:
            p = 0  # the caller's selection holds no float-sensitive test
        log(f"float-sensitive tests under {label}: exit code {p} in {time.time() - t1:.0f} s")
        rc = rc or p
    return rc


def cmd_demo(extra: list) -> int:
    build_ext()
    return subprocess.run([str(VENV_PY), "-m", "dibr_blender.demo", *extra], cwd=ROOT).returncode


def cmd_package(extra: list) -> int:
    """The extension zips: the prebuilt kernel must be current first (it goes into the zip)."""
    if "-h" not in extra and "--help" not in extra and "--no-kernels" not in extra:
        build_ext()
    return subprocess.run([str(VENV_PY), str(ROOT / "tools" / "package.py"), *extra], cwd=ROOT).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=["demo", "test", "ext", "env", "package"])
    parser.add_argument("--sanitize", action="store_true", help="ext: build with ASan + UBSan")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-code-paths", action="store_true",
                        help="test: skip the reruns of the float-sensitive tests under other CPU code paths")
    args, extra = parser.parse_known_args()
    reexec_in_venv()
    if args.task == "env":
        return 0
    if args.task == "ext":
        build_ext(sanitize=args.sanitize, verbose=args.verbose)
        return 0
    if args.task == "test":
        return cmd_test(extra, code_paths=not args.no_code_paths)
    if args.task == "package":
        return cmd_package(extra)
    return cmd_demo(extra)


if __name__ == "__main__":
    sys.exit(main())
