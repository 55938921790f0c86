"""End-to-end evaluation on a tiny generated MVTec-style category with the tiny ONNX model."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.cli import main
from edge_inspect.errors import DataError, DependencyError
from edge_inspect.evaluation.runner import evaluate, score_parts, scoring_manifest
from edge_inspect.manifest import (
    ScoreFusion,
    ThresholdModel,
    load_manifest,
    save_manifest,
)
from tests.fixtures.tiny_model import add_global_output

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
    assert all(set(x) == {"path", "score", "label", "truth"} for x in lines)  # no score_fusion: no score parts

    op = m["operating_point"]
    assert op["confusion"] == {"threshold": 0.5, "true_ok": 6, "false_reject": 0, "escape": 0, "caught": 7}
    curve = op["curve"]
    assert curve["in_force"]["threshold"] == 0.5 and curve["in_force"]["escape_rate"] == 0.0
    scores = sorted({x["score"] for x in lines})
    assert curve["thresholds"] == scores  # every distinct score, ascending
    assert len(curve["false_reject_rate"]) == len(curve["escape_rate"]) == len(scores)
    assert curve["escape_rate"][-1] == 1.0 and curve["false_reject_rate"][0] == 0.0  # goods all tie at the lowest
    sug = op["suggested_thresholds"]
    assert sug["for_information_only"] is True and "6 good and 7 defective" in sug["measured_on"]
    assert [p["target_false_reject_rate"] for p in sug["points"]] == [0.001, 0.005, 0.01, 0.02]
    good_max = max(x["score"] for x in lines if x["truth"] == "good")
    assert all(p["threshold"] == good_max and p["escape_rate"] == 0.0 for p in sug["points"])
    assert op["false_reject_rate_at_zero_escapes"]["threshold"] == good_max
    assert op["escape_rate_at_1pct_false_rejects"]["escape_rate"] == 0.0
    assert op["calibration"] is None and "threshold_model" in op["calibration_skipped"]
    assert m["score_parts"] is None

    html = (out / "report.html").read_text()
    assert "<h2>Operating point</h2>" in html and "Suggested thresholds" in html and "edge-inspect calibrate" in html
    pngs = ["roc_image.png", "roc_pixel.png", "frr_escape.png", "score_histogram.png", "worst_misses.png",
            "worst_false_alarms.png"]
    for name in pngs:
        assert (out / name).stat().st_size > 1000
        assert f'href="{name}"' in html
    assert html.count("data:image/png;base64,") == len(pngs)


def _worst_misses_rows(html: str) -> list[tuple[str, str]]:
    """(path, verdict) rows of the report's worst-misses table."""
    table = html.split("<h3>Worst misses")[1].split("</table>")[0]
    return re.findall(r"<code>([^<]+)</code>.*?<td>([^<]+)</td></tr>", table)


def test_worst_misses_are_the_lowest_scored_defects_caught_or_escaped(tiny_model_dir, category, tmp_path):
    # threshold 4: two scratches (~3.0, ~3.6) escape, the third scratch (~5.6) and the blobs (~6) are caught
    out = tmp_path / "out"
    m = evaluate(tiny_model_dir, category, "widget", out, threshold=4.0, progress=False)
    assert m["operating_point"]["confusion"] == {"threshold": 4.0, "true_ok": 6, "false_reject": 0, "escape": 2,
                                                 "caught": 5}
    assert m["operating_point"]["threshold_source"] == "override"
    rows = _worst_misses_rows((out / "report.html").read_text())
    assert rows[:3] == [("test/scratch/000.png", "ESCAPED (OK)"), ("test/scratch/001.png", "ESCAPED (OK)"),
                        ("test/scratch/002.png", "caught (NG)")]
    assert len(rows) == 6 and all(v == "caught (NG)" for _, v in rows[2:])
    assert {p for p, _ in rows} <= {f"test/{t}/{i:03d}.png" for t in ("blob", "scratch") for i in range(4)}


def _copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(("image_threshold", "false_rejects", "consistent"), [(0.5, 0, True), (0.01, 6, False)])
def test_calibration_threshold_model_is_compared_with_the_test_goods(tiny_model_dir, category, tmp_path,
                                                                    image_threshold, false_rejects, consistent):
    """Goods score ~0.05: a calibrated threshold of 0.5 rejects none (agrees with an expected 0.5 %),
    0.01 rejects all six (Wilson 90 % interval 69–100 %: disagrees)."""
    model = _copy_model(tiny_model_dir, tmp_path / "model")
    m = load_manifest(model)
    m.calibration.image_threshold = image_threshold
    m.calibration.threshold_model = ThresholdModel(
        n=40, center=0.05, scale=0.01, yj_lambda=1.0, mean=0.0, std=1.0, target_frr=0.005, expected_frr=0.005,
        confidence=0.9, frr_interval=(0.001, 0.02), threshold_interval=(0.4, 0.6), source="held-out goods (test)",
        calibrated_at="2024-01-01T00:00:00+00:00")
    m.calibration.escape_rate, m.calibration.escape_interval = 0.1, (0.02, 0.3)
    save_manifest(m, model)
    # the comparison is made at the calibrated threshold even when another one is in force
    r = evaluate(model, category, "widget", tmp_path / "out", threshold=3.3, progress=False)
    cal = r["operating_point"]["calibration"]
    assert cal["threshold"] == image_threshold and r["operating_point"]["confusion"]["threshold"] == 3.3
    assert cal["expected_false_reject_rate"] == 0.005 and cal["expected_false_reject_interval"] == [0.001, 0.02]
    assert cal["confidence"] == 0.9 and cal["calibration_n"] == 40 and cal["target_false_reject_rate"] == 0.005
    assert cal["measured_false_rejects"] == false_rejects and cal["good"] == 6
    assert cal["measured_false_reject_rate"] == false_rejects / 6
    assert cal["consistent"] is consistent
    assert cal["expected_escape_rate"] == 0.1 and cal["measured_escape_rate"] == 0.0
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Calibration vs test goods" in html and ("DISAGREES" in html) is (not consistent)


