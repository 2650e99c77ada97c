"""The batch's outputs on the real bpy module: a folder that cannot be written is found before
any work, a failed --export writes nothing and says so in one line, a corrupt --weights file is
one clear line, and a Python without bpy is told what to run."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List

import pytest

bpy = pytest.importorskip("bpy")

from dibr_blender import cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
        (folder / ".probe").unlink()
        return True
    except OSError:
        return False


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder this process cannot write: chmod 555, and for root (who ignores the mode) the
    immutable attribute; skipped where neither works."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    immutable = False
    if _writable(d) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode == 0
    try:
        if _writable(d):
            pytest.skip("cannot make a read-only folder here")
        yield d
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        d.chmod(0o755)


def _stderr_lines(text: str) -> List[str]:
    return [ln for ln in text.strip().splitlines() if ln.strip()]


@pytest.mark.blender
def test_read_only_output_folder_is_refused_before_any_work(addon, readonly_dir, tmp_path, capfd) -> None:
    out = readonly_dir / "out.blend"
    code = cli.main(["generate", "--category", "chair", "--count", "1", "--seed", "0",
                     "--output", str(out), "--report", str(tmp_path / "r.json")])
    cap = capfd.readouterr()
    err = _stderr_lines(cap.err)
    assert code == cli.EXIT_BAD_INPUT, cap
    assert len(err) == 1 and "--output folder is not writable" in err[0], err
    assert "sampled" not in cap.out and not (tmp_path / "r.json").exists()


@pytest.mark.blender
def test_failed_export_writes_nothing_and_prints_one_line(addon, tmp_path, capfd, monkeypatch) -> None:
    """The exporter fails after the .blend is saved: Blender prints its traceback on stderr (C
    level) and raises; the batch removes what it staged and prints one line."""
    def broken_export(path: str, selection_only: bool) -> None:
        os.write(2, b"Traceback (most recent call last):\n  File \"io_scene_gltf2\", line 1\nValueError: boom\n")
        raise RuntimeError("Error: Python: Traceback (most recent call last):\n  ...\nValueError: boom")

    monkeypatch.setattr(cli, "export_glb", broken_export)
    out, glb, rep = tmp_path / "out.blend", tmp_path / "out.glb", tmp_path / "r.json"
    code = cli.main(["generate", "--category", "chair", "--count", "1", "--seed", "0", "--texture-size", "16",
                     "--output", str(out), "--export", str(glb), "--report", str(rep)])
    cap = capfd.readouterr()
    err = _stderr_lines(cap.err)
    assert code == cli.EXIT_FAILURE, cap
    assert len(err) == 1, err
    assert err[0].startswith("dibr_blender.batch: failed: could not write " + str(glb)), err
    assert "ValueError: boom" in err[0] and "nothing was written" in err[0], err
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)


@pytest.mark.blender
def test_outputs_are_moved_into_place_together(addon, tmp_path, capfd) -> None:
    out, glb, rep = tmp_path / "out.blend", tmp_path / "out.glb", tmp_path / "r.json"
    code = cli.main(["generate", "--category", "chair", "--count", "1", "--seed", "0", "--texture-size", "16",
                     "--output", str(out), "--export", str(glb), "--report", str(rep)])
    cap = capfd.readouterr()
    assert code == cli.EXIT_OK, cap
    assert sorted(os.listdir(tmp_path)) == ["out.blend", "out.glb", "r.json"]
    assert glb.read_bytes()[:4] == b"glTF" and out.stat().st_size > 0


@pytest.mark.blender
def test_corrupt_weights_is_one_clear_line(addon, tmp_path, capfd) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x02garbage that is no pickle" * 10)
    out = tmp_path / "out.blend"
    code = cli.main(["generate", "--category", "chair", "--count", "1", "--seed", "0", "--weights", str(bad),
                     "--output", str(out)])
    err = _stderr_lines(capfd.readouterr().err)
    assert code == cli.EXIT_BAD_INPUT
    assert len(err) == 1 and "generator weights file" in err[0] and "cannot be loaded" in err[0], err
    assert not out.exists()


@pytest.mark.blender
def test_python_without_bpy_is_told_what_to_run(tmp_path) -> None:
    code = ("import runpy, sys\nsys.modules['bpy'] = None\n"
            "sys.argv = ['dibr_blender.batch', 'generate', '--category', 'chair', '--count', '1', '--seed', '0',"
            f" '--output', {str(tmp_path / 'o.blend')!r}]\n"
            "runpy.run_module('dibr_blender.batch', run_name='__main__')\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    err = _stderr_lines(r.stderr)
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert "no bpy module" in err[0] and ".venv/bin/python" in err[0], err
