"""Control channel over real loopback sockets with a fake pipeline target."""

from __future__ import annotations

import json

import pytest
import zmq

from edge_inspect.decision import Thresholds
from edge_inspect.errors import ModelError, ProtocolError
from edge_inspect.protocol.control import ControlClient, ControlServer
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings


class FakePipeline:
    """Records every accepted call; ``reload`` refuses folders named 'bad', ``trigger`` crashes on 'boom';
    ``set_threshold`` applies the pipeline's rule (decision.Thresholds) with a lower bound of 0."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.thresholds = {"image": 0.5, "pixel": 0.4}
        self._rule = Thresholds(0.5, 0.4, image_lower_bound=0.0, pixel_lower_bound=0.0)

    def status(self) -> dict:
        return {"state": "running", "fps": 30.0, "thresholds": dict(self.thresholds)}

    def trigger(self, part_id: str) -> None:
        if part_id == "boom":
            raise RuntimeError("camera driver bug")
        self.calls.append(("trigger", part_id))

    def set_threshold(self, image, pixel) -> None:
        self._rule = self._rule.with_overrides(image, pixel, image_what="set_threshold image")  # ConfigError: no change
        self.calls.append(("set_threshold", image, pixel))
        if image is not None:
            self.thresholds["image"] = image
        if pixel is not None:
            self.thresholds["pixel"] = pixel

    def reload(self, model_dir: str) -> None:
        if model_dir.endswith("bad"):
            raise ModelError(f"{model_dir}/manifest.json: missing")
        self.calls.append(("reload", model_dir))


@pytest.fixture()
def station():
    target = FakePipeline()
    with VerdictPublisher(pub_settings(history=50), no_curve()) as pub:
        with ControlServer(ctl_settings(), no_curve(), target, publisher=pub) as server:
            with ControlClient(server.endpoint) as client:
                yield target, pub, server, client


def test_each_command_reaches_the_target(station):
    target, pub, server, client = station
    assert client.request("ping")["boot_id"] == pub.boot_id
    assert client.request("status")["state"] == "running"
    assert client.request("trigger", part_id="P-17") == {"part_id": "P-17"}
    assert client.request("set_threshold", image=0.7) == {"image": 0.7, "pixel": None}
    assert client.request("reload", model_dir="/models/v2") == {"model_dir": "/models/v2"}
    assert target.calls == [("trigger", "P-17"), ("set_threshold", 0.7, None), ("reload", "/models/v2")]
    assert client.request("status")["thresholds"] == {"image": 0.7, "pixel": 0.4}


def test_last_returns_stored_verdict_bodies(station):
    _, pub, _, client = station
    for seq in range(10):
        pub.publish(make_verdict(seq * 2))  # frame seqs 0, 2, ..., 18: the station skipped odd frames
    result = client.request("last", since_seq=9, n=3)
    assert result["boot_id"] == pub.boot_id and result["camera_id"] == "cam0"
    assert [v["seq"] for v in result["verdicts"]] == [10, 12, 14]  # oldest first after since_seq
    assert [v["msg_seq"] for v in result["verdicts"]] == [5, 6, 7]
    assert [v["seq"] for v in client.request("last", n=2)["verdicts"]] == [16, 18]  # no since: newest n
    assert len(client.request("last")["verdicts"]) == 10


MALFORMED = [
    b"",
    b"not json",
    b"[]",
    b'"ping"',
    b"{}",
    b'{"cmd": 1}',
    b'{"cmd": "format_disk"}',
    b'{"cmd": "trigger"}',
    b'{"cmd": "trigger", "part_id": ""}',
    b'{"cmd": "trigger", "part_id": 17}',
    b'{"cmd": "set_threshold"}',
    b'{"cmd": "set_threshold", "image": "high"}',
    b'{"cmd": "set_threshold", "image": -0.5, "pixel": 0.3}',  # below the model's bound: the target refuses
    b'{"cmd": "set_threshold", "image": NaN}',
    b'{"cmd": "set_threshold", "image": 0.6, "pixle": 0.3}',
    b'{"cmd": "last", "n": -5}',
    b'{"cmd": "last", "since_seq": "10"}',
    b'{"cmd": "reload"}',
    b'{"cmd": "reload", "model_dir": ["a"]}',
    b"\xff\xfe\x00garbage",
    b'{"cmd": "ping"' + b" " * 70_000 + b"}",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_get_an_error_and_change_nothing(station, raw):
    target, _, server, _ = station
    # A raw REQ socket, as a PLC gateway written in another language would use.
    ctx = zmq.Context()
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(server.endpoint)
    try:
        req.send(raw)
        if len(raw) > 65 * 1024:  # over MAXMSGSIZE: the server drops the connection, no reply
            assert not req.poll(300)
        else:
            assert req.poll(2000), "no reply"
            reply = json.loads(req.recv())
            assert reply["ok"] is False and reply["error"]
    finally:
        req.close()
        ctx.term()
    assert target.calls == [] and target.thresholds == {"image": 0.5, "pixel": 0.4}
    with ControlClient(server.endpoint) as again:  # the server thread is still serving
        assert again.request("ping")["pong"] is True


def test_target_errors_become_error_replies_and_the_thread_survives(station):
    target, _, _, client = station
    reply = client.request_reply("set_threshold", image=-0.5)
    assert not reply.ok
    assert reply.error == ("set_threshold image -0.5 is below 0, the least value the model outputs "
                           "(everything would be flagged)")
    reply = client.request_reply("reload", model_dir="/models/bad")
    assert not reply.ok and "manifest.json: missing" in reply.error
    reply = client.request_reply("trigger", part_id="boom")
    assert not reply.ok and "internal error" in reply.error and "camera driver bug" in reply.error
    assert client.request("ping")["pong"] is True
    assert target.calls == []


def test_request_id_is_echoed_and_errors_raise_in_request(station):
    _, _, _, client = station
    reply = client.request_reply("ping")
    assert reply.ok and isinstance(reply.id, str)
    with pytest.raises(ProtocolError, match="unknown command"):
        client.request("self_destruct")


def test_without_target_or_publisher_commands_are_refused():
    with ControlServer(ctl_settings(), no_curve(), target=None) as server, ControlClient(server.endpoint) as client:
        assert "no pipeline" in client.request_reply("status").error
        assert "no publisher" in client.request_reply("last").error
        assert client.request("ping")["boot_id"] is None


def test_client_times_out_cleanly_without_a_server():
    with ControlClient("tcp://127.0.0.1:9") as client:  # discard port: nothing listens
        with pytest.raises(ProtocolError, match="no reply"):
            client.request("ping", timeout_s=0.2)
