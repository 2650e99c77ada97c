"""The differentiable kernels' public wrappers: validate, pick a backend, run."""
from dibr_core.ops.determinism import deterministic_enabled, set_deterministic
from dibr_core.ops.interpolate import interpolate
from dibr_core.ops.rasterize import Fragments, rasterize
from dibr_core.ops.soft_mask import soft_mask

__all__ = ["Fragments", "deterministic_enabled", "interpolate", "rasterize", "set_deterministic", "soft_mask"]
