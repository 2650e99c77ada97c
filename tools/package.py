#!/usr/bin/env python3
"""Build the installable Blender extension: one zip per platform in ``dist/``.

    python build.py package                                  # the platform this runs on
    python build.py package --platform linux-x64 --platform windows-x64
    python tools/package.py --help                           # same, without the environment check

Each zip holds the add-on (``dibr_blender/`` at the extension root), ``blender_manifest.toml``
with ``platforms`` and ``wheels`` filled in, and ``wheels/``: a ``dibr_core`` wheel (Python
files, kernel sources and, for the platform we build on, the prebuilt kernel
``_build/dibr_core_C.so`` + ``build_info.json``), the CPU torch wheel and its runtime dependencies
for CPython 3.11 (Blender 4.2 to 5.0). numpy and other packages Blender ships are never bundled.
The zips are made by Blender's own extension builder (``blender_ext.py build --split-platforms``,
shipped inside the ``bpy`` module) and checked with ``blender_ext.py validate``.

Downloaded wheels are cached in ``build/wheels/<platform>-cp311/``; a zip newer than all of its
inputs is reused unless ``--force`` is given. See docs/packaging.md.
"""
from __future__ import annotations

import argparse
import base64
import csv
import email.parser
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

try:  # PEP 508 requirements and markers; pip always carries a copy
    from packaging.requirements import Requirement
except ImportError:  # pragma: no cover
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
ADDON_DIR = ROOT / "dibr_blender"
CORE_DIR = ROOT / "dibr_core"
MANIFEST = ROOT / "blender_manifest.toml"
DIST = ROOT / "dist"
WORK = ROOT / "build"

# Blender 4.2 to 5.0 embed CPython 3.11; Blender 5.1 moved to 3.13.
PYTHON_VERSION = "3.11"
PYTHON_TAG = "cp311"
BLENDER_VERSION_MAX = "5.1.0"  # first Blender whose Python cannot load cp311 wheels

# Distributions Blender's own Python already provides (bundled with Blender): never shipped, as a
# second copy in the shared extension site-packages would shadow Blender's for every add-on.
# numpy above all: Blender 4.2-5.0 ship numpy 1.x and a numpy 2 wheel breaks other add-ons.
BLENDER_PROVIDES = {
    "numpy", "setuptools", "pip", "wheel", "requests", "urllib3", "idna", "certifi",
    "charset-normalizer", "zstandard", "cython", "autopep8", "pycodestyle",
}


@dataclass(frozen=True)
class Platform:
    name: str                 # Blender's platform name
    pip_platforms: Tuple[str, ...]   # --platform values for pip download
    wheel_platform: str       # platform tag of the dibr_core wheel holding a prebuilt kernel
    torch_local: str          # local version label of the CPU torch build ("" = plain PyPI version)
    markers: Dict[str, str]   # PEP 508 environment of the target (for Requires-Dist markers)
    note: str = ""


