"""SystemdNotifier against a real unix datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from edge_inspect.health.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path):
    """A bound datagram socket (what systemd listens on) and its path."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def _receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_stopping_arrive_as_datagrams(notify_socket):
    sock, path = notify_socket
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert _receive(sock) == {"READY": "1"}
        assert notifier.status("12.5 fps, 3 dropped\nsecond line")
        assert _receive(sock) == {"STATUS": "12.5 fps, 3 dropped second line"}
        assert notifier.stopping()
        assert _receive(sock) == {"STOPPING": "1"}


def test_notify_sends_several_fields_in_one_datagram(notify_socket):
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.notify(ready=1, status="warming up", MAINPID=os.getpid())
    assert _receive(sock) == {"READY": "1", "STATUS": "warming up", "MAINPID": str(os.getpid())}


def test_reloading_carries_monotonic_timestamp(notify_socket):
    sock, path = notify_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier({"NOTIFY_SOCKET": path}).reloading()
    fields = _receive(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after


def test_abstract_socket_with_at_sign():
    name = f"edge-inspect-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert _receive(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_sender_pid_is_visible_with_so_passcred(notify_socket):
    # systemd attributes messages by the sender's credentials (NotifyAccess=main): they must be ours.
    sock, path = notify_socket
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    SystemdNotifier({"NOTIFY_SOCKET": path}).ready()
    _, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    creds = [data for level, kind, data in ancdata if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
    assert creds and int.from_bytes(creds[0][:4], "little") == os.getpid()


def test_no_socket_is_a_silent_noop(caplog):
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.status("x") is False
    assert notifier.watchdog_interval_s() is None
    assert not caplog.records


def test_send_failure_never_raises_and_logs_once(tmp_path, caplog):
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level("WARNING"):
        assert notifier.ready() is False
        assert notifier.status("still no systemd") is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "nobody-listens.sock" in warnings[0].getMessage()


def test_non_unix_notify_socket_is_disabled():
    assert not SystemdNotifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(env, expected):
    assert SystemdNotifier(env).watchdog_interval_s() == expected


def test_watchdog_pings_are_rate_limited_to_a_quarter_interval(notify_socket):
    sock, path = notify_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})  # 0.4 s → ≤ 1 ping / 0.1 s
    sock.setblocking(False)
    deadline = time.monotonic() + 0.35
    calls = 0
    while time.monotonic() < deadline:
        assert notifier.watchdog()
        calls += 1
        time.sleep(0.001)
    pings = []
    while True:
        try:
            pings.append(sock.recv(64))
        except BlockingIOError:
            break
    assert set(pings) == {b"WATCHDOG=1"}
    # 0.35 s at one ping per 0.1 s: 4 pings (first at t=0), never one per call.
    assert 3 <= len(pings) <= 4 < calls


def test_uses_process_environment_by_default(monkeypatch, notify_socket):
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert SystemdNotifier().ready()
    assert _receive(sock) == {"READY": "1"}
