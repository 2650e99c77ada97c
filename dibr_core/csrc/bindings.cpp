// Torch-facing layer of dibr_core: checks the tensors, allocates outputs, fills the parameter
// structs and calls the CPU kernels (and, where built with WITH_CUDA, the CUDA ones).
// This is the only file that defines the Python module.
#include <torch/extension.h>

#include <cmath>
#include <string>

#include "cpu_kernels.h"
#include "dibr/binning.h"
#include "dibr/parallel.h"

#ifdef WITH_CUDA
// c10's stream and allocator headers, not ATen/cuda/CUDAContext.h: that one also needs the
// cuBLAS / cuSPARSE / cuSOLVER headers, which a minimal CUDA toolkit may lack.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_kernels.h"
#endif

namespace {

#define DIBR_CHECK_ARG(cond, fn, ...) TORCH_CHECK(cond, fn, "(): ", __VA_ARGS__)

#ifdef WITH_CUDA
constexpr bool kWithCuda = true;

// Scratch space of the CUDA launchers comes from torch's caching allocator.
void* torch_cuda_alloc(void*, size_t bytes, cudaStream_t stream) {
  return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes, stream);
}
void torch_cuda_release(void*, void* ptr, cudaStream_t) { c10::cuda::CUDACachingAllocator::raw_delete(ptr); }
const dibr::CudaAllocator kTorchCudaAllocator{&torch_cuda_alloc, &torch_cuda_release, nullptr};

// The current stream of the current device (at::cuda::getCurrentCUDAStream is this function).
cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Makes the tensors' device current for the op (CUDA tensors only).
#define DIBR_DEVICE_GUARD(dev) \
  const c10::cuda::OptionalCUDAGuard dibr_device_guard((dev).is_cuda() ? c10::optional<c10::Device>(dev) : c10::nullopt)
#else
constexpr bool kWithCuda = false;
#define DIBR_DEVICE_GUARD(dev) (void)(dev)
#endif

// The device an op runs on: its main tensor's CUDA device (CUDA builds), else the CPU.
c10::Device op_device(const torch::Tensor& t) {
  return kWithCuda && t.is_cuda() ? t.device() : c10::Device(c10::kCPU);
}

void check_device(const char* fn, const torch::Tensor& t, const char* name, const c10::Device& dev) {
  if (dev.is_cpu()) {
    DIBR_CHECK_ARG(t.device().is_cpu(), fn, name, " must be a CPU tensor for the C++ backend, got ", t.device());
  } else {
    DIBR_CHECK_ARG(t.device() == dev, fn, name, " must be on ", dev, " like the other inputs, got ", t.device());
  }
}

void check_float(const char* fn, const torch::Tensor& t, const char* name, int dim, torch::ScalarType dtype,
                 const c10::Device& dev = c10::Device(c10::kCPU)) {
  DIBR_CHECK_ARG(t.dim() == dim, fn, name, " must have ", dim, " dimensions, got shape ", t.sizes());
  DIBR_CHECK_ARG(t.scalar_type() == dtype, fn, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  DIBR_CHECK_ARG(t.is_contiguous(), fn, name, " must be contiguous");
  check_device(fn, t, name, dev);
}

void check_fvi(const char* fn, const torch::Tensor& fvi) {
  DIBR_CHECK_ARG(fvi.dim() == 4 && fvi.size(2) == 3 && fvi.size(3) == 2, fn,
                 "face_vertices_image must have shape (B, F, 3, 2), got ", fvi.sizes());
  DIBR_CHECK_ARG(fvi.scalar_type() == torch::kFloat32 || fvi.scalar_type() == torch::kFloat64, fn,
                 "face_vertices_image must be float32 or float64, got ", fvi.scalar_type());
  DIBR_CHECK_ARG(fvi.is_contiguous(), fn, "face_vertices_image must be contiguous");
  DIBR_CHECK_ARG(fvi.device().is_cpu() || (kWithCuda && fvi.is_cuda()), fn, "face_vertices_image must be a ",
                 kWithCuda ? "CPU or CUDA" : "CPU", " tensor, got ", fvi.device());
}

// NaN/Inf check of a CPU float tensor, raising Python's ValueError with the public op's name.
void check_finite_cpu(const char* public_fn, const char* name, const torch::Tensor& t) {
  if (!t.device().is_cpu() || t.numel() == 0) return;
  bool ok = true;
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "check_finite", [&] {
    const scalar_t* d = t.data_ptr<scalar_t>();
    const int64_t n = t.numel();
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(d[i])) {
        ok = false;
        break;
      }
    }
  });
  if (ok) return;
  std::string shape = "(";
  for (int64_t k = 0; k < t.dim(); ++k) shape += (k ? ", " : "") + std::to_string(t.size(k));
  shape += t.dim() == 1 ? ",)" : ")";
  TORCH_CHECK_VALUE(false, public_fn, "(): ", name, " contains NaN or Inf values (shape ", shape, ")");
}

