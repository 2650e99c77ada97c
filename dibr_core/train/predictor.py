"""Train the single-image 3D predictor (:mod:`dibr_core.models.predictor`) with DIB-R's multi-view scheme.

Scheme (docs dibr-algorithm.md section 6): each step samples ``batch`` objects and ``views`` (V)
distinct views of each, predicts a mesh from every one of the B*V images, and renders every
predicted mesh into every one of its object's V cameras (B*V*V renders, 64x64, unlit vertex
colours, the dataset's 30-degree perspective cameras built from the stored view matrices). Each
render is compared with the ground-truth image of its camera:

    L = W_IOU * iou_loss(soft alpha, GT alpha) + W_COL * masked_l1(rgb, GT rgb, GT alpha)
        + W_LAP * laplacian_loss(offsets) + W_FLAT * flatten_loss(vertices)
        [+ input_view_weight * iou_loss(soft alpha, GT alpha) over the B*V input-view renders]

The last term (``--input-view-weight``, default 0: DIB-R's loss) weighs the render of each
predicted mesh in the very camera its input image came from once more, so the prediction
matches the picture it was given (Image to 3D's input-view fidelity) and not only the object's
other views.

with W_IOU = 1, W_COL = 3 and the [REIMPL] regulariser weights 0.01 and 0.001 converted to
:mod:`dibr_core.losses`' plain means: its Laplacian is ``mean((A d - d)^2) * 3P`` = our
``laplacian_loss * P`` and its flatten loss is ``mean_edges(...) * E`` = our ``flatten_loss * E``,
so W_LAP = 0.01 * 642 and W_FLAT = 0.001 * 1920.

The predicted colours absorb the dataset's Lambertian shading (rendered with ``lighting=None``),
as in DIB-R's geometry + colour experiment. The [ORIG] bbox re-normalisation of the predicted
mesh is not applied (the template radius already matches the normalised shapes' extent).

Outputs in ``RUN_DIR``: ``checkpoint.pt`` (model, optimizer, step, torch and numpy RNG states,
arguments) every ``--ckpt-every`` steps and at the end; ``metrics.csv`` (one row per logging step,
appended, so a resumed run continues it); ``loss.png`` (loss curve of the whole metrics.csv).

Usage::

    python -m dibr_core.train predictor --data DIR --out RUN_DIR [--split train --steps N --batch B
        --views 2 --lr 1e-4 --resume --threads T --seed S --log-every K --ckpt-every K
        --texture-size T --stream --schedule cosine --warmup 200 --clip 1.0 --init WEIGHTS
        --device cuda]

``--init WEIGHTS`` fine-tunes: a fresh run starts from those model weights (fresh optimizer).
Randomised data (``generate --randomize``) carries per-view fields of view; the renders of the
loss use each view's own.

    torchrun --nproc_per_node 2 -m dibr_core.train predictor ...   # DDP: gloo on CPU, nccl on GPU

``--device cuda`` trains on the GPU (the renders then run in the CUDA kernels); under torchrun
each rank takes the GPU of its ``LOCAL_RANK``. Data are sampled on the CPU and moved per step.


On a shared 2-core machine use ``--threads 1``: with 2 threads and another busy process, a step
was measured 20x slower (oneDNN/OpenMP threads waiting on each other).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from dibr_core.data.dataset import FOV_Y_DEG, make_camera
from dibr_core.data.loaders import ViewDataset
from dibr_core.losses import flatten_loss, iou_loss, laplacian_loss, masked_l1, silhouette_iou
from dibr_core.models.checkpoints import CHECKPOINT, half_floats, run_file, save_weights
from dibr_core.models.predictor import Predictor
from dibr_core.render import Meshes, RenderSettings, render

__all__ = ["W_IOU", "W_COL", "W_LAP", "W_FLAT", "multiview_step_losses", "train", "main", "export_weights", "lr_at",
           "METRIC_FIELDS", "training_device"]

W_IOU = 1.0
W_COL = 3.0
W_LAP = 0.01 * 642      # [REIMPL] 0.01 * mean(...) * 3P  ==  0.01 * P * laplacian_loss
W_FLAT = 0.001 * 1920   # [REIMPL] 0.001 * mean(...) * E  ==  0.001 * E * flatten_loss
METRIC_FIELDS = ["step", "loss", "iou_loss", "color_l1", "lap", "flat", "input_iou_loss", "iou", "seconds_per_step",
                 "wall"]


def multiview_step_losses(model: Predictor, images: torch.Tensor, views: torch.Tensor,
                          settings: Optional[RenderSettings] = None,
                          forward: Optional[torch.nn.Module] = None,
                          fov_y_deg: Optional[torch.Tensor] = None,
                          input_view_weight: float = 0.0) -> Dict[str, torch.Tensor]:
    """Losses of DIB-R's multi-view scheme for one batch.

    Args:
        model: the predictor.
        images: (B, V, 4, S, S) RGBA in [0, 1]; views: (B, V, 4, 4) world -> camera.
        settings: render settings (default: S x S; perspective-correct when the model has a
            texture head, whose texture then replaces the vertex colours in the renders).
        forward: the module to call on the images (a DistributedDataParallel wrapper of
            ``model``); default ``model``.
        fov_y_deg: (B, V) the cameras' vertical fields of view in degrees (randomised data);
            default the protocol's 30 degrees.
        input_view_weight: weight of the extra silhouette IoU loss over the B*V renders of each
            mesh in its own input camera (0: DIB-R's loss).

    Returns:
        dict of () tensors: ``loss`` (weighted total, differentiable), ``iou_loss``, ``color_l1``,
        ``lap``, ``flat``, ``input_iou_loss`` (unweighted terms; the last over the input-view
        renders) and ``iou`` (mean soft IoU, detached).
    """
    if input_view_weight < 0:
        raise ValueError(f"multiview_step_losses(): input_view_weight must be >= 0, got {input_view_weight}")
    B, V, C, S, _ = images.shape
    out = (forward or model)(images.reshape(B * V, C, S, S))
    P = out.vertices.shape[1]
    # Mesh predicted from view i of object b, rendered into camera j of the same object.
    verts = out.vertices.view(B, V, 1, P, 3).expand(B, V, V, P, 3).reshape(B * V * V, P, 3)
    cols = out.colors.view(B, V, 1, P, 3).expand(B, V, V, P, 3).reshape(B * V * V, P, 3)
    cam_v = views.view(B, 1, V, 4, 4).expand(B, V, V, 4, 4).reshape(B * V * V, 4, 4)
    cam_fov = None if fov_y_deg is None else fov_y_deg.reshape(B, 1, V).expand(B, V, V).reshape(B * V * V)
    gt = images.view(B, 1, V, C, S, S).expand(B, V, V, C, S, S).reshape(B * V * V, C, S, S)
    gt = gt.permute(0, 2, 3, 1)                                      # (N, S, S, 4) channels last
    tex = None
    if out.texture is not None:      # texture head: the UV texture replaces the vertex colours
        T = out.texture.shape[-1]
        tex = out.texture.view(B, V, 1, 3, T, T).expand(B, V, V, 3, T, T).reshape(B * V * V, 3, T, T).contiguous()
    st = settings or RenderSettings(height=S, width=S, perspective_correct=tex is not None)
    r = render(Meshes(verts.contiguous(), model.faces), make_camera(cam_v.contiguous(), cam_fov),
               colors=cols.contiguous(), face_uvs=model.face_uvs if tex is not None else None, texture=tex,
               lighting=None, settings=st)
    gt_rgb, gt_a = gt[..., :3].contiguous(), gt[..., 3].contiguous()
    l_iou = iou_loss(r.alpha, gt_a)
    l_col = masked_l1(r.rgb, gt_rgb, gt_a)
    l_lap = laplacian_loss(out.offsets, model.faces)
    l_flat = flatten_loss(out.vertices, model.faces)
    # Render n = (b * V + i) * V + j shows the mesh of input view i in camera j: i == j is its input view.
    own = torch.eye(V, dtype=torch.bool, device=images.device).expand(B, V, V).reshape(B * V * V)
    l_input = iou_loss(r.alpha[own], gt_a[own])
    total = W_IOU * l_iou + W_COL * l_col + W_LAP * l_lap + W_FLAT * l_flat
    if input_view_weight > 0:
        total = total + input_view_weight * l_input
    with torch.no_grad():
        iou = silhouette_iou(r.alpha, gt_a).mean()
    return {"loss": total, "iou_loss": l_iou, "color_l1": l_col, "lap": l_lap, "flat": l_flat,
            "input_iou_loss": l_input, "iou": iou}


@dataclass
class TrainResult:
    step: int
    last_loss: float
    seconds_per_step: float


def _on_cpu(obj: object) -> object:
    """``obj`` (a state dict: nested dicts, lists and tensors) with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_on_cpu(v) for v in obj)
    return obj


