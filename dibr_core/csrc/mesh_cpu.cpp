// CPU mesh queries used to find and repair self-intersections: generalised winding numbers at
// query points, the first hit along rays, and the pairs of faces that intersect other than at
// a shared corner. The
// Python reference twins are in dibr_core/reference/mesh_queries.py (dispatch in
// dibr_core/mesh_queries.py); the decisions follow the same formulas in the same order.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>
#include <vector>

#include "cpu_kernels.h"
#include "dibr/mesh_math.h"
#include "dibr/parallel.h"

namespace dibr {

void winding_numbers_cpu(const double* vertices, const int64_t* faces, int64_t n_faces, const double* points,
                         int64_t n_points, double* out) {
  const double inv_4pi = 1.0 / (4.0 * M_PI);
  parallel_for(0, n_points, 8, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const double* p = points + 3 * q;
      double sum = 0.0;
      for (int64_t f = 0; f < n_faces; ++f) {
        const int64_t* c = faces + 3 * f;
        sum += solid_angle(vertices + 3 * c[0], vertices + 3 * c[1], vertices + 3 * c[2], p);
      }
      out[q] = sum * inv_4pi;
    }
  });
}

void ray_distances_cpu(const double* vertices, const int64_t* faces, int64_t n_faces, const double* origins,
                       const double* directions, const int64_t* skip_vertex, int64_t n_rays, double* out) {
  parallel_for(0, n_rays, 4, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      double best = INFINITY;
      for (int64_t f = 0; f < n_faces; ++f) {
        const int64_t* c = faces + 3 * f;
        if (c[0] == skip_vertex[r] || c[1] == skip_vertex[r] || c[2] == skip_vertex[r]) continue;
        const double t = ray_triangle_distance(origins + 3 * r, directions + 3 * r, vertices + 3 * c[0],
                                               vertices + 3 * c[1], vertices + 3 * c[2]);
        if (t > 0 && t < best) best = t;
      }
      out[r] = best;
    }
  });
}

namespace {

// Whether faces fa and fb (corner indices ia, ib) intersect other than at a shared corner;
// faces sharing an edge never do (on a closed surface they only touch along it).
bool faces_intersect(const double* v, const int64_t* ia, const int64_t* ib) {
  bool shared_a[3] = {false, false, false}, shared_b[3] = {false, false, false};
  int n_shared = 0;
  for (int x = 0; x < 3; ++x)
    for (int y = 0; y < 3; ++y)
      if (ia[x] == ib[y]) {
        shared_a[x] = shared_b[y] = true;
        ++n_shared;
      }
  if (n_shared > 1) return false;
  const double* ta[3] = {v + 3 * ia[0], v + 3 * ia[1], v + 3 * ia[2]};
  const double* tb[3] = {v + 3 * ib[0], v + 3 * ib[1], v + 3 * ib[2]};
  // Plane test: all corners of one face (but a shared one) strictly on one side of the other's plane.
  for (int dir = 0; dir < 2; ++dir) {
    const double* const* a = dir == 0 ? ta : tb;
    const double* const* b = dir == 0 ? tb : ta;
    const bool* b_shared = dir == 0 ? shared_b : shared_a;
    double e1[3], e2[3], n[3];
    sub3(a[1], a[0], e1);
    sub3(a[2], a[0], e2);
    cross3(e1, e2, n);
    bool all_pos = true, all_neg = true;
    for (int k = 0; k < 3; ++k) {
      const double s = plane_side(b[k], a[0], n);
      all_pos = all_pos && (s > 0 || b_shared[k]);
      all_neg = all_neg && (s < 0 || b_shared[k]);
    }
    if (all_pos || all_neg) return false;
  }
  // Edge tests: disjoint faces intersect when an edge of one crosses the other; faces sharing a
  // corner when the edge opposite it in one face crosses the other face.
  for (int dir = 0; dir < 2; ++dir) {
    const double* const* a = dir == 0 ? ta : tb;
    const double* const* b = dir == 0 ? tb : ta;
    const bool* a_shared = dir == 0 ? shared_a : shared_b;
    for (int k = 0; k < 3; ++k) {
      const int k1 = (k + 1) % 3;
      if (n_shared == 1 && (a_shared[k] || a_shared[k1])) continue;
      if (segment_crosses_triangle(a[k], a[k1], b[0], b[1], b[2])) return true;
    }
  }
  return false;
}

}  // namespace

std::vector<int64_t> intersecting_face_pairs_cpu(const double* vertices, int64_t n_vertices, const int64_t* faces,
                                                 int64_t n_faces) {
  std::vector<double> lo(3 * n_faces), hi(3 * n_faces);
  double vlo[3] = {INFINITY, INFINITY, INFINITY}, vhi[3] = {-INFINITY, -INFINITY, -INFINITY};
  for (int64_t i = 0; i < n_vertices; ++i)
    for (int d = 0; d < 3; ++d) {
      vlo[d] = std::min(vlo[d], vertices[3 * i + d]);
      vhi[d] = std::max(vhi[d], vertices[3 * i + d]);
    }
  for (int64_t f = 0; f < n_faces; ++f)
    for (int d = 0; d < 3; ++d) {
      const double a = vertices[3 * faces[3 * f] + d], b = vertices[3 * faces[3 * f + 1] + d],
                   c = vertices[3 * faces[3 * f + 2] + d];
      lo[3 * f + d] = min3(a, b, c);
      hi[3 * f + d] = max3(a, b, c);
    }
  // Sweep along the longest axis: the faces overlapping face i on it follow i in the order of
  // their low ends and start before i ends.
  int axis = 0;
  for (int d = 1; d < 3; ++d)
    if (vhi[d] - vlo[d] > vhi[axis] - vlo[axis]) axis = d;
  std::vector<int64_t> order(n_faces);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return lo[3 * a + axis] < lo[3 * b + axis]; });
  std::vector<std::vector<int64_t>> found(n_faces);
  parallel_items(n_faces, [&](int64_t s) {
    const int64_t i = order[s];
    for (int64_t t = s + 1; t < n_faces; ++t) {
      const int64_t j = order[t];
      if (lo[3 * j + axis] > hi[3 * i + axis]) break;
      bool overlap = true;
      for (int d = 0; d < 3; ++d)
        overlap = overlap && lo[3 * i + d] <= hi[3 * j + d] && lo[3 * j + d] <= hi[3 * i + d];
      if (overlap && faces_intersect(vertices, faces + 3 * i, faces + 3 * j)) found[s].push_back(j);
    }
  });
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t s = 0; s < n_faces; ++s)
    for (int64_t j : found[s]) pairs.emplace_back(std::min(order[s], j), std::max(order[s], j));
  std::sort(pairs.begin(), pairs.end());
  std::vector<int64_t> flat;
  flat.reserve(2 * pairs.size());
  for (const auto& pr : pairs) {
    flat.push_back(pr.first);
    flat.push_back(pr.second);
  }
  return flat;
}

}  // namespace dibr
