"""gige:// against Aravis's fake GigE Vision camera (counterpart test), inside a private network namespace.

The pytest test starts ``unshare -n sh -c 'ip link set lo up; python THIS_FILE --scenario'`` (root
only), so whatever Aravis sends cannot leave the namespace; the scenario starts
``arv-fake-gv-camera-0.8 -i 127.0.0.1`` there and drives it through open_source: free-run, software
trigger (one frame per trigger, part id attached), hardware trigger (no frame), camera settings,
Mono16, and recovery after the camera process is killed and restarted. It prints one JSON line of
measurements. Needs aravis-tools, gir1.2-aravis-0.8 and pygobject<3.51 (scripts/ci-counterparts-camera.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = "arv-fake-gv-camera-0.8"


# ---- the scenario (runs inside the namespace) ------------------------------------------------------

class FakeCamera:
    def __init__(self):
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([FAKE, "-i", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.2)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _settings(query="", **kw):
    from edge_inspect.camera.settings import CameraSettings

    base = dict(uri=f"gige://127.0.0.1{query}", camera_id="gv0", read_timeout_s=1.0, reconnect_initial_s=0.2,
                reconnect_max_s=1.0, stall_timeout_s=1.0)
    base.update(kw)
    return CameraSettings(**base)


def _frames(src, n, timeout=5.0):
    from edge_inspect.errors import CameraError

    out, errors, t_end = [], 0, time.monotonic() + timeout
    while len(out) < n and time.monotonic() < t_end:
        try:
            f = src.read(0.5)
        except CameraError:
            errors += 1
            continue
        if f is not None:
            out.append(f)
    return out, errors


def _feature(src, name: str) -> str:
    # No reference to the device may outlive the source: a live device object keeps the camera's
    # control channel, and the next client could then not write any setting.
    return src.raw._cam.get_device().get_string_feature_value(name)


def _scenario() -> dict:
    from edge_inspect.camera.uri import open_source

    res: dict = {}
    cam = FakeCamera()
    cam.start()
    try:
        # Free-run: frames flow, sequence follows the camera's frame ids, content advances.
        src = open_source(_settings("?fps=50"))
        t = time.monotonic()
        src.open()
        res["open_s"] = time.monotonic() - t
        frames, errors = _frames(src, 25)
        assert len(frames) == 25 and errors == 0, (len(frames), errors, src.status())
        f0 = frames[0]
        assert f0.image.shape == (512, 512) and f0.image.dtype == np.uint8, f0.image.shape
        seqs = [f.seq for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == 25
        assert not np.array_equal(frames[0].image, frames[1].image)
        assert all(f.part_id is None and "frame_id" in f.meta for f in frames)
        ts = [f.t_capture for f in frames]
        res["free_run_fps"] = (len(ts) - 1) / (ts[-1] - ts[0])
        res["free_run_seq_span"] = seqs[-1] - seqs[0]
        # Latest wins: a slow reader gets the newest frame; the skipped ones are sequence gaps.
        time.sleep(0.3)
        late = _frames(src, 1)[0][0]
        res["late_reader_seq_step"] = late.seq - seqs[-1]
        assert late.seq - seqs[-1] >= 5
        raw = src.raw
        assert raw.info["serial"] == "GV01" and raw.describe()["width"] == 512, (raw.info, raw.describe())
        src.close()

        # Software trigger: no frame without a trigger, one per trigger, carrying its part id.
        src = open_source(_settings("?trigger=software&exposure_us=5000&gain_db=2"))
        src.open()
        assert _feature(src, "TriggerMode") == "On" and _feature(src, "TriggerSource") == "Software"
        assert abs(src.raw._cam.get_exposure_time() - 5000) < 1
        assert abs(src.raw._cam.get_gain() - 2.0) < 1e-6
        assert src.read(0.4) is None, "a frame came without a trigger"
        lat_frame, lat_read, seqs = [], [], []
        for i in range(8):
            t = time.monotonic()
            src.trigger(f"part-{i}")
            f = src.read(2.0)
            t_read = time.monotonic()
            assert f is not None and f.part_id == f"part-{i}", (i, f and f.part_id)
            lat_frame.append(f.t_capture - t)
            lat_read.append(t_read - t)
            seqs.append(f.seq)
            assert src.read(0.12) is None, "more than one frame for one trigger"
        assert np.all(np.diff(seqs) == 1), seqs  # triggered frames: no gaps
        res["trigger_to_frame_ms"] = [round(x * 1e3, 1) for x in lat_frame]
        res["trigger_to_read_ms"] = [round(x * 1e3, 1) for x in lat_read]
        # Two quick triggers: two frames, part ids in order.
        src.trigger("A")
        src.trigger("B")
        got = [f.part_id for f in _frames(src, 2)[0]]
        assert got == ["A", "B"], got
        src.close()

        # Hardware trigger on Line0: the fake camera's line never fires, so no frame at all.
        src = open_source(_settings("?trigger=hardware"))
        src.open()
        assert _feature(src, "TriggerSource") == "Line0"
        assert src.read(0.5) is None
        src.close()

        # The camera keeps settings between clients: a free-run open must undo the trigger mode.
        src = open_source(_settings("?pixel_format=Mono16&fps=40"))
        src.open()
        assert _feature(src, "TriggerMode") == "Off"
        frames, _ = _frames(src, 3)
        assert len(frames) == 3 and frames[0].image.dtype == np.uint16 and frames[0].image.shape == (512, 512)
        src.close()
        src = open_source(_settings("?pixel_format=Mono8&fps=25"))  # reset for whoever comes next
        src.open()
        src.close()

        # The check command on the same camera.
        import contextlib
        import io

        from edge_inspect.cli import main

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["check", "--camera", "gige://127.0.0.1?fps=30", "--frames", "10", "--timeout", "10"])
        assert rc == 0 and "OK via Aravis" in buf.getvalue() and "512x512 mono uint8" in buf.getvalue(), buf.getvalue()
        res["check_line"] = buf.getvalue().strip().splitlines()[-1]

        # Camera killed and restarted: CameraError, reconnect with backoff, sequence continues.
        src = open_source(_settings("?fps=50"))
        src.open()
        before, _ = _frames(src, 10)
        cam.kill()
        t_kill = time.monotonic()
        from edge_inspect.errors import CameraError

        detected = None
        while time.monotonic() - t_kill < 15:
            try:
                src.read(0.5)
            except CameraError:
                detected = time.monotonic() - t_kill
                break
        assert detected is not None, src.status()
        assert src.status()["state"] == "reconnecting"
        cam.start()
        t_restart = time.monotonic()
        after, errors = _frames(src, 10, timeout=20)
        assert len(after) == 10, src.status()
        st = src.status()
        gap = after[0].seq - before[-1].seq - 1
        assert st["reconnects"] >= 1 and gap >= 1, (gap, st)
        assert [f.seq for f in after] == sorted(f.seq for f in after)
        res.update(loss_detected_s=detected, recovered_s=time.monotonic() - t_restart, reconnect_gap=gap,
                   failed_attempts=errors, status=st)
        src.close()
    finally:
        cam.kill()
    return res


# ---- the pytest side ---------------------------------------------------------------------------------

def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a private network namespace (unshare -n)"
    for tool in ("unshare", "ip", FAKE):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (apt: aravis-tools, iproute2, util-linux; scripts/ci-counterparts-camera.sh)"
    probe = "import gi; gi.require_version('Aravis', '0.8'); from gi.repository import Aravis"
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30)
    if r.returncode != 0:
        return ("Aravis introspection not importable (gir1.2-aravis-0.8, pygobject<3.51): "
                "run scripts/ci-counterparts-camera.sh")
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=30)
    if r.returncode != 0:
        return f"unshare -n not permitted here: {r.stderr.decode(errors='replace').strip()}"
    return None


def run_scenario_offline(script: str, what: str) -> dict:
    """Run ``python SCRIPT --scenario`` in a private network namespace (nothing can leave the machine) and
    return the JSON object on its last stdout line; the test fails with its stderr on error or timeout, and
    skips with the reason where the fake camera or ``unshare`` is missing."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = ["unshare", "-n", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}" --scenario']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the namespace's processes: scenario and fake camera
        out, err = proc.communicate()
        pytest.fail(f"{what} timed out:\n{err[-3000:]}")
    assert proc.returncode == 0, f"{what} failed:\n{err[-4000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.counterpart
@pytest.mark.slow
def test_fake_gige_camera_in_private_network_namespace():
    res = run_scenario_offline(__file__, "GigE scenario")
    print("\nfake GigE camera:", json.dumps(res))
    assert max(res["trigger_to_frame_ms"]) < 500
    assert res["free_run_fps"] > 30
    assert res["loss_detected_s"] < 5  # stall (1 s) + a bounded close, not Aravis's multi-second timeouts


if __name__ == "__main__" and sys.argv[1:] == ["--scenario"]:
    sys.path.insert(0, str(REPO))
    print(json.dumps(_scenario()))