def _save_checkpoint(path: Path, model: Predictor, opt: torch.optim.Optimizer, step: int,
                     rng_states: List[object], args: Dict[str, object]) -> None:
    config = {"image_size": model.image_size, "texture_size": model.texture_size,
              "normalize_bbox": model.normalize_bbox}
    state = {"model": _on_cpu(model.state_dict()), "model_config": config, "optimizer": _on_cpu(opt.state_dict()),
             "step": step, "torch_rng": torch.get_rng_state(), "numpy_rngs": rng_states, "args": args}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def export_weights(checkpoint: Union[str, Path], out: Union[str, Path], half: bool = True,
                   meta: Optional[Dict[str, object]] = None) -> Path:
    """Write a run's model (no optimizer or RNG state) as a small weights file that
    :func:`dibr_core.models.predictor.load_predictor` reads: float tensors in float16 when ``half``, plus ``meta`` (the
    training arguments and step are always included)."""
    state = torch.load(run_file(checkpoint, CHECKPOINT), map_location="cpu", weights_only=False)
    weights = half_floats(state["model"]) if half else state["model"]
    info: Dict[str, object] = {"step": int(state["step"]), "args": state.get("args", {})}
    info.update(meta or {})
    return save_weights({"model": weights, "model_config": state.get("model_config", {}), "meta": info}, out)


