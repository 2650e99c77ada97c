"""Bad fit options give clear errors naming the option (dibr_core.fit)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dibr_core import scenes
from dibr_core.fit import FitOptions, FitView, fit
from dibr_core.mesh import icosphere


def test_fit_options_are_validated() -> None:
    with pytest.raises(ValueError, match=r"FitOptions\(\): halo_start_px must be a finite positive number, got 0"):
        FitOptions(halo_start_px=0)
    with pytest.raises(ValueError, match=r"FitOptions\(\): halo_px must be a finite positive number, got -0\.1"):
        FitOptions(halo_px=-0.1)
    with pytest.raises(ValueError, match=r"FitOptions\(\): steps must be an int >= 0, got -1 \(int\)"):
        FitOptions(steps=-1)
    with pytest.raises(ValueError, match=r"FitOptions\(\): steps must be an int >= 0, got 10\.5 \(float\)"):
        FitOptions(steps=10.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"FitOptions\(\): texture_size must be an int >= 1, got 0"):
        FitOptions(texture_size=0)
    with pytest.raises(ValueError, match=r"FitOptions\(\): lighting must be one of \('none', 'sh', 'sun'\), got 'pbr'"):
        FitOptions(lighting="pbr")
    with pytest.raises(ValueError, match=r"FitOptions\(\): lr_vertices must be a finite non-negative number, got inf"):
        FitOptions(lr_vertices=float("inf"))
    with pytest.raises(ValueError, match=r"FitOptions\(\): w_laplacian must be a finite non-negative number, got -1"):
        FitOptions(w_laplacian=-1.0)
    opts = FitOptions(steps=np.int64(3), texture_size=np.int32(16))
    assert (opts.steps, opts.texture_size) == (3, 16) and type(opts.steps) is int
    assert FitOptions().optimized() == ["vertices", "colors"]
    assert FitOptions(optimize_vertices=False, optimize_colors=False, optimize_lighting=True,
                      lighting="none").optimized() == []


def _view() -> FitView:
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1.0  # a silhouette in the middle of the frame, where the default camera sees the sphere
    return FitView(scenes.default_camera(), torch.full((16, 16, 3), 0.5), mask)


def test_fit_with_nothing_to_optimise_says_so() -> None:
    v, f, _ = icosphere(1)
    nothing = FitOptions(steps=5, optimize_vertices=False, optimize_colors=False, optimize_lighting=True,
                         lighting="none", backend="reference")
    with pytest.raises(ValueError, match=r"fit\(\): nothing to optimise: options\.optimize_vertices, optimize_colors "
                                         r"and optimize_texture are off, and optimize_lighting=True with "
                                         r"lighting='none'"):
        fit(v.float(), f, [_view()], nothing)
    # steps=0 evaluates the start without optimising anything.
    res = fit(v.float(), f, [_view()], FitOptions(steps=0, optimize_vertices=False, optimize_colors=False,
                                                  backend="reference"))
    assert res.steps == 0 and len(res.views) == 1 and torch.equal(res.vertices, v.float())
