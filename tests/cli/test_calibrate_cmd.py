"""``edge-inspect calibrate``: new thresholds from good parts on site, the kept previous manifest, refusals,
and the end-to-end promise: the false-reject rate measured on the line lies in the interval it printed."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspect.cli import main
from edge_inspect.manifest import load_manifest
from tests.fixtures.tiny_model import make_tiny_model


def _goods(folder: Path, n: int, seed: int, size: int = 64) -> Path:
    """``n`` good parts for the tiny model: grey near the ImageNet mean with sensor noise and a little
    brightness spread, so their scores vary smoothly (the tiny model scores squared distance from grey)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        level = 124 + rng.normal(0, 3)
        img = np.clip(level + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"good_{i:04d}.png"), img)
    return folder


def _defects(folder: Path, n: int, seed: int, size: int = 64) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "blob").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), 124, np.uint8)
        y, x = rng.integers(8, size - 16, 2)
        img[y : y + 8, x : x + 8] = 255 if i % 3 else 140  # every third defect is faint
        cv2.imwrite(str(folder / "blob" / f"d_{i:03d}.png"), img)
    _goods(folder / "good", 3, seed + 1)  # an MVTec test/ folder: good/ must be left out
    return folder


@pytest.fixture()
def model(tmp_path):
    return make_tiny_model(tmp_path / "model", size=64, threshold=0.5)


def test_calibrate_from_a_folder_replaces_the_calibration_and_keeps_the_previous(model, tmp_path, capsys):
    goods = _goods(tmp_path / "site_goods", 40, seed=1)
    rc = main(["calibrate", "--model", str(model), "--goods", str(goods), "--defects",
               str(_defects(tmp_path / "defects", 12, seed=2)), "--target-frr", "0.01"])
    out = capsys.readouterr().out
    assert rc == 0
    m = load_manifest(model)
    cal = m.calibration
    assert cal.image_threshold != 0.5 and cal.threshold_model.n == 40 and cal.threshold_model.target_frr == 0.01
    assert str(goods) in cal.threshold_model.source
    assert cal.defect_scores.count == 12 and "good/ left out" in cal.defects_source
    assert "previous image threshold 0.5" in out and "expected false rejects of good parts: 1.00 %" in out
    assert re.search(r"escapes: \d+ of 12 labelled defects pass", out)
    kept = list((model / "calibrations").glob("manifest-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["calibration"]["image_threshold"] == 0.5
    assert [g.sha256 for g in m.graphs] == [g.sha256 for g in load_manifest(model, verify_files=True).graphs]
    assert main(["info", "--model", str(model)]) == 0
    info = capsys.readouterr().out
    assert "for a 1 % false-reject rate" in info and "1 earlier calibration(s) kept" in info


def test_dry_run_writes_nothing(model, tmp_path, capsys):
    before = (model / "manifest.json").read_bytes()
    assert main(["calibrate", "--model", str(model), "--goods", str(_goods(tmp_path / "g", 10, 3)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "10 good images are few" in out
    assert (model / "manifest.json").read_bytes() == before and not (model / "calibrations").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--goods", "{missing}"], "not found"),
    (["--goods", "{empty}"], "no images"),
    (["--goods", "{goods}", "--defects", "{goods}/good"], "folder of good parts"),
    (["--goods", "{goods}", "--target-frr", "0.7"], "--target-frr"),
    (["--camera", "synthetic://", "--frames", "1"], "--frames"),
])
def test_bad_input_is_one_line_and_changes_nothing(model, tmp_path, capsys, argv, message):
    goods = tmp_path / "gg"
    _goods(goods / "good", 4, 5)
    (tmp_path / "empty").mkdir()
    subs = {"missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"), "goods": str(goods)}
    before = (model / "manifest.json").read_bytes()
    rc = main(["calibrate", "--model", str(model), *[a.format(**subs) for a in argv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and message in err[0] and "Traceback" not in err[0]
    assert (model / "manifest.json").read_bytes() == before


def test_teach_from_the_camera_needs_confirmation(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    goods = _goods(tmp_path / "cam", 12, seed=6)
    uri = f"dir://{goods}"
    assert main(["calibrate", "--model", str(model), "--camera", uri, "--frames", "12"]) != 0
    assert "--yes" in capsys.readouterr().err
    saved = tmp_path / "saved"
    assert main(["calibrate", "--model", str(model), "--camera", uri, "--frames", "12", "--yes",
                 "--save-frames", str(saved)]) == 0
    assert len(list(saved.glob("*.png"))) == 12
    assert load_manifest(model).calibration.threshold_model.source.startswith("site teach: 12 frames")
    assert main(["calibrate", "--model", str(model), "--camera", uri, "--frames", "20", "--yes"]) != 0
    assert "12 of 20 frames" in capsys.readouterr().err  # the folder ran out: said, nothing written


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_false_reject_rate_on_the_line_lies_in_the_calibrated_interval(model, tmp_path, capsys):
    """Calibrate on 60 goods for 5 % false rejects, then run the line on 300 goods it never saw."""
    assert main(["calibrate", "--model", str(model), "--goods", str(_goods(tmp_path / "site", 60, seed=10)),
                 "--target-frr", "0.05"]) == 0
    tm = load_manifest(model).calibration.threshold_model
    capsys.readouterr()
    line = _goods(tmp_path / "line", 300, seed=11)
    rc = main(["run", "--model", str(model), "--camera", f"dir://{line}", "--mode", "lossless", "--no-control",
               "--bind", f"tcp://127.0.0.1:{_free_port()}"])
    out = capsys.readouterr().out
    assert rc == 0, out
    ok, ng = (int(re.search(rf"\b{k} (\d+)", out).group(1)) for k in ("ok", "ng"))
    assert ok + ng == 300
    measured = ng / 300
    assert tm.frr_interval[0] <= measured <= tm.frr_interval[1], (measured, tm.frr_interval)
    assert tm.frr_interval[0] < 0.05 < tm.frr_interval[1]