def plot_losses(metrics_csv: Path, out_png: Path, size: Tuple[int, int] = (240, 400)) -> Path:
    """Draw the ``loss`` column of ``metrics.csv`` against ``step`` (min-max scaled) into a PNG."""
    from dibr_core.images import save_png

    steps: List[float] = []
    losses: List[float] = []
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            steps.append(float(row["step"]))
            losses.append(float(row["loss"]))
    H, W = size
    img = torch.ones(H, W, 3)
    m = 10
    img[m:H - m, m] = 0.0
    img[H - m, m:W - m] = 0.0
    if len(losses) >= 1:
        x = np.asarray(steps)
        y = np.asarray(losses)
        x0, x1 = float(x.min()), float(max(x.max(), x.min() + 1))
        y0, y1 = float(y.min()), float(max(y.max(), y.min() + 1e-12))
        xs = np.linspace(x0, x1, 4 * W)
        ys = np.interp(xs, x, y)
        cols = np.clip(np.round(m + (xs - x0) / (x1 - x0) * (W - 2 * m - 1)), 0, W - 1).astype(int)
        rows = np.clip(np.round(H - m - 1 - (ys - y0) / (y1 - y0) * (H - 2 * m - 1)), 0, H - 1).astype(int)
        img[torch.from_numpy(rows), torch.from_numpy(cols)] = torch.tensor([0.8, 0.1, 0.1])
    return save_png(out_png, img)


