// CUDA kernels of dibr_core (see cuda_kernels.h for the contract). No torch header here: this
// file compiles with nvcc alone.
//
// Compile with --fmad=false: the CPU kernels are compiled with -ffp-contract=off, and the face
// selection (inside test, depth test, soft-mask candidate distances) must round exactly as the
// CPU does to give the same face index.
//
// Layout of the work:
// - Binning (as the CPU's dibr/binning.h): faces are listed per 8x8 pixel tile (kTile) by a
//   conservative pixel range of their bounding box (grown by boxlen for the soft mask). Pairs
//   (tile, face) are emitted in face order and grouped by tile with a stable radix sort, so each
//   tile's list is in ascending face order.
// - Rasterize / soft mask: one block per tile, one thread per pixel; the tile's faces are staged
//   in shared memory in chunks of 64 and every thread walks them in list order. This visits each
//   pixel's faces in face order, as the CPU: the nearest face (strict > on depth, the lower index
//   wins ties) and the soft-mask candidates (the first knum faces, product in face order) are
//   the CPU's.
// - Backward: atomicAdd into the gradients, or (deterministic) per-contribution buffers grouped
//   by target with a stable sort and summed sequentially in the CPU's order.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda/std/limits>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_kernels.h"
#include "dibr/binning.h"
#include "dibr/hd.h"
#include "dibr/math.h"
#include "dibr/params.h"

namespace dibr {
namespace {

constexpr int kBlock = kTile * kTile;  // threads per tile block = pixels per tile = faces per chunk
constexpr int kThreads = 256;          // threads per block of the element-wise kernels
constexpr int64_t kMaxBlocks = int64_t(1) << 22;
constexpr int64_t kInt32Max = 2147483647;

// ---------------------------------------------------------------------------------------------
// Error handling, launches, scratch space
// ---------------------------------------------------------------------------------------------

void check_cuda(cudaError_t err, const char* what, int line) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls are not blamed
  throw std::runtime_error(std::string("dibr_core CUDA error in ") + what + " (kernels_cuda.cu:" +
                           std::to_string(line) + "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

#define DIBR_CUDA_CHECK(expr) check_cuda((expr), #expr, __LINE__)

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::runtime_error("dibr_core CUDA: " + msg);
}

// Launches kernel<<<blocks, threads, 0, stream>>>(args...) (nothing when blocks == 0) and checks
// the launch.
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), int64_t blocks, int threads, cudaStream_t stream,
            Args&&... args) {
  if (blocks <= 0) return;
  kernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<KArgs>(args)...);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("dibr_core CUDA error launching ") + name + ": " + cudaGetErrorName(err) +
                             ": " + cudaGetErrorString(err));
}

// Blocks for a grid-stride loop over n elements.
int64_t blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return b < kMaxBlocks ? b : kMaxBlocks;
}

#define DIBR_GRID_LOOP(i, n)                                                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);                   \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// Temporary device buffers, released (stream-ordered) when the launcher returns or throws.
class Scratch {
 public:
  Scratch(cudaStream_t stream, const CudaAllocator* alloc)
      : stream_(stream), alloc_(alloc != nullptr && alloc->alloc != nullptr && alloc->release != nullptr ? alloc
                                                                                                         : nullptr) {
    ptrs_.reserve(16);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    for (size_t k = ptrs_.size(); k-- > 0;) {
      if (alloc_ != nullptr)
        alloc_->release(alloc_->ctx, ptrs_[k], stream_);
      else
        (void)cudaFreeAsync(ptrs_[k], stream_);
    }
  }

  // n elements of U (at least 256 bytes: never a null pointer, which cub would take for a query).
  template <typename U>
  U* get(int64_t n) {
    size_t bytes = static_cast<size_t>(n > 0 ? n : 1) * sizeof(U);
    bytes = (bytes + 255) / 256 * 256;
    void* ptr = nullptr;
    ptrs_.push_back(nullptr);
    if (alloc_ != nullptr) {
      ptr = alloc_->alloc(alloc_->ctx, bytes, stream_);
      require(ptr != nullptr, "scratch allocation of " + std::to_string(bytes) + " bytes failed");
    } else {
      DIBR_CUDA_CHECK(cudaMallocAsync(&ptr, bytes, stream_));
    }
    ptrs_.back() = ptr;
    return static_cast<U*>(ptr);
  }

