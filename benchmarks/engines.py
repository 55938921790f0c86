"""Per-network and end-to-end cost of a model folder: GMACs, engine size, TensorRT latency (or an estimate).

    python benchmarks/engines.py --model MODEL_DIR [--runs 500] [--warmup 50] [--json OUT.json]

* GMACs per network at batch 1, counted from the ONNX graphs (Conv, ConvTranspose, Gemm, MatMul; a
  multiply-accumulate is one MAC) or taken from the manifest's ``gmacs`` field when the graph has none.
* Engine size per network for every engine found in the model folder (all precisions built so far).
* Latency, where TensorRT can run the recorded engines here: per engine (CUDA events around
  ``execute_async_v3``) and end to end (``TensorRTBackend.infer`` wall time incl. host copies),
  median and p99 after warm-up, for the precision currently recorded in the manifest.
* Otherwise an ESTIMATE from MACs and memory traffic for a Jetson Orin Nano class device and a
  datacenter GPU, with the assumptions printed next to it. An estimate is not a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# Counting MACs and memory traffic from an ONNX graph
# --------------------------------------------------------------------------------------------


@dataclass
class GraphCost:
    macs: int  # multiply-accumulates at batch 1
    kernels: int  # compute nodes + non-fusible ones (resize, reduce, pool, concat): ≈ kernels after fusion
    activation_elems: int  # elements written by kernels (MAC and non-fusible nodes), read back at least once
    weight_elems: int

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def traffic_bytes(self, bytes_per_elem: float) -> float:
        """Lower bound of DRAM traffic: every activation written and read once, weights read once."""
        return (2 * self.activation_elems + self.weight_elems) * bytes_per_elem


MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
UNFUSED_OPS = {"Resize", "Upsample", "ReduceMax", "ReduceMean", "ReduceSum", "ReduceL2", "AveragePool", "MaxPool",
               "GlobalAveragePool", "Softmax", "TopK", "Concat"}


def count_cost(onnx_path: str | Path, batch: int = 1) -> GraphCost:
    """MACs of Conv, ConvTranspose, Gemm and MatMul nodes, with shapes from ONNX shape inference."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    for vi in list(model.graph.input) + list(model.graph.output):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param or dim.dim_value <= 0:
                dim.dim_value = batch  # the only symbolic axis an export has is the batch
    del model.graph.value_info[:]  # exporters leave symbolic shapes there; infer them again from the inputs
    shapes = _static_shapes(shape_inference.infer_shapes(model, data_prop=True))
    needed = [o for n in model.graph.node if n.op_type in MAC_OPS for o in (*n.input[:2], n.output[0])]
    if any(name not in shapes for name in needed):
        # Shapes behind computed pads/reshapes (e.g. TF-style "same" padding): run the graph once on zeros.
        shapes.update(_runtime_shapes(model))
    initializers = {i.name for i in model.graph.initializer}

    macs = kernels = acts = 0
    for node in model.graph.node:
        if node.op_type in MAC_OPS or node.op_type in UNFUSED_OPS:
            # Only real kernels write to memory: element-wise ops and activations fuse into them.
            acts += sum(int(np.prod(shapes[o])) for o in node.output if o in shapes)
        kernels += node.op_type in UNFUSED_OPS
        if node.op_type not in MAC_OPS:
            continue
        kernels += 1
        ins = [shapes.get(name) for name in node.input]
        out = shapes.get(node.output[0])
        if out is None or any(s is None for s in ins[:2]):
            raise ValueError(f"{onnx_path}: cannot infer shapes around {node.op_type} node '{node.name}'")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":  # W: (Cout, Cin/g, k...)
            macs += int(np.prod(out)) * int(np.prod(ins[1][1:]))
        elif node.op_type == "ConvTranspose":  # W: (Cin, Cout/g, k...); every input element scatters a kernel
            macs += int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))
        elif node.op_type == "Gemm":
            a = ins[0]
            k = a[0] if attrs.get("transA", 0) else a[1]
            macs += int(np.prod(out)) * int(k)
        else:  # MatMul: (..., M, K) x (..., K, N)
            macs += int(np.prod(out)) * int(ins[0][-1])
    weights = sum(int(np.prod(shapes[n])) for n in initializers)
    return GraphCost(macs, kernels, acts, weights)


