"""Pure-PyTorch reference implementations of the kernels.

They compute the same quantities as the C++/CUDA kernels with the same floating-point
operations in the same order (so the face index agrees exactly), and get their backward
from autograd. They are the oracle of the tests and the fallback backend when no compiled
extension is available. The rasterizer and the soft mask are brute force (every pixel against
every face, in chunks).
"""
from dibr_core.reference.interpolate import interpolate_reference
from dibr_core.reference.rasterize import rasterize_reference
from dibr_core.reference.soft_mask import soft_mask_reference

__all__ = ["interpolate_reference", "rasterize_reference", "soft_mask_reference"]