  cudaStream_t stream() const { return stream_; }

 private:
  cudaStream_t stream_;
  const CudaAllocator* alloc_;
  std::vector<void*> ptrs_;
};

int64_t read_back(const int64_t* dev, cudaStream_t stream) {
  int64_t host = 0;
  DIBR_CUDA_CHECK(cudaMemcpyAsync(&host, dev, sizeof(int64_t), cudaMemcpyDeviceToHost, stream));
  DIBR_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

// ---------------------------------------------------------------------------------------------
// Device helpers
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }

__device__ __forceinline__ void atomic_add(float* addr, float v) { atomicAdd(addr, v); }
__device__ __forceinline__ void atomic_add(double* addr, double v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 600
  unsigned long long* a = reinterpret_cast<unsigned long long*>(addr);
  unsigned long long old = *a, assumed;
  do {
    assumed = old;
    old = atomicCAS(a, assumed, __double_as_longlong(__longlong_as_double(assumed) + v));
  } while (assumed != old);
#else
  atomicAdd(addr, v);
#endif
}

// ---------------------------------------------------------------------------------------------
// Scan and stable grouping
// ---------------------------------------------------------------------------------------------

void exclusive_scan(const int64_t* in, int64_t* out, int64_t n, Scratch& s) {
  if (n <= 0) return;
  require(n <= kInt32Max, "scan of " + std::to_string(n) + " elements is too large");
  size_t bytes = 0;
  DIBR_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, static_cast<int>(n), s.stream()));
  void* tmp = s.get<unsigned char>(static_cast<int64_t>(bytes));
  DIBR_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp, bytes, in, out, static_cast<int>(n), s.stream()));
}

__global__ void count_keys_kernel(const uint32_t* keys, int64_t n, uint32_t n_keys, unsigned long long* counts) {
  DIBR_GRID_LOOP(i, n) {
    const uint32_t k = keys[i];
    if (k < n_keys) atomicAdd(counts + k, 1ULL);
  }
}

__global__ void iota_kernel(int32_t* out, int64_t n) {
  DIBR_GRID_LOOP(i, n) out[i] = static_cast<int32_t>(i);
}

// Groups n items by key: out_vals[offsets[k] .. offsets[k + 1]) are the values (the item index
// when vals is null) of the items with key k, in item order (the radix sort is stable). Keys
// >= n_keys are dropped (they sort after offsets[n_keys]).
void group_by_key(const uint32_t* keys, const int32_t* vals, int64_t n, int64_t n_keys, int64_t* offsets,
                  int32_t* out_vals, Scratch& s) {
  require(n_keys < int64_t(0xffffffff), "too many groups (" + std::to_string(n_keys) + ")");
  require(n <= kInt32Max, std::to_string(n) + " items to group: at most 2^31 - 1 are supported");
  cudaStream_t st = s.stream();
  int64_t* counts = s.get<int64_t>(n_keys + 1);
  DIBR_CUDA_CHECK(cudaMemsetAsync(counts, 0, static_cast<size_t>(n_keys + 1) * sizeof(int64_t), st));
  launch("count_keys_kernel", count_keys_kernel, blocks_for(n), kThreads, st, keys, n,
         static_cast<uint32_t>(n_keys), reinterpret_cast<unsigned long long*>(counts));
  exclusive_scan(counts, offsets, n_keys + 1, s);
  if (n == 0) return;
  if (vals == nullptr) {
    int32_t* idx = s.get<int32_t>(n);
    launch("iota_kernel", iota_kernel, blocks_for(n), kThreads, st, idx, n);
    vals = idx;
  }
  uint32_t* keys_out = s.get<uint32_t>(n);
  int end_bit = 1;
  while (end_bit < 32 && (uint64_t(1) << end_bit) <= static_cast<uint64_t>(n_keys)) ++end_bit;
  size_t bytes = 0;
  DIBR_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, keys, keys_out, vals, out_vals,
                                                  static_cast<int>(n), 0, end_bit, st));
  void* tmp = s.get<unsigned char>(static_cast<int64_t>(bytes));
  DIBR_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp, bytes, keys, keys_out, vals, out_vals, static_cast<int>(n),
                                                  0, end_bit, st));
}

