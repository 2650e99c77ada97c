"""Tests for dibr_core.kaolin: Kaolin-compatible signatures and a tutorial-style pipeline."""
from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch

from dibr_core import kaolin as dk
from dibr_core import scenes
from dibr_core.camera import Camera, look_at
from dibr_core.render import Meshes, RenderSettings, render
from helpers import assert_close, vertex_colors

_EMPTY = inspect.Parameter.empty

# Kaolin's signatures, written out literally: (name, default) in order (_EMPTY = no default).
KAOLIN_SIGNATURES: Dict[str, List[Tuple[str, Any]]] = {
    "rasterize": [("height", _EMPTY), ("width", _EMPTY), ("face_vertices_z", _EMPTY), ("face_vertices_image", _EMPTY),
                  ("face_features", _EMPTY), ("valid_faces", None), ("multiplier", None), ("eps", None),
                  ("backend", "cuda")],
    "dibr_soft_mask": [("face_vertices_image", _EMPTY), ("selected_face_idx", _EMPTY), ("sigmainv", 7000),
                       ("boxlen", 0.02), ("knum", 30), ("multiplier", 1000.0)],
    "dibr_rasterization": [("height", _EMPTY), ("width", _EMPTY), ("face_vertices_z", _EMPTY),
                           ("face_vertices_image", _EMPTY), ("face_features", _EMPTY), ("face_normals_z", _EMPTY),
                           ("sigmainv", 7000), ("boxlen", 0.02), ("knum", 30), ("multiplier", None), ("eps", None),
                           ("rast_backend", "cuda")],
    "texture_mapping": [("texture_coordinates", _EMPTY), ("texture_maps", _EMPTY), ("mode", "nearest")],
    "prepare_vertices": [("vertices", _EMPTY), ("faces", _EMPTY), ("camera_proj", _EMPTY), ("camera_rot", None),
                         ("camera_trans", None), ("camera_transform", None)],
    "spherical_harmonic_lighting": [("imnormal", _EMPTY), ("lights", _EMPTY)],
    "generate_perspective_projection": [("fovyangle", _EMPTY), ("ratio", 1.0), ("dtype", torch.float)],
    "mask_iou": [("lhs_mask", _EMPTY), ("rhs_mask", _EMPTY)],
}


@pytest.mark.parametrize("name", sorted(KAOLIN_SIGNATURES))
def test_signature_matches_kaolin(name: str) -> None:
    fn = getattr(dk, name)
    params = list(inspect.signature(fn).parameters.values())
    got = [(p.name, p.default) for p in params]
    assert got == KAOLIN_SIGNATURES[name], f"{name}{inspect.signature(fn)}"
    for p, (_, default) in zip(params, KAOLIN_SIGNATURES[name]):
        assert p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD, f"{name}: {p.name} must be positional-or-keyword"
        if default is not _EMPTY:
            assert type(p.default) is type(default), f"{name}: default of {p.name} has type {type(p.default)}"
    assert name in dk.__all__


# ---------------------------------------------------------------------------------------------
# a tutorial-style scene
# ---------------------------------------------------------------------------------------------
FOV = math.radians(40.0)
EYE = [0.9, 0.8, 3.0]


