from __future__ import annotations

import numpy as np
import pytest

from edge_inspect.errors import ImageError
from edge_inspect.manifest import InputSpec
from edge_inspect.preprocess import preprocess, to_rgb8


def test_shapes_and_normalisation():
    spec = InputSpec(height=32, width=48)
    x = preprocess(np.full((100, 70, 3), 255, np.uint8), spec)
    assert x.shape == (1, 3, 32, 48) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-5)


def test_mono_16bit_and_channel_order():
    mono16 = np.full((10, 10), 65535, np.uint16)
    assert to_rgb8(mono16).shape == (10, 10, 3) and to_rgb8(mono16).max() == 255
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV order
    assert to_rgb8(bgr, "BGR")[0, 0].tolist() == [0, 0, 200]
    assert to_rgb8(bgr, "RGB")[0, 0].tolist() == [200, 0, 0]


@pytest.mark.parametrize("bad", [np.zeros((0, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4), np.int32),
                                 np.full((4, 4), np.nan, np.float32)])
def test_bad_images_raise(bad):
    with pytest.raises(ImageError):
        preprocess(bad, InputSpec())


def test_score_input_independent_of_original_size():
    spec = InputSpec(height=16, width=16)
    small = np.full((50, 50, 3), 90, np.uint8)
    wide = np.full((50, 200, 3), 90, np.uint8)
    np.testing.assert_allclose(preprocess(small, spec), preprocess(wide, spec))


# ---- placement (schema 4): letterbox and tiles, and the way back (restore_outputs) ----------------------


def _spec_copy(manifest, **update):
    return manifest.model_copy(update={"input": manifest.input.model_copy(update=update)})


def test_letterbox_pads_with_the_pad_value_and_keeps_the_content_undistorted():
    from edge_inspect.geometry import fit_image

    spec = InputSpec(height=64, width=160, fit="letterbox", pad_value=0)
    image = np.random.default_rng(0).integers(0, 255, (100, 200, 3), dtype=np.uint8)
    x = preprocess(image, spec, channel_order="RGB")
    assert x.shape == (1, 3, 64, 160)
    pad = (0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0, :, 10, 0], pad, rtol=1e-5)  # left padding
    fitted, p = fit_image(image, (64, 160), "letterbox")
    assert (p.left, p.width) == (16, 128)
    expected = (fitted[..., :].astype(np.float32) / 255 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(x[0].transpose(1, 2, 0), expected, atol=1e-5)


def test_tiled_input_gives_one_row_per_tile():
    from edge_inspect.manifest import TileSpec
    from edge_inspect.preprocess import input_count

    spec = InputSpec(height=64, width=64, tiles=TileSpec(overlap=0.25))
    image = np.zeros((100, 250, 3), np.uint8)
    x = preprocess(image, spec)
    assert x.shape == (input_count((100, 250), spec), 3, 64, 64) == (2 * 5, 3, 64, 64)


def test_restore_crops_letterbox_padding_from_every_map(tiny_model_dir):
    from edge_inspect.manifest import load_manifest
    from edge_inspect.preprocess import restore_outputs

    m = _spec_copy(load_manifest(tiny_model_dir), fit="letterbox")  # 64x64 input
    out = {"score": np.array([1.0]), "anomaly_map": np.ones((1, 1, 64, 64)), "feat": np.ones((1, 1, 16, 16))}
    back = restore_outputs(out, (100, 200), m)  # content 32x64 rows 16..48
    assert back["anomaly_map"].shape == (1, 1, 32, 64) and back["feat"].shape == (1, 1, 8, 16)
    assert back["score"] is out["score"]
    assert restore_outputs(out, (100, 200), load_manifest(tiny_model_dir)) is out  # stretch: untouched


def test_restore_stitches_tiles_and_takes_score_and_global_of_the_worst_tile(tiny_model_dir):
    from edge_inspect.manifest import TileSpec, load_manifest
    from edge_inspect.preprocess import restore_outputs

    m = _spec_copy(load_manifest(tiny_model_dir), tiles=TileSpec(overlap=0))
    out = {"score": np.array([0.1, 0.9, 0.3]), "global_score": np.array([5.0, 6.0, 7.0]),
           "anomaly_map": np.stack([np.full((1, 64, 64), v, np.float32) for v in (1, 2, 3)])}
    back = restore_outputs(out, (64, 150), m)  # three tiles side by side, the last flush with the edge
    assert back["score"].tolist() == [0.9] and back["global_score"].tolist() == [6.0]
    amap = back["anomaly_map"]
    assert amap.shape == (1, 1, 64, 150)
    assert amap[0, 0, 0, 0] == 1 and amap[0, 0, 0, 70] == 2 and amap[0, 0, 0, 149] == 3
    assert amap[0, 0, 0, 100] == pytest.approx(2.5)  # covered by tiles 2 and 3: averaged


def test_tiles_on_an_image_of_one_tile_reproduce_the_single_pass(tiny_model_dir):
    from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
    from edge_inspect.manifest import TileSpec, load_manifest
    from edge_inspect.preprocess import restore_outputs
    from tests.fixtures.tiny_model import grey_image

    single = load_manifest(tiny_model_dir)
    tiled = _spec_copy(single, tiles=TileSpec(overlap=0.25))
    image = grey_image(64, blob=True)
    with OnnxRuntimeBackend(tiny_model_dir, single) as be:
        ref = be.infer({"image": preprocess(image, single.input)})
        x = preprocess(image, tiled.input)
        got = restore_outputs(be.infer({"image": x}), image.shape[:2], tiled)
    assert len(x) == 1
    np.testing.assert_allclose(got["score"], ref["score"], rtol=1e-6)
    np.testing.assert_allclose(got["anomaly_map"], ref["anomaly_map"], rtol=1e-6, atol=1e-7)


def test_decide_puts_letterboxed_and_tiled_defects_where_they_are_in_the_image(tiny_model_dir):
    import time

    from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
    from edge_inspect.camera.base import Frame
    from edge_inspect.decision import Thresholds, decide
    from edge_inspect.manifest import TileSpec, load_manifest

    base = load_manifest(tiny_model_dir)
    h, w = 120, 360
    img = np.full((h, w, 3), 124, np.uint8)
    img[40:80, 250:300] = 255
    frame = Frame("cam", 0, time.monotonic(), time.time(), img)
    for m in (_spec_copy(base, fit="letterbox"), _spec_copy(base, tiles=TileSpec(overlap=0.25))):
        with OnnxRuntimeBackend(tiny_model_dir, m) as be:
            v = decide(be.infer({"image": preprocess(img, m.input)}), frame, Thresholds.from_manifest(m), m,
                       want_heatmap=True)
        assert v.label == "ng"
        r = v.regions[0]
        assert r.x <= 250 and r.x + r.w >= 300 and r.y <= 40 and r.y + r.h >= 80
        assert r.x >= 200 and r.x + r.w <= 350 and r.y >= 0 and r.y + r.h <= h
        # the heat map has the image's aspect ratio: no padding in it
        assert abs(v.heatmap.shape[1] / v.heatmap.shape[0] - w / h) < 0.1
