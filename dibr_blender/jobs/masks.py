"""Silhouettes of reference images (no bpy): the check that refuses opaque references, and a mask
keyed from a background colour.

An image saved from Blender's default render (Film > Transparent off) is RGBA with alpha 1
everywhere; taken as the silhouette it says "the object fills the whole frame", and a fit blows
the mesh up to fill it while reporting a perfect overlap. :func:`check_silhouette` refuses such a
silhouette (one that leaves less than :data:`MIN_BACKGROUND_FRACTION` of the image as background);
:func:`key_mask` makes a real one from the background colour instead.

Colours here are the image's stored values (sRGB-encoded, 0..1), as a colour picker shows them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

# A silhouette must leave at least this share of the image as background (mask < 0.5).
MIN_BACKGROUND_FRACTION = 0.005
DEFAULT_TOLERANCE = 0.1

OPAQUE_ADVICE = ("render with Film > Transparent, give a mask image (--mask), or key out the background "
                 "colour (--background-color auto, or the panel's Background Key)")


@dataclass(frozen=True)
class BackgroundKey:
    """Make the silhouette from the background colour: a pixel is background when every channel is
    within ``tolerance`` of ``color`` (stored sRGB values in 0..1; None: the median colour of the
    image's border pixels), with a linear ramp from tolerance/2 to tolerance for anti-aliased edges."""

    color: Optional[Tuple[float, float, float]] = None
    tolerance: float = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not (0.0 < self.tolerance <= 1.0):
            raise ValueError(f"BackgroundKey: tolerance must be in (0, 1], got {self.tolerance}")
        if self.color is not None and (len(self.color) != 3 or not all(0.0 <= c <= 1.0 for c in self.color)):
            raise ValueError(f"BackgroundKey: color must be three values in 0..1, got {self.color}")

    def describe(self) -> str:
        col = "the border's colour" if self.color is None else "#" + "".join(
            f"{int(round(c * 255)):02X}" for c in self.color)
        return f"{col} (tolerance {self.tolerance:g})"


def from_panel(mode: str, color: Tuple[float, float, float], tolerance: float) -> Optional[BackgroundKey]:
    """The key of the panel's Background Key settings: ``mode`` NONE (no key), AUTO (the border's
    colour) or COLOR (``color``, stored sRGB values)."""
    if mode == "NONE":
        return None
    return BackgroundKey(None if mode == "AUTO" else (float(color[0]), float(color[1]), float(color[2])),
                         float(tolerance))


KEY_ITEMS = [
    ("NONE", "None", "The silhouette is the image's alpha (or the mask image)"),
    ("AUTO", "Border Colour", "Key out the colour of the image's border pixels (a render on a plain background)"),
    ("COLOR", "Colour", "Key out the chosen background colour"),
]


def parse_color(text: str) -> Optional[Tuple[float, float, float]]:
    """``auto`` -> None (the border's colour); ``#RRGGBB``, ``R,G,B`` in 0..1 or 0..255 -> (3,) in 0..1.
    Raises ValueError naming the text."""
    t = text.strip().lower()
    if t == "auto":
        return None
    m = re.fullmatch(r"#?([0-9a-f]{6})", t)
    if m and (t.startswith("#") or "," not in t):
        h = m.group(1)
        return (int(h[0:2], 16) / 255.0, int(h[2:4], 16) / 255.0, int(h[4:6], 16) / 255.0)
    parts = t.split(",")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(np.isfinite(vals)) or min(vals) < 0:
        raise ValueError(f"a colour must be auto, #RRGGBB or R,G,B, got {text!r}")
    if max(vals) > 1.0:
        if max(vals) > 255.0:
            raise ValueError(f"colour values must be 0..1 or 0..255, got {text!r}")
        vals = [v / 255.0 for v in vals]
    return (vals[0], vals[1], vals[2])


MIN_IMAGE_SIDE = 8   # pixels; smaller images carry no usable silhouette
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_image_size(width: int, height: int, label: str) -> None:
    """Raise ValueError (one line) for an image too small to hold a silhouette."""
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ValueError(f"{label} is {width}x{height} pixels; a reference needs at least "
                         f"{MIN_IMAGE_SIDE} pixels on each side")


def png_has_alpha(path: str) -> Optional[bool]:
    """Whether a PNG file stores transparency (colour type grey+alpha or RGBA, or a tRNS chunk),
    read from its chunks; None when ``path`` is no readable PNG. Blender's image ``depth`` cannot
    tell: it reports a 16-bit grey PNG as 32 bits, like RGBA."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return None
            colour_type = -1
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None
                length, kind = int.from_bytes(head[:4], "big"), head[4:]
                if kind == b"IHDR":
                    colour_type = fh.read(length)[9]
                    fh.seek(4, 1)
                    if colour_type in (4, 6):
                        return True
                    continue
                if kind == b"tRNS":
                    return True
                if kind in (b"IDAT", b"IEND"):
                    return False if colour_type >= 0 else None
                fh.seek(length + 4, 1)
    except (OSError, IndexError):
        return None


def border_color(rgb: np.ndarray) -> np.ndarray:
    """(3,) per-channel median of the outermost pixel ring of an (H, W, 3) image."""
    a = np.asarray(rgb, dtype=np.float64)[..., :3]
    ring = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]], axis=0)
    return np.median(ring, axis=0)


def key_mask(rgb: np.ndarray, key: BackgroundKey) -> np.ndarray:
    """(H, W) float32 silhouette of an (H, W, 3) image of stored (sRGB-encoded) values: 0 on the
    background colour, 1 on pixels that differ from it by more than the tolerance in any channel."""
    a = np.asarray(rgb, dtype=np.float64)[..., :3]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"key_mask(): expected an (H, W, 3) image, got {np.asarray(rgb).shape}")
    bg = border_color(a) if key.color is None else np.asarray(key.color, dtype=np.float64)
    d = np.abs(a - bg).max(axis=-1)
    lo = 0.5 * key.tolerance
    return np.clip((d - lo) / (key.tolerance - lo), 0.0, 1.0).astype(np.float32)


def background_fraction(mask: np.ndarray) -> float:
    """Share of the pixels outside the silhouette (mask below 0.5)."""
    m = np.asarray(mask)
    return float((m < 0.5).mean()) if m.size else 0.0


def check_silhouette(mask: np.ndarray, label: str, from_alpha: bool) -> None:
    """Raise ValueError (one line) when the silhouette of ``label`` is empty, or covers (nearly)
    the whole image: an opaque image is no silhouette."""
    m = np.asarray(mask)
    if not bool((m > 0.5).any()):
        raise ValueError(f"the silhouette of {label} is empty (no pixel with alpha or mask above 0.5)")
    frac = background_fraction(m)
    if frac < MIN_BACKGROUND_FRACTION:
        what = ("its alpha is 1 everywhere (an opaque image, e.g. a render without Film > Transparent)"
                if from_alpha else "the mask leaves no background")
        raise ValueError(f"the silhouette of {label} covers {100 * (1 - frac):.1f}% of the image: {what}; "
                         + OPAQUE_ADVICE)


__all__ = ["BackgroundKey", "DEFAULT_TOLERANCE", "KEY_ITEMS", "MIN_IMAGE_SIDE", "check_image_size", "from_panel",
           "png_has_alpha", "MIN_BACKGROUND_FRACTION", "background_fraction", "border_color",
           "check_silhouette", "key_mask", "parse_color"]