def _static_shapes(model) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _runtime_shapes(model) -> dict[str, tuple[int, ...]]:
    """Shape of every node output from one ONNX Runtime run on zeros (inputs already have concrete shapes)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the probe's extra outputs have no declared shapes: ORT would warn about each
    sess = ort.InferenceSession(probe.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    inits = {i.name for i in probe.graph.initializer}
    feeds = {}
    for vi in probe.graph.input:
        if vi.name not in inits:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
            feeds[vi.name] = np.zeros([d.dim_value for d in vi.type.tensor_type.shape.dim], dtype)
    outs = sess.run(None, feeds)
    return {o.name: tuple(a.shape) for o, a in zip(sess.get_outputs(), outs, strict=True)}


# --------------------------------------------------------------------------------------------
# Estimates (clearly labelled as such)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceModel:
    name: str
    fp16_tflops: float  # dense tensor-core FP16 peak
    utilisation: tuple[float, float]  # realistic fraction of peak for batch-1 convnets (pessimistic, optimistic)
    bandwidth_gbs: float
    bandwidth_efficiency: tuple[float, float]  # achievable fraction of peak DRAM bandwidth (pessimistic, optimistic)
    per_layer_us: tuple[float, float]  # time floor per fused kernel at batch 1 (pessimistic, optimistic)
    note: str


DEVICES = [
    DeviceModel(
        "Jetson Orin Nano 8GB (ESTIMATE)", 5.0, (0.20, 0.35), 68.0, (0.6, 0.8), (10.0, 5.0),
        "5 TFLOPs FP16 dense taken as a conservative peak (NVIDIA's 40 TOPS INT8 sparse ≈ 10 TFLOPs FP16 dense "
        "at 625 MHz; 4GB module and low-power modes are about half); 20-35 % utilisation; 68 GB/s LPDDR5 at "
        "60-80 %; 5-10 us per kernel (small kernels on a 625 MHz GPU); FP16 activations",
    ),
    DeviceModel(
        "Datacenter GPU, A100 class (ESTIMATE)", 312.0, (0.05, 0.15), 1500.0, (0.5, 0.8), (4.0, 2.0),
        "312 TFLOPs FP16 dense, batch 1 uses 5-15 % of it; 1.5 TB/s HBM at 50-80 %; 2-4 us per kernel",
    ),
]


def estimate_ms(cost: GraphCost, dev: DeviceModel, bytes_per_elem: float = 2.0) -> tuple[float, float]:
    """(pessimistic, optimistic) latency in ms: the largest of compute, memory traffic and per-layer floor."""
    out = []
    for util, bw_eff, floor_us in zip(dev.utilisation, dev.bandwidth_efficiency, dev.per_layer_us, strict=True):
        compute = 2 * cost.macs / (dev.fp16_tflops * 1e12 * util)
        memory = cost.traffic_bytes(bytes_per_elem) / (dev.bandwidth_gbs * 1e9 * bw_eff)
        floor = cost.kernels * floor_us * 1e-6
        out.append(1e3 * max(compute, memory, floor))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# Measurement (only where TensorRT runs the recorded engines)
# --------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure(model_dir: Path, runs: int, warmup: int) -> dict:
    from edge_inspect.backends.tensorrt import TensorRTBackend
    from edge_inspect.backends.trt_probe import usable
    from edge_inspect.manifest import load_manifest

    manifest = load_manifest(model_dir)
    ok, reason = usable(model_dir, manifest)
    if not ok:
        return {"measured": False, "reason": reason}
    spec = manifest.graphs[0].inputs[0]
    x = np.random.default_rng(0).standard_normal((1, 3, manifest.input.height, manifest.input.width)).astype(np.float32)
    with TensorRTBackend(model_dir, manifest) as backend:
        wall = []
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            backend.infer({spec.name: x})
            if i >= warmup:
                wall.append(1e3 * (time.perf_counter() - t0))
        per_engine = backend.time_engines(runs=runs, warmup=warmup)
    precisions = sorted({r.precision for r in manifest.engines})
    return {
        "measured": True, "precision": "/".join(precisions), "gpu": manifest.engines[0].gpu_name,
        "tensorrt": manifest.engines[0].tensorrt_version, "runs": runs, "warmup": warmup,
        "end_to_end_ms": {"median": statistics.median(wall), "p99": percentile(wall, 99)},
        "engine_ms": {g: {"median": statistics.median(t), "p99": percentile(t, 99)} for g, t in per_engine.items()},
    }


def engine_sizes(model_dir: Path) -> dict[str, dict[str, float]]:
    """{graph: {precision: MiB}} for every engine with a verified record in the model's engines/ folder."""
    sizes: dict[str, dict[str, float]] = {}
    for side in sorted((model_dir / "engines").glob("*.json")):
        try:
            rec = json.loads(side.read_text())
            size = (model_dir / rec["file"]).stat().st_size / 2**20
        except (OSError, ValueError, KeyError):
            continue
        sizes.setdefault(rec["graph"], {})[rec["precision"]] = size
    return sizes


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(model_dir: Path, runs: int = 500, warmup: int = 50) -> dict:
    from edge_inspect.manifest import load_manifest

    manifest = load_manifest(model_dir)
    costs = {}
    for g in manifest.graphs:
        cost = count_cost(model_dir / g.file)
        if cost.macs == 0 and g.gmacs:
            cost.macs = int(g.gmacs * 1e9)
        costs[g.name] = cost
    total = GraphCost(sum(c.macs for c in costs.values()), sum(c.kernels for c in costs.values()),
                      sum(c.activation_elems for c in costs.values()), sum(c.weight_elems for c in costs.values()))
    result = {
        "model": str(model_dir), "input": f"{manifest.input.height}x{manifest.input.width}",
        "gmacs": {**{k: c.gmacs for k, c in costs.items()}, "end_to_end": total.gmacs},
        "engine_mib": engine_sizes(model_dir),
        "measurement": measure(model_dir, runs, warmup),
        "estimates": {},
    }
    for dev in DEVICES:
        per = {k: estimate_ms(c, dev) for k, c in costs.items()}
        per["end_to_end"] = estimate_ms(total, dev)
        result["estimates"][dev.name] = {"assumptions": dev.note, "ms": per}
    return result