// out[key * C + c] += sum of contrib[order[r] * C + c] over r in [offsets[key], offsets[key + 1]),
// added one by one in r order.
template <typename T, int C>
__global__ void segmented_sum_kernel(const int64_t* offsets, const int32_t* order, const T* contrib, int64_t n_keys,
                                     T* out) {
  DIBR_GRID_LOOP(idx, n_keys * C) {
    const int64_t key = idx / C;
    const int c = static_cast<int>(idx % C);
    const int64_t r0 = offsets[key], r1 = offsets[key + 1];
    if (r0 == r1) continue;
    T s = out[idx];
    for (int64_t r = r0; r < r1; ++r) s += contrib[static_cast<int64_t>(order[r]) * C + c];
    out[idx] = s;
  }
}

// ---------------------------------------------------------------------------------------------
// Binning
// ---------------------------------------------------------------------------------------------

// Conservative inclusive pixel range of the pixel centres that may lie in [lo, hi) along one
// axis (rows when flip); the same formula as pixel_range in dibr/binning.h.
__device__ bool pixel_range_dev(double lo, double hi, int n, bool flip, int* a, int* b) {
  lo = lo < -4.0 ? -4.0 : lo;
  hi = 4.0 < hi ? 4.0 : hi;
  if (!(lo <= hi)) return false;
  double f0, f1;
  if (!flip) {
    f0 = (lo * n + n - 1) / 2.0;
    f1 = (hi * n + n - 1) / 2.0;
  } else {
    f0 = (n - 1 - hi * n) / 2.0;
    f1 = (n - 1 - lo * n) / 2.0;
  }
  int i0 = static_cast<int>(floor(f0)) - 1;
  int i1 = static_cast<int>(ceil(f1)) + 1;
  i0 = i0 > 0 ? i0 : 0;
  i1 = i1 < n - 1 ? i1 : n - 1;
  if (i0 > i1) return false;
  *a = i0;
  *b = i1;
  return true;
}

// Per face (B * F): its pixel range (j0, j1, i0, i1) or -1, and the number of tiles it touches.
template <typename T>
__global__ void bin_count_kernel(const T* fvi, const uint8_t* valid, int64_t n_faces, int H, int W, double grow,
                                 int4* rect, int64_t* count) {
  DIBR_GRID_LOOP(idx, n_faces) {
    int4 r = make_int4(-1, -1, -1, -1);
    int64_t c = 0;
    if (valid == nullptr || valid[idx]) {
      const T* v = fvi + idx * 6;
      const double x0 = min3<double>(v[0], v[2], v[4]) - grow, x1 = max3<double>(v[0], v[2], v[4]) + grow;
      const double y0 = min3<double>(v[1], v[3], v[5]) - grow, y1 = max3<double>(v[1], v[3], v[5]) + grow;
      int j0, j1, i0, i1;
      if (pixel_range_dev(x0, x1, W, false, &j0, &j1) && pixel_range_dev(y0, y1, H, true, &i0, &i1)) {
        r = make_int4(j0, j1, i0, i1);
        c = static_cast<int64_t>(j1 / kTile - j0 / kTile + 1) * (i1 / kTile - i0 / kTile + 1);
      }
    }
    rect[idx] = r;
    count[idx] = c;
  }
}

// Writes each face's (tile key, face) pairs at its offset, in face order.
__global__ void bin_emit_kernel(const int4* rect, const int64_t* pos, int64_t n_faces, int F, int tx_n, int per_b,
                                uint32_t* keys, int32_t* vals) {
  DIBR_GRID_LOOP(idx, n_faces) {
    const int4 r = rect[idx];
    if (r.x < 0) continue;
    const int64_t b = idx / F;
    const int32_t f = static_cast<int32_t>(idx % F);
    int64_t o = pos[idx];
    for (int ty = r.z / kTile; ty <= r.w / kTile; ++ty)
      for (int tx = r.x / kTile; tx <= r.y / kTile; ++tx) {
        keys[o] = static_cast<uint32_t>(b * per_b + ty * tx_n + tx);
        vals[o] = f;
        ++o;
      }
  }
}

