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
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_inspect", "listen", "--connect", pub.endpoint, "--heartbeats"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # a heartbeat line: the listener is in its loop, handler installed
        assert first.startswith("HEARTBEAT line1/cam0 state=starting"), first
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith("summary: received 0 live")


def _wait_sent(pub: VerdictPublisher, msg_seq: int, timeout_s: float = 5.0) -> None:
    """Until the sender thread has sent ``msg_seq`` (what the next heartbeat vouches for)."""
    deadline = time.monotonic() + timeout_s
    while pub._heartbeat_msg().last_msg_seq < msg_seq:
        assert time.monotonic() < deadline, "the publisher did not send its queue"
        time.sleep(0.01)


def test_restarted_listen_resumes_from_its_state_file_and_reports_the_gap(tmp_path, capsys):
    state = tmp_path / "listen.state"
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        argv = ["listen", "--connect", pub.endpoint, "--control", ctl.endpoint, "--state", str(state),
                "--timeout", "10"]
        t = _publish_after_a_heartbeat(pub, ["ok", "ok", "ng"])
        assert main(argv + ["--count", "3"]) == 0
        t.join()
        first = capsys.readouterr().out.splitlines()
        assert first[-1].endswith(f"next: line1/cam0 msg_seq 3 of boot {pub.boot_id[:8]}")
        for seq in range(3, 8):  # published while no listener runs
            pub.publish(make_verdict(seq, "ng" if seq == 5 else "ok"))
        _wait_sent(pub, 7)
        assert main(argv + ["--count", "5", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [r["event"] for r in records]
    assert kinds[:2] == ["resume", "gap"] and kinds.count("verdict") == 5 and kinds[-1] == "summary"
    assert (records[0]["resume_from"], records[0]["missed"]) == (3, 5)
    assert records[1]["while_down"] and records[1]["recovered"] == 5
    assert [r["msg_seq"] for r in records if r["event"] == "verdict"] == [3, 4, 5, 6, 7]
    assert all(r["resynced"] for r in records if r["event"] == "verdict")
    summary = records[-1]
    assert (summary["resynced"], summary["missed_while_down"], summary["unrecovered"], summary["ng"]) == (5, 5, 0, 1)
    assert summary["resume"] == [{"line_id": "line1", "camera_id": "cam0", "boot_id": pub.boot_id, "next_msg_seq": 8}]
    saved = json.loads(state.read_text())["cameras"]
    assert [(c["boot_id"], c["next_msg_seq"], c["last_seq"]) for c in saved] == [(pub.boot_id, 8, 7)]


def test_listen_resume_from_fetches_from_that_msg_seq(capsys):
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        for seq in range(6):
            pub.publish(make_verdict(seq))
        _wait_sent(pub, 5)  # else the first heartbeat may say the station is behind msg_seq 4 (as it is)
        code = main(["listen", "--connect", pub.endpoint, "--control", ctl.endpoint, "--resume-from", "4",
                     "--count", "2", "--timeout", "10"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith("RESUME  line1/cam0") and "2 missed while this listener was down" in out[0]
    assert out[1].startswith("GAP     line1/cam0: missing msg_seq 4..5 (2) while this listener was down; resynced 2")
    assert [line.split()[2] for line in out[2:4]] == ["seq=4", "seq=5"]
    assert "missed while down 2" in out[-1]
    assert out[-1].endswith("next: line1/cam0 msg_seq 6 of boot " + pub.boot_id[:8])


@pytest.mark.parametrize("argv, message", [
    (["--resume-from", "3", "--connect", "tcp://127.0.0.1:8"], "one --connect"),
    (["--resume-from", "-1"], "--resume-from must be >= 0"),
    (["--state", "{tmp}/bad.state"], "not a listen state file"),
    (["--state", "{tmp}/no/such/dir/listen.state"], "cannot write"),
])
def test_listen_resume_usage_errors_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "bad.state").write_text("{not json")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = main(["listen", "--connect", "tcp://127.0.0.1:9", "--timeout", "0.1", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
