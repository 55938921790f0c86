"""``edge-inspect predict``: a folder or glob of images through the tiny ONNX model; overlays, predictions.jsonl
and predictions.csv; unreadable images recorded and counted; bad inputs as one line and a non-zero exit."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.cli import main
from edge_inspect.decision import Thresholds
from edge_inspect.errors import DataError
from edge_inspect.evaluation.predict import list_inputs, overlay_paths, predict, predict_image
from edge_inspect.evaluation.scoring import scoring_manifest
from edge_inspect.manifest import load_manifest
from edge_inspect.overlay import render_overlay
from tests.fixtures.tiny_model import add_global_output

GREY = 124  # scores ~0 with the tiny model; a white blob scores ~6 (threshold 0.5)
BLOBS = {"sub/b0.png": ((64, 64), (24, 24, 16, 16)), "sub/deeper/b1.png": ((80, 120), (20, 50, 24, 30))}
GOODS = {"g0.png": (64, 64), "g1.png": (48, 96), "sub/g2.png": (64, 64)}
BAD = "sub/corrupt.png"


def _blob(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    img = np.full((*shape, 3), GREY, np.uint8)
    y, x, bh, bw = box
    img[y:y + bh, x:x + bw] = 255
    return img


@pytest.fixture
def images(tmp_path) -> Path:
    """3 good + 2 blob images (some in subfolders, two sizes), 1 corrupt PNG, and files that are not inputs."""
    root = tmp_path / "imgs"
    for rel, shape in GOODS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.full((*shape, 3), GREY, np.uint8))
    for rel, (shape, box) in BLOBS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), _blob(shape, box))
    (root / BAD).write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes((root / "g0.png").read_bytes())
    return root


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_folder_gives_overlays_jsonl_csv_and_counts_the_unreadable(tiny_model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model_dir), "--images", str(images), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "images      6" in printed and "ok / ng     3 / 2" in printed
    assert "1 unreadable" in printed and "overlays    5" in printed

    recs = _records(out)
    by_rel = {Path(r["path"]).relative_to(images).as_posix(): r for r in recs}
    assert sorted(by_rel) == sorted([*GOODS, *BLOBS, BAD])  # hidden and non-image files are no inputs
    threshold = load_manifest(tiny_model_dir).calibration.image_threshold
    for rel, r in by_rel.items():
        if rel == BAD:
            assert r["label"] == "unknown" and r["score"] is None and r["overlay"] is None
            assert "cannot decode" in r["error"] and r["regions"] == [] and r["threshold"] == threshold
            continue
        assert r["threshold"] == threshold and "error" not in r and "score_parts" not in r
        assert r["label"] == ("ng" if r["score"] > threshold else "ok")
        assert r["label"] == ("ng" if rel in BLOBS else "ok")
        assert 0.0 <= r["normalised_score"] <= 1.0
        assert (r["regions"] != []) is (rel in BLOBS)
        # an overlay at the same relative path: the image at its own size, a caption strip below
        assert r["overlay"] == rel
        overlay = cv2.imread(str(out / r["overlay"]))
        original = cv2.imread(str(images / rel))
        assert overlay.shape[1] == original.shape[1] and overlay.shape[0] > original.shape[0]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted([*GOODS, *BLOBS])

    with open(out / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "label", "score", "threshold", "normalised_score", "regions_count"]
    assert len(rows) == len(recs)
    for row, r in zip(rows, recs, strict=True):
        assert row["path"] == r["path"] and row["label"] == r["label"]
        assert row["regions_count"] == str(len(r["regions"]))
        if r["score"] is None:
            assert row["score"] == "" and row["normalised_score"] == ""
        else:
            assert float(row["score"]) == r["score"] and float(row["threshold"]) == r["threshold"]


def test_ng_overlay_shows_the_heat_map_and_boxes_the_blob(tiny_model_dir, images, tmp_path):
    out = tmp_path / "out"
    predict(tiny_model_dir, images, out, progress=False)
    rec = next(r for r in _records(out) if r["path"].endswith("b1.png"))
    (h, w), (by, bx, bh, bw) = BLOBS["sub/deeper/b1.png"]
    assert rec["label"] == "ng" and len(rec["regions"]) == 1
    box = rec["regions"][0]
    assert box["x"] <= bx and box["y"] <= by and box["x"] + box["w"] >= bx + bw and box["y"] + box["h"] >= by + bh
    assert box["w"] < w and box["h"] < h  # the blob, not the whole image
    overlay = cv2.imread(str(out / rec["overlay"]))[:h]
    original = cv2.imread(str(images / "sub/deeper/b1.png"))
    assert np.abs(overlay.astype(int) - original.astype(int)).mean() > 10  # the heat map is blended in
    # the box: white on its edges, which the blended heat map alone never is
    assert (overlay[box["y"], box["x"]:box["x"] + box["w"]] == 255).all()
    assert (overlay[box["y"]:box["y"] + box["h"], box["x"]] == 255).all()
    # the heat map is hot (red: B low, R high in BGR) on the blob and cold away from it
    centre = overlay[by + bh // 2, bx + bw // 2].astype(int)
    corner = overlay[2, 2].astype(int)
    assert centre[2] > centre[0] and corner[0] > corner[2]


def test_render_overlay_is_rgb_uint8_with_a_caption_strip(tiny_model_dir, images):
    manifest = load_manifest(tiny_model_dir)
    from edge_inspect.backends.select import open_backend

    with open_backend(tiny_model_dir, "onnxruntime", manifest=scoring_manifest(manifest)) as be:
        pred = predict_image(be, manifest, Thresholds.from_manifest(manifest), images / "sub/b0.png")
        bad = predict_image(be, manifest, Thresholds.from_manifest(manifest), images / BAD)
    assert bad.record["label"] == "unknown" and bad.problem == "unreadable" and bad.image is None
    rgb = render_overlay(pred.image, pred.heatmap, pred.regions, [("NG", True), ("score 6", False)], "ng")
    assert rgb.dtype == np.uint8 and rgb.shape[1:] == (64, 3) and rgb.shape[0] > 64
    strip = rgb[64:]
    assert (strip[..., 0] > 200).any()  # the red "NG"
    plain = render_overlay(pred.image, None, [], [("OK", True)], "ok")
    assert (plain[:64] == pred.image).all()  # no heat map, no box: the image as it was


def test_threshold_override_changes_labels_and_is_validated(tiny_model_dir, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model_dir), "--images", str(images), "--out", str(out),
                 "--threshold", "100", "--no-progress", "--no-overlays"]) == 0
    recs = [r for r in _records(out) if r["label"] != "unknown"]
    assert len(recs) == 5 and all(r["label"] == "ok" and r["threshold"] == 100.0 for r in recs)
    assert all(r["overlay"] is None for r in recs) and not list(out.rglob("*.png"))
    assert "ok / ng     5 / 0" in capsys.readouterr().out

    assert main(["predict", "--model", str(tiny_model_dir), "--images", str(images), "--out", str(out),
                 "--threshold", "0.01", "--no-progress", "--no-overlays"]) == 0
    assert all(r["label"] == "ng" for r in _records(out) if r["label"] != "unknown")  # grey ~0.05 > 0.01

    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model_dir), "--images", str(images), "--out", str(out),
                 "--threshold", "nan", "--no-progress"]) == 2
    assert "--threshold" in _one_line(capsys.readouterr().err)


def test_glob_pattern(tiny_model_dir, images, tmp_path):
    out = tmp_path / "out"
    summary = predict(tiny_model_dir, f"{images}/sub/**/b*.png", out, progress=False)
    assert summary["images"] == 2 and summary["ng"] == 2 and summary["unknown"] == 0
    # relative to the pattern's fixed folder (imgs/sub)
    assert sorted(r["overlay"] for r in _records(out)) == ["b0.png", "deeper/b1.png"]
    assert (out / "deeper" / "b1.png").is_file()

    out2 = tmp_path / "out2"
    assert predict(tiny_model_dir, f"{images}/*.png", out2, progress=False)["images"] == 2  # not recursive


def test_inputs_leave_out_the_output_folder_and_overlay_names_do_not_clash(images, tmp_path):
    (images / "pred").mkdir()
    cv2.imwrite(str(images / "pred" / "old.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(images / "g0.jpg"), np.full((8, 8, 3), GREY, np.uint8))
    inputs = list_inputs(images, exclude=images / "pred")
    rels = [i.rel_path for i in inputs]
    assert "pred/old.png" not in rels and "g0.jpg" in rels and ".hidden.png" not in rels
    targets = dict(zip(rels, overlay_paths(inputs), strict=True))
    assert targets["g0.jpg"] == "g0.jpg.png" and targets["g0.png"] == "g0.png.png"  # a.jpg next to a.png
    assert targets["sub/g2.png"] == "sub/g2.png"
    single = list_inputs(images / "sub" / "b0.png")
    assert [(i.path, i.rel_path) for i in single] == [(images / "sub" / "b0.png", "b0.png")]


def test_fused_score_gives_score_parts(tiny_model_dir, images, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    add_global_output(model)
    out = tmp_path / "out"
    predict(model, images, out, backend="onnxruntime", progress=False)
    judged = [r for r in _records(out) if r["label"] != "unknown"]
    assert len(judged) == 5
    for r in judged:
        parts = r["score_parts"]
        assert parts["map"] + parts["global"] == pytest.approx(r["score"], abs=1e-6)
    blob = next(r for r in judged if r["path"].endswith("b0.png"))
    assert cv2.imread(str(out / blob["overlay"])).shape[0] > 64


def test_bad_inputs_are_one_line_and_a_non_zero_exit(tiny_model_dir, images, tmp_path, capfd):
    def run(*args) -> tuple[int, str]:
        code = main(["predict", *args, "--no-progress"])
        return code, _one_line(capfd.readouterr().err)

    model, out = str(tiny_model_dir), str(tmp_path / "out")
    code, err = run("--model", str(tmp_path / "nomodel"), "--images", str(images), "--out", out)
    assert code != 0 and "model folder not found" in err
    code, err = run("--model", model, "--images", str(tmp_path / "nowhere"), "--out", out)
    assert code != 0 and "no such image folder" in err
    code, err = run("--model", model, "--images", f"{images}/*.bmp", "--out", out)
    assert code != 0 and "no images matched" in err
    (tmp_path / "empty").mkdir()
    code, err = run("--model", model, "--images", str(tmp_path / "empty"), "--out", out)
    assert code != 0 and "no images matched" in err
    (tmp_path / "afile").write_text("x")
    code, err = run("--model", model, "--images", str(images), "--out", str(tmp_path / "afile"))
    assert code == 2 and "is a file" in err
    code, err = run("--model", model, "--images", str(images), "--out", str(images))  # would overwrite inputs
    assert code != 0 and "no images matched" in err
    assert not (tmp_path / "out").exists()  # nothing written for refused inputs


def test_no_readable_image_is_a_non_zero_exit_after_writing_the_records(tiny_model_dir, images, tmp_path, capfd):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes((images / BAD).read_bytes())  # a PNG signature, then junk: OpenCV would log
    (bad / "b.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    code = main(["predict", "--model", str(tiny_model_dir), "--images", str(bad), "--out", str(out),
                 "--no-progress"])
    assert code == 1
    assert "none of the 2 images could be judged" in _one_line(capfd.readouterr().err)  # OpenCV's lines too
    assert [r["label"] for r in _records(out)] == ["unknown", "unknown"]
    with pytest.raises(DataError, match="2 unreadable"):
        predict(tiny_model_dir, bad, out, progress=False)
