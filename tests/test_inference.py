"""Image -> mesh inference with the shipped predictor (dibr_core.inference)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dibr_core.inference import (FRAME_EXTENT, FRAME_OFFSET, PREDICTOR_WEIGHTS, PROTOCOL_AZIMUTHS, input_view_iou,
                                 load_shipped_predictor, predict_mesh, prepare_image)
from dibr_core.models import Predictor
from dibr_core.models.generator import Generator

SHIPPED = PREDICTOR_WEIGHTS.is_file()


def _blob(h: int = 120, w: int = 90) -> np.ndarray:
    """RGBA float image with an opaque 30 x 20 rectangle (rows 10..40, cols 50..70) in red."""
    img = np.zeros((h, w, 4), dtype=np.float32)
    img[10:40, 50:70] = [1.0, 0.0, 0.0, 1.0]
    img[..., :3][img[..., 3] == 0] = 0.3          # background colour must not leak in
    return img


def _box_stats(alpha: torch.Tensor) -> tuple:
    """Diagonal of the mask's bounding box and its centre's (row, column) offset from the image
    centre, as fractions of the image side."""
    S = alpha.shape[0]
    rows = torch.nonzero(alpha.any(dim=1)).flatten()
    cols = torch.nonzero(alpha.any(dim=0)).flatten()
    h, w = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    cy, cx = 0.5 * float(rows[0] + rows[-1] + 1), 0.5 * float(cols[0] + cols[-1] + 1)
    return float(np.hypot(h, w)) / S, (cy - S / 2) / S, (cx - S / 2) / S


def test_prepare_image_frames_like_the_training_data() -> None:
    # A small object high up and to the right of a 120 x 90 picture: zoomed and shifted just
    # onto the edges of the training renders' ranges (smallest diagonal, highest and rightmost
    # centre).
    x = prepare_image(_blob())
    assert x.shape == (4, 64, 64) and x.dtype == torch.float32
    a = x[3]
    assert set(torch.unique(a).tolist()) <= {0.0, 1.0}
    diag, dy, dx = _box_stats(a > 0)
    assert abs(diag - FRAME_EXTENT[0]) <= 1.5 / 64
    assert abs(dy - FRAME_OFFSET[0][0]) <= 1.0 / 64
    assert abs(dx - FRAME_OFFSET[1][1]) <= 1.0 / 64
    rgb = x[:3]
    assert torch.all(rgb[:, a == 0] == 0)                        # zero outside the mask
    torch.testing.assert_close(rgb[:, a == 1].mean(dim=1), torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)
    # An object filling a picture (but for its top row: an opaque picture is refused) is shrunk
    # to the largest training size.
    full = np.ones((50, 80, 4), dtype=np.float32)
    full[0, :, 3] = 0.0
    assert abs(_box_stats(prepare_image(full)[3] > 0)[0] - FRAME_EXTENT[1]) <= 1.5 / 64


def test_prepare_image_passes_training_framed_images_unchanged() -> None:
    """A picture whose object already lies within the training renders' sizes and positions is
    only resampled to the model's size: exactly the identity at 64 x 64, and the same framing
    from a 2x larger picture or from the same picture padded to another aspect."""
    img = np.zeros((64, 64, 4), dtype=np.float32)
    img[14:50, 18:44] = [0.2, 0.7, 0.4, 1.0]                     # diagonal 0.69, centre offset (0, -0.016)
    img[30:40, 20:30, :3] = [0.9, 0.1, 0.1]
    x = prepare_image(img)
    assert torch.equal(x, torch.from_numpy(img).permute(2, 0, 1))
    big = prepare_image(np.repeat(np.repeat(img, 2, axis=0), 2, axis=1))
    assert torch.equal(big[3], x[3])                             # colours blur a little at their edges
    assert float((big[:3] - x[:3]).abs().mean()) < 0.01
    wide = np.pad(img, ((0, 0), (16, 16), (0, 0)))               # 64 x 96: the window is the 96 x 96 square
    assert torch.equal(prepare_image(wide), prepare_image(np.pad(img, ((16, 16), (16, 16), (0, 0)))))


@pytest.mark.slow
def test_prepare_image_on_data_set_renders_is_the_identity_or_the_nearest_in_range() -> None:
    """Data-set renders (fresh test shapes, every view) come through unchanged, except the few
    whose object lies outside the training ranges, which land on the ranges' edges."""
    from dibr_core.data.dataset import make_item

    torch.set_num_threads(1)
    same = total = 0
    for cat, index in (("airplane", 0), ("watercraft", 1), ("car", 2), ("lamp", 3), ("table", 4)):
        images = make_item(cat, "test", index, n_views=24, textured=True)["images"]
        for im in images:
            x = prepare_image(im)
            total += 1
            if torch.equal(x, torch.from_numpy(im).float().div(255.0).permute(2, 0, 1)):
                same += 1
                continue
            diag, dy, dx = _box_stats(x[3] > 0)
            assert FRAME_EXTENT[0] - 2 / 64 <= diag <= FRAME_EXTENT[1] + 2 / 64
            assert FRAME_OFFSET[0][0] - 1.5 / 64 <= dy <= FRAME_OFFSET[0][1] + 1.5 / 64
            assert FRAME_OFFSET[1][0] - 1.5 / 64 <= dx <= FRAME_OFFSET[1][1] + 1.5 / 64
    assert same >= 0.95 * total, (same, total)


