// Tiled CPU soft silhouette: A = 1 - prod_j (1 - exp(-sigmainv d_j^2)) over the first `knum`
// faces (in face order) whose grown box holds an uncovered pixel; covered pixels are 1.
// Inside a tile, faces are visited in face order and each updates the uncovered pixels of its
// grown box, so every pixel takes the same candidates, in the same order, as a loop over all
// faces. When gradients are needed the forward keeps the candidates of the uncovered pixels
// that have any (never B*H*W*knum slots); the backward uses prefix/suffix products over them,
// so it stays exact when a factor reaches 0.

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
  // Scratch reused across calls by the calling thread (no fresh pages, hence no page faults, per call).
  std::vector<T>& faces = scratch<std::vector<T>, 0>();
  std::vector<Bins>& bins = scratch<std::vector<Bins>, 0>();
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
    parallel_for(0, n_faces, 4096, [&](int64_t f0, int64_t f1) {
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
  uint64_t open = 0;  // bit q: pixel q is uncovered and has fewer than knum candidates
  for (int q = 0; q < kTile * kTile; ++q) count[q] = 0;
  for (int i = i0; i < i1; ++i)
    for (int j = j0; j < j1; ++j)
      if (p.face_idx[(b * p.H + i) * p.W + j] < 0) open |= uint64_t{1} << ((i - i0) * kTile + (j - j0));
  const Bins& bn = s.bins[b];
  for (int64_t k = bn.offsets[tile]; k < bn.offsets[tile + 1] && open != 0; ++k) {
    uint64_t m = bn.masks[k] & open;  // the open pixels of the face's rectangle, row-major
    if (m == 0) continue;
    const int f = bn.faces[k];
    const T* v = s.faces.data() + (b * p.F + f) * kFaceStride;
    while (m != 0) {
      const int q = lowest_bit(m);
      m &= m - 1;
      const T py = s.ys[i0 + q / kTile];
      if (!(v[8] <= py && py < v[9])) continue;
      const T px = s.xs[j0 + q % kTile];
      if (!(v[6] <= px && px < v[7])) continue;
      int type = 0;
      const T d = boundary_dist2(v, px, py, s.eps, s.sentinel, &type);
      visit(q, f, d, type);
      if (++count[q] >= p.knum) open &= ~(uint64_t{1} << q);
    }
  }
}

}  // namespace

template <typename T>
void soft_mask_fwd_cpu(const SoftMaskParams<T>& p, SoftMaskRecords<T>* records) {
  const SoftSetup<T> s(p);
  const int64_t n_items = p.B * s.per_b;
  const int knum = p.knum;
  if (records) records->tiles.assign(n_items, {});
  parallel_items(n_items, [&](int64_t item) {
    const int64_t b = item / s.per_b;
    const int tile = static_cast<int>(item % s.per_b);
    T prod[kTile * kTile];
    int count[kTile * kTile];
    for (int q = 0; q < kTile * kTile; ++q) prod[q] = T(1);
    thread_local std::vector<int32_t> cf;
    thread_local std::vector<uint8_t> ct;
    thread_local std::vector<T> cp;
    if (records) {
      cf.resize(static_cast<size_t>(kTile) * kTile * knum);
      ct.resize(cf.size());
      cp.resize(cf.size());
    }
    for_each_candidate(p, s, b, tile, count, [&](int q, int f, T d, int type) {
      const T a = std::exp(-s.inv * d);
      prod[q] *= T(1) - a;
      if (records) {
        const size_t at = static_cast<size_t>(q) * knum + count[q];
        cf[at] = f;
        ct[at] = static_cast<uint8_t>(type);
        cp[at] = a;
      }
    });
    const int tx = tile % s.tx_n, ty = tile / s.tx_n;
    if (records) {  // one allocation per tile: count[q] is 0 for covered pixels
      int total = 0;
      for (int q = 0; q < kTile * kTile; ++q) total += count[q];
      records->tiles[item].reserve(static_cast<size_t>(total));
    }
    for (int i = ty * kTile; i < std::min(p.H, (ty + 1) * kTile); ++i)
      for (int j = tx * kTile; j < std::min(p.W, (tx + 1) * kTile); ++j) {
        const int64_t pix = (b * p.H + i) * p.W + j;
        const int q = (i - ty * kTile) * kTile + (j - tx * kTile);
        const bool covered = p.face_idx[pix] >= 0;
        p.soft_mask[pix] = covered ? T(1) : T(1) - prod[q];
        if (records && !covered) {
          std::vector<SoftMaskRecord<T>>& out = records->tiles[item];
          for (int k = 0; k < count[q]; ++k) {
            const size_t at = static_cast<size_t>(q) * knum + k;
            out.push_back(SoftMaskRecord<T>{pix, cf[at], ct[at], cp[at]});
          }
        }
      }
  });
  if (!records) return;
  records->offsets.assign(n_items + 1, 0);
  for (int64_t t = 0; t < n_items; ++t)
    records->offsets[t + 1] = records->offsets[t] + static_cast<int64_t>(records->tiles[t].size());
}

