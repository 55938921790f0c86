"""End-to-end evaluation on a tiny generated MVTec-style category with the tiny ONNX model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.cli import main
from edge_inspect.errors import DataError, DependencyError
from edge_inspect.evaluation.runner import evaluate

GREY = 124  # scores ~0 with the tiny model (close to the ImageNet mean)


def _blob_image(h: int, w: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grey (h, w) image with a white rectangle ``box`` = (y, x, bh, bw), and its (h, w) uint8 mask."""
    img = np.full((h, w, 3), GREY, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y, x, bh, bw = box
    img[y:y + bh, x:x + bw] = 255
    mask[y:y + bh, x:x + bw] = 255
    return img, mask


def make_category(root: Path, name: str = "widget", masks: bool = True) -> Path:
    """root/name with train/good (2), test/good (6, two non-square), test/blob (4), test/scratch (3)."""
    cat = root / name
    for d in ("train/good", "test/good", "test/blob", "test/scratch"):
        (cat / d).mkdir(parents=True)
    grey = np.full((64, 64, 3), GREY, np.uint8)
    for i in range(2):
        cv2.imwrite(str(cat / "train/good" / f"{i:03d}.png"), grey)
    for i, (h, w) in enumerate([(64, 64), (64, 64), (48, 96), (80, 40), (64, 64), (32, 32)]):
        cv2.imwrite(str(cat / "test/good" / f"{i:03d}.png"), np.full((h, w, 3), GREY, np.uint8))
    defects = {
        "blob": [((64, 64), (20, 20, 16, 16)), ((48, 96), (10, 40, 14, 20)), ((64, 64), (5, 5, 12, 12)),
                 ((80, 40), (30, 10, 20, 16))],
        "scratch": [((64, 64), (30, 4, 4, 56)), ((64, 96), (10, 10, 30, 6)), ((64, 64), (40, 20, 6, 30))],
    }
    for dtype, items in defects.items():
        if masks:
            (cat / "ground_truth" / dtype).mkdir(parents=True)
        for i, ((h, w), box) in enumerate(items):
            img, mask = _blob_image(h, w, box)
            cv2.imwrite(str(cat / "test" / dtype / f"{i:03d}.png"), img)
            if masks:
                cv2.imwrite(str(cat / "ground_truth" / dtype / f"{i:03d}_mask.png"), mask)
    return cat


@pytest.fixture
def category(tmp_path):
    make_category(tmp_path / "data")
    return tmp_path / "data"


def test_evaluate_writes_metrics_predictions_and_report(tiny_model_dir, category, tmp_path):
    out = tmp_path / "out"
    result = evaluate(tiny_model_dir, category, "widget", out, progress=False)

    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(result))
    assert m["image_auroc"] == 1.0  # blobs score ~6, grey ~0
    assert m["f1_max"] == 1.0
    assert 0.9 < m["pixel_auroc"] <= 1.0
    assert 0.5 < m["aupro_30"] <= 1.0
    assert m["threshold"] == 0.5 and m["threshold_source"] == "manifest"
    assert m["false_reject_rate"] == 0.0 and m["escape_rate"] == 0.0
    assert m["counts"] == {"images": 13, "scored": 13, "good": 6, "defective": 7, "skipped": 0,
                           "per_type": {"blob": 4, "good": 6, "scratch": 3}}
    assert set(m["per_defect_type"]) == {"blob", "scratch"}
    assert m["per_defect_type"]["blob"]["count"] == 4
    assert m["per_defect_type"]["scratch"]["auroc"] == 1.0
    assert m["latency_ms"]["median"] > 0 and m["latency_ms"]["p99"] >= m["latency_ms"]["median"]
    assert m["backend"] == "onnxruntime" and m["model_id"] == "tiny-test-model"
    assert m["skipped"] == [] and m["pixel_metrics_skipped"] is None

    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 13
    by_path = {x["path"]: x for x in lines}
    assert by_path["test/good/002.png"]["label"] == "ok" and by_path["test/good/002.png"]["truth"] == "good"
    assert by_path["test/blob/001.png"]["label"] == "ng" and by_path["test/blob/001.png"]["truth"] == "blob"
    assert all(set(x) == {"path", "score", "label", "truth"} for x in lines)

    html = (out / "report.html").read_text()
    pngs = ["roc_image.png", "roc_pixel.png", "score_histogram.png", "worst_misses.png", "worst_false_alarms.png"]
    for name in pngs:
        assert (out / name).stat().st_size > 1000
        assert f'href="{name}"' in html
    assert html.count("data:image/png;base64,") == len(pngs)


def test_image_score_does_not_depend_on_size_or_aspect(tiny_model_dir, category, tmp_path):
    evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False, report=False)
    lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    good = [x["score"] for x in lines if x["truth"] == "good"]  # 64², 48×96, 80×40, 32²
    assert max(good) - min(good) < 1e-3
    assert not (tmp_path / "out" / "report.html").exists()


def test_threshold_override_changes_labels_and_rates(tiny_model_dir, category, tmp_path):
    m = evaluate(tiny_model_dir, category, "widget", tmp_path / "out", threshold=1e6, progress=False, report=False)
    assert m["threshold_source"] == "override"
    assert m["escape_rate"] == 1.0 and m["false_reject_rate"] == 0.0
    labels = {json.loads(x)["label"] for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()}
    assert labels == {"ok"}


