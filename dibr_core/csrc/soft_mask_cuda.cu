// CUDA soft silhouette of dibr_core (the launchers soft_mask_fwd_cuda and soft_mask_bwd_cuda of
// cuda_kernels.h; the CPU twin is soft_mask_cpu.cpp): one block per pixel tile, one kernel in
// three modes (forward, candidate count, gradient). No torch header here. The shared launch,
// scratch, grouping and binning code is in cuda_common.cuh.
#include "cuda_common.cuh"

namespace dibr {
namespace {

// ---------------------------------------------------------------------------------------------
// Soft mask
// ---------------------------------------------------------------------------------------------

enum SoftMode { kSoftForward = 0, kSoftCount = 1, kSoftGrad = 2 };

template <typename T>
struct SoftWork {
  int64_t* counts = nullptr;        // count: (B * per_b * kBlock + 1) candidates per pixel slot
  const int64_t* rec_off = nullptr;  // grad: first record of each pixel slot
  int32_t* rec_face = nullptr;
  uint8_t* rec_type = nullptr;
  T* rec_prob = nullptr;
  T* rec_suf = nullptr;
  T* contrib = nullptr;     // deterministic: (N, 6)
  uint32_t* rec_key = nullptr;  // deterministic: (N,) b * F + face
};

// One block per tile, one thread per pixel; the pixel's candidates are the first knum faces of
// the tile's list (face order) whose grown box holds it.
// kSoftForward: writes the soft mask. kSoftCount: counts the candidates of the uncovered pixels
// with a nonzero incoming gradient. kSoftGrad: records them (face, type, prob) and computes
// their gradient with prefix/suffix products, as the CPU backward.
template <typename T, int MODE>
__global__ void __launch_bounds__(kBlock)
    soft_mask_kernel(SoftMaskParams<T> p, const int64_t* tile_off, const int32_t* tile_faces, int tx_n, int per_b,
                     SoftWork<T> w) {
  __shared__ T s_v[kBlock * 6];    // scaled corners
  __shared__ T s_box[kBlock * 4];  // grown box x0, x1, y0, y1 (scaled)
  __shared__ int32_t s_f[kBlock];
  const int item = blockIdx.x;
  const int q = threadIdx.x;
  const TilePixel t = tile_pixel(item, q, tx_n, per_b, p.H, p.W);
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  const T sentinel = static_cast<T>(4.0 * p.multiplier * p.multiplier);
  const T grow = static_cast<T>(p.boxlen * p.multiplier);
  const T inv = static_cast<T>(p.sigmainv / (p.multiplier * p.multiplier));
  const T px = pixel_x<T>(t.j, p.W) * M, py = pixel_y<T>(t.i, p.H) * M;
  const int64_t pix = t.inside ? (static_cast<int64_t>(t.b) * p.H + t.i) * p.W + t.j : 0;
  const bool covered = !t.inside || p.face_idx[pix] >= 0;
  bool open = !covered;
  T g = T(0);
  if (MODE != kSoftForward && open) {
    g = p.grad_soft_mask[pix];
    open = g != T(0);
  }
  const int64_t slot = static_cast<int64_t>(item) * kBlock + q;
  int64_t r = MODE == kSoftGrad ? w.rec_off[slot] : 0;
  int count = 0;
  T prod = T(1);
  const int64_t k0 = tile_off[item], k1 = tile_off[item + 1];
  for (int64_t base = k0; base < k1; base += kBlock) {
    if (!__syncthreads_or(open ? 1 : 0)) break;  // also: the previous chunk is consumed
    const int n = static_cast<int>(k1 - base < kBlock ? k1 - base : kBlock);
    if (q < n) {
      const int32_t f = tile_faces[base + q];
      const T* src = p.face_vertices_image + (static_cast<int64_t>(t.b) * p.F + f) * 6;
      T* v = s_v + q * 6;
      for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
      s_box[q * 4 + 0] = min3(v[0], v[2], v[4]) - grow;
      s_box[q * 4 + 1] = max3(v[0], v[2], v[4]) + grow;
      s_box[q * 4 + 2] = min3(v[1], v[3], v[5]) - grow;
      s_box[q * 4 + 3] = max3(v[1], v[3], v[5]) + grow;
      s_f[q] = f;
    }
    __syncthreads();
    if (!open) continue;
    for (int k = 0; k < n; ++k) {
      const T* bx = s_box + k * 4;
      if (!(bx[2] <= py && py < bx[3])) continue;
      if (!(bx[0] <= px && px < bx[1])) continue;
      if (MODE != kSoftCount) {
        int type = 0;
        const T d = boundary_dist2(s_v + k * 6, px, py, eps, sentinel, &type);
        const T a = dev_exp(-inv * d);
        if (MODE == kSoftForward) {
          prod *= T(1) - a;
        } else {
          w.rec_face[r] = s_f[k];
          w.rec_type[r] = static_cast<uint8_t>(type);
          w.rec_prob[r] = a;
          ++r;
        }
      }
      if (++count >= p.knum) {
        open = false;
        break;
      }
    }
  }
  if (MODE == kSoftForward) {
    if (t.inside) p.soft_mask[pix] = covered ? T(1) : T(1) - prod;
    return;
  }
  if (MODE == kSoftCount) {
    w.counts[slot] = count;
    return;
  }
  if (count == 0) return;
  const int64_t r0 = w.rec_off[slot];
  // suffix[k] = prod_{l > k} (1 - a_l), stored per record.
  T suf = T(1);
  for (int k = count - 1; k >= 0; --k) {
    w.rec_suf[r0 + k] = suf;
    suf = suf * (T(1) - w.rec_prob[r0 + k]);
  }
  T prefix = T(1);
  for (int k = 0; k < count; ++k) {
    const int64_t rk = r0 + k;
    const T a = w.rec_prob[rk];
    // dA/da_k = prod_{l != k} (1 - a_l); da_k/dd_k = -inv a_k; d v_scaled / d v = M.
    const T gd = g * prefix * w.rec_suf[rk] * (-inv) * a * M;
    prefix *= T(1) - a;
    const int32_t f = w.rec_face[rk];
    const int64_t bf = static_cast<int64_t>(t.b) * p.F + f;
    T c6[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    if (gd != T(0)) {
      const T* src = p.face_vertices_image + bf * 6;
      T v[6];
      for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
      boundary_dist2_backward(v, px, py, eps, static_cast<int>(w.rec_type[rk]), gd, c6);
    }
    if (w.contrib != nullptr) {
      for (int c = 0; c < 6; ++c) w.contrib[rk * 6 + c] = c6[c];
      w.rec_key[rk] = static_cast<uint32_t>(bf);
    } else if (gd != T(0)) {
      T* dst = p.grad_face_vertices_image + bf * 6;
      for (int c = 0; c < 6; ++c)
        if (c6[c] != T(0)) atomic_add(dst + c, c6[c]);
    }
  }
}

}  // namespace

template <typename T>
void soft_mask_fwd_cuda(const SoftMaskParams<T>& p, cudaStream_t stream, const CudaAllocator* alloc) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0) return;
  require(p.knum > 0, "knum must be positive");
  Scratch s(stream, alloc);
  const TileBins bins = make_bins(p.face_vertices_image, p.valid_faces, p.B, p.F, p.H, p.W, p.boxlen, s);
  launch("soft_mask_kernel<forward>", soft_mask_kernel<T, kSoftForward>, static_cast<int64_t>(p.B) * bins.per_b,
         kBlock, stream, p, bins.offsets, bins.faces, bins.tx_n, bins.per_b, SoftWork<T>{});
}

