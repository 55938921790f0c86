"""Endpoints as users type them: one function completes or refuses them, for settings and command line."""

from __future__ import annotations

import pytest

from edge_inspect.cli import main
from edge_inspect.errors import ConfigError
from edge_inspect.protocol.endpoints import EndpointError, normalise_endpoint
from edge_inspect.protocol.listener import VerdictListener
from edge_inspect.protocol.publisher import VerdictPublisher
from edge_inspect.protocol.security import curve_enabled, is_loopback_endpoint
from edge_inspect.protocol.settings import ControlSettings, PublisherSettings, SecuritySettings
from edge_inspect.settings import load_settings
from tests.protocol.helpers import collect, make_verdict, no_curve, pub_settings, wait_connected


@pytest.mark.parametrize("given, expected", [
    ("127.0.0.1:5555", "tcp://127.0.0.1:5555"),
    (" localhost:5555 ", "tcp://localhost:5555"),
    ("*:5555", "tcp://*:5555"),
    ("[::1]:5555", "tcp://[::1]:5555"),
    ("tcp://eth0:5555", "tcp://eth0:5555"),
    ("tcp://127.0.0.1:*", "tcp://127.0.0.1:*"),
    ("TCP://10.0.0.1:1", "tcp://10.0.0.1:1"),
    ("ipc:///run/edge-inspect/verdicts", "ipc:///run/edge-inspect/verdicts"),
    ("inproc://verdicts", "inproc://verdicts"),
])
def test_endpoints_are_completed(given, expected):
    assert normalise_endpoint(given) == expected


@pytest.mark.parametrize("given, reason", [
    ("", "empty"),
    ("localhost", "no transport and no port"),
    ("/run/x.sock", "no transport and no port"),
    ("http://station:80", "unknown transport 'http'"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://[::1]", "no port"),
    ("tcp://", "nothing after"),
])
def test_what_cannot_be_an_endpoint_is_refused_in_one_line(given, reason):
    with pytest.raises(EndpointError, match=reason) as info:
        normalise_endpoint(given, "publisher.bind")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith("publisher.bind") and "\n" not in str(info.value)


def test_settings_complete_every_bind_endpoint():
    assert PublisherSettings(bind="127.0.0.1:5555").bind == "tcp://127.0.0.1:5555"
    assert ControlSettings(bind="0.0.0.0:5556").bind == "tcp://0.0.0.0:5556"
    s = load_settings(None, {"publisher": {"bind": "127.0.0.1:6001"}, "control": {"bind": "127.0.0.1:6002"}})
    assert (s.publisher.bind, s.control.bind) == ("tcp://127.0.0.1:6001", "tcp://127.0.0.1:6002")
    with pytest.raises(ConfigError, match=r"publisher\.bind.*no transport and no port"):
        load_settings(None, {"publisher": {"bind": "localhost"}})


def test_a_bare_loopback_bind_keeps_curve_off():
    # Was: "CURVE is on but no server key" for --bind 127.0.0.1:5555.
    bind = PublisherSettings(bind="127.0.0.1:5555").bind
    assert is_loopback_endpoint("127.0.0.1:5555") and curve_enabled(SecuritySettings(), bind, "publisher") is False
    with VerdictPublisher(pub_settings(bind="127.0.0.1:*"), SecuritySettings()) as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:")


def test_curve_refusal_says_why_curve_is_on(monkeypatch):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError,
                       match=r"no server key.*because security\.curve = auto and tcp://\*:\* is not a loopback"):
        VerdictPublisher(pub_settings(bind="*:*"), SecuritySettings())


def test_listener_takes_a_bare_host_port_and_fails_cleanly_on_a_bad_one():
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        bare = pub.endpoint.removeprefix("tcp://")
        with VerdictListener(bare, control=bare.replace(bare.rsplit(":", 1)[1], "9")) as listener:
            wait_connected(listener)
            pub.publish(make_verdict(0))
            assert [e.msg.seq for e in collect(listener, 1) if e.kind == "verdict"] == [0]
    for bad, control in [("localhost", None), ("tcp://127.0.0.1:9", "http://x:1")]:
        with pytest.raises(ConfigError, match="endpoint"):
            VerdictListener(bad, control=control)  # was: AttributeError '_control' from close()


def test_listen_cli_accepts_a_missing_scheme_and_refuses_garbage_in_one_line(capsys):
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        code = main(["listen", "--connect", pub.endpoint.removeprefix("tcp://"), "--timeout", "0.3"])
    assert code == 0 and "summary: received 0 live" in capsys.readouterr().out
    code = main(["listen", "--connect", "localhost", "--timeout", "0.1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "connect endpoint 'localhost': no transport and no port" in err
