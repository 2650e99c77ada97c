// CUDA rasterizer of dibr_core (the launchers rasterize_fwd_cuda and rasterize_bwd_cuda of
// cuda_kernels.h; the CPU twin is rasterize_cpu.cpp): one block per pixel tile for the forward,
// one thread per pixel for the backward. No torch header here. The shared launch, scratch,
// grouping and binning code is in cuda_common.cuh.
#include "cuda_common.cuh"

namespace dibr {
namespace {

// ---------------------------------------------------------------------------------------------
// Rasterize
// ---------------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kBlock)
    rasterize_fwd_kernel(RasterizeFwdParams<T> p, const int64_t* tile_off, const int32_t* tile_faces, int tx_n,
                         int per_b) {
  __shared__ T s_v[kBlock * 6];    // scaled corners
  __shared__ T s_box[kBlock * 4];  // x0, x1, y0, y1 (scaled)
  __shared__ T s_z[kBlock * 3];
  __shared__ int32_t s_f[kBlock];
  const int item = blockIdx.x;
  const int q = threadIdx.x;
  const TilePixel t = tile_pixel(item, q, tx_n, per_b, p.H, p.W);
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  const T px = pixel_x<T>(t.j, p.W) * M, py = pixel_y<T>(t.i, p.H) * M;
  T best_z = -cuda::std::numeric_limits<T>::infinity();
  int64_t best_f = -1;
  T bw0 = T(0), bw1 = T(0), bw2 = T(0);
  const int64_t k0 = tile_off[item], k1 = tile_off[item + 1];
  for (int64_t base = k0; base < k1; base += kBlock) {
    const int n = static_cast<int>(k1 - base < kBlock ? k1 - base : kBlock);
    __syncthreads();  // the previous chunk is consumed
    if (q < n) {
      const int32_t f = tile_faces[base + q];
      const int64_t bf = static_cast<int64_t>(t.b) * p.F + f;
      const T* src = p.face_vertices_image + bf * 6;
      T* v = s_v + q * 6;
      for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
      s_box[q * 4 + 0] = min3(v[0], v[2], v[4]);
      s_box[q * 4 + 1] = max3(v[0], v[2], v[4]);
      s_box[q * 4 + 2] = min3(v[1], v[3], v[5]);
      s_box[q * 4 + 3] = max3(v[1], v[3], v[5]);
      const T* z = p.face_vertices_z + bf * 3;
      s_z[q * 3 + 0] = z[0];
      s_z[q * 3 + 1] = z[1];
      s_z[q * 3 + 2] = z[2];
      s_f[q] = f;
    }
    __syncthreads();
    if (!t.inside) continue;
    for (int k = 0; k < n; ++k) {
      const T* bx = s_box + k * 4;
      if (!(bx[2] <= py && py < bx[3])) continue;
      if (!(bx[0] <= px && px < bx[1])) continue;
      Bary<T> bc;
      if (!barycentric(s_v + k * 6, px, py, eps, bc)) continue;
      if (bc.w[0] < T(0) || bc.w[1] < T(0) || bc.w[2] < T(0)) continue;
      const T zz = bc.w[0] * s_z[k * 3] + bc.w[1] * s_z[k * 3 + 1] + bc.w[2] * s_z[k * 3 + 2];
      if (zz > best_z) {
        best_z = zz;
        best_f = s_f[k];
        bw0 = bc.w[0];
        bw1 = bc.w[1];
        bw2 = bc.w[2];
      }
    }
  }
  if (!t.inside) return;
  const int64_t pix = (static_cast<int64_t>(t.b) * p.H + t.i) * p.W + t.j;
  p.face_idx[pix] = best_f;
  p.bary[pix * 3] = bw0;
  p.bary[pix * 3 + 1] = bw1;
  p.bary[pix * 3 + 2] = bw2;
}

// Each covered pixel's contribution to its face's corners (the CPU's pass 1): into contrib and
// keys (deterministic) or atomically into the gradient.
template <typename T>
__global__ void rasterize_bwd_kernel(RasterizeBwdParams<T> p, T* contrib, uint32_t* keys) {
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  const int64_t n = p.B * hw;
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  const uint32_t none = static_cast<uint32_t>(static_cast<int64_t>(p.B) * p.F);
  DIBR_GRID_LOOP(pix, n) {
    T out[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    const int64_t f = p.face_idx[pix];
    const int64_t b = pix / hw;
    bool any = false;
    if (f >= 0) {
      const T* g = p.grad_bary + pix * 3;
      if (!(g[0] == T(0) && g[1] == T(0) && g[2] == T(0))) {
        const int i = static_cast<int>((pix / p.W) % p.H), j = static_cast<int>(pix % p.W);
        const T px = pixel_x<T>(j, p.W) * M, py = pixel_y<T>(i, p.H) * M;
        const T* src = p.face_vertices_image + (b * p.F + f) * 6;
        T v[6];
        for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
        Bary<T> bc;
        if (barycentric(v, px, py, eps, bc)) {
          barycentric_backward(v, px, py, bc, g, out);
          for (int c = 0; c < 6; ++c) out[c] *= M;  // d v_scaled / d v = M
          any = true;
        }
      }
    }
    if (contrib != nullptr) {
      for (int c = 0; c < 6; ++c) contrib[pix * 6 + c] = out[c];
      keys[pix] = f >= 0 ? static_cast<uint32_t>(b * p.F + f) : none;
    } else if (any) {
      T* dst = p.grad_face_vertices_image + (b * p.F + f) * 6;
      for (int c = 0; c < 6; ++c)
        if (out[c] != T(0)) atomic_add(dst + c, out[c]);
    }
  }
}

}  // namespace

template <typename T>
void rasterize_fwd_cuda(const RasterizeFwdParams<T>& p, cudaStream_t stream, const CudaAllocator* alloc) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return;
  Scratch s(stream, alloc);
  const TileBins bins = make_bins(p.face_vertices_image, p.valid_faces, p.B, p.F, p.H, p.W, 0.0, s);
  launch("rasterize_fwd_kernel", rasterize_fwd_kernel<T>, static_cast<int64_t>(p.B) * bins.per_b, kBlock, stream, p,
         bins.offsets, bins.faces, bins.tx_n, bins.per_b);
}

template <typename T>
void rasterize_bwd_cuda(const RasterizeBwdParams<T>& p, bool deterministic, cudaStream_t stream,
                        const CudaAllocator* alloc) {
  const int64_t n_pix = static_cast<int64_t>(p.B) * p.H * p.W;
  if (n_pix <= 0 || p.F <= 0) return;
  if (!deterministic) {
    launch("rasterize_bwd_kernel", rasterize_bwd_kernel<T>, blocks_for(n_pix), kThreads, stream, p,
           static_cast<T*>(nullptr), static_cast<uint32_t*>(nullptr));
    return;
  }
  Scratch s(stream, alloc);
  const int64_t n_keys = static_cast<int64_t>(p.B) * p.F;
  T* contrib = s.get<T>(n_pix * 6);
  uint32_t* keys = s.get<uint32_t>(n_pix);
  launch("rasterize_bwd_kernel", rasterize_bwd_kernel<T>, blocks_for(n_pix), kThreads, stream, p, contrib, keys);
  int64_t* offsets = s.get<int64_t>(n_keys + 1);
  int32_t* order = s.get<int32_t>(n_pix);
  group_by_key(keys, nullptr, n_pix, n_keys, offsets, order, s);
  launch("segmented_sum_kernel", segmented_sum_kernel<T, 6>, blocks_for(n_keys * 6), kThreads, stream, offsets,
         order, contrib, n_keys, p.grad_face_vertices_image);
}

#define DIBR_INSTANTIATE_RASTERIZE_CUDA(T)                                                                     \
  template void rasterize_fwd_cuda<T>(const RasterizeFwdParams<T>&, cudaStream_t, const CudaAllocator*);      \
  template void rasterize_bwd_cuda<T>(const RasterizeBwdParams<T>&, bool, cudaStream_t, const CudaAllocator*);

DIBR_INSTANTIATE_RASTERIZE_CUDA(float)
DIBR_INSTANTIATE_RASTERIZE_CUDA(double)

}  // namespace dibr
