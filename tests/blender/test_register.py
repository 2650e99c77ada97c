"""The extension registers on the real bpy module without importing torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import sys
import bpy
sys.path.insert(0, {root!r})
import dibr_blender
dibr_blender.register()
assert "torch" not in sys.modules, "registration must not import torch"
assert hasattr(bpy.types, "DIBR_PT_main")
assert bpy.ops.dibr.backend_info() == {{"FINISHED"}}
from dibr_blender.jobs import status
assert status.backend_line().startswith("DIB-R backend: "), status.backend_line()
dibr_blender.unregister()
assert not hasattr(bpy.types, "DIBR_PT_main")
print("REGISTER-OK")
"""

MISSING_TORCH = r"""
import sys
import bpy
sys.path.insert(0, {root!r})
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.modules["dibr_core"] = None
import dibr_blender
dibr_blender.register()
assert bpy.ops.dibr.backend_info() == {{"FINISHED"}}
from dibr_blender.jobs import status
print("LINE", status.backend_line())
"""


@pytest.mark.blender
def test_register_unregister(tmp_path: Path) -> None:
    pytest.importorskip("bpy")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "REGISTER-OK" in out.stdout


@pytest.mark.blender
def test_missing_torch_gives_a_clear_line(tmp_path: Path) -> None:
    pytest.importorskip("bpy")
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", MISSING_TORCH.format(root=str(ROOT))], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("LINE ")][0]
    assert line.startswith("LINE DIB-R unavailable: cannot import torch/dibr_core"), line
    assert "Traceback" not in out.stderr
