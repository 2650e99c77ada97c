"""Bad and extreme input to the kernels, ops and renderer: each case raises a clear error (naming
the function, the argument and the shape) or gives a correct result, the same on the cpu and the
reference backend. Never a crash, never a silent wrong answer."""
from __future__ import annotations

import math

import pytest
import torch

import dibr_core
from dibr_core import Fragments, interpolate, rasterize, soft_mask
from dibr_core.camera import Camera
from dibr_core.lighting import normalize
from dibr_core.mesh import icosphere
from dibr_core.render import Meshes, RenderSettings, render
from dibr_core.scenes import default_camera

HAS_CPP = dibr_core.backend_info().cpu_kernels
BACKENDS = ["reference"] + (["cpu"] if HAS_CPP else [])
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="C++ extension not built")


def sphere_scene(dtype: torch.dtype = torch.float32, size: int = 32):
    """Level-2 icosphere (320 faces) seen by the default camera: (v, f, uv, fvi, fvz)."""
    v, f, uv = icosphere(2, dtype=dtype)
    cam = default_camera(dtype=dtype)
    p = cam.to_camera(v[None])
    clip = cam.to_clip(p)
    ndc = clip[..., :2] / clip[..., 3:]
    return v, f, uv, ndc[0][f][None], p[0, :, 2][f][None]


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_rejects_faces_other_than_the_rasterized(backend: str) -> None:
    v, f, _, fvi, fvz = sphere_scene()
    fr = rasterize(fvi, fvz, 32, 32, backend=backend)
    for faces in (f[:4].clone(), f[:4]):  # the view f[:4] shares its storage with all 320 faces
        with pytest.raises(ValueError, match=r"interpolate\(\): faces has F=4 faces \(shape \(4, 3\)\) but the "
                                             r"fragments come from rasterizing 320 faces"):
            interpolate(v[None], fr, faces, backend=backend)
    with pytest.raises(ValueError, match=r"interpolate\(\): attributes has F=4 faces \(shape \(1, 4, 3, 5\)\)"):
        interpolate(torch.rand(1, 4, 3, 5), fr, backend=backend)
    with pytest.raises(ValueError, match=r"interpolate\(\): faces has F=321"):
        interpolate(v[None], fr, torch.cat([f, f[:1]]), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_checks_hand_built_fragments(backend: str) -> None:
    face_idx = torch.tensor([[[0, -1], [3, 1]]])
    bary = torch.full((1, 2, 2, 3), 1 / 3)
    attr = torch.rand(1, 3, 3, 2)
    with pytest.raises(ValueError, match=r"interpolate\(\): fragments.face_idx holds index 3, outside \[-1, 3\) "
                                         r"for 3 faces in attributes \(shape \(1, 2, 2\)\)"):
        interpolate(attr, Fragments(face_idx, bary), backend=backend)
    with pytest.raises(ValueError, match=r"fragments.face_idx holds index -3"):
        interpolate(attr, Fragments(face_idx.clamp(max=2) - 2, bary), backend=backend)
    with pytest.raises(ValueError, match=r"interpolate\(\): fragments.bary must have shape \(B, H, W, 3\) with "
                                         r"B=1, H=2, W=2, got \(1, 2, 3, 3\)"):
        interpolate(attr, Fragments(face_idx.clamp(max=2), torch.zeros(1, 2, 3, 3)), backend=backend)
    with pytest.raises(TypeError, match=r"interpolate\(\): fragments.face_idx must have dtype int64, got int32"):
        interpolate(attr, Fragments(face_idx.clamp(max=2).int(), bary), backend=backend)
    with pytest.raises(TypeError, match=r"interpolate\(\): fragments must be the Fragments of rasterize\(\)"):
        interpolate(attr, (face_idx, bary), backend=backend)  # type: ignore[arg-type]
    ok = Fragments(face_idx.clamp(max=2), bary)
    want = torch.stack([attr[0, 0].mean(0), torch.zeros(2), attr[0, 2].mean(0), attr[0, 1].mean(0)]).view(1, 2, 2, 2)
    torch.testing.assert_close(interpolate(attr, ok, backend=backend), want)


@needs_cpp
def test_interpolate_non_contiguous_inputs_match_contiguous() -> None:
    v, f, _, fvi, fvz = sphere_scene()
    fr = rasterize(fvi, fvz, 32, 32, backend="cpu")
    attr = torch.rand(1, v.shape[0], 4)
    want = interpolate(attr, fr, f, backend="reference")
    attr_t = attr.transpose(1, 2).contiguous().transpose(1, 2)     # strided (B, V, D)
    f_wide = torch.stack([f, torch.zeros_like(f)], dim=1)           # (F, 2, 3): f_wide[:, 0] is a strided view of f
    fr_t = Fragments(fr.face_idx.transpose(1, 2).contiguous().transpose(1, 2), fr.bary, fr.num_faces)
    for be in BACKENDS:
        got = interpolate(attr_t, fr_t, f_wide[:, 0], backend=be)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        got_corner = interpolate(attr[0][f][None].transpose(2, 3).contiguous().transpose(2, 3), fr, backend=be)
        torch.testing.assert_close(got_corner, want, rtol=1e-6, atol=1e-6)


@needs_cpp
@pytest.mark.parametrize("op", ["rasterize", "soft_mask", "interpolate"])
def test_second_order_gradients_of_compiled_kernels_raise(op: str) -> None:
    _, _, _, fvi, fvz = sphere_scene()
    fr = rasterize(fvi, fvz, 16, 16, backend="cpu")

    attr = torch.rand(1, 320, 3, 2, generator=torch.Generator().manual_seed(0))

    def first_order(backend: str, create_graph: bool):
        x = (fvi if op != "interpolate" else attr).clone().requires_grad_(True)
        if op == "rasterize":
            y = rasterize(x, fvz, 16, 16, backend=backend).bary
        elif op == "soft_mask":
            y = soft_mask(x, fr.face_idx, backend=backend)
        else:
            y = interpolate(x, fr, backend=backend)
        (g,) = torch.autograd.grad((y ** 2).sum() + y.sum(), x, create_graph=create_graph)
        return x, g

    x, g = first_order("cpu", True)
    _, g_plain = first_order("cpu", False)
    _, g_ref = first_order("reference", True)
    assert torch.equal(g.detach(), g_plain)  # the first-order gradient itself is unchanged ...
    torch.testing.assert_close(g.detach(), g_ref.detach(), rtol=1e-4, atol=1e-3)
    with pytest.raises(RuntimeError, match=rf"{op}\(\): second-order gradients .* not implemented by the compiled "
                                           r"kernels .* use backend='reference'"):
        torch.autograd.grad(g.pow(2).sum() + x.sum(), x)  # ... but differentiating it again says so
    # A linear loss gives a gradient that does not depend on the output: still not silent.
    x2, g2 = x, g
    if op == "rasterize":
        x2 = fvi.clone().requires_grad_(True)
        (g2,) = torch.autograd.grad(rasterize(x2, fvz, 16, 16, backend="cpu").bary[..., 0].sum(), x2, create_graph=True)
        with pytest.raises(RuntimeError, match=r"second-order gradients"):
            torch.autograd.grad(g2.pow(2).sum() + x2.sum(), x2)


def test_second_order_gradients_of_the_reference_path() -> None:
    """The reference backend is plain PyTorch: its double backward is autograd's, and correct."""
    g = torch.Generator().manual_seed(3)
    fvi = (torch.rand(1, 3, 3, 2, generator=g, dtype=torch.float64) - 0.5) * 1.6
    fvz = -torch.rand(1, 3, 3, generator=g, dtype=torch.float64) - 1
    x = fvi.clone().requires_grad_(True)
    torch.autograd.gradgradcheck(lambda t: rasterize(t, fvz, 6, 6, backend="reference").bary, (x,))
    idx = rasterize(fvi, fvz, 6, 6, backend="reference").face_idx
    torch.autograd.gradgradcheck(
        lambda t: soft_mask(t, idx, sigmainv=30.0, boxlen=0.5, backend="reference"), (x,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_coordinates_beyond_the_float32_range_raise(backend: str) -> None:
    _, _, _, fvi, fvz = sphere_scene()
    far = fvi.clone()
    far[0, 0, 0, 0] = 1e30
    msg = (r"rasterize\(\): face_vertices_image \(shape \(1, 320, 3, 2\)\) reaches \|x\| = 1e\+30 NDC with "
           r"multiplier 1e\+03; the float32 kernels need max\(\|x\|, 1\) \* multiplier <= 1e\+09")
    with pytest.raises(ValueError, match=msg):
        rasterize(far, fvz, 16, 16, backend=backend)
    fr = rasterize(fvi, fvz, 16, 16, backend=backend)
    with pytest.raises(ValueError, match=r"soft_mask\(\): face_vertices_image .* reaches \|x\| = 1e\+30 NDC"):
        soft_mask(far, fr.face_idx, backend=backend)
    with pytest.raises(ValueError, match=r"soft_mask\(\): face_vertices_image .* with multiplier 1e\+30"):
        soft_mask(fvi, fr.face_idx, multiplier=1e30, backend=backend)
    with pytest.raises(ValueError, match=r"rasterize\(\): .* with multiplier 1e\+10"):
        rasterize(fvi, fvz, 16, 16, multiplier=1e10, backend=backend)


def test_far_vertex_in_float64_is_finite_and_backends_agree() -> None:
    # face 0: a huge sliver from the left half of the image to x = 1e30, in front of face 1
    far = torch.tensor([[[[-0.5, -0.5], [1e30, 0.0], [-0.5, 0.5]], [[-0.9, -0.9], [0.9, -0.9], [0.0, 0.9]]]],
                       dtype=torch.float64)
    fvz = torch.tensor([[[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]]], dtype=torch.float64)
    out = {}
    for be in BACKENDS:
        x = far.clone().requires_grad_(True)
        fr = rasterize(x, fvz, 32, 32, backend=be)
        sm = soft_mask(x, fr.face_idx, backend=be)
        (sm.sum() + fr.bary.sum()).backward()
        assert torch.isfinite(sm).all() and torch.isfinite(fr.bary).all() and torch.isfinite(x.grad).all()
        assert (fr.face_idx == 0).sum() > 100 and (fr.face_idx == 1).any()
        out[be] = (fr.face_idx, sm, x.grad)
    if len(out) == 2:
        assert torch.equal(out["cpu"][0], out["reference"][0])
        torch.testing.assert_close(out["cpu"][1], out["reference"][1], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out["cpu"][2], out["reference"][2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_rejects_vertices_projecting_beyond_the_float32_range(backend: str) -> None:
    v, f, _ = icosphere(2)
    cam = default_camera()
    p = cam.to_camera(v[None])[0, 0].clone()
    p[0] = 1e30  # vertex 0 far to the side at its own depth: in front of the camera, not culled
    vv = v.clone()
    vv[0] = (torch.linalg.inv(cam.view[0].double()) @ torch.cat([p.double(), torch.ones(1, dtype=torch.float64)]))[:3].float()
    with pytest.raises(ValueError, match=r"render\(\): meshes.vertices projected to NDC \(shape \(1, 320, 3, 2\)\) "
                                         r"reaches \|x\| = .*e\+29 NDC"):
        render(Meshes(vv[None], f), cam, settings=RenderSettings(16, 16, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("smooth", [True, False])
def test_render_of_a_scene_scaled_by_1e30_has_the_same_normals(backend: str, smooth: bool) -> None:
    v, f, _ = icosphere(2)
    cam = default_camera()
    view = cam.view.clone()
    view[..., :3, 3] *= 1e30
    big_cam = Camera(view, cam.projection, cam.near * 1e30, cam.far * 1e30)
    s = RenderSettings(32, 32, backend=backend, smooth_normals=smooth)
    big = render(Meshes(v[None] * 1e30, f), big_cam, settings=s)
    ref = render(Meshes(v[None], f), cam, settings=s)
    assert torch.isfinite(big.normals).all() and torch.isfinite(big.alpha).all()
    both = big.mask * ref.mask
    assert both.sum() > 100
    torch.testing.assert_close(big.normals * both[..., None], ref.normals * both[..., None], rtol=0, atol=1e-4)


def test_normalize_does_not_overflow_or_change_ordinary_results() -> None:
    big = torch.tensor([[3e30, 4e30, 0.0], [0.0, 0.0, 0.0], [1e-30, 0.0, 0.0]])
    torch.testing.assert_close(normalize(big)[0], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.equal(normalize(big)[1], torch.zeros(3))
    v = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0)) * 37.0
    assert torch.equal(normalize(v), v / (torch.linalg.vector_norm(v, dim=-1, keepdim=True) + 1e-15))


@pytest.mark.parametrize("backend", BACKENDS)
def test_render_texture_must_be_rgb(backend: str) -> None:
    v, f, uv = icosphere(2)
    for tex in (torch.rand(1, 1, 8, 8), torch.rand(1, 4, 8, 8)):
        with pytest.raises(ValueError, match=rf"render\(\): texture must have shape \(\*, 3, \*, \*\), got \(1, {tex.shape[1]}, 8, 8\)"):
            render(Meshes(v[None], f), default_camera(), face_uvs=uv, texture=tex,
                   settings=RenderSettings(16, 16, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_attribute_stays_on_its_face(backend: str) -> None:
    _, _, _, fvi, fvz = sphere_scene()
    fr = rasterize(fvi, fvz, 64, 64, backend=backend)
    attr = torch.rand(1, 320, 3, 2)
    attr[0, 0, 0, 0] = float("nan")
    out = interpolate(attr, fr, backend=backend)
    nan_px = torch.isnan(out).any(-1)
    assert nan_px.sum() > 0 and torch.equal(nan_px, fr.face_idx == 0)
    assert (out[fr.face_idx < 0] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_interpolate_with_no_faces_and_render_of_an_empty_batch(backend: str) -> None:
    fr = rasterize(torch.zeros(2, 0, 3, 2), torch.zeros(2, 0, 3), 5, 4, backend=backend)
    assert fr.num_faces == 0 and (fr.face_idx == -1).all()
    out = interpolate(torch.rand(2, 0, 3, 3), fr, backend=backend)
    assert out.shape == (2, 5, 4, 3) and (out == 0).all()
    out = interpolate(torch.rand(2, 7, 3), fr, torch.zeros(0, 3, dtype=torch.long), backend=backend)
    assert out.shape == (2, 5, 4, 3) and (out == 0).all()
    v, f, _ = icosphere(1)
    r = render(Meshes(v[None][:0], f), default_camera(), settings=RenderSettings(8, 6, backend=backend))
    assert r.rgb.shape == (0, 8, 6, 3) and r.alpha.shape == (0, 8, 6) and r.normals.shape == (0, 8, 6, 3)
    sm = soft_mask(torch.zeros(0, 3, 3, 2), torch.zeros(0, 8, 6, dtype=torch.long), backend=backend)
    assert sm.shape == (0, 8, 6)


def test_backends_raise_the_same_messages() -> None:
    """Every case above through both backends: the same exception type and text."""
    if len(BACKENDS) < 2:
        pytest.skip("C++ extension not built")
    _, f, _, fvi, fvz = sphere_scene()
    cases = [
        lambda be: interpolate(torch.rand(1, 4, 3, 5), rasterize(fvi, fvz, 8, 8, backend=be), backend=be),
        lambda be: soft_mask(fvi, torch.zeros(1, 4, 4, dtype=torch.long), multiplier=math.inf, backend=be),
        lambda be: soft_mask(fvi * 1e7, torch.zeros(1, 4, 4, dtype=torch.long), backend=be),
        lambda be: rasterize(fvi, fvz, 8, 8, eps=-1.0, backend=be),
    ]
    for case in cases:
        errs = []
        for be in BACKENDS:
            with pytest.raises((ValueError, TypeError)) as info:
                case(be)
            errs.append((info.type, str(info.value)))
        assert errs[0] == errs[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_outputs_stay_differentiable_when_nothing_is_covered_or_everything_is(backend: str) -> None:
    """A loss on bary or the soft mask can be backpropagated whatever the coverage (zero gradient)."""
    x = torch.tensor([[[[2.0, 2.0], [3.0, 2.0], [2.0, 3.0]]]], requires_grad=True)  # off screen
    rasterize(x, -torch.ones(1, 1, 3), 4, 4, backend=backend).bary.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    y = torch.tensor([[[[-3.0, -3.0], [3.0, -3.0], [0.0, 3.0]]]], requires_grad=True)  # covers every pixel
    fr = rasterize(y.detach(), -torch.ones(1, 1, 3), 4, 4, backend=backend)
    assert (fr.face_idx == 0).all()
    soft_mask(y, fr.face_idx, backend=backend).sum().backward()
    assert torch.equal(y.grad, torch.zeros_like(y))
