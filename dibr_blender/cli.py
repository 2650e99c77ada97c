"""Headless batch commands, shared by both forms:

    blender --background IN.blend --python dibr_blender/batch.py -- fit ARGS
    python -m dibr_blender.batch fit --blend IN.blend ARGS
    blender --background --python dibr_blender/batch.py -- image-to-3d ARGS
    python -m dibr_blender.batch image-to-3d ARGS
    blender --background --python dibr_blender/batch.py -- generate ARGS
    python -m dibr_blender.batch generate ARGS

fit ARGS: [--object NAME] (--image IMAGE [--mask MASK] | --view CAMERA=IMAGE[,MASK] ...) [--steps N]
          [--output OUT.blend] [--export OUT.glb] [--report REPORT.json] [--resolution PX]
          [--texture] [--no-colors] [--no-shape] [--lighting auto|none|sun|sh] [--apply] [--smoothness L]
          [--remesh [--max-faces N] [--target-edge-px PX]] [--refine-cameras] [--refine-focal] [--write-cameras]
image-to-3d ARGS: --image IMAGE [--mask MASK] [--category NAME] [--size S] [--texture-size N]
          [--refine-steps N (default 100, 0: off)] [--refine-camera auto|scene|new] [--refine-resolution PX]
          [--no-face-view] [--background-color auto|#RRGGBB]
          (--output OUT.blend and/or --export OUT.glb) [--report REPORT.json] [--blend IN.blend]
          Without --blend: the .blend Blender was started with, else an empty scene.
generate ARGS: --category NAME|all --count N --seed S [--texture-size N] [--spacing M] [--size M]
          [--temperature T] [--weights FILE.pt] (--output OUT.blend and/or --export OUT.glb)
          [--report REPORT.json] [--blend IN.blend]   (scene as for image-to-3d)

Exit codes: 0 success, 2 bad input (one line on stderr, nothing written), 1 unexpected failure.
Progress lines go to stdout.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
MIN_RESOLUTION = 16   # the panel's minimum too


class BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


def script_args(argv: Sequence[str]) -> List[str]:
    """The arguments after ``--`` when run inside Blender; all of them otherwise."""
    argv = list(argv)
    return argv[argv.index("--") + 1:] if "--" in argv else argv


def build_parser(inside_blender: bool) -> argparse.ArgumentParser:
    p = _Parser(prog="dibr_blender.batch", description="DIB-R headless batch commands")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="fit a mesh to reference images")
    f.add_argument("--blend", help="input .blend (omitted inside blender, which has loaded it)",
                   required=not inside_blender)
    f.add_argument("--object", help="mesh object to fit (default: the active object)")
    f.add_argument("--image", help="reference image seen by the scene's active camera")
    f.add_argument("--mask", help="silhouette image for --image (default: the image's alpha)")
    f.add_argument("--view", action="append", default=[], metavar="CAMERA=IMAGE[,MASK]",
                   help="a camera and its reference image, optionally a mask image (repeatable)")
    _add_background_args(f)
    f.add_argument("--steps", type=int, default=300)
    f.add_argument("--resolution", type=int, default=256, help="longer image side used by the fit")
    f.add_argument("--output", help="write the result .blend here")
    f.add_argument("--export", help="export the result as glTF binary (.glb) here")
    f.add_argument("--report", help="write a JSON report here")
    f.add_argument("--texture", action="store_true", help="also fit a UV texture")
    f.add_argument("--no-colors", action="store_true", help="do not fit vertex colours")
    f.add_argument("--no-shape", action="store_true", help="do not move vertices")
    f.add_argument("--lighting", choices=["auto", "none", "sun", "sh"], default="auto",
                   help="lighting model: auto (the scene's lights as a sun, so colours are albedo; unlit "
                        "without lights), none (colours as seen), sun, sh")
    f.add_argument("--fit-lighting", action="store_true", help="optimise the lighting too")
    f.add_argument("--apply", action="store_true", help="write positions into the mesh, not a shape key")
    f.add_argument("--smoothness", type=float, default=None, metavar="LAMBDA",
                   help="how smoothly the surface moves: lambda of the large-step optimiser (default 10; larger "
                        "is smoother, 0 moves every vertex on its own)")
    f.add_argument("--remesh", action="store_true",
                   help="remesh the surface during the fit (one closed surface needed); the result is new mesh "
                        "data, not a shape key")
    f.add_argument("--max-faces", type=int, default=None, help="face budget of the remeshed surface (at least 4)")
    f.add_argument("--target-edge-px", type=float, default=None,
                   help="target edge length of the remeshed surface in pixels (default 4)")
    f.add_argument("--refine-cameras", action="store_true", help="correct every view's camera pose during the fit")
    f.add_argument("--refine-focal", action="store_true",
                   help="also correct each camera's focal length (implies --refine-cameras)")
    f.add_argument("--write-cameras", action="store_true",
                   help="move the cameras to the refined ones in the output .blend (with --refine-cameras)")
    from .jobs.image_to_3d import CATEGORIES, REFINE_RESOLUTION, REFINE_STEPS

    i = sub.add_parser("image-to-3d", help="predict a textured mesh from one image and add it to a scene")
    i.add_argument("--image", required=True, help="image of one object; its alpha is the silhouette")
    i.add_argument("--mask", help="silhouette image (its alpha, or grey values without alpha)")
    _add_background_args(i)
    i.add_argument("--category", choices=["none", *CATEGORIES], default="none", help="category hint")
    i.add_argument("--size", type=float, default=1.0, help="bounding-box diagonal of the object (metres)")
    i.add_argument("--texture-size", type=int, default=256, help="texture side in pixels (0: the predictor's)")
    i.add_argument("--refine-steps", type=int, default=REFINE_STEPS,
                   help=f"fit steps of the refine in the input view (default {REFINE_STEPS}; 0: no refine)")
    i.add_argument("--refine-camera", choices=["auto", "scene", "new"], default="auto",
                   help="camera of the refine: the scene camera if any (auto), the scene camera, or a new one")
    i.add_argument("--refine-resolution", type=int, default=REFINE_RESOLUTION,
                   help=f"image side used by the refine (default {REFINE_RESOLUTION})")
    i.add_argument("--no-face-view", action="store_true",
                   help="do not turn the object to face the scene camera")
    i.add_argument("--blend", help="start from this .blend (default: the loaded one, else an empty scene)")
    i.add_argument("--output", help="write the result .blend here")
    i.add_argument("--export", help="export the new object as glTF binary (.glb) here")
    i.add_argument("--report", help="write a JSON report here")
    from .jobs.generate import ALL, MAX_COUNT

    g = sub.add_parser("generate", help="generate textured objects of a category on a grid at the 3D cursor")
    g.add_argument("--category", required=True, choices=[*CATEGORIES, ALL],
                   help="category of the objects (all: cycle through the categories)")
    g.add_argument("--count", required=True, type=int, help=f"number of objects (1 to {MAX_COUNT})")
    g.add_argument("--seed", required=True, type=int, help="random seed (same seed, same objects)")
    g.add_argument("--texture-size", type=int, default=256, help="texture side in pixels (0: the generator's)")
    g.add_argument("--spacing", type=float, default=1.5, help="distance between neighbouring objects (metres)")
    g.add_argument("--size", type=float, default=1.0, help="bounding-box diagonal of each object (metres)")
    g.add_argument("--temperature", type=float, default=1.0, help="spread around the category's mean shape")
    g.add_argument("--weights", help="generator weights file (default: the shipped generator.pt)")
    g.add_argument("--blend", help="start from this .blend (default: the loaded one, else an empty scene)")
    g.add_argument("--output", help="write the result .blend here")
    g.add_argument("--export", help="export the new objects as glTF binary (.glb) here")
    g.add_argument("--report", help="write a JSON report here")
    return p


def _add_background_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--background-color", metavar="auto|#RRGGBB|R,G,B",
                   help="make the silhouette by keying out this background colour (stored sRGB values; auto: "
                        "the colour of the image's border), for opaque images without a mask")
    p.add_argument("--background-tolerance", type=float, default=None,
                   help="largest per-channel difference (0..1) from the background colour still keyed out "
                        "(default 0.1)")


def _parse_background(args: argparse.Namespace) -> None:
    """``args.background``: a BackgroundKey from --background-color/--background-tolerance, or None."""
    from .jobs.masks import DEFAULT_TOLERANCE, BackgroundKey, parse_color

    args.background = None
    if args.background_color is None:
        if args.background_tolerance is not None:
            raise BadInput("--background-tolerance goes with --background-color")
        return
    tol = DEFAULT_TOLERANCE if args.background_tolerance is None else args.background_tolerance
    if not (0.0 < tol <= 1.0):
        raise BadInput(f"--background-tolerance must be in (0, 1], got {tol}")
    try:
        args.background = BackgroundKey(parse_color(args.background_color), tol)
    except ValueError as exc:
        raise BadInput(f"--background-color: {exc}") from None


def _check_out(path: Optional[str], suffix: str, what: str) -> Optional[str]:
    if path is None:
        return None
    path = os.path.abspath(path)
    if not path.lower().endswith(suffix):
        raise BadInput(f"{what} must end with {suffix}: {path}")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise BadInput(f"{what} folder does not exist: {parent}")
    if os.path.isdir(path):
        raise BadInput(f"{what} is a folder: {path}")
    try:  # a real write, before any work (os.access says yes to root on a read-only folder)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".dibr-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise BadInput(f"{what} folder is not writable: {parent} ({exc.strerror})") from None
    return path


def _parse_image_to_3d(args: argparse.Namespace) -> argparse.Namespace:
    import math

    _parse_background(args)
    args.image = os.path.abspath(args.image)
    if not os.path.isfile(args.image):
        raise BadInput(f"image file not found: {args.image}")
    if args.mask is not None:
        args.mask = os.path.abspath(args.mask)
        if not os.path.isfile(args.mask):
            raise BadInput(f"mask image not found: {args.mask}")
    if not (args.size > 0 and math.isfinite(args.size)):
        raise BadInput(f"--size must be positive, got {args.size}")
    if args.texture_size < 0 or args.texture_size > 8192:
        raise BadInput(f"--texture-size must be 0 (native) to 8192, got {args.texture_size}")
    if args.refine_steps < 0:
        raise BadInput(f"--refine-steps must be 0 (no refine) or more, got {args.refine_steps}")
    if args.refine_resolution < 16:
        raise BadInput(f"--refine-resolution must be at least 16, got {args.refine_resolution}")
    return _check_scene_outputs(args)


def _check_scene_outputs(args: argparse.Namespace) -> argparse.Namespace:
    """The input .blend and the output paths of a command that adds objects to a scene."""
    if args.blend is not None and not os.path.isfile(args.blend):
        raise BadInput(f"blend file not found: {args.blend}")
    args.output = _check_out(args.output, ".blend", "--output")
    args.export = _check_out(args.export, ".glb", "--export")
    args.report = _check_out(args.report, ".json", "--report")
    if not (args.output or args.export):
        raise BadInput("nothing to write: give --output OUT.blend and/or --export OUT.glb")
    return args


def _parse_generate(args: argparse.Namespace) -> argparse.Namespace:
    from .jobs.generate import check_settings

    if args.texture_size > 8192:
        raise BadInput(f"--texture-size must be 0 (native) to 8192, got {args.texture_size}")
    try:
        check_settings(args.category, args.count, args.seed, size=args.size, spacing=args.spacing,
                       texture_size=args.texture_size, temperature=args.temperature)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if args.weights is not None:
        args.weights = os.path.abspath(args.weights)
        if not os.path.isfile(args.weights):
            raise BadInput(f"generator weights file not found: {args.weights}")
    return _check_scene_outputs(args)


def _parse_fit_options(args: argparse.Namespace) -> None:
    """Check the remeshing and camera-refinement options of ``fit``."""
    import math

    if args.smoothness is not None and not (args.smoothness >= 0 and math.isfinite(args.smoothness)):
        raise BadInput(f"--smoothness must be 0 or more, got {args.smoothness}")
    if not args.remesh:
        for flag, value in (("--max-faces", args.max_faces), ("--target-edge-px", args.target_edge_px)):
            if value is not None:
                raise BadInput(f"{flag} goes with --remesh")
    elif args.no_shape:
        raise BadInput("--remesh moves the vertices; it cannot go with --no-shape")
    if args.max_faces is not None and args.max_faces < 4:
        raise BadInput(f"--max-faces must be at least 4 (a closed surface has at least 4 triangles), got "
                       f"{args.max_faces}")
    if args.target_edge_px is not None and not (args.target_edge_px > 0 and math.isfinite(args.target_edge_px)):
        raise BadInput(f"--target-edge-px must be a positive number of pixels, got {args.target_edge_px}")
    if args.write_cameras and not (args.refine_cameras or args.refine_focal):
        raise BadInput("--write-cameras goes with --refine-cameras")


def parse(argv: Sequence[str], inside_blender: bool) -> argparse.Namespace:
    args = build_parser(inside_blender).parse_args(list(argv))
    if args.command == "image-to-3d":
        return _parse_image_to_3d(args)
    if args.command == "generate":
        return _parse_generate(args)
    if args.steps < 1:
        raise BadInput(f"--steps must be at least 1, got {args.steps}")
    if args.resolution < MIN_RESOLUTION:
        raise BadInput(f"--resolution must be at least {MIN_RESOLUTION}, got {args.resolution}")
    _parse_fit_options(args)
    _parse_background(args)
    views: List[Tuple[Optional[str], str, Optional[str]]] = []
    if args.mask and not args.image:
        raise BadInput("--mask goes with --image")
    if args.image:
        views.append((None, os.path.abspath(args.image), os.path.abspath(args.mask) if args.mask else None))
    for spec in args.view:
        if "=" not in spec:
            raise BadInput(f"--view must be CAMERA=IMAGE[,MASK], got {spec!r}")
        cam, rest = spec.split("=", 1)
        img, _, mask = rest.partition(",")
        if not cam or not img:
            raise BadInput(f"--view must be CAMERA=IMAGE[,MASK], got {spec!r}")
        views.append((cam, os.path.abspath(img), os.path.abspath(mask) if mask else None))
    if not views:
        raise BadInput("give --image IMAGE or at least one --view CAMERA=IMAGE")
    for _, img, mask in views:
        if not os.path.isfile(img):
            raise BadInput(f"reference image not found: {img}")
        if mask is not None and not os.path.isfile(mask):
            raise BadInput(f"mask image not found: {mask}")
    if args.blend is not None and not os.path.isfile(args.blend):
        raise BadInput(f"blend file not found: {args.blend}")
    args.views = views
    args.output = _check_out(args.output, ".blend", "--output")
    args.export = _check_out(args.export, ".glb", "--export")
    args.report = _check_out(args.report, ".json", "--report")
    if not (args.output or args.export or args.report):
        raise BadInput("nothing to write: give --output, --export and/or --report")
    return args


def run_fit_command(args: argparse.Namespace) -> int:
    import bpy

    from .jobs.fit import FitSettings, result_notes, run_fit
    from .jobs.threads import fit_threads
    from .jobs.records import SceneError
    from .scene import fit as scene_fit

    if args.blend:
        try:
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
        except RuntimeError as exc:
            raise BadInput(f"cannot open {args.blend}: {str(exc).strip().splitlines()[-1]}") from None
    extra: Dict[str, Any] = {}
    if args.smoothness is not None:
        extra["smoothness"] = args.smoothness
    if args.target_edge_px is not None:
        extra["target_edge_px"] = args.target_edge_px
    settings = FitSettings(steps=args.steps, max_side=args.resolution, optimize_vertices=not args.no_shape,
                           optimize_colors=not args.no_colors, optimize_texture=args.texture,
                           optimize_lighting=args.fit_lighting, lighting=args.lighting, remesh=args.remesh,
                           max_faces=args.max_faces, optimize_cameras=args.refine_cameras or args.refine_focal,
                           optimize_focal=args.refine_focal, write_cameras=args.write_cameras, **extra)
    try:
        ob, mesh, views = scene_fit.gather(bpy.context.scene, args.object, args.views, settings, args.background)
    except SceneError as exc:
        raise BadInput(str(exc)) from None
    print(f"dibr fit: object '{ob.name}' ({mesh.vertices.shape[0]} vertices, {mesh.faces.shape[0]} triangles), "
          f"{len(views)} view(s) at {views[0].camera.width}x{views[0].camera.height}, {settings.steps} steps",
          flush=True)
    for v in views:
        if v.note:
            print(f"dibr fit: note: {v.note}", flush=True)
    t0 = time.perf_counter()
    every = max(1, settings.steps // 10)

    def progress(step: int, total: int, loss: float) -> None:
        if step % every == 0 or step == total:
            print(f"dibr fit: step {step}/{total} loss {loss:.5f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    try:
        with fit_threads(interactive=False):
            out = run_fit(mesh, views, settings, progress=progress)
    except SceneError as exc:
        raise BadInput(str(exc)) from None
    try:
        scene_fit.apply_result(ob, out, settings, apply_geometry=args.apply)
    except SceneError as exc:
        raise BadInput(str(exc)) from None
    scene_fit.honest_report(ob, out, views, cameras_written=settings.write_cameras)
    seconds = time.perf_counter() - t0
    report = {"command": "fit", "object": ob.name, "steps": out.steps, "seconds": round(seconds, 3),
              "final_loss": out.final_loss, "views": out.views, "faces": out.face_count,
              "topology_changed": out.topology_changed, "remeshes": out.remeshes,
              "self_intersecting_faces": out.self_intersecting_faces,
              "camera_corrections": out.camera_corrections, "cameras_written": settings.write_cameras}
    notes = result_notes(out)
    if out.topology_changed:
        report["shape_key_note"] = notes[0]
        report["carried"] = out.carried
    for line in notes:
        print(f"dibr fit: {line}", flush=True)
    _write_outputs(args, report, lambda line: print(f"dibr fit: {line}", flush=True), selection_only=False)
    ious = ", ".join(f"{v['camera']}: IoU {v['silhouette_iou']:.3f}" for v in out.views)
    print(f"dibr fit: done in {seconds:.1f} s, final loss {out.final_loss:.5f}; {ious}", flush=True)
    return EXIT_OK


def _start_scene(args: argparse.Namespace, inside_blender: bool) -> Any:
    """Open ``--blend``, else keep the .blend a Blender executable was started with, else start
    from an empty scene. Returns the scene."""
    import bpy

    if args.blend:
        try:
            bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.blend))
        except RuntimeError as exc:
            raise BadInput(f"cannot open {args.blend}: {str(exc).strip().splitlines()[-1]}") from None
    elif not (inside_blender and bpy.data.filepath):
        bpy.ops.wm.read_homefile(use_empty=True)  # no .blend given: an empty scene
    return bpy.context.scene


class OutputError(Exception):
    """Writing an output failed; nothing was written."""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[List[str]]:
    """Capture what is written to file descriptor 2 (Blender's operators print their tracebacks
    there from C) into the yielded list, one entry per line, instead of the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    lines: List[str] = []
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


