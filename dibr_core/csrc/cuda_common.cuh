// Code shared by the CUDA files of dibr_core (rasterize_cuda.cu, soft_mask_cuda.cu,
// interpolate_cuda.cu): error checks and kernel launches, scratch space, the device helpers,
// the scan and stable grouping by key, and the binning of faces into pixel tiles. No torch
// header here: the CUDA files compile with nvcc alone (see cuda_kernels.h for the contract).
//
// Everything here sits in an anonymous namespace: each CUDA file compiles its own copy, and
// only the launchers of cuda_kernels.h leave a file.
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
#pragma once

#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda/std/limits>

#include <cstdint>
#include <cstring>
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

// file: the __FILE__ of the call; the message names its base name.
void check_cuda(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls are not blamed
  const char* slash = std::strrchr(file, '/');
  throw std::runtime_error(std::string("dibr_core CUDA error in ") + what + " (" + (slash ? slash + 1 : file) + ":" +
                           std::to_string(line) + "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

#define DIBR_CUDA_CHECK(expr) check_cuda((expr), #expr, __FILE__, __LINE__)

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

}  // namespace
}  // namespace dibr
