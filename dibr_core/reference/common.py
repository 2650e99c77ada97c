"""Helpers shared by the reference kernels."""
from __future__ import annotations

from typing import Iterator, Tuple

import torch


def pixel_centres(height: int, width: int, dtype: torch.dtype, device: torch.device, multiplier: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scaled pixel-centre coordinates: xs (W,), ys (H,), row 0 at the top (y = +1)."""
    j = torch.arange(width, dtype=dtype, device=device)
    i = torch.arange(height, dtype=dtype, device=device)
    xs = (j * 2 + 1 - width) / width * multiplier
    ys = (height - i * 2 - 1) / height * multiplier
    return xs, ys


def pixel_grid(height: int, width: int, dtype: torch.dtype, device: torch.device, multiplier: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Flattened scaled pixel centres px, py of shape (H*W,), row-major."""
    xs, ys = pixel_centres(height, width, dtype, device, multiplier)
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    return px.reshape(-1), py.reshape(-1)


def chunks(n: int, per_chunk: int) -> Iterator[Tuple[int, int]]:
    start = 0
    while start < n:
        yield start, min(n, start + per_chunk)
        start += per_chunk


def chunk_size(faces: int, budget: int = 1 << 21) -> int:
    return max(1, budget // max(1, faces))


def in_box(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor, grow: float) -> torch.Tensor:
    """v (F, 3, 2) scaled, px/py (P,) -> (P, F): half-open box test, box grown by `grow`."""
    x0 = v[..., 0].amin(-1) - grow
    x1 = v[..., 0].amax(-1) + grow
    y0 = v[..., 1].amin(-1) - grow
    y1 = v[..., 1].amax(-1) + grow
    pxc = px[:, None]
    pyc = py[:, None]
    return (x0 <= pxc) & (pxc < x1) & (y0 <= pyc) & (pyc < y1)


def barycentric(v: torch.Tensor, px: torch.Tensor, py: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """v (..., 3, 2) scaled corners, px/py broadcastable to v[..., 0, 0].

    Returns (w (..., 3), area_sum (...)) exactly as the kernel header computes them:
    hw0 = eb x ec, hw1 = ec x ea, hw2 = ea x eb, S = hw0 + hw1 + hw2,
    w = hw / (S + sign(S) eps). Entries with S == 0 are not meaningful (zero-area faces).
    """
    eax = v[..., 0, 0] - px
    eay = v[..., 0, 1] - py
    ebx = v[..., 1, 0] - px
    eby = v[..., 1, 1] - py
    ecx = v[..., 2, 0] - px
    ecy = v[..., 2, 1] - py
    hw0 = ebx * ecy - eby * ecx
    hw1 = ecx * eay - ecy * eax
    hw2 = eax * eby - eay * ebx
    s = hw0 + hw1 + hw2
    e = s.new_tensor(eps)
    area = s + torch.where(s > 0, e, -e)
    area = torch.where(s == 0, torch.ones_like(area), area)
    w = torch.stack([hw0 / area, hw1 / area, hw2 / area], dim=-1)
    return w, s