// face_idx: a contiguous int64 (B, H, W) tensor (the shape is checked by the caller) on dev.
void check_face_idx_device(const char* fn, const torch::Tensor& face_idx, const c10::Device& dev) {
  if (!dev.is_cpu()) check_device(fn, face_idx, "face_idx", dev);
}

const uint8_t* valid_ptr(const char* fn, const c10::optional<torch::Tensor>& valid, int64_t B, int64_t F,
                         const c10::Device& dev = c10::Device(c10::kCPU)) {
  if (!valid.has_value() || !valid->defined()) return nullptr;
  const auto& v = *valid;
  DIBR_CHECK_ARG(v.dim() == 2 && v.size(0) == B && v.size(1) == F, fn, "valid_faces must have shape (", B, ", ",
                 F, "), got ", v.sizes());
  DIBR_CHECK_ARG(v.scalar_type() == torch::kUInt8, fn, "valid_faces must be uint8 here, got ", v.scalar_type());
  if (dev.is_cpu()) {
    DIBR_CHECK_ARG(v.is_contiguous() && v.device().is_cpu(), fn, "valid_faces must be a contiguous CPU tensor");
  } else {
    DIBR_CHECK_ARG(v.is_contiguous() && v.device() == dev, fn, "valid_faces must be a contiguous tensor on ", dev);
  }
  return v.data_ptr<uint8_t>();
}

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

// Mesh queries: (V, 3) float64 vertices and (F, 3) int64 faces on the CPU.
void check_mesh(const char* fn, const torch::Tensor& vertices, const torch::Tensor& faces) {
  check_float(fn, vertices, "vertices", 2, torch::kFloat64);
  DIBR_CHECK_ARG(vertices.size(1) == 3, fn, "vertices must have shape (V, 3), got ", vertices.sizes());
  DIBR_CHECK_ARG(faces.dim() == 2 && faces.size(1) == 3, fn, "faces must have shape (F, 3), got ", faces.sizes());
  DIBR_CHECK_ARG(faces.scalar_type() == torch::kInt64 && faces.is_contiguous() && faces.device().is_cpu(), fn,
                 "faces must be a contiguous int64 CPU tensor");
  if (faces.numel() > 0) {
    DIBR_CHECK_ARG(faces.min().item<int64_t>() >= 0 && faces.max().item<int64_t>() < vertices.size(0), fn,
                   "faces index outside [0, ", vertices.size(0), ")");
  }
}

torch::Tensor winding_numbers(const torch::Tensor& vertices, const torch::Tensor& faces, const torch::Tensor& points) {
  const char* fn = "winding_numbers";
  check_mesh(fn, vertices, faces);
  check_float(fn, points, "points", 2, torch::kFloat64);
  DIBR_CHECK_ARG(points.size(1) == 3, fn, "points must have shape (P, 3), got ", points.sizes());
  auto out = torch::empty({points.size(0)}, points.options());
  dibr::winding_numbers_cpu(vertices.data_ptr<double>(), faces.data_ptr<int64_t>(), faces.size(0),
                            points.data_ptr<double>(), points.size(0), out.data_ptr<double>());
  return out;
}