def test_score_fusion_adds_score_parts_to_predictions_and_report(tiny_model_dir, category, tmp_path):
    model = _copy_model(tiny_model_dir, tmp_path / "model")
    add_global_output(model)
    assert "global_score" not in load_manifest(model).extra_outputs  # the runner must ask for it itself
    out = tmp_path / "out"
    m = evaluate(model, category, "widget", out, progress=False)
    assert m["score_parts"] == {"global_output": "global_score", "available": True, "reason": None}
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(set(x) == {"path", "score", "label", "truth", "score_parts"} for x in lines)
    good_global = max(x["score_parts"]["global"] for x in lines if x["truth"] == "good")
    for x in lines:
        parts = x["score_parts"]
        assert parts["map"] + parts["global"] == pytest.approx(x["score"], abs=1e-9)
        # global part = 2·(mean(map) − 1)/0.5. A grey good's map is flat, so its mean is its max (the score);
        # a defect's map peaks on the defect, so its mean lies well below the score but above a good's
        if x["truth"] == "good":
            assert parts["global"] == pytest.approx(4 * (x["score"] - 1), abs=1e-4)
        else:
            assert good_global + 1e-3 < parts["global"] < 4 * (x["score"] - 1)
    html = (out / "report.html").read_text()
    assert re.search(r"= map -?[0-9.]+ \+ global -?[0-9.]+", html)


def test_score_parts_split_a_fused_score():
    fusion = ScoreFusion(global_weight=0.5, global_mean=10.0, global_std=2.0)
    parts = score_parts(np.array([3.0, 1.0]), np.array([14.0, 8.0]), fusion)
    # global part 0.5·(14−10)/2 = 1 and 0.5·(8−10)/2 = −0.5; the map part is the rest
    assert parts == [{"map": 2.0, "global": 1.0}, {"map": 1.5, "global": -0.5}]
    with pytest.raises(DataError, match="global scores"):
        score_parts([1.0, 2.0], [1.0], fusion)


def test_scoring_manifest_asks_for_the_global_output_only_when_fused(tiny_model_dir):
    m = load_manifest(tiny_model_dir)
    assert scoring_manifest(m) is m  # no score_fusion: unchanged
    fused = m.model_copy(update={"score_fusion": ScoreFusion(global_output="g", global_weight=1, global_mean=0,
                                                             global_std=1)})
    assert scoring_manifest(fused).extra_outputs == ["g"]
    already = fused.model_copy(update={"extra_outputs": ["st_map", "g"]})
    assert scoring_manifest(already).extra_outputs == ["st_map", "g"]


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
    op = m["operating_point"]
    assert op["curve"]["escape_rate"] is None and "no defective parts" in op["curve"]["reason"]
    assert op["false_reject_rate_at_zero_escapes"]["threshold"] is None
    assert op["confusion"] == {"threshold": 0.5, "true_ok": 6, "false_reject": 0, "escape": 0, "caught": 0}
    assert (tmp_path / "out" / "report.html").exists()
    assert not (tmp_path / "out" / "frr_escape.png").exists()  # no escapes to plot


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


def test_torch_backend_is_handed_in_by_the_cli_and_its_absence_is_one_line(tiny_model_dir, category, tmp_path,
                                                                           monkeypatch, capsys):
    import sys

    from edge_inspect.errors import ConfigError

    with pytest.raises(ConfigError, match="hand in its class"):  # evaluation never imports the trainer itself
        evaluate(tiny_model_dir, category, "widget", tmp_path / "out", backend="torch", progress=False)
    monkeypatch.setitem(sys.modules, "trainer.evaluate_backend", None)  # import raises ImportError
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(category), "--category", "widget",
               "--out", str(tmp_path / "out"), "--backend", "torch", "--no-progress", "--no-report"])
    err = capsys.readouterr().err
    assert rc == 3 and "eval --backend torch" in err and "edge-inspect[train]" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_evaluation_never_imports_the_trainer():
    import ast

    import edge_inspect.evaluation as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.startswith("trainer.") and " " not in node.value else []
            assert not any(n == "trainer" or n.startswith("trainer.") for n in names), f"{path.name}: {names}"


