"""Loading of the compiled kernels (``dibr_core_C``).

Order: a prebuilt module in ``dibr_core/_build`` whose recorded source hash and torch
version match; else a just-in-time build with ninja through ``torch.utils.cpp_extension``;
else nothing, with one warning, and every op runs on the pure-PyTorch reference path.
``python build.py ext`` performs the ahead-of-time build. Importing never raises.

The CUDA kernels (``csrc/*.cu``, with ``-DWITH_CUDA``) are compiled in when torch is a CUDA
build and nvcc is found (``$CUDA_HOME/bin/nvcc``, ``nvcc`` on PATH or ``/usr/local/cuda``),
unless ``DIBR_BUILD_CUDA=0``; if that build fails, the CPU kernels are built alone (with a
warning) and the failure is recorded so that it is not retried until a source changes.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import List, Optional, Tuple

import torch

PACKAGE_DIR = Path(__file__).resolve().parent
CSRC = PACKAGE_DIR / "csrc"
MODULE_NAME = "dibr_core_C"
# Per op: torch glue (torch_*.cpp), CPU kernels (*_cpu.cpp), CUDA kernels (*_cuda.cu); bindings.cpp
# holds the module table. Basenames stay unique: cpp_extension names each object after its source.
CPU_SOURCES = [
    "bindings.cpp",
    "torch_rasterize.cpp", "torch_soft_mask.cpp", "torch_interpolate.cpp", "torch_mesh.cpp",
    "rasterize_cpu.cpp", "soft_mask_cpu.cpp", "interpolate_cpu.cpp", "mesh_cpu.cpp",
]
CUDA_SOURCES: List[str] = ["rasterize_cuda.cu", "soft_mask_cuda.cu", "interpolate_cuda.cu"]
# No -std flag: torch's cpp_extension passes the C++ standard its headers need (C++20 since
# torch 2.10; torch 2.14's headers refuse anything older).
CFLAGS = ["-O3", "-ffp-contract=off", "-fopenmp"]
LDFLAGS = ["-fopenmp"]
# --fmad=false: no FMA contraction, so that the CUDA kernels round as the CPU ones
# (-ffp-contract=off) and select the same faces.
CUDA_CFLAGS = ["-O3", "--fmad=false"]

_state: dict = {"tried": False, "module": None, "reason": "not loaded yet", "how": None}


def default_build_dir() -> Path:
    """``$DIBR_BUILD_DIR`` if set, else ``dibr_core/_build`` when writable, else a per-user cache.
    A sanitizer build (``DIBR_SANITIZE=1``) goes to ``_build_sanitize`` inside ``$DIBR_BUILD_DIR``
    (so that it never replaces the plain module there), else ``dibr_core/_build_sanitize``."""
    override = os.environ.get("DIBR_BUILD_DIR")
    if override:
        d = Path(override) / "_build_sanitize" if sanitizing() else Path(override)
        d.mkdir(parents=True, exist_ok=True)
        return d
    d = PACKAGE_DIR / ("_build_sanitize" if sanitizing() else "_build")
    try:
        d.mkdir(exist_ok=True)
        probe = d / ".write_probe"
        probe.touch()
        probe.unlink()
        return d
    except OSError:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dibr_core" / "build"
        cache.mkdir(parents=True, exist_ok=True)
        return cache


SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g")


def sanitizing() -> bool:
    """``DIBR_SANITIZE=1`` selects the AddressSanitizer + UBSan build (load it with libasan preloaded)."""
    return os.environ.get("DIBR_SANITIZE", "") == "1"


def find_cuda_home() -> Optional[Path]:
    """The CUDA toolkit the build uses, or None.

    ``$CUDA_HOME`` (or ``$CUDA_PATH``) when set, else the toolkit of the ``nvcc`` on PATH (a
    symbolic link is followed), else ``/usr/local/cuda``; of the last two, the first that holds
    ``bin/nvcc`` and ``include/cuda_runtime.h`` is taken (an ``nvcc`` that is a wrapper script
    elsewhere does not mislead the build into looking for the headers next to it), else the first
    that holds ``bin/nvcc``.
    """
    for var in ("CUDA_HOME", "CUDA_PATH"):
        env_home = os.environ.get(var)
        if env_home:
            return Path(env_home) if (Path(env_home) / "bin" / "nvcc").exists() else None
    candidates: List[Path] = []
    which = shutil.which("nvcc")
    if which:
        candidates.append(Path(which).resolve().parent.parent)
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return home
    return next((home for home in candidates if (home / "bin" / "nvcc").exists()), None)


def find_nvcc() -> Optional[str]:
    """The nvcc of :func:`find_cuda_home`'s toolkit, or None."""
    home = find_cuda_home()
    return None if home is None else str(home / "bin" / "nvcc")


