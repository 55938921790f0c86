"""Backend outputs → Verdict for one frame: label, normalised score, defect regions, heat-map.

Pure functions of their arguments (plus the wall clock for ``t_decision_wall``); no I/O, no state.
The backend outputs arrive as the model made them for ``preprocess``'s input (one row, or one per tile);
``decide`` first brings them into the camera image's frame (preprocess.restore_outputs: letterbox padding
cropped, tiles stitched), then scales boxes and areas back to the ORIGINAL camera image.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from .camera.base import Frame
from .errors import BackendError, ConfigError, ManifestError, ModelError
from .manifest import Calibration, Manifest, check_threshold
from .preprocess import restore_outputs
from .verdict import Region, Verdict


@dataclass(frozen=True)
class Thresholds:
    """The ok/ng rule's deciding numbers: ``image`` for the raw image score (score units; a part is NG when
    its score is above it), ``pixel`` for the anomaly map (map units; defect regions lie above it).

    The one owner of what a usable threshold is: every source (manifest, config file, environment,
    ``run --threshold``, the control channel's ``set_threshold``, a reload) goes through ``check`` — a
    finite number not below the model's lower bound (``image_lower_bound`` / ``pixel_lower_bound``, from
    the manifest; None: unbounded, e.g. fused z-scores, which may be negative). Below the bound every
    part would be NG. ``source`` says where the image threshold came from: "manifest", "config" or "runtime".
    """

    image: float
    pixel: float
    source: str = "manifest"
    image_lower_bound: float | None = None
    pixel_lower_bound: float | None = None

    @staticmethod
    def check(value, lower_bound: float | None, what: str) -> float:
        """``value`` as a float when it is a usable threshold, else ConfigError naming ``what`` (the field or
        flag it came from) and the value, in one line."""
        try:
            return check_threshold(value, lower_bound, what)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def from_manifest(cls, manifest: Manifest, image: float | None = None, pixel: float | None = None,
                      source: str = "config", image_what: str = "model.image_threshold",
                      pixel_what: str = "model.pixel_threshold") -> Thresholds:
        """The manifest's calibrated thresholds, each replaced by its override when not None.

        ``image_what`` / ``pixel_what`` name where an override came from (a setting or a flag) in the
        ConfigError raised for an unusable one. The manifest's own thresholds were checked at load
        (ManifestError); they are checked again here so a hand-built manifest cannot slip past.
        """
        cal = manifest.calibration
        try:
            base = cls(check_threshold(cal.image_threshold, cal.score_lower_bound, "calibration.image_threshold"),
                       check_threshold(cal.pixel_threshold, cal.map_lower_bound, "calibration.pixel_threshold"),
                       "manifest", cal.score_lower_bound, cal.map_lower_bound)
        except ValueError as exc:
            raise ManifestError(f"manifest of {manifest.model_id}: {exc}") from None
        return base.with_overrides(image, pixel, source, image_what=image_what, pixel_what=pixel_what)

    def with_overrides(self, image: float | None = None, pixel: float | None = None, source: str = "runtime",
                       image_what: str = "image threshold", pixel_what: str = "pixel threshold") -> Thresholds:
        """A copy with the given thresholds replaced (None: keep); ConfigError naming ``image_what`` or
        ``pixel_what`` for a value that is not finite or lies below the model's lower bound."""
        if image is not None:
            image = self.check(image, self.image_lower_bound, image_what)
        if pixel is not None:
            pixel = self.check(pixel, self.pixel_lower_bound, pixel_what)
        if image is None and pixel is None:
            return self
        return replace(
            self,
            image=image if image is not None else self.image,
            pixel=pixel if pixel is not None else self.pixel,
            source=source if image is not None else self.source,
        )

    def label(self, score: float) -> str:
        """The ok/ng rule (``is_ng``) for one raw image score: "ng" or "ok"."""
        return "ng" if bool(is_ng(score, self.image)) else "ok"


def is_ng(scores, image_threshold: float):
    """THE ok/ng rule, the one place it is written: True where the raw image score is above the image
    threshold (score units). ``scores``: a float or an array of any shape (a bool array of that shape back);
    NaN is never NG (the pipeline turns a non-finite score into "unknown" before asking)."""
    return np.asarray(scores, dtype=np.float64) > image_threshold


def normalise(values, threshold: float, calibration: Calibration, is_map: bool = False):
    """Map raw scores (or, with ``is_map``, anomaly-map pixels) to [0, 1] so that ``threshold`` lands on
    0.5 (manifest.Calibration formula).

    Works on a float or an array; the span (norm_max - norm_min, or map_norm_span for maps when the
    manifest has it) comes from the calibration stats.
    """
    span = calibration.norm_max - calibration.norm_min
    if is_map and calibration.map_norm_span is not None:
        span = calibration.map_norm_span
    span = max(span, 1e-12)
    return np.clip((np.asarray(values, np.float32) - threshold) / span + 0.5, 0.0, 1.0)


