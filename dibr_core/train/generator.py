"""Fit the class-conditional generator (:mod:`dibr_core.models.generator`) on a trained predictor.

Stage 1 (the expensive one, checkpointed per category): encode ``--views`` views of every
train-split item of each category with the predictor's encoder. Stage 2: fit each category's
rank-``k`` latent Gaussian to its codes. Stage 3 (``--distill-epochs``, 0 skips it): fine-tune
the decoder's offset head towards its own repaired samples (:func:`distill_repair`), so that
fewer samples fold a thin part through itself. Then write ``generator.pt`` into the run directory.
The predictor itself was trained through DIB-R renders only (``python -m
dibr_core.train predictor``), so the generator, too, never sees 3D supervision.

Usage::

    python -m dibr_core.train generator --predictor dibr_core/weights/predictor.pt --data DIR --out RUN_DIR
        [--rank 32 --views 8 --distill-epochs 10 --threads T --resume]
    python -m dibr_core.train generator --export RUN_DIR --out dibr_core/weights/generator.pt

``RUN_DIR`` receives ``codes.pt`` (the codes of the categories done so far; ``--resume`` skips
them) and ``generator.pt`` (float32).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from dibr_core.data.shapes import CATEGORIES
from dibr_core.models.checkpoints import file_sha256, half_floats, run_file, save_weights
from dibr_core.models.generator import Generator
from dibr_core.models.predictor import Predictor, load_predictor

__all__ = ["encode_split", "fit_generator", "distill_repair", "export_generator", "main"]

CODES = "codes.pt"
WEIGHTS = "generator.pt"


def encode_split(predictor_path: Union[str, Path], data: Union[str, Path], out: Union[str, Path],
                 views: int = 8, split: str = "train", resume: bool = False, progress: bool = True,
                 batch: int = 256, model: Optional[Predictor] = None) -> Dict[str, torch.Tensor]:
    """Stage 1: ``{category: (N_c * views, D) codes}``, saved to ``out/codes.pt`` after each category.

    ``model``: the predictor loaded from ``predictor_path`` already (else it is loaded here)."""
    from tqdm import tqdm

    from dibr_core.data.dataset import load_item
    from dibr_core.data.loaders import list_items

    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    if model is None:
        model = load_predictor(predictor_path).float()
    items = list_items(data, split)
    missing = [c for c in CATEGORIES if c not in items]
    if missing:
        raise FileNotFoundError(f"encode_split(): no {split!r} items for {missing} under {data}")
    codes: Dict[str, torch.Tensor] = {}
    codes_path = run / CODES
    if resume and codes_path.exists():
        codes = torch.load(codes_path, map_location="cpu", weights_only=False)["codes"]
    total = sum(len(items[c]) for c in CATEGORIES if c not in codes)
    bar = tqdm(total=total, desc="encode", unit="item", disable=not progress)
    for cat in CATEGORIES:
        if cat in codes:
            continue
        ims = []
        for p in items[cat]:
            im = load_item(p)["images"]
            K = im.shape[0]
            sel = np.linspace(0, K, num=min(views, K), endpoint=False).astype(int)
            ims.append(im[sel])
            bar.update(1)
        x = torch.from_numpy(np.concatenate(ims)).float().div_(255.0).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            codes[cat] = torch.cat([model.encode(x[s:s + batch]) for s in range(0, len(x), batch)])
        tmp = codes_path.with_suffix(".tmp")
        torch.save({"codes": codes, "predictor_sha256": file_sha256(predictor_path)
                    if Path(predictor_path).is_file() else None}, tmp)
        tmp.replace(codes_path)
        bar.set_postfix(category=cat)
    bar.close()
    return codes


def fit_generator(predictor_path: Union[str, Path], data: Union[str, Path], out: Union[str, Path], rank: int = 32,
                  views: int = 8, resume: bool = False, progress: bool = True, distill_epochs: int = 10,
                  distill_per_category: int = 300) -> Path:
    """All stages (the third, :func:`distill_repair`, unless ``distill_epochs`` is 0); returns the
    path of ``out/generator.pt``."""
    t0 = time.perf_counter()
    predictor = load_predictor(predictor_path).float()
    codes = encode_split(predictor_path, data, out, views, resume=resume, progress=progress, model=predictor)
    gen = Generator(predictor, CATEGORIES, rank)
    gen.fit(codes)
    distill = (distill_repair(gen, distill_per_category, distill_epochs, progress=progress)
               if distill_epochs > 0 else None)
    state = gen.state_for_saving()
    pp = Path(predictor_path)
    state["meta"] = {"predictor_sha256": file_sha256(pp) if pp.is_file() else None, "views": views, "rank": rank,
                     "codes_per_category": {c: int(v.shape[0]) for c, v in codes.items()},
                     "repair_distill": distill, "seconds": round(time.perf_counter() - t0, 1)}
    dst = Path(out) / WEIGHTS
    torch.save(state, dst)
    return dst


def distill_repair(gen: Generator, per_category: int = 300, epochs: int = 10, weight: float = 5.0,
                   lr: float = 1e-4, batch: int = 64, seed: int = 0, progress: bool = True) -> Dict[str, object]:
    """Stage 3: teach the decoder's offset head the repair of its own samples.

    ``per_category`` codes of every category are drawn from the fitted Gaussians (seeded),
    decoded and repaired (:func:`dibr_core.mesh_repair.untangle`; samples the repair cannot
    clear are left out); the offset head (only) is then fitted for ``epochs`` passes to the
    repaired vertices, mean squared distance per vertex, with the vertices the repair moved
    weighted ``1 + weight``. The targets differ from the raw decodes only inside folded thin
    parts, so everything else stays where it was; no data is read. Returns the statistics
    recorded in the generator's meta data (samples, repaired samples, loss before and after).
    """
    from tqdm import tqdm

    from dibr_core.mesh_repair import untangle

    if per_category < 1 or epochs < 1 or weight < 0 or batch < 1:
        raise ValueError(f"distill_repair(): need per_category, epochs, batch >= 1 and weight >= 0, got "
                         f"{per_category}, {epochs}, {batch}, {weight}")
    t0 = time.perf_counter()
    dec = gen.decoder
    faces = dec.faces
    zs, targets, weights = [], [], []
    repaired = 0
    for ci, cat in enumerate(tqdm(gen.categories, desc="repair targets", disable=not progress)):
        z = gen.sample_codes(cat, per_category, seed=seed * 1000 + ci)
        with torch.no_grad():
            raw, _ = dec.decode_vertices(z)
        for k in range(per_category):
            fixed, report = untangle(raw[k], faces)
            if not report.valid:
                continue
            repaired += int(report.iterations > 0)
            moved = (fixed - raw[k]).norm(dim=-1) > 0
            zs.append(z[k])
            targets.append(fixed.float())
            weights.append(1.0 + weight * moved.float())
    Z, T, W = torch.stack(zs), torch.stack(targets), torch.stack(weights)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        verts, _ = dec.decode_vertices(Z[idx])
        return (W[idx] * ((verts - T[idx]) ** 2).sum(-1)).mean()

    with torch.no_grad():
        before = float(loss_of(torch.arange(Z.shape[0])))
    params = list(dec.offset_head.parameters())
    flags = [p.requires_grad for p in dec.parameters()]
    for p in dec.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    try:
        for _ in tqdm(range(epochs), desc="distill", disable=not progress):
            perm = torch.randperm(Z.shape[0], generator=g)
            for s in range(0, Z.shape[0], batch):
                loss = loss_of(perm[s:s + batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
    finally:
        for p, flag in zip(dec.parameters(), flags):
            p.requires_grad_(flag)
    with torch.no_grad():
        after = float(loss_of(torch.arange(Z.shape[0])))
    return {"per_category": per_category, "epochs": epochs, "weight": weight, "lr": lr, "seed": seed,
            "samples": int(Z.shape[0]), "repaired_samples": repaired, "loss_before": before, "loss_after": after,
            "seconds": round(time.perf_counter() - t0, 1)}


def export_generator(run: Union[str, Path], out: Union[str, Path]) -> Path:
    """Write a run's ``generator.pt`` with float16 decoder weights (Gaussians stay float32)."""
    state = torch.load(run_file(run, WEIGHTS), map_location="cpu", weights_only=False)
    state["decoder"] = half_floats(state["decoder"])
    return save_weights(state, out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dibr_core.train generator", description=__doc__.split("\n")[0])
    p.add_argument("--predictor", help="trained predictor (weights file, checkpoint or run dir)")
    p.add_argument("--data", help="dataset root (see dibr_core.data)")
    p.add_argument("--out", required=True, help="run directory, or with --export the weights file")
    p.add_argument("--export", metavar="RUN_DIR", default=None)
    p.add_argument("--rank", type=int, default=32, help="principal directions per category")
    p.add_argument("--views", type=int, default=8, help="views encoded per train item")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="reuse the categories already in RUN_DIR/codes.pt")
    p.add_argument("--distill-epochs", type=int, default=10,
                   help="passes of stage 3, the offset head fitted to its repaired samples (0: skip)")
    p.add_argument("--distill-per-category", type=int, default=300, help="samples per category for stage 3")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.export is not None:
        dst = export_generator(a.export, a.out)
        print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
        return 0
    if a.predictor is None or a.data is None:
        p.error("--predictor and --data are required")
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    dst = fit_generator(a.predictor, a.data, a.out, a.rank, a.views, a.resume, not a.no_progress, a.distill_epochs,
                        a.distill_per_category)
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
