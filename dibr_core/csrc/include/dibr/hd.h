// Host/device qualifier shared by the CPU (C++) and CUDA builds of the kernel math.
// This header and the other headers in include/dibr/ include no torch header, so nvcc can
// compile every kernel even where torch is a CPU-only build.
#pragma once

#if defined(__CUDACC__)
#define DIBR_HD __host__ __device__ __forceinline__
#else
#define DIBR_HD inline
#endif

namespace dibr {

template <typename T>
DIBR_HD T min3(T a, T b, T c) {
  T m = a < b ? a : b;
  return m < c ? m : c;
}

template <typename T>
DIBR_HD T max3(T a, T b, T c) {
  T m = a > b ? a : b;
  return m > c ? m : c;
}

// Centre of pixel column j (row i) in NDC: x = -1 is the left image edge, y = +1 the top edge,
// row 0 is the top row.
template <typename T>
DIBR_HD T pixel_x(int j, int W) {
  return T(2 * j + 1 - W) / T(W);
}

template <typename T>
DIBR_HD T pixel_y(int i, int H) {
  return T(H - 2 * i - 1) / T(H);
}

}  // namespace dibr
