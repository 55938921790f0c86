from __future__ import annotations

import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from edge_inspect.errors import ConfigError
from edge_inspect.settings import Settings, load_settings


def test_defaults():
    s = load_settings()
    assert s == Settings()  # nothing set anywhere: the models' defaults
    assert s.model.backend == "auto"


def test_toml_env_and_cli_priority(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[camera]\nuri = "dir://a"\ncamera_id = "toml"\n[pipeline]\nmode = "lossless"\nqueue_size = 7\n')
    s = load_settings(cfg)
    assert ((s.camera.uri, s.camera.camera_id, s.pipeline.mode, s.pipeline.queue_size)
            == ("dir://a", "toml", "lossless", 7))
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


def test_each_source_in_its_place(tmp_path, monkeypatch):
    """flags > env > secrets dir > TOML file > defaults, merged key by key."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[camera]\nuri = "dir://toml"\ncamera_id = "toml"\nfps = 5.0\nwidth = 640\n')
    secrets = tmp_path / "credentials"
    secrets.mkdir()
    (secrets / "EDGE_INSPECT_CAMERA__URI").write_text("rtsp://user:pw@cam/secret\n")
    (secrets / "EDGE_INSPECT_CAMERA__CAMERA_ID").write_text("secret")
    (secrets / "EDGE_INSPECT_CAMERA__FPS").write_text("7")
    (secrets / "curve-server.key_secret").write_text("not a setting: ignored")
    monkeypatch.setenv("EDGE_INSPECT_CAMERA__CAMERA_ID", "env")
    monkeypatch.setenv("EDGE_INSPECT_CAMERA__FPS", "9")
    s = load_settings(cfg, {"camera": {"fps": 11.0}}, secrets_dir=secrets)
    c = s.camera
    assert (c.uri, c.camera_id, c.fps, c.width, c.height) == ("rtsp://user:pw@cam/secret", "env", 11.0, 640, None)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))  # systemd's LoadCredential= directory by default
    assert load_settings(cfg).camera.uri == "rtsp://user:pw@cam/secret"
    with pytest.raises(ConfigError, match="secrets directory not found"):
        load_settings(cfg, secrets_dir=tmp_path / "nowhere")


def test_no_state_between_calls_and_settings_alone_reads_nothing(tmp_path, monkeypatch):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[pipeline]\nmode = "lossless"\n')
    b.write_text("[pipeline]\nqueue_size = 9\n")
    assert load_settings(a).pipeline.mode == "lossless"
    s = load_settings(b)
    default_mode = Settings().pipeline.mode
    assert (s.pipeline.mode, s.pipeline.queue_size) == (default_mode, 9)  # nothing of a.toml is left over
    assert load_settings().pipeline.queue_size == 4
    monkeypatch.setenv("EDGE_INSPECT_PIPELINE__MODE", "lossless")
    # the model validates what it is given; load_settings reads the world
    assert Settings().pipeline.mode == default_mode
    assert Settings(pipeline={"queue_size": 2}).pipeline.queue_size == 2


def test_every_section_refuses_unknown_keys_by_itself():
    # Nothing patches the section classes at import: each declares extra="forbid".
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            assert field.annotation.model_config.get("extra") == "forbid", name


@pytest.mark.parametrize("section, key, bad", [("pipeline", "mode", "fast"), ("model", "backend", "cuda"),
                                               ("camera", "trigger", "sometimes"), ("security", "curve", "yes")])
def test_choices_are_literals_named_in_the_error(tmp_path, section, key, bad):
    field = Settings.model_fields[section].annotation.model_fields[key]
    assert typing.get_origin(field.annotation) is typing.Literal
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[{section}]\n{key} = "{bad}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    msg = str(err.value)
    assert f"'{section}.{key}' (from {cfg})" in msg and "Input should be" in msg and "\n" not in msg


def test_errors_name_the_source_of_the_value(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_INSPECT_PIPELINE__QUEUE_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"'pipeline.queue_size' \(from env EDGE_INSPECT_PIPELINE__QUEUE_SIZE\)"):
        load_settings()
    monkeypatch.delenv("EDGE_INSPECT_PIPELINE__QUEUE_SIZE")
    with pytest.raises(ConfigError, match=r"'pipeline.queue_size' \(from command line\)"):
        load_settings(None, {"pipeline": {"queue_size": 0}})
    with pytest.raises(ConfigError, match="log_level"):
        load_settings(None, {"log_level": "LOUD"})
