"""A station with Aravis's fake GigE camera, software-triggered, beside a free-running synthetic camera
(counterpart test): exactly one verdict per trigger, carrying its part id.

Runs inside ``unshare -n`` like tests/camera/test_gige.py (whose checks and fake-camera helper it uses),
so nothing Aravis sends leaves the namespace. Prints one JSON line of what it measured.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARTS = 8


def _scenario() -> dict:
    from edge_inspect.pipeline.station import build_station, first_camera_id
    from edge_inspect.protocol.publisher import VerdictPublisher
    from edge_inspect.settings import Settings
    from tests.camera.test_gige import FakeCamera
    from tests.fixtures.tiny_model import make_tiny_model
    from tests.pipeline.fakes import RecordingNotifier, Wire

    cam = FakeCamera()
    cam.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = make_tiny_model(Path(tmp) / "model")
            settings = Settings(
                model={"dir": model},
                cameras=[{"id": "gv0", "uri": "gige://127.0.0.1", "mode": "trigger", "infer_timeout_s": 2.0},
                         {"id": "free", "uri": "synthetic://?fps=100&size=96", "mode": "free-run"}],
                pipeline={"warmup_runs": 1},
                camera={"read_timeout_s": 0.5, "stall_timeout_s": 5.0, "open_timeout_s": 5.0},
                publisher={"bind": "tcp://127.0.0.1:*", "heartbeat_s": 0.2},
            )
            pub = VerdictPublisher(settings.publisher, settings.security, camera_id=first_camera_id(settings))
            wire = Wire(pub.endpoint)
            station = build_station(settings, pub, RecordingNotifier())
            station.start()
            parts = [f"part-{i}" for i in range(PARTS)]
            t0 = time.monotonic()
            try:
                for part in parts:
                    station.trigger(part, camera="gv0")
                    time.sleep(0.1)
                deadline = time.monotonic() + 15
                while (station.status("gv0")["counters"]["verdicts_out"] < PARTS
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
                time.sleep(0.3)  # a second verdict for any trigger would arrive now
            finally:
                station.stop()
            wire.close(grace_s=0.3)
            summary = station.summary()
            return {
                "parts": parts,
                "gv0_part_ids": [m.part_id for m in wire.verdicts if m.camera_id == "gv0"],
                "gv0": summary["cameras"]["gv0"]["counters"],
                "free_verdicts": summary["cameras"]["free"]["counters"]["verdicts_out"],
                "seconds": round(time.monotonic() - t0, 3),
                "hub": summary["hub"],
            }
    finally:
        cam.kill()


@pytest.mark.counterpart
@pytest.mark.slow
def test_triggered_gige_camera_beside_a_free_running_one():
    from tests.camera.test_gige import run_scenario_offline

    res = run_scenario_offline(__file__, "station GigE scenario")
    print("\nstation with a fake GigE camera:", json.dumps(res))
    assert res["gv0_part_ids"] == res["parts"]  # one verdict per trigger, none extra, in order
    c = res["gv0"]
    assert c["frames_in"] == c["verdicts_out"] == PARTS and c["timeouts"] == 0
    assert res["free_verdicts"] > PARTS


if __name__ == "__main__" and sys.argv[1:] == ["--scenario"]:
    sys.path.insert(0, str(REPO))
    print(json.dumps(_scenario()))
