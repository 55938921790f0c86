"""A restarted subscriber resumes from where it stopped: what the station sent meanwhile is fetched through
``last`` and reported as missed while down; without a resume point, what came before is reported (join)."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from edge_inspect.errors import ConfigError
from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.listener import (
    ResumePoint,
    StateFile,
    VerdictListener,
    format_event,
    format_summary,
)
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings

KEY = ("line1", "cam0")
NOWHERE = "tcp://127.0.0.1:9"  # frames are handed in directly; resync uses the real control socket


@pytest.fixture()
def station():
    with (VerdictPublisher(pub_settings(), no_curve()) as pub,
          ControlServer(ctl_settings(), no_curve(), None, pub) as ctl):
        yield pub, ctl


def _publish(pub, seqs):
    return [pub.publish(make_verdict(seq)).to_frames() for seq in seqs]


def _beat(pub, last_msg_seq):
    hb = pub._heartbeat_msg()
    hb.last_msg_seq = last_msg_seq
    return hb.to_frames()


def test_resume_in_the_same_boot_fetches_what_was_missed_while_down(station):
    pub, ctl = station
    _publish(pub, range(10))  # the subscriber had 0..3, then was down while 4..9 went out
    with VerdictListener(NOWHERE, control=ctl.endpoint, resume={KEY: ResumePoint(4, pub.boot_id, last_seq=3)}) as li:
        events = li.handle_frames(_beat(pub, 9))
        events += li.handle_frames(_publish(pub, [10])[0])
    assert [e.kind for e in events] == ["resume", "gap"] + ["verdict"] * 6 + ["heartbeat", "verdict"]
    resume, gap = events[0].detail, events[1].detail
    assert (resume["resume_from"], resume["missed"], resume["error"]) == (4, 6, None)
    assert (gap["first_msg_seq"], gap["last_msg_seq"], gap["recovered"], gap["while_down"]) == (4, 9, 6, True)
    assert [e.msg.msg_seq for e in events if e.kind == "verdict"] == list(range(4, 11))
    s = li.stats
    assert (s.resynced, s.received, s.missed_while_down, s.unrecovered, s.not_requested) == (6, 1, 6, 0, 0)
    assert li.positions()[KEY] == ResumePoint(11, pub.boot_id, 10)
    assert "6 missed while this listener was down" in format_event(events[0])
    assert "while this listener was down; resynced 6" in format_event(events[1])
    assert "missed while down 6" in format_summary(s, li.positions())


def test_resume_from_a_msg_seq_takes_the_stations_current_boot(station):
    pub, ctl = station
    frames = _publish(pub, range(5))
    with VerdictListener(NOWHERE, control=ctl.endpoint, resume_from=2) as li:
        events = li.handle_frames(frames[4])  # first contact is a verdict: 2 and 3 were missed
    assert [(e.kind, e.msg.msg_seq if e.msg else None) for e in events] == [
        ("resume", None), ("gap", None), ("verdict", 2), ("verdict", 3), ("verdict", 4)]
    assert events[0].detail["boot_id"] == pub.boot_id and li.stats.missed_while_down == 2


def test_nothing_missed_and_a_resume_point_ahead_of_the_station_are_said(station):
    pub, ctl = station
    _publish(pub, range(3))
    with VerdictListener(NOWHERE, control=ctl.endpoint, resume={KEY: ResumePoint(3, pub.boot_id, 2)}) as li:
        (resume, _) = li.handle_frames(_beat(pub, 2))
    assert resume.detail["missed"] == 0 and "nothing missed" in format_event(resume)
    with VerdictListener(NOWHERE, control=ctl.endpoint, resume_from=50) as li:
        (resume, hb) = li.handle_frames(_beat(pub, 2))
        assert "behind the resume point" in resume.detail["error"] and li.stats.gaps == 0
        (verdict,) = li.handle_frames(_publish(pub, [3])[0])  # followed from the station's position
    assert verdict.kind == "verdict" and li.stats.received == 1


def test_a_station_restarted_while_down_is_a_restart_and_its_new_boot_is_fetched(station):
    pub, ctl = station
    _publish(pub, range(4))
    old_boot = str(uuid.uuid4())
    with VerdictListener(NOWHERE, control=ctl.endpoint, resume={KEY: ResumePoint(7, old_boot, 6)}) as li:
        events = li.handle_frames(_beat(pub, 3))
    assert [e.kind for e in events] == ["restart", "resume", "gap"] + ["verdict"] * 4 + ["heartbeat"]
    restart = events[0].detail
    assert restart["while_down"] and restart["old_boot_id"] == old_boot and restart["old_resume_from"] == 7
    assert "cannot be fetched" in format_event(events[0])
    assert li.stats.restarts == 1 and li.stats.resynced == 4 and li.stats.missed_while_down == 4


def test_without_a_resume_point_what_came_before_is_reported_not_fetched(station):
    pub, ctl = station
    _publish(pub, range(113))
    with VerdictListener(NOWHERE, control=ctl.endpoint) as li:
        (join, hb) = li.handle_frames(_beat(pub, 112))
        assert li.handle_frames(_publish(pub, [113])[0])[0].kind == "verdict"
    assert join.kind == "join" and join.detail["not_requested"] == 113 and li.stats.not_requested == 113
    assert "--state FILE" in format_event(join) and li.stats.resynced == 0
    assert "sent before start, not requested 113" in format_summary(li.stats)


def test_state_file_round_trip_is_atomic_and_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "listen.state"
    state = StateFile(path)
    assert state.load() == {}
    boot = str(uuid.uuid4())
    points = {KEY: ResumePoint(42, boot, 57), ("line1", "cam1"): ResumePoint(0, None, None)}
    state.save(points)
    assert StateFile(path).load() == points
    assert json.loads(path.read_text())["schema"] == "edge-inspect/listen-state"
    assert [p.name for p in tmp_path.iterdir()] == ["listen.state"]  # no temporary file left behind
    before = os.stat(path).st_mtime_ns
    state.maybe_save(points)  # within min_interval_s: not written
    assert os.stat(path).st_mtime_ns == before
    for text in ["{not json", '{"schema": "other", "version": 1, "cameras": []}',
                 json.dumps({"schema": "edge-inspect/listen-state", "version": 1,
                             "cameras": [{"line_id": "line1", "camera_id": "cam0", "boot_id": boot,
                                          "next_msg_seq": -4, "last_seq": None}]})]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"listen\.state: not a listen state file.*delete it") as info:
            StateFile(path).load()
        assert "\n" not in str(info.value)
