// Tiled CPU soft silhouette: A = 1 - prod_j (1 - exp(-sigmainv d_j^2)) over the first `knum`
// faces (in face order) whose grown box holds an uncovered pixel; covered pixels are 1.
// Inside a tile, faces are visited in face order and each updates the uncovered pixels of its
// grown box, so every pixel takes the same candidates, in the same order, as a loop over all
// faces. The backward recomputes the candidates (nothing per pixel is kept between the passes)
// and uses prefix/suffix products, so it stays exact when a factor reaches 0.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_kernels.h"
#include "dibr/binning.h"
#include "dibr/math.h"
#include "dibr/parallel.h"

namespace dibr {
namespace {

constexpr int kFaceStride = 10;  // scaled corners (6), grown box x0, x1, y0, y1 (4)

template <typename T>
struct SoftSetup {
  T M, eps, sentinel, grow, inv;
  int tx_n, ty_n;
  int64_t per_b;
  std::vector<T> faces;
  std::vector<Bins> bins;
  std::vector<T> xs, ys;

  explicit SoftSetup(const SoftMaskParams<T>& p)
      : M(static_cast<T>(p.multiplier)),
        eps(static_cast<T>(p.eps)),
        sentinel(static_cast<T>(4.0 * p.multiplier * p.multiplier)),
        grow(static_cast<T>(p.boxlen * p.multiplier)),
        inv(static_cast<T>(p.sigmainv / (p.multiplier * p.multiplier))) {
    tx_n = (p.W + kTile - 1) / kTile;
    ty_n = (p.H + kTile - 1) / kTile;
    per_b = static_cast<int64_t>(tx_n) * ty_n;
    const int64_t n_faces = static_cast<int64_t>(p.B) * p.F;
    faces.resize(static_cast<size_t>(n_faces) * kFaceStride);
    at::parallel_for(0, n_faces, 4096, [&](int64_t f0, int64_t f1) {
      for (int64_t f = f0; f < f1; ++f) {
        T* o = faces.data() + f * kFaceStride;
        for (int c = 0; c < 6; ++c) o[c] = p.face_vertices_image[f * 6 + c] * M;
        o[6] = min3(o[0], o[2], o[4]) - grow;
        o[7] = max3(o[0], o[2], o[4]) + grow;
        o[8] = min3(o[1], o[3], o[5]) - grow;
        o[9] = max3(o[1], o[3], o[5]) + grow;
      }
    });
    bins.resize(p.B);
    parallel_items(p.B, [&](int64_t b) {
      bin_faces(p.face_vertices_image + b * p.F * 6, p.valid_faces ? p.valid_faces + b * p.F : nullptr, p.F, p.H,
                p.W, p.boxlen, bins[b]);
    });
    xs.resize(p.W);
    ys.resize(p.H);
    for (int j = 0; j < p.W; ++j) xs[j] = pixel_x<T>(j, p.W) * M;
    for (int i = 0; i < p.H; ++i) ys[i] = pixel_y<T>(i, p.H) * M;
  }
};

// Visits, in face order, every (pixel, candidate face) pair of one tile: pixels are uncovered,
// inside the face's grown box, and have fewer than knum candidates so far.
// visit(q, f, d2, type) with q the pixel's index inside the tile.
template <typename T, typename Visit>
void for_each_candidate(const SoftMaskParams<T>& p, const SoftSetup<T>& s, int64_t b, int tile, int* count,
                        const Visit& visit) {
  const int tx = tile % s.tx_n, ty = tile / s.tx_n;
  const int i0 = ty * kTile, i1 = std::min(p.H, i0 + kTile);
  const int j0 = tx * kTile, j1 = std::min(p.W, j0 + kTile);
  bool open[kTile * kTile];
  int n_open = 0;
  for (int i = i0; i < i1; ++i)
    for (int j = j0; j < j1; ++j) {
      const int q = (i - i0) * kTile + (j - j0);
      open[q] = p.face_idx[(b * p.H + i) * p.W + j] < 0;
      n_open += open[q] ? 1 : 0;
      count[q] = 0;
    }
  const Bins& bn = s.bins[b];
  for (int64_t k = bn.offsets[tile]; k < bn.offsets[tile + 1] && n_open > 0; ++k) {
    const int f = bn.faces[k];
    const T* v = s.faces.data() + (b * p.F + f) * kFaceStride;
    for (int i = i0; i < i1; ++i) {
      const T py = s.ys[i];
      if (!(v[8] <= py && py < v[9])) continue;
      for (int j = j0; j < j1; ++j) {
        const int q = (i - i0) * kTile + (j - j0);
        if (!open[q]) continue;
        const T px = s.xs[j];
        if (!(v[6] <= px && px < v[7])) continue;
        int type = 0;
        const T d = boundary_dist2(v, px, py, s.eps, s.sentinel, &type);
        visit(q, f, d, type);
        if (++count[q] >= p.knum) {
          open[q] = false;
          --n_open;
        }
      }
    }
  }
}

}  // namespace

template <typename T>
void soft_mask_fwd_cpu(const SoftMaskParams<T>& p) {
  const SoftSetup<T> s(p);
  parallel_items(p.B * s.per_b, [&](int64_t item) {
    const int64_t b = item / s.per_b;
    const int tile = static_cast<int>(item % s.per_b);
    T prod[kTile * kTile];
    int count[kTile * kTile];
    for (int q = 0; q < kTile * kTile; ++q) prod[q] = T(1);
    for_each_candidate(p, s, b, tile, count, [&](int q, int, T d, int) { prod[q] *= T(1) - std::exp(-s.inv * d); });
    const int tx = tile % s.tx_n, ty = tile / s.tx_n;
    for (int i = ty * kTile; i < std::min(p.H, (ty + 1) * kTile); ++i)
      for (int j = tx * kTile; j < std::min(p.W, (tx + 1) * kTile); ++j) {
        const int64_t pix = (b * p.H + i) * p.W + j;
        const int q = (i - ty * kTile) * kTile + (j - tx * kTile);
        p.soft_mask[pix] = p.face_idx[pix] >= 0 ? T(1) : T(1) - prod[q];
      }
  });
}

template <typename T>
void soft_mask_bwd_cpu(const SoftMaskParams<T>& p) {
  const SoftSetup<T> s(p);
  const int64_t n_items = p.B * s.per_b;
  // Per tile: records (face, 6 gradient values), merged per mesh in tile order afterwards.
  std::vector<std::vector<int32_t>> rec_f(n_items);
  std::vector<std::vector<T>> rec_g(n_items);
  const int knum = p.knum;
  parallel_items(n_items, [&](int64_t item) {
    const int64_t b = item / s.per_b;
    const int tile = static_cast<int>(item % s.per_b);
    const Bins& bn = s.bins[b];
    if (bn.offsets[tile] == bn.offsets[tile + 1]) return;
    thread_local std::vector<int32_t> cf;
    thread_local std::vector<T> cd;
    thread_local std::vector<int> ct;
    thread_local std::vector<T> prob, suffix;
    cf.resize(static_cast<size_t>(kTile) * kTile * knum);
    cd.resize(cf.size());
    ct.resize(cf.size());
    prob.resize(knum);
    suffix.resize(knum + 1);
    int count[kTile * kTile];
    for_each_candidate(p, s, b, tile, count, [&](int q, int f, T d, int type) {
      const size_t at = static_cast<size_t>(q) * knum + count[q];
      cf[at] = f;
      cd[at] = d;
      ct[at] = type;
    });
    const int tx = tile % s.tx_n, ty = tile / s.tx_n;
    std::vector<int32_t>& out_f = rec_f[item];
    std::vector<T>& out_g = rec_g[item];
    for (int i = ty * kTile; i < std::min(p.H, (ty + 1) * kTile); ++i) {
      for (int j = tx * kTile; j < std::min(p.W, (tx + 1) * kTile); ++j) {
        const int q = (i - ty * kTile) * kTile + (j - tx * kTile);
        const int m = count[q];
        if (m == 0) continue;
        const int64_t pix = (b * p.H + i) * p.W + j;
        const T g = p.grad_soft_mask[pix];
        if (g == T(0)) continue;
        const size_t base = static_cast<size_t>(q) * knum;
        for (int k = 0; k < m; ++k) prob[k] = std::exp(-s.inv * cd[base + k]);
        suffix[m] = T(1);
        for (int k = m - 1; k >= 0; --k) suffix[k] = suffix[k + 1] * (T(1) - prob[k]);
        T prefix = T(1);
        for (int k = 0; k < m; ++k) {
          // dA/dp_k = prod_{l != k} (1 - p_l); dp_k/dd_k = -inv p_k; d v_scaled / d v = M.
          const T gd = g * prefix * suffix[k + 1] * (-s.inv) * prob[k] * s.M;
          prefix *= T(1) - prob[k];
          if (gd == T(0)) continue;
          const int f = cf[base + k];
          const T* v = s.faces.data() + (b * p.F + f) * kFaceStride;
          T gv[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
          boundary_dist2_backward(v, s.xs[j], s.ys[i], s.eps, ct[base + k], gd, gv);
          out_f.push_back(f);
          out_g.insert(out_g.end(), gv, gv + 6);
        }
      }
    }
  });
  parallel_items(p.B, [&](int64_t b) {
    T* out = p.grad_face_vertices_image + b * p.F * 6;
    for (int64_t item = b * s.per_b; item < (b + 1) * s.per_b; ++item) {
      const std::vector<int32_t>& fs = rec_f[item];
      const std::vector<T>& gs = rec_g[item];
      for (size_t r = 0; r < fs.size(); ++r)
        for (int q = 0; q < 6; ++q) out[static_cast<int64_t>(fs[r]) * 6 + q] += gs[r * 6 + q];
    }
  });
}

template void soft_mask_fwd_cpu<float>(const SoftMaskParams<float>&);
template void soft_mask_fwd_cpu<double>(const SoftMaskParams<double>&);
template void soft_mask_bwd_cpu<float>(const SoftMaskParams<float>&);
template void soft_mask_bwd_cpu<double>(const SoftMaskParams<double>&);

}  // namespace dibr
