"""Score a folder (or a glob) of images with a model folder, as the line would, and show why: ``edge-inspect
predict``, what anomalib users know as ``anomalib predict``.

Usage::

    edge-inspect predict --model models/widget --images shots/ --out pred/
    edge-inspect predict --model models/widget --images 'shots/**/*.jpg' --out pred/ --threshold 3.2
    edge-inspect predict --model models/widget --images shots/ --out pred/ --no-overlays --backend onnxruntime

Inputs: a folder is searched recursively for images (``data.mvtec.IMAGE_EXTENSIONS``, hidden files skipped);
a glob pattern (``*``, ``?``, ``[...]``; ``**`` spans folders) takes the matching files with those
extensions; a single image file is taken as is. Files under ``--out`` are never inputs. Each image goes
through what runs on the line: the manifest's input spec and ``preprocess``, the backend
(``backends.select.open_backend``: auto, onnxruntime or tensorrt) and ``decision.decide`` with
``decision.Thresholds.from_manifest`` (the manifest's calibrated thresholds; ``threshold`` overrides the image
threshold and is checked like everywhere else), with the line's default region settings
(``PipelineSettings.min_region_area_px`` / ``max_regions``).

Output folder:

- ``<relative path>.png`` per readable image (unless ``overlays=False``): the image with the anomaly map
  blended over it (JET, normalised by the manifest calibration around the pixel threshold, which lands on
  0.5, as the line's heat maps), the defect regions boxed (white), and a caption strip below it with the
  verdict (OK/NG), the score against the threshold, the score parts when the score is fused
  (``map a + global b``) and the number of regions. The image keeps its size; the strip adds rows.
- ``predictions.jsonl``: one record per input image, in input order: ``path`` (as found), ``label``
  ("ok", "ng", or "unknown" with ``error`` when the image could not be read or the model gave no finite
  score), ``score``, ``threshold``, ``normalised_score``, ``regions`` ([{x, y, w, h, area, peak}], original
  image pixels, NG only, highest peak first), ``score_parts`` ({"map", "global"}, only when the manifest has
  score_fusion and the backend returned its global output), ``overlay`` (relative to the output folder, or
  null).
- ``predictions.csv``: path,label,score,threshold,normalised_score,regions_count (empty cells for unknown).

Both files are written as the images go, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..decision import Thresholds, decide_restored
from ..errors import BackendError, ConfigError, DataError, ModelError
from ..manifest import Manifest, load_manifest
from ..overlay import caption, render_overlay
from ..verdict import Region
from .report import writing
from .scoring import Progress, batch_score_parts, scoring_manifest

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
PREDICTIONS_JSONL = "predictions.jsonl"
PREDICTIONS_CSV = "predictions.csv"
CSV_COLUMNS = ("path", "label", "score", "threshold", "normalised_score", "regions_count")
_MAGIC = ("*", "?", "[")


@dataclass(frozen=True)
class Input:
    """One image to score: ``path`` as found, ``rel_path`` (posix) relative to the folder or the glob's fixed
    leading folder; the overlay goes to the same relative path (``.png``) in the output folder."""

    path: Path
    rel_path: str


@dataclass
class Prediction:
    """One image's outcome: ``record`` (its predictions.jsonl line, without "overlay"), and for a judged image
    the RGB ``image`` (H, W, 3) uint8, the ``heatmap`` (h, w) float32 in [0, 1] at map size and its
    ``regions``; None and [] when the label is "unknown", which ``problem`` explains."""

    record: dict
    problem: str | None = None  # for "unknown": "unreadable" (the file) or "not_judged" (the model output)
    image: np.ndarray | None = None
    heatmap: np.ndarray | None = None
    regions: list[Region] = field(default_factory=list)


def _line_region_defaults() -> tuple[int, int]:
    """(min_region_area_px, max_regions) as the line uses them by default."""
    from ..pipeline.settings import PipelineSettings

    fields = PipelineSettings.model_fields
    return fields["min_region_area_px"].default, fields["max_regions"].default


def _is_image(path: Path) -> bool:
    from ..data.mvtec import IMAGE_EXTENSIONS

    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob pattern that hold no wildcard (``.`` when the first part has one)."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if any(c in part for c in _MAGIC):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def list_inputs(images: str | Path, exclude: str | Path | None = None) -> list[Input]:
    """The images to score, sorted: every image file (IMAGE_EXTENSIONS, hidden ones skipped) in the folder
    ``images`` and below it, or the files matching the glob pattern ``images`` with those extensions, or the
    single image file ``images``. Files under ``exclude`` (the output folder) are left out. DataError when
    nothing matches or the path does not exist."""
    from ..data.mvtec import IMAGE_EXTENSIONS, images_below

    text = str(images)
    skip = Path(exclude).resolve() if exclude is not None else None
    path = Path(text)
    if path.is_dir():
        root, files = path, images_below(path)
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DataError(f"{path} is not an image file ({', '.join(IMAGE_EXTENSIONS)})")
        root, files = path.parent, [path]
    elif any(c in text for c in _MAGIC):
        root = _glob_root(text)
        files = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in files if _is_image(p)]
    else:
        raise DataError(f"no such image folder or file: {text}")
    files = [p for p in files if not _inside(p, skip)]
    if not files:
        raise DataError(f"no images matched {text} ({', '.join(IMAGE_EXTENSIONS)}"
                        f"{'; files under the output folder are left out' if skip is not None else ''})")
    inputs = []
    for p in files:
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:  # a glob whose matches leave the fixed folder ("..")
            rel = p.name
        inputs.append(Input(p, rel))
    return inputs


def overlay_paths(inputs: list[Input]) -> list[str]:
    """The overlay file of each input, relative to the output folder: its relative path with ``.png``;
    ``<name>.<ext>.png`` where two inputs would share one (``a.jpg`` next to ``a.png``)."""
    plain = [str(Path(i.rel_path).with_suffix(".png").as_posix()) for i in inputs]
    counts: dict[str, int] = {}
    for p in plain:
        counts[p] = counts.get(p, 0) + 1
    return [p if counts[p] == 1 else f"{i.rel_path}.png" for p, i in zip(plain, inputs, strict=True)]


def _unknown(path: Path, problem: str, error: str, thresholds: Thresholds) -> Prediction:
    return Prediction({"path": str(path), "label": "unknown", "score": None, "threshold": thresholds.image,
                       "normalised_score": None, "regions": [], "error": error}, problem)


def predict_image(backend, manifest: Manifest, thresholds: Thresholds, path: str | Path, seq: int = 0,
                  min_region_area_px: int | None = None, max_regions: int | None = None) -> Prediction:
    """Score one image file through an entered ``backend`` and decide it as the line does (decision.decide).

    A file that cannot be read and a model output that cannot be judged (non-finite score) give a record
    with label "unknown" and "error", never an exception; a failing backend raises (BackendError).
    ``min_region_area_px`` / ``max_regions``: None for the line's defaults.
    """
    from ..camera.base import Frame
    from ..data.mvtec import load_image
    from ..preprocess import preprocess, restore_outputs

    path = Path(path)
    line_area, line_max = _line_region_defaults()
    min_area = line_area if min_region_area_px is None else min_region_area_px
    most = line_max if max_regions is None else max_regions
    try:
        image = load_image(path)
        x = preprocess(image, manifest.input, channel_order="RGB")
    except DataError as exc:  # ImageError included
        log.info("predict: %s unreadable: %s", path, exc)
        return _unknown(path, "unreadable", str(exc), thresholds)
    out = backend.infer({manifest.input.name: x})
    frame = Frame(camera_id="predict", seq=seq, t_capture=time.monotonic(), t_wall=time.time(), image=image)
    try:
        restored = restore_outputs(out, image.shape[:2], manifest)  # once: the verdict and the score parts
        verdict = decide_restored(restored, frame, thresholds, manifest, min_region_area_px=min_area,
                                  want_heatmap=True, max_regions=most)
    except (BackendError, ModelError) as exc:  # a non-finite score: "unknown" on the line as well
        log.info("predict: %s not judged: %s", path, exc)
        return _unknown(path, "not_judged", str(exc), thresholds)
    record = {"path": str(path), "label": verdict.label, "score": verdict.score, "threshold": verdict.threshold,
              "normalised_score": verdict.normalised_score, "regions": [asdict(r) for r in verdict.regions]}
    parts = batch_score_parts(restored, manifest.score_fusion, np.asarray([verdict.score], np.float64))[0]
    if parts is not None:
        record["score_parts"] = parts
    return Prediction(record, None, image, verdict.heatmap, list(verdict.regions))


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (parents created); DataError when it cannot be written."""
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{path}: cannot encode the overlay")
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        buf.tofile(str(path))  # tofile: non-ASCII paths too