torch::Tensor ray_distances(const torch::Tensor& vertices, const torch::Tensor& faces, const torch::Tensor& origins,
                            const torch::Tensor& directions, const torch::Tensor& skip_vertex) {
  const char* fn = "ray_distances";
  check_mesh(fn, vertices, faces);
  check_float(fn, origins, "origins", 2, torch::kFloat64);
  check_float(fn, directions, "directions", 2, torch::kFloat64);
  DIBR_CHECK_ARG(origins.size(1) == 3 && directions.sizes() == origins.sizes(), fn,
                 "origins and directions must have the same shape (R, 3), got ", origins.sizes(), " and ",
                 directions.sizes());
  DIBR_CHECK_ARG(skip_vertex.dim() == 1 && skip_vertex.size(0) == origins.size(0) &&
                     skip_vertex.scalar_type() == torch::kInt64 && skip_vertex.is_contiguous() &&
                     skip_vertex.device().is_cpu(),
                 fn, "skip_vertex must be a contiguous int64 CPU tensor of shape (R,), got ", skip_vertex.sizes());
  auto out = torch::empty({origins.size(0)}, origins.options());
  dibr::ray_distances_cpu(vertices.data_ptr<double>(), faces.data_ptr<int64_t>(), faces.size(0),
                          origins.data_ptr<double>(), directions.data_ptr<double>(), skip_vertex.data_ptr<int64_t>(),
                          origins.size(0), out.data_ptr<double>());
  return out;
}

torch::Tensor intersecting_face_pairs(const torch::Tensor& vertices, const torch::Tensor& faces) {
  check_mesh("intersecting_face_pairs", vertices, faces);
  const auto flat = dibr::intersecting_face_pairs_cpu(vertices.data_ptr<double>(), vertices.size(0),
                                                      faces.data_ptr<int64_t>(), faces.size(0));
  const int64_t n = static_cast<int64_t>(flat.size()) / 2;
  auto out = torch::empty({n, 2}, faces.options());
  std::copy(flat.begin(), flat.end(), out.data_ptr<int64_t>());
  return out;
}

bool with_cuda() {
#ifdef WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dibr_core C++ kernels (CPU; CUDA where built with WITH_CUDA)";
  m.def("rasterize_fwd", &rasterize_fwd, "rasterize forward -> [face_idx (B,H,W), bary (B,H,W,3)]");
  m.def("rasterize_bwd", &rasterize_bwd, "rasterize backward -> grad face_vertices_image (B,F,3,2)");
  m.def("soft_mask_fwd", &soft_mask_fwd, "soft mask forward -> (B,H,W)");
  m.def("soft_mask_bwd", &soft_mask_bwd, "soft mask backward -> grad face_vertices_image (B,F,3,2)");
  m.def("soft_mask_bwd_recompute", &soft_mask_bwd_recompute,
        "soft mask backward recomputing the candidates (CUDA; CPU too) -> grad face_vertices_image (B,F,3,2)");
  m.def("interpolate_fwd", &interpolate_fwd, "interpolate forward -> (B,H,W,D)");
  m.def("interpolate_bwd", &interpolate_bwd, "interpolate backward -> [grad attributes (B,V,D), grad bary]");
  m.def("winding_numbers", &winding_numbers, "generalised winding numbers (P,) of a mesh at (P, 3) points (CPU, float64)");
  m.def("ray_distances", &ray_distances,
        "distance (R,) to the first face hit by each ray, skipping faces of skip_vertex (CPU, float64)");
  m.def("intersecting_face_pairs", &intersecting_face_pairs,
        "face pairs (P, 2), i < j, that intersect other than at a shared corner (CPU, float64)");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
  m.def("set_num_threads", &dibr::set_kernel_threads, "threads of the CPU kernels (0: torch.get_num_threads())");
  m.def("get_num_threads", &dibr::kernel_threads, "threads the CPU kernels use on this thread now");
}
