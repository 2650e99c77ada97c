// Tiled CPU soft silhouette: A = 1 - prod_j (1 - exp(-sigmainv d_j^2)) over the first `knum`
// faces (in face order) whose grown box holds an uncovered pixel; covered pixels are 1.
// The backward recomputes each pixel's candidates (nothing per pixel is stored) and uses
// prefix/suffix products, so it stays exact when a factor reaches 0.
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "cpu_kernels.h"
#include "dibr/binning.h"
#include "dibr/math.h"

namespace dibr {
namespace {

template <typename T>
struct SoftConsts {
  T M, eps, sentinel, grow, inv;
  explicit SoftConsts(const SoftMaskParams<T>& p)
      : M(static_cast<T>(p.multiplier)),
        eps(static_cast<T>(p.eps)),
        sentinel(static_cast<T>(4.0 * p.multiplier * p.multiplier)),
        grow(static_cast<T>(p.boxlen * p.multiplier)),
        inv(static_cast<T>(p.sigmainv / (p.multiplier * p.multiplier))) {}
};

template <typename T>
void make_bins(const SoftMaskParams<T>& p, std::vector<Bins>& bins) {
  bins.resize(p.B);
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      bin_faces(p.face_vertices_image + b * p.F * 6, p.valid_faces ? p.valid_faces + b * p.F : nullptr, p.F, p.H,
                p.W, p.boxlen, bins[b]);
  });
}

// Collects up to knum candidates of pixel (px, py) from a tile list; returns their count.
template <typename T>
int candidates(const T* fvi, const int32_t* list, int64_t n, T px, T py, const SoftConsts<T>& c, int knum,
               int32_t* cand_f, T* cand_d, int* cand_t) {
  int count = 0;
  for (int64_t k = 0; k < n && count < knum; ++k) {
    const int f = list[k];
    T v[6];
    for (int q = 0; q < 6; ++q) v[q] = fvi[f * 6 + q] * c.M;
    if (!in_box(v, px, py, c.grow)) continue;
    int type = 0;
    const T d = boundary_dist2(v, px, py, c.eps, c.sentinel, &type);
    cand_f[count] = f;
    cand_d[count] = d;
    cand_t[count] = type;
    ++count;
  }
  return count;
}

}  // namespace

template <typename T>
void soft_mask_fwd_cpu(const SoftMaskParams<T>& p) {
  const SoftConsts<T> c(p);
  std::vector<Bins> bins;
  make_bins(p, bins);
  const int tx_n = (p.W + kTile - 1) / kTile, ty_n = (p.H + kTile - 1) / kTile;
  const int64_t per_b = static_cast<int64_t>(tx_n) * ty_n;
  at::parallel_for(0, p.B * per_b, 1, [&](int64_t t0, int64_t t1) {
    std::vector<int32_t> cf(p.knum);
    std::vector<T> cd(p.knum);
    std::vector<int> ct(p.knum);
    for (int64_t item = t0; item < t1; ++item) {
      const int64_t b = item / per_b;
      const int tile = static_cast<int>(item % per_b);
      const int tx = tile % tx_n, ty = tile / tx_n;
      const Bins& bn = bins[b];
      const int32_t* list = bn.faces.data() + bn.offsets[tile];
      const int64_t n = bn.offsets[tile + 1] - bn.offsets[tile];
      const T* fvi = p.face_vertices_image + b * p.F * 6;
      for (int i = ty * kTile; i < std::min(p.H, (ty + 1) * kTile); ++i) {
        for (int j = tx * kTile; j < std::min(p.W, (tx + 1) * kTile); ++j) {
          const int64_t pix = (b * p.H + i) * p.W + j;
          if (p.face_idx[pix] >= 0) {
            p.soft_mask[pix] = T(1);
            continue;
          }
          const T px = pixel_x<T>(j, p.W) * c.M, py = pixel_y<T>(i, p.H) * c.M;
          const int m = candidates(fvi, list, n, px, py, c, p.knum, cf.data(), cd.data(), ct.data());
          T prod = T(1);
          for (int k = 0; k < m; ++k) prod *= T(1) - std::exp(-c.inv * cd[k]);
          p.soft_mask[pix] = T(1) - prod;
        }
      }
    }
  });
}

