// Torch glue of the rasterizer (rasterize_fwd, rasterize_bwd): checks the tensors, allocates
// the outputs, fills the parameter structs of dibr/params.h and calls rasterize_cpu.cpp or,
// for CUDA tensors, rasterize_cuda.cu.
#include "torch_common.h"

namespace dibr_torch {

std::vector<torch::Tensor> rasterize_fwd(const torch::Tensor& fvi, const torch::Tensor& fvz,
                                         const c10::optional<torch::Tensor>& valid, int64_t height, int64_t width,
                                         double multiplier, double eps) {
  const char* fn = "rasterize_fwd";
  check_fvi(fn, fvi);
  const c10::Device dev = op_device(fvi);
  DIBR_DEVICE_GUARD(dev);
  const int64_t B = fvi.size(0), F = fvi.size(1);
  check_float(fn, fvz, "face_vertices_z", 3, fvi.scalar_type(), dev);
  check_finite_cpu("rasterize", "face_vertices_image", fvi);
  check_finite_cpu("rasterize", "face_vertices_z", fvz);
  DIBR_CHECK_ARG(fvz.size(0) == B && fvz.size(1) == F && fvz.size(2) == 3, fn, "face_vertices_z must have shape (",
                 B, ", ", F, ", 3), got ", fvz.sizes());
  DIBR_CHECK_ARG(height > 0 && width > 0, fn, "height and width must be positive, got ", height, "x", width);
  auto face_idx = torch::empty({B, height, width}, fvi.options().dtype(torch::kInt64));
  auto bary = torch::empty({B, height, width, 3}, fvi.options());
  AT_DISPATCH_FLOATING_TYPES(fvi.scalar_type(), "rasterize_fwd", [&] {
    dibr::RasterizeFwdParams<scalar_t> p;
    p.face_vertices_image = fvi.data_ptr<scalar_t>();
    p.face_vertices_z = fvz.data_ptr<scalar_t>();
    p.valid_faces = valid_ptr(fn, valid, B, F, dev);
    p.face_idx = face_idx.data_ptr<int64_t>();
    p.bary = bary.data_ptr<scalar_t>();
    p.B = static_cast<int>(B); p.F = static_cast<int>(F);
    p.H = static_cast<int>(height); p.W = static_cast<int>(width);
    p.multiplier = multiplier; p.eps = eps;
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::rasterize_fwd_cuda<scalar_t>(p, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    dibr::rasterize_fwd_cpu<scalar_t>(p);
  });
  return {face_idx, bary};
}

// deterministic: the CUDA backward's accumulation order (the CPU backward is always deterministic).
torch::Tensor rasterize_bwd(const torch::Tensor& grad_bary, const torch::Tensor& fvi, const torch::Tensor& face_idx,
                            double multiplier, double eps, bool deterministic) {
  const char* fn = "rasterize_bwd";
  check_fvi(fn, fvi);
  const c10::Device dev = op_device(fvi);
  DIBR_DEVICE_GUARD(dev);
  check_float(fn, grad_bary, "grad_bary", 4, fvi.scalar_type(), dev);
  DIBR_CHECK_ARG(face_idx.dim() == 3 && face_idx.scalar_type() == torch::kInt64 && face_idx.is_contiguous(), fn,
                 "face_idx must be a contiguous int64 (B, H, W) tensor, got ", face_idx.sizes());
  check_face_idx_device(fn, face_idx, dev);
  const int64_t B = fvi.size(0), F = fvi.size(1), H = face_idx.size(1), W = face_idx.size(2);
  DIBR_CHECK_ARG(grad_bary.size(0) == B && grad_bary.size(1) == H && grad_bary.size(2) == W && grad_bary.size(3) == 3,
                 fn, "grad_bary must have shape (B, H, W, 3), got ", grad_bary.sizes());
  auto grad = torch::zeros_like(fvi);
  AT_DISPATCH_FLOATING_TYPES(fvi.scalar_type(), "rasterize_bwd", [&] {
    dibr::RasterizeBwdParams<scalar_t> p;
    p.face_vertices_image = fvi.data_ptr<scalar_t>();
    p.face_idx = face_idx.data_ptr<int64_t>();
    p.grad_bary = grad_bary.data_ptr<scalar_t>();
    p.grad_face_vertices_image = grad.data_ptr<scalar_t>();
    p.B = static_cast<int>(B); p.F = static_cast<int>(F);
    p.H = static_cast<int>(H); p.W = static_cast<int>(W);
    p.multiplier = multiplier; p.eps = eps;
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::rasterize_bwd_cuda<scalar_t>(p, deterministic, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    (void)deterministic;
    dibr::rasterize_bwd_cpu<scalar_t>(p);
  });
  return grad;
}

}  // namespace dibr_torch
