// Tiled CPU rasterizer: nearest drawn face per pixel, barycentric weights, exact backward.
// Faces are binned per 8x8 tile in face order; inside a tile, faces are visited in that order
// and each updates the pixels of its box, so every pixel sees its candidate faces in the same
// order as a loop over all faces: the result equals the reference exactly.

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "dibr/binning.h"
#include "dibr/math.h"
#include "dibr/parallel.h"

namespace dibr {

namespace {
// Per face: scaled corners (6) and box x0, x1, y0, y1 (4).
constexpr int kFaceStride = 10;

template <typename T>
void prepare_faces(const T* fvi, int64_t n_faces, T M, std::vector<T>& out) {
  out.resize(static_cast<size_t>(n_faces) * kFaceStride);
  parallel_for(0, n_faces, 4096, [&](int64_t f0, int64_t f1) {
    for (int64_t f = f0; f < f1; ++f) {
      T* o = out.data() + f * kFaceStride;
      for (int c = 0; c < 6; ++c) o[c] = fvi[f * 6 + c] * M;
      o[6] = min3(o[0], o[2], o[4]);
      o[7] = max3(o[0], o[2], o[4]);
      o[8] = min3(o[1], o[3], o[5]);
      o[9] = max3(o[1], o[3], o[5]);
    }
  });
}
}  // namespace

template <typename T>
void rasterize_fwd_cpu(const RasterizeFwdParams<T>& p) {
  const int B = p.B, F = p.F, H = p.H, W = p.W;
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  std::vector<T>& faces = scratch<std::vector<T>, 1>();
  prepare_faces(p.face_vertices_image, static_cast<int64_t>(B) * F, M, faces);
  std::vector<Bins>& bins = scratch<std::vector<Bins>, 1>();
  bins.resize(B);
  parallel_items(B, [&](int64_t b) {
    bin_faces(p.face_vertices_image + b * F * 6, p.valid_faces ? p.valid_faces + b * F : nullptr, F, H, W, 0.0,
              bins[b]);
  });
  std::vector<T> xs(W), ys(H);
  for (int j = 0; j < W; ++j) xs[j] = pixel_x<T>(j, W) * M;
  for (int i = 0; i < H; ++i) ys[i] = pixel_y<T>(i, H) * M;
  const int tx_n = (W + kTile - 1) / kTile, ty_n = (H + kTile - 1) / kTile;
  const int64_t per_b = static_cast<int64_t>(tx_n) * ty_n;
  parallel_items(B * per_b, [&](int64_t item) {
    const int64_t b = item / per_b;
    const int tile = static_cast<int>(item % per_b);
    const int tx = tile % tx_n, ty = tile / tx_n;
    const int i0 = ty * kTile, i1 = std::min(H, i0 + kTile);
    const int j0 = tx * kTile, j1 = std::min(W, j0 + kTile);
    T best_z[kTile * kTile];
    int64_t best_f[kTile * kTile];
    T best_w[kTile * kTile * 3];
    for (int q = 0; q < kTile * kTile; ++q) {
      best_z[q] = -std::numeric_limits<T>::infinity();
      best_f[q] = -1;
      best_w[3 * q] = best_w[3 * q + 1] = best_w[3 * q + 2] = T(0);
    }
    const Bins& bn = bins[b];
    const T* fz = p.face_vertices_z + b * F * 3;
    for (int64_t k = bn.offsets[tile]; k < bn.offsets[tile + 1]; ++k) {
      const int f = bn.faces[k];
      const T* v = faces.data() + (b * F + f) * kFaceStride;
      // The tile's pixels in the face's rectangle, row-major (bit q = row * kTile + column).
      for (uint64_t m = bn.masks[k]; m != 0; m &= m - 1) {
        const int q = lowest_bit(m);
        const T py = ys[i0 + q / kTile];
        if (!(v[8] <= py && py < v[9])) continue;
        const T px = xs[j0 + q % kTile];
        if (!(v[6] <= px && px < v[7])) continue;
        if (certainly_outside(v, px, py)) continue;
        Bary<T> bc;
        if (!barycentric(v, px, py, eps, bc)) continue;
        if (bc.w[0] < T(0) || bc.w[1] < T(0) || bc.w[2] < T(0)) continue;
        const T zz = bc.w[0] * fz[f * 3] + bc.w[1] * fz[f * 3 + 1] + bc.w[2] * fz[f * 3 + 2];
        if (zz > best_z[q]) {
          best_z[q] = zz;
          best_f[q] = f;
          best_w[3 * q] = bc.w[0];
          best_w[3 * q + 1] = bc.w[1];
          best_w[3 * q + 2] = bc.w[2];
        }
      }
    }
    for (int i = i0; i < i1; ++i) {
      for (int j = j0; j < j1; ++j) {
        const int q = (i - i0) * kTile + (j - j0);
        const int64_t pix = (b * H + i) * W + j;
        p.face_idx[pix] = best_f[q];
        p.bary[pix * 3] = best_w[3 * q];
        p.bary[pix * 3 + 1] = best_w[3 * q + 1];
        p.bary[pix * 3 + 2] = best_w[3 * q + 2];
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
  std::vector<T> contrib(static_cast<size_t>(n_pix) * 6);
  parallel_for(0, n_pix, 1024, [&](int64_t q0, int64_t q1) {
    for (int64_t pix = q0; pix < q1; ++pix) {
      T* out = contrib.data() + pix * 6;
      for (int c = 0; c < 6; ++c) out[c] = T(0);
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
      barycentric_backward(v, px, py, bc, g, out);
      for (int c = 0; c < 6; ++c) out[c] *= M;  // d v_scaled / d v = M
    }
  });
  // Pass 2 (parallel over meshes, pixels in order): deterministic accumulation per face.
  parallel_items(B, [&](int64_t b) {
    for (int64_t q = b * H * W; q < (b + 1) * H * W; ++q) {
      const int64_t f = p.face_idx[q];
      if (f < 0) continue;
      T* dst = p.grad_face_vertices_image + (b * F + f) * 6;
      const T* src = contrib.data() + q * 6;
      for (int c = 0; c < 6; ++c) dst[c] += src[c];
    }
  });
}

template void rasterize_fwd_cpu<float>(const RasterizeFwdParams<float>&);
template void rasterize_fwd_cpu<double>(const RasterizeFwdParams<double>&);
template void rasterize_bwd_cpu<float>(const RasterizeBwdParams<float>&);
template void rasterize_bwd_cpu<double>(const RasterizeBwdParams<double>&);

}  // namespace dibr
