// Torch glue of the mesh queries (winding_numbers, ray_distances, intersecting_face_pairs):
// checks the float64 CPU tensors and calls mesh_cpu.cpp.
#include "torch_common.h"

namespace dibr_torch {

namespace {

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

}  // namespace

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

}  // namespace dibr_torch
