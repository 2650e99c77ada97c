// Shared part of the torch glue of dibr_core (torch_rasterize.cpp, torch_soft_mask.cpp,
// torch_interpolate.cpp, torch_mesh.cpp): the argument checks, which raise errors naming the
// function and the argument, the device of an op and, where built with WITH_CUDA, the CUDA
// stream, device guard and scratch allocator handed to the CUDA launchers.
#pragma once

#include <torch/extension.h>

#include <cmath>
#include <string>

#include "cpu_kernels.h"

#ifdef WITH_CUDA
// c10's stream and allocator headers, not ATen/cuda/CUDAContext.h: that one also needs the
// cuBLAS / cuSPARSE / cuSOLVER headers, which a minimal CUDA toolkit may lack.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_kernels.h"
#endif

#define DIBR_CHECK_ARG(cond, fn, ...) TORCH_CHECK(cond, fn, "(): ", __VA_ARGS__)

namespace dibr_torch {

#ifdef WITH_CUDA
constexpr bool kWithCuda = true;

// Scratch space of the CUDA launchers comes from torch's caching allocator.
inline void* torch_cuda_alloc(void*, size_t bytes, cudaStream_t stream) {
  return c10::cuda::CUDACachingAllocator::raw_alloc_with_stream(bytes, stream);
}
inline void torch_cuda_release(void*, void* ptr, cudaStream_t) { c10::cuda::CUDACachingAllocator::raw_delete(ptr); }
inline const dibr::CudaAllocator kTorchCudaAllocator{&torch_cuda_alloc, &torch_cuda_release, nullptr};

// The current stream of the current device (at::cuda::getCurrentCUDAStream is this function).
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Makes the tensors' device current for the op (CUDA tensors only).
#define DIBR_DEVICE_GUARD(dev) \
  const c10::cuda::OptionalCUDAGuard dibr_device_guard((dev).is_cuda() ? c10::optional<c10::Device>(dev) : c10::nullopt)
#else
constexpr bool kWithCuda = false;
#define DIBR_DEVICE_GUARD(dev) (void)(dev)
#endif

// The device an op runs on: its main tensor's CUDA device (CUDA builds), else the CPU.
inline c10::Device op_device(const torch::Tensor& t) {
  return kWithCuda && t.is_cuda() ? t.device() : c10::Device(c10::kCPU);
}

inline void check_device(const char* fn, const torch::Tensor& t, const char* name, const c10::Device& dev) {
  if (dev.is_cpu()) {
    DIBR_CHECK_ARG(t.device().is_cpu(), fn, name, " must be a CPU tensor for the C++ backend, got ", t.device());
  } else {
    DIBR_CHECK_ARG(t.device() == dev, fn, name, " must be on ", dev, " like the other inputs, got ", t.device());
  }
}

inline void check_float(const char* fn, const torch::Tensor& t, const char* name, int dim, torch::ScalarType dtype,
                 const c10::Device& dev = c10::Device(c10::kCPU)) {
  DIBR_CHECK_ARG(t.dim() == dim, fn, name, " must have ", dim, " dimensions, got shape ", t.sizes());
  DIBR_CHECK_ARG(t.scalar_type() == dtype, fn, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  DIBR_CHECK_ARG(t.is_contiguous(), fn, name, " must be contiguous");
  check_device(fn, t, name, dev);
}

inline void check_fvi(const char* fn, const torch::Tensor& fvi) {
  DIBR_CHECK_ARG(fvi.dim() == 4 && fvi.size(2) == 3 && fvi.size(3) == 2, fn,
                 "face_vertices_image must have shape (B, F, 3, 2), got ", fvi.sizes());
  DIBR_CHECK_ARG(fvi.scalar_type() == torch::kFloat32 || fvi.scalar_type() == torch::kFloat64, fn,
                 "face_vertices_image must be float32 or float64, got ", fvi.scalar_type());
  DIBR_CHECK_ARG(fvi.is_contiguous(), fn, "face_vertices_image must be contiguous");
  DIBR_CHECK_ARG(fvi.device().is_cpu() || (kWithCuda && fvi.is_cuda()), fn, "face_vertices_image must be a ",
                 kWithCuda ? "CPU or CUDA" : "CPU", " tensor, got ", fvi.device());
}

// NaN/Inf check of a CPU float tensor, raising Python's ValueError with the public op's name.
inline void check_finite_cpu(const char* public_fn, const char* name, const torch::Tensor& t) {
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
inline void check_face_idx_device(const char* fn, const torch::Tensor& face_idx, const c10::Device& dev) {
  if (!dev.is_cpu()) check_device(fn, face_idx, "face_idx", dev);
}

inline const uint8_t* valid_ptr(const char* fn, const c10::optional<torch::Tensor>& valid, int64_t B, int64_t F,
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

}  // namespace dibr_torch
