"""Fixtures for the tests on the real bpy module (pip bpy==5.0.1), CPU only."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

import pytest

# Isolate Blender's user folders (preferences, extensions) before bpy is imported.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="dibr_blender_user_"))

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="session")
def addon() -> Iterator[Any]:
    import dibr_blender

    dibr_blender.register()
    yield dibr_blender
    dibr_blender.unregister()


@pytest.fixture
def empty_scene() -> Any:
    bpy.ops.wm.read_homefile(use_empty=True)
    return bpy.context.scene


@pytest.fixture(scope="session")
def default_scene_files(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """The main job's default scene, built once: (blend path, reference image path)."""
    from dibr_blender.scene import default_scene

    folder = tmp_path_factory.mktemp("default_scene")
    return default_scene.build(str(folder), size=128, samples=8)
