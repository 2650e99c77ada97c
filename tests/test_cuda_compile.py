"""The CUDA sources compile with nvcc (for sm_80 and sm_90) and stay free of torch headers.

These run without a GPU: only nvcc is needed (the compile tests are skipped without it).
A successful compile is remembered in pytest's cache, keyed by a hash of the sources, the
flags and the nvcc version, so unchanged sources are not recompiled on every run.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import List, Set

import pytest

from dibr_core import _ext

CSRC = _ext.CSRC
INCLUDE_DIRS = [CSRC / "include", CSRC]
CU_FILES = sorted(CSRC.glob("*.cu"))
ARCH_FLAGS = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]
TORCH_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](torch|ATen|c10)/', re.MULTILINE)
LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)


def nvcc_flags() -> List[str]:
    # The standard torch's cpp_extension compiles them with (CUDA_CFLAGS leave it to torch).
    flags = list(_ext.CUDA_CFLAGS) + ["-DWITH_CUDA", "-std=c++20"] + ARCH_FLAGS
    for d in INCLUDE_DIRS:
        flags += ["-I", str(d)]
    return flags


def local_closure(path: Path) -> List[Path]:
    """The file and every project header it includes with quotes, transitively."""
    seen: Set[Path] = set()
    order: List[Path] = []
    todo = [path]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        order.append(f)
        for name in LOCAL_INCLUDE.findall(f.read_text()):
            for base in [f.parent] + INCLUDE_DIRS:
                cand = (base / name).resolve()
                if cand.exists():
                    todo.append(cand)
                    break
    return order


def test_cuda_sources_are_listed_in_the_build() -> None:
    assert CU_FILES, "no .cu file in dibr_core/csrc"
    assert sorted(f.name for f in CU_FILES) == sorted(_ext.CUDA_SOURCES)


def test_cpp_sources_are_listed_in_the_build() -> None:
    # A per-op file left out of the build would only show as an undefined symbol at import.
    assert sorted(f.name for f in CSRC.glob("*.cpp")) == sorted(_ext.CPU_SOURCES)


def test_cuda_sources_include_no_torch_header() -> None:
    for cu in CU_FILES:
        for f in local_closure(cu):
            m = TORCH_INCLUDE.search(f.read_text())
            assert m is None, f"{cu.name} includes {f.name}, which includes a torch header: {m.group(0).strip()}"
    for name in ("cuda_kernels.h", "cuda_common.cuh"):
        for f in local_closure(CSRC / name):
            assert TORCH_INCLUDE.search(f.read_text()) is None, f"{name} pulls in a torch header via {f.name}"


def test_cuda_stems_differ_from_cpp_stems() -> None:
    # torch's cpp_extension names objects after the source stem: foo.cu and foo.cpp would clash.
    cpp = {f.stem for f in CSRC.glob("*.cpp")}
    clash = sorted(f.name for f in CU_FILES if f.stem in cpp)
    assert not clash, f"these .cu files share a stem with a .cpp file: {clash}"


@pytest.mark.parametrize("cu", CU_FILES, ids=[f.name for f in CU_FILES])
def test_cuda_source_compiles(cu: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH: the CUDA sources cannot be compiled here")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    flags = nvcc_flags()
    h = hashlib.sha256()
    for f in sorted(local_closure(cu)):
        h.update(str(f.relative_to(CSRC)).encode())
        h.update(f.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(version.encode())
    key = f"dibr_core/nvcc_ok/{cu.name}"
    digest = h.hexdigest()
    cache = getattr(request.config, "cache", None)      # absent under -p no:cacheprovider
    if cache is not None and cache.get(key, None) == digest:
        return  # this exact source and toolchain compiled before
    obj = tmp_path / f"{cu.stem}.o"
    cmd = [nvcc, *flags, "-c", str(cu), "-o", str(obj)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0, f"nvcc failed ({proc.returncode}):\n{' '.join(cmd)}\n{output}"
    assert obj.exists() and obj.stat().st_size > 0
    if output:
        print(f"nvcc output for {cu.name}:\n{output}")
    if cache is not None:
        cache.set(key, digest)


def _toolkit(root: Path, headers: bool) -> Path:
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\nexit 0\n")
    nvcc.chmod(0o755)
    if headers:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_cuda_home_follows_nvcc_to_its_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The toolkit handed to torch's cpp_extension is the one whose include/ holds the CUDA
    runtime headers: a linked nvcc is followed; $CUDA_HOME wins when it holds an nvcc."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    real = _toolkit(tmp_path / "cuda-13.0", headers=True)
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "nvcc").symlink_to(real / "bin" / "nvcc")
    monkeypatch.setenv("PATH", str(tmp_path / "links"))
    assert _ext.find_cuda_home() == real.resolve()
    assert _ext.find_nvcc() == str(real.resolve() / "bin" / "nvcc")
    other = _toolkit(tmp_path / "other", headers=False)
    monkeypatch.setenv("CUDA_HOME", str(other))
    assert _ext.find_cuda_home() == other
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    assert _ext.find_cuda_home() is None and _ext.find_nvcc() is None


def test_default_arch_list_covers_torchs_architectures() -> None:
    """Without a GPU (and without TORCH_CUDA_ARCH_LIST) the build targets every architecture
    torch itself was built for, the newest also as PTX."""
    assert _ext.default_cuda_arch_list(["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]) == \
        "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    assert _ext.default_cuda_arch_list(["sm_90", "compute_90", "sm_80"]) == "8.0;9.0+PTX"
    assert _ext.default_cuda_arch_list([]) == "8.0;9.0+PTX"
