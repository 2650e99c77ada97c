"""The main job until the Blender fit exists: render the built-in scene with every lighting
model and write PNGs.

    python -m dibr_core.demo [--out out/demo] [--size 256] [--backend auto]
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

import dibr_core
from dibr_core.images import save_png
from dibr_core.render import DirectionalLights, Meshes, PhongLight, RenderSettings, SHLighting, render
from dibr_core.scenes import blob, checker_texture, default_camera


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder (created)")
    parser.add_argument("--size", type=int, default=256, help="image width and height in pixels")
    parser.add_argument("--backend", default="auto", choices=["auto", "cpu", "reference"])
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    info = dibr_core.backend_info()
    print(info)

    verts, faces, uvs = blob(4)
    colors = (verts / verts.norm(dim=-1, keepdim=True)) * 0.45 + 0.5
    meshes = Meshes(verts[None], faces)
    camera = default_camera()
    tex = checker_texture(128)
    light_dir = torch.tensor([[0.4, 0.8, 0.6]])
    light_dir = light_dir / light_dir.norm()
    settings = RenderSettings(args.size, args.size, backend=args.backend)
    models: Dict[str, Tuple[dict, RenderSettings]] = {
        "vertex_color": (dict(colors=colors[None]), settings),
        "lambertian": (dict(colors=colors[None], lighting=DirectionalLights(
            light_dir[:, None], torch.tensor([[[0.9, 0.9, 0.85]]]), torch.tensor([[0.15, 0.15, 0.2]]))), settings),
        "phong": (dict(colors=colors[None], lighting=PhongLight(
            light_dir, torch.tensor([[[0.2] * 3, [0.7] * 3, [0.6] * 3]]), torch.tensor([[20.0]]))), settings),
        "spherical_harmonics": (dict(colors=colors[None], lighting=SHLighting(
            torch.tensor([[2.2, -0.4, 0.5, 0.3, 0.0, 0.1, 0.2, 0.0, 0.1]]))), settings),
        "texture": (dict(face_uvs=uvs, texture=tex, lighting=DirectionalLights(
            light_dir[:, None], torch.tensor([[[0.8, 0.8, 0.8]]]), torch.tensor([[0.3, 0.3, 0.3]]))),
            RenderSettings(args.size, args.size, perspective_correct=True, backend=args.backend)),
    }
    print(f"scene: bumpy icosphere, {verts.shape[0]} vertices, {faces.shape[0]} faces, "
          f"{args.size}x{args.size} px, backend {args.backend}")
    written = []
    for name, (kw, st) in models.items():
        t0 = time.perf_counter()
        out = render(meshes, camera, settings=st, **kw)  # type: ignore[arg-type]
        dt = time.perf_counter() - t0
        path = out_dir / f"{name}.png"
        save_png(path, out.rgb[0], alpha=out.alpha[0])
        written.append(path)
        print(f"  {name:<20s} {dt * 1000:8.1f} ms  coverage {float(out.mask.mean()):.3f}  -> {path}")
    t0 = time.perf_counter()
    out = render(meshes, camera, colors=colors[None], settings=settings)
    extras = {
        "soft_alpha": out.alpha[0, ..., None].expand(-1, -1, 3),
        "depth": torch.where(out.mask[0, ..., None] > 0,
                             1 - (out.depth[0, ..., None] - 2.0) / 2.5, torch.zeros(1)).clamp(0, 1).expand(-1, -1, 3),
        "normals": (out.normals[0] * 0.5 + 0.5) * out.mask[0, ..., None],
    }
    for name, img in extras.items():
        path = out_dir / f"{name}.png"
        save_png(path, img)
        written.append(path)
        print(f"  {name:<20s} {'':8s}    -> {path}")
    # Gradient check of the pipeline: one backward through the Phong render.
    v = verts[None].clone().requires_grad_(True)
    t0 = time.perf_counter()
    out = render(Meshes(v, faces), camera, colors=colors[None], lighting=models["phong"][0]["lighting"], settings=settings)
    (out.rgb.mean() + out.alpha.mean()).backward()
    dt = time.perf_counter() - t0
    assert v.grad is not None
    print(f"  forward+backward (phong + soft mask) {dt * 1000:.1f} ms, |grad| = {float(v.grad.norm()):.4f}")
    sheet = out_dir / "contact_sheet.png"
    from PIL import Image

    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in written]
    save_png(sheet, torch.from_numpy(np.concatenate(tiles, axis=1)).float() / 255.0)
    print(f"wrote {len(written) + 1} PNGs to {out_dir} (contact sheet: {sheet}) in "
          f"{time.perf_counter() - t_start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
