// CPU kernels of dibr_core. They take the plain parameter structs of dibr/params.h and use
// at::parallel_for for threading; results are deterministic for any number of threads.
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
struct SoftMaskRecords {
  std::vector<int64_t> offsets, pixel;
  std::vector<int32_t> face;
  std::vector<uint8_t> type;
  std::vector<T> prob;
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

}  // namespace dibr
