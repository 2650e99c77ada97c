"""Fuzz tests (hypothesis): random meshes, cameras, image sizes and degenerate faces never crash
the kernels and never produce NaN or Inf, forward or backward; the C++ kernels keep agreeing
with the reference on the face index. Bad input (mismatched shapes, wrong dtypes, out-of-range
indices and parameters) raises ValueError or TypeError naming the function, never crashes."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dibr_core
from dibr_core import Fragments, interpolate, rasterize, soft_mask
from dibr_core.camera import Camera, look_at
from dibr_core.render import Meshes, RenderSettings, render

BACKENDS = ["reference"] + (["cpu"] if dibr_core.backend_info().cpu_kernels else [])
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_BAD = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

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


# ---------------------------------------------------------------------------------------------
# Bad input: mismatched shapes, wrong dtypes and out-of-range indices. Each case starts from a
# valid call and applies one mutation; the mutations that break the documented contract must
# raise ValueError or TypeError (never crash, never another error), the others must run and
# agree across the backends.
# ---------------------------------------------------------------------------------------------
ERRORS = (ValueError, TypeError)

INTERP_MUTATIONS = [
    None, "noncontiguous", "int32_faces", "faces_index_high", "faces_index_negative", "face_idx_high",
    "face_idx_below_minus_one", "fewer_faces", "more_faces", "attr_batch", "attr_ndim", "attr_corners",
    "attr_int", "bary_shape", "bary_int", "face_idx_int32", "face_idx_shape", "faces_float", "faces_last_dim",
    "faces_batch", "fvw_faces", "fvw_batch",
]


@st.composite
def interpolate_cases(draw):
    B, F, V = draw(st.integers(1, 2)), draw(st.integers(0, 6)), draw(st.integers(1, 8))
    H, W, D = draw(st.integers(1, 6)), draw(st.integers(1, 6)), draw(st.integers(1, 3))
    layout = draw(st.sampled_from(["vertex", "vertex_batched", "corner"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    face_idx = torch.randint(-1, max(F, 0), (B, H, W), generator=g) if F > 0 else torch.full((B, H, W), -1)
    bary = torch.rand(B, H, W, 3, generator=g, dtype=torch.float64)
    faces = None if layout == "corner" else torch.randint(0, V, (F, 3) if layout == "vertex" else (B, F, 3),
                                                          generator=g)
    attr = torch.rand((B, F, 3, D) if layout == "corner" else (B, V, D), generator=g, dtype=torch.float64)
    fvw = torch.rand(B, F, 3, generator=g, dtype=torch.float64) + 0.5 if draw(st.booleans()) else None
    num_faces = draw(st.sampled_from([None, F]))
    m = draw(st.sampled_from(INTERP_MUTATIONS))
    bad = m not in (None, "noncontiguous", "int32_faces")
    if m == "noncontiguous":
        attr = attr.transpose(-1, -2).contiguous().transpose(-1, -2)
        face_idx = face_idx.transpose(1, 2).contiguous().transpose(1, 2)
        bary = torch.cat([bary, bary], dim=-1)[..., ::2]
        if faces is not None:
            faces = torch.cat([faces, faces], dim=-1)[..., ::2]
    elif m == "int32_faces" and faces is not None:
        faces = faces.int()
    elif m in ("faces_index_high", "faces_index_negative"):
        if faces is None or F == 0:
            bad = False
        else:
            faces = faces.clone()
            faces.view(-1)[draw(st.integers(0, faces.numel() - 1))] = V if m == "faces_index_high" else -1
    elif m == "face_idx_high":
        face_idx = face_idx.clone()
        face_idx.view(-1)[draw(st.integers(0, face_idx.numel() - 1))] = F + draw(st.integers(0, 2**40))
    elif m == "face_idx_below_minus_one":
        face_idx = face_idx.clone()
        face_idx.view(-1)[draw(st.integers(0, face_idx.numel() - 1))] = -2 - draw(st.integers(0, 2**40))
    elif m in ("fewer_faces", "more_faces"):
        delta = -1 if m == "fewer_faces" else 1
        if F + delta < 0:
            bad = False
        else:
            if faces is None:
                attr = attr[:, :F + delta] if delta < 0 else torch.cat([attr, torch.full_like(attr[:, :1], 0.5)
                                                                        if F else torch.full((B, 1, 3, D), 0.5,
                                                                                             dtype=attr.dtype)], dim=1)
            else:
                faces = faces[..., :F + delta, :] if delta < 0 else torch.cat(
                    [faces, torch.zeros(*faces.shape[:-2], 1, 3, dtype=faces.dtype)], dim=-2)
            if fvw is not None:  # keep face_vertices_w consistent with the new face count
                fvw = fvw[:, :F + delta] if delta < 0 else torch.cat([fvw, torch.ones(B, 1, 3, dtype=fvw.dtype)], dim=1)
            # Without a recorded face count only indices beyond the new count are an error.
            bad = num_faces is not None or (F > 0 and int(face_idx.max()) >= F + delta)
    elif m == "attr_batch":
        attr = torch.cat([attr, attr])
    elif m == "attr_ndim":
        attr = attr[..., 0]
    elif m == "attr_corners":
        if faces is None:
            attr = torch.cat([attr, attr[:, :, :1]], dim=2)
        else:
            attr = attr[..., None, :]
    elif m == "attr_int":
        attr = (attr * 10).long()
    elif m == "bary_shape":
        bary = bary[..., :2]
    elif m == "bary_int":
        bary = bary.long()
    elif m == "face_idx_int32":
        face_idx = face_idx.int()
    elif m == "face_idx_shape":
        face_idx = face_idx[:, :, :-1] if W > 1 else face_idx[:, :-1] if H > 1 else face_idx[None]
    elif m == "faces_float":
        if faces is None:
            bad = False
        else:
            faces = faces.double()
    elif m == "faces_last_dim":
        if faces is None:
            bad = False
        else:
            faces = torch.cat([faces, faces[..., :1]], dim=-1)
    elif m == "faces_batch":
        if faces is None:
            bad = False
        else:
            faces = faces[None].expand(B + 1, *faces.shape).contiguous() if faces.dim() == 2 else faces[:1].expand(
                B + 1, F, 3).contiguous()
    elif m in ("fvw_faces", "fvw_batch"):
        if fvw is None:
            fvw = torch.rand(B, F, 3, dtype=torch.float64) + 0.5
        fvw = torch.cat([fvw, torch.ones(B, 1, 3, dtype=fvw.dtype)], dim=1) if m == "fvw_faces" else torch.cat([fvw, fvw])
    return attr, Fragments(face_idx, bary, num_faces), faces, fvw, bad, m


@FUZZ_BAD
@given(interpolate_cases())
def test_interpolate_bad_input_raises_documented_errors(case) -> None:
    attr, frags, faces, fvw, bad, mutation = case
    outs = []
    for be in BACKENDS:
        if bad:
            with pytest.raises(ERRORS, match=r"^interpolate\(\): "):
                interpolate(attr, frags, faces, face_vertices_w=fvw, backend=be)
            continue
        a = attr.clone().requires_grad_(True)
        out = interpolate(a, frags, faces, face_vertices_w=fvw, backend=be)
        out.square().sum().backward()
        assert torch.isfinite(out).all() and torch.isfinite(a.grad).all()
        assert (out[frags.face_idx < 0] == 0).all()
        outs.append((out.detach(), a.grad))
    if len(outs) == 2:
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-12, atol=1e-12)


RASTER_MUTATIONS = [
    None, "fvi_ndim", "fvi_corners", "fvi_last_dim", "fvz_faces", "fvz_batch", "fvz_dtype", "valid_shape",
    "valid_dtype", "size_zero", "size_negative", "size_float", "multiplier_zero", "multiplier_nan",
    "multiplier_huge", "eps_negative", "eps_inf", "fvi_nan", "fvz_inf", "fvi_huge", "knum_zero", "knum_huge",
    "knum_float", "sigmainv_zero", "boxlen_negative", "face_idx_batch", "face_idx_ndim", "face_idx_int32",
    "face_idx_any_values",
]


@FUZZ_BAD
@given(face_sets(), st.sampled_from(RASTER_MUTATIONS), st.integers(0, 2**31 - 1))
def test_rasterize_and_soft_mask_bad_input_raise_documented_errors(case, mutation, seed) -> None:
    fvi, fvz, H, W = case
    B, F = fvi.shape[:2]
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(B, F, generator=g) > 0.3
    r_kw = dict(multiplier=1000.0, eps=1e-8)
    s_kw = dict(sigmainv=7000.0, boxlen=0.1, knum=30, multiplier=1000.0)
    face_idx = None  # from the rasterizer unless mutated
    bad_r = True  # the mutation breaks rasterize (else only soft_mask)
    m = mutation
    if m is None:
        bad_r = False
    elif m == "fvi_ndim":
        fvi = fvi[..., 0]
    elif m == "fvi_corners":
        fvi = torch.cat([fvi, fvi[:, :, :1]], dim=2)
    elif m == "fvi_last_dim":
        fvi = torch.cat([fvi, fvi[..., :1]], dim=3)
    elif m == "fvz_faces":
        fvz = torch.cat([fvz, torch.full((B, 1, 3), -1.0)], dim=1)
    elif m == "fvz_batch":
        fvz = torch.cat([fvz, fvz])
    elif m == "fvz_dtype":
        fvz = fvz.double()
    elif m == "valid_shape":
        valid = torch.cat([valid, valid], dim=1) if F > 0 else valid[None]
    elif m == "valid_dtype":
        valid = valid.float()
    elif m in ("size_zero", "size_negative", "size_float"):
        H = {"size_zero": 0, "size_negative": -H, "size_float": float(H)}[m]
    elif m == "multiplier_zero":
        r_kw["multiplier"] = s_kw["multiplier"] = 0.0
    elif m == "multiplier_nan":
        r_kw["multiplier"] = s_kw["multiplier"] = math.nan
    elif m == "multiplier_huge":
        r_kw["multiplier"] = s_kw["multiplier"] = 1e30
    elif m == "eps_negative":
        r_kw["eps"] = -1e-8
    elif m == "eps_inf":
        r_kw["eps"] = math.inf
    elif m in ("fvi_nan", "fvz_inf", "fvi_huge"):
        if F == 0:
            bad_r = False
        else:
            t = fvz if m == "fvz_inf" else fvi
            t.view(-1)[int(torch.randint(0, t.numel(), (1,), generator=g))] = {
                "fvi_nan": math.nan, "fvz_inf": -math.inf, "fvi_huge": 3e6}[m]
    else:
        bad_r = False
    out_r, out_s = [], []
    for be in BACKENDS:
        if bad_r:
            with pytest.raises(ERRORS, match=r"^rasterize\(\): "):
                rasterize(fvi, fvz, H, W, valid, backend=be, **r_kw)  # type: ignore[arg-type]
            if m not in ("fvz_faces", "fvz_batch", "fvz_dtype", "size_zero", "size_negative", "size_float",
                         "eps_negative", "eps_inf", "fvz_inf") and m != "valid_dtype":
                with pytest.raises(ERRORS, match=r"^soft_mask\(\): "):
                    soft_mask(fvi, torch.full((B, 4, 4), -1, dtype=torch.int64), backend=be,
                              valid_faces=valid, **s_kw)  # type: ignore[arg-type]
            continue
        fr = rasterize(fvi, fvz, H, W, valid, backend=be, **r_kw)  # type: ignore[arg-type]
        fidx = fr.face_idx
        kw = dict(s_kw)
        bad_s = True
        if m == "knum_zero":
            kw["knum"] = 0
        elif m == "knum_huge":
            kw["knum"] = 5000
        elif m == "knum_float":
            kw["knum"] = 2.5
        elif m == "sigmainv_zero":
            kw["sigmainv"] = 0.0
        elif m == "boxlen_negative":
            kw["boxlen"] = -0.1
        elif m == "face_idx_batch":
            fidx = torch.cat([fidx, fidx])
        elif m == "face_idx_ndim":
            fidx = fidx[0]
        elif m == "face_idx_int32":
            fidx = fidx.int()
        elif m == "face_idx_any_values":  # soft_mask only reads face_idx >= 0 (covered): any values are valid
            fidx = torch.randint(-2**40, 2**40, fidx.shape, generator=torch.Generator().manual_seed(seed))
            bad_s = False
        else:
            bad_s = False
        if bad_s:
            with pytest.raises(ERRORS, match=r"^soft_mask\(\): "):
                soft_mask(fvi, fidx, valid_faces=valid, backend=be, **kw)  # type: ignore[arg-type]
            continue
        v = fvi.clone().requires_grad_(True)
        sm = soft_mask(v, fidx, valid_faces=valid, backend=be, **kw)  # type: ignore[arg-type]
        sm.sum().backward()
        assert torch.isfinite(sm).all() and torch.isfinite(v.grad).all()
        out_r.append(fr.face_idx)
        out_s.append(sm.detach())
    if len(out_r) == 2:
        assert torch.equal(out_r[0], out_r[1])
        torch.testing.assert_close(out_s[0], out_s[1], rtol=1e-5, atol=1e-5)
