// Plain parameter structs: the ABI between the torch-facing layer and the CPU/CUDA kernels.
// Pointers are to contiguous row-major buffers; shapes are documented per field.
#pragma once

#include <cstdint>

#include "dibr/hd.h"

namespace dibr {

template <typename T>
struct RasterizeFwdParams {
  const T* face_vertices_image;  // (B, F, 3, 2) NDC
  const T* face_vertices_z;      // (B, F, 3) depth key, larger = closer
  const uint8_t* valid_faces;    // (B, F) or nullptr (all faces drawn)
  int64_t* face_idx;             // out (B, H, W), -1 on background
  T* bary;                       // out (B, H, W, 3), 0 on background
  int B, F, H, W;
  double multiplier;  // NDC scale used for the coverage and barycentric arithmetic
  double eps;         // sign-preserving area epsilon, in scaled units
};

template <typename T>
struct RasterizeBwdParams {
  const T* face_vertices_image;  // (B, F, 3, 2)
  const int64_t* face_idx;       // (B, H, W)
  const T* grad_bary;            // (B, H, W, 3)
  T* grad_face_vertices_image;   // out (B, F, 3, 2), zero-initialised by the caller
  int B, F, H, W;
  double multiplier;
  double eps;
};

template <typename T>
struct SoftMaskParams {
  const T* face_vertices_image;  // (B, F, 3, 2) NDC
  const int64_t* face_idx;       // (B, H, W): pixels with face_idx >= 0 are covered (mask 1)
  const uint8_t* valid_faces;    // (B, F) or nullptr: faces that may be candidates
  T* soft_mask;                  // fwd out (B, H, W)
  const T* grad_soft_mask;       // bwd in (B, H, W)
  T* grad_face_vertices_image;   // bwd out (B, F, 3, 2), zero-initialised by the caller
  // Candidate records kept by the forward for the backward, only for uncovered pixels that
  // have candidates, grouped by pixel in face order. Filled by the CPU forward when requested.
  const int64_t* rec_offsets;    // bwd in (B * tiles + 1): records of each tile
  const int64_t* rec_pixel;      // bwd in (N,): flat pixel index b * H * W + i * W + j
  const int32_t* rec_face;       // bwd in (N,)
  const uint8_t* rec_type;       // bwd in (N,): 0..2 edge, 3..5 corner
  const T* rec_prob;             // bwd in (N,): exp(-sigmainv d^2)
  int64_t n_records;
  int B, F, H, W;
  int knum;           // at most this many candidate faces per pixel, taken in face order
  double sigmainv;    // sharpness, in 1/NDC^2
  double boxlen;      // candidate box growth, NDC
  double multiplier;  // NDC scale used for the arithmetic
  double eps;         // added to squared edge lengths (scaled units)
};

template <typename T>
struct InterpolateParams {
  const T* attributes;      // (B, V, D) per-vertex values
  const int64_t* faces;     // (F, 3) shared, (B, F, 3) per mesh, or nullptr: vertex index = 3 f + k
  bool faces_batched;       // faces is (B, F, 3)
  const int64_t* face_idx;  // (B, H, W)
  const T* bary;            // (B, H, W, 3)
  T* out;                   // fwd out (B, H, W, D)
  const T* grad_out;        // bwd in (B, H, W, D)
  T* grad_attributes;       // bwd out (B, V, D), zero-initialised by the caller
  T* grad_bary;             // bwd out (B, H, W, 3)
  int B, V, F, H, W, D;
};

// The vertex indices of the three corners of face f of mesh b (shared or per-mesh faces, or the
// implicit per-corner layout 3 f + k when faces is null).
template <typename T>
DIBR_HD void corner_vertices(const InterpolateParams<T>& p, int64_t b, int64_t f, int64_t* v) {
  if (p.faces == nullptr) {
    v[0] = 3 * f;
    v[1] = 3 * f + 1;
    v[2] = 3 * f + 2;
    return;
  }
  const int64_t* fc = p.faces + ((p.faces_batched ? b * p.F : 0) + f) * 3;
  v[0] = fc[0];
  v[1] = fc[1];
  v[2] = fc[2];
}

}  // namespace dibr