def lr_at(step: int, steps: int, lr: float, schedule: str, warmup: int) -> float:
    """Learning rate of step ``step`` (0-based): ``constant``, or ``cosine`` (linear warm-up over
    ``warmup`` steps, then cosine decay to 5% of ``lr`` at ``steps``)."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"lr_at(): schedule must be 'constant' or 'cosine', got {schedule!r}")
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(steps - warmup, 1))
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


@dataclass(frozen=True)
class _Dist:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1): gloo when the
    model lives on the CPU, nccl when it lives on a GPU."""

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size())


def training_device(device: Union[str, torch.device]) -> torch.device:
    """The device a run trains on: ``"cpu"``, or ``"cuda"`` (under torchrun the GPU of
    ``LOCAL_RANK``; an explicit index is kept). Raises ValueError for any other device, or for
    a GPU that torch cannot see."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"train(): device must be 'cpu' or 'cuda', got {device!r}") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"train(): device must be 'cpu' or 'cuda', got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"train(): device {device!r} was asked for, but torch {torch.__version__} sees no CUDA GPU "
                         f"(torch.version.cuda = {torch.version.cuda})")
    if dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev.index >= torch.cuda.device_count():
        raise ValueError(f"train(): device {str(dev)!r} was asked for, but torch sees "
                         f"{torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def train(data: Union[str, Path], out: Union[str, Path], steps: int = 1000, batch: int = 8, views: int = 2,
          lr: float = 1e-4, resume: bool = False, threads: int = 0, seed: int = 0, split: str = "train",
          log_every: int = 10, ckpt_every: int = 500, progress: bool = True,
          dataset: Optional[ViewDataset] = None, texture_size: int = 0, in_memory: bool = True,
          schedule: str = "constant", warmup: int = 200, clip: float = 0.0,
          normalize_bbox: bool = False, init: Optional[Union[str, Path]] = None,
          input_view_weight: float = 0.0, device: Union[str, torch.device] = "cpu") -> TrainResult:
    """Train (or resume training) up to ``steps`` total steps; see the module docstring.

    ``threads > 0`` sets torch's intra-op thread count for the run (restored on return).
    ``schedule``/``warmup``: see :func:`lr_at`; ``clip > 0`` clips the gradient norm.
    ``init``: start a fresh run from these model weights (a weights file such as
    ``dibr_core/weights/predictor.pt``, a checkpoint or a run directory; its model configuration
    must match) instead of random ones; the optimizer starts fresh (fine-tuning). A resumed run
    ignores it.
    ``input_view_weight``: see :func:`multiview_step_losses`.
    ``device``: ``"cpu"`` or ``"cuda"`` (see :func:`training_device`); the model, the optimizer
    and each step's batch live there, and checkpoints are written with CPU tensors, so a run
    can resume on either device.
    Under torchrun (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel, every
    rank samples its own ``batch`` objects (a global batch of ``batch * world``) from its own RNG
    stream, and rank 0 alone logs, shows progress and writes checkpoints (which hold every
    rank's RNG state, so a resumed job with the same world size continues exactly).
    """
    dev = training_device(device)
    old_threads = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _train(data, out, steps, batch, views, lr, resume, seed, split, log_every, ckpt_every, progress,
                      dataset, texture_size, in_memory, schedule, warmup, clip, normalize_bbox, init,
                      input_view_weight, dev)
    finally:
        torch.set_num_threads(old_threads)


def _train(data: Union[str, Path], out: Union[str, Path], steps: int, batch: int, views: int, lr: float,
           resume: bool, seed: int, split: str, log_every: int, ckpt_every: int, progress: bool,
           dataset: Optional[ViewDataset], texture_size: int, in_memory: bool, schedule: str, warmup: int,
           clip: float, normalize_bbox: bool, init: Optional[Union[str, Path]] = None,
           input_view_weight: float = 0.0, device: torch.device = torch.device("cpu")) -> TrainResult:
    lr_at(0, steps, lr, schedule, warmup)               # validates the schedule name
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist_info = _init_distributed(device)
    run = Path(out)
    ckpt_path = run / CHECKPOINT
    metrics_path = run / "metrics.csv"
    args: Dict[str, object] = {"batch": batch, "views": views, "lr": lr, "seed": seed, "split": split,
                               "data": str(data), "schedule": schedule, "warmup": warmup, "clip": clip,
                               "steps": steps, "texture_size": texture_size, "normalize_bbox": normalize_bbox,
                               "world_size": dist_info.world, "init": None if init is None else str(init),
                               "input_view_weight": input_view_weight, "device": device.type}
    ds = dataset if dataset is not None else ViewDataset(data, split, in_memory)
    torch.manual_seed(seed)                             # identical initial weights on every rank
    model = Predictor(image_size=ds.image_size, texture_size=texture_size, normalize_bbox=normalize_bbox)
    if init is not None:
        _load_init(model, init)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    rng = np.random.default_rng([seed, dist_info.rank])
    step = 0
    if dist_info.main:
        run.mkdir(parents=True, exist_ok=True)
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        rng_states = state.get("numpy_rngs") or [state["numpy_rng"]]
        if len(rng_states) == dist_info.world:
            rng.bit_generator.state = rng_states[dist_info.rank]
        else:                                           # another world size: fresh, distinct streams
            rng = np.random.default_rng([seed, dist_info.rank, step])
        if dist_info.main and metrics_path.exists():
            # Drop metric rows logged after the checkpoint (a crash between checkpoints).
            with open(metrics_path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
            with open(metrics_path, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_FIELDS)
                w.writeheader()
                w.writerows(rows)
    elif dist_info.main and metrics_path.exists():
        metrics_path.unlink()
    if dist_info.main and not metrics_path.exists():
        with open(metrics_path, "w", newline="") as fh:
            csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writeheader()
    forward: torch.nn.Module = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from tqdm import tqdm

    model.train()
    last = float("nan")
    t_start = time.perf_counter()
    t_prev, s_prev = t_start, step
    start_step = step
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", disable=not (progress and dist_info.main))
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, schedule, warmup)
        ims, vm, fov = ds.sample_cameras(rng, batch, views)
        protocol = bool((fov - FOV_Y_DEG).abs().max() < 1e-4)
        ims, vm, fov = ims.to(device, non_blocking=True), vm.to(device, non_blocking=True), fov.to(device)
        losses = multiview_step_losses(model, ims, vm, forward=forward, fov_y_deg=None if protocol else fov,
                                       input_view_weight=input_view_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()                       # DDP averages the gradients across ranks here
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        step += 1
        logging = step % log_every == 0 or step == steps
        if logging and dist_info.world > 1:
            import torch.distributed as dist

            packed = torch.stack([v.detach().float() for v in losses.values()])
            dist.all_reduce(packed)
            losses = {k: packed[i] / dist_info.world for i, k in enumerate(losses)}
        last = float(losses["loss"].detach())
        bar.update(1)
        if logging and dist_info.main:
            now = time.perf_counter()
            row = {k: f"{float(v.detach()):.6g}" for k, v in losses.items()}
            row.update(step=str(step), seconds_per_step=f"{(now - t_prev) / max(step - s_prev, 1):.4g}",
                       wall=f"{now - t_start:.4g}")
            t_prev, s_prev = now, step
            with open(metrics_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=METRIC_FIELDS).writerow(row)
            bar.set_postfix(loss=row["loss"], iou=row["iou"])
        if step % ckpt_every == 0 or step == steps:
            _checkpoint(ckpt_path, model, opt, step, rng, args, dist_info)
    bar.close()
    if dist_info.main:
        plot_losses(metrics_path, run / "loss.png")
    dt = time.perf_counter() - t_start
    return TrainResult(step, last, dt / max(step - start_step, 1))


def _load_init(model: Predictor, init: Union[str, Path]) -> None:
    """Copy the weights of ``init`` (weights file, checkpoint or run directory) into ``model``
    (float16 files are cast to the model's float32)."""
    state = torch.load(run_file(init, CHECKPOINT), map_location="cpu", weights_only=False)
    config = state.get("model_config", {})
    mine = {"image_size": model.image_size, "texture_size": model.texture_size,
            "normalize_bbox": model.normalize_bbox}
    diff = {k: (v, mine[k]) for k, v in config.items() if k in mine and mine[k] != v}
    if diff:
        raise ValueError(f"train(): init {init} has model_config {config}, which differs from this run's "
                         f"({', '.join(f'{k}: {a!r} vs {b!r}' for k, (a, b) in diff.items())})")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()})


def _checkpoint(path: Path, model: Predictor, opt: torch.optim.Optimizer, step: int, rng: np.random.Generator,
                args: Dict[str, object], dist_info: _Dist) -> None:
    """Gather every rank's RNG state; rank 0 writes the checkpoint."""
    rng_states: List[object] = [rng.bit_generator.state]
    if dist_info.world > 1:
        import torch.distributed as dist

        rng_states = [None] * dist_info.world
        dist.all_gather_object(rng_states, rng.bit_generator.state)
    if dist_info.main:
        _save_checkpoint(path, model, opt, step, rng_states, args)
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dibr_core.train predictor", description=__doc__.split("\n")[0])
    p.add_argument("--data", help="dataset root (see dibr_core.data); required unless --export")
    p.add_argument("--out", required=True, help="run directory (checkpoint, metrics.csv, loss.png), or with "
                   "--export the weights file to write")
    p.add_argument("--export", metavar="RUN_DIR", default=None,
                   help="instead of training, write RUN_DIR's model as a float16 weights file to --out")
    p.add_argument("--split", default="train")
    p.add_argument("--steps", type=int, default=1000, help="total steps (a resumed run continues up to it)")
    p.add_argument("--batch", type=int, default=8, help="objects per step")
    p.add_argument("--views", type=int, default=2, help="views per object (V; V*V renders per object)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoint.pt if present")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--texture-size", type=int, default=0,
                   help="train a UV texture head of this size (power of two, e.g. 32) instead of vertex colours")
    p.add_argument("--stream", action="store_true", help="re-read .npz files each step instead of caching in RAM")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule (cosine: linear warm-up, then decay to 5%% of --lr)")
    p.add_argument("--warmup", type=int, default=200, help="warm-up steps of the cosine schedule")
    p.add_argument("--normalize-bbox", action="store_true",
                   help="re-normalise predicted meshes like the data set (bbox centred, diagonal 1)")
    p.add_argument("--clip", type=float, default=0.0, help="clip the gradient norm to this (0: off)")
    p.add_argument("--init", metavar="WEIGHTS", default=None,
                   help="fine-tune: start from these model weights (weights file, checkpoint or run dir) with a "
                   "fresh optimizer; ignored by --resume of an existing run")
    p.add_argument("--input-view-weight", type=float, default=0.0,
                   help="extra weight of the silhouette IoU loss in each mesh's own input camera (0: DIB-R's loss)")
    p.add_argument("--device", default="cpu",
                   help="'cpu' or 'cuda' (under torchrun each rank takes the GPU of its LOCAL_RANK)")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.export is not None:
        dst = export_weights(a.export, a.out)
        print(f"wrote {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
        return 0
    if a.data is None:
        p.error("--data is required for training")
    res = train(a.data, a.out, a.steps, a.batch, a.views, a.lr, a.resume, a.threads, a.seed, a.split,
                a.log_every, a.ckpt_every, not a.no_progress,
                texture_size=a.texture_size, in_memory=not a.stream, schedule=a.schedule, warmup=a.warmup,
                clip=a.clip, normalize_bbox=a.normalize_bbox, init=a.init, input_view_weight=a.input_view_weight,
                device=a.device)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"step {res.step} loss {res.last_loss:.5f} ({res.seconds_per_step * 1000:.1f} ms/step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
