"""The differentiable kernels' public wrappers: validate, pick a backend, run."""
from dibr_core.ops.interpolate import interpolate
from dibr_core.ops.rasterize import Fragments, rasterize
from dibr_core.ops.soft_mask import soft_mask

__all__ = ["Fragments", "interpolate", "rasterize", "soft_mask"]
