"""The JSON Schemas in docs/schemas/ are what the message models generate, and describe real messages."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from edge_inspect.protocol.control import ControlServer
from edge_inspect.protocol.messages import ControlReply, ControlRequest, HeartbeatMsg, VerdictMsg, format_time
from edge_inspect.protocol.messages.schemas import SCHEMAS, main, render_all
from edge_inspect.protocol.publisher import VerdictPublisher
from tests.protocol.helpers import ctl_settings, make_verdict, no_curve, pub_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA_DIR = DOCS / "schemas"
REGENERATE = "python -m edge_inspect.protocol.messages.schemas docs/schemas"


def test_committed_schemas_are_what_the_models_generate():
    generated = render_all()
    committed = {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    assert committed == set(generated), f"docs/schemas/ holds other files than the models make; run: {REGENERATE}"
    for name, text in generated.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, f"{name} is stale; run: {REGENERATE}"
    assert main(["--check", str(SCHEMA_DIR)]) == 0


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    (tmp_path / "verdict.schema.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1
    assert "verdict.schema.json" in capsys.readouterr().err


def test_protocol_doc_links_every_schema():
    doc = (DOCS / "protocol.md").read_text(encoding="utf-8")
    for name in SCHEMAS:
        assert f"schemas/{name}" in doc, name


def _schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def test_schemas_name_exactly_the_fields_on_the_wire():
    # Without a JSON Schema validator at hand, check what drifts most easily: the field names, every one
    # required, in wire order, and the constants.
    boot = str(uuid.uuid4())
    body = json.loads(VerdictMsg.from_verdict(make_verdict(3, "ng", heatmap=True), "line1", boot, 7).to_frames()[1])
    verdict = _schema("verdict.schema.json")
    assert list(verdict["properties"]) == list(body) == verdict["required"]
    assert verdict["properties"]["schema"]["const"] == body["schema"] and verdict["properties"]["version"]["const"] == 1
    assert set(verdict["$defs"]["Region"]["properties"]) == set(body["regions"][0])
    assert set(verdict["$defs"]["HeatmapHeader"]["properties"]) == set(body["heatmap"])
    assert "fused z-score" in verdict["properties"]["score"]["description"]

    hb = HeartbeatMsg("line1", "cam0", boot, format_time(0.0), 1.0, 1.0, -1, status={"state": "running"})
    heartbeat = _schema("heartbeat.schema.json")
    assert list(heartbeat["properties"]) == list(json.loads(hb.to_frames()[1])) == heartbeat["required"]
    assert set(heartbeat["$defs"]["Drift"]["properties"]) >= {"state", "n", "estimated_frr", "threshold"}

    request = _schema("control-request.schema.json")
    assert set(request["discriminator"]["mapping"]) == {"ping", "status", "trigger", "set_threshold", "last", "reload"}
    assert ControlRequest.from_frames([b'{"cmd": "last", "n": 2}']).cmd == "last"
    reply = _schema("control-reply.schema.json")
    assert set(reply["properties"]) == {"ok", "cmd", "result", "error", "id"} and reply["required"] == ["ok"]
    assert ControlReply.from_frames(ControlReply(ok=False, error="x").to_frames()).error == "x"


def test_last_result_schema_matches_a_real_reply():
    with VerdictPublisher(pub_settings(), no_curve()) as pub:
        pub.publish(make_verdict(0))
        server = ControlServer(ctl_settings(), no_curve(), None, pub)
        reply = ControlReply.from_frames([server.handle(b'{"cmd": "last"}')])
    last = _schema("control-last-result.schema.json")
    assert reply.ok and set(reply.result) == set(last["properties"]) == set(last["required"])
    assert last["properties"]["verdicts"]["items"] == {"$ref": "#/$defs/VerdictMsg"}
