"""Colours of unseen vertices (dibr_core.color_fill and FitOptions.fill_unseen_colors): which
vertices the views see, the harmonic fill from the seen ones, and the fit's use of both."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from dibr_core import scenes
from dibr_core.camera import Camera, look_at
from dibr_core.color_fill import face_view_cosines, harmonic_fill, vertex_visibility
from dibr_core.fit import FitOptions, FitView, fit
from dibr_core.mesh import icosphere
from dibr_core.render import Meshes, RenderSettings, render


def tube(rings: int, around: int) -> tuple:
    """A closed-around open-ended tube: ``rings`` rings of ``around`` vertices along x (ring i at
    x = i), every quad split along the same diagonal. (vertices (rings*around, 3), faces)."""
    i = torch.arange(rings)[:, None]
    j = torch.arange(around)[None, :]
    ang = 2 * math.pi * j / around
    v = torch.stack([i.expand(rings, around).double(), torch.cos(ang).expand(rings, around),
                     torch.sin(ang).expand(rings, around)], -1).reshape(-1, 3)
    a = (i[:-1] * around + j).reshape(-1)
    b = (i[:-1] * around + (j + 1) % around).reshape(-1)
    c = a + around
    d = b + around
    f = torch.cat([torch.stack([a, b, d], -1), torch.stack([a, d, c], -1)])
    return v, f


def test_harmonic_fill_is_linear_between_two_known_rings() -> None:
    """On a tube whose every inner vertex has the same six-neighbour pattern, the harmonic
    interpolation between the end rings is linear along the tube (exact)."""
    rings, around = 7, 10
    v, f = tube(rings, around)
    ring = v[:, 0]
    known = (ring == 0) | (ring == rings - 1)
    values = torch.full((v.shape[0], 3), 0.5, dtype=torch.float64)
    end = ring == rings - 1
    values[ring == 0] = torch.tensor([0.1, 0.9, 0.3], dtype=torch.float64)
    values[end] = torch.tensor([0.7, 0.1, 0.3], dtype=torch.float64)
    out = harmonic_fill(values, f, known)
    t = (ring / (rings - 1))[:, None]
    expected = (1 - t) * torch.tensor([0.1, 0.9, 0.3], dtype=torch.float64) + t * torch.tensor([0.7, 0.1, 0.3],
                                                                                                   dtype=torch.float64)
    assert torch.allclose(out, expected, atol=1e-9, rtol=0)
    assert torch.equal(out[known], values[known])   # boundary values unchanged, bit for bit
    assert torch.equal(values[~known], torch.full_like(values[~known], 0.5))   # the input is not modified


def test_harmonic_fill_of_one_vertex_is_the_mean_of_its_neighbours_and_keeps_unreachable_parts() -> None:
    v1, f1, _ = icosphere(1, dtype=torch.float64)
    n1 = v1.shape[0]
    # a second, separate sphere whose vertices are all unknown: no boundary, values kept
    f = torch.cat([f1, f1 + n1])
    values = torch.rand(2 * n1, 2, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    known = torch.ones(2 * n1, dtype=torch.bool)
    known[5] = False
    known[n1:] = False
    out = harmonic_fill(values, f, known)
    nbrs = torch.unique(f1[(f1 == 5).any(1)].reshape(-1))
    nbrs = nbrs[nbrs != 5]
    assert torch.allclose(out[5], values[nbrs].mean(0), atol=1e-6)
    assert torch.equal(out[n1:], values[n1:])
    assert torch.equal(out[known], values[known])
    assert out.dtype == values.dtype
    # nothing known, or everything known: unchanged
    assert torch.equal(harmonic_fill(values, f, torch.zeros_like(known)), values)
    assert torch.equal(harmonic_fill(values, f, torch.ones_like(known)), values)


def test_harmonic_fill_checks_its_arguments() -> None:
    v, f, _ = icosphere(1)
    V = v.shape[0]
    with pytest.raises(ValueError, match=r"harmonic_fill\(\): known"):
        harmonic_fill(torch.zeros(V, 3), f, torch.zeros(V + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"harmonic_fill\(\): faces"):
        harmonic_fill(torch.zeros(V, 3), f + V, torch.zeros(V, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"harmonic_fill\(\): values"):
        harmonic_fill(torch.full((V, 3), float("nan")), f, torch.zeros(V, dtype=torch.bool))


def test_vertex_visibility_gives_each_corner_a_third_of_its_pixels() -> None:
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    face_idx = torch.tensor([[[0, 0, 1], [-1, 1, 1]], [[1, -1, -1], [-1, -1, -1]]])   # (2 views, 2, 3)
    weights = torch.tensor([[[1.0, 0.5, 1.0], [9.0, 1.0, 0.25]], [[3.0, 9.0, 9.0], [9.0, 9.0, 9.0]]])
    w = vertex_visibility(faces, 5, face_idx, weights)
    f0, f1 = 1.5, 1.0 + 1.0 + 0.25 + 3.0
    assert torch.allclose(w, torch.tensor([f0 / 3, (f0 + f1) / 3, (f0 + f1) / 3, f1 / 3, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"vertex_visibility\(\): face_idx holds indices >= F=2"):
        vertex_visibility(faces, 5, face_idx + 2, weights)


def test_face_view_cosines_are_one_facing_the_camera_and_zero_on_back_faces() -> None:
    cam = Camera.perspective(look_at(torch.tensor([[0.0, 0.0, 5.0]])), math.radians(40))
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    f = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 3, 1]])   # facing +z, facing -z, edge-on (normal -y)
    c = face_view_cosines(v, f, cam)
    centroid = v[f[0]].mean(0)
    expected0 = float((5.0 - centroid[2]) / (torch.tensor([0.0, 0.0, 5.0]) - centroid).norm())
    assert c[0] == pytest.approx(expected0, abs=1e-6) and c[1] == 0 and c[2] == 0


# ---------------------------------------------------------------------------------------------
# In the fit
# ---------------------------------------------------------------------------------------------
def _one_view_colour_fit(**kw: object):  # type: ignore[no-untyped-def]
    """A sphere seen by one camera: the reference is the same sphere, red in front."""
    v, f, _ = icosphere(2, 0.8)
    cam = scenes.default_camera(azimuth_deg=0.0, elevation_deg=0.0)
    cols = torch.tensor([0.8, 0.2, 0.1]).expand(v.shape[0], 3).contiguous()
    out = render(Meshes(v[None], f), cam, colors=cols[None], settings=RenderSettings(32, 32))
    view = FitView(cam, out.rgb[0], out.mask[0], "front")
    opts = replace(FitOptions(steps=20, optimize_vertices=False), **kw)  # type: ignore[arg-type]
    return v, f, cam, fit(v, f, [view], opts)


def test_fit_fills_the_unseen_side_from_the_seen_colours_and_changes_nothing_else() -> None:
    v, f, cam, off = _one_view_colour_fit(fill_unseen_colors=False)
    _, _, _, on = _one_view_colour_fit()
    assert FitOptions().fill_unseen_colors is True
    assert off.filled_colors == 0 and on.filled_colors > 0
    back = (v - cam.center[0]).norm(dim=-1) > 3.2 + 0.3   # vertices on the far side of the sphere
    assert back.sum() > 10
    # Without the fill the far side keeps the start grey (no view gives it a gradient) ...
    assert torch.allclose(off.colors[back], torch.full_like(off.colors[back], 0.5), atol=1e-6)
    # ... with it, it continues the seen colours (turning red from the grey start), within their range.
    front = (v - cam.center[0]).norm(dim=-1) < 3.2 - 0.3
    seen = on.colors[front]
    assert float(seen[:, 0].min()) > 0.65 and float(seen[:, 1:].max()) < 0.35
    lo, hi = seen.min(0).values, seen.max(0).values
    assert bool((on.colors[back] >= lo - 1e-6).all() and (on.colors[back] <= hi + 1e-6).all())
    changed = (on.colors != off.colors).any(-1)
    assert int(changed.sum()) == on.filled_colors
    assert not bool(changed[front].any())   # the seen front: as fitted, bit for bit
    # Positions, losses and the other outputs are the fit's own.
    assert torch.equal(on.vertices, off.vertices) and on.losses == off.losses
    assert on.texture is None and on.faces is not None and torch.equal(on.faces, off.faces)
    assert on.views[0].silhouette_iou == off.views[0].silhouette_iou


def test_fit_does_not_fill_colours_it_does_not_optimise() -> None:
    _, _, _, res = _one_view_colour_fit(optimize_colors=False, optimize_lighting=True, lighting="sh")
    assert res.filled_colors == 0


def test_fill_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"FitOptions\(\): fill_min_pixels must be a finite non-negative number, got -1"):
        FitOptions(fill_min_pixels=-1.0)
    with pytest.raises(ValueError, match=r"FitOptions\(\): fill_min_pixels must be a finite non-negative number, got nan"):
        FitOptions(fill_min_pixels=float("nan"))
    with pytest.raises(ValueError, match=r"FitOptions\(\): fill_unseen_colors must be a bool, got 'yes'"):
        FitOptions(fill_unseen_colors="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"FitOptions\(\): fill_unseen_colors must be a bool, got 2 \(int\)"):
        FitOptions(fill_unseen_colors=2)  # type: ignore[arg-type]
    assert FitOptions(fill_min_pixels=0).fill_min_pixels == 0
    flag = FitOptions(fill_unseen_colors=np.bool_(False)).fill_unseen_colors   # type: ignore[arg-type]
    assert flag is False


def test_facing_weighted_colour_loss_is_an_option() -> None:
    """Weighting the colour loss by the facing cosine changes the fitted colours (the grazing
    pixels at the sphere's rim count less), and is off by default."""
    assert FitOptions().color_facing_power == 0.0
    _, _, _, plain = _one_view_colour_fit(fill_unseen_colors=False)
    _, _, _, weighted = _one_view_colour_fit(fill_unseen_colors=False, color_facing_power=1.0)
    assert not torch.equal(plain.colors, weighted.colors)
    assert plain.losses != weighted.losses
    with pytest.raises(ValueError, match=r"FitOptions\(\): color_facing_power must be a finite non-negative number"):
        FitOptions(color_facing_power=-1.0)