def default_cuda_arch_list(torch_arches: List[str]) -> str:
    """``TORCH_CUDA_ARCH_LIST`` for a build on a machine without a GPU: the real architectures
    of ``torch_arches`` (``torch.cuda.get_arch_list()``, such as ``["sm_80", "sm_90"]``), the
    newest also as PTX so that later GPUs can compile it; ``"8.0;9.0+PTX"`` when there are none.

    >>> default_cuda_arch_list(["sm_75", "sm_90", "sm_100", "compute_90"])
    '7.5;9.0;10.0+PTX'
    """
    arches = sorted({int(a[3:]) for a in torch_arches if a.startswith("sm_") and a[3:].isdigit()})
    if not arches:
        return "8.0;9.0+PTX"
    names = [f"{a // 10}.{a % 10}" for a in arches]
    return ";".join(names) + "+PTX"


def cuda_build_enabled(sanitize: bool = False) -> bool:
    """Whether ``build()`` compiles the CUDA kernels: a CUDA torch, nvcc found, no sanitizer
    build, and ``DIBR_BUILD_CUDA`` not set to 0."""
    if sanitize or os.environ.get("DIBR_BUILD_CUDA", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return torch.version.cuda is not None and find_nvcc() is not None


def source_files() -> List[Path]:
    files = (sorted(CSRC.rglob("*.h")) + sorted(CSRC.rglob("*.cuh")) + sorted(CSRC.rglob("*.cpp"))
             + sorted(CSRC.rglob("*.cu")))
    return files


def source_hash(extra: Tuple[str, ...] = (), cuda: Optional[bool] = None) -> str:
    """Hash of every kernel source, the flags and the torch version.

    ``extra``: the sanitizer flags of a sanitizer build, else empty. ``cuda``: whether the CUDA
    kernels are part of the build (default: ``cuda_build_enabled``; never with ``extra``).
    """
    if cuda is None:
        cuda = cuda_build_enabled(sanitize=bool(extra))
    h = hashlib.sha256()
    for f in source_files():
        h.update(f.relative_to(CSRC).as_posix().encode())
        h.update(f.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS + list(extra)).encode())
    h.update(torch.__version__.encode())
    if cuda:
        h.update(" ".join(["cuda", str(torch.version.cuda)] + CUDA_CFLAGS).encode())
    return h.hexdigest()[:16]