def _kaolin_camera(batch: int = 1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kaolin's camera: projection vector (3, 1), rotation (B, 3, 3) whose rows are the camera
    axes, and the camera position (B, 3)."""
    view = look_at(EYE)
    rot = view[:, :3, :3].expand(batch, 3, 3)
    trans = torch.tensor([EYE]).expand(batch, 3)
    return dk.generate_perspective_projection(FOV), rot, trans


def test_generate_perspective_projection_values() -> None:
    p = dk.generate_perspective_projection(math.radians(90.0), ratio=2.0)
    assert p.shape == (3, 1) and p.dtype == torch.float32
    assert_close(p[:, 0], torch.tensor([0.5, 1.0, -1.0]), atol=1e-6, rtol=0)
    assert dk.generate_perspective_projection(1.0, dtype=torch.float64).dtype == torch.float64


def test_prepare_vertices_transform_equals_rot_trans() -> None:
    v, f, _ = scenes.blob(2)
    verts = torch.stack([v, v * 0.9])
    proj, _, _ = _kaolin_camera()
    eyes = torch.tensor([EYE, [-2.0, 1.0, 2.0]])
    rot = look_at(eyes)[:, :3, :3]
    a = dk.prepare_vertices(verts, f, proj, camera_rot=rot, camera_trans=eyes)
    # [p, 1] @ T = R (p - c)  <=>  T = [R^T; -(R c)^T]
    T = torch.cat([rot.transpose(1, 2), -(rot @ eyes[:, :, None]).transpose(1, 2)], dim=1)
    assert T.shape == (2, 4, 3)
    b = dk.prepare_vertices(verts, f, proj, camera_transform=T)
    for name, x, y in zip(("face_vertices_camera", "face_vertices_image", "face_normals"), a, b):
        assert_close(x, y, atol=1e-5, rtol=1e-5, msg=name)
    fvc, fvi, fn = a
    assert fvc.shape == (2, f.shape[0], 3, 3) and fvi.shape == (2, f.shape[0], 3, 2) and fn.shape == (2, f.shape[0], 3)
    assert_close(fn.norm(dim=-1), torch.ones(2, f.shape[0]), atol=1e-5, rtol=0, msg="unit normals")
    # The image coordinates are Kaolin's perspective division x_img = P_x x / -z.
    assert_close(fvi[..., 0], proj[0, 0] * fvc[..., 0] / -fvc[..., 2], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"prepare_vertices\(\): camera_rot and camera_trans must be None"):
        dk.prepare_vertices(verts, f, proj, camera_rot=rot, camera_trans=eyes, camera_transform=T)
    with pytest.raises(ValueError, match=r"prepare_vertices\(\): give camera_transform, or both"):
        dk.prepare_vertices(verts, f, proj, camera_rot=rot)


def test_rasterize_list_features_return_a_tuple() -> None:
    v, f, uv = scenes.blob(2)
    proj, rot, trans = _kaolin_camera()
    fvc, fvi, fn = dk.prepare_vertices(v[None], f, proj, camera_rot=rot, camera_trans=trans)
    feats_a = uv[None]
    feats_b = dk.index_vertices_by_faces(vertex_colors(v)[None], f)
    out_list, idx_list = dk.rasterize(32, 32, fvc[..., -1], fvi, [feats_a, feats_b], fn[..., -1] >= 0)
    assert isinstance(out_list, tuple) and len(out_list) == 2
    assert out_list[0].shape == (1, 32, 32, 2) and out_list[1].shape == (1, 32, 32, 3)
    out_one, idx_one = dk.rasterize(32, 32, fvc[..., -1], fvi, feats_b, fn[..., -1] >= 0)
    assert isinstance(out_one, torch.Tensor) and out_one.shape == (1, 32, 32, 3)
    assert torch.equal(idx_list, idx_one) and idx_one.dtype == torch.int64
    assert_close(out_list[1], out_one, atol=0, rtol=0)
    assert int((idx_one >= 0).sum()) > 100 and int(idx_one.min()) == -1
    # dibr_rasterization with a tuple too, plus the soft mask.
    feats, soft, idx = dk.dibr_rasterization(32, 32, fvc[..., -1], fvi, (feats_a, feats_b), fn[..., -1])
    assert isinstance(feats, tuple) and len(feats) == 2
    assert torch.equal(idx, idx_one)
    assert bool((soft[idx >= 0] == 1).all())


@pytest.mark.parametrize("backend", ["cuda", "cpu", "reference"])
def test_tutorial_pipeline_gradients(backend: str) -> None:
    """Kaolin's DIB-R tutorial recipe, on the CPU: prepare_vertices -> dibr_rasterization with
    [uv, ones] -> texture_mapping (bilinear) -> mask_iou + image L1 -> backward."""
    if backend == "cpu" and not __import__("dibr_core").backend_info().cpu_kernels:
        pytest.skip("the C++ extension is not available")
    torch.manual_seed(0)
    v, f, uv = scenes.blob(2)
    proj, rot, trans = _kaolin_camera()
    # Target: the blob, coloured by the checker texture.
    tex_target = scenes.checker_texture(32)
    with torch.no_grad():
        fvc, fvi, fn = dk.prepare_vertices(v[None], f, proj, camera_rot=rot, camera_trans=trans)
        (t_uv, t_mask), _, _ = dk.dibr_rasterization(32, 32, fvc[..., -1], fvi,
                                                     [uv[None], torch.ones(1, f.shape[0], 3, 1)], fn[..., -1],
                                                     rast_backend=backend)
        t_img = dk.texture_mapping(t_uv, tex_target, mode="bilinear") * t_mask
        t_sil = t_mask[..., 0]
    # Prediction: a shrunken sphere-like start with a grey texture.
    offsets = torch.zeros_like(v, requires_grad=True)
    texture = torch.full((1, 3, 32, 32), 0.5, requires_grad=True)
    verts = (v * 0.85 + offsets)[None]
    fvc, fvi, fn = dk.prepare_vertices(verts, f, proj, camera_rot=rot, camera_trans=trans)
    (p_uv, p_mask), soft, face_idx = dk.dibr_rasterization(
        32, 32, fvc[..., -1], fvi, [uv[None], torch.ones(1, f.shape[0], 3, 1)], fn[..., -1], rast_backend=backend)
    img = dk.texture_mapping(p_uv, texture, mode="bilinear") * p_mask
    assert img.shape == (1, 32, 32, 3) and soft.shape == (1, 32, 32) and face_idx.shape == (1, 32, 32)
    loss = 0.1 * (img - t_img).abs().mean() + dk.mask_iou(soft, t_sil)
    assert 0.0 < float(loss.detach()) < 1.0
    loss.backward()
    for name, g in (("offsets", offsets.grad), ("texture", texture.grad)):
        assert g is not None, name
        assert bool(torch.isfinite(g).all()), f"{name} gradient is not finite"
        assert float(g.abs().max()) > 0, f"{name} gradient is zero"
    # The silhouette gradient pushes the too-small mesh outward: moving along it increases IoU.
    with torch.no_grad():
        g_off = offsets.grad
        assert g_off is not None
        step = -0.02 * g_off / g_off.abs().max()
        fvc2, fvi2, fn2 = dk.prepare_vertices((v * 0.85 + step)[None], f, proj, camera_rot=rot, camera_trans=trans)
        _, soft2, _ = dk.dibr_rasterization(32, 32, fvc2[..., -1], fvi2, [uv[None]], fn2[..., -1],
                                            rast_backend=backend)
        assert float(dk.mask_iou(soft2, t_sil)) < float(dk.mask_iou(soft.detach(), t_sil))


@pytest.mark.float_sensitive
def test_kaolin_api_agrees_with_render() -> None:
    """The same scene through dibr_core.kaolin and through render(): with the same culling the
    face index, soft mask and interpolated colours are equal."""
    v, f, _ = scenes.blob(3)
    cols = vertex_colors(v)[None]
    proj, rot, trans = _kaolin_camera()
    fvc, fvi, fn = dk.prepare_vertices(v[None], f, proj, camera_rot=rot, camera_trans=trans)
    cam = Camera.perspective(look_at(EYE), FOV)
    H = W = 48

    # No culling on either side: Kaolin's rasterize draws both windings when valid_faces is None.
    out = render(Meshes(v[None], f), cam, colors=cols,
                 settings=RenderSettings(height=H, width=W, backface_culling=False))
    feats, idx = dk.rasterize(H, W, fvc[..., -1], fvi, dk.index_vertices_by_faces(cols, f))
    assert isinstance(feats, torch.Tensor)
    soft = dk.dibr_soft_mask(fvi, idx)
    assert int((idx >= 0).sum()) > 300
    assert torch.equal(idx, out.face_idx)
    # The two paths compute the NDC corners with different formulas (R (p - c) vs R p + t), both
    # elementwise (dibr_core.camera.transform_points), so the face index is the same on every
    # CPU; the corners differ by a few ulps, which sigmainv turns into < 1e-4 of soft mask.
    assert_close(soft, out.alpha, atol=1e-4, rtol=0, msg="soft mask")
    assert_close(feats, out.rgb, atol=1e-5, rtol=0, msg="colours")

    # render()'s culling (counter-clockwise in NDC) passed to Kaolin as valid_faces.
    e1, e2 = fvi[:, :, 1] - fvi[:, :, 0], fvi[:, :, 2] - fvi[:, :, 0]
    ccw = (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) > 0
    culled = render(Meshes(v[None], f), cam, colors=cols, settings=RenderSettings(height=H, width=W))
    _, idx_c = dk.rasterize(H, W, fvc[..., -1], fvi, dk.index_vertices_by_faces(cols, f), valid_faces=ccw)
    assert torch.equal(idx_c, culled.face_idx)
    # For a closed mesh culling back faces does not change which face is nearest.
    assert torch.equal(idx_c, idx)
    # Kaolin's own culling (camera-space normal z >= 0) agrees on nearly all pixels.
    _, _, idx_k = dk.dibr_rasterization(H, W, fvc[..., -1], fvi, dk.index_vertices_by_faces(cols, f), fn[..., -1])
    assert float((idx_k == idx).to(torch.float32).mean()) > 0.99


def test_texture_mapping_and_sh_lighting_values() -> None:
    # texture_mapping: v = 0 is the bottom row of the texture; nearest by default.
    tex = torch.arange(12, dtype=torch.float32).view(1, 1, 3, 4)
    uv = torch.tensor([[[[0.1, 0.9], [0.9, 0.1]]]])  # (1, 1, 2, 2): top-left texel, bottom-right texel
    out = dk.texture_mapping(uv, tex)
    assert out.shape == (1, 1, 2, 1)
    assert out[0, 0, :, 0].tolist() == [0.0, 11.0]
    mid = dk.texture_mapping(torch.tensor([[[[0.25, 0.5]]]]), tex, mode="bilinear")
    assert_close(mid[0, 0, 0, 0], torch.tensor(4.5), atol=1e-5, rtol=0)
    # spherical_harmonic_lighting: a constant light gives the band-0 constant everywhere.
    n = torch.nn.functional.normalize(torch.randn(1, 4, 5, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    lights = torch.zeros(1, 9)
    lights[0, 0] = 2.0
    assert_close(dk.spherical_harmonic_lighting(n, lights), torch.full((1, 4, 5), 2 * 0.28209479177), atol=1e-6,
                 rtol=0)
    # Band 1 is ordered (x, z, y) in Kaolin's legacy function.
    lights = torch.zeros(1, 9)
    lights[0, 2] = 1.0
    assert_close(dk.spherical_harmonic_lighting(n, lights), 0.4886025119 * n[..., 2], atol=1e-6, rtol=0)


def test_nvdiffrast_backend_is_rejected() -> None:
    z = torch.zeros(1, 1, 3)
    fvi = torch.tensor([[[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]])
    with pytest.raises(ValueError, match=r"rasterize\(\): backend 'nvdiffrast' is not available"):
        dk.rasterize(4, 4, z, fvi, torch.zeros(1, 1, 3, 1), backend="nvdiffrast")
    # Kaolin's default 'cuda' runs on CPU tensors here (the best backend for the device).
    feats, idx = dk.rasterize(4, 4, z - 1.0, fvi, torch.ones(1, 1, 3, 1))
    assert int((idx == 0).sum()) > 0


# ---------------------------------------------------------------------------------------------
# texture_mapping: Kaolin's semantics (clamped UVs, border padding, dense or sparse coordinates)
# ---------------------------------------------------------------------------------------------
def _texture_lookup_np(uv: np.ndarray, tex: np.ndarray, mode: str) -> np.ndarray:
    """Independent statement of Kaolin's texture_mapping for one texture: uv (N, 2), tex (C, h, w)
    -> (N, C). UVs clamp to [0, 1], v = 0 is the bottom row, texel i's centre is at (i + 0.5) / size,
    positions beyond the outer centres take the edge texel."""
    C, h, w = tex.shape
    u = np.clip(uv[:, 0].astype(np.float64), 0.0, 1.0)
    v = np.clip(uv[:, 1].astype(np.float64), 0.0, 1.0)
    x = np.clip(u * w - 0.5, 0.0, w - 1.0)
    y = np.clip((1.0 - v) * h - 0.5, 0.0, h - 1.0)
    if mode == "nearest":
        return tex[:, np.rint(y).astype(int), np.rint(x).astype(int)].T
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    return (tex[:, y0, x0] * (1 - fx) * (1 - fy) + tex[:, y0, x1] * fx * (1 - fy)
            + tex[:, y1, x0] * (1 - fx) * fy + tex[:, y1, x1] * fx * fy).T


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_texture_mapping_matches_kaolins_semantics(mode: str) -> None:
    g = torch.Generator().manual_seed(2)
    tex = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 6, 4, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2   # some outside [0, 1]
    out = dk.texture_mapping(uv, tex, mode=mode)
    assert out.shape == (2, 6, 4, 3)
    for b in range(2):
        expected = _texture_lookup_np(uv[b].reshape(-1, 2).numpy(), tex[b].numpy(), mode)
        np.testing.assert_allclose(out[b].reshape(-1, 3).numpy(), expected, atol=1e-12, rtol=0)
    # Sparse coordinates (B, N, 2), as Kaolin accepts them: the same values, shape (B, N, C).
    sparse = dk.texture_mapping(uv.reshape(2, 24, 2), tex, mode=mode)
    assert sparse.shape == (2, 24, 3)
    assert torch.equal(sparse, out.reshape(2, 24, 3))


def test_texture_mapping_border_and_clamp() -> None:
    tex = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]).expand(1, 1, 2, 4)          # columns 1..4, 2 rows
    uv = torch.tensor([[[0.0, 0.5], [1.0, 0.5], [-0.3, 0.5], [1.7, 2.0], [0.125, 0.0], [0.25, 0.5]]])
    out = dk.texture_mapping(uv, tex, mode="bilinear")[0, :, 0]
    # u = 0 and u = 1 are the outer texels themselves (border padding), not blends with 0;
    # outside UVs clamp to the edge; u = 0.125 is texel 0's centre; 0.25 is halfway to texel 1.
    assert out.tolist() == [1.0, 4.0, 1.0, 4.0, 1.0, 1.5]
    near = dk.texture_mapping(uv, tex)[0, :, 0]
    assert near.tolist() == [1.0, 4.0, 1.0, 4.0, 1.0, 1.0]


def test_texture_mapping_rejects_bad_shapes() -> None:
    tex = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"texture_mapping\(\): texture_coordinates must have shape \(2, H, W, 2\) "
                                         r"or \(2, N, 2\) to match texture_maps \(2, 3, 4, 4\), got \(2, 5, 3\)"):
        dk.texture_mapping(torch.rand(2, 5, 3), tex)
    with pytest.raises(ValueError, match=r"got \(1, 5, 2\)"):
        dk.texture_mapping(torch.rand(1, 5, 2), tex)
    with pytest.raises(ValueError, match=r"texture_mapping\(\): mode must be 'nearest' or 'bilinear'"):
        dk.texture_mapping(torch.rand(2, 5, 2), tex, mode="bicubic")
    with pytest.raises(ValueError, match=r"texture_mapping\(\): texture_maps must have shape \(B, C, h, w\)"):
        dk.texture_mapping(torch.rand(2, 5, 2), torch.rand(2, 4, 4))


def _kaolin_two_quads(height: int, width: int) -> Dict[str, torch.Tensor]:
    """Kaolin's rasterization test scene (tests/python/kaolin/render/mesh/test_rasterization.py,
    class TestDIBR): two quads seen from z = 4, UVs 0.001..0.999, an 8 x 8 'jet' texture whose
    rows are all the same (colour depends on u only)."""
    verts = torch.tensor([[[-1, -1, -1], [1, -1, 0], [1, 1, -1], [-1, 1, 0]],
                          [[-1, -1, 0], [1, -1, -1], [1, 1, 0], [-1, 1, -1]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    e = 0.001
    uvs = torch.tensor([[[e, e], [1 - e, e], [1 - e, 1 - e], [e, 1 - e]]], dtype=torch.float64).repeat(2, 1, 1)
    jet = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 1.0, 1.0], [0.5, 1.0, 0.5],
                        [1.0, 1.0, 0.0], [1.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    tex = jet.T[None, :, None, :].expand(2, 3, 8, 8).contiguous()
    proj = torch.tensor([[2.5 / (width / height)], [2.5], [-1.0]], dtype=torch.float64)
    rot = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
    trans = torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64).expand(2, 3)
    return dict(verts=verts, faces=faces, uvs=uvs, tex=tex, proj=proj, rot=rot, trans=trans)


def test_kaolin_two_quad_bilinear_texture() -> None:
    """Kaolin's test_render_texture recipe: rasterize [ones, uv], bilinear texture_mapping, times
    the mask. Each pixel must equal the texture looked up at the UV interpolated linearly in screen
    space from the corners (computed here independently, in numpy); along the quads' edges
    (u or v = 0.001) that is the edge texel itself: with zero padding the colour there was
    halved, or quartered at the corners (a 0.74 difference, the reported mismatch)."""
    H, W = 64, 128
    s = _kaolin_two_quads(H, W)
    fvc, fvi, fn = dk.prepare_vertices(s["verts"], s["faces"], s["proj"], camera_rot=s["rot"],
                                       camera_trans=s["trans"])
    face_uvs = dk.index_vertices_by_faces(s["uvs"], s["faces"])
    (texmask, texcoord), soft, face_idx = dk.dibr_rasterization(
        H, W, fvc[..., 2], fvi, [torch.ones(*face_uvs.shape[:-1], 1, dtype=torch.float64), face_uvs], fn[..., 2])
    image = dk.texture_mapping(texcoord, s["tex"], mode="bilinear") * texmask
    assert image.shape == (2, H, W, 3)
    # Pixel centres in NDC (row 0 at the top), screen-linear barycentrics of the covering face.
    ys, xs = torch.meshgrid((H - 2 * torch.arange(H, dtype=torch.float64) - 1) / H,
                            (2 * torch.arange(W, dtype=torch.float64) + 1 - W) / W, indexing="ij")
    for b in range(2):
        covered = face_idx[b] >= 0
        assert int(covered.sum()) > 0.1 * H * W
        f = face_idx[b][covered]
        p = fvi[b][f]                                                   # (P, 3, 2)
        px, py = xs[covered], ys[covered]
        d = lambda i, j: (p[:, i, 0] - px) * (p[:, j, 1] - py) - (p[:, i, 1] - py) * (p[:, j, 0] - px)  # noqa: E731
        w = torch.stack([d(1, 2), d(2, 0), d(0, 1)], dim=-1)
        w = w / w.sum(-1, keepdim=True)
        assert bool((w > -1e-9).all()), "the covering face must contain the pixel centre"
        uv = (w[..., None] * face_uvs[b][f]).sum(1).numpy()
        expected = _texture_lookup_np(uv, s["tex"][b].numpy(), "bilinear")
        np.testing.assert_allclose(image[b][covered].numpy(), expected, atol=1e-9, rtol=0)
        assert bool((image[b][~covered] == 0).all())
    # The pixels at the quads' u = 0.001 edge are the first jet colour (blue) itself.
    left = (texcoord[..., 0] < 1 / 16) & (face_idx >= 0)
    assert int(left.sum()) > 20
    blue = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert_close(image[left], blue.expand(int(left.sum()), 3), atol=1e-9, rtol=0)
