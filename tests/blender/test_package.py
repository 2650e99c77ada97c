"""The extension zip: built by ``build.py package``, accepted by Blender's validator, installed by
Blender's own extension installer, and working from the wheels it bundles.

The install runs in a subprocess whose imports cannot reach this repository or the development
environment's torch: it is started with ``python -I -S`` (isolated mode: no PYTHON* variables,
no script folder, no user site; no ``site`` module, so no site-packages and no ``.pth`` files,
hence no editable install of this project) and gets exactly one extra import folder, a temporary
directory of symlinks to the ``bpy`` distribution and the distributions it requires (numpy,
requests, ... found through ``importlib.metadata``), i.e. what a real Blender provides. The
subprocess first proves that neither torch nor dibr_core can be found, then installs the zip;
afterwards torch, dibr_core and the compiled kernel must come from the extensions folder under
``BLENDER_USER_RESOURCES`` (a temporary directory set before ``import bpy``).
"""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_TOOL = ROOT / "tools" / "package.py"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def package_tool() -> ModuleType:
    return _load("dibr_tools_package", PACKAGE_TOOL)


@pytest.fixture(scope="module")
def built_zip(package_tool: ModuleType) -> Path:
    """The zip for this platform, built once (``tools/package.py`` reuses a zip newer than its inputs)."""
    pytest.importorskip("bpy")
    host = package_tool.host_platform()
    if host not in package_tool.PLATFORMS:
        pytest.skip(f"no packaging recipe for {host}")
    out = subprocess.run([sys.executable, str(ROOT / "build.py"), "package"], cwd=ROOT, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    path = ROOT / "dist" / package_tool.zip_name(package_tool.PLATFORMS[host])
    assert path.exists(), out.stdout[-3000:]
    return path


def _wheels(zf: zipfile.ZipFile) -> List[str]:
    return sorted(n[len("wheels/"):] for n in zf.namelist() if n.startswith("wheels/") and n.endswith(".whl"))


@pytest.mark.blender
@pytest.mark.slow
def test_zip_validates(built_zip: Path, package_tool: ModuleType) -> None:
    script = package_tool.blender_ext_script()
    out = subprocess.run([sys.executable, str(script), "validate", str(built_zip)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success" in out.stdout, out.stdout + out.stderr


@pytest.mark.blender
@pytest.mark.slow
def test_zip_contents(built_zip: Path, package_tool: ModuleType) -> None:
    host = package_tool.host_platform()
    with zipfile.ZipFile(built_zip) as zf:
        names = set(zf.namelist())
        wheels = _wheels(zf)
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode())
        core = [w for w in wheels if w.startswith("dibr_core-")]
        assert len(core) == 1, wheels
        with zipfile.ZipFile(io.BytesIO(zf.read("wheels/" + core[0]))) as cz:
            core_names = set(cz.namelist())
            info = json.loads(cz.read("dibr_core/_build/build_info.json"))
    # The add-on sits at the extension root, the manifest lists exactly the bundled wheels.
    assert {"__init__.py", "preferences.py", "jobs/__init__.py", "jobs/deps.py", "scene/__init__.py",
            "scene/io.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["id"] == "dibr_blender"
    assert manifest["platforms"] == [host]
    assert sorted(w.removeprefix("./wheels/") for w in manifest["wheels"]) == wheels
    # torch (the CPU build) and its dependencies; never numpy or what Blender ships itself.
    names_of = {package_tool.dist_name(Path(w)) for w in wheels}
    assert "torch" in names_of
    assert {"sympy", "networkx", "jinja2", "filelock", "fsspec", "typing-extensions"} <= names_of
    assert not names_of & package_tool.BLENDER_PROVIDES, names_of & package_tool.BLENDER_PROVIDES
    # The optional large-step solver (PyPI has its wheel for every platform the recipes name).
    assert set(package_tool.OPTIONAL_WHEELS) <= names_of
    assert not any(w.lower().startswith("numpy") for w in wheels)
    torch_wheel = next(w for w in wheels if w.startswith("torch-"))
    assert "cp311" in torch_wheel
    # dibr_core: Python files, every kernel source, the prebuilt kernel built for the bundled torch.
    assert {"dibr_core/__init__.py", "dibr_core/_ext.py", "dibr_core/_build/dibr_core_C.so"} <= core_names
    sources = {"dibr_core/" + p.relative_to(ROOT / "dibr_core").as_posix()
               for p in (ROOT / "dibr_core" / "csrc").rglob("*") if p.suffix in (".h", ".cuh", ".cpp", ".cu")}
    assert sources and sources <= core_names
    assert info["torch"] == torch_wheel.split("-")[1]
    assert not any(n.startswith("dibr_core/_build/") and n.endswith(".o") for n in core_names)


def _sanitized_root(dest: Path) -> Path:
    """A folder of symlinks to bpy and the distributions it requires, and nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    todo, seen = ["bpy"], set()
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        dist = metadata.distribution(name)
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0])
        base = Path(str(dist.locate_file("")))
        for top in sorted({Path(str(f)).parts[0] for f in dist.files or []}):
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            if (base / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(base / top)
    assert not ({"torch", "dibr_core", "dibr_blender"} & {p.name for p in dest.iterdir()})
    return dest


INSTALL_SCRIPT = r"""
import importlib, importlib.util, json, os, sys, time
sys.path.append({pyroot!r})
user = os.environ["BLENDER_USER_RESOURCES"]
for name in ("torch", "dibr_core", "dibr_blender"):
    assert importlib.util.find_spec(name) is None, f"{{name}} is importable before the install"
import bpy, addon_utils

res = {{}}
t0 = time.time()
res["install"] = sorted(bpy.ops.extensions.package_install_files(
    filepath={zip!r}, repo="user_default", enable_on_install=True))
res["install_s"] = time.time() - t0
module = "bl_ext.user_default.dibr_blender"
res["enabled"] = list(addon_utils.check(module))
res["in_prefs"] = module in bpy.context.preferences.addons
res["torch_loaded_by_install"] = "torch" in sys.modules

t0 = time.time()
import torch
res["torch_import_s"] = time.time() - t0
res["torch_file"] = torch.__file__
res["torch_version"] = torch.__version__
import numpy
res["numpy_file"] = numpy.__file__
import dibr_core
from dibr_core import _ext
res["dibr_core_file"] = dibr_core.__file__
info = os.path.join(os.path.dirname(_ext.__file__), "_build", "build_info.json")
res["hash_match"] = os.path.exists(info) and json.load(open(info))["hash"] == _ext.source_hash()
if not res["hash_match"]:  # fail fast instead of a minute of JIT compiling
    print("RESULT " + json.dumps(res)); sys.exit(3)

res["backend_info"] = sorted(bpy.ops.dibr.backend_info())
status = importlib.import_module(module + ".jobs.status")
res["status_line"] = status.backend_line()
res["ext_how"] = _ext.how()

# The fit operator runs from the installed extension on a small scene.
bpy.ops.wm.read_homefile(use_empty=True)
scene = bpy.context.scene
bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2, radius=0.8)
cam_data = bpy.data.cameras.new("Cam")
cam = bpy.data.objects.new("Cam", cam_data)
scene.collection.objects.link(cam)
cam.location = (0.0, -4.0, 0.0)
cam.rotation_euler = (1.5707963, 0.0, 0.0)
scene.camera = cam
scene.render.resolution_x = scene.render.resolution_y = 32
img = bpy.data.images.new("ref", 32, 32, alpha=True)
px = []
for i in range(32):
    for j in range(32):
        inside = (i - 15.5) ** 2 / 100.0 + (j - 15.5) ** 2 / 36.0 < 1.0
        px += [0.8, 0.3, 0.1, 1.0 if inside else 0.0]
img.pixels.foreach_set(px)
ref_path = os.path.join(user, "ref.png")
img.filepath_raw = ref_path
img.file_format = "PNG"
img.save()
bpy.context.view_layer.objects.active = bpy.context.selected_objects[0]
scene.dibr.image_path = ref_path
scene.dibr.steps = 5
scene.dibr.resolution = 32
res["fit"] = sorted(bpy.ops.dibr.fit())
ob = bpy.context.view_layer.objects.active
res["fit_key"] = ob.data.shape_keys is not None and "DIB-R Fit" in ob.data.shape_keys.key_blocks

# Preferences: registered under the extension's package name, python_path validated on change.
prefs_mod = importlib.import_module(module + ".preferences")
prefs = bpy.context.preferences.addons[module].preferences
res["prefs_class"] = type(prefs).__name__
res["backend_pref"] = prefs.backend
prefs.backend = "reference"
res["backend_pref_set"] = prefs_mod.backend()
prefs.python_path = os.path.join(user, "no-such-env")
res["bad_path_message"] = prefs_mod._path_message
fake = os.path.join(user, "fake-env")
os.makedirs(os.path.join(fake, "torch"))
open(os.path.join(fake, "torch", "__init__.py"), "w").close()
prefs.python_path = fake
res["fake_path_message"] = prefs_mod._path_message
res["fake_on_path"] = sys.path[0] == os.path.realpath(fake)
prefs.python_path = ""
res["fake_removed"] = os.path.realpath(fake) not in sys.path
print("RESULT " + json.dumps(res))
"""


@pytest.fixture
def user_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: the install unpacks about 1 GB, which must not linger after the run.
    path = Path(tempfile.mkdtemp(prefix="dibr_pkg_install_"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.blender
@pytest.mark.slow
def test_install_and_run_from_bundled_wheels(built_zip: Path, user_dir: Path) -> None:
    pyroot = _sanitized_root(user_dir / "pyroot")
    blender_user = user_dir / "blender"
    blender_user.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DIBR_", "BLENDER_"))}
    env["BLENDER_USER_RESOURCES"] = str(blender_user)
    script = INSTALL_SCRIPT.format(pyroot=str(pyroot), zip=str(built_zip))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", script], env=env, cwd=str(user_dir),
                         capture_output=True, text=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-4000:] + out.stderr[-4000:]
    res: Dict[str, Any] = json.loads(lines[-1][len("RESULT "):])

    site = str(blender_user / "extensions" / ".local" / "lib")
    assert res["install"] == ["FINISHED"]
    assert res["enabled"] == [True, True] and res["in_prefs"]
    assert not res["torch_loaded_by_install"], "enabling the extension must not import torch"
    assert res["torch_file"].startswith(site), res["torch_file"]
    assert res["dibr_core_file"].startswith(site), res["dibr_core_file"]
    assert res["numpy_file"].startswith(str(pyroot)), "numpy must be Blender's own"
    assert res["hash_match"], "the prebuilt kernel does not match the installed sources/torch"
    assert res["backend_info"] == ["FINISHED"]
    assert res["ext_how"] == "prebuilt"
    assert res["status_line"].startswith("DIB-R backend: cpu"), res["status_line"]
    assert res["fit"] == ["FINISHED"] and res["fit_key"], "the fit operator runs from the installed extension"
    assert res["prefs_class"] == "DIBR_AddonPreferences"
    assert res["backend_pref"] == "auto" and res["backend_pref_set"] == "reference"
    assert "does not exist" in res["bad_path_message"]
    assert "already loaded" in res["fake_path_message"] and res["fake_on_path"]
    assert res["fake_removed"]


# ----------------------------------------------------------------------------- deps (no bpy, fast)


@pytest.fixture
def deps(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(sys, "path", list(sys.path))
    return _load("dibr_deps_under_test", ROOT / "dibr_blender" / "jobs" / "deps.py")


def test_deps_check_python_path(deps: ModuleType, tmp_path: Path) -> None:
    assert deps.check_python_path("") is None
    assert "does not exist" in deps.check_python_path(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    assert "not a folder" in deps.check_python_path(str(tmp_path / "file.txt"))
    env = tmp_path / "env"
    site = env / "lib" / "python3.11" / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("")
    msg = deps.check_python_path(str(env))
    assert "No torch package" in msg and str(site) in msg
    assert deps.check_python_path(str(site)) is None
    (site / "torch" / "_C.cpython-39-x86_64-linux-gnu.so").write_text("")
    assert "another Python version" in deps.check_python_path(str(site))


def test_deps_prepare_import_path(deps: ModuleType, tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch" / "__init__.py").write_text("")
    assert deps.prepare_import_path("") is None
    assert "does not exist" in deps.prepare_import_path(str(tmp_path / "missing"))
    msg = deps.prepare_import_path(str(site))
    assert sys.path[0] == str(site.resolve())
    if "torch" in sys.modules:  # the test process's torch stays in use until a restart
        assert msg is not None and "restart" in msg
    else:
        assert msg is None
    deps.prepare_import_path(str(site))
    assert sys.path.count(str(site.resolve())) == 1
    assert deps.prepare_import_path("") is None
    assert str(site.resolve()) not in sys.path
