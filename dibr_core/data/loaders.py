"""Reading the cached data set (written by :mod:`dibr_core.data.dataset`): the items of a split
by category (:func:`list_items`) and (objects x views) training batches (:class:`ViewDataset`)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from dibr_core.data.dataset import FOV_Y_DEG, load_item

__all__ = ["list_items", "ViewDataset"]


def list_items(root: Union[str, Path], split: str, limit: Optional[int] = None) -> Dict[str, List[Path]]:
    """``{category: sorted .npz paths}`` under ``root/split``; ``limit`` caps items per category."""
    base = Path(root) / split
    out: Dict[str, List[Path]] = {}
    if not base.is_dir():
        return out
    for cat_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        paths = sorted(p for p in cat_dir.glob("*.npz") if not p.name.endswith(".tmp.npz"))
        if limit is not None:
            paths = paths[:limit]
        if paths:
            out[cat_dir.name] = paths
    return out


class ViewDataset:
    """The ``.npz`` items of one split, sampled as (objects x views) batches.

    Args:
        root: dataset root (``<root>/<split>/<category>/<index>.npz``, see
            :mod:`dibr_core.data.dataset`), or a directory holding ``.npz`` files directly.
        split: split sub-directory (ignored when ``root/split`` does not exist).
        in_memory: hold every item's images in RAM (uint8: 24 x 64 x 64 x 4 = 393 KB per
            object, so about 2.5 GB for 6,500 objects); False re-reads the sampled items'
            ``.npz`` files at every step (slower, constant memory).

    Attributes:
        paths: the N files, sorted; image_size: S; n_views: K views per item;
        images: (N, K, S, S, 4) uint8 RGBA and views: (N, K, 4, 4) float32 world -> camera
        (only when ``in_memory``, else None); fovs: (N, K) float32 vertical fields of view in
        degrees (the protocol's 30 unless the items were rendered with ``--randomize``; only when
        ``in_memory``).
    """

    def __init__(self, root: Union[str, Path], split: str = "train", in_memory: bool = True) -> None:
        base = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
        self.paths: List[Path] = sorted(p for p in base.rglob("*.npz") if not p.name.endswith(".tmp.npz"))
        if not self.paths:
            raise FileNotFoundError(f"ViewDataset(): no .npz files under {base}")
        self.images: Optional[np.ndarray] = None
        self.views: Optional[np.ndarray] = None
        self.fovs: Optional[np.ndarray] = None
        first = self._load(0)
        self.image_size = int(first[0].shape[1])
        self.n_views = int(first[0].shape[0])
        if in_memory:
            items = [first] + [self._load(i) for i in range(1, len(self.paths))]
            shapes = {im.shape for im, _, _ in items}
            if len(shapes) != 1:
                raise ValueError(f"ViewDataset(): items have different image shapes {shapes}")
            self.images = np.stack([im for im, _, _ in items])
            self.views = np.stack([v for _, v, _ in items])
            self.fovs = np.stack([f for _, _, f in items])

    def _load(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item i -> images (K, S, S, 4) uint8, views (K, 4, 4) float32, fovs (K,) float32 degrees."""
        it = load_item(self.paths[i])
        K = int(it["images"].shape[0])
        fov = np.broadcast_to(np.asarray(it.get("fov_y_deg", FOV_Y_DEG), dtype=np.float32), (K,)).copy()
        if not ((fov > 1.0) & (fov < 179.0)).all():
            raise ValueError(f"ViewDataset(): {self.paths[i]} has fov_y_deg {fov}, expected degrees in (1, 179)")
        return it["images"], it["views"].astype(np.float32), fov

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, rng: np.random.Generator, batch: int, views: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample ``batch`` objects (without replacement when possible) and ``views`` distinct views each.

        Returns:
            images (batch, views, 4, S, S) float32 RGBA in [0, 1] (channels first);
            view matrices (batch, views, 4, 4) float32.
        """
        ims, vm, _ = self.sample_cameras(rng, batch, views)
        return ims, vm

    def sample_cameras(self, rng: np.random.Generator, batch: int,
                       views: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample` (the same draws from ``rng``) plus the views' vertical fields of view
        (batch, views) float32 in degrees."""
        if views > self.n_views:
            raise ValueError(f"sample(): views={views} but items have only {self.n_views}")
        objs = rng.choice(len(self), size=batch, replace=batch > len(self))
        vids = np.stack([rng.choice(self.n_views, size=views, replace=False) for _ in range(batch)])
        if self.images is not None and self.views is not None and self.fovs is not None:
            ims = self.images[objs[:, None], vids]                   # (B, V, S, S, 4)
            vm = self.views[objs[:, None], vids]                     # (B, V, 4, 4)
            fv = self.fovs[objs[:, None], vids]                      # (B, V)
        else:
            loaded = [self._load(int(o)) for o in objs]
            ims = np.stack([im[v] for (im, _, _), v in zip(loaded, vids)])
            vm = np.stack([vw[v] for (_, vw, _), v in zip(loaded, vids)])
            fv = np.stack([f[v] for (_, _, f), v in zip(loaded, vids)])
        im_t = torch.from_numpy(ims).float().div_(255.0).permute(0, 1, 4, 2, 3).contiguous()
        return im_t, torch.from_numpy(np.ascontiguousarray(vm)), torch.from_numpy(np.ascontiguousarray(fv))