template <typename T>
void SoftMaskRecords<T>::write(int64_t* pixel, int32_t* face, uint8_t* type, T* prob) const {
  parallel_items(static_cast<int64_t>(tiles.size()), [&](int64_t t) {
    int64_t o = offsets[t];
    for (const SoftMaskRecord<T>& r : tiles[t]) {
      pixel[o] = r.pixel;
      face[o] = r.face;
      type[o] = r.type;
      prob[o] = r.prob;
      ++o;
    }
  });
}

template <typename T>
void soft_mask_bwd_cpu(const SoftMaskParams<T>& p) {
  const T M = static_cast<T>(p.multiplier);
  const T eps = static_cast<T>(p.eps);
  const T inv = static_cast<T>(p.sigmainv / (p.multiplier * p.multiplier));
  const int tx_n = (p.W + kTile - 1) / kTile, ty_n = (p.H + kTile - 1) / kTile;
  const int64_t n_items = static_cast<int64_t>(p.B) * tx_n * ty_n;
  const int64_t hw = static_cast<int64_t>(p.H) * p.W;
  // Pass 1 (parallel over tiles): each record's contribution to its face's corners.
  std::vector<T> contrib(static_cast<size_t>(p.n_records) * 6, T(0));
  parallel_items(n_items, [&](int64_t t) {
    thread_local std::vector<T> suffix;
    int64_t r = p.rec_offsets[t];
    const int64_t r_end = p.rec_offsets[t + 1];
    while (r < r_end) {
      const int64_t pix = p.rec_pixel[r];
      int64_t e = r;
      while (e < r_end && p.rec_pixel[e] == pix) ++e;
      const T g = p.grad_soft_mask[pix];
      if (g != T(0)) {
        const int m = static_cast<int>(e - r);
        suffix.resize(m + 1);
        suffix[m] = T(1);
        for (int k = m - 1; k >= 0; --k) suffix[k] = suffix[k + 1] * (T(1) - p.rec_prob[r + k]);
        const int64_t b = pix / hw;
        const int i = static_cast<int>((pix % hw) / p.W), j = static_cast<int>(pix % p.W);
        const T px = pixel_x<T>(j, p.W) * M, py = pixel_y<T>(i, p.H) * M;
        T prefix = T(1);
        for (int k = 0; k < m; ++k) {
          const T a = p.rec_prob[r + k];
          // dA/da_k = prod_{l != k} (1 - a_l); da_k/dd_k = -inv a_k; d v_scaled / d v = M.
          const T gd = g * prefix * suffix[k + 1] * (-inv) * a * M;
          prefix *= T(1) - a;
          if (gd == T(0)) continue;
          const T* src = p.face_vertices_image + (b * p.F + p.rec_face[r + k]) * 6;
          T v[6];
          for (int c = 0; c < 6; ++c) v[c] = src[c] * M;
          boundary_dist2_backward(v, px, py, eps, static_cast<int>(p.rec_type[r + k]), gd,
                                  contrib.data() + (r + k) * 6);
        }
      }
      r = e;
    }
  });
  // Pass 2 (parallel over meshes, records in order): deterministic accumulation per face.
  const int64_t per_b = static_cast<int64_t>(tx_n) * ty_n;
  parallel_items(p.B, [&](int64_t b) {
    T* out = p.grad_face_vertices_image + b * p.F * 6;
    for (int64_t r = p.rec_offsets[b * per_b]; r < p.rec_offsets[(b + 1) * per_b]; ++r) {
      const T* c = contrib.data() + r * 6;
      T* o = out + static_cast<int64_t>(p.rec_face[r]) * 6;
      for (int q = 0; q < 6; ++q) o[q] += c[q];
    }
  });
}

template struct SoftMaskRecords<float>;
template struct SoftMaskRecords<double>;
template void soft_mask_fwd_cpu<float>(const SoftMaskParams<float>&, SoftMaskRecords<float>*);
template void soft_mask_fwd_cpu<double>(const SoftMaskParams<double>&, SoftMaskRecords<double>*);
template void soft_mask_bwd_cpu<float>(const SoftMaskParams<float>&);
template void soft_mask_bwd_cpu<double>(const SoftMaskParams<double>&);

}  // namespace dibr
