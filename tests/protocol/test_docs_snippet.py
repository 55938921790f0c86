"""The minimal gateway in docs/protocol.md really delivers every verdict once, in order, across gaps and restarts."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import zmq

from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _snippet() -> str:
    match = re.search(r"<!-- gateway-snippet -->\n```python\n(.*?)```", DOC.read_text(), re.S)
    assert match, "gateway snippet not found in docs/protocol.md"
    return match.group(1)


def _wait(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not cond():
        time.sleep(0.01)
    assert cond()


def test_gateway_snippet_from_the_docs():
    namespace: dict = {}
    exec(compile(_snippet(), str(DOC), "exec"), namespace)
    delivered, lost, stop = [], [], threading.Event()

    ctx = zmq.Context()
    station = ctx.socket(zmq.XPUB)  # stands in for the PUB socket and lets us pick which frames get through
    station.linger = 0
    station.bind("tcp://127.0.0.1:*")
    endpoint = station.getsockopt_string(zmq.LAST_ENDPOINT)
    pub1 = VerdictPublisher(pub_settings(), no_curve())
    pub2 = VerdictPublisher(pub_settings(), no_curve())
    try:
        with ControlServer(ctl_settings(), no_curve(), None, pub1) as ctl:
            gw = threading.Thread(
                target=namespace["gateway"],
                args=(endpoint, ctl.endpoint, lambda body: delivered.append((body["boot_id"], body["msg_seq"]))),
                kwargs={"on_lost": lambda cam, n: lost.append((cam, n)), "stop": stop.is_set},
                daemon=True,
            )
            gw.start()
            assert station.poll(5000) and station.recv() and station.poll(5000) and station.recv()  # 2 subscriptions
            station.send_multipart(pub1._heartbeat_msg().to_frames())  # first contact: nothing sent yet
            frames = [pub1.publish(make_verdict(seq)).to_frames() for seq in range(10)]
            for i in (0, 1, 2, 6, 7):  # 3..5 lost, and 8, 9 at the tail
                station.send_multipart(frames[i])
            hb = pub1._heartbeat_msg()
            hb.last_msg_seq = 9
            station.send_multipart(hb.to_frames())
            _wait(lambda: len(delivered) == 10)

            ctl.publisher = pub2  # the station restarts on the same endpoints
            frames2 = [pub2.publish(make_verdict(seq)).to_frames() for seq in range(3)]
            for i in (1, 2):  # the new boot's first message is lost
                station.send_multipart(frames2[i])
            _wait(lambda: len(delivered) == 13)
            hb2 = pub2._heartbeat_msg()
            hb2.last_msg_seq = 5  # claims 3 messages that were never stored: lost for good
            station.send_multipart(hb2.to_frames())
            _wait(lambda: lost)
            stop.set()
            gw.join(timeout=5)
    finally:
        pub1.close()
        pub2.close()
        station.close()
        ctx.term()
    assert delivered == [(pub1.boot_id, i) for i in range(10)] + [(pub2.boot_id, i) for i in range(3)]
    assert lost == [(("line1", "cam0"), 3)]