def test_prepare_image_inputs() -> None:
    img = _blob()
    u8 = (img * 255).round().astype(np.uint8)
    torch.testing.assert_close(prepare_image(u8), prepare_image(img), atol=2 / 255, rtol=0)
    # RGB + mask == RGBA.
    torch.testing.assert_close(prepare_image(img[..., :3], mask=img[..., 3] > 0.5), prepare_image(img))
    with pytest.raises(ValueError, match=r"prepare_image\(\): an RGB image .* needs a mask"):
        prepare_image(img[..., :3])
    with pytest.raises(ValueError, match=r"prepare_image\(\): the mask .* is empty"):
        prepare_image(np.zeros((8, 8, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"prepare_image\(\): image must have shape \(H, W, 3 or 4\)"):
        prepare_image(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match=r"prepare_image\(\): mask must have shape \(120, 90\)"):
        prepare_image(img, mask=np.ones((10, 10)))
    bad = img.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        prepare_image(bad)


def test_prepare_image_rejects_float_values_outside_0_1() -> None:
    img = _blob() * 255.0                                          # a float photo in 0..255
    with pytest.raises(ValueError, match=r"prepare_image\(\): image is float32 with values in \[0, 255\]; float "
                                         r"images must be in \[0, 1\] \(0\.\.255 values: divide by 255, or pass uint8\)"):
        prepare_image(img)
    with pytest.raises(ValueError, match=r"prepare_image\(\): image is float64 with values in \[-0\.5, 1\]"):
        prepare_image(np.where(_blob() == 0.3, -0.5, _blob()).astype(np.float64))
    with pytest.raises(ValueError, match=r"prepare_image\(\): mask is float32 with values in \[0, 255\]"):
        prepare_image(_blob()[..., :3], mask=_blob()[..., 3] * 255.0)
    with pytest.raises(ValueError, match=r"prepare_image\(\): image is float32 with values in \[0, 255\]"):
        predict_mesh(img, model=Predictor(texture_size=8, normalize_bbox=True).eval())
    # Rounding slack is fine: 1 + 1e-6 is still a [0, 1] image.
    torch.testing.assert_close(prepare_image(_blob() * (1 + 1e-6)), prepare_image(_blob()), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_frame_ranges_match_the_training_renders() -> None:
    """FRAME_EXTENT and FRAME_OFFSET were measured on training renders (0.5th-99.5th
    percentiles); renders of other training shapes (every view) fall inside them, and their
    median diagonal is the measured one, so a change of the render protocol shows here."""
    from dibr_core.data.dataset import make_item
    from dibr_core.data.shapes import CATEGORIES

    torch.set_num_threads(1)
    diags, inside = [], []
    for cat in CATEGORIES:
        for im in make_item(cat, "train", 40, n_views=24, textured=True)["images"]:
            diag, dy, dx = _box_stats(torch.from_numpy(im[..., 3] > 127))
            diags.append(diag)
            inside.append(FRAME_EXTENT[0] <= diag <= FRAME_EXTENT[1] and FRAME_OFFSET[0][0] <= dy <= FRAME_OFFSET[0][1]
                          and FRAME_OFFSET[1][0] <= dx <= FRAME_OFFSET[1][1])
    assert np.mean(inside) >= 0.95
    assert abs(float(np.median(diags)) - 0.675) <= 0.03


def _big_photo() -> np.ndarray:
    """A 1500 x 2000 uint8 RGBA photo with a 60 x 80 object far from the borders."""
    img = np.zeros((1500, 2000, 4), dtype=np.uint8)
    img[..., :3] = 90                                              # background colour (masked out)
    img[700:760, 900:980] = [200, 40, 10, 255]
    img[720:740, 930:950, :3] = [10, 200, 40]
    return img


def test_prepare_image_memory_scales_with_the_object() -> None:
    """Only the window around the object becomes float: a photo's float32 copy (the old way:
    48 MB here, 5.9 GB for a padded 4000 x 6000 photo) is never made. Measured as the CPU
    allocations torch's profiler records, not by timing."""
    from torch.profiler import ProfilerActivity, profile

    img = _big_photo()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        x = prepare_image(img)
    allocated = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    H, W = img.shape[:2]
    # The largest intermediate is the (H, W) bool foreground test, 1 byte per pixel; everything
    # else is a few float32 RGBA copies of the square window around the object (its side: the
    # object's 100-pixel diagonal at the smallest training size; the profiler counts nested
    # allocations again), not of the photo.
    assert max(allocated) <= H * W
    side = np.hypot(60, 80) / FRAME_EXTENT[0]
    assert sum(allocated) - max(allocated) < 10 * (4 * 4 * side * side)
    # The same framing as the whole photo converted to float first.
    torch.testing.assert_close(x, prepare_image(img.astype(np.float32) / 255.0), atol=2 / 255, rtol=0)
    assert x[3].sum() > 100


def test_predict_mesh_with_a_given_model_and_category_hint() -> None:
    torch.manual_seed(0)
    m = Predictor(texture_size=8, normalize_bbox=True).eval()
    out = predict_mesh(_blob(), model=m)
    assert out.vertices.shape == (642, 3) and out.faces.shape == (1280, 3)
    assert out.texture is not None and out.texture.shape == (8, 8, 3)
    assert out.face_uvs.shape == (1280, 3, 2) and out.colors.shape == (642, 3)
    gen = Generator(m, ["chair", "car"], rank=4)
    g = torch.Generator().manual_seed(0)
    gen.fit({"chair": torch.rand(40, 256, generator=g), "car": torch.rand(40, 256, generator=g) + 3.0})
    hinted = predict_mesh(_blob(), model=m, category="car", generator=gen)
    assert not torch.equal(hinted.vertices, out.vertices)            # pulled towards "car"
    with pytest.raises(ValueError, match="unknown category"):
        predict_mesh(_blob(), model=m, category="teapot", generator=gen)


def test_predict_mesh_conforms_its_mesh_to_the_input_silhouette() -> None:
    """An untrained model predicts (almost) its template sphere; predict_mesh warps it onto the
    picture's outline in the input view it found (the plain protocol camera), and says so;
    conform=False returns the network's mesh."""
    torch.manual_seed(0)
    m = Predictor(texture_size=8, normalize_bbox=True).eval()
    raw = predict_mesh(_blob(), model=m, conform=False)
    assert raw.input_view is None and math.isnan(raw.network_iou)
    out = predict_mesh(_blob(), model=m)
    view = out.input_view
    assert view is not None and view.zoom == 1.0 and view.shift == (0.0, 0.0) and view.resolution == 64
    assert view.azimuth_deg in PROTOCOL_AZIMUTHS
    assert out.network_iou == pytest.approx(input_view_iou(raw.vertices, raw.faces, view, out.input_image[3]))
    assert view.iou == pytest.approx(input_view_iou(out.vertices, out.faces, view, out.input_image[3]))
    # measured: 0.41 -> 0.995 (a sphere onto a 3:2 rectangle)
    assert out.network_iou < 0.6 and view.iou > 0.95, (out.network_iou, view.iou)
    assert torch.equal(out.colors, raw.colors) and torch.equal(out.faces, raw.faces)
    assert out.vertices.dtype == torch.float32 and not torch.equal(out.vertices, raw.vertices)


def test_the_coarse_template_is_the_sphere_one_level_down() -> None:
    """predict_mesh searches the input view with coarse_template_faces over the template's first
    vertices: those are the level-2 icosphere's vertices, and the faces close that sphere."""
    from dibr_core.mesh import icosphere
    from dibr_core.models.predictor import TEMPLATE_LEVEL, coarse_template_faces

    fine = icosphere(TEMPLATE_LEVEL)[0]
    coarse_v, coarse_f, _ = icosphere(TEMPLATE_LEVEL - 1)
    f = coarse_template_faces()
    assert torch.equal(f, coarse_f) and f.shape == (320, 3) and int(f.max()) == 161
    assert torch.equal(fine[:162], coarse_v)


@pytest.mark.skipif(not SHIPPED, reason="no shipped predictor weights")
def test_shipped_predictor_beats_the_sphere(tmp_path: Path) -> None:
    """The committed weights load, and on a small fresh test subset (2 shapes per category,
    seeds disjoint from training) their 3D IoU beats the template sphere's."""
    from dibr_core.data.dataset import generate
    from dibr_core.eval.predictor import evaluate

    torch.set_num_threads(1)
    model = load_shipped_predictor()
    assert model.texture_size > 0 and model.normalize_bbox
    generate(tmp_path, "test", per_category=2, n_views=6, textured=True, progress=False)
    res = evaluate(tmp_path, "test", PREDICTOR_WEIGHTS, progress=False)
    ours, sphere = res["mean_iou"], res["baselines"]["sphere"]["mean_iou"]
    print(f"\nshipped predictor 3D IoU {ours:.3f} vs sphere {sphere:.3f} (26 shapes)")
    assert ours > sphere + 0.1
    assert res["mean_fscore_0.02"] > res["baselines"]["sphere"]["mean_fscore_0.02"]


@pytest.mark.skipif(not SHIPPED, reason="no shipped predictor weights")
def test_eval_measures_predict_mesh(tmp_path: Path) -> None:
    """The predictor eval's per-category 3D IoU is reproduced by calling predict_mesh on the
    items' input views (a small slice of the test split)."""
    from dibr_core.data.dataset import generate, load_item
    from dibr_core.data.loaders import list_items
    from dibr_core.eval.predictor import evaluate, evaluate_mesh

    torch.set_num_threads(1)
    cats = ["airplane", "watercraft", "car"]
    generate(tmp_path, "test", per_category=2, categories=cats, n_views=4, textured=True, progress=False)
    res = evaluate(tmp_path, "test", PREDICTOR_WEIGHTS, view=1, n_points=500, progress=False)
    for cat, paths in list_items(tmp_path, "test").items():
        ious = []
        for path in paths:
            item = load_item(path)
            pred = predict_mesh(item["images"][1])
            ious.append(evaluate_mesh(pred.vertices, pred.faces, item, 500, silhouette=False)["iou"])
        assert abs(float(np.mean(ious)) - res["per_category"][cat]["iou"]) <= 0.005, cat


@pytest.mark.skipif(not SHIPPED, reason="no shipped predictor weights")
def test_bench_model_workloads(capsys: pytest.CaptureFixture[str]) -> None:
    import json
    import os

    from dibr_core.bench import main as bench_main
    from dibr_core.inference import GENERATOR_WEIGHTS

    workloads = ["inference"] + (["generate"] if GENERATOR_WEIGHTS.is_file() else [])
    env_before = os.environ.get("DIBR_BACKEND")
    assert bench_main(["--workload", *workloads, "--backend", "cpu", "reference", "--in-process",
                       "--repeats", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    timed = [r for r in rows if "median_ms" in r]
    assert [(r["workload"], r["backend"]) for r in timed] == [(w, b) for w in workloads for b in ("cpu", "reference")]
    assert all(r["pass"] == "forward" and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["repeats"] == 3
               for r in timed)
    assert os.environ.get("DIBR_BACKEND") == env_before    # the reference rows do not leak their setting
