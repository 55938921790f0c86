"""``edge-inspect listen`` end to end: a real publisher, the CLI in-process, its output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from edge_inspect.cli import main
from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings


def _publish_after_a_heartbeat(pub: VerdictPublisher, labels: list[str], delay_s: float = 0.5) -> threading.Thread:
    # PUB drops what it sends before the subscription arrives; give the CLI time to connect first.
    def run():
        time.sleep(delay_s)
        for seq, label in enumerate(labels):
            pub.publish(make_verdict(seq, label, heatmap=label == "ng"))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_listen_prints_one_line_per_verdict_and_a_summary(capsys):
    labels = ["ok", "ng", "ok", "unknown", "ok"]
    with VerdictPublisher(pub_settings(), no_curve()) as pub, ControlServer(ctl_settings(), no_curve(), None, pub) as ctl:
        t = _publish_after_a_heartbeat(pub, labels)
        code = main(["listen", "--connect", pub.endpoint, "--control", ctl.endpoint, "--count", "5", "--timeout", "10"])
        t.join()
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    verdict_lines = [line for line in out if "line1/cam0 seq=" in line]
    assert len(verdict_lines) == 5
    assert " NG " in verdict_lines[1] and "regions=1" in verdict_lines[1] and "heatmap=64x48" in verdict_lines[1]
    assert "UNKNOWN" in verdict_lines[3] and "error='backend failed'" in verdict_lines[3]
    assert out[-1].startswith("summary: received 5 live + 0 resynced (ok 3, ng 1, unknown 1); gaps 0")


def test_listen_json_lines(capsys):
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        t = _publish_after_a_heartbeat(pub, ["ok", "ng"])
        code = main(["listen", "--connect", pub.endpoint, "--json", "--count", "2", "--timeout", "10"])
        t.join()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert [r["event"] for r in records] == ["verdict", "verdict", "summary"]
    assert records[1]["result_state"] == "ng" and records[1]["boot_id"] == pub.boot_id
    assert records[1]["schema"] == "edge-inspect/verdict" and records[1]["resynced"] is False
    assert records[2]["received"] == 2 and records[2]["invalid"] == 0


def test_listen_timeout_before_count_exits_1_with_summary(capsys):
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        code = main(["listen", "--connect", pub.endpoint, "--count", "3", "--timeout", "0.5"])
    captured = capsys.readouterr()
    assert code == 1 and "summary: received 0" in captured.out and "only 0 of 3" in captured.err


@pytest.mark.parametrize(
    "argv, message, exit_code",
    [
        (["--curve-server-key", "server.key"], "both --curve-server-key and --curve-client-key", 2),
        (["--curve-server-key", "/nonexistent.key", "--curve-client-key", "/nonexistent.key_secret"], "nonexistent", 2),
        (["--topic", "heartbeat."], "must start with 'verdict'", 1),
        (["--count", "0"], "--count", 2),
    ],
)
def test_listen_usage_errors_are_one_line(argv, message, exit_code, capsys):
    code = main(["listen", "--connect", "tcp://127.0.0.1:9", "--timeout", "0.1", *argv])
    err = capsys.readouterr().err
    assert code == exit_code
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_listen_sigterm_prints_the_summary():
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        proc = subprocess.Popen([sys.executable, "-m", "edge_inspect", "listen", "--connect", pub.endpoint, "--heartbeats"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # a heartbeat line: the listener is in its loop, handler installed
        assert first.startswith("HEARTBEAT line1/cam0 state=starting"), first
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("summary: received 0 live")