def print_report(r: dict) -> None:
    print(f"model {r['model']} (input {r['input']}, batch 1)")
    print(f"  {'network':<16} {'GMACs':>8} {'engine MiB':>22}")
    for name, g in r["gmacs"].items():
        sizes = r["engine_mib"].get(name, {})
        size_txt = ", ".join(f"{p} {s:.2f}" for p, s in sorted(sizes.items())) or "-"
        print(f"  {name:<16} {g:>8.3f} {size_txt:>22}")
    m = r["measurement"]
    if m["measured"]:
        print(f"MEASURED on {m['gpu']} / TensorRT {m['tensorrt']}, {m['precision']}, {m['runs']} runs after "
              f"{m['warmup']} warm-up:")
        for name, t in m["engine_ms"].items():
            print(f"  {name:<16} median {t['median']:.3f} ms  p99 {t['p99']:.3f} ms  (GPU time)")
        e = m["end_to_end_ms"]
        print(f"  {'end to end':<16} median {e['median']:.3f} ms  p99 {e['p99']:.3f} ms  (infer() wall, incl. copies)")
    else:
        print(f"not measured: {m['reason']}")
    for dev, est in r["estimates"].items():
        print(f"{dev}: {est['assumptions']}")
        for name, (slow, fast) in est["ms"].items():
            fps = f"{1e3 / slow:.0f}-{1e3 / fast:.0f} FPS" if name == "end_to_end" else ""
            print(f"  {name:<16} {fast:.3f} - {slow:.3f} ms {fps}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    r = report(args.model, args.runs, args.warmup)
    print_report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