def _staging_path(final: str) -> str:
    """A fresh file name beside ``final`` (same folder, so relative paths stay valid and the move is atomic)."""
    folder, name = os.path.split(final)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=os.path.splitext(name)[1])
    os.close(fd)
    os.remove(tmp)  # a name only: Blender keeps a .blend1 backup when it saves over an existing file
    return tmp


def export_glb(path: str, selection_only: bool) -> None:
    """Blender's glTF exporter, binary (.glb) (a module attribute so tests can replace it)."""
    import bpy

    bpy.ops.export_scene.gltf(filepath=path, export_format="GLB", use_selection=selection_only)


def _write_outputs(args: argparse.Namespace, report: Dict[str, Any], log: Callable[[str], None],
                   selection_only: bool = True) -> None:
    """Write --output (the whole .blend), --export (the selected objects, or the whole scene, as
    .glb) and --report. Each goes to a temporary file beside its target first; only when all are
    written are they moved into place, so a failure writes nothing (OutputError, one line)."""
    import bpy

    report["output"], report["export"] = args.output, args.export
    staged: List[Tuple[str, str]] = []
    what = ""
    try:
        if args.output:
            what = args.output
            staged.append((_staging_path(args.output), args.output))
            with _captured_stderr():
                bpy.ops.wm.save_as_mainfile(filepath=staged[-1][0], copy=True)
        if args.export:
            what = args.export
            staged.append((_staging_path(args.export), args.export))
            with _captured_stderr() as err:
                try:
                    export_glb(staged[-1][0], selection_only)
                except Exception as exc:
                    detail = [ln.strip() for ln in [*err, *str(exc).splitlines()] if ln.strip()]
                    raise OutputError(detail[-1] if detail else type(exc).__name__) from None
        if args.report:
            what = args.report
            staged.append((_staging_path(args.report), args.report))
            with open(staged[-1][0], "w") as fh:
                json.dump(report, fh, indent=1)
        for tmp, final in staged:
            os.replace(tmp, final)
    except Exception as exc:
        for tmp, _ in staged:
            for p in (tmp, tmp + "1"):  # Blender may leave a .blend1 backup beside a saved file
                if os.path.exists(p):
                    os.remove(p)
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise OutputError(f"could not write {what}: {msg}; nothing was written") from None
    for _, final in staged:
        log(f"wrote {final}")


