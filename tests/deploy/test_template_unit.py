"""deploy/edge-inspect@.service, one unit per camera: valid for systemd, as hardened as the station unit,
and the same service apart from the instance's config file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.unitfile import DEPLOY, parse_unit, runnable_copy, systemd_analyze

TEMPLATE = "edge-inspect@.service"


@pytest.fixture
def instance(tmp_path) -> Path:
    """The template as instance ``top`` with an ExecStart binary that exists here."""
    binary = shutil.which("edge-inspect") or str(Path(sys.executable).with_name("edge-inspect"))
    if not Path(binary).exists():
        binary = "/bin/true"
    runnable_copy("edge-inspect-engines.service", tmp_path, binary)  # Requires= it
    copy = runnable_copy(TEMPLATE, tmp_path, binary)
    return copy.rename(tmp_path / "edge-inspect@top.service")


@pytest.mark.counterpart
def test_template_instance_passes_systemd_analyze_verify_without_warnings(instance):
    exe = systemd_analyze()
    r = subprocess.run([exe, "verify", f"./{instance.name}"], cwd=instance.parent, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "edge-inspect" in line]
    assert not ours, "\n".join(ours)


@pytest.mark.counterpart
def test_template_is_as_hardened_as_the_station_unit(instance):
    from tests.deploy.test_units import MAX_EXPOSURE, _exposure

    assert _exposure(systemd_analyze(), instance) <= MAX_EXPOSURE["edge-inspect.service"]


def test_template_is_the_station_unit_with_a_config_per_camera():
    station = parse_unit(DEPLOY / "edge-inspect.service")
    template = parse_unit(DEPLOY / TEMPLATE)
    assert template["Service"]["ExecStart"] == [
        "/opt/edge-inspect/venv/bin/edge-inspect run --config /etc/edge-inspect/%i.toml"]
    assert template["Unit"]["Conflicts"] == ["edge-inspect.service"]
    for section in ("Service", "Install"):
        same = {k: v for k, v in station[section].items() if k != "ExecStart"}
        assert {k: template[section][k] for k in same} == same, section
    for key in ("Requires", "After", "StartLimitIntervalSec", "StartLimitBurst"):
        assert template["Unit"][key] == station["Unit"][key]
