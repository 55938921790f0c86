"""Publisher -> listener over real loopback sockets: order, gaps, resync, restarts, heartbeats."""

from __future__ import annotations

import time

import pytest

from edge_inspect.errors import ConfigError, ProtocolError
from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.listener import VerdictListener
from edge_inspect.protocol.messages import VerdictMsg
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import collect, ctl_settings, make_verdict, no_curve, pub_settings, wait_connected


def test_every_verdict_arrives_in_order_and_validates():
    n = 200
    with VerdictPublisher(pub_settings(), no_curve()) as pub, VerdictListener(pub.endpoint) as listener:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith("*")
        wait_connected(listener)
        for seq in range(n):
            pub.publish(make_verdict(seq, ["ok", "ng", "unknown"][seq % 3], heatmap=seq % 50 == 0))
        events = collect(listener, n)
    verdicts = [e.msg for e in events if e.kind == "verdict"]
    assert [m.seq for m in verdicts] == list(range(n))
    assert [m.msg_seq for m in verdicts] == list(range(n))
    assert {m.boot_id for m in verdicts} == {pub.boot_id}
    assert sum(m.heatmap is not None for m in verdicts) == 4
    s = listener.stats
    assert (s.received, s.ok, s.ng, s.unknown, s.gaps, s.invalid, s.restarts) == (n, 67, 67, 66, 0, 0, 0)


def test_heartbeat_carries_status_and_last_msg_seq():
    with VerdictPublisher(pub_settings(), no_curve()) as pub, VerdictListener(pub.endpoint) as listener:
        wait_connected(listener)
        pub.heartbeat({"state": "running", "fps": 25.0, "drops": 2, "errors": 1, "backend": "onnxruntime"})
        pub.publish(make_verdict(0))
        deadline, beats = time.monotonic() + 3, []
        while time.monotonic() < deadline and not any(b.last_msg_seq == 0 for b in beats):
            beats += [e.msg for e in listener.poll(0.05) if e.kind == "heartbeat"]
    hb = next(b for b in beats if b.last_msg_seq == 0)
    assert hb.status == {"state": "running", "fps": 25.0, "drops": 2, "errors": 1, "backend": "onnxruntime"}
    assert hb.boot_id == pub.boot_id and hb.publisher["published"] == 1 and hb.uptime_s > 0
    with pytest.raises(ProtocolError, match="JSON"):
        pub.heartbeat({"fps": object()})


def _frames(pub: VerdictPublisher, n: int) -> list[list[bytes]]:
    return [pub.publish(make_verdict(seq)).to_frames() for seq in range(n)]


def test_heartbeat_refuses_a_bad_status_at_the_call_and_keeps_beating():
    """A status the heartbeat schema refuses is the caller's error; the sender thread must not die of it."""
    with VerdictPublisher(pub_settings(), no_curve()) as pub, VerdictListener(pub.endpoint) as listener:
        wait_connected(listener)
        pub.heartbeat({"state": "running", "fps": 25.0, "drift": {"state": "ok", "n": 50}})
        with pytest.raises(ProtocolError, match=r"body\.status\.drift\.state"):
            pub.heartbeat({"state": "running", "drift": {"state": "panic"}})
        with pytest.raises(ProtocolError, match="not JSON-serialisable"):
            pub.heartbeat({"state": "running", "fps": float("nan")})
        pub.publish(make_verdict(0))
        deadline, beats = time.monotonic() + 3, []
        while time.monotonic() < deadline and not any(b.last_msg_seq == 0 for b in beats):
            beats += [e.msg for e in listener.poll(0.1) if e.kind == "heartbeat"]
    beat = next(b for b in beats if b.last_msg_seq == 0)
    assert beat.status["drift"] == {"state": "ok", "n": 50} and beat.status["state"] == "running"


def test_gap_is_detected_and_filled_through_last():
    # The listener is fed the wire frames directly so the gap is exact; resync uses the real control socket.
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        frames = _frames(pub, 10)
        with VerdictListener("tcp://127.0.0.1:9", control=ctl.endpoint) as listener:
            events = []
            for i in [0, 1, 2, 6, 7, 9]:  # lose 3, 4, 5 and 8
                events += listener.handle_frames(frames[i])
    gaps = [e.detail for e in events if e.kind == "gap"]
    assert [(g["first_msg_seq"], g["last_msg_seq"], g["recovered"]) for g in gaps] == [(3, 5, 3), (8, 8, 1)]
    order = [(e.msg.msg_seq, e.resynced) for e in events if e.kind == "verdict"]
    assert [m for m, _ in order] == list(range(10))  # resynced verdicts are delivered in place
    assert [m for m, r in order if r] == [3, 4, 5, 8]
    s = listener.stats
    assert (s.received, s.resynced, s.gaps, s.missing, s.unrecovered) == (6, 4, 2, 4, 0)