def find_regions(anomaly_map: np.ndarray, pixel_threshold: float, image_hw: tuple[int, int],
                 min_area_px: int = 0, max_regions: int | None = None) -> list[Region]:
    """Connected regions of ``anomaly_map > pixel_threshold``, in original-image pixels.

    anomaly_map: (h, w) float at model resolution; image_hw: (H, W) of the original image.
    Boxes are the covering box of the component scaled by (W/w, H/h) (rounded outwards); area is the
    component's pixel count times the scale product. Regions smaller than ``min_area_px`` (original
    pixels) are dropped; the rest are sorted by peak value, highest first.
    """
    import cv2

    h, w = anomaly_map.shape
    big_h, big_w = image_hw
    sx, sy = big_w / w, big_h / h
    mask = (anomaly_map > pixel_threshold).astype(np.uint8)
    if not mask.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    regions: list[Region] = []
    for i in range(1, count):  # 0 is the background
        left, top, width, height, area = (int(v) for v in stats[i])
        scaled_area = int(round(area * sx * sy))
        if scaled_area < min_area_px:
            continue
        window = labels[top : top + height, left : left + width] == i
        peak = float(anomaly_map[top : top + height, left : left + width][window].max())
        x0, y0 = int(math.floor(left * sx)), int(math.floor(top * sy))
        x1 = min(big_w, int(math.ceil((left + width) * sx)))
        y1 = min(big_h, int(math.ceil((top + height) * sy)))
        regions.append(Region(x=x0, y=y0, w=x1 - x0, h=y1 - y0, area=scaled_area, peak=peak))
    regions.sort(key=lambda r: r.peak, reverse=True)
    return regions[:max_regions] if max_regions is not None else regions


def _single(outputs: dict, name: str) -> np.ndarray:
    if name not in outputs:
        raise BackendError(f"backend output '{name}' is missing (got {sorted(outputs)})")
    return np.asarray(outputs[name])


def decide(outputs: dict, frame: Frame, thresholds: Thresholds, manifest: Manifest,
           min_region_area_px: int = 0, want_heatmap: bool = False, max_regions: int | None = None,
           latency_ms: dict[str, float] | None = None) -> Verdict:
    """One frame's verdict from the backend outputs of the frame's ``preprocess`` input.

    outputs: {"score": (1,), "anomaly_map": (1, 1, h, w)} (names from the manifest), or one row per tile
    when the manifest tiles; they are brought into the image frame here (preprocess.restore_outputs).
    Label: "ng" when the raw score exceeds ``thresholds.image`` else "ok"; defect regions (only for
    "ng") from the map thresholded at ``thresholds.pixel``; heat-map (h, w) float32 in [0, 1]
    normalised like the score but around the pixel threshold. Raises BackendError for missing
    outputs, a batch other than 1 or a non-finite score, ModelError for a non-finite normalised score
    (a broken calibration); the pipeline turns either into "unknown".
    """
    if manifest.score_output in outputs:
        outputs = restore_outputs(outputs, frame.image.shape[:2], manifest)
    return decide_restored(outputs, frame, thresholds, manifest, min_region_area_px, want_heatmap, max_regions,
                           latency_ms)


def decide_restored(outputs: dict, frame: Frame, thresholds: Thresholds, manifest: Manifest,
                    min_region_area_px: int = 0, want_heatmap: bool = False, max_regions: int | None = None,
                    latency_ms: dict[str, float] | None = None) -> Verdict:
    """``decide`` for outputs already in the image's frame (``restore_outputs`` done by a caller that keeps
    them for other uses too: the line's observers, predict's score parts), so no part is restored twice."""
    score_arr = _single(outputs, manifest.score_output).reshape(-1)
    amap = _single(outputs, manifest.map_output)
    if score_arr.size != 1 or amap.ndim != 4 or amap.shape[:2] != (1, 1):
        raise BackendError(
            f"expected score (1,) and anomaly_map (1, 1, h, w), got {score_arr.shape} and {amap.shape}"
        )
    score = float(score_arr[0])
    if not math.isfinite(score):
        raise BackendError(f"backend returned a non-finite score ({score})")
    amap2d = amap[0, 0]
    label = thresholds.label(score)
    regions: list[Region] = []
    if label == "ng":
        regions = find_regions(amap2d, thresholds.pixel, frame.image.shape[:2], min_region_area_px, max_regions)
    heatmap = None
    if want_heatmap:
        heatmap = normalise(np.nan_to_num(amap2d, nan=0.0), thresholds.pixel, manifest.calibration, is_map=True)
        heatmap = np.ascontiguousarray(heatmap, dtype=np.float32)
    normalised = float(normalise(score, thresholds.image, manifest.calibration))
    if not math.isfinite(normalised):  # a broken calibration (norm_min/norm_max): no number we can stand behind
        raise ModelError(f"normalised score is not finite ({normalised}); check the manifest's norm_min/norm_max")
    return Verdict(
        camera_id=frame.camera_id,
        seq=frame.seq,
        label=label,
        score=score,
        normalised_score=normalised,
        threshold=thresholds.image,
        t_capture_wall=frame.t_wall,
        t_decision_wall=time.time(),
        part_id=frame.part_id,
        regions=regions,
        latency_ms=dict(latency_ms or {}),
        model_id=manifest.model_id,
        model_version=manifest.model_version,
        heatmap=heatmap,
    )


def unknown_verdict(frame: Frame, error: str, thresholds: Thresholds | None = None,
                    manifest: Manifest | None = None, latency_ms: dict[str, float] | None = None) -> Verdict:
    """The verdict for a frame that could not be judged (backend error, timeout, bad image).

    ``threshold`` is the image threshold in force, or 0.0 when none is known (keeps the JSON finite).
    """
    return Verdict(
        camera_id=frame.camera_id,
        seq=frame.seq,
        label="unknown",
        score=None,
        normalised_score=None,
        threshold=thresholds.image if thresholds is not None else 0.0,
        t_capture_wall=frame.t_wall,
        t_decision_wall=time.time(),
        part_id=frame.part_id,
        latency_ms=dict(latency_ms or {}),
        error=error,
        model_id=manifest.model_id if manifest is not None else "",
        model_version=manifest.model_version if manifest is not None else "",
    )