template <typename T>
void soft_mask_bwd_cuda(const SoftMaskParams<T>& p, bool deterministic, cudaStream_t stream,
                        const CudaAllocator* alloc) {
  if (p.B <= 0 || p.H <= 0 || p.W <= 0 || p.F <= 0) return;
  require(p.knum > 0, "knum must be positive");
  Scratch s(stream, alloc);
  const TileBins bins = make_bins(p.face_vertices_image, p.valid_faces, p.B, p.F, p.H, p.W, p.boxlen, s);
  const int64_t n_blocks = static_cast<int64_t>(p.B) * bins.per_b;
  const int64_t n_slots = n_blocks * kBlock;
  // 1. Candidates per pixel slot (tile order, raster order inside a tile: the CPU's record order).
  SoftWork<T> w;
  w.counts = s.get<int64_t>(n_slots + 1);
  DIBR_CUDA_CHECK(cudaMemsetAsync(w.counts, 0, static_cast<size_t>(n_slots + 1) * sizeof(int64_t), stream));
  launch("soft_mask_kernel<count>", soft_mask_kernel<T, kSoftCount>, n_blocks, kBlock, stream, p, bins.offsets,
         bins.faces, bins.tx_n, bins.per_b, w);
  int64_t* rec_off = s.get<int64_t>(n_slots + 1);
  exclusive_scan(w.counts, rec_off, n_slots + 1, s);
  const int64_t n_rec = read_back(rec_off + n_slots, stream);
  if (n_rec == 0) return;
  // 2. Records and their gradient.
  w.counts = nullptr;
  w.rec_off = rec_off;
  w.rec_face = s.get<int32_t>(n_rec);
  w.rec_type = s.get<uint8_t>(n_rec);
  w.rec_prob = s.get<T>(n_rec);
  w.rec_suf = s.get<T>(n_rec);
  if (deterministic) {
    require(n_rec <= kInt32Max, std::to_string(n_rec) + " soft-mask candidates: deterministic mode supports at most 2^31 - 1");
    w.contrib = s.get<T>(n_rec * 6);
    w.rec_key = s.get<uint32_t>(n_rec);
  }
  launch("soft_mask_kernel<grad>", soft_mask_kernel<T, kSoftGrad>, n_blocks, kBlock, stream, p, bins.offsets,
         bins.faces, bins.tx_n, bins.per_b, w);
  if (!deterministic) return;
  // 3. Per face, its records' contributions in record order.
  const int64_t n_keys = static_cast<int64_t>(p.B) * p.F;
  int64_t* offsets = s.get<int64_t>(n_keys + 1);
  int32_t* order = s.get<int32_t>(n_rec);
  group_by_key(w.rec_key, nullptr, n_rec, n_keys, offsets, order, s);
  launch("segmented_sum_kernel", segmented_sum_kernel<T, 6>, blocks_for(n_keys * 6), kThreads, stream, offsets,
         order, static_cast<const T*>(w.contrib), n_keys, p.grad_face_vertices_image);
}

#define DIBR_INSTANTIATE_SOFT_MASK_CUDA(T)                                                                  \
  template void soft_mask_fwd_cuda<T>(const SoftMaskParams<T>&, cudaStream_t, const CudaAllocator*);       \
  template void soft_mask_bwd_cuda<T>(const SoftMaskParams<T>&, bool, cudaStream_t, const CudaAllocator*);

DIBR_INSTANTIATE_SOFT_MASK_CUDA(float)
DIBR_INSTANTIATE_SOFT_MASK_CUDA(double)

}  // namespace dibr
