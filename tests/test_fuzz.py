"""Fuzz tests (hypothesis): random meshes, cameras, image sizes and degenerate faces never crash
the kernels and never produce NaN or Inf, forward or backward; the C++ kernels keep agreeing
with the reference on the face index."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dibr_core
from dibr_core import rasterize, soft_mask
from dibr_core.camera import Camera, look_at
from dibr_core.render import Meshes, RenderSettings, render

BACKENDS = ["reference"] + (["cpu"] if dibr_core.backend_info().cpu_kernels else [])
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

coord = st.one_of(
    st.floats(-1.5, 1.5, allow_nan=False, width=32),
    st.floats(-1e4, 1e4, allow_nan=False, width=32),
    st.sampled_from([0.0, -1.0, 1.0, 0.5, 1e-7, -1e-7]),
)


@st.composite
def face_sets(draw):
    B = draw(st.integers(1, 2))
    F = draw(st.integers(0, 12))
    vals = draw(st.lists(coord, min_size=B * F * 6, max_size=B * F * 6))
    fvi = torch.tensor(vals, dtype=torch.float32).view(B, F, 3, 2)
    if F > 0 and draw(st.booleans()):  # degenerate: repeat a corner or make corners collinear
        f = draw(st.integers(0, F - 1))
        fvi[:, f, 2] = fvi[:, f, 1] if draw(st.booleans()) else 2 * fvi[:, f, 1] - fvi[:, f, 0]
    zs = draw(st.lists(st.floats(-100, -0.125, allow_nan=False, width=32), min_size=B * F * 3, max_size=B * F * 3))
    fvz = torch.tensor(zs, dtype=torch.float32).view(B, F, 3)
    H = draw(st.integers(1, 23))
    W = draw(st.integers(1, 23))
    return fvi, fvz, H, W


@FUZZ
@given(face_sets(), st.sampled_from([1.0, 7000.0]), st.sampled_from([0.0, 0.02, 0.5]), st.integers(1, 40))
def test_kernels_finite_and_agree(case, sigmainv, boxlen, knum) -> None:
    fvi, fvz, H, W = case
    idx = {}
    for be in BACKENDS:
        v = fvi.clone().requires_grad_(True)
        fr = rasterize(v, fvz, H, W, backend=be)
        sm = soft_mask(v, fr.face_idx, sigmainv=sigmainv, boxlen=boxlen, knum=knum, backend=be)
        assert torch.isfinite(fr.bary).all() and torch.isfinite(sm).all()
        assert ((sm >= 0) & (sm <= 1)).all()
        assert (fr.face_idx >= -1).all() and (fr.face_idx < max(1, fvi.shape[1])).all()
        (fr.bary.sum() + sm.sum()).backward()
        assert v.grad is not None
        assert torch.isfinite(v.grad).all()
        idx[be] = fr.face_idx
    if len(idx) == 2:
        assert torch.equal(idx["cpu"], idx["reference"])


@FUZZ
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 3),
    st.integers(1, 30),
    st.integers(1, 30),
    st.booleans(),
    st.booleans(),
)
def test_render_random_scenes_finite(seed, n_faces_pow, H, W, ortho, pc) -> None:
    g = torch.Generator().manual_seed(seed)
    V = 3 * n_faces_pow + 2
    verts = (torch.rand(1, V, 3, generator=g) - 0.5) * 4.0  # some vertices behind the camera
    faces = torch.randint(0, V, (3 * n_faces_pow, 3), generator=g)
    faces[0, 2] = faces[0, 1]  # always one degenerate face
    eye = (torch.rand(3, generator=g) - 0.5) * 6
    eye[2] += 0.1
    view = look_at(eye, torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]) if abs(float(eye[0])) + abs(float(eye[2])) > 1e-3
                   else torch.tensor([1.0, 0.0, 0.0]))
    cam = Camera.orthographic(view, 1.5, W / H) if ortho else Camera.perspective(view, math.radians(50), W / H)
    v = verts.clone().requires_grad_(True)
    col = torch.rand(1, V, 3, generator=g).requires_grad_(True)
    for be in BACKENDS:
        out = render(Meshes(v, faces), cam, colors=col,
                     settings=RenderSettings(H, W, perspective_correct=pc, sigmainv=500.0, boxlen=0.2, backend=be))
        for t in (out.rgb, out.alpha, out.depth, out.normals):
            assert torch.isfinite(t).all()
        (out.rgb.sum() + out.alpha.sum() + out.depth.sum()).backward()
        assert torch.isfinite(v.grad).all() and torch.isfinite(col.grad).all()
        v.grad = None
        col.grad = None
