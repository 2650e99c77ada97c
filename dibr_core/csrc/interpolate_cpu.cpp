// CPU attribute interpolation: out = sum_k w_k attr[vertex of corner k], with a deterministic
// backward (attribute gradients accumulated per mesh in pixel order).

#include "cpu_kernels.h"
#include "dibr/parallel.h"

namespace dibr {

template <typename T>
void interpolate_fwd_cpu(const InterpolateParams<T>& p) {
  const int64_t n_pix = static_cast<int64_t>(p.B) * p.H * p.W;
  const int D = p.D;
  parallel_for(0, n_pix, 2048, [&](int64_t q0, int64_t q1) {
    for (int64_t pix = q0; pix < q1; ++pix) {
      T* o = p.out + pix * D;
      const int64_t f = p.face_idx[pix];
      if (f < 0) {
        for (int d = 0; d < D; ++d) o[d] = T(0);
        continue;
      }
      const int64_t b = pix / (static_cast<int64_t>(p.H) * p.W);
      int64_t v[3];
      corner_vertices(p, b, f, v);
      const T* w = p.bary + pix * 3;
      const T* a0 = p.attributes + (b * p.V + v[0]) * D;
      const T* a1 = p.attributes + (b * p.V + v[1]) * D;
      const T* a2 = p.attributes + (b * p.V + v[2]) * D;
      for (int d = 0; d < D; ++d) o[d] = w[0] * a0[d] + w[1] * a1[d] + w[2] * a2[d];
    }
  });
}

template <typename T>
void interpolate_bwd_cpu(const InterpolateParams<T>& p) {
  const int64_t n_pix = static_cast<int64_t>(p.B) * p.H * p.W;
  const int D = p.D;
  if (p.grad_bary != nullptr) {
    parallel_for(0, n_pix, 2048, [&](int64_t q0, int64_t q1) {
      for (int64_t pix = q0; pix < q1; ++pix) {
        T* gb = p.grad_bary + pix * 3;
        gb[0] = gb[1] = gb[2] = T(0);
        const int64_t f = p.face_idx[pix];
        if (f < 0) continue;
        const int64_t b = pix / (static_cast<int64_t>(p.H) * p.W);
        int64_t v[3];
        corner_vertices(p, b, f, v);
        const T* g = p.grad_out + pix * D;
        for (int k = 0; k < 3; ++k) {
          const T* a = p.attributes + (b * p.V + v[k]) * D;
          T s = T(0);
          for (int d = 0; d < D; ++d) s += g[d] * a[d];
          gb[k] = s;
        }
      }
    });
  }
  if (p.grad_attributes != nullptr) {
    const int64_t per_b = static_cast<int64_t>(p.H) * p.W;
    parallel_items(p.B, [&](int64_t b) {
      for (int64_t pix = b * per_b; pix < (b + 1) * per_b; ++pix) {
        const int64_t f = p.face_idx[pix];
        if (f < 0) continue;
        int64_t v[3];
        corner_vertices(p, b, f, v);
        const T* w = p.bary + pix * 3;
        const T* g = p.grad_out + pix * D;
        for (int k = 0; k < 3; ++k) {
          T* ga = p.grad_attributes + (b * p.V + v[k]) * D;
          for (int d = 0; d < D; ++d) ga[d] += w[k] * g[d];
        }
      }
    });
  }
}

template void interpolate_fwd_cpu<float>(const InterpolateParams<float>&);
template void interpolate_fwd_cpu<double>(const InterpolateParams<double>&);
template void interpolate_bwd_cpu<float>(const InterpolateParams<float>&);
template void interpolate_bwd_cpu<double>(const InterpolateParams<double>&);

}  // namespace dibr
