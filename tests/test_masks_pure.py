"""Silhouette checks and the background key without Blender (dibr_blender/jobs/masks.py)."""
from __future__ import annotations

import numpy as np
import pytest

from dibr_blender.jobs import masks


def test_parse_color_forms() -> None:
    assert masks.parse_color("auto") is None
    assert masks.parse_color("#FF8000") == pytest.approx((1.0, 128 / 255, 0.0))
    assert masks.parse_color("0.5, 0.25, 1") == pytest.approx((0.5, 0.25, 1.0))
    assert masks.parse_color("255,0,51") == pytest.approx((1.0, 0.0, 0.2))
    for bad in ("#12", "red", "1,2", "-1,0,0", "300,0,0", "nan,0,0"):
        with pytest.raises(ValueError, match="colour"):
            masks.parse_color(bad)


def test_key_mask_border_colour_and_ramp() -> None:
    img = np.full((20, 30, 3), 0.6)
    img[5:15, 10:20] = (0.8, 0.2, 0.1)
    img[5, 25] = (0.64, 0.6, 0.6)          # within tolerance / 2: background
    img[6, 25] = (0.675, 0.6, 0.6)         # halfway up the ramp
    m = masks.key_mask(img, masks.BackgroundKey())
    assert m[5:15, 10:20].min() == 1.0 and m[:5].max() == 0.0
    assert m[5, 25] == 0.0 and m[6, 25] == pytest.approx(0.5, abs=1e-6)
    explicit = masks.key_mask(img, masks.BackgroundKey((0.8, 0.2, 0.1)))
    assert explicit[5:15, 10:20].max() == 0.0 and explicit[:5].min() == 1.0


def test_check_silhouette_refuses_empty_and_opaque() -> None:
    ok = np.zeros((10, 10))
    ok[2:8, 2:8] = 1.0
    masks.check_silhouette(ok, "ok.png", from_alpha=True)
    with pytest.raises(ValueError, match="is empty"):
        masks.check_silhouette(np.zeros((10, 10)), "e.png", from_alpha=True)
    with pytest.raises(ValueError, match=r"covers 100\.0% of the image: its alpha is 1 everywhere"):
        masks.check_silhouette(np.ones((10, 10)), "o.png", from_alpha=True)
    with pytest.raises(ValueError, match="the mask leaves no background"):
        masks.check_silhouette(np.ones((10, 10)), "o.png", from_alpha=False)
    with pytest.raises(ValueError, match="tolerance"):
        masks.BackgroundKey(tolerance=0.0)