def _import_so(path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(MODULE_NAME, str(path))
    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(path), loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _info_path(build_dir: Path) -> Path:
    return build_dir / "build_info.json"


def _try_prebuilt(build_dir: Path, want_hash: str) -> Optional[ModuleType]:
    info_file = _info_path(build_dir)
    so = build_dir / f"{MODULE_NAME}.so"
    if not (info_file.exists() and so.exists()):
        return None
    info = json.loads(info_file.read_text())
    # cuda_failed_for: the hash of a CUDA build that failed for these sources; the CPU-only
    # module built instead stands in for it.
    if want_hash not in (info.get("hash"), info.get("cuda_failed_for")):
        return None
    return _import_so(so)


def build(build_dir: Optional[Path] = None, verbose: bool = False, sanitize: Optional[bool] = None) -> ModuleType:
    """Compile the extension with ninja (raises on failure) and record its hash."""
    from torch.utils import cpp_extension

    if sanitize is None:
        sanitize = sanitizing()
    build_dir = Path(build_dir) if build_dir is not None else default_build_dir()
    build_dir.mkdir(parents=True, exist_ok=True)
    if shutil.which("ninja") is None and not (Path(sys.executable).parent / "ninja").exists():
        raise RuntimeError("ninja is not installed (pip install ninja)")
    # torch's cpp_extension looks ninja up on PATH: make the venv's bin visible.
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
    cflags = list(CFLAGS)
    ldflags = list(LDFLAGS)
    extra: Tuple[str, ...] = ()
    if sanitize:
        extra = SANITIZE_FLAGS
        cflags = [f for f in cflags if f != "-O3"] + ["-O1"] + list(extra)
        ldflags += list(extra)

    def compile_ext(cuda: bool) -> ModuleType:
        sources = [str(CSRC / s) for s in CPU_SOURCES]
        if cuda:
            sources += [str(CSRC / s) for s in CUDA_SOURCES]
        return cpp_extension.load(
            name=MODULE_NAME,
            sources=sources,
            extra_cflags=cflags + (["-DWITH_CUDA"] if cuda else []),
            extra_cuda_cflags=(CUDA_CFLAGS + ["-DWITH_CUDA"]) if cuda else None,
            extra_ldflags=ldflags,
            extra_include_paths=[str(CSRC / "include")],
            build_directory=str(build_dir),
            verbose=verbose,
            with_cuda=cuda,
        )

    cuda = cuda_build_enabled(sanitize)
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if cuda:
        # cpp_extension finds its toolkit once, at import, from PATH's nvcc without following
        # wrapper scripts; hand it the one find_cuda_home() chose.
        cpp_extension.CUDA_HOME = str(find_cuda_home())
        if not arch_list and torch.cuda.device_count() == 0:
            # cpp_extension takes the visible GPUs' architectures and fails when there are none:
            # build for every architecture this torch was built for instead.
            arch_list = default_cuda_arch_list(torch.cuda.get_arch_list())
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    cuda_error: Optional[str] = None
    try:
        mod = compile_ext(cuda)
    except Exception as exc:  # noqa: BLE001 - a failed CUDA build falls back to the CPU kernels
        if not cuda:
            raise
        lines = str(exc).strip().splitlines()
        cuda_error = (lines[-1] if lines else type(exc).__name__)[:300]
        warnings.warn(
            f"dibr_core: building the CUDA kernels failed ({type(exc).__name__}: {cuda_error}); building the CPU "
            "kernels only. Set DIBR_BUILD_CUDA=0 to skip the CUDA build.",
            RuntimeWarning,
            stacklevel=2,
        )
        cuda = False
        mod = compile_ext(False)
    info = {"hash": source_hash(extra, cuda=cuda), "torch": torch.__version__, "cuda": cuda, "sanitize": sanitize}
    if cuda:
        info["cuda_arch_list"] = arch_list or "the visible GPUs'"
    if cuda_error is not None:
        info["cuda_failed_for"] = source_hash(extra, cuda=True)
        info["cuda_error"] = cuda_error
    _info_path(build_dir).write_text(json.dumps(info, indent=1))
    return mod


def load() -> Optional[ModuleType]:
    """The compiled module, or None (then ``reason()`` says why). Never raises."""
    if _state["tried"]:
        return _state["module"]
    _state["tried"] = True
    if os.environ.get("DIBR_BACKEND", "").lower() == "reference":
        _state["reason"] = "DIBR_BACKEND=reference forces the reference path"
        return None
    try:
        build_dir = default_build_dir()
        want = source_hash(SANITIZE_FLAGS if sanitizing() else ())
        mod = _try_prebuilt(build_dir, want)
        if mod is not None:
            _state.update(module=mod, how="prebuilt", reason=f"prebuilt extension in {build_dir.name}/")
            return mod
        mod = build(build_dir)
        _state.update(module=mod, how="jit", reason="built just in time with ninja")
        return mod
    except Exception as exc:  # noqa: BLE001 - any failure means: use the reference path
        msg = str(exc).strip().splitlines()
        short = msg[-1] if msg else type(exc).__name__
        _state["reason"] = f"C++ extension unavailable ({type(exc).__name__}: {short[:300]})"
        warnings.warn(
            f"dibr_core: {_state['reason']}; falling back to the pure-PyTorch reference path "
            "(correct but slow). Run `python build.py ext` to build the kernels.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def reason() -> str:
    return str(_state["reason"])


def how() -> Optional[str]:
    return _state["how"]
