"""decide(): labels, normalised score, defect regions in original-image pixels, heat-map, unknown."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge_inspect.camera.base import Frame
from edge_inspect.decision import Thresholds, decide, find_regions, normalise, unknown_verdict
from edge_inspect.errors import BackendError, ConfigError
from edge_inspect.manifest import load_manifest


@pytest.fixture(scope="module")
def manifest(tiny_model_dir):
    return load_manifest(tiny_model_dir)  # image/pixel threshold 0.5, norm range [0, 1]


def frame(h=480, w=640, seq=7):
    return Frame("cam1", seq, time.monotonic(), 1_700_000_000.0, np.zeros((h, w, 3), np.uint8), part_id="P-1")


def outputs(score, amap):
    return {"score": np.array([score], np.float32), "anomaly_map": amap[None, None].astype(np.float32)}


def test_label_and_normalised_score(manifest):
    th = Thresholds.from_manifest(manifest)
    amap = np.zeros((64, 64), np.float32)
    ok = decide(outputs(0.2, amap), frame(), th, manifest)
    ng = decide(outputs(0.9, amap), frame(), th, manifest)
    assert (ok.label, ng.label) == ("ok", "ng")
    assert ok.score == pytest.approx(0.2) and ok.threshold == 0.5
    # normalised = clip((score - thr) / (norm_max - norm_min) + 0.5): 0.2 → 0.2, 0.9 → 0.9
    assert ok.normalised_score == pytest.approx(0.2) and ng.normalised_score == pytest.approx(0.9)
    assert decide(outputs(5.0, amap), frame(), th, manifest).normalised_score == 1.0
    assert ok.seq == 7 and ok.camera_id == "cam1" and ok.part_id == "P-1" and ok.model_id == "tiny-test-model"
    assert ok.t_capture_wall == 1_700_000_000.0 and ok.error is None and ok.heatmap is None


def test_regions_scaled_to_original_non_square_image(manifest):
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 20:30] = 2.0  # 10x10 map pixels at rows 10..19, cols 20..29
    amap[15, 25] = 3.0
    amap[50:52, 5:7] = 1.0  # a second, smaller blob
    v = decide(outputs(3.0, amap), frame(480, 640), Thresholds.from_manifest(manifest), manifest)
    assert v.label == "ng" and len(v.regions) == 2
    big = v.regions[0]  # highest peak first
    # scale x: 640/64 = 10, y: 480/64 = 7.5
    assert (big.x, big.y, big.w, big.h) == (200, 75, 100, 75)
    assert big.area == 100 * 75 and big.peak == pytest.approx(3.0)
    small = v.regions[1]
    assert (small.x, small.y, small.w, small.h) == (50, 375, 20, 15) and small.area == 4 * 75


def test_small_regions_dropped_and_ok_has_no_regions(manifest):
    amap = np.zeros((64, 64), np.float32)
    amap[10:20, 20:30] = 2.0
    amap[50, 5] = 2.0  # one map pixel = 75 original pixels
    th = Thresholds.from_manifest(manifest)
    v = decide(outputs(2.0, amap), frame(480, 640), th, manifest, min_region_area_px=100)
    assert [r.area for r in v.regions] == [7500]
    assert decide(outputs(0.1, amap), frame(), th, manifest).regions == []  # ok verdicts carry no regions


def test_threshold_override_changes_label_and_validates(manifest):
    amap = np.zeros((64, 64), np.float32)
    raised = Thresholds.from_manifest(manifest, image=1.5, pixel=None)
    assert (raised.image, raised.pixel, raised.source) == (1.5, 0.5, "config")
    v = decide(outputs(1.2, amap), frame(), raised, manifest)
    assert v.label == "ok" and v.threshold == 1.5
    assert v.normalised_score == pytest.approx(1.2 - 1.5 + 0.5)
    runtime = raised.with_overrides(pixel=0.1)
    assert (runtime.image, runtime.pixel, runtime.source) == (1.5, 0.1, "config")
    assert raised.with_overrides(image=0.2).source == "runtime"
    with pytest.raises(ConfigError):
        raised.with_overrides(image=float("nan"))


def test_pixel_threshold_controls_regions(manifest):
    amap = np.zeros((64, 64), np.float32)
    amap[0:8, 0:8] = 0.7
    th = Thresholds.from_manifest(manifest)
    assert len(decide(outputs(2.0, amap), frame(), th, manifest).regions) == 1
    assert decide(outputs(2.0, amap), frame(), th.with_overrides(pixel=0.8), manifest).regions == []


def test_heatmap(manifest):
    amap = np.linspace(-1, 2, 64 * 32, dtype=np.float32).reshape(32, 64)
    v = decide(outputs(2.0, amap), frame(), Thresholds.from_manifest(manifest), manifest, want_heatmap=True)
    hm = v.heatmap
    assert hm.shape == (32, 64) and hm.dtype == np.float32
    assert hm.min() == 0.0 and hm.max() == 1.0
    # normalised around the pixel threshold: a map value equal to it lands on 0.5
    np.testing.assert_allclose(normalise(0.5, 0.5, manifest.calibration), 0.5)
    assert "heatmap" not in v.to_dict()


def test_heatmap_uses_the_map_span_when_the_manifest_has_one(manifest):
    """A fused image score lives on another scale than the map: the heat map keeps the map's units."""
    amap = np.full((32, 64), 0.6, np.float32)
    cal = manifest.calibration.model_copy(update={"map_norm_span": 0.5, "norm_min": -10.0, "norm_max": 10.0})
    m = manifest.model_copy(update={"calibration": cal})
    v = decide(outputs(2.0, amap), frame(), Thresholds.from_manifest(m), m, want_heatmap=True)
    np.testing.assert_allclose(v.heatmap, 0.5 + (0.6 - cal.pixel_threshold) / 0.5)
    np.testing.assert_allclose(v.normalised_score, np.clip(0.5 + (2.0 - cal.image_threshold) / 20.0, 0, 1))


