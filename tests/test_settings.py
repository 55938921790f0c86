from __future__ import annotations

import subprocess
import sys

import pytest

from edge_inspect.errors import ConfigError
from edge_inspect.settings import load_settings


def test_defaults():
    s = load_settings()
    assert s.pipeline.mode == "free-run"
    assert s.model.backend == "auto"


def test_toml_env_and_cli_priority(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[camera]\nuri = "dir://a"\ncamera_id = "toml"\n[pipeline]\nmode = "lossless"\nqueue_size = 7\n')
    s = load_settings(cfg)
    assert (s.camera.uri, s.camera.camera_id, s.pipeline.mode, s.pipeline.queue_size) == ("dir://a", "toml", "lossless", 7)
    monkeypatch.setenv("EDGE_INSPECT_CAMERA__CAMERA_ID", "env")
    s = load_settings(cfg)
    assert s.camera.camera_id == "env"  # env beats the TOML file
    assert s.camera.uri == "dir://a"  # ...without dropping the TOML values of the same section
    s = load_settings(cfg, {"camera": {"uri": "synthetic://"}, "pipeline": {"queue_size": None}})
    assert (s.camera.uri, s.camera.camera_id, s.pipeline.queue_size) == ("synthetic://", "env", 7)


def test_bad_value_is_one_line_naming_the_field(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_INSPECT_PIPELINE__QUEUE_SIZE", "-3")
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "pipeline.queue_size" in msg and "\n" not in msg


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera\nuri=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[camera]\nnot_a_field = 1\n")
    with pytest.raises(ConfigError, match="camera.not_a_field"):
        load_settings(unknown)


def test_cli_reports_config_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nmode = "sometimes"\n')
    out = subprocess.run([sys.executable, "-m", "edge_inspect", "run", "--config", str(bad), "--camera", "synthetic://",
                          "--model", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert "pipeline.mode" in out.stderr or "model folder" in out.stderr


def test_drift_section_defaults_env_and_typos(tmp_path, monkeypatch):
    d = load_settings().drift
    assert (d.enabled, d.window, d.min_samples, d.check_every, d.alert_frr) == (True, 500, 50, 50, None)
    monkeypatch.setenv("EDGE_INSPECT_DRIFT__WINDOW", "200")
    monkeypatch.setenv("EDGE_INSPECT_DRIFT__ALERT_FRR", "0.05")
    d = load_settings().drift
    assert (d.window, d.alert_frr) == (200, 0.05)
    monkeypatch.setenv("EDGE_INSPECT_DRIFT__MIN_SAMPLES", "300")  # more than the window holds
    with pytest.raises(ConfigError, match="min_samples") as err:
        load_settings()
    assert "\n" not in str(err.value)
    typo = tmp_path / "typo.toml"
    typo.write_text("[drift]\nalert_rate = 0.05\n")
    with pytest.raises(ConfigError, match=r"drift\.alert_rate"):
        load_settings(typo)
