// Geometry of closed triangle meshes, written once for the C++ kernels (and any CUDA port):
// the signed solid angle a triangle subtends at a point (van Oosterom-Strackee), the test of a
// segment against a triangle (Moller-Trumbore with the segment parameter in [0, 1]) and the
// side of a point against a triangle's plane. Points and vectors are 3 consecutive values.
#pragma once

#include <cmath>

#include "dibr/hd.h"

namespace dibr {

template <typename T>
DIBR_HD void sub3(const T* a, const T* b, T* out) {
  out[0] = a[0] - b[0];
  out[1] = a[1] - b[1];
  out[2] = a[2] - b[2];
}

template <typename T>
DIBR_HD T dot3(const T* a, const T* b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

template <typename T>
DIBR_HD void cross3(const T* a, const T* b, T* out) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

template <typename T>
DIBR_HD T norm3(const T* a) {
  return std::sqrt(dot3(a, a));
}

// Signed solid angle of triangle (t0, t1, t2) seen from p: 2 atan2(det, den) with
// det = a . (b x c) and den = |a||b||c| + (a.b)|c| + (b.c)|a| + (c.a)|b| for a, b, c the
// corners relative to p. Positive when p is behind the counter-clockwise face.
template <typename T>
DIBR_HD T solid_angle(const T* t0, const T* t1, const T* t2, const T* p) {
  T a[3], b[3], c[3], bc[3];
  sub3(t0, p, a);
  sub3(t1, p, b);
  sub3(t2, p, c);
  const T la = norm3(a), lb = norm3(b), lc = norm3(c);
  cross3(b, c, bc);
  const T det = dot3(a, bc);
  const T den = la * lb * lc + dot3(a, b) * lc + dot3(b, c) * la + dot3(c, a) * lb;
  return T(2) * std::atan2(det, den);
}

// Moller-Trumbore for the line o + t d against triangle (t0, t1, t2) = t0 + u e1 + v e2:
// hit.ok is false when |det| <= min_abs_det (the line is parallel to the plane, or nearly);
// otherwise u, v (barycentric) and t (along d) are set.
template <typename T>
struct LineHit {
  bool ok;
  T u, v, t;
};

template <typename T>
DIBR_HD LineHit<T> line_triangle(const T* o, const T* d, const T* t0, const T* t1, const T* t2, T min_abs_det) {
  T e1[3], e2[3], p[3], s[3], q[3];
  sub3(t1, t0, e1);
  sub3(t2, t0, e2);
  cross3(d, e2, p);
  const T det = dot3(e1, p);
  if (!(std::fabs(det) > min_abs_det)) return {false, T(0), T(0), T(0)};
  const T inv = T(1) / det;
  sub3(o, t0, s);
  cross3(s, e1, q);
  return {true, dot3(s, p) * inv, dot3(d, q) * inv, dot3(e2, q) * inv};
}

template <typename T>
DIBR_HD bool inside_triangle(const LineHit<T>& h) {
  return h.ok && h.u >= T(0) && h.v >= T(0) && h.u + h.v <= T(1);
}

// Whether the closed segment p0 -> p1 crosses triangle (t0, t1, t2); a segment parallel to the
// plane (|det| <= 1e-12 |e1||e2||d|) does not.
template <typename T>
DIBR_HD bool segment_crosses_triangle(const T* p0, const T* p1, const T* t0, const T* t1, const T* t2) {
  T d[3], e1[3], e2[3];
  sub3(p1, p0, d);
  sub3(t1, t0, e1);
  sub3(t2, t0, e2);
  T scale = norm3(e1) * norm3(e2) * norm3(d);
  if (!(scale > T(1e-300))) scale = T(1e-300);
  const LineHit<T> h = line_triangle(p0, d, t0, t1, t2, T(1e-12) * scale);
  return inside_triangle(h) && h.t >= T(0) && h.t <= T(1);
}

// Distance t > 0 along the ray o + t d to triangle (t0, t1, t2), or -1 when the ray misses it
// or is parallel to it (|det| <= 1e-18).
template <typename T>
DIBR_HD T ray_triangle_distance(const T* o, const T* d, const T* t0, const T* t1, const T* t2) {
  const LineHit<T> h = line_triangle(o, d, t0, t1, t2, T(1e-18));
  return inside_triangle(h) && h.t > T(0) ? h.t : T(-1);
}

// (q - t0) . n: the side of q against the plane through t0 with (unnormalised) normal n.
template <typename T>
DIBR_HD T plane_side(const T* q, const T* t0, const T* n) {
  T d[3];
  sub3(q, t0, d);
  return dot3(d, n);
}

}  // namespace dibr
