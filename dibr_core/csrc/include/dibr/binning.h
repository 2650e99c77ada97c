// Host-side tile binning for the CPU kernels: every face is listed, in face order, in each
// TILE x TILE pixel tile that its bounding box (grown by `grow` NDC) may touch, with a 64-bit
// mask of the tile's pixels inside the face's conservative pixel rectangle (bit q = row * 8 +
// column inside the tile). Visiting a tile's list in order, and each entry's pixels in bit
// order (row-major), gives exactly the same per-pixel face sequence as a loop over all faces,
// because the exact box test is still done per pixel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(_MSC_VER)
#include <intrin.h>
#endif

namespace dibr {

constexpr int kTile = 8;

static_assert(kTile * kTile == 64, "tile pixel masks are 64-bit");

struct Bins {
  int tiles_x = 0, tiles_y = 0;
  std::vector<int64_t> offsets;  // (tiles + 1) prefix offsets into faces
  std::vector<int32_t> faces;    // face indices, ascending within each tile
  std::vector<uint64_t> masks;   // per entry: the tile's pixels inside the face's pixel rectangle
  std::vector<int32_t> rect;     // (F, 4): conservative pixel range j0, j1, i0, i1 (inclusive); -1 if none
};

constexpr uint64_t kRowBits = 0x0101010101010101ull;  // bit 0 of each of the 8 rows

// Index of the lowest set bit of a non-zero mask.
inline int lowest_bit(uint64_t m) {
#if defined(_MSC_VER)
  unsigned long idx;
  _BitScanForward64(&idx, m);
  return static_cast<int>(idx);
#else
  return __builtin_ctzll(m);
#endif
}

// Conservative inclusive pixel range [lo_idx, hi_idx] of the pixels whose centre may lie in
// [lo, hi) along one axis. `flip` is true for rows (NDC y grows upwards, rows downwards).
inline bool pixel_range(double lo, double hi, int n, bool flip, int* a, int* b) {
  lo = std::max(lo, -4.0);
  hi = std::min(hi, 4.0);
  if (!(lo <= hi)) return false;
  double f0, f1;
  if (!flip) {  // x_j = (2j + 1 - n) / n  =>  j = (x n + n - 1) / 2
    f0 = (lo * n + n - 1) / 2.0;
    f1 = (hi * n + n - 1) / 2.0;
  } else {  // y_i = (n - 2i - 1) / n  =>  i = (n - 1 - y n) / 2
    f0 = (n - 1 - hi * n) / 2.0;
    f1 = (n - 1 - lo * n) / 2.0;
  }
  int i0 = static_cast<int>(std::floor(f0)) - 1;
  int i1 = static_cast<int>(std::ceil(f1)) + 1;
  i0 = std::max(i0, 0);
  i1 = std::min(i1, n - 1);
  if (i0 > i1) return false;
  *a = i0;
  *b = i1;
  return true;
}

// fvi: (F, 3, 2) NDC of one mesh; valid: (F,) or nullptr.
template <typename T>
void bin_faces(const T* fvi, const uint8_t* valid, int F, int H, int W, double grow, Bins& bins) {
  bins.tiles_x = (W + kTile - 1) / kTile;
  bins.tiles_y = (H + kTile - 1) / kTile;
  const int n_tiles = bins.tiles_x * bins.tiles_y;
  std::vector<int32_t>& rect = bins.rect;
  rect.assign(static_cast<size_t>(F) * 4, -1);
  std::vector<int64_t> counts(n_tiles + 1, 0);
  for (int f = 0; f < F; ++f) {
    if (valid != nullptr && !valid[f]) continue;
    const T* v = fvi + static_cast<int64_t>(f) * 6;
    const double x0 = std::min({(double)v[0], (double)v[2], (double)v[4]}) - grow;
    const double x1 = std::max({(double)v[0], (double)v[2], (double)v[4]}) + grow;
    const double y0 = std::min({(double)v[1], (double)v[3], (double)v[5]}) - grow;
    const double y1 = std::max({(double)v[1], (double)v[3], (double)v[5]}) + grow;
    int j0, j1, i0, i1;
    if (!pixel_range(x0, x1, W, false, &j0, &j1) || !pixel_range(y0, y1, H, true, &i0, &i1)) continue;
    int32_t* r = &rect[static_cast<size_t>(f) * 4];
    r[0] = j0; r[1] = j1; r[2] = i0; r[3] = i1;
    for (int ty = i0 / kTile; ty <= i1 / kTile; ++ty)
      for (int tx = j0 / kTile; tx <= j1 / kTile; ++tx) counts[ty * bins.tiles_x + tx + 1]++;
  }
  bins.offsets.assign(n_tiles + 1, 0);
  for (int t = 0; t < n_tiles; ++t) bins.offsets[t + 1] = bins.offsets[t] + counts[t + 1];
  bins.faces.resize(static_cast<size_t>(bins.offsets[n_tiles]));
  bins.masks.resize(bins.faces.size());
  std::vector<int64_t> fill(bins.offsets.begin(), bins.offsets.end() - 1);
  for (int f = 0; f < F; ++f) {
    const int32_t* r = &rect[static_cast<size_t>(f) * 4];
    if (r[0] < 0) continue;
    for (int ty = r[2] / kTile; ty <= r[3] / kTile; ++ty) {
      // Rows ia..ib of this tile: one bit per row at bit 8 * row.
      const int ia = std::max(r[2] - ty * kTile, 0), ib = std::min(r[3] - ty * kTile, kTile - 1);
      const uint64_t rows = (kRowBits >> (kTile * (kTile - 1 - (ib - ia)))) << (kTile * ia);
      for (int tx = r[0] / kTile; tx <= r[1] / kTile; ++tx) {
        const int ja = std::max(r[0] - tx * kTile, 0), jb = std::min(r[1] - tx * kTile, kTile - 1);
        const uint64_t cols = ((uint64_t{1} << (jb - ja + 1)) - 1) << ja;  // < 2^8: no carries below
        const int64_t at = fill[ty * bins.tiles_x + tx]++;
        bins.faces[at] = f;
        bins.masks[at] = cols * rows;
      }
    }
  }
}

}  // namespace dibr
