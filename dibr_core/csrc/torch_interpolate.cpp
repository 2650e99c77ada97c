// Torch glue of attribute interpolation (interpolate_fwd, interpolate_bwd): checks the tensors,
// allocates the outputs, fills the parameter structs of dibr/params.h and calls
// interpolate_cpu.cpp or, for CUDA tensors, interpolate_cuda.cu.
#include "torch_common.h"

namespace dibr_torch {

namespace {

template <typename scalar_t>
dibr::InterpolateParams<scalar_t> interp_params(const char* fn, const torch::Tensor& attr,
                                                const c10::optional<torch::Tensor>& faces,
                                                const torch::Tensor& face_idx, const torch::Tensor& bary,
                                                const c10::Device& dev = c10::Device(c10::kCPU)) {
  check_float(fn, attr, "attributes", 3, attr.scalar_type(), dev);
  check_float(fn, bary, "bary", 4, attr.scalar_type(), dev);
  DIBR_CHECK_ARG(face_idx.dim() == 3 && face_idx.scalar_type() == torch::kInt64 && face_idx.is_contiguous(), fn,
                 "face_idx must be a contiguous int64 (B, H, W) tensor, got ", face_idx.sizes());
  check_face_idx_device(fn, face_idx, dev);
  dibr::InterpolateParams<scalar_t> p{};
  p.B = static_cast<int>(attr.size(0));
  p.V = static_cast<int>(attr.size(1));
  p.D = static_cast<int>(attr.size(2));
  p.H = static_cast<int>(face_idx.size(1));
  p.W = static_cast<int>(face_idx.size(2));
  DIBR_CHECK_ARG(face_idx.size(0) == p.B && bary.size(0) == p.B && bary.size(1) == p.H && bary.size(2) == p.W &&
                     bary.size(3) == 3,
                 fn, "face_idx ", face_idx.sizes(), " and bary ", bary.sizes(), " do not match attributes ",
                 attr.sizes());
  if (faces.has_value() && faces->defined()) {
    const auto& f = *faces;
    DIBR_CHECK_ARG((f.dim() == 2 || (f.dim() == 3 && f.size(0) == p.B)) && f.size(-1) == 3 &&
                       f.scalar_type() == torch::kInt64 && f.is_contiguous(),
                   fn, "faces must be a contiguous int64 (F, 3) or (B, F, 3) tensor, got ", f.sizes());
    if (!dev.is_cpu()) check_device(fn, f, "faces", dev);
    p.faces = f.data_ptr<int64_t>();
    p.faces_batched = f.dim() == 3;
    p.F = static_cast<int>(f.size(-2));
  } else {
    p.faces = nullptr;
    p.F = p.V / 3;
  }
  p.attributes = attr.data_ptr<scalar_t>();
  p.face_idx = face_idx.data_ptr<int64_t>();
  p.bary = bary.data_ptr<scalar_t>();
  return p;
}

}  // namespace

torch::Tensor interpolate_fwd(const torch::Tensor& attr, const c10::optional<torch::Tensor>& faces,
                              const torch::Tensor& face_idx, const torch::Tensor& bary) {
  const c10::Device dev = op_device(attr);
  DIBR_DEVICE_GUARD(dev);
  auto out = torch::empty({face_idx.size(0), face_idx.size(1), face_idx.size(2), attr.size(2)}, attr.options());
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_fwd", [&] {
    auto p = interp_params<scalar_t>("interpolate_fwd", attr, faces, face_idx, bary, dev);
    p.out = out.data_ptr<scalar_t>();
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::interpolate_fwd_cuda<scalar_t>(p, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    dibr::interpolate_fwd_cpu<scalar_t>(p);
  });
  return out;
}

// deterministic: the CUDA backward's accumulation order (the CPU backward is always deterministic).
std::vector<torch::Tensor> interpolate_bwd(const torch::Tensor& grad_out, const torch::Tensor& attr,
                                           const c10::optional<torch::Tensor>& faces, const torch::Tensor& face_idx,
                                           const torch::Tensor& bary, bool need_attr, bool need_bary,
                                           bool deterministic) {
  const char* fn = "interpolate_bwd";
  const c10::Device dev = op_device(attr);
  DIBR_DEVICE_GUARD(dev);
  check_float(fn, grad_out, "grad_out", 4, attr.scalar_type(), dev);
  auto grad_attr = need_attr ? torch::zeros_like(attr) : torch::Tensor();
  auto grad_bary = need_bary ? torch::empty_like(bary) : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(attr.scalar_type(), "interpolate_bwd", [&] {
    auto p = interp_params<scalar_t>(fn, attr, faces, face_idx, bary, dev);
    p.grad_out = grad_out.data_ptr<scalar_t>();
    p.grad_attributes = need_attr ? grad_attr.data_ptr<scalar_t>() : nullptr;
    p.grad_bary = need_bary ? grad_bary.data_ptr<scalar_t>() : nullptr;
#ifdef WITH_CUDA
    if (dev.is_cuda()) {
      dibr::interpolate_bwd_cuda<scalar_t>(p, deterministic, current_stream(), &kTorchCudaAllocator);
      return;
    }
#endif
    (void)deterministic;
    dibr::interpolate_bwd_cpu<scalar_t>(p);
  });
  return {grad_attr, grad_bary};
}

}  // namespace dibr_torch