class _PixelsBackend:
    """A backend factory's product whose graph input is called 'pixels' (the manifest says so): forwards
    to the tiny model's ONNX Runtime backend, whose graphs call it 'image'."""

    name = "pixels-backend"
    opened_with = None

    def __init__(self, model_dir, manifest):
        from edge_inspect.backends.onnxrt import OnnxRuntimeBackend

        type(self).opened_with = manifest
        self.inputs_seen: set[str] = set()
        inner = manifest.model_copy(update={"input": manifest.input.model_copy(update={"name": "image"})})
        self.inner = OnnxRuntimeBackend(model_dir, inner)

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        assert self.inputs_seen == {"pixels"}
        return self.inner.__exit__(*exc)

    def infer(self, inputs):
        self.inputs_seen |= set(inputs)
        return self.inner.infer({"image": inputs["pixels"]})


def test_a_handed_in_backend_gets_the_manifest_input_name(tiny_model_dir, category, tmp_path):
    model = _copy_model(tiny_model_dir, tmp_path / "model")
    m = load_manifest(model)
    m.input.name = "pixels"
    save_manifest(m, model)
    r = evaluate(model, category, "widget", tmp_path / "out", backend=_PixelsBackend, progress=False, report=False)
    assert r["backend"] == "pixels-backend" and r["image_auroc"] == 1.0
    assert _PixelsBackend.opened_with.input.name == "pixels"


def test_threshold_below_the_models_lower_bound_is_refused(tiny_model_dir, category, tmp_path):
    from edge_inspect.errors import ConfigError

    model = _copy_model(tiny_model_dir, tmp_path / "model")
    m = load_manifest(model)
    m.calibration.score_lower_bound = 0.0
    save_manifest(m, model)
    with pytest.raises(ConfigError, match="below"):
        evaluate(model, category, "widget", tmp_path / "out", threshold=-1.0, progress=False, report=False)


# ---------------------------------------------------------------- data check


def test_matching_data_gives_no_data_warning(tiny_model_dir, tmp_path):
    cat = make_category(tmp_path / "data")
    for f in cat.rglob("*.png"):  # every image and mask 64x64, as train/good
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(f), cv2.resize(img, (64, 64), interpolation=cv2.INTER_NEAREST))
    m = evaluate(tiny_model_dir, tmp_path / "data", "widget", tmp_path / "out", progress=False, report=False)
    dc = m["data_check"]
    assert dc["warnings"] == []
    assert dc["test_images"] == {"images": 13, "grey": 0, "colour": 13, "unknown": 0, "sizes": {"64x64": 13},
                                 "other_sizes": 0}
    assert dc["train_images"]["sizes"] == {"64x64": 2}


def test_greyscale_and_other_sized_test_data_is_warned_about(tiny_model_dir, category, tmp_path, caplog, capsys):
    cat = category / "widget"
    for f in (cat / "test").rglob("*.png"):  # the test images become greyscale files; train/good stays colour
        cv2.imwrite(str(f), cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
    with caplog.at_level(logging.WARNING):
        m = evaluate(tiny_model_dir, category, "widget", tmp_path / "out", progress=False)
    warnings = m["data_check"]["warnings"]
    assert len(warnings) == 2
    assert warnings[0] == "13 of 13 test images are greyscale, but the category's train/good images are colour"
    assert warnings[1].startswith("6 of 13 test images differ in size or aspect ratio") and "96x48 ×2" in warnings[1]
    assert "train/good: 64x64" in warnings[1] and "model input 64x64" in warnings[1]
    assert m["data_check"]["test_images"]["grey"] == 13
    assert all(w in caplog.text for w in warnings)
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Data check: 13 of 13 test images are greyscale" in html
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["data_check"]["warnings"] == warnings
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(category), "--category", "widget",
               "--out", str(tmp_path / "cli"), "--no-progress", "--no-report"])
    assert rc == 0 and "data check: 13 of 13 test images are greyscale" in capsys.readouterr().out


def test_goods_scoring_above_the_calibration_are_warned_about(tiny_model_dir, category, tmp_path):
    from edge_inspect.manifest import ScoreStats

    model = _copy_model(tiny_model_dir, tmp_path / "model")
    m = load_manifest(model)
    m.calibration.good_scores = ScoreStats(count=40, mean=0.0, std=0.001, min=0.0, max=0.002)  # goods score ~0.05
    save_manifest(m, model)
    r = evaluate(model, category, "widget", tmp_path / "out", progress=False, report=False)
    assert any("above every good score the model was calibrated on (highest 0.002 of 40)" in w
               for w in r["data_check"]["warnings"])


def test_cli_prints_table_and_report_path(tiny_model_dir, category, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["eval", "--model", str(tiny_model_dir), "--data", str(category), "--category", "widget",
               "--out", str(out), "--no-progress", "--no-report"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "image AUROC" in text and "1.0000" in text and "escape rate" in text
    assert "operating point" in text and "6 good OK, 0 false rejects, 0 escapes, 7 defects caught" in text
    assert "false rejects at 0 escapes: threshold" in text and "for information only" in text
    assert "false rejects <= 1.0%" in text
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