template <typename T>
void soft_mask_bwd_cpu(const SoftMaskParams<T>& p) {
  const SoftConsts<T> c(p);
  std::vector<Bins> bins;
  make_bins(p, bins);
  const int tx_n = (p.W + kTile - 1) / kTile, ty_n = (p.H + kTile - 1) / kTile;
  const int64_t per_b = static_cast<int64_t>(tx_n) * ty_n;
  const int64_t n_items = p.B * per_b;
  // Per tile: records (face, 6 gradient values), in pixel-then-candidate order.
  std::vector<std::vector<int32_t>> rec_f(n_items);
  std::vector<std::vector<T>> rec_g(n_items);
  at::parallel_for(0, n_items, 1, [&](int64_t t0, int64_t t1) {
    std::vector<int32_t> cf(p.knum);
    std::vector<T> cd(p.knum), prob(p.knum), suffix(p.knum + 1);
    std::vector<int> ct(p.knum);
    for (int64_t item = t0; item < t1; ++item) {
      const int64_t b = item / per_b;
      const int tile = static_cast<int>(item % per_b);
      const int tx = tile % tx_n, ty = tile / tx_n;
      const Bins& bn = bins[b];
      const int32_t* list = bn.faces.data() + bn.offsets[tile];
      const int64_t n = bn.offsets[tile + 1] - bn.offsets[tile];
      if (n == 0) continue;
      const T* fvi = p.face_vertices_image + b * p.F * 6;
      for (int i = ty * kTile; i < std::min(p.H, (ty + 1) * kTile); ++i) {
        for (int j = tx * kTile; j < std::min(p.W, (tx + 1) * kTile); ++j) {
          const int64_t pix = (b * p.H + i) * p.W + j;
          if (p.face_idx[pix] >= 0) continue;  // covered: constant 1, no gradient
          const T g = p.grad_soft_mask[pix];
          if (g == T(0)) continue;
          const T px = pixel_x<T>(j, p.W) * c.M, py = pixel_y<T>(i, p.H) * c.M;
          const int m = candidates(fvi, list, n, px, py, c, p.knum, cf.data(), cd.data(), ct.data());
          if (m == 0) continue;
          for (int k = 0; k < m; ++k) prob[k] = std::exp(-c.inv * cd[k]);
          suffix[m] = T(1);
          for (int k = m - 1; k >= 0; --k) suffix[k] = suffix[k + 1] * (T(1) - prob[k]);
          T prefix = T(1);
          for (int k = 0; k < m; ++k) {
            // dA/dp_k = prod_{l != k} (1 - p_l); dp_k/dd_k = -inv p_k; d v_scaled/d v = M.
            const T gd = g * prefix * suffix[k + 1] * (-c.inv) * prob[k] * c.M;
            prefix *= T(1) - prob[k];
            if (gd == T(0)) continue;
            T v[6];
            for (int q = 0; q < 6; ++q) v[q] = fvi[cf[k] * 6 + q] * c.M;
            T gv[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
            boundary_dist2_backward(v, px, py, c.eps, ct[k], gd, gv);
            rec_f[item].push_back(cf[k]);
            rec_g[item].insert(rec_g[item].end(), gv, gv + 6);
          }
        }
      }
    }
  });
  at::parallel_for(0, p.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      T* out = p.grad_face_vertices_image + b * p.F * 6;
      for (int64_t item = b * per_b; item < (b + 1) * per_b; ++item) {
        const std::vector<int32_t>& fs = rec_f[item];
        const std::vector<T>& gs = rec_g[item];
        for (size_t r = 0; r < fs.size(); ++r)
          for (int q = 0; q < 6; ++q) out[static_cast<int64_t>(fs[r]) * 6 + q] += gs[r * 6 + q];
      }
    }
  });
}

template void soft_mask_fwd_cpu<float>(const SoftMaskParams<float>&);
template void soft_mask_fwd_cpu<double>(const SoftMaskParams<double>&);
template void soft_mask_bwd_cpu<float>(const SoftMaskParams<float>&);
template void soft_mask_bwd_cpu<double>(const SoftMaskParams<double>&);

}  // namespace dibr
