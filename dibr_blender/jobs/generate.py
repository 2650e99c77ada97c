"""Generate, the steps that need no Blender (no bpy import; torch and dibr_core are imported only
inside the functions that load or sample the generator, so registration stays instant).

The shipped generator (``dibr_core.models.generator``, weights ``dibr_core/weights/generator.pt``)
samples textured meshes of one of the 13 training categories in the canonical frame (+Y up).
Each sample becomes Blender-ready arrays with :func:`meshes.mesh_arrays` (the same
conversion as Image to 3D: +Z up, bounding-box centre at the origin, diagonal ``size``, texture
resized to ``texture_size``).

Determinism: object ``k`` (counting from 0) of a run with ``seed`` is sample 0 of
``Generator.sample(category_k, 1, seed * SEED_STRIDE + k, temperature)``, drawn and decoded on
its own. So the same (category, count, seed, temperature) gives identical objects, and the first
``k`` objects of a run do not depend on ``count``. With the category "all", object ``k`` has the
category ``CATEGORIES[k % 13]``.

Layout: ``count`` objects on a near-square grid in the XY plane (``ceil(sqrt(count))`` columns,
filled row by row, left to right along +X and rows going towards -Y, i.e. reading order seen
from the top view), ``spacing`` metres between neighbouring centres, the grid's bounding box
centred on the given origin (the 3D cursor). A short last row starts at the left column.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import image_to_3d, meshes
from .image_to_3d import CATEGORIES
from .meshes import BlenderMesh

ALL = "all"
MAX_COUNT = 100
MAX_SEED = 2 ** 31 - 1         # Blender's integer properties are 32-bit
SEED_STRIDE = 1000003          # object k of a run with seed s samples with seed s * SEED_STRIDE + k
OBJECT_PREFIX = "DIB-R"
COLLECTION_NAME = "DIB-R Generated"
WEIGHTS_FILE = "generator.pt"

CATEGORY_ITEMS: List[Tuple[str, str, str]] = [
    (c, c.capitalize(), f"Generate {c}s") for c in CATEGORIES] + [
    (ALL, "All", "Cycle through the 13 categories, one object each in turn")]


# --------------------------------------------------------------------------- layout and seeds

def grid_shape(count: int) -> Tuple[int, int]:
    """(rows, columns) of the near-square grid for ``count`` objects: ``ceil(sqrt(count))``
    columns and as many rows as needed."""
    if count < 1:
        raise ValueError(f"grid_shape(): count must be at least 1, got {count}")
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def grid_positions(count: int, spacing: float, origin: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """(count, 3) object locations: row by row (+X along a row, rows towards -Y), ``spacing``
    between neighbours, the grid's bounding box centred on ``origin`` (z = origin's z)."""
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ValueError(f"grid_positions(): spacing must be positive, got {spacing}")
    rows, cols = grid_shape(count)
    k = np.arange(count)
    r, c = k // cols, k % cols
    x = (c - (cols - 1) / 2.0) * spacing
    y = ((rows - 1) / 2.0 - r) * spacing
    o = np.asarray(origin, dtype=np.float64).reshape(3)
    return np.stack([x, y, np.zeros(count)], axis=1) + o


def object_seed(seed: int, k: int) -> int:
    """The sampling seed of object ``k`` (from 0) of a run with ``seed``."""
    return int(seed) * SEED_STRIDE + int(k)


def object_category(category: str, k: int) -> str:
    """The category of object ``k``: ``category``, or the k-th in turn for "all"."""
    return CATEGORIES[k % len(CATEGORIES)] if category == ALL else category


def object_name(category: str, k: int) -> str:
    """"DIB-R <category> <k + 1>" (Blender adds ".001" when the name is taken)."""
    return f"{OBJECT_PREFIX} {category} {k + 1}"


def check_settings(category: str, count: int, seed: int, *, size: float = 1.0, spacing: float = 1.0,
                   texture_size: int = 0, temperature: float = 1.0) -> None:
    """Raise ValueError with one line for a bad setting."""
    if category != ALL and category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected {ALL} or one of {', '.join(CATEGORIES)}")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 1 to {MAX_COUNT}, got {count}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be 0 to {MAX_SEED}, got {seed}")
    if not (size > 0 and math.isfinite(size)):
        raise ValueError(f"size must be positive, got {size}")
    if not (spacing > 0 and math.isfinite(spacing)):
        raise ValueError(f"spacing must be positive, got {spacing}")
    if texture_size < 0:
        raise ValueError(f"texture size must be 0 (native) or positive, got {texture_size}")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be 0 or more, got {temperature}")


# --------------------------------------------------------------------------- the generator

@dataclass
class GeneratedMesh:
    """One sample in the shape ``meshes.mesh_arrays`` takes (that of
    ``dibr_core.inference.PredictedMesh``): vertices (V, 3) canonical, faces (F, 3), colors
    (V, 3) sRGB-encoded, face_uvs (F, 3, 2), texture (T, T, 3) rows top to bottom or None."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    face_uvs: np.ndarray
    texture: Optional[np.ndarray]


