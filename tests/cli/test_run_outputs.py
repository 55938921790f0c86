"""``run --view / --archive / --show`` end to end: the archive fills while the line runs, a view on another
address without a token and a missing GUI are one line and an exit code before the model loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_inspect.cli import main
from edge_inspect.view.window import gui_backend
from tests.cli.test_run_cmd import free_port

REPO = Path(__file__).resolve().parents[2]


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "edge_inspect", "run", "--no-control",
                           "--bind", f"tcp://127.0.0.1:{free_port()}", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_run_with_archive_and_view_then_list(tiny_model_dir, tmp_path, capsys):
    out = _run("--camera", "synthetic://?size=96&defect_rate=0.5", "--model", str(tiny_model_dir), "--max-frames",
               "12", "--mode", "lossless", "--archive", str(tmp_path / "arch"), "--view", "127.0.0.1:0")
    assert out.returncode == 0, out.stderr
    assert "parts judged: 12" in out.stdout and "live view: http://127.0.0.1:" in out.stdout
    ng = int(out.stdout.split("ng ")[1].split(",")[0])
    assert main(["archive", "list", "--archive", str(tmp_path / "arch"), "--json", "--verdict", "ng"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == ng > 0  # every NG part, written before run exited


def test_view_on_all_addresses_needs_a_token(tiny_model_dir):
    out = _run("--camera", "synthetic://", "--model", str(tiny_model_dir), "--view", "0.0.0.0:0", "--max-frames", "1")
    assert out.returncode == 2
    assert "needs a token" in out.stderr and "Traceback" not in out.stderr
    assert "model tiny-test-model loaded" not in out.stderr


@pytest.mark.skipif(gui_backend() is not None, reason="this OpenCV has a GUI; the refusal is for headless builds")
def test_show_without_gui_is_one_line_and_exit_3(tiny_model_dir):
    out = _run("--camera", "synthetic://", "--model", str(tiny_model_dir), "--show", "--max-frames", "1")
    assert out.returncode == 3
    assert out.stderr.strip().splitlines()[-1].startswith("edge-inspect run: error: run --show needs OpenCV with GUI")
    assert "Traceback" not in out.stderr


def test_station_run_archives_every_camera_and_list_filters_by_camera(tiny_model_dir, tmp_path, capsys):
    arch = str(tmp_path / "arch")
    out = _run("--camera", "top=synthetic://?size=96&defect_rate=0.5&seed=1",
               "--camera", "side=synthetic://?size=80&defect_rate=0.5&seed=2", "--model", str(tiny_model_dir),
               "--max-frames", "8", "--mode", "lossless", "--archive", arch, "--view", "127.0.0.1:0")
    assert out.returncode == 0, out.stderr
    assert "live view: http://127.0.0.1:" in out.stdout
    ng = {}
    for block in out.stdout.split("camera ")[1:]:
        cid = block.split(":")[0]
        if cid in ("top", "side"):
            assert "parts judged: 8" in block
            ng[cid] = int(block.split("ng ")[1].split(",")[0])
    assert set(ng) == {"top", "side"} and all(n > 0 for n in ng.values())
    for cid, flag in (("top", "--camera"), ("side", "--camera-id")):  # --camera-id: the older spelling
        assert main(["archive", "list", "--archive", arch, "--json", "--verdict", "ng", flag, cid]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows) == ng[cid] and {r["camera_id"] for r in rows} <= {cid}  # every NG part of this camera
    assert main(["archive", "list", "--archive", arch, "--json", "--verdict", "ng"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == sum(ng.values())
