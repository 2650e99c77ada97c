// CPU kernels of dibr_core. They take the plain parameter structs of dibr/params.h and use
// dibr's own thread pool (dibr/parallel.h) for threading; results are deterministic for any
// number of threads.
#pragma once

#include <cstdint>
#include <vector>

#include "dibr/params.h"

namespace dibr {

template <typename T>
void rasterize_fwd_cpu(const RasterizeFwdParams<T>& p);
template <typename T>
void rasterize_bwd_cpu(const RasterizeBwdParams<T>& p);
template <typename T>
struct SoftMaskRecord {
  int64_t pixel;  // flat pixel index b * H * W + i * W + j
  int32_t face;
  uint8_t type;   // 0..2 edge, 3..5 corner
  T prob;         // exp(-sigmainv d^2)
};

// Candidate records of the uncovered pixels that have candidates, per tile in tile order,
// grouped by pixel in face order.
template <typename T>
struct SoftMaskRecords {
  std::vector<std::vector<SoftMaskRecord<T>>> tiles;
  std::vector<int64_t> offsets;  // (tiles + 1): start of each tile's records in the flat arrays
  int64_t size() const { return offsets.empty() ? 0 : offsets.back(); }
  // Copies the records into flat arrays of size() entries each (in parallel over tiles).
  void write(int64_t* pixel, int32_t* face, uint8_t* type, T* prob) const;
};

// Forward; when `records` is not null it receives the candidate records for the backward.
template <typename T>
void soft_mask_fwd_cpu(const SoftMaskParams<T>& p, SoftMaskRecords<T>* records);
template <typename T>
void soft_mask_bwd_cpu(const SoftMaskParams<T>& p);

template <typename T>
void interpolate_fwd_cpu(const InterpolateParams<T>& p);
template <typename T>
void interpolate_bwd_cpu(const InterpolateParams<T>& p);

// Mesh queries (float64): out (P,) = generalised winding numbers of the (F, 3) faces over the
// vertices at the (P, 3) points; and the face pairs (i < j, sorted) that intersect other than
// at a shared corner, flattened as i0, j0, i1, j1, ...
void winding_numbers_cpu(const double* vertices, const int64_t* faces, int64_t n_faces, const double* points,
                         int64_t n_points, double* out);
// out (R,) = distance to the first face hit by each ray (origin, direction), skipping the faces
// that use the ray's skip_vertex (-1: none); +inf where nothing is hit.
void ray_distances_cpu(const double* vertices, const int64_t* faces, int64_t n_faces, const double* origins,
                       const double* directions, const int64_t* skip_vertex, int64_t n_rays, double* out);
std::vector<int64_t> intersecting_face_pairs_cpu(const double* vertices, int64_t n_vertices, const int64_t* faces,
                                                 int64_t n_faces);

}  // namespace dibr
