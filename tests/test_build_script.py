"""build.py test's reruns of the float-sensitive tests under other CPU code paths."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dibr_build_script", ROOT / "build.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_code_path_passes_narrow_the_selection_to_the_marker() -> None:
    b = _build()
    assert b.code_path_args([]) == ["-m", "float_sensitive"]
    assert b.code_path_args(["tests/test_render.py", "-x"]) == ["tests/test_render.py", "-x", "-m", "float_sensitive"]
    assert b.code_path_args(["-m", "not slow", "-q"]) == ["-m", "(not slow) and float_sensitive", "-q"]
    assert b.code_path_args(["-mnot slow"]) == ["-m(not slow) and float_sensitive"]
    paths = [sorted(p) for p in b.CODE_PATHS]
    assert paths == [["MKL_ENABLE_INSTRUCTIONS"], ["ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"]]
    assert b.CODE_PATHS[1] == {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ATEN_CPU_CAPABILITY": "default"}


def test_marker_is_registered_and_used() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"float_sensitive: ' in text
    marked = [p.name for p in (ROOT / "tests").glob("test_*.py") if "mark.float_sensitive" in p.read_text()]
    assert {"test_render.py", "test_camera.py", "test_kernels.py"} <= set(marked)


@pytest.mark.float_sensitive
def test_the_code_path_environment_reaches_the_tests() -> None:
    """In a code-path pass ATen really runs its scalar kernels (ATEN_CPU_CAPABILITY=default)."""
    import os

    import torch

    if os.environ.get("ATEN_CPU_CAPABILITY") == "default":
        assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
