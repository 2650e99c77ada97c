// CUDA kernels of dibr_core: launch functions for float and double.
//
// Plain C++ (no torch header): the torch glue (torch_<op>.cpp, built with WITH_CUDA) fills the
// parameter structs of dibr/params.h with device pointers and calls these on its current
// stream. They are defined in <op>_cuda.cu, one file per op, on the code of cuda_common.cuh.
// Every launcher checks each CUDA call and kernel launch and throws std::runtime_error with the
// CUDA error string on failure.
//
// Semantics are those of the CPU kernels (cpu_kernels.h), computed with the same math
// (dibr/math.h): the same face index per pixel, exactly; the same candidate faces, in the same
// order, for the soft mask. This needs the device code compiled without FMA contraction
// (nvcc --fmad=false), as the CPU code is compiled with -ffp-contract=off.
//
// Scratch space: the launchers allocate their temporary buffers themselves, through `alloc`
// when given (the torch layer passes the caching allocator) and with cudaMallocAsync /
// cudaFreeAsync on `stream` otherwise. Launchers that need a size computed on the device (the
// number of face-tile pairs, of soft-mask candidates) synchronise `stream` once to read it.
//
// Outputs: the forward functions write every output element. The backward functions add into
// their gradient outputs, which the caller zero-initialises (as for the CPU kernels).
//
// Backward accumulation: with deterministic == false, contributions are added with atomicAdd
// (fast; the last bits may vary between runs). With deterministic == true, each contribution is
// first written to a buffer, the contributions are grouped by target (face or vertex) with a
// stable sort that keeps the CPU kernels' order (pixel order; for the soft mask, tile order,
// pixel order within a tile, then face order), and each target's contributions are summed
// sequentially in that order: the result does not depend on scheduling, and is the CPU
// kernels' summation order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

#include "dibr/params.h"

namespace dibr {

// Optional allocator for the launchers' scratch space. alloc returns memory usable on
// `stream` (or throws); release frees it (stream-ordered: work already queued on the stream
// may still use it).
struct CudaAllocator {
  void* (*alloc)(void* ctx, size_t bytes, cudaStream_t stream);
  void (*release)(void* ctx, void* ptr, cudaStream_t stream);
  void* ctx;
};

// Nearest face per pixel (face_idx, bary). valid_faces may be nullptr.
template <typename T>
void rasterize_fwd_cuda(const RasterizeFwdParams<T>& p, cudaStream_t stream, const CudaAllocator* alloc = nullptr);

// Adds d(sum grad_bary * bary)/d(face_vertices_image) into grad_face_vertices_image.
template <typename T>
void rasterize_bwd_cuda(const RasterizeBwdParams<T>& p, bool deterministic, cudaStream_t stream,
                        const CudaAllocator* alloc = nullptr);

// Soft silhouette into soft_mask. Keeps no candidate records (the rec_* fields are ignored).
template <typename T>
void soft_mask_fwd_cuda(const SoftMaskParams<T>& p, cudaStream_t stream, const CudaAllocator* alloc = nullptr);

// Soft-mask backward. Recomputes each uncovered pixel's candidates from face_vertices_image,
// face_idx, valid_faces, boxlen and knum (the rec_* fields are ignored), then adds the exact
// gradient (prefix/suffix products, as the CPU) into grad_face_vertices_image.
template <typename T>
void soft_mask_bwd_cuda(const SoftMaskParams<T>& p, bool deterministic, cudaStream_t stream,
                        const CudaAllocator* alloc = nullptr);

// out = sum_k bary_k attributes[vertex k of the pixel's face]; 0 on background.
template <typename T>
void interpolate_fwd_cuda(const InterpolateParams<T>& p, cudaStream_t stream, const CudaAllocator* alloc = nullptr);

// grad_bary (when not nullptr) is written; grad_attributes (when not nullptr) is added into.
template <typename T>
void interpolate_bwd_cuda(const InterpolateParams<T>& p, bool deterministic, cudaStream_t stream,
                          const CudaAllocator* alloc = nullptr);

}  // namespace dibr