def test_bad_outputs_raise(manifest):
    th = Thresholds.from_manifest(manifest)
    with pytest.raises(BackendError, match="anomaly_map"):
        decide({"score": np.array([1.0])}, frame(), th, manifest)
    with pytest.raises(BackendError, match="non-finite"):
        decide(outputs(float("nan"), np.zeros((8, 8))), frame(), th, manifest)
    with pytest.raises(BackendError, match="expected score"):
        decide({"score": np.zeros(2), "anomaly_map": np.zeros((2, 1, 8, 8))}, frame(), th, manifest)


def test_unknown_verdict(manifest):
    th = Thresholds.from_manifest(manifest)
    v = unknown_verdict(frame(), "inference timed out after 5 s", th, manifest, {"infer": 5000.0})
    assert v.label == "unknown" and v.score is None and v.normalised_score is None
    assert v.error == "inference timed out after 5 s" and v.threshold == 0.5 and v.seq == 7
    assert v.latency_ms == {"infer": 5000.0} and v.regions == []
    assert unknown_verdict(frame(), "x").threshold == 0.0


def test_find_regions_empty_and_cap():
    amap = np.zeros((16, 16), np.float32)
    assert find_regions(amap, 0.5, (100, 100)) == []
    amap[::4, ::4] = 1.0  # 16 isolated pixels
    assert len(find_regions(amap, 0.5, (16, 16))) == 16
    assert len(find_regions(amap, 0.5, (16, 16), max_regions=3)) == 3


def test_real_tiny_model_end_to_end(tiny_model_dir, manifest):
    """Backend + decide on a non-square camera image: the blob's box lands around it in original pixels."""
    from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
    from edge_inspect.preprocess import preprocess

    h, w = 300, 500
    img = np.full((h, w, 3), 124, np.uint8)
    img[100:160, 300:400] = 255
    th = Thresholds.from_manifest(manifest)
    with OnnxRuntimeBackend(tiny_model_dir, manifest) as be:
        good = decide(be.infer({"image": preprocess(np.full((h, w, 3), 124, np.uint8), manifest.input)}),
                      frame(h, w), th, manifest)
        bad = decide(be.infer({"image": preprocess(img, manifest.input)}), frame(h, w), th, manifest)
    assert good.label == "ok" and bad.label == "ng"
    r = bad.regions[0]
    # the box covers the blob (pooling blurs it by a few cells) and stays inside the image
    assert r.x <= 300 and r.y <= 100 and r.x + r.w >= 400 and r.y + r.h >= 160
    assert r.x >= 250 and r.y >= 60 and r.x + r.w <= 450 and r.y + r.h <= 200
    assert 0 <= r.x and r.x + r.w <= w and r.y + r.h <= h


