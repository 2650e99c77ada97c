// DIB-R geometry math, written once for the CPU and the CUDA kernels:
// edge functions and barycentric weights (with their exact derivatives), and the squared
// distance from a pixel to a triangle's boundary (with its derivative).
// All coordinates here are in scaled units (NDC multiplied by the multiplier M).
#pragma once

#include <cmath>

#include "dibr/hd.h"

namespace dibr {

// 2D cross product u x v = u.x v.y - u.y v.x.
template <typename T>
DIBR_HD T cross2(T ux, T uy, T vx, T vy) {
  return ux * vy - uy * vx;
}

// Unnormalised barycentric numerators and the stabilised area of triangle (a, b, c) at
// point p. Returns false for a zero-area triangle, which is never drawn.
// w_k = hw[k] / area, where area = (hw0 + hw1 + hw2) + sign * eps.
template <typename T>
struct Bary {
  T hw[3];
  T area;
  T w[3];
};

// The unnormalised barycentric numerators hw (3 values) of point p in triangle v (6 values:
// ax, ay, bx, by, cx, cy); returns their sum.
template <typename T>
DIBR_HD T bary_numerators(const T* v, T px, T py, T* hw) {
  const T eax = v[0] - px, eay = v[1] - py;
  const T ebx = v[2] - px, eby = v[3] - py;
  const T ecx = v[4] - px, ecy = v[5] - py;
  hw[0] = cross2(ebx, eby, ecx, ecy);
  hw[1] = cross2(ecx, ecy, eax, eay);
  hw[2] = cross2(eax, eay, ebx, eby);
  return hw[0] + hw[1] + hw[2];
}

template <typename T>
DIBR_HD bool barycentric(const T* v, T px, T py, T eps, Bary<T>& out) {
  const T s = bary_numerators(v, px, py, out.hw);
  if (s == T(0)) return false;
  out.area = s + (s > T(0) ? eps : -eps);
  out.w[0] = out.hw[0] / out.area;
  out.w[1] = out.hw[1] / out.area;
  out.w[2] = out.hw[2] / out.area;
  return true;
}

// Whether the point is certainly outside the triangle, decided without the divisions of
// `barycentric`: some numerator hw_k has the sign opposite to the area's (the area is s plus eps
// away from zero, so it has the sign of s) and is large enough that hw_k / area cannot
// underflow to -0. When this returns false, `barycentric` and its w_k >= 0 test decide.
template <typename T>
DIBR_HD bool certainly_outside(const T* v, T px, T py) {
  T h[3];
  const T s = bary_numerators(v, px, py, h);
  const T tiny = (s < T(0) ? -s : s) * T(1e-20) + T(1e-30);
  if (s > T(0)) return h[0] < -tiny || h[1] < -tiny || h[2] < -tiny;
  if (s < T(0)) return h[0] > tiny || h[1] > tiny || h[2] > tiny;
  return false;
}

// Exact derivative of the barycentric weights above with respect to the three corners.
// g: dL/dw (3 values); adds dL/dv (6 values, scaled units) into grad_v.
template <typename T>
DIBR_HD void barycentric_backward(const T* v, T px, T py, const Bary<T>& b, const T* g, T* grad_v) {
  const T eax = v[0] - px, eay = v[1] - py;
  const T ebx = v[2] - px, eby = v[3] - py;
  const T ecx = v[4] - px, ecy = v[5] - py;
  // dw_k/dhw_j = delta_kj / area - hw_k / area^2 (the area is the sum of the hw plus a constant).
  const T dot = g[0] * b.hw[0] + g[1] * b.hw[1] + g[2] * b.hw[2];
  const T inv = T(1) / b.area;
  const T common = dot * inv * inv;
  const T g0 = g[0] * inv - common;
  const T g1 = g[1] * inv - common;
  const T g2 = g[2] * inv - common;
  // hw0 = eb x ec, hw1 = ec x ea, hw2 = ea x eb; d(u x v)/du = (v.y, -v.x), d(u x v)/dv = (-u.y, u.x).
  grad_v[0] += g1 * (-ecy) + g2 * eby;
  grad_v[1] += g1 * ecx + g2 * (-ebx);
  grad_v[2] += g0 * ecy + g2 * (-eay);
  grad_v[3] += g0 * (-ecx) + g2 * eax;
  grad_v[4] += g0 * (-eby) + g1 * eay;
  grad_v[5] += g0 * ebx + g1 * (-eax);
}

// Squared distance from p to segment (x1, y1)-(x2, y2) the way DIB-R defines it: the squared
// distance to the supporting line when the foot of the perpendicular lies on the segment
// (0 <= t <= 1), else `sentinel` (the corner candidates then give the distance). A zero-length
// edge gives `sentinel`. DIB-R writes the same quantity through the line coefficients
// (A, B, C) and the foot point; this form needs one division: up = (p - v1) x (v2 - v1),
// d = up^2 / (|v2 - v1|^2 + eps).
template <typename T>
DIBR_HD T edge_dist2(T x1, T y1, T x2, T y2, T px, T py, T eps, T sentinel) {
  const T ex = x2 - x1, ey = y2 - y1;
  const T dx = px - x1, dy = py - y1;
  const T len2 = ex * ex + ey * ey;
  const T dot = dx * ex + dy * ey;
  if (!(len2 > T(0)) || dot < T(0) || dot > len2) return sentinel;
  const T up = dx * ey - dy * ex;
  return up * up / (len2 + eps);
}

// Adds g * d(edge_dist2)/d(endpoints) for an edge whose foot lies on the segment.
template <typename T>
DIBR_HD void edge_dist2_backward(T x1, T y1, T x2, T y2, T px, T py, T eps, T g, T* gx1, T* gy1,
                                 T* gx2, T* gy2) {
  const T ex = x2 - x1, ey = y2 - y1;
  const T dx = px - x1, dy = py - y1;
  const T L = ex * ex + ey * ey + eps;
  const T up = dx * ey - dy * ex;
  const T D = up * up / L;
  // dD = (2 up d(up) - D d(len2)) / L, with
  // d(up)/d(x1, y1, x2, y2) = (py - y2, x2 - px, y1 - py, px - x1) and
  // d(len2)/d(x1, y1, x2, y2) = (-2 ex, -2 ey, 2 ex, 2 ey).
  const T a = g * T(2) * up / L;
  const T c = g * T(2) * D / L;
  *gx1 += a * (py - y2) + c * ex;
  *gy1 += a * (x2 - px) + c * ey;
  *gx2 += a * (y1 - py) - c * ex;
  *gy2 += a * (px - x1) - c * ey;
}

// Squared distance from p to the boundary of triangle v (6 values): the minimum over the three
// edges (type 0..2, edge k joins corner k and corner k+1) and the three corners (type 3..5);
// on ties the first candidate wins.
template <typename T>
DIBR_HD T boundary_dist2(const T* v, T px, T py, T eps, T sentinel, int* type) {
  T best = edge_dist2(v[0], v[1], v[2], v[3], px, py, eps, sentinel);
  int t = 0;
  T d = edge_dist2(v[2], v[3], v[4], v[5], px, py, eps, sentinel);
  if (d < best) { best = d; t = 1; }
  d = edge_dist2(v[4], v[5], v[0], v[1], px, py, eps, sentinel);
  if (d < best) { best = d; t = 2; }
  for (int k = 0; k < 3; ++k) {
    const T dx = px - v[2 * k];
    const T dy = py - v[2 * k + 1];
    d = dx * dx + dy * dy;
    if (d < best) { best = d; t = 3 + k; }
  }
  *type = t;
  return best;
}

// Adds g * d(boundary_dist2)/dv into grad_v (6 values) for the candidate `type`.
template <typename T>
DIBR_HD void boundary_dist2_backward(const T* v, T px, T py, T eps, int type, T g, T* grad_v) {
  if (type >= 3) {
    const int k = type - 3;
    grad_v[2 * k] += g * T(2) * (v[2 * k] - px);
    grad_v[2 * k + 1] += g * T(2) * (v[2 * k + 1] - py);
    return;
  }
  const int i = type, j = (type + 1) % 3;
  edge_dist2_backward(v[2 * i], v[2 * i + 1], v[2 * j], v[2 * j + 1], px, py, eps, g, &grad_v[2 * i],
                      &grad_v[2 * i + 1], &grad_v[2 * j], &grad_v[2 * j + 1]);
}

// Whether a face covers the pixel before the depth test: half-open bounding box, then the
// inclusive inside test on the barycentric weights.
template <typename T>
DIBR_HD bool in_box(const T* v, T px, T py, T grow) {
  const T x0 = min3(v[0], v[2], v[4]) - grow, x1 = max3(v[0], v[2], v[4]) + grow;
  const T y0 = min3(v[1], v[3], v[5]) - grow, y1 = max3(v[1], v[3], v[5]) + grow;
  return x0 <= px && px < x1 && y0 <= py && py < y1;
}

}  // namespace dibr
