// The Python module of dibr_core's kernels (dibr_core_C): the prototypes of the torch glue and
// the module table. This is the only file that defines the Python module.
//
// Files of csrc/, per op (rasterize, soft_mask, interpolate; mesh for the mesh queries):
// - torch_<op>.cpp: the torch glue (argument checks, outputs, parameter structs, dispatch to the
//   CPU or CUDA kernel); torch_common.h holds the checks and CUDA plumbing they share.
// - <op>_cpu.cpp: the CPU kernels (declared in cpu_kernels.h).
// - <op>_cuda.cu: the CUDA kernels and launchers (declared in cuda_kernels.h; shared launch,
//   scratch, scan and binning code in cuda_common.cuh). No torch header in these.
// - include/dibr/: the parameter structs (params.h) and the math shared by CPU and CUDA.
// Every basename is unique: torch's cpp_extension names each object after its source's.
#include <torch/extension.h>

#include <vector>

#include "dibr/parallel.h"

namespace dibr_torch {

// torch_rasterize.cpp
std::vector<torch::Tensor> rasterize_fwd(const torch::Tensor& fvi, const torch::Tensor& fvz,
                                         const c10::optional<torch::Tensor>& valid, int64_t height, int64_t width,
                                         double multiplier, double eps);
torch::Tensor rasterize_bwd(const torch::Tensor& grad_bary, const torch::Tensor& fvi, const torch::Tensor& face_idx,
                            double multiplier, double eps, bool deterministic);

// torch_soft_mask.cpp
std::vector<torch::Tensor> soft_mask_fwd(const torch::Tensor& fvi, const torch::Tensor& face_idx,
                                         const c10::optional<torch::Tensor>& valid, double sigmainv, double boxlen,
                                         int64_t knum, double multiplier, double eps, bool keep_records);
torch::Tensor soft_mask_bwd(const torch::Tensor& grad, const torch::Tensor& fvi, const torch::Tensor& face_idx,
                            double sigmainv, double multiplier, double eps, const torch::Tensor& offsets,
                            const torch::Tensor& pixel, const torch::Tensor& face, const torch::Tensor& type,
                            const torch::Tensor& prob);
torch::Tensor soft_mask_bwd_recompute(const torch::Tensor& grad, const torch::Tensor& fvi,
                                      const torch::Tensor& face_idx, const c10::optional<torch::Tensor>& valid,
                                      double sigmainv, double boxlen, int64_t knum, double multiplier, double eps,
                                      bool deterministic);

// torch_interpolate.cpp
torch::Tensor interpolate_fwd(const torch::Tensor& attr, const c10::optional<torch::Tensor>& faces,
                              const torch::Tensor& face_idx, const torch::Tensor& bary);
std::vector<torch::Tensor> interpolate_bwd(const torch::Tensor& grad_out, const torch::Tensor& attr,
                                           const c10::optional<torch::Tensor>& faces, const torch::Tensor& face_idx,
                                           const torch::Tensor& bary, bool need_attr, bool need_bary,
                                           bool deterministic);

// torch_mesh.cpp
torch::Tensor winding_numbers(const torch::Tensor& vertices, const torch::Tensor& faces, const torch::Tensor& points);
torch::Tensor ray_distances(const torch::Tensor& vertices, const torch::Tensor& faces, const torch::Tensor& origins,
                            const torch::Tensor& directions, const torch::Tensor& skip_vertex);
torch::Tensor intersecting_face_pairs(const torch::Tensor& vertices, const torch::Tensor& faces);

}  // namespace dibr_torch

namespace {

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
  m.def("rasterize_fwd", &dibr_torch::rasterize_fwd, "rasterize forward -> [face_idx (B,H,W), bary (B,H,W,3)]");
  m.def("rasterize_bwd", &dibr_torch::rasterize_bwd, "rasterize backward -> grad face_vertices_image (B,F,3,2)");
  m.def("soft_mask_fwd", &dibr_torch::soft_mask_fwd, "soft mask forward -> (B,H,W)");
  m.def("soft_mask_bwd", &dibr_torch::soft_mask_bwd, "soft mask backward -> grad face_vertices_image (B,F,3,2)");
  m.def("soft_mask_bwd_recompute", &dibr_torch::soft_mask_bwd_recompute,
        "soft mask backward recomputing the candidates (CUDA; CPU too) -> grad face_vertices_image (B,F,3,2)");
  m.def("interpolate_fwd", &dibr_torch::interpolate_fwd, "interpolate forward -> (B,H,W,D)");
  m.def("interpolate_bwd", &dibr_torch::interpolate_bwd,
        "interpolate backward -> [grad attributes (B,V,D), grad bary]");
  m.def("winding_numbers", &dibr_torch::winding_numbers,
        "generalised winding numbers (P,) of a mesh at (P, 3) points (CPU, float64)");
  m.def("ray_distances", &dibr_torch::ray_distances,
        "distance (R,) to the first face hit by each ray, skipping faces of skip_vertex (CPU, float64)");
  m.def("intersecting_face_pairs", &dibr_torch::intersecting_face_pairs,
        "face pairs (P, 2), i < j, that intersect other than at a shared corner (CPU, float64)");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
  m.def("set_num_threads", &dibr::set_kernel_threads, "threads of the CPU kernels (0: torch.get_num_threads())");
  m.def("get_num_threads", &dibr::kernel_threads, "threads the CPU kernels use on this thread now");
}
