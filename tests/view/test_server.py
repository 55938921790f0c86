"""The live view over HTTP (no browser): token rule, routes, the state following the line, and a stuck
client that never slows the pipeline."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from edge_inspect.errors import ConfigError
from edge_inspect.view.live import LiveState
from edge_inspect.view.server import ViewServer, is_loopback
from edge_inspect.view.settings import ViewSettings


def get(url: str, headers=None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""


def wait_for(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_loopback_rule():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("")
    with pytest.raises(ConfigError, match="needs a token"):
        ViewServer(ViewSettings(bind="0.0.0.0:0"), LiveState())
    with pytest.raises(Exception, match="ADDR:PORT"):
        ViewSettings(bind="8080")


def test_taken_port_is_one_config_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot listen"):
            ViewServer(ViewSettings(bind=f"127.0.0.1:{s.getsockname()[1]}"), LiveState())


def test_routes_token_and_live_state(view_line):
    pipeline, view, server = view_line
    base = server.url
    assert get(base + "api/state")[0] == 403  # no token
    assert get(base + "api/state?token=wrong")[0] == 403
    code, page, ctype = get(base + "?token=s3cret")
    assert code == 200 and ctype.startswith("text/html") and b"EventSource" in page
    state = wait_for(lambda: (s := json.loads(get(base + "api/state", {"X-View-Token": "s3cret"})[1]))
                     ["cameras"] and s["cameras"][0]["counters"]["verdicts_out"] > 5 and s)
    (tile,) = state["cameras"]
    assert tile["id"] == "cam0" and state["state"] == "running"
    assert tile["part"]["label"] in ("ok", "ng") and tile["model"]["model_id"] == "tiny-test-model"
    assert tile["camera"]["state"] == "ok" and tile["trend"] and tile["calibration"]["image_threshold"] == 0.5
    code, jpeg, ctype = get(base + "frame.jpg?token=s3cret")
    assert code == 200 and ctype == "image/jpeg" and jpeg[:2] == b"\xff\xd8"
    assert get(base + "frame.jpg?camera=cam0&token=s3cret")[1][:2] == b"\xff\xd8"
    assert get(base + "frame.jpg?camera=nope&token=s3cret")[0] == 404
    ng = wait_for(lambda: json.loads(get(base + "api/state?token=s3cret")[1])["ng"])
    assert get(base + f"ng/{ng[-1]['key']}.jpg?token=s3cret")[0] == 200
    assert get(base + "ng/999999.jpg?token=s3cret")[0] == 404


def test_a_stuck_client_drops_view_states_never_parts(tiny_model_dir):
    from tests.view.conftest import running_view

    with running_view(tiny_model_dir, fps=30, camera="synthetic://?fps=60&size=96&defect_rate=0.4") as (p, view, srv):
        stuck = socket.create_connection(("127.0.0.1", srv.port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        time.sleep(3.0)
        c = p.status()["counters"]
        stuck.close()
    assert c["frames_in"] > 100  # the line went on at the camera's pace
    assert c["dropped_queue"] <= c["frames_in"] * 0.05
    s = view.stats()
    assert s["skipped"] > 0  # the view sampled: parts offered faster than 30 fps were skipped
    assert s["handled"] <= 30 * 4.5  # the frame-rate cap (about 4 s of running)
