"""Train the render classifier (:mod:`dibr_core.models.classifier`) that judges generated samples.

It learns the 13 categories from the procedural data set's renders (train split, all views),
with light augmentation (brightness / colour scaling, and a blur on a random half of the batch,
so that it does not key on texture detail that the 642-vertex meshes cannot reproduce), then
reports its accuracy on the held-out split.

Usage::

    python -m dibr_core.train classifier --data DIR --out RUN_DIR [--steps 1500 --batch 64 --lr 1e-3
        --threads T --seed S --resume]
    python -m dibr_core.train classifier --export RUN_DIR --out dibr_core/weights/classifier.pt

``RUN_DIR`` receives ``checkpoint.pt`` (every ``--ckpt-every`` steps and at the end) and
``metrics.csv``.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from dibr_core.data.loaders import ViewDataset
from dibr_core.data.shapes import CATEGORIES
from dibr_core.models.checkpoints import CHECKPOINT, half_floats, run_file, save_weights
from dibr_core.models.classifier import Classifier

__all__ = ["labelled_split", "train_classifier", "evaluate_accuracy", "export_classifier", "main"]


def labelled_split(root: Union[str, Path], split: str) -> Tuple[np.ndarray, np.ndarray]:
    """All images of a split: (N, K, S, S, 4) uint8 and (N,) int64 category indices (the items'
    parent folder names, in :data:`CATEGORIES` order)."""
    ds = ViewDataset(root, split, in_memory=True)
    assert ds.images is not None
    labels = np.array([CATEGORIES.index(p.parent.name) for p in ds.paths], dtype=np.int64)
    return ds.images, labels


def _to_tensor(ims: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ims).float().div_(255.0).permute(0, 3, 1, 2).contiguous()


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness/colour scaling of RGB inside the mask, and a 3x3 box blur on half the batch."""
    B = x.shape[0]
    scale = 0.75 + 0.5 * torch.rand(B, 1, 1, 1, generator=gen)
    tint = 0.9 + 0.2 * torch.rand(B, 3, 1, 1, generator=gen)
    rgb = (x[:, :3] * scale * tint).clamp(0, 1)
    blur = torch.rand(B, generator=gen) < 0.5
    if bool(blur.any()):
        k = torch.full((3, 1, 3, 3), 1.0 / 9.0)
        a = x[:, 3:]
        pm = F.conv2d(F.pad(rgb * a, (1, 1, 1, 1), mode="replicate"), k, groups=3)
        aw = F.conv2d(F.pad(a, (1, 1, 1, 1), mode="replicate"), k[:1])
        soft = (pm / aw.clamp_min(1e-6)) * a
        rgb = torch.where(blur[:, None, None, None], soft, rgb)
    return torch.cat([rgb, x[:, 3:]], dim=1)


def evaluate_accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray,
                      views: Optional[Sequence[int]] = None, batch: int = 256) -> Dict[str, float]:
    """Accuracy over the given views (default: 4 evenly spaced) of every item:
    ``{"accuracy": ..., "<category>": ...}``."""
    model.eval()
    if views is None:
        views = np.linspace(0, images.shape[1], num=min(4, images.shape[1]), endpoint=False).astype(int).tolist()
    preds: List[np.ndarray] = []
    ys: List[np.ndarray] = []
    flat = images[:, list(views)].reshape(-1, *images.shape[2:])
    y_all = np.repeat(labels, len(views))
    with torch.no_grad():
        for s in range(0, len(flat), batch):
            preds.append(model(_to_tensor(flat[s:s + batch])).argmax(dim=1).numpy())
            ys.append(y_all[s:s + batch])
    p, y = np.concatenate(preds), np.concatenate(ys)
    out = {"accuracy": float((p == y).mean())}
    for i, c in enumerate(model.categories):
        sel = y == i
        if sel.any():
            out[c] = float((p[sel] == i).mean())
    return out


def train_classifier(data: Union[str, Path], out: Union[str, Path], steps: int = 1500, batch: int = 64,
                     lr: float = 1e-3, seed: int = 0, threads: int = 0, resume: bool = False, ckpt_every: int = 500,
                     progress: bool = True, eval_split: str = "test") -> Dict[str, float]:
    """Train (or resume) up to ``steps`` steps; returns the held-out accuracies (see module doc)."""
    from tqdm import tqdm

    old = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        run = Path(out)
        run.mkdir(parents=True, exist_ok=True)
        images, labels = labelled_split(data, "train")
        torch.manual_seed(seed)
        model = Classifier(CATEGORIES)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng(seed)
        step = 0
        ckpt = run / CHECKPOINT
        if resume and ckpt.exists():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            step = int(state["step"])
            gen.set_state(state["torch_gen"])
            rng.bit_generator.state = state["numpy_rng"]
        metrics = run / "metrics.csv"
        if step == 0 or not metrics.exists():
            with open(metrics, "w", newline="") as fh:
                csv.writer(fh).writerow(["step", "loss", "train_accuracy", "seconds"])
        t0 = time.perf_counter()
        bar = tqdm(total=steps, initial=step, desc="classifier", unit="step", disable=not progress)
        model.train()
        while step < steps:
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            idx = rng.integers(0, len(images), size=batch)
            vid = rng.integers(0, images.shape[1], size=batch)
            x = _augment(_to_tensor(images[idx, vid]), gen)
            y = torch.from_numpy(labels[idx])
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss_value = float(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            if step % 50 == 0 or step == steps:
                acc = float((logits.argmax(1) == y).float().mean())
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{acc:.2f}")
                with open(metrics, "a", newline="") as fh:
                    csv.writer(fh).writerow([step, f"{loss_value:.5f}", f"{acc:.4f}",
                                             f"{time.perf_counter() - t0:.1f}"])
            if step % ckpt_every == 0 or step == steps:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "categories": model.categories, "optimizer": opt.state_dict(),
                            "step": step, "torch_gen": gen.get_state(), "numpy_rng": rng.bit_generator.state,
                            "args": {"steps": steps, "batch": batch, "lr": lr, "seed": seed}}, tmp)
                tmp.replace(ckpt)
        bar.close()
        ev_images, ev_labels = labelled_split(data, eval_split)
        return evaluate_accuracy(model, ev_images, ev_labels)
    finally:
        torch.set_num_threads(old)


def export_classifier(run: Union[str, Path], out: Union[str, Path], meta: Optional[Dict[str, object]] = None) -> Path:
    """Write a run's classifier as a small float16 weights file (with ``meta``)."""
    state = torch.load(run_file(run, CHECKPOINT), map_location="cpu", weights_only=False)
    return save_weights({"model": half_floats(state["model"]), "categories": state["categories"],
                         "meta": {"step": int(state["step"]), "args": state.get("args", {}), **(meta or {})}}, out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dibr_core.train classifier", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="dataset root (see dibr_core.data); required unless --export")
    p.add_argument("--out", required=True, help="run directory, or with --export the weights file")
    p.add_argument("--export", metavar="RUN_DIR", default=None)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--eval-split", default="test")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.export is not None:
        dst = export_classifier(a.export, a.out)
        print(f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB)")
        return 0
    if a.data is None:
        p.error("--data is required for training")
    acc = train_classifier(a.data, a.out, a.steps, a.batch, a.lr, a.seed, a.threads, a.resume, a.ckpt_every,
                           not a.no_progress, a.eval_split)
    print(f"held-out ({a.eval_split}) accuracy {acc['accuracy']:.4f}; per category: "
          + ", ".join(f"{c} {acc[c]:.2f}" for c in CATEGORIES if c in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