def test_batched_scoring_matches_single(tiny_model_dir, category, tmp_path):
    a = evaluate(tiny_model_dir, category, "widget", tmp_path / "a", progress=False, report=False)
    b = evaluate(tiny_model_dir, category, "widget", tmp_path / "b", batch_size=4, progress=False, report=False)
    assert a["pixel_auroc"] == pytest.approx(b["pixel_auroc"], abs=1e-9)
    assert a["aupro_30"] == pytest.approx(b["aupro_30"], abs=1e-6)
    assert b["latency_ms"]["batch_size"] == 4


def test_category_without_masks_gives_image_metrics_only(tiny_model_dir, tmp_path, caplog):
    make_category(tmp_path / "data", masks=False)
    with caplog.at_level(logging.WARNING):
        m = evaluate(tiny_model_dir, tmp_path / "data", "widget", tmp_path / "out", progress=False)
    assert m["image_auroc"] == 1.0
    assert m["pixel_auroc"] is None and m["aupro_30"] is None
    assert "no ground_truth masks" in m["pixel_metrics_skipped"]
    assert "pixel metrics skipped" in caplog.text
    assert not (tmp_path / "out" / "roc_pixel.png").exists()
    assert (tmp_path / "out" / "report.html").exists()


def test_bad_files_are_skipped_and_reported(tiny_model_dir, category, tmp_path, caplog):
    cat = category / "widget"
    (cat / "test/good/005.png").write_bytes(b"not a png at all")  # unreadable image
    cv2.imwrite(str(cat / "ground_truth/blob/000_mask.png"), np.zeros((10, 10), np.uint8))  # wrong size
    with caplog.at_level(logging.WARNING):
        m = evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False, report=False)
    reasons = {s["path"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"test/good/005.png", "test/blob/000.png"}
    assert "cannot decode" in reasons["test/good/005.png"]
    assert "10x10" in reasons["test/blob/000.png"]
    assert m["counts"]["scored"] == 11 and m["counts"]["skipped"] == 2
    assert m["image_auroc"] == 1.0 and m["pixel_auroc"] is not None
    assert "test/good/005.png" in caplog.text
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 11


def test_only_good_images_still_gives_rates(tiny_model_dir, category, tmp_path):
    cat = category / "widget"
    shutil.rmtree(cat / "test/blob")
    shutil.rmtree(cat / "test/scratch")
    m = evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)
    assert m["image_auroc"] is None and "both good and defective" in m["image_metrics_skipped"]
    assert m["false_reject_rate"] == 0.0 and m["escape_rate"] is None
    assert (tmp_path / "out" / "report.html").exists()


def test_empty_category_is_a_data_error(tiny_model_dir, category, tmp_path):
    cat = category / "widget"
    for d in ("good", "blob", "scratch"):
        for f in (cat / "test" / d).iterdir():
            f.unlink()
    with pytest.raises(DataError):
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)


def test_all_images_unreadable_is_a_data_error(tiny_model_dir, category, tmp_path):
    for f in (category / "widget" / "test").rglob("*.png"):
        f.write_bytes(b"junk")
    with pytest.raises(DataError, match="no test image .* could be scored"):
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)


def test_torch_backend_missing_is_a_dependency_error(tiny_model_dir, category, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "trainer.evaluate_backend", None)  # import raises ImportError
    with pytest.raises(DependencyError, match="torch"):
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", backend="torch", progress=False)


def test_cli_prints_table_and_report_path(tiny_model_dir, category, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(category), "--category", "widget",
               "--out", str(out), "--no-progress", "--no-report"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "image AUROC" in text and "1.0000" in text and "escape rate" in text
    assert str(out / "metrics.json") in text


def test_cli_bad_category_is_one_line_error(tiny_model_dir, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--category", "nope",
               "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_without_matplotlib_fails_before_scoring(tiny_model_dir, category, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(DependencyError, match="no-report"):
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    m = evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False, report=False)
    assert m["image_auroc"] == 1.0 and m["report"] is None


@pytest.mark.parametrize("fails", ["predictions", "metrics", "figure", "report"])
def test_full_disk_while_writing_is_a_data_error_naming_the_file(tiny_model_dir, category, tmp_path, monkeypatch,
                                                                  fails):
    """ENOSPC from the JSON-lines file, write_text or savefig: DataError naming the path (one CLI line)."""
    import builtins
    import errno

    from matplotlib.figure import Figure

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fails == "predictions":
        real_open = builtins.open

        def open_(file, mode="r", *a, **k):
            if str(file).endswith("predictions.jsonl") and "w" in mode:
                no_space()
            return real_open(file, mode, *a, **k)

        monkeypatch.setattr(builtins, "open", open_)
        name = "predictions.jsonl"
    elif fails == "figure":
        monkeypatch.setattr(Figure, "savefig", no_space)
        name = ".png"
    else:
        name = "metrics.json" if fails == "metrics" else "report.html"
        real_write_text = Path.write_text

        def write_text(self, *a, **k):
            if self.name == name:
                no_space()
            return real_write_text(self, *a, **k)

        monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(DataError, match=r"cannot write \(No space left on device\)") as err:
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)
    assert name in str(err.value) and str(tmp_path / "out") in str(err.value)