def run_image_to_3d_command(args: argparse.Namespace, inside_blender: bool) -> int:
    import bpy

    from .jobs import image_to_3d
    from .jobs.records import SceneError
    from .scene import image_to_3d as image_to_3d_scene

    def log(line: str) -> None:
        print(f"dibr image-to-3d: {line}", flush=True)

    scene: Any = _start_scene(args, inside_blender)
    req = image_to_3d_scene.Request(image_path=args.image, mask_path=args.mask or "", background=args.background,
                                    category=args.category,
                                    size=args.size, texture_size=args.texture_size, refine_steps=args.refine_steps,
                                    refine_camera=args.refine_camera.upper(),
                                    refine_resolution=args.refine_resolution,
                                    face_view=not args.no_face_view)
    collection: Any = bpy.context.collection or scene.collection
    try:
        ob, report = image_to_3d_scene.run(scene, collection, tuple(scene.cursor.location), req, log=log)
    except SceneError as exc:
        raise BadInput(str(exc)) from None
    _write_outputs(args, report, log)
    log(image_to_3d.summary(report))
    return EXIT_OK


def run_generate_command(args: argparse.Namespace, inside_blender: bool) -> int:
    from .jobs import generate
    from .jobs.records import SceneError
    from .scene import generate as generate_scene

    def log(line: str) -> None:
        print(f"dibr generate: {line}", flush=True)

    scene: Any = _start_scene(args, inside_blender)
    req = generate_scene.Request(category=args.category, count=args.count, seed=args.seed, size=args.size,
                                 spacing=args.spacing, texture_size=args.texture_size,
                                 temperature=args.temperature, weights=args.weights or "")
    try:
        _, report = generate_scene.run(scene, tuple(scene.cursor.location), req, log=log)
    except SceneError as exc:
        raise BadInput(str(exc)) from None
    _write_outputs(args, report, log)
    log(generate.summary(report))
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None, inside_blender: bool = False) -> int:
    """Entry point of both forms. Returns the exit code.

    Args:
        argv: the command line (default ``sys.argv``); when it holds ``--``, only what follows
            is parsed (Blender's own options come before it).
        inside_blender: running in a Blender executable, which has loaded the .blend already
            (``--blend`` becomes optional).
    """
    full = list(sys.argv if argv is None else argv)
    if "--" in full:
        raw = script_args(full)
    else:
        raw = full[1:] if argv is None else full
    try:
        args = parse(raw, inside_blender)
        if args.command == "fit":
            return run_fit_command(args)
        if args.command == "image-to-3d":
            return run_image_to_3d_command(args, inside_blender)
        if args.command == "generate":
            return run_generate_command(args, inside_blender)
        raise BadInput(f"unknown command {args.command}")
    except BadInput as exc:
        print(f"dibr_blender.batch: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except OutputError as exc:
        print(f"dibr_blender.batch: failed: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    except ModuleNotFoundError as exc:
        if exc.name != "bpy":
            raise
        print("dibr_blender.batch: error: this Python has no bpy module; run the batch with the project's "
              ".venv/bin/python (which has bpy==5.0.1) or inside Blender: blender --background --python "
              "dibr_blender/batch.py -- ...", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except Exception as exc:  # noqa: BLE001 - one clear line plus a non-zero exit
        print(f"dibr_blender.batch: failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