struct TileBins {
  int tx_n = 0, ty_n = 0, per_b = 0;
  int64_t* offsets = nullptr;  // (B * per_b + 1): list of tile t of mesh b is item b * per_b + t
  int32_t* faces = nullptr;    // face indices, ascending within each list
};

template <typename T>
TileBins make_bins(const T* fvi, const uint8_t* valid, int B, int F, int H, int W, double grow, Scratch& s) {
  cudaStream_t st = s.stream();
  TileBins bins;
  bins.tx_n = (W + kTile - 1) / kTile;
  bins.ty_n = (H + kTile - 1) / kTile;
  bins.per_b = bins.tx_n * bins.ty_n;
  const int64_t n_items = static_cast<int64_t>(B) * bins.per_b;
  bins.offsets = s.get<int64_t>(n_items + 1);
  const int64_t n_faces = static_cast<int64_t>(B) * F;
  int4* rect = s.get<int4>(n_faces);
  int64_t* count = s.get<int64_t>(n_faces + 1);
  int64_t* pos = s.get<int64_t>(n_faces + 1);
  DIBR_CUDA_CHECK(cudaMemsetAsync(count, 0, static_cast<size_t>(n_faces + 1) * sizeof(int64_t), st));
  launch("bin_count_kernel", bin_count_kernel<T>, blocks_for(n_faces), kThreads, st, fvi, valid, n_faces, H, W,
         grow, rect, count);
  exclusive_scan(count, pos, n_faces + 1, s);
  const int64_t total = read_back(pos + n_faces, st);
  require(total <= kInt32Max, std::to_string(total) + " face-tile pairs: at most 2^31 - 1 are supported");
  uint32_t* keys = s.get<uint32_t>(total);
  int32_t* vals = s.get<int32_t>(total);
  bins.faces = s.get<int32_t>(total);
  launch("bin_emit_kernel", bin_emit_kernel, blocks_for(n_faces), kThreads, st, rect, pos, n_faces, F, bins.tx_n,
         bins.per_b, keys, vals);
  group_by_key(keys, vals, total, n_items, bins.offsets, bins.faces, s);
  return bins;
}

// Pixel of thread q in tile block `item`.
struct TilePixel {
  int b, i, j;
  bool inside;
};

__device__ __forceinline__ TilePixel tile_pixel(int item, int q, int tx_n, int per_b, int H, int W) {
  TilePixel t;
  t.b = item / per_b;
  const int tile = item % per_b;
  t.i = (tile / tx_n) * kTile + q / kTile;
  t.j = (tile % tx_n) * kTile + q % kTile;
  t.inside = t.i < H && t.j < W;
  return t;
}

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

// ---------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------

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

#define DIBR_INSTANTIATE_CUDA(T)                                                                               \
  template void rasterize_fwd_cuda<T>(const RasterizeFwdParams<T>&, cudaStream_t, const CudaAllocator*);      \
  template void rasterize_bwd_cuda<T>(const RasterizeBwdParams<T>&, bool, cudaStream_t, const CudaAllocator*); \
  template void soft_mask_fwd_cuda<T>(const SoftMaskParams<T>&, cudaStream_t, const CudaAllocator*);          \
  template void soft_mask_bwd_cuda<T>(const SoftMaskParams<T>&, bool, cudaStream_t, const CudaAllocator*);    \
  template void interpolate_fwd_cuda<T>(const InterpolateParams<T>&, cudaStream_t, const CudaAllocator*);     \
  template void interpolate_bwd_cuda<T>(const InterpolateParams<T>&, bool, cudaStream_t, const CudaAllocator*);

DIBR_INSTANTIATE_CUDA(float)
DIBR_INSTANTIATE_CUDA(double)

}  // namespace dibr
