"""PNG input and output for (H, W, C) float images with rows top to bottom."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(H, W, C) float in [0, 1] -> (H, W, C) uint8 (rounded, clamped)."""
    arr = img.detach().to("cpu", torch.float64).clamp(0, 1).numpy()
    return np.round(arr * 255.0).astype(np.uint8)


def save_png(path: Union[str, Path], rgb: torch.Tensor, alpha: Optional[torch.Tensor] = None) -> Path:
    """Write (H, W, 3) (and optional (H, W) alpha) floats in [0, 1] as an 8-bit PNG."""
    from PIL import Image

    if rgb.dim() != 3 or rgb.shape[-1] not in (1, 3, 4):
        raise ValueError(f"save_png(): rgb must have shape (H, W, 3), got {tuple(rgb.shape)}")
    img = rgb
    if alpha is not None:
        img = torch.cat([rgb[..., :3], alpha[..., None].to(rgb.dtype)], dim=-1)
    arr = to_uint8(img)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1]]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path)
    return path


def load_png(path: Union[str, Path]) -> torch.Tensor:
    """Read a PNG as (H, W, C) float32 in [0, 1] (C = 3 or 4)."""
    from PIL import Image

    with Image.open(path) as src:
        im = src.convert("RGBA" if src.mode in ("RGBA", "LA", "P") else "RGB")
        arr = np.asarray(im).astype(np.float32) / 255.0
    return torch.from_numpy(arr)