def sample_mesh(output: Any, faces: Any, face_uvs: Any, i: int = 0) -> GeneratedMesh:
    """Sample ``i`` of a ``PredictorOutput`` (vertices (B, V, 3), colors (B, V, 3), texture
    (B, 3, T, T) channels first or None) with the decoder's faces and UVs."""
    tex = None if output.texture is None else np.transpose(meshes.as_array(output.texture[i]), (1, 2, 0))
    return GeneratedMesh(vertices=meshes.as_array(output.vertices[i]), faces=meshes.as_array(faces),
                         colors=meshes.as_array(output.colors[i]),
                         face_uvs=meshes.as_array(face_uvs), texture=tex)


def default_weights() -> Any:
    """The shipped generator weights file (a ``pathlib.Path``)."""
    from dibr_core import inference

    return inference.GENERATOR_WEIGHTS


def load(path: Any = None) -> Any:
    """The generator (eval mode) from ``path`` (default: the shipped weights), cached per file and
    modification time by ``dibr_core.inference.load_shipped_generator``.

    Raises:
        ImportError: torch or dibr_core cannot be imported; FileNotFoundError: no weights file;
        ValueError (one line): a file that is no generator weights file (corrupt, or another model's).
    """
    from dibr_core import inference

    p = os.path.abspath(os.fspath(path if path else default_weights()))
    if not os.path.isfile(p):
        raise FileNotFoundError(f"generator weights file not found: {p}")
    try:
        return inference.load_shipped_generator(p)
    except ImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling and state-dict errors of all kinds
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"generator weights file {p} cannot be loaded ({type(exc).__name__}: {first}); give a "
                         "weights file written by dibr_core's generator training, or leave out --weights") from None


def weights_info(path: Any = None) -> Dict[str, Any]:
    """``{"weights": file name, "generator": decoder config, rank and metadata}`` of a generator
    weights file (no absolute paths)."""
    p = path if path else default_weights()
    return {"weights": os.path.basename(os.fspath(p)),
            "generator": image_to_3d.weights_meta(p, ("decoder_config", "rank"))}


@dataclass
class Sample:
    """Object ``index`` of a run: its category, sampling seed, name and the generator's mesh."""

    index: int
    category: str
    seed: int
    name: str
    raw: GeneratedMesh

    def arrays(self, size: float = 1.0, texture_size: int = 0) -> BlenderMesh:
        """Blender-ready arrays (``meshes.mesh_arrays``): +Z up, centred, bounding-box
        diagonal ``size``, texture resized to ``texture_size`` (0: the generator's own size)."""
        return meshes.mesh_arrays(self.raw, size, texture_size)

    @property
    def native_texture_size(self) -> Optional[int]:
        return None if self.raw.texture is None else int(self.raw.texture.shape[0])


