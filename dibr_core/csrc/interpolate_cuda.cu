// CUDA attribute interpolation of dibr_core (the launchers interpolate_fwd_cuda and
// interpolate_bwd_cuda of cuda_kernels.h; the CPU twin is interpolate_cpu.cpp): element-wise
// kernels, and for the deterministic attribute gradient a grouping by target vertex. No torch
// header here. The shared launch, scratch and grouping code is in cuda_common.cuh.
#include "cuda_common.cuh"

namespace dibr {
namespace {

// ---------------------------------------------------------------------------------------------
// Interpolate
// ---------------------------------------------------------------------------------------------

// One thread per output element (pixel, d).
template <typename T>
__global__ void interpolate_fwd_kernel(InterpolateParams<T> p) {
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  const int D = p.D;
  DIBR_GRID_LOOP(idx, p.B * hw * D) {
    const int64_t pix = idx / D;
    const int d = static_cast<int>(idx % D);
    const int64_t f = p.face_idx[pix];
    if (f < 0) {
      p.out[idx] = T(0);
      continue;
    }
    const int64_t b = pix / hw;
    int64_t v[3];
    corner_vertices(p, b, f, v);
    const T* w = p.bary + pix * 3;
    const T a0 = p.attributes[(b * p.V + v[0]) * D + d];
    const T a1 = p.attributes[(b * p.V + v[1]) * D + d];
    const T a2 = p.attributes[(b * p.V + v[2]) * D + d];
    p.out[idx] = w[0] * a0 + w[1] * a1 + w[2] * a2;
  }
}

template <typename T>
__global__ void interpolate_grad_bary_kernel(InterpolateParams<T> p) {
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  const int D = p.D;
  DIBR_GRID_LOOP(pix, p.B * hw) {
    T* gb = p.grad_bary + pix * 3;
    const int64_t f = p.face_idx[pix];
    if (f < 0) {
      gb[0] = gb[1] = gb[2] = T(0);
      continue;
    }
    const int64_t b = pix / hw;
    int64_t v[3];
    corner_vertices(p, b, f, v);
    const T* g = p.grad_out + pix * D;
    for (int k = 0; k < 3; ++k) {
      const T* a = p.attributes + (b * p.V + v[k]) * D;
      T s = T(0);
      for (int d = 0; d < D; ++d) s += g[d] * a[d];
      gb[k] = s;
    }
  }
}

// Non-deterministic attribute gradient: one thread per (pixel, d), atomics.
template <typename T>
__global__ void interpolate_grad_attr_atomic_kernel(InterpolateParams<T> p) {
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  const int D = p.D;
  DIBR_GRID_LOOP(idx, p.B * hw * D) {
    const int64_t pix = idx / D;
    const int d = static_cast<int>(idx % D);
    const int64_t f = p.face_idx[pix];
    if (f < 0) continue;
    const int64_t b = pix / hw;
    int64_t v[3];
    corner_vertices(p, b, f, v);
    const T* w = p.bary + pix * 3;
    const T g = p.grad_out[idx];
    for (int k = 0; k < 3; ++k) {
      const T c = w[k] * g;
      if (c != T(0)) atomic_add(p.grad_attributes + (b * p.V + v[k]) * D + d, c);
    }
  }
}

// Deterministic attribute gradient, pass 1: the target vertex (b * V + v) of item pix * 3 + k.
template <typename T>
__global__ void interpolate_keys_kernel(InterpolateParams<T> p, uint32_t* keys) {
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  const uint32_t none = static_cast<uint32_t>(static_cast<int64_t>(p.B) * p.V);
  DIBR_GRID_LOOP(pix, p.B * hw) {
    const int64_t f = p.face_idx[pix];
    if (f < 0) {
      keys[pix * 3] = keys[pix * 3 + 1] = keys[pix * 3 + 2] = none;
      continue;
    }
    const int64_t b = pix / hw;
    int64_t v[3];
    corner_vertices(p, b, f, v);
    for (int k = 0; k < 3; ++k) keys[pix * 3 + k] = static_cast<uint32_t>(b * p.V + v[k]);
  }
}

// Pass 2: one thread per (vertex, d), adding its items' w_k g_d in item (= CPU) order.
template <typename T>
__global__ void interpolate_grad_attr_sum_kernel(InterpolateParams<T> p, const int64_t* offsets,
                                                 const int32_t* order) {
  const int D = p.D;
  DIBR_GRID_LOOP(idx, static_cast<int64_t>(p.B) * p.V * D) {
    const int64_t key = idx / D;
    const int d = static_cast<int>(idx % D);
    const int64_t r0 = offsets[key], r1 = offsets[key + 1];
    if (r0 == r1) continue;
    T s = p.grad_attributes[idx];
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t item = order[r];
      const int64_t pix = item / 3;
      const int k = static_cast<int>(item % 3);
      s += p.bary[pix * 3 + k] * p.grad_out[pix * D + d];
    }
    p.grad_attributes[idx] = s;
  }
}

}  // namespace

template <typename T>
void interpolate_fwd_cuda(const InterpolateParams<T>& p, cudaStream_t stream, const CudaAllocator* /*alloc*/) {
  const int64_t n = static_cast<int64_t>(p.B) * p.H * p.W * p.D;
  launch("interpolate_fwd_kernel", interpolate_fwd_kernel<T>, blocks_for(n), kThreads, stream, p);
}

template <typename T>
void interpolate_bwd_cuda(const InterpolateParams<T>& p, bool deterministic, cudaStream_t stream,
                          const CudaAllocator* alloc) {
  const int64_t n_pix = static_cast<int64_t>(p.B) * p.H * p.W;
  if (p.grad_bary != nullptr)
    launch("interpolate_grad_bary_kernel", interpolate_grad_bary_kernel<T>, blocks_for(n_pix), kThreads, stream, p);
  if (p.grad_attributes == nullptr || p.D <= 0 || n_pix <= 0) return;
  if (!deterministic) {
    launch("interpolate_grad_attr_atomic_kernel", interpolate_grad_attr_atomic_kernel<T>, blocks_for(n_pix * p.D),
           kThreads, stream, p);
    return;
  }
  Scratch s(stream, alloc);
  const int64_t n_items = n_pix * 3;
  const int64_t n_keys = static_cast<int64_t>(p.B) * p.V;
  uint32_t* keys = s.get<uint32_t>(n_items);
  launch("interpolate_keys_kernel", interpolate_keys_kernel<T>, blocks_for(n_pix), kThreads, stream, p, keys);
  int64_t* offsets = s.get<int64_t>(n_keys + 1);
  int32_t* order = s.get<int32_t>(n_items);
  group_by_key(keys, nullptr, n_items, n_keys, offsets, order, s);
  launch("interpolate_grad_attr_sum_kernel", interpolate_grad_attr_sum_kernel<T>, blocks_for(n_keys * p.D), kThreads,
         stream, p, static_cast<const int64_t*>(offsets), static_cast<const int32_t*>(order));
}

#define DIBR_INSTANTIATE_INTERPOLATE_CUDA(T)                                                                \
  template void interpolate_fwd_cuda<T>(const InterpolateParams<T>&, cudaStream_t, const CudaAllocator*);  \
  template void interpolate_bwd_cuda<T>(const InterpolateParams<T>&, bool, cudaStream_t, const CudaAllocator*);

DIBR_INSTANTIATE_INTERPOLATE_CUDA(float)
DIBR_INSTANTIATE_INTERPOLATE_CUDA(double)

}  // namespace dibr
