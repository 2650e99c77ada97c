// Torch glue of the soft silhouette (soft_mask_fwd, soft_mask_bwd, soft_mask_bwd_recompute):
// checks the tensors, allocates the outputs and the candidate records, fills the parameter
// structs of dibr/params.h and calls soft_mask_cpu.cpp or, for CUDA tensors, soft_mask_cuda.cu.
#include "torch_common.h"
#include "dibr/binning.h"

namespace dibr_torch {

namespace {

template <typename scalar_t>
dibr::SoftMaskParams<scalar_t> soft_params(const char* fn, const torch::Tensor& fvi, const torch::Tensor& face_idx,
                                           const c10::optional<torch::Tensor>& valid, double sigmainv, double boxlen,
                                           int64_t knum, double multiplier, double eps,
                                           const c10::Device& dev = c10::Device(c10::kCPU)) {
  const int64_t B = fvi.size(0), F = fvi.size(1);
  DIBR_CHECK_ARG(face_idx.dim() == 3 && face_idx.size(0) == B && face_idx.scalar_type() == torch::kInt64 &&
                     face_idx.is_contiguous(),
                 fn, "selected_face_idx must be a contiguous int64 (B, H, W) tensor with B=", B, ", got ",
                 face_idx.sizes());
  DIBR_CHECK_ARG(knum > 0 && knum <= 4096, fn, "knum must be in [1, 4096], got ", knum);
  check_face_idx_device(fn, face_idx, dev);
  dibr::SoftMaskParams<scalar_t> p{};
  p.face_vertices_image = fvi.data_ptr<scalar_t>();
  p.face_idx = face_idx.data_ptr<int64_t>();
  p.valid_faces = valid_ptr(fn, valid, B, F, dev);
  p.B = static_cast<int>(B); p.F = static_cast<int>(F);
  p.H = static_cast<int>(face_idx.size(1)); p.W = static_cast<int>(face_idx.size(2));
  p.knum = static_cast<int>(knum);
  p.sigmainv = sigmainv; p.boxlen = boxlen; p.multiplier = multiplier; p.eps = eps;
  return p;
}

}  // namespace

// Returns [soft_mask] or, with keep_records, [soft_mask, offsets, pixel, face, type, prob].
// CUDA tensors: always [soft_mask] (the CUDA backward, soft_mask_bwd_recompute, keeps no records).
std::vector<torch::Tensor> soft_mask_fwd(const torch::Tensor& fvi, const torch::Tensor& face_idx,
                                         const c10::optional<torch::Tensor>& valid, double sigmainv, double boxlen,
                                         int64_t knum, double multiplier, double eps, bool keep_records) {
  const char* fn = "soft_mask_fwd";
  check_fvi(fn, fvi);
  check_finite_cpu("soft_mask", "face_vertices_image", fvi);
  const c10::Device dev = op_device(fvi);
  DIBR_DEVICE_GUARD(dev);
  auto out = torch::empty({face_idx.size(0), face_idx.size(1), face_idx.size(2)}, fvi.options());
  std::vector<torch::Tensor> result{out};
  AT_DISPATCH_FLOATING_TYPES(fvi.scalar_type(), "soft_mask_fwd", [&] {
    auto p = soft_params<scalar_t>(fn, fvi, face_idx, valid, sigmainv, boxlen, knum, multiplier, eps, dev);
    p.soft_mask = out.data_ptr<scalar_t>();
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::soft_mask_fwd_cuda<scalar_t>(p, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    if (!keep_records) {
      dibr::soft_mask_fwd_cpu<scalar_t>(p, nullptr);
      return;
    }
    dibr::SoftMaskRecords<scalar_t> rec;
    dibr::soft_mask_fwd_cpu<scalar_t>(p, &rec);
    const int64_t n = rec.size();
    auto i64 = torch::TensorOptions().dtype(torch::kInt64);
    auto offsets = torch::empty({static_cast<int64_t>(rec.offsets.size())}, i64);
    std::copy(rec.offsets.begin(), rec.offsets.end(), offsets.data_ptr<int64_t>());
    auto pixel = torch::empty({n}, i64);
    auto face = torch::empty({n}, torch::TensorOptions().dtype(torch::kInt32));
    auto type = torch::empty({n}, torch::TensorOptions().dtype(torch::kUInt8));
    auto prob = torch::empty({n}, fvi.options());
    rec.write(pixel.data_ptr<int64_t>(), face.data_ptr<int32_t>(), type.data_ptr<uint8_t>(),
              prob.data_ptr<scalar_t>());
    result.insert(result.end(), {offsets, pixel, face, type, prob});
  });
  return result;
}

torch::Tensor soft_mask_bwd(const torch::Tensor& grad, const torch::Tensor& fvi, const torch::Tensor& face_idx,
                            double sigmainv, double multiplier, double eps, const torch::Tensor& offsets,
                            const torch::Tensor& pixel, const torch::Tensor& face, const torch::Tensor& type,
                            const torch::Tensor& prob) {
  const char* fn = "soft_mask_bwd";
  check_fvi(fn, fvi);
#ifdef WITH_CUDA
  DIBR_CHECK_ARG(!fvi.is_cuda(), fn, "CUDA tensors keep no candidate records: use soft_mask_bwd_recompute");
#endif
  check_float(fn, grad, "grad_soft_mask", 3, fvi.scalar_type());
  DIBR_CHECK_ARG(offsets.scalar_type() == torch::kInt64 && pixel.scalar_type() == torch::kInt64 &&
                     face.scalar_type() == torch::kInt32 && type.scalar_type() == torch::kUInt8 &&
                     prob.scalar_type() == fvi.scalar_type() && pixel.numel() == face.numel() &&
                     face.numel() == type.numel() && type.numel() == prob.numel(),
                 fn, "candidate records are inconsistent");
  auto out = torch::zeros_like(fvi);
  AT_DISPATCH_FLOATING_TYPES(fvi.scalar_type(), "soft_mask_bwd", [&] {
    auto p = soft_params<scalar_t>(fn, fvi, face_idx, c10::nullopt, sigmainv, 0.0, 1, multiplier, eps);
    const int64_t tiles = static_cast<int64_t>(p.B) * ((p.W + dibr::kTile - 1) / dibr::kTile) *
                          ((p.H + dibr::kTile - 1) / dibr::kTile);
    DIBR_CHECK_ARG(offsets.numel() == tiles + 1, fn, "candidate record offsets do not match the image");
    p.grad_soft_mask = grad.data_ptr<scalar_t>();
    p.grad_face_vertices_image = out.data_ptr<scalar_t>();
    p.rec_offsets = offsets.data_ptr<int64_t>();
    p.rec_pixel = pixel.data_ptr<int64_t>();
    p.rec_face = face.data_ptr<int32_t>();
    p.rec_type = type.data_ptr<uint8_t>();
    p.rec_prob = prob.data_ptr<scalar_t>();
    p.n_records = pixel.numel();
    dibr::soft_mask_bwd_cpu<scalar_t>(p);
  });
  return out;
}

// Soft-mask backward from the forward's inputs (no records): CUDA recomputes each uncovered
// pixel's candidates; the CPU reruns its forward with records. deterministic: the CUDA
// accumulation order (the CPU is always deterministic).
torch::Tensor soft_mask_bwd_recompute(const torch::Tensor& grad, const torch::Tensor& fvi,
                                      const torch::Tensor& face_idx, const c10::optional<torch::Tensor>& valid,
                                      double sigmainv, double boxlen, int64_t knum, double multiplier, double eps,
                                      bool deterministic) {
  const char* fn = "soft_mask_bwd_recompute";
  check_fvi(fn, fvi);
  const c10::Device dev = op_device(fvi);
  DIBR_DEVICE_GUARD(dev);
  check_float(fn, grad, "grad_soft_mask", 3, fvi.scalar_type(), dev);
  DIBR_CHECK_ARG(grad.sizes() == face_idx.sizes(), fn, "grad_soft_mask ", grad.sizes(), " does not match face_idx ",
                 face_idx.sizes());
  auto out = torch::zeros_like(fvi);
  AT_DISPATCH_FLOATING_TYPES(fvi.scalar_type(), "soft_mask_bwd_recompute", [&] {
    auto p = soft_params<scalar_t>(fn, fvi, face_idx, valid, sigmainv, boxlen, knum, multiplier, eps, dev);
    p.grad_soft_mask = grad.data_ptr<scalar_t>();
    p.grad_face_vertices_image = out.data_ptr<scalar_t>();
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::soft_mask_bwd_cuda<scalar_t>(p, deterministic, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    (void)deterministic;
    auto mask = torch::empty({face_idx.size(0), face_idx.size(1), face_idx.size(2)}, fvi.options());
    p.soft_mask = mask.data_ptr<scalar_t>();
    dibr::SoftMaskRecords<scalar_t> rec;
    dibr::soft_mask_fwd_cpu<scalar_t>(p, &rec);
    const size_t n = static_cast<size_t>(rec.size());
    std::vector<int64_t> r_pixel(n);
    std::vector<int32_t> r_face(n);
    std::vector<uint8_t> r_type(n);
    std::vector<scalar_t> r_prob(n);
    rec.write(r_pixel.data(), r_face.data(), r_type.data(), r_prob.data());
    p.rec_offsets = rec.offsets.data();
    p.rec_pixel = r_pixel.data();
    p.rec_face = r_face.data();
    p.rec_type = r_type.data();
    p.rec_prob = r_prob.data();
    p.n_records = static_cast<int64_t>(n);
    dibr::soft_mask_bwd_cpu<scalar_t>(p);
  });
  return out;
}

}  // namespace dibr_torch