def sample(category: str, count: int, seed: int, *, temperature: float = 1.0, weights: Any = None,
           generator: Any = None, log: Optional[Callable[[str], None]] = None) -> List[Sample]:
    """Sample ``count`` objects (see the module's notes on determinism). The Blender arrays are
    made per object afterwards with :meth:`Sample.arrays`, so large textures are not all held
    at once.

    Args:
        weights: weights file (default: the shipped one), unless ``generator`` is given;
        log: optional ``callable(str)`` for progress lines.

    Raises:
        ValueError: bad settings; FileNotFoundError: no weights file; ImportError: no torch.
    """
    check_settings(category, count, seed, temperature=temperature)
    gen = generator if generator is not None else load(weights)
    faces, uvs = gen.decoder.faces, gen.decoder.face_uvs
    out: List[Sample] = []
    every = max(1, count // 10)
    t0 = time.perf_counter()
    for k in range(count):
        cat = object_category(category, k)
        s = object_seed(seed, k)
        pred = gen.sample(cat, 1, s, temperature)
        out.append(Sample(k, cat, s, object_name(cat, k), sample_mesh(pred, faces, uvs, 0)))
        if log is not None and ((k + 1) % every == 0 or k + 1 == count):
            log(f"sampled {k + 1}/{count} ({time.perf_counter() - t0:.2f} s)")
    return out


# --------------------------------------------------------------------------- the report

def make_report(*, category: str, count: int, seed: int, temperature: float, size: float, spacing: float,
                texture_size: int, samples: Sequence[Sample], object_names: Sequence[str], collection: str,
                locations: np.ndarray, seconds: float, sample_seconds: float,
                weights: Optional[Dict[str, Any]] = None, output: Optional[str] = None,
                export: Optional[str] = None) -> Dict[str, Any]:
    """The JSON report of one Generate run (the batch command writes it; the operator prints its
    summary)."""
    w = weights or {}
    native = samples[0].native_texture_size if samples else None
    return {
        "command": "generate",
        "category": category,
        "count": int(count),
        "seed": int(seed),
        "seed_rule": f"object k samples with seed * {SEED_STRIDE} + k",
        "temperature": float(temperature),
        "size": float(size),
        "spacing": float(spacing),
        "collection": collection,
        "objects": list(object_names),
        "object_categories": [s.category for s in samples],
        "object_seeds": [s.seed for s in samples],
        "locations": [[round(float(x), 6) for x in row] for row in np.asarray(locations)],
        "vertices": int(samples[0].raw.vertices.shape[0]) if samples else None,
        "faces": int(samples[0].raw.faces.shape[0]) if samples else None,
        "texture_size": None if native is None else (texture_size or native),
        "native_texture_size": native,
        "seconds": round(float(seconds), 3),
        "seconds_per_object": round(float(seconds) / max(1, int(count)), 4),
        "sample_seconds": round(float(sample_seconds), 3),
        "output": output,
        "export": export,
        "weights": w.get("weights"),
        "generator": w.get("generator"),
    }


def summary(report: Dict[str, Any]) -> str:
    """One line for the operator's report."""
    return (f"DIB-R Generate: {report['count']} {report['category']} object(s) (seed {report['seed']}"
            + (f", {report['texture_size']} px textures" if report.get("texture_size") else "")
            + f") in '{report['collection']}' in {report['seconds']:.2f} s")


__all__ = ["ALL", "CATEGORY_ITEMS", "COLLECTION_NAME", "GeneratedMesh", "MAX_COUNT", "MAX_SEED", "SEED_STRIDE",
           "Sample", "check_settings", "default_weights", "grid_positions", "grid_shape", "load", "make_report",
           "object_category", "object_name", "object_seed", "sample", "sample_mesh", "summary", "weights_info"]
