"""JSON Schemas of the wire messages, generated from the models (docs/schemas/ holds the committed copies).

    python -m edge_inspect.protocol.messages.schemas docs/schemas          # write them
    python -m edge_inspect.protocol.messages.schemas --check docs/schemas  # exit 1 if they differ

tests/protocol/test_schemas.py fails when the committed files differ from what the models generate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .common import adapter
from .control import ControlReply, LastResult, RequestBody
from .heartbeat import HeartbeatMsg
from .verdict import VerdictMsg

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# file name -> (model, title, what the wire adds to the model's own rules)
SCHEMAS: dict[str, tuple[Any, str, str]] = {
    "verdict.schema.json": (
        VerdictMsg, "edge-inspect verdict (frame 1 of a verdict message)",
        "Topic (frame 0): verdict.<line_id>.<camera_id>. When heatmap is not null, frame 2 holds h*w bytes "
        "(uint8, C order). The body is at most 1 MiB; numbers are finite (JSON has no NaN/Infinity)."),
    "heartbeat.schema.json": (
        HeartbeatMsg, "edge-inspect heartbeat (frame 1 of a heartbeat message)",
        "Topic (frame 0): heartbeat.<line_id>.<camera_id>. Every field is required; unknown fields are "
        "ignored. status and publisher may carry more keys than listed; the listed ones have the types "
        "shown."),
    "control-request.schema.json": (
        RequestBody, "edge-inspect control request (one JSON frame to the control socket)",
        "One object per request, at most 64 KiB. Arguments not listed for the command are refused; an id "
        "that is not a string of at most 64 characters or an integer is ignored."),
    "control-reply.schema.json": (
        ControlReply, "edge-inspect control reply (one JSON frame from the control socket)",
        "ok: true carries result (for 'last' see control-last-result.schema.json); ok: false carries error "
        "(one line). cmd and id echo the request when it named a known command or a valid id."),
    "control-last-result.schema.json": (
        LastResult, "edge-inspect control 'last' result (the result of an ok reply to cmd 'last')",
        "verdicts: stored verdict bodies, oldest first, exactly as published (without frame 2; a stored "
        "body's heatmap is null)."),
}


def generate(model: Any, title: str, description: str) -> dict:
    schema = adapter(model).json_schema()
    _strip_property_titles(schema)
    if dataclasses.is_dataclass(model) and "properties" in schema:
        order = [f.name for f in dataclasses.fields(model)]
        props = schema["properties"]
        schema["properties"] = {k: props[k] for k in order if k in props}
        if getattr(model, "_every_field_required", False):
            schema["required"] = list(schema["properties"])
            for prop in schema["properties"].values():  # Python-side conveniences, not wire defaults
                prop.pop("default", None)
    schema.pop("title", None)
    doc = schema.pop("description", None)
    full = f"{doc.strip()}\n\n{description}" if doc else description
    return {"$schema": JSON_SCHEMA_DIALECT, "title": title, "description": full, **schema}


def _strip_property_titles(node: Any) -> None:
    """pydantic titles every property after its name ("Line Id"); that is noise in a wire schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for prop in value.values():
                    if isinstance(prop, dict):
                        prop.pop("title", None)
            _strip_property_titles(value)
    elif isinstance(node, list):
        for item in node:
            _strip_property_titles(item)


def render_all() -> dict[str, str]:
    """file name -> the file's text."""
    return {name: json.dumps(generate(*spec), indent=2, ensure_ascii=False) + "\n"
            for name, spec in SCHEMAS.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_inspect.protocol.messages.schemas", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path, help="folder of the schema files (docs/schemas)")
    p.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = p.parse_args(argv)
    stale = []
    for name, text in render_all().items():
        path = args.out_dir / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    if stale:
        print(f"out of date in {args.out_dir}: {', '.join(stale)} (regenerate: python -m "
              f"edge_inspect.protocol.messages.schemas {args.out_dir})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
