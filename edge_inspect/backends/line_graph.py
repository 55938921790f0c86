"""The line graph: the model's per-network ONNX graphs joined into one, cut to the outputs the line needs.

The model folder keeps one graph per network (the contract TensorRT builds engines from). On the CPU,
ONNX Runtime runs faster as one session than as a chain of five (one thread pool instead of five that
compete for the cores; docs/performance.md), and the line needs only the score and the anomaly map: the
diagnostic maps (``st_map``, ``disc_prob``, ...) cost ≈2 ms per frame at full resolution. So the backend
joins the graphs in memory at load time and drops every node that no wanted output depends on.

Joining keeps the global tensor names (the manifest's graph inputs and outputs); every other tensor
and node name gets its graph's name as a prefix, so the graphs' internals cannot collide. Needs the
``onnx`` package; without it (or for graphs that cannot be joined) the backend runs the chain.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..manifest import Manifest

log = logging.getLogger(__name__)


class CannotJoin(Exception):
    """The graphs cannot be joined into one (the reason is the message); the caller runs the chain."""


def line_outputs(manifest: Manifest, diagnostics: bool) -> list[str]:
    """The outputs a backend returns: score and anomaly map (what ``decision.decide`` reads), plus the
    manifest's ``extra_outputs`` when ``diagnostics`` (evaluation, reports) asks for them."""
    names = [manifest.score_output, manifest.map_output]
    if diagnostics:
        names += [n for n in manifest.extra_outputs if n not in names]
    produced = {t.name for g in manifest.graphs for t in g.outputs}
    return [n for n in names if n in produced]


def prune(model, outputs: list[str]):
    """``model`` (onnx.ModelProto, changed in place and returned) with only the nodes, initializers and
    value infos that ``outputs`` depend on, and exactly those graph outputs (in that order)."""
    graph = model.graph
    by_name = {o.name: o for o in graph.output}
    missing = [n for n in outputs if n not in by_name]
    if missing:
        raise CannotJoin(f"the graph has no output {missing}")
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):  # nodes are topologically sorted: consumers come after producers
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    new_outputs = [by_name[n] for n in outputs]
    inits = [t for t in graph.initializer if t.name in needed]
    infos = [v for v in graph.value_info if v.name in needed]
    for field, items in (("node", kept), ("output", new_outputs), ("initializer", inits), ("value_info", infos)):
        # protobuf repeated fields: copy what stays, clear, put it back
        copies = [type(i)() for i in items]
        for dst, src in zip(copies, items, strict=True):
            dst.CopyFrom(src)
        getattr(graph, field).clear()
        getattr(graph, field).extend(copies)
    return model


def join(model_dir: str | Path, manifest: Manifest):
    """The manifest's graphs joined into one onnx.ModelProto (image → every graph output), in manifest order.

    Raises CannotJoin when onnx is missing or cannot read a graph, a graph has control flow, or two graphs
    import different versions of one opset domain.
    """
    try:
        import onnx
        from onnx import helper
    except ImportError as exc:
        raise CannotJoin(f"the onnx package is not installed ({exc})") from exc
    keep = {manifest.input.name} | {t.name for g in manifest.graphs for t in (*g.inputs, *g.outputs)}
    nodes, inits, infos, outputs, opsets = [], [], [], {}, {}
    image_vi, ir_version = None, 0
    for g in manifest.graphs:
        path = Path(model_dir) / g.file
        try:
            mod = onnx.load(str(path))
        except Exception as exc:  # protobuf DecodeError, OSError, ...: the chain then reports it as a ModelError
            why = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise CannotJoin(f"{path}: onnx cannot read it ({why})") from exc
        ir_version = max(ir_version, mod.ir_version)
        for o in mod.opset_import:
            if opsets.setdefault(o.domain, o.version) != o.version:
                raise CannotJoin(f"graphs import different versions of opset domain '{o.domain or 'ai.onnx'}'")
        pre = g.name + "/"

        def rename(name: str, pre: str = pre) -> str:
            return name if (not name or name in keep) else pre + name

        for n in mod.graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
                raise CannotJoin(f"graph '{g.name}' has control flow (subgraphs)")
            n.input[:] = [rename(i) for i in n.input]
            n.output[:] = [rename(o) for o in n.output]
            n.name = pre + (n.name or n.op_type)
            nodes.append(n)
        for t in mod.graph.initializer:
            t.name = rename(t.name)
            inits.append(t)
        for v in mod.graph.value_info:
            v.name = rename(v.name)
            infos.append(v)
        for o in mod.graph.output:
            outputs.setdefault(o.name, o)
        if image_vi is None:
            image_vi = next((i for i in mod.graph.input if i.name == manifest.input.name), None)
    if image_vi is None:
        raise CannotJoin(f"no graph reads the model input '{manifest.input.name}'")
    graph = helper.make_graph(nodes, "line", [image_vi], list(outputs.values()), inits, value_info=infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    return model


def line_graph_bytes(model_dir: str | Path, manifest: Manifest, outputs: list[str]) -> bytes:
    """The serialised line graph: the joined graphs pruned to ``outputs``. Raises CannotJoin (see ``join``)."""
    return prune(join(model_dir, manifest), outputs).SerializeToString()
