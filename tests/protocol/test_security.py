"""CURVE on real loopback sockets: authorised clients get verdicts, others get nothing; key loading rules."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from edge_inspect.cli import main
from edge_inspect.errors import ConfigError, ProtocolError
from edge_inspect.protocol.control import ControlClient, ControlServer
from edge_inspect.protocol.listener import VerdictListener
from edge_inspect.protocol.publisher import VerdictPublisher
from edge_inspect.protocol.security import (
    curve_enabled,
    generate_keypair,
    is_loopback_endpoint,
    load_client_keys,
    load_server_keys,
)
from edge_inspect.protocol.settings import SecuritySettings
from tests.protocol.helpers import collect, ctl_settings, make_verdict, pub_settings, wait_connected


@pytest.fixture()
def keys(tmp_path):
    """server pair, an allowed client 'gateway' and a stranger 'intruder' (not in the allowed dir)."""
    generate_keypair(tmp_path / "server", "server")
    generate_keypair(tmp_path / "allowed", "gateway")
    generate_keypair(tmp_path / "other", "intruder")
    (tmp_path / "allowed" / "gateway.key_secret").rename(tmp_path / "gateway.key_secret")
    security = SecuritySettings(curve="on", server_secret_key=tmp_path / "server" / "server.key_secret",
                                allowed_clients_dir=tmp_path / "allowed")
    gateway = load_client_keys(tmp_path / "server" / "server.key", tmp_path / "gateway.key_secret")
    intruder = load_client_keys(tmp_path / "server" / "server.key", tmp_path / "other" / "intruder.key_secret")
    return security, gateway, intruder


def test_authorised_client_receives_and_unknown_or_plain_clients_receive_nothing(keys, caplog):
    security, gateway, intruder = keys
    caplog.set_level(logging.WARNING, logger="edge_inspect.protocol.security")
    with VerdictPublisher(pub_settings(), security) as pub:
        with (VerdictListener(pub.endpoint, keys=gateway) as good,
              VerdictListener(pub.endpoint, keys=intruder) as bad,
              VerdictListener(pub.endpoint) as plain):
            wait_connected(good)
            for seq in range(20):
                pub.publish(make_verdict(seq))
            got = [e.msg.seq for e in collect(good, 20) if e.kind == "verdict"]
            time.sleep(0.3)
            leaked = bad.poll(0.2) + plain.poll(0.2)
    assert got == list(range(20))
    assert leaked == [] and bad.stats.heartbeats == 0 and plain.stats.heartbeats == 0
    assert "refused CURVE client with unknown public key " + intruder.public.decode() in caplog.text


def test_control_channel_with_curve(keys):
    security, gateway, intruder = keys
    with ControlServer(ctl_settings(), security, target=None) as server:
        with ControlClient(server.endpoint, gateway) as client:
            assert client.request("ping")["pong"] is True
        with ControlClient(server.endpoint, intruder) as stranger, pytest.raises(ProtocolError, match="no reply"):
            stranger.request("ping", timeout_s=0.5)


def test_auto_mode_follows_the_bind_address(caplog):
    caplog.set_level(logging.INFO, logger="edge_inspect.protocol.security")
    auto = SecuritySettings()
    assert curve_enabled(auto, "tcp://127.0.0.1:5555", "publisher") is False
    assert curve_enabled(auto, "tcp://*:5555", "publisher") is True
    assert curve_enabled(auto, "tcp://192.168.1.20:5555", "control") is True
    assert "CURVE on (security.curve = auto, non-loopback address)" in caplog.text
    assert "CURVE off (security.curve = auto, loopback address)" in caplog.text
    for ep, loop in [("tcp://localhost:1", True), ("tcp://[::1]:1", True), ("ipc:///run/x", True),
                     ("tcp://0.0.0.0:1", False), ("tcp://eth0:1", False), ("tcp://10.0.0.1:1", False)]:
        assert is_loopback_endpoint(ep) is loop, ep
    assert curve_enabled(SecuritySettings(curve="off"), "tcp://*:1", "publisher") is False
    assert "unencrypted" in caplog.text


def test_auto_on_non_loopback_without_keys_refuses_to_start(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="server_secret_key"):
        VerdictPublisher(pub_settings(bind="tcp://*:*"), SecuritySettings())


def test_on_without_keys_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError, match="no server key.*server_secret_key.*edge-inspect keys"):
        load_server_keys(SecuritySettings(curve="on"))
    generate_keypair(tmp_path, "server")
    with pytest.raises(ConfigError, match="no allowed client keys.*allowed_clients_dir"):
        load_server_keys(SecuritySettings(curve="on", server_secret_key=tmp_path / "server.key_secret"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="found none in"):
        load_server_keys(SecuritySettings(curve="on", server_secret_key=tmp_path / "server.key_secret",
                                          allowed_clients_dir=tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no secret key"):  # the public half given where the pair is needed
        load_server_keys(SecuritySettings(curve="on", server_secret_key=tmp_path / "server.key",
                                          allowed_clients_dir=tmp_path))
    (tmp_path / "junk.key").write_text("public-key = \"short\"\n")
    with pytest.raises(ConfigError, match="junk.key.*z85"):
        load_server_keys(SecuritySettings(curve="on", server_secret_key=tmp_path / "server.key_secret",
                                          allowed_clients_dir=tmp_path))


def test_keys_from_a_systemd_credentials_directory(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir()
    generate_keypair(tmp_path, "server")
    generate_keypair(tmp_path, "gw1")
    generate_keypair(tmp_path, "gw2")
    # What LoadCredential=curve-server.key_secret:... and LoadCredential=curve-clients:<dir>/ produce.
    (creds / "curve-server.key_secret").write_bytes((tmp_path / "server.key_secret").read_bytes())
    (creds / "curve-clients_gw1.key").write_bytes((tmp_path / "gw1.key").read_bytes())
    (creds / "curve-clients_gw2.key").write_bytes((tmp_path / "gw2.key").read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    keys = load_server_keys(SecuritySettings(curve="on"))
    assert keys.public == load_client_keys(tmp_path / "server.key", tmp_path / "gw1.key_secret").server_public
    assert len(keys.allowed_clients) == 2
    # A relative setting is looked up in the credentials directory.
    rel = load_server_keys(SecuritySettings(curve="on", server_secret_key="curve-server.key_secret"))
    assert rel.secret == keys.secret


def test_keys_cli_writes_a_pair_and_refuses_to_overwrite(tmp_path, capsys):
    assert main(["keys", "--out", str(tmp_path / "k"), "--name", "gateway1"]) == 0
    out = capsys.readouterr().out
    assert "gateway1.key" in out and "gateway1.key_secret" in out
    secret = tmp_path / "k" / "gateway1.key_secret"
    assert secret.stat().st_mode & 0o077 == 0  # secret readable by its owner only
    assert main(["keys", "--out", str(tmp_path / "k"), "--name", "gateway1"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["keys", "--out", str(tmp_path / "k"), "--name", "../evil"]) == 2


def test_listen_cli_with_curve_keys(keys, tmp_path, capsys):
    security, _, _ = keys
    with VerdictPublisher(pub_settings(), security) as pub:
        def publish_later():
            time.sleep(0.7)
            for seq in range(3):
                pub.publish(make_verdict(seq))

        t = threading.Thread(target=publish_later, daemon=True)
        t.start()
        code = main(["listen", "--connect", pub.endpoint, "--count", "3", "--timeout", "10",
                     "--curve-server-key", str(tmp_path / "server" / "server.key"),
                     "--curve-client-key", str(tmp_path / "gateway.key_secret")])
        t.join()
    out = capsys.readouterr().out
    assert code == 0 and "summary: received 3 live" in out
