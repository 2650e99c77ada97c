// Tiled CPU rasterizer: nearest front face per pixel, barycentric weights, exact backward.
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "dibr/binning.h"
#include "dibr/math.h"

namespace dibr {

template <typename T>
void rasterize_fwd_cpu(const RasterizeFwdParams<T>& p) {
  const int B = p.B, F = p.F, H = p.H, W = p.W;
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  std::vector<Bins> bins(B);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      bin_faces(p.face_vertices_image + b * F * 6, p.valid_faces ? p.valid_faces + b * F : nullptr, F, H, W, 0.0,
                bins[b]);
  });
  const int tx_n = bins.empty() ? 0 : bins[0].tiles_x;
  const int ty_n = bins.empty() ? 0 : bins[0].tiles_y;
  const int64_t per_b = static_cast<int64_t>(tx_n) * ty_n;
  at::parallel_for(0, B * per_b, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t item = t0; item < t1; ++item) {
      const int64_t b = item / per_b;
      const int tile = static_cast<int>(item % per_b);
      const int tx = tile % tx_n, ty = tile / tx_n;
      const Bins& bn = bins[b];
      const int32_t* list = bn.faces.data() + bn.offsets[tile];
      const int64_t n = bn.offsets[tile + 1] - bn.offsets[tile];
      const T* fvi = p.face_vertices_image + b * F * 6;
      const T* fvz = p.face_vertices_z + b * F * 3;
      for (int i = ty * kTile; i < std::min(H, (ty + 1) * kTile); ++i) {
        const T py = pixel_y<T>(i, H) * M;
        for (int j = tx * kTile; j < std::min(W, (tx + 1) * kTile); ++j) {
          const T px = pixel_x<T>(j, W) * M;
          T best_z = -std::numeric_limits<T>::infinity();
          int64_t best_f = -1;
          T best_w[3] = {T(0), T(0), T(0)};
          for (int64_t k = 0; k < n; ++k) {
            const int f = list[k];
            T v[6];
            for (int c = 0; c < 6; ++c) v[c] = fvi[f * 6 + c] * M;
            if (!in_box(v, px, py, T(0))) continue;
            Bary<T> bc;
            if (!barycentric(v, px, py, eps, bc)) continue;
            if (bc.w[0] < T(0) || bc.w[1] < T(0) || bc.w[2] < T(0)) continue;
            const T* z = fvz + f * 3;
            const T zz = bc.w[0] * z[0] + bc.w[1] * z[1] + bc.w[2] * z[2];
            if (zz > best_z) {
              best_z = zz;
              best_f = f;
              best_w[0] = bc.w[0]; best_w[1] = bc.w[1]; best_w[2] = bc.w[2];
            }
          }
          const int64_t pix = (b * H + i) * W + j;
          p.face_idx[pix] = best_f;
          p.bary[pix * 3 + 0] = best_w[0];
          p.bary[pix * 3 + 1] = best_w[1];
          p.bary[pix * 3 + 2] = best_w[2];
        }
      }
    }
  });
}

template <typename T>
void rasterize_bwd_cpu(const RasterizeBwdParams<T>& p) {
  const int B = p.B, F = p.F, H = p.H, W = p.W;
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  const int64_t n_pix = static_cast<int64_t>(B) * H * W;
  // Pass 1 (parallel over pixels): each covered pixel's contribution to its face's corners.
  std::vector<T> contrib(static_cast<size_t>(n_pix) * 6, T(0));
  at::parallel_for(0, n_pix, 256, [&](int64_t q0, int64_t q1) {
    for (int64_t pix = q0; pix < q1; ++pix) {
      const int64_t f = p.face_idx[pix];
      if (f < 0) continue;
      const T* g = p.grad_bary + pix * 3;
      if (g[0] == T(0) && g[1] == T(0) && g[2] == T(0)) continue;
      const int64_t b = pix / (static_cast<int64_t>(H) * W);
      const int i = static_cast<int>((pix / W) % H), j = static_cast<int>(pix % W);
      const T px = pixel_x<T>(j, W) * M, py = pixel_y<T>(i, H) * M;
      T v[6];
      const T* src = p.face_vertices_image + (b * F + f) * 6;
      for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
      Bary<T> bc;
      if (!barycentric(v, px, py, eps, bc)) continue;
      T* out = contrib.data() + pix * 6;
      barycentric_backward(v, px, py, bc, g, out);
      for (int c = 0; c < 6; ++c) out[c] *= M;  // d v_scaled / d v = M
    }
  });
  // Pass 2 (parallel over meshes, pixels in order): deterministic accumulation per face.
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t q = b * H * W; q < (b + 1) * H * W; ++q) {
        const int64_t f = p.face_idx[q];
        if (f < 0) continue;
        T* dst = p.grad_face_vertices_image + (b * F + f) * 6;
        const T* src = contrib.data() + q * 6;
        for (int c = 0; c < 6; ++c) dst[c] += src[c];
      }
    }
  });
}

template void rasterize_fwd_cpu<float>(const RasterizeFwdParams<float>&);
template void rasterize_fwd_cpu<double>(const RasterizeFwdParams<double>&);
template void rasterize_bwd_cpu<float>(const RasterizeBwdParams<float>&);
template void rasterize_bwd_cpu<double>(const RasterizeBwdParams<double>&);

}  // namespace dibr
