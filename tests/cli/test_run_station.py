"""``edge-inspect run`` with several cameras: --camera given more than once, [[cameras]] in the config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_inspect.cli import run_cmd
from edge_inspect.errors import ConfigError
from tests.cli.test_run_cmd import free_port, parse

REPO = Path(__file__).resolve().parents[2]


def test_one_camera_flag_is_the_one_camera_run_and_sets_config_cameras_aside(tmp_path, tiny_model_dir):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[cameras]]\nid = "top"\nuri = "synthetic://"\n[[cameras]]\nid = "side"\nuri = "dir://x"\n')
    s = run_cmd.settings_from_args(parse("--config", str(cfg), "--model", str(tiny_model_dir)))
    assert [c.id for c in s.cameras] == ["top", "side"]  # the config's station
    s = run_cmd.settings_from_args(parse("--config", str(cfg), "--model", str(tiny_model_dir), "--camera", "dir://y"))
    assert s.cameras == [] and s.camera.uri == "dir://y"  # the flag wins: one camera, as ever


def test_several_camera_flags_make_a_station(tiny_model_dir):
    s = run_cmd.settings_from_args(parse("--model", str(tiny_model_dir), "--camera", "top=synthetic://?fps=5",
                                         "--camera", "synthetic://?seed=2", "--camera", "dir://data/side"))
    assert [(c.id, c.uri) for c in s.cameras] == [("top", "synthetic://?fps=5"), (None, "synthetic://?seed=2"),
                                                  (None, "dir://data/side")]
    with pytest.raises(ConfigError, match="camera-id"):
        run_cmd.settings_from_args(parse("--model", "m", "--camera", "synthetic://", "--camera", "synthetic://",
                                         "--camera-id", "x"))


def test_bad_camera_table_is_one_config_error(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[[cameras]]\nid = "top.view"\nuri = "synthetic://"\n')
    with pytest.raises(ConfigError, match=r"cameras\.0\.id"):
        run_cmd.settings_from_args(parse("--config", str(cfg), "--model", "m"))
    cfg.write_text('[[cameras]]\nuri = "synthetic://"\nmode = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"cameras\.0\.mode"):
        run_cmd.settings_from_args(parse("--config", str(cfg), "--model", "m"))


def test_run_two_cameras_end_to_end(tiny_model_dir):
    out = subprocess.run(
        [sys.executable, "-m", "edge_inspect", "run", "--camera", "a=synthetic://?size=96",
         "--camera", "b=synthetic://?seed=3&size=96", "--model", str(tiny_model_dir), "--max-frames", "12",
         "--mode", "lossless", "--no-control", "--bind", f"tcp://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=90, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("parts judged: 12") == 2, out.stdout
    assert "camera a:" in out.stdout and "camera b:" in out.stdout
    assert "on onnxruntime" in out.stdout
    # one model for both cameras: 12 frames and 2 warm-ups each
    assert "28 frames (warm-ups included) in" in out.stdout and "for cameras a, b" in out.stdout


def test_a_threshold_one_camera_cannot_use_is_one_line_naming_it(tiny_model_dir, tmp_path, capsys):
    from edge_inspect.cli import main
    from tests.pipeline.fakes import model_variant

    bounded = model_variant(tiny_model_dir, tmp_path / "bounded", score_lower_bound=0.0, map_lower_bound=0.0)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[model]\ndir = "{bounded}"\n[[cameras]]\nid = "a"\nuri = "synthetic://"\n'
                   '[[cameras]]\nid = "b"\nuri = "synthetic://"\nimage_threshold = -1.0\n')
    code = main(["run", "--config", str(cfg), "--no-control", "--max-frames", "2",
                 "--bind", f"tcp://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "camera b" in err and "below" in err and len(err.strip().splitlines()) == 1
