"""The shape grammars of the procedural data set, behind one function.

Grammar 1 (:mod:`dibr_core.data.shapes`) draws one template per category with random
proportions: the shipped predictor's data, kept bit for bit. Grammar 2
(:mod:`dibr_core.data.shapes2`) draws the parts real objects have (engines and tails, wheels in
arches, hull types and superstructures, leg / back / arm variants).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from dibr_core.data.shapes import CATEGORIES, GRAMMAR1, Shape, normalize_shape
from dibr_core.data.shapes2 import GRAMMAR2

__all__ = ["GRAMMARS", "make_shape"]

GRAMMARS: Tuple[int, ...] = (1, 2)
"""Shape grammar versions: 1 (the original templates) and 2 (richer part variants)."""


def make_shape(category: str, seed: int, normalize: str = "diagonal", grammar: int = 1) -> Shape:
    """Build the shape of ``category`` for ``seed`` (deterministic: same seed, same arrays).

    Args:
        category: one of :data:`dibr_core.data.shapes.CATEGORIES`.
        seed: the shape's seed.
        normalize: ``"diagonal"`` (unit bounding-box diagonal) or ``"longest"`` (unit longest side).
        grammar: 1 (default; the shapes of the shipped data set, unchanged) or 2.
    """
    if category not in GRAMMAR1:
        raise ValueError(f"make_shape(): unknown category {category!r}; expected one of {CATEGORIES}")
    if grammar not in GRAMMARS:
        raise ValueError(f"make_shape(): grammar must be one of {GRAMMARS}, got {grammar!r}")
    rules = GRAMMAR2 if grammar == 2 else GRAMMAR1
    return normalize_shape(rules[category](np.random.default_rng(seed)), normalize)