PLATFORMS: Dict[str, Platform] = {
    # PyPI's Linux torch is the CUDA build (527 MB + nvidia wheels); the CPU build ("+cpu") comes
    # from the PyTorch CPU index (https://download.pytorch.org/whl/cpu) or a local wheel folder.
    "linux-x64": Platform("linux-x64", ("manylinux_2_28_x86_64",), "linux_x86_64", "cpu", dict(
        sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix")),
    "windows-x64": Platform("windows-x64", ("win_amd64",), "win_amd64", "", dict(
        sys_platform="win32", platform_system="Windows", platform_machine="AMD64", os_name="nt")),
    "macos-arm64": Platform("macos-arm64", ("macosx_14_0_arm64",), "macosx_11_0_arm64", "", dict(
        sys_platform="darwin", platform_system="Darwin", platform_machine="arm64", os_name="posix")),
    "macos-x64": Platform("macos-x64", ("macosx_13_0_x86_64",), "macosx_10_13_x86_64", "", dict(
        sys_platform="darwin", platform_system="Darwin", platform_machine="x86_64", os_name="posix"),
        note="PyTorch publishes no macOS x86_64 wheels after torch 2.2; use --no-torch and the "
             "Python Path preference there"),
}


def log(msg: str) -> None:
    print(f"[package] {msg}", flush=True)


class PackageError(RuntimeError):
    pass


# ----------------------------------------------------------------------------- helpers


def host_platform() -> str:
    """This machine as a Blender platform name (as Blender's extension builder spells it)."""
    system = {"darwin": "macos", "win32": "windows"}.get(sys.platform, _platform.system().lower())
    machine = _platform.machine().lower()
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64"}.get(machine, machine)
    return f"{system}-{machine}"


def blender_ext_script() -> Path:
    """``blender_ext.py``, the extension CLI Blender ships (found inside the installed bpy module)."""
    override = os.environ.get("BLENDER_EXT_PY")
    if override:
        return Path(override)
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise PackageError("the bpy module is not installed: it ships blender_ext.py, which builds the zips "
                           "(pip install bpy==5.0.1, or set BLENDER_EXT_PY)")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    raise PackageError("blender_ext.py not found inside the bpy module")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dist_name(wheel: Path) -> str:
    """Normalised distribution name from a wheel file name."""
    return canonical(wheel.name.split("-")[0])


def wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def core_version() -> str:
    text = (CORE_DIR / "__init__.py").read_text(encoding="utf-8")
    m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M)
    if not m:
        raise PackageError("dibr_core/__init__.py has no __version__")
    return m.group(1)


def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GB"


# ----------------------------------------------------------------------------- dependency wheels


def torch_requirement(plat: Platform, torch_version: str) -> str:
    base = torch_version.split("+")[0]
    return f"torch=={base}+{plat.torch_local}" if plat.torch_local else f"torch=={base}"


def _wheel_requires(wheel: Path) -> List[str]:
    """``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            return []
        msg = email.parser.BytesParser().parsebytes(zf.read(meta), headersonly=True)
    return [str(r) for r in msg.get_all("Requires-Dist") or []]


def _pip_download(plat: Platform, requirements: Sequence[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
           "--abi", PYTHON_TAG, "--abi", "abi3", "--abi", "none"]
    for p in plat.pip_platforms:
        cmd += ["--platform", p]
    cmd += ["-d", str(dest), *requirements]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = [ln for ln in (out.stdout + out.stderr).strip().splitlines() if "is ignored" not in ln]
        hint = ""
        if plat.torch_local and any(r.startswith("torch") for r in requirements):
            hint = ("\nThe Linux CPU build of torch is not on PyPI: give pip the PyTorch CPU index, e.g. "
                    "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu, or a folder with the wheel "
                    "(PIP_FIND_LINKS).")
        if plat.note:
            hint += f"\nNote: {plat.note}."
        raise PackageError(f"{plat.name}: pip download {' '.join(requirements)} failed:\n"
                           + "\n".join(lines[-12:]) + hint)


def resolve_wheels(plat: Platform, requirement: str, dest: Path) -> List[Path]:
    """Download ``requirement`` and its runtime dependencies as wheels for ``plat`` into ``dest``.

    pip evaluates environment markers for the machine it runs on, not for ``--platform`` (from
    Linux it would pull torch's nvidia-* wheels into a Windows zip), so each level is downloaded
    with ``--no-deps`` and the markers of every ``Requires-Dist`` are evaluated here for the
    target platform. Distributions Blender ships are left out, with their dependencies.
    """
    env = dict(plat.markers, python_version=PYTHON_VERSION, python_full_version=PYTHON_VERSION + ".0",
               implementation_name="cpython", platform_python_implementation="CPython")
    chosen: Dict[str, Path] = {}
    wanted: Dict[str, List[Requirement]] = {}
    pending = [Requirement(requirement)]
    while pending:
        batch: List[Requirement] = []
        for req in pending:
            name = canonical(req.name)
            if name in BLENDER_PROVIDES:
                log(f"{plat.name}: leaving out {req} (Blender ships {name})")
                continue
            wanted.setdefault(name, []).append(req)
            if name not in chosen and all(canonical(b.name) != name for b in batch):
                batch.append(req)
        pending = []
        if not batch:
            break
        tmp = dest / ".level"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _pip_download(plat, [f"{r.name}{r.specifier}" for r in batch], tmp)
        for whl in sorted(tmp.glob("*.whl")):
            name = dist_name(whl)
            target = dest / whl.name
            if target.exists():
                target.unlink()
            whl.rename(target)
            chosen[name] = target
            extras = {e for r in wanted.get(name, []) for e in r.extras} | {""}
            for line in _wheel_requires(target):
                dep = Requirement(line)
                if dep.marker is None or any(dep.marker.evaluate(dict(env, extra=e)) for e in extras):
                    pending.append(dep)
        shutil.rmtree(tmp, ignore_errors=True)
    for name, reqs in wanted.items():
        if name not in chosen:
            raise PackageError(f"{plat.name}: pip gave no wheel for {name}")
        version = wheel_version(chosen[name])
        for req in reqs:
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                raise PackageError(f"{plat.name}: {chosen[name].name} does not satisfy {req}")
    return sorted(chosen.values())


def pinned_requirement(name: str) -> str:
    """``name==VERSION`` as pinned in the project's requirements.txt."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and canonical(Requirement(line).name) == canonical(name):
            return line
    raise PackageError(f"requirements.txt pins no {name}")


# Wheels the extension bundles beside torch: dibr_core uses them when present and falls back to
# torch-only code without them (cholespy: the large-step fit's sparse Cholesky solver).
OPTIONAL_WHEELS = ("cholespy",)


def dependency_wheels(plat: Platform, torch_version: str, refresh: bool = False) -> List[Path]:
    """CPU torch and its runtime dependencies for CPython 3.11 on ``plat``, plus the
    ``OPTIONAL_WHEELS`` where the platform has them (cached download)."""
    requirement = torch_requirement(plat, torch_version)
    optional = [pinned_requirement(n) for n in OPTIONAL_WHEELS]
    cache = WORK / "wheels" / f"{plat.name}-{PYTHON_TAG}"
    stamp = cache / "resolved.json"
    key = {"requirement": requirement, "optional": optional, "python": PYTHON_VERSION,
           "pip_platforms": list(plat.pip_platforms), "markers": plat.markers, "left_out": sorted(BLENDER_PROVIDES)}
    if stamp.exists() and not refresh:
        info = json.loads(stamp.read_text())
        cached = [cache / f for f in info.get("files", [])]
        if info.get("key") == key and cached and all(f.exists() for f in cached):
            log(f"{plat.name}: reusing {len(cached)} cached wheels ({requirement})")
            return cached
    log(f"{plat.name}: downloading {requirement} and its dependencies (wheels for CPython {PYTHON_VERSION})")
    t0 = time.time()
    cache.mkdir(parents=True, exist_ok=True)
    files = resolve_wheels(plat, requirement, cache)
    for req in optional:
        try:
            files += resolve_wheels(plat, req, cache)
        except PackageError as exc:   # the add-on works without it (slower large-step solves)
            log(f"{plat.name}: leaving out the optional {req}: {str(exc).splitlines()[0]}")
    stamp.write_text(json.dumps({"key": key, "files": [f.name for f in files]}, indent=1))
    log(f"{plat.name}: {len(files)} wheels ready in {time.time() - t0:.0f} s")
    return files


# ----------------------------------------------------------------------------- the dibr_core wheel


# Subpackages of dibr_core the extension never imports: the training and evaluation commands
# (docs/architecture.md: only entry points import them; tests/test_layering.py checks that what
# the wheel ships and what dibr_blender imports never needs them).
CORE_LEFT_OUT = ("train", "eval")


def _core_files() -> Iterable[Tuple[str, Path]]:
    """(archive name, file) of every file of the dibr_core package except build outputs, caches
    and the subpackages of :data:`CORE_LEFT_OUT`.

    Python modules, kernel sources (csrc/, hashed by _ext.source_hash at run time, so all of them
    go in) and data such as weights/ when present.
    """
    for path in sorted(CORE_DIR.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(CORE_DIR)
        parts = rel.parts
        if parts[0].startswith("_build"):
            continue  # build trees (kernels are added explicitly)
        if len(parts) > 1 and parts[0] in CORE_LEFT_OUT:
            continue
        if any(p == "__pycache__" or p.startswith(".") for p in parts):
            continue
        if path.suffix in (".pyc", ".pyo", ".so", ".pyd", ".o", ".obj", ".dylib"):
            continue
        yield "dibr_core/" + rel.as_posix(), path


def prebuilt_kernel(bundled_torch: Optional[str]) -> Tuple[Path, Path, dict]:
    """The prebuilt kernel of this machine; raises when missing or stale."""
    sys.path.insert(0, str(ROOT))
    try:
        from dibr_core import _ext  # imports torch (the build environment's)
    finally:
        sys.path.remove(str(ROOT))
    build_dir = CORE_DIR / "_build"
    so = build_dir / f"{_ext.MODULE_NAME}.so"
    info_file = build_dir / "build_info.json"
    if not (so.exists() and info_file.exists()):
        raise PackageError("no prebuilt kernel in dibr_core/_build: run `python build.py ext` first "
                           "(or pass --no-kernels)")
    info = json.loads(info_file.read_text())
    # The zip bundles a CPU torch, so only a CPU-only build of the kernels can load there.
    try:
        want = _ext.source_hash(cuda=False)
    except TypeError:  # an _ext without CUDA support
        want = _ext.source_hash()
    if info.get("cuda"):
        raise PackageError("dibr_core/_build holds a CUDA build; the zip bundles a CPU torch: rebuild the kernels "
                           "with a CPU torch (or DIBR_BUILD_CUDA=0), or pass --no-kernels")
    if info.get("hash") != want:
        raise PackageError(f"the prebuilt kernel is stale (built from sources {info.get('hash')}, sources now "
                           f"{want}): run `python build.py ext` first (or pass --no-kernels)")
    if info.get("sanitize"):
        raise PackageError("dibr_core/_build holds a sanitizer build; rebuild with `python build.py ext`")
    if bundled_torch is not None and info.get("torch") != bundled_torch:
        raise PackageError(f"the prebuilt kernel was built against torch {info.get('torch')} but the zip bundles "
                           f"torch {bundled_torch}; it would never load (build with the bundled version)")
    return so, info_file, info


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_core_wheel(out_dir: Path, tag: str, kernel: Optional[Tuple[Path, Path]]) -> Path:
    """Write ``dibr_core-<version>-<tag>.whl`` (deterministic: sorted entries, fixed timestamps)."""
    version = core_version()
    pure = kernel is None
    dist_info = f"dibr_core-{version}.dist-info"
    entries: List[Tuple[str, bytes, int]] = []
    for arc, path in _core_files():
        entries.append((arc, path.read_bytes(), 0o644))
    if kernel is not None:
        so, info = kernel
        entries.append((f"dibr_core/_build/{so.name}", so.read_bytes(), 0o755))
        entries.append(("dibr_core/_build/build_info.json", info.read_bytes(), 0o644))
    metadata = "\n".join([
        "Metadata-Version: 2.1",
        "Name: dibr-core",
        f"Version: {version}",
        "Summary: DIB-R differentiable renderer for PyTorch (packaged for the dibr_blender extension)",
        "License: Apache-2.0",
        "Requires-Python: >=3.11",
        "Requires-Dist: torch>=2.1",
        "Requires-Dist: numpy>=1.26",
        "",
    ]).encode()
    wheel = "\n".join([
        "Wheel-Version: 1.0",
        "Generator: dibr tools/package.py",
        f"Root-Is-Purelib: {'true' if pure else 'false'}",
        f"Tag: {tag}",
        "",
    ]).encode()
    entries.append((f"{dist_info}/METADATA", metadata, 0o644))
    entries.append((f"{dist_info}/WHEEL", wheel, 0o644))
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for arc, data, _ in entries:
        writer.writerow([arc, _record_hash(data), str(len(data))])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode(), 0o644))

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"dibr_core-{version}-{tag}.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for arc, data, mode in entries:
            zi = zipfile.ZipInfo(arc, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = (0o100000 | mode) << 16
            zf.writestr(zi, data)
    return out


# ----------------------------------------------------------------------------- manifest and staging


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def staged_manifest(plat: Platform, wheels: Sequence[str], cap_blender_version: bool) -> str:
    """The repository manifest with ``platforms`` (one) and ``wheels`` set for this zip."""
    text = MANIFEST.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    # Drop top-level keys we set (single- or multi-line arrays) before the first table.
    head, sep, tail = text.partition("\n[")
    keys = ["platforms", "wheels"] + (["blender_version_max"] if cap_blender_version else [])
    for key in keys:
        head = re.sub(rf"(?ms)^{key}\s*=\s*(\[.*?\]|\"[^\"\n]*\")[ \t]*(#[^\n]*)?\n?", "", head)
    lines = [f"platforms = [{_toml_str(plat.name)}]"]
    if cap_blender_version:
        current = data.get("blender_version_max")
        lines.append(f"blender_version_max = {_toml_str(current or BLENDER_VERSION_MAX)}")
    lines.append("wheels = [")
    lines += [f"  {_toml_str(w)}," for w in wheels]
    lines.append("]")
    new = head.rstrip("\n") + "\n\n# Filled in by tools/package.py for this zip.\n" + "\n".join(lines) + "\n"
    if sep:
        new += "\n[" + tail
    parsed = tomllib.loads(new)
    if parsed.get("platforms") != [plat.name] or parsed.get("wheels", []) != list(wheels):
        raise PackageError("could not rewrite blender_manifest.toml (unexpected layout)")
    return new


def _stage_addon(staging: Path) -> None:
    def ignore(directory: str, names: List[str]) -> List[str]:
        return [n for n in names if n == "__pycache__" or n.startswith(".") or n.endswith((".pyc", ".zip"))
                or n == "blender_manifest.toml"]

    shutil.copytree(ADDON_DIR, staging, ignore=ignore, dirs_exist_ok=True)


def _inputs(extra: Iterable[Path]) -> List[Path]:
    files = [MANIFEST, Path(__file__).resolve()]
    for base in (ADDON_DIR, CORE_DIR):
        for p in base.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith("."):
                rel = p.relative_to(base).parts
                if base == CORE_DIR and rel[0].startswith("_build") and p.name not in (
                        "dibr_core_C.so", "build_info.json"):
                    continue
                if base == CORE_DIR and rel[0] == "_build_sanitize":
                    continue
                files.append(p)
    files.extend(extra)
    return files


def zip_name(plat: Platform) -> str:
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    return f"{data['id']}-{data['version']}-{plat.name.replace('-', '_')}.zip"


def _zip_is_current(zip_path: Path, inputs: List[Path], want_torch: bool, want_kernel: bool) -> bool:
    if not zip_path.exists():
        return False
    mtime = zip_path.stat().st_mtime
    if any(p.exists() and p.stat().st_mtime > mtime for p in inputs):
        return False
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile:
        return False
    has_torch = any(n.startswith("wheels/torch-") for n in names)
    has_core = [n for n in names if n.startswith("wheels/dibr_core-")]
    if has_torch != want_torch or len(has_core) != 1:
        return False
    return (not has_core[0].endswith("-none-any.whl")) == want_kernel


def run_blender_ext(args: Sequence[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(blender_ext_script()), *args]
    return subprocess.run(cmd, capture_output=True, text=True)


def validate(zip_path: Path) -> str:
    out = run_blender_ext(["validate", str(zip_path)])
    text = (out.stdout + out.stderr).strip()
    if out.returncode != 0 or "ERROR" in text or "Success" not in text:
        raise PackageError(f"blender_ext.py validate {zip_path.name} failed:\n{text}")
    return text


def package_platform(plat: Platform, *, host: str, with_torch: bool, with_kernels: bool, force: bool,
                     refresh: bool, torch_version: str, out_dir: Path) -> Path:
    t0 = time.time()
    deps = dependency_wheels(plat, torch_version, refresh=refresh) if with_torch else []
    bundled_torch = next((wheel_version(w) for w in deps if dist_name(w) == "torch"), None)
    use_kernel = with_kernels and plat.name == host
    kernel: Optional[Tuple[Path, Path]] = None
    if use_kernel:
        so, info_file, _ = prebuilt_kernel(bundled_torch)
        kernel = (so, info_file)

    out_zip = out_dir / zip_name(plat)
    if not force and _zip_is_current(out_zip, _inputs(deps), with_torch, use_kernel):
        log(f"{plat.name}: {out_zip.name} is up to date ({human(out_zip.stat().st_size)})")
        return out_zip

    staging = WORK / "package" / plat.name
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _stage_addon(staging)
    wheel_dir = staging / "wheels"
    for w in deps:
        link_or_copy(w, wheel_dir / w.name)
    tag = f"{PYTHON_TAG}-{PYTHON_TAG}-{plat.wheel_platform}" if kernel is not None else "py3-none-any"
    core = build_core_wheel(wheel_dir, tag, kernel)
    wheels = sorted(f"./wheels/{p.name}" for p in wheel_dir.glob("*.whl"))
    (staging / "blender_manifest.toml").write_text(
        staged_manifest(plat, wheels, cap_blender_version=with_torch or kernel is not None), encoding="utf-8")

    out_dir.mkdir(parents=True, exist_ok=True)
    built = run_blender_ext(["build", "--source-dir", str(staging), "--output-dir", str(out_dir),
                             "--split-platforms"])
    if built.returncode != 0 or not out_zip.exists():
        raise PackageError(f"blender_ext.py build failed:\n{(built.stdout + built.stderr).strip()}")
    validate(out_zip)
    size = out_zip.stat().st_size
    log(f"{plat.name}: {out_zip.relative_to(ROOT) if out_zip.is_relative_to(ROOT) else out_zip} "
        f"({human(size)}, {len(wheels)} wheels, dibr_core wheel {core.name}"
        f"{' with prebuilt kernel' if kernel else ', no prebuilt kernel'}) in {time.time() - t0:.0f} s")
    for w in sorted(wheel_dir.glob("*.whl"), key=lambda p: -p.stat().st_size):
        log(f"    {human(w.stat().st_size):>10}  {w.name}")
    return out_zip


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--platform", action="append", choices=sorted(PLATFORMS),
                        help="Blender platform to build for (repeatable); default: this machine's")
    parser.add_argument("--output-dir", type=Path, default=DIST, help="where the zips go (default: dist/)")
    parser.add_argument("--no-torch", action="store_true",
                        help="bundle no torch (users then set the Python Path preference to an environment)")
    parser.add_argument("--no-kernels", action="store_true", help="leave the prebuilt kernel out")
    parser.add_argument("--torch-version", default=None,
                        help="torch version to bundle (default: the one installed here, which built the kernel)")
    parser.add_argument("--force", action="store_true", help="rebuild even when the zip is up to date")
    parser.add_argument("--refresh", action="store_true", help="download the wheels again")
    args = parser.parse_args(argv)

    host = host_platform()
    names = args.platform or [host]
    unknown = [n for n in names if n not in PLATFORMS]
    if unknown:
        parser.error(f"no packaging recipe for {unknown} (known: {', '.join(sorted(PLATFORMS))})")
    torch_version = args.torch_version or importlib.metadata.version("torch")
    try:
        for name in dict.fromkeys(names):
            package_platform(PLATFORMS[name], host=host, with_torch=not args.no_torch,
                             with_kernels=not args.no_kernels, force=args.force, refresh=args.refresh,
                             torch_version=torch_version, out_dir=args.output_dir.resolve())
    except PackageError as exc:
        print(f"package: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
