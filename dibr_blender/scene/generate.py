"""Generate in the scene, shared by the operator and the batch CLI: sample ``count`` textured
meshes of a category with the shipped generator and add them on a grid around a location (the
3D cursor), in the collection "DIB-R Generated". Every check and all sampling run before anything
is added; when adding fails part way, everything this run added is removed again (objects,
meshes, materials, images, and the collection when this run made it)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

import bpy

from ..jobs import generate, meshes
from ..jobs.records import SceneError
from .objects import Created, add_mesh_object, select_only


@dataclass
class Request:
    """One Generate run (see ``generate`` for the seeds and the grid)."""

    category: str = "chair"          # one of the 13 categories, or "all"
    count: int = 1
    seed: int = 0
    size: float = 1.0                # bounding-box diagonal of each object (metres)
    spacing: float = 1.5             # distance between neighbouring grid cells (metres)
    texture_size: int = 256          # 0: the generator's native size
    temperature: float = 1.0
    weights: str = ""                # "": the shipped generator.pt


def target_collection(scene: Any, created: Created) -> Any:
    """The collection "DIB-R Generated" in the scene (reused when the scene has it anywhere in its
    tree; else made and linked under the scene collection, and recorded in ``created``)."""
    for coll in scene.collection.children_recursive:
        if coll.name == generate.COLLECTION_NAME:
            return coll
    coll = created.add(bpy.data.collections, bpy.data.collections.new(generate.COLLECTION_NAME))
    scene.collection.children.link(coll)
    return coll


def run(scene: Any, location: Sequence[float], req: Request,
        log: Callable[[str], None] = lambda s: None) -> Tuple[List[Any], Dict[str, Any]]:
    """Sample and add the objects. Returns (objects, report dict; see ``generate.make_report``).

    Raises:
        SceneError: bad input (nothing was added).
    """
    t0 = time.perf_counter()
    try:
        generate.check_settings(req.category, req.count, req.seed, size=req.size, spacing=req.spacing,
                                texture_size=req.texture_size, temperature=req.temperature)
    except ValueError as exc:
        raise SceneError(str(exc)) from None
    weights = os.path.abspath(bpy.path.abspath(req.weights)) if req.weights else None
    try:
        t1 = time.perf_counter()
        samples = generate.sample(req.category, req.count, req.seed, temperature=req.temperature,
                                  weights=weights, log=log)
        sample_seconds = time.perf_counter() - t1
        info = generate.weights_info(weights)
    except ImportError as exc:
        raise SceneError(f"torch/dibr_core cannot be imported ({exc}); see the add-on preferences") from None
    except (ValueError, FileNotFoundError) as exc:
        raise SceneError(str(exc)) from None
    log(f"sampled {len(samples)} {req.category} object(s) with seed {req.seed} in {sample_seconds:.3f} s "
        f"(weights {info['weights']})")
    positions = generate.grid_positions(req.count, req.spacing, location)
    view_layer: Any = bpy.context.view_layer

    created = Created(scene)
    objects: List[Any] = []
    every = max(1, req.count // 10)
    try:
        collection = target_collection(scene, created)
        for s, loc in zip(samples, positions):
            mesh = meshes.on_ground(s.arrays(req.size, req.texture_size))  # stands on the cursor's plane
            ob, _ = add_mesh_object(s.name, mesh, collection, loc, created,
                                    {"dibr_category": s.category, "dibr_seed": req.seed, "dibr_index": s.index})
            objects.append(ob)
            if (s.index + 1) % every == 0 or s.index + 1 == req.count:
                log(f"added {s.index + 1}/{req.count} ('{ob.name}')")
        view_layer.update()
    except BaseException:
        created.rollback()
        raise
    select_only(view_layer, objects, active=objects[0])
    report = generate.make_report(
        category=req.category, count=req.count, seed=req.seed, temperature=req.temperature, size=req.size,
        spacing=req.spacing, texture_size=req.texture_size, samples=samples,
        object_names=[ob.name for ob in objects], collection=collection.name, locations=positions,
        seconds=time.perf_counter() - t0, sample_seconds=sample_seconds, weights=info)
    return objects, report


__all__ = ["Request", "run", "target_collection"]