def csv_row(record: dict) -> list:
    """predictions.csv's row (CSV_COLUMNS) of one record; empty cells for what an unknown record lacks."""
    def cell(v):
        return "" if v is None else v

    return [record["path"], record["label"], cell(record["score"]), cell(record["threshold"]),
            cell(record["normalised_score"]), len(record["regions"])]


class PredictionWriter:
    """predictions.jsonl and predictions.csv in ``out_dir``, a record at a time (flushed), as a context."""

    def __init__(self, out_dir: Path):
        self.jsonl_path = out_dir / PREDICTIONS_JSONL
        self.csv_path = out_dir / PREDICTIONS_CSV

    def __enter__(self) -> PredictionWriter:
        with writing(self.jsonl_path):
            self._jsonl = open(self.jsonl_path, "w")
        try:
            with writing(self.csv_path):
                self._csv_file = open(self.csv_path, "w", newline="")
                self._csv = csv.writer(self._csv_file)
                self._csv.writerow(CSV_COLUMNS)
        except BaseException:
            self._jsonl.close()
            raise
        return self

    def write(self, record: dict) -> None:
        with writing(self.jsonl_path):
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
        with writing(self.csv_path):
            self._csv.writerow(csv_row(record))
            self._csv_file.flush()

    def __exit__(self, *exc) -> None:
        try:
            with writing(self.jsonl_path):
                self._jsonl.close()  # close() may be what fails (a full disk)
        finally:
            with writing(self.csv_path):
                self._csv_file.close()


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder; ConfigError when it is a file, DataError when it cannot be created."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output folder {out_dir} is a file")
    with writing(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def _open_backend(name: str, model_dir: Path, manifest: Manifest):
    from ..backends.select import open_backend

    if name not in BACKENDS:
        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    try:
        return open_backend(model_dir, name, manifest=scoring_manifest(manifest), diagnostics=True)
    except ImportError as exc:
        raise BackendError(f"backend '{name}' is not available here: {exc}") from exc


def predict(model_dir, images, out_dir, backend: str = "auto", threshold: float | None = None,
            overlays: bool = True, progress: bool = True) -> dict:
    """Score every image of ``images`` (folder, glob or file; see list_inputs) with the model folder and write
    overlays, predictions.jsonl and predictions.csv into ``out_dir`` (see the module docstring).

    Returns a summary: {"model_id", "backend", "threshold", "threshold_source", "images", "ok", "ng",
    "unknown", "unreadable", "not_judged", "overlays", "out_dir", "predictions", "predictions_csv",
    "first_error"}. Raises ModelError (missing or broken model), DataError (no image matched, or none could
    be read: the files are written first), ConfigError (bad threshold or backend, ``out_dir`` is a file or
    would overwrite an input).
    """
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    source = "manifest" if threshold is None else "override"
    thresholds = Thresholds.from_manifest(manifest, image=threshold, source=source, image_what="--threshold")
    out_path = Path(out_dir)
    if out_path.exists() and not out_path.is_dir():
        raise ConfigError(f"output folder {out_path} is a file")
    inputs = list_inputs(images, exclude=out_path if out_path.is_dir() else None)
    targets = overlay_paths(inputs)
    if overlays:
        originals = {i.path.resolve() for i in inputs}
        clash = next((t for t in targets if (out_path / t).resolve() in originals), None)
        if clash is not None:
            raise ConfigError(f"the overlay {out_path / clash} would overwrite an input image; "
                              "choose another --out")
    out_path = prepare_out_dir(out_path)

    be = _open_backend(backend, model_dir, manifest)
    backend_name = getattr(be, "name", None) or backend
    manifest = getattr(be, "manifest", None) or manifest
    log.info("predict: %d images with %s (%s), threshold %.6g (%s)", len(inputs), manifest.model_id,
             backend_name, thresholds.image, source)
    counts = {"ok": 0, "ng": 0, "unknown": 0, "unreadable": 0, "not_judged": 0, "overlays": 0}
    first_error = None
    bar = Progress(len(inputs), progress, desc="predict")
    try:
        with be, PredictionWriter(out_path) as writer:
            for seq, (item, target) in enumerate(zip(inputs, targets, strict=True)):
                pred = predict_image(be, manifest, thresholds, item.path, seq)
                rec = pred.record
                counts[rec["label"]] += 1
                if pred.problem is not None:
                    counts[pred.problem] += 1
                    first_error = first_error or f"{item.path}: {rec['error']}"
                rec["overlay"] = None
                if overlays and pred.image is not None:
                    write_png(out_path / target, render_overlay(pred.image, pred.heatmap, pred.regions,
                                                                caption(rec), rec["label"]))
                    rec["overlay"] = target
                    counts["overlays"] += 1
                writer.write(rec)
                bar.step()
    finally:
        bar.close()
    summary = {"model_id": manifest.model_id, "backend": backend_name, "threshold": thresholds.image,
               "threshold_source": source, "images": len(inputs), **counts, "out_dir": str(out_path),
               "predictions": str(out_path / PREDICTIONS_JSONL), "predictions_csv": str(out_path / PREDICTIONS_CSV),
               "first_error": first_error}
    if counts["ok"] + counts["ng"] == 0:
        raise DataError(f"none of the {len(inputs)} images could be judged ({counts['unreadable']} unreadable; "
                        f"first: {first_error}); see {out_path / PREDICTIONS_JSONL}")
    return summary
