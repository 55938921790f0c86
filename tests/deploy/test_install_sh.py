"""deploy/install.sh in --root (DESTDIR-style) and --dry-run modes: nothing outside a temp dir is touched."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.unitfile import DEPLOY

SCRIPT = DEPLOY / "install.sh"


def _needs(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/ci-counterparts-deploy.sh installs it)")


def _install(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--no-apt", "--python", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _snapshot(root: Path) -> dict[str, tuple]:
    """Everything a re-run could change: kind, mode, owner, mtime and content of every path."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = None
        out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                                            st.st_mtime_ns, content)
    return out


@pytest.fixture
def root(tmp_path):
    _needs("systemd-sysusers", "systemctl")
    if os.geteuid() != 0:
        pytest.skip("install.sh --root sets ownership of the state directory: needs root")
    target = tmp_path / "root"
    target.mkdir()
    return target


@pytest.mark.counterpart
def test_shellcheck_clean():
    _needs("shellcheck")
    result = subprocess.run(["shellcheck", str(SCRIPT), str(REPO_SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


REPO_SCRIPT = DEPLOY.parent / "scripts" / "ci-counterparts-deploy.sh"


@pytest.mark.counterpart
def test_install_into_root_is_complete_and_idempotent(root, tiny_model_dir):
    first = _install("--root", str(root), "--no-venv", "--model", str(tiny_model_dir))
    etc = root / "etc"
    # Units installed verbatim and the service enabled for boot; the engines unit is pulled in by it.
    for unit in ("edge-inspect.service", "edge-inspect-engines.service"):
        assert (etc / "systemd/system" / unit).read_bytes() == (DEPLOY / unit).read_bytes()
    wants = etc / "systemd/system/multi-user.target.wants/edge-inspect.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/edge-inspect.service"
    # The service user, in video and render.
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    assert "edge-inspect" in passwd and passwd["edge-inspect"][6] == "/usr/sbin/nologin"
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in (etc / "group").read_text().splitlines()}
    assert "edge-inspect" in groups["video"] and "edge-inspect" in groups["render"]
    # Config from the example, keys with the secret root-only, model owned by the service user.
    assert (etc / "edge-inspect/config.toml").read_bytes() == (DEPLOY / "config.example.toml").read_bytes()
    secret = etc / "edge-inspect/curve/server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and b"secret-key" in secret.read_bytes()
    assert (etc / "edge-inspect/curve/server.key").exists()
    # The service user must reach allowed_clients_dir (public keys) below the curve folder.
    for folder in ("edge-inspect", "edge-inspect/curve", "edge-inspect/curve/clients"):
        assert (etc / folder).stat().st_mode & 0o005 == 0o005, folder
    model = root / "var/lib/edge-inspect/model"
    assert (model / "manifest.json").read_bytes() == (tiny_model_dir / "manifest.json").read_bytes()
    assert model.stat().st_uid == int(passwd["edge-inspect"][2])
    assert not (root / "opt/edge-inspect/venv").exists()  # --no-venv
    assert "installed /etc/systemd/system/edge-inspect.service" in first.stderr

    # Second run: byte-for-byte, mode-for-mode, mtime-for-mtime the same tree.
    before = _snapshot(root)
    second = _install("--root", str(root), "--no-venv", "--model", str(tiny_model_dir))
    assert _snapshot(root) == before
    assert "installed" not in second.stderr and "created" not in second.stderr


@pytest.mark.counterpart
def test_reinstall_keeps_the_operators_config_and_engines(root, tiny_model_dir):
    _install("--root", str(root), "--no-venv", "--model", str(tiny_model_dir))
    config = root / "etc/edge-inspect/config.toml"
    config.write_text(config.read_text().replace('mode = "auto"', 'mode = "lossless"'))
    engine = root / "var/lib/edge-inspect/model/engines/features.plan"
    engine.parent.mkdir()
    engine.write_bytes(b"built on the device")
    _install("--root", str(root), "--no-venv", "--model", str(tiny_model_dir))
    assert 'mode = "lossless"' in config.read_text()
    assert engine.read_bytes() == b"built on the device"
    assert (root / "etc/edge-inspect/config.example.toml").read_bytes() == (DEPLOY / "config.example.toml").read_bytes()


@pytest.mark.counterpart
def test_uninstall_removes_the_service_and_purge_removes_data(root, tiny_model_dir):
    _install("--root", str(root), "--no-venv", "--model", str(tiny_model_dir))
    (root / "opt/edge-inspect/venv/bin").mkdir(parents=True)  # stands in for the virtualenv
    _install("--root", str(root), "--uninstall")
    system = root / "etc/systemd/system"
    assert not (system / "edge-inspect.service").exists()
    assert not (system / "edge-inspect-engines.service").exists()
    assert not (system / "multi-user.target.wants/edge-inspect.service").is_symlink()
    assert not (root / "opt/edge-inspect").exists()
    assert not (root / "usr/lib/sysusers.d/edge-inspect.conf").exists()
    # Without --purge: config, keys and model stay for a reinstall.
    assert (root / "etc/edge-inspect/config.toml").exists()
    assert (root / "var/lib/edge-inspect/model/manifest.json").exists()
    # Uninstalling twice is fine; --purge then removes the data.
    _install("--root", str(root), "--uninstall", "--purge")
    assert not (root / "etc/edge-inspect").exists()
    assert not (root / "var/lib/edge-inspect").exists()


@pytest.mark.counterpart
def test_dry_run_changes_nothing_and_shows_the_jetson_install(tmp_path, tiny_model_dir):
    _needs("systemctl")
    target = tmp_path / "root"
    target.mkdir()
    result = _install("--dry-run", "--root", str(target), "--model", str(tiny_model_dir))
    assert list(target.iterdir()) == []
    out = result.stdout
    assert f"{target}/opt/edge-inspect/venv" in out and "--system-site-packages" in out
    pip_line = next(line for line in out.splitlines() if "/bin/pip install" in line)
    # JetPack's OpenCV (GStreamer) must stay visible: no PyPI OpenCV, no [cpu]/[opencv] extra.
    assert "jetson" in pip_line and "opencv" not in pip_line and "[cpu]" not in pip_line
    assert "numpy\\>=1.24\\,\\<2" in pip_line or "numpy>=1.24,<2" in pip_line
    assert "systemctl --root=" in out and "enable edge-inspect.service" in out


@pytest.mark.counterpart
def test_dry_run_on_this_system_touches_nothing():
    _needs("systemctl")
    watched = [Path("/etc/systemd/system/edge-inspect.service"), Path("/opt/edge-inspect"), Path("/etc/edge-inspect")]
    before = [p.exists() for p in watched]
    result = _install("--dry-run", "--no-venv")
    assert [p.exists() for p in watched] == before
    assert "+ systemctl daemon-reload" in result.stdout
    assert "+ systemctl enable edge-inspect.service" in result.stdout


def test_rejects_bad_options():
    assert _install("--bogus", check=False).returncode == 2
    assert _install("--root", "relative/path", check=False).returncode == 2
    assert _install("--purge", check=False).returncode == 2
