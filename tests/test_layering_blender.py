"""dibr_blender's layers: ``jobs/`` never imports bpy (or Blender's other modules) nor ``scene/``,
``scene/`` never imports the UI, and importing the package or any ``jobs/`` module works with bpy
blocked. No bpy needed to run these tests."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dibr_blender"
BLENDER_MODULES = {"bpy", "bpy_extras", "bpy_types", "mathutils", "bmesh", "gpu", "gpu_extras", "addon_utils"}
UI_MODULES = {"operators", "props", "preferences", "ui", "cli", "batch", "demo", "bench"}


def _modules(folder: str) -> List[Path]:
    return sorted(p for p in (PKG / folder).glob("*.py"))


def _imports(path: Path, package: str) -> Iterator[Tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``path``, top level or inside functions;
    relative imports are resolved against ``package`` (the module's package)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if node.module is None or node.level:
                for alias in node.names:  # `from . import x` may name a submodule
                    yield node.lineno, f"{prefix}.{alias.name}"
            yield node.lineno, prefix


def _violations(paths: List[Path], package: str, forbidden: Set[str]) -> List[str]:
    """``path:line imports name`` for every import of a ``forbidden`` module or of anything below it."""
    bad = []
    for path in paths:
        for line, name in _imports(path, package):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.name}:{line} imports {name}")
    return bad


def test_jobs_never_import_blender_or_the_scene() -> None:
    assert _modules("jobs"), "no jobs/ modules found"
    forbidden = BLENDER_MODULES | {"dibr_blender.scene"} | {f"dibr_blender.{m}" for m in UI_MODULES}
    assert _violations(_modules("jobs"), "dibr_blender.jobs", forbidden) == []


def test_scene_never_imports_the_ui() -> None:
    assert _modules("scene"), "no scene/ modules found"
    assert _violations(_modules("scene"), "dibr_blender.scene", {f"dibr_blender.{m}" for m in UI_MODULES}) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The AST scan catches bpy and scene imports, also inside functions and relative ones."""
    probe = tmp_path / "_probe_layering.py"
    probe.write_text("def f():\n    import bpy\n    from ..scene import io\n    from ..scene.fit import gather\n"
                     "    from . import convert\n")
    found = _violations([probe], "dibr_blender.jobs", BLENDER_MODULES | {"dibr_blender.scene"})
    assert any("_probe_layering.py:2 imports bpy" in v for v in found), found
    assert any("_probe_layering.py:3 imports dibr_blender.scene" in v for v in found), found
    assert any("_probe_layering.py:4 imports dibr_blender.scene.fit" in v for v in found), found
    assert not any(":5 " in v for v in found), found


def test_jobs_import_with_bpy_blocked() -> None:
    """A fresh interpreter where ``import bpy`` fails imports the package and every jobs/ module,
    and none of them pulls in torch or dibr_core at import time."""
    names = [p.stem for p in _modules("jobs") if p.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        "sys.modules['bpy'] = None\n"
        "sys.modules['mathutils'] = None\n"
        "import dibr_blender\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module('dibr_blender.jobs.' + name)\n"
        "heavy = sorted(m for m in ('torch', 'dibr_core', 'bpy') if sys.modules.get(m) is not None)\n"
        "print('HEAVY', heavy)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout, r.stdout
    assert len(names) >= 9, names


def test_blocked_bpy_really_blocks() -> None:
    """The subprocess trick is honest: a scene/ module fails to import with bpy blocked."""
    code = "import sys\nsys.modules['bpy'] = None\nimport dibr_blender.scene.io\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "bpy" in r.stderr, (r.returncode, r.stderr)