# ---- one rule for every threshold: finite, not below the model's lower bound ----------------------------


def _bounded(manifest, score_lb=0.0, map_lb=0.0):
    cal = manifest.calibration.model_copy(update={"score_lower_bound": score_lb, "map_lower_bound": map_lb})
    return manifest.model_copy(update={"calibration": cal})


@pytest.mark.parametrize("value, fragment", [
    (float("nan"), "must be a finite number, got nan"),
    (float("inf"), "must be a finite number, got inf"),
    (float("-inf"), "must be a finite number, got -inf"),
    (-0.01, "-0.01 is below 0, the least value the model outputs"),
    ("0.7", "must be a finite number, got '0.7'"),
    (True, "must be a finite number, got True"),
])
def test_override_that_is_not_a_usable_threshold_is_one_line_naming_the_field(manifest, value, fragment):
    m = _bounded(manifest)
    with pytest.raises(ConfigError) as err:
        Thresholds.from_manifest(m, image=value, image_what="--threshold")
    assert str(err.value).startswith("--threshold ") and fragment in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"^model\.pixel_threshold "):
        Thresholds.from_manifest(m, pixel=value)
    base = Thresholds.from_manifest(m)
    with pytest.raises(ConfigError, match=r"^set_threshold image "):
        base.with_overrides(image=value, image_what="set_threshold image")


def test_threshold_at_the_bound_is_fine_and_negative_is_fine_without_a_bound(manifest):
    m = _bounded(manifest)
    th = Thresholds.from_manifest(m, image=0.0, pixel=0.0)
    assert (th.image, th.pixel, th.image_lower_bound, th.pixel_lower_bound) == (0.0, 0.0, 0.0, 0.0)
    # fused z-scores: no lower bound, a negative threshold is a real threshold
    fused = Thresholds.from_manifest(manifest, image=-1.5)
    assert fused.image == -1.5 and fused.image_lower_bound is None
    amap = np.zeros((64, 64), np.float32)
    assert decide(outputs(-1.0, amap), frame(), fused, manifest).label == "ng"
    assert decide(outputs(-2.0, amap), frame(), fused, manifest).label == "ok"
    # the bound travels with run-time changes: a later override is checked against it too
    with pytest.raises(ConfigError, match="below 0, the least value the model outputs"):
        th.with_overrides(image=-1e-9)
    assert th.with_overrides(image=3).image == 3.0 and isinstance(th.with_overrides(image=3).image, float)


def test_manifest_thresholds_are_checked_even_when_built_by_hand(manifest):
    """Load-time validation refuses a bad manifest; a Calibration built past it is refused here too."""
    from edge_inspect.errors import ManifestError

    cal = manifest.calibration.model_construct(**{**manifest.calibration.__dict__, "image_threshold": float("inf")})
    m = manifest.model_copy(update={"calibration": cal})
    with pytest.raises(ManifestError, match="calibration.image_threshold must be a finite number"):
        Thresholds.from_manifest(m)


def test_non_finite_normalised_score_is_an_error_not_a_verdict(manifest):
    """NaN in norm_max: the raw label would say ng while the wire says unknown; decide refuses instead."""
    from edge_inspect.errors import ModelError

    cal = manifest.calibration.model_construct(**{**manifest.calibration.__dict__, "norm_max": float("nan")})
    m = manifest.model_copy(update={"calibration": cal})
    with pytest.raises(ModelError, match="normalised score is not finite"):
        decide(outputs(0.9, np.zeros((64, 64), np.float32)), frame(), Thresholds.from_manifest(manifest), m)