def test_gap_without_control_or_beyond_history_is_counted_as_unrecovered():
    with (VerdictPublisher(pub_settings(history=2), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        frames = _frames(pub, 6)
        with VerdictListener("tcp://127.0.0.1:9") as no_ctl:
            no_ctl.handle_frames(frames[0])
            (gap, _) = no_ctl.handle_frames(frames[3])
            assert gap.kind == "gap" and gap.detail["recovered"] == 0 and "no control" in gap.detail["error"]
        with VerdictListener("tcp://127.0.0.1:9", control=ctl.endpoint) as listener:
            listener.handle_frames(frames[0])
            events = listener.handle_frames(frames[5])  # 1..4 lost; history holds only 4 and 5
    gap = events[0].detail
    assert gap["missing"] == 4 and gap["recovered"] == 1 and "history" in gap["error"]
    assert listener.stats.unrecovered == 3


def test_lost_tail_message_is_seen_through_the_heartbeat():
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        with VerdictListener("tcp://127.0.0.1:9", control=ctl.endpoint) as listener:
            first, second = _frames(pub, 2)
            listener.handle_frames(first)
            time.sleep(0.2)  # let the sender thread send both and a heartbeat note last_msg_seq = 1
            hb = pub._heartbeat_msg()
            assert hb.last_msg_seq == 1
            events = listener.handle_frames(hb.to_frames())
    assert [e.kind for e in events] == ["gap", "verdict", "heartbeat"]
    assert events[1].resynced and events[1].msg.msg_seq == 1


def test_publisher_restart_is_a_restart_not_a_gap():
    first = VerdictPublisher(pub_settings(), no_curve())
    endpoint = first.endpoint
    with VerdictListener(endpoint) as listener:
        wait_connected(listener)
        for seq in range(5):
            first.publish(make_verdict(seq))
        events = collect(listener, 5)
        first.close()
        with VerdictPublisher(pub_settings(bind=endpoint), no_curve()) as second:  # same port, new process
            assert second.boot_id != first.boot_id
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(e.kind == "restart" for e in events):
                events += listener.poll(0.05)
            second.publish(make_verdict(0))
            events += collect(listener, 1)
    kinds = [e.kind for e in events if e.kind != "heartbeat"]
    assert kinds == ["verdict"] * 5 + ["restart", "verdict"]
    restart = next(e for e in events if e.kind == "restart").detail
    assert (restart["old_boot_id"], restart["new_boot_id"]) == (first.boot_id, second.boot_id)
    s = listener.stats
    assert (s.restarts, s.gaps, s.received) == (1, 0, 6)


def test_frames_skipped_by_the_station_are_not_transport_gaps():
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        with VerdictListener("tcp://127.0.0.1:9") as listener:
            for seq in (0, 1, 5, 6):  # free-run mode dropped frames 2..4 before inference
                listener.handle_frames(pub.publish(make_verdict(seq)).to_frames())
    assert (listener.stats.gaps, listener.stats.frames_skipped, listener.stats.received) == (0, 3, 4)


def test_invalid_messages_are_counted_not_fatal():
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        good = pub.publish(make_verdict(0)).to_frames()
    with VerdictListener("tcp://127.0.0.1:9") as listener:
        bad = [[b"verdict.line1.cam0", b"{broken"], [b"verdict.x.y", good[1]], [b"heartbeat.line1.cam0", b"[]"], []]
        kinds = [listener.handle_frames(f)[0].kind for f in bad] + [listener.handle_frames(good)[0].kind]
    assert kinds == ["invalid"] * 4 + ["verdict"]
    assert (listener.stats.invalid, listener.stats.received) == (4, 1)


def test_publisher_refuses_bad_binds_ids_and_foreign_cameras():
    with pytest.raises(ConfigError, match="cannot bind"):
        VerdictPublisher(pub_settings(bind="tcp://127.0.0.1:notaport"), no_curve())
    with pytest.raises(ProtocolError, match="camera_id"):
        VerdictPublisher(pub_settings(), no_curve(), camera_id="cam.1")
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        with pytest.raises(ProtocolError, match="cam7"):
            pub.publish(make_verdict(0, camera_id="cam7"))
    with pytest.raises(ProtocolError, match="closed"):
        pub.publish(make_verdict(1))


def test_history_keeps_the_last_n_without_heatmaps():
    with VerdictPublisher(pub_settings(history=5), no_curve()) as pub:
        for seq in range(8):
            pub.publish(make_verdict(seq, heatmap=True))
        kept = pub.last()
        assert [m.seq for m in kept] == [3, 4, 5, 6, 7] and all(m.heatmap is None for m in kept)
        assert [m.seq for m in pub.last(since_seq=5)] == [6, 7]
        assert [m.seq for m in pub.last(n=2)] == [6, 7]
        assert VerdictMsg.from_body(kept[0].body()).seq == 3


def test_gap_after_joining_through_a_heartbeat_is_recovered_from_the_whole_history():
    # First contact is a heartbeat (no frame seq known yet), then messages are lost: resync must still find them.
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        frames = _frames(pub, 6)
        time.sleep(0.2)
        with VerdictListener("tcp://127.0.0.1:9", control=ctl.endpoint) as listener:
            hb = pub._heartbeat_msg()
            hb.last_msg_seq = 2  # as if it had been sent after message 2
            listener.handle_frames(hb.to_frames())
            events = listener.handle_frames(frames[5])  # 3 and 4 lost
    assert [(e.kind, e.msg.msg_seq if e.msg else None) for e in events] == [
        ("gap", None), ("verdict", 3), ("verdict", 4), ("verdict", 5)]
    assert listener.stats.unrecovered == 0
