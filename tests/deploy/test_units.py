"""The systemd units: valid for systemd (verify), hardened (security score) and consistent with the app."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_inspect.settings import load_settings
from tests.deploy.unitfile import DEPLOY, UNITS, parse_unit, runnable_copy, systemd_analyze

# Exposure of `systemd-analyze security --offline=true` (0 = locked down, 10 = unprotected). Measured with
# systemd 252: 2.0 for the service, 1.0 for the engine build. What keeps the service above ~1 is what
# CUDA and the cameras need: devices, /tmp (Argus), network, supplementary groups.
MAX_EXPOSURE = {"edge-inspect.service": 2.2, "edge-inspect-engines.service": 1.2}


@pytest.fixture
def unit_dir(tmp_path):
    binary = shutil.which("edge-inspect") or str(Path(sys.executable).with_name("edge-inspect"))
    if not Path(binary).exists():
        binary = "/bin/true"
    for unit in UNITS:
        runnable_copy(unit, tmp_path, binary)
    return tmp_path


def _verify(exe: str, unit_dir: Path, *units: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [exe, "verify", *(f"./{u}" for u in units)], cwd=unit_dir, capture_output=True, text=True, timeout=60
    )


@pytest.mark.counterpart
def test_units_pass_systemd_analyze_verify_without_warnings(unit_dir):
    exe = systemd_analyze()
    result = _verify(exe, unit_dir, *UNITS)
    assert result.returncode == 0, result.stderr
    # verify exits 0 on unknown keys and bad values and only warns: any line about our units is a defect.
    ours = [line for line in (result.stdout + result.stderr).splitlines() if "edge-inspect" in line]
    assert not ours, "\n".join(ours)


@pytest.mark.counterpart
def test_verify_warning_check_can_fail(unit_dir):
    # The check above relies on verify's warnings reaching stderr; prove it with a misspelt key.
    exe = systemd_analyze()
    bad = unit_dir / "edge-inspect.service"
    bad.write_text(bad.read_text().replace("NotifyAccess=main", "NotifyAcess=main"))
    result = _verify(exe, unit_dir, "edge-inspect.service")
    assert "Unknown key" in result.stderr and "NotifyAcess" in result.stderr


def _exposure(exe: str, unit: Path) -> float:
    result = subprocess.run(
        [exe, "security", "--offline=true", f"./{unit.name}"],
        cwd=unit.parent, capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.counterpart
@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure_is_below_bound(unit_dir, unit):
    exposure = _exposure(systemd_analyze(), unit_dir / unit)
    print(f"systemd-analyze security {unit}: {exposure}")
    assert exposure <= MAX_EXPOSURE[unit]


@pytest.mark.counterpart
def test_security_score_reacts_to_hardening(unit_dir):
    # The bound above means something only if removing protections raises the score.
    exe = systemd_analyze()
    unit = unit_dir / "edge-inspect.service"
    hardened = _exposure(exe, unit)
    text = re.sub(r"^(ProtectSystem|CapabilityBoundingSet|SystemCallFilter)=.*$", "", unit.read_text(), flags=re.M)
    unit.write_text(text)
    assert _exposure(exe, unit) > hardened + 1.0


def test_service_is_notify_with_watchdog_and_restart():
    service = parse_unit(DEPLOY / "edge-inspect.service")["Service"]
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["ExecStart"] == [
        "/opt/edge-inspect/venv/bin/edge-inspect run --config /etc/edge-inspect/config.toml"]
    assert service["WatchdogSec"] and service["WatchdogSec"][0] not in ("0", "infinity")
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"]
    assert service["User"] == ["edge-inspect"]
    assert set(service["SupplementaryGroups"][0].split()) == {"video", "render"}
    unit = parse_unit(DEPLOY / "edge-inspect.service")["Unit"]
    assert unit["StartLimitIntervalSec"] and unit["StartLimitBurst"]


@pytest.mark.parametrize("unit", UNITS)
def test_hardening_keeps_gpu_and_argus_reachable(unit):
    service = parse_unit(DEPLOY / unit)["Service"]
    # PrivateDevices hides /dev/nvhost-*, /dev/nvmap (CUDA); DeviceAllow/ProtectClock (systemd < 253)
    # turn on a device allow-list; MemoryDenyWriteExecute breaks run-time code generation.
    for forbidden in ("PrivateDevices", "DeviceAllow", "DevicePolicy", "ProtectClock", "MemoryDenyWriteExecute",
                      "PrivateUsers"):
        assert service.get(forbidden, ["no"])[-1] in ("no", "false"), f"{unit}: {forbidden}"
    assert service["ProtectSystem"] == ["strict"]
    assert service["CapabilityBoundingSet"] == [""]
    assert service["NoNewPrivileges"] == ["yes"]


def test_service_keeps_host_tmp_for_argus_socket():
    service = parse_unit(DEPLOY / "edge-inspect.service")["Service"]
    assert service.get("PrivateTmp", ["no"])[-1] in ("no", "false")  # /tmp/argus_socket


def test_engines_unit_runs_before_service_and_builds_the_configured_model():
    service_unit = parse_unit(DEPLOY / "edge-inspect.service")["Unit"]
    assert "edge-inspect-engines.service" in service_unit["Requires"][0].split()
    assert any("edge-inspect-engines.service" in v.split() for v in service_unit["After"])
    engines = parse_unit(DEPLOY / "edge-inspect-engines.service")
    assert engines["Service"]["Type"] == ["oneshot"]
    assert "edge-inspect.service" in engines["Unit"]["Before"][0].split()
    exec_start = engines["Service"]["ExecStart"][0]
    assert exec_start.startswith("/opt/edge-inspect/venv/bin/edge-inspect build --model ")
    # %S is /var/lib for system services: the folder the example config names as model.dir.
    model = exec_start.split("--model ")[1].split()[0].replace("%S", "/var/lib")
    assert str(load_settings(DEPLOY / "config.example.toml").model.dir) == model


def test_credential_is_where_the_app_looks_for_the_secret_key():
    # SecuritySettings: server_secret_key unset -> $CREDENTIALS_DIRECTORY/curve-server.key_secret.
    service = parse_unit(DEPLOY / "edge-inspect.service")["Service"]
    assert service["LoadCredential"] == ["curve-server.key_secret:/etc/edge-inspect/curve/server.key_secret"]
    assert load_settings(DEPLOY / "config.example.toml").security.server_secret_key is None


@pytest.mark.parametrize("unit", UNITS)
def test_exec_start_arguments_are_accepted_by_the_cli(unit):
    from edge_inspect.cli import build_parser

    exec_start = parse_unit(DEPLOY / unit)["Service"]["ExecStart"][0]
    argv = exec_start.replace("%S", "/var/lib").replace("$EDGE_INSPECT_BUILD_ARGS", "--precision fp32").split()[1:]
    command = argv[0]
    parser = build_parser()
    if command not in parser._subparsers._group_actions[0].choices:  # argparse has no public API for this
        pytest.skip(f"'edge-inspect {command}' is not in this build yet")
    args = parser.parse_args(argv)
    assert args.command == command and callable(args.func)
