"""Where does a frame's time go? Per-graph, per-operator, threads, copies, preprocess and decide (issue 18 item 1).

Measures an exported model on this machine's CPU with ONNX Runtime, batch 1, at the manifest's input size:

1. per graph (teacher1, student1, teacher2, student2, discriminator/map head): median and p90 of each
   ``session.run`` inside the real chain (``OnnxRuntimeBackend.infer``, the product's session options) and
   the end-to-end ``infer`` time;
2. per operator type and per node, from ONNX Runtime's own profiler (``SessionOptions.enable_profiling``;
   the ``end_profiling`` JSON: sum of ``dur`` of the ``*_kernel_time`` events per run, warm-up runs dropped).
   The map head's full-resolution work (upsampling, replicate pad + separable Gaussian blur, NCHWc reorders,
   other HxW ops) is compared between the exported head and the same head cut in memory to the outputs the
   line decides on (score, anomaly_map; ``onnx.utils.Extractor``), profiled and unprofiled; whether
   ``RunOptions.only_execute_path_to_fetches`` skips the diagnostic branches by itself; the five graphs
   merged in memory into one session; and each graph with ONNX Runtime's NCHWc layout transformer off;
3. intra_op_num_threads for the whole chain: unset (the product's default), 1, 2, and 2 with
   ``session.intra_op.allow_spinning=0``, interleaved in rounds;
4. time in ``infer`` outside ``session.run`` (input check, dict building): end-to-end minus the sum of runs;
5. ``preprocess`` on a model-size and a 1280x1024 BGR frame, and ``decide`` with/without heat map and regions.

    python benchmarks/profile_line.py --model MODEL_DIR [--out profile.json] [--runs 50] [--image IMG]

Run from the repository root on an otherwise idle machine: the script reports how much CPU other
processes used while it ran (``host_load.other_cpu_pct``) and warns above 10 %. About 40 s on a 2-core
CPU. The profiler adds its own overhead: read its per-op figures as shares, the unprofiled timings as
latencies. The in-memory cuts and the merge need ``onnx`` (the dev extra); without it they are skipped.
Nothing is written but ``--out``; the profiler's own JSON files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.camera.base import Frame
from edge_inspect.decision import Thresholds, decide
from edge_inspect.manifest import Manifest, load_manifest
from edge_inspect.pipeline.bench import bench_images
from edge_inspect.preprocess import preprocess

CPU = ["CPUExecutionProvider"]
NO_SPIN = {"session.intra_op.allow_spinning": "0"}


# ---- small helpers -----------------------------------------------------------------------------------


def stats_ms(samples_s) -> dict[str, float]:
    """Median, p90, mean and min of seconds, in ms."""
    a = np.asarray(samples_s, dtype=np.float64) * 1000.0
    if a.size == 0:
        return {"median": float("nan"), "p90": float("nan"), "mean": float("nan"), "min": float("nan"), "n": 0}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "n": int(a.size)}


def time_fn(fn, runs: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return stats_ms(samples)


def interleaved(fns: dict, runs: int, rounds: int = 5, warmup: int = 3) -> dict[str, dict]:
    """Time several callables in alternating blocks, so a slow spell of the host does not favour one."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for k, fn in fns.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                fn()
                samples[k].append(time.perf_counter() - t0)
    return {k: stats_ms(v) for k, v in samples.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class HostLoad:
    """CPU seconds the whole machine spent busy (/proc/stat) minus this process's own: other processes' share."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            f = [float(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except (OSError, ValueError, IndexError):
            return None
        idle = f[3] + (f[4] if len(f) > 4 else 0.0)
        return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def report(self) -> dict:
        wall = time.monotonic() - self.t0
        busy1 = self._busy()
        own = self._own() - self.own0
        out = {"wall_s": wall, "own_cpu_s": own}
        if busy1 is not None and self.busy0 is not None:
            other = max(0.0, busy1 - self.busy0 - own)
            out["other_cpu_s"] = other
            out["other_cpu_pct"] = 100.0 * other / (wall * (os.cpu_count() or 1))
        try:
            out["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
        except OSError:
            pass
        return out


def session_options(ort, threads: int | None, config: dict[str, str] | None = None,
                    profile_prefix: str | None = None):
    """The product's session options (mirrors ``OnnxRuntimeBackend.load``), plus optional config entries / profiler.

    ``compare_options`` checks the mirror against a session the backend itself made.
    """
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    for k, v in (config or {}).items():
        opts.add_session_config_entry(k, v)
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    return opts


def compare_options(product, mirror) -> dict:
    fields = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
              "enable_cpu_mem_arena", "enable_mem_pattern", "enable_profiling")
    diff = {f: [str(getattr(product, f)), str(getattr(mirror, f))] for f in fields
            if str(getattr(product, f)) != str(getattr(mirror, f))}
    return {"match": not diff, "differences": diff}


class TimedSession:
    """Stands in for an ``InferenceSession`` inside the backend: times each ``run`` and keeps the last feed."""

    def __init__(self, name: str, sess, sink: dict[str, list[float]]):
        self.name, self.sess, self.sink = name, sess, sink
        self.last_feed: dict[str, np.ndarray] = {}

    def run(self, out_names, feed, run_options=None):
        t0 = time.perf_counter()
        outs = self.sess.run(out_names, feed, run_options)
        self.sink[self.name].append(time.perf_counter() - t0)
        self.last_feed = feed
        return outs


def load_backend(ort, model_dir: Path, manifest: Manifest, threads: int | None,
                 config: dict[str, str] | None) -> OnnxRuntimeBackend:
    """The product backend, loaded. With ``config`` entries (which the backend cannot set) its sessions are
    re-made from the mirrored options plus those entries; ``infer`` is still the backend's own."""
    be = OnnxRuntimeBackend(model_dir, manifest, providers=CPU, threads=threads, diagnostics=True, fuse=False)
    be.load()
    if config:
        opts = session_options(ort, threads, config)
        be._sessions = [(g, ort.InferenceSession(str(Path(model_dir) / g.file), sess_options=opts, providers=CPU),
                         names) for g, _, names in be._sessions]
    return be


def instrument(backend: OnnxRuntimeBackend, sink: dict[str, list[float]]) -> None:
    """Wrap the loaded backend's sessions (its private ``_sessions`` list) so the real ``infer`` is timed."""
    backend._sessions = [(g, TimedSession(g.name, sess, sink), names) for g, sess, names in backend._sessions]


def parse_thread_configs(text: str) -> dict[str, tuple[int | None, dict[str, str] | None]]:
    """``default,1,2,2nospin`` → label: (intra_op_num_threads or None, extra session config or None)."""
    out: dict[str, tuple[int | None, dict[str, str] | None]] = {}
    for tok in (t.strip() for t in text.split(",") if t.strip()):
        if tok == "default":
            out[tok] = (None, None)
        elif tok.endswith("nospin"):
            out[tok] = (int(tok[: -len("nospin")]), dict(NO_SPIN))
        else:
            out[tok] = (int(tok), None)
    return out


# ---- 1, 3, 4: the real chain -------------------------------------------------------------------------


def chain_timing(ort, model_dir: Path, manifest: Manifest, x: np.ndarray, configs: dict, runs: int,
                 warmup: int, rounds: int = 5) -> tuple[dict, dict]:
    """Per-graph and end-to-end times of ``OnnxRuntimeBackend.infer`` for each thread setting (interleaved)."""
    feed = {manifest.input.name: x}
    backends, sinks, totals, load_s = {}, {}, {}, {}
    for label, (threads, config) in configs.items():
        t0 = time.perf_counter()
        be = load_backend(ort, model_dir, manifest, threads, config)
        load_s[label] = time.perf_counter() - t0
        sinks[label] = defaultdict(list)
        instrument(be, sinks[label])
        for _ in range(warmup):
            be.infer(feed)
        sinks[label].clear()
        backends[label], totals[label] = be, []
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for label, be in backends.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                be.infer(feed)
                totals[label].append(time.perf_counter() - t0)
    names = [g.name for g in manifest.graphs]
    result = {}
    for label in backends:
        per_run = np.array([sinks[label][n] for n in names])  # (graphs, runs)
        sum_runs = per_run.sum(axis=0)
        total = np.asarray(totals[label])
        threads, config = configs[label]
        result[label] = {
            "intra_op_num_threads": threads,
            "session_config": config or {},
            "load_s": load_s[label],
            "per_graph_ms": {n: stats_ms(per_run[i]) for i, n in enumerate(names)},
            "sum_of_session_runs_ms": stats_ms(sum_runs),
            "end_to_end_infer_ms": stats_ms(total),
            "outside_session_run_ms": stats_ms(total - sum_runs),
        }
    return result, backends


# ---- 2: ONNX Runtime's profiler --------------------------------------------------------------------


def _shapes(args: dict, key: str) -> list[list[int]]:
    out = []
    for entry in args.get(key, []) or []:
        for dims in entry.values():
            out.append([int(d) for d in dims])
    return out


def profile_session(ort, model, feed: dict, out_names: list[str], setting: tuple, runs: int, warmup: int,
                    prefix: str, run_options=None) -> dict:
    """Run one graph (path or serialized bytes) under the profiler; kernel ms per run per node and op type."""
    opts = session_options(ort, setting[0], setting[1], profile_prefix=prefix)
    sess = ort.InferenceSession(model, sess_options=opts, providers=CPU)
    feed = {i.name: feed[i.name] for i in sess.get_inputs()}
    for _ in range(warmup + runs):
        sess.run(out_names, feed, run_options)
    events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    if len(model_runs) < warmup + runs:
        raise RuntimeError(f"profiler saw {len(model_runs)} runs, expected {warmup + runs}")
    start = model_runs[warmup]["ts"]
    nodes: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or e["ts"] < start or not e["name"].endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        n = nodes.setdefault(e["name"][: -len("_kernel_time")],
                             {"op_type": args.get("op_name", "?"), "us": 0.0, "calls": 0,
                              "in": _shapes(args, "input_type_shape"), "out": _shapes(args, "output_type_shape")})
        n["us"] += float(e["dur"])
        n["calls"] += 1
    for n in nodes.values():
        n["ms_per_run"] = n.pop("us") / 1000.0 / runs
    op_types: dict[str, dict] = defaultdict(lambda: {"ms_per_run": 0.0, "nodes": 0})
    for n in nodes.values():
        op_types[n["op_type"]]["ms_per_run"] += n["ms_per_run"]
        op_types[n["op_type"]]["nodes"] += 1
    return {
        "nodes": nodes,
        "op_types": dict(op_types),
        "kernel_ms_per_run": sum(n["ms_per_run"] for n in nodes.values()),
        "model_run_ms_median": float(np.median([e["dur"] / 1000.0 for e in model_runs[warmup:]])),
        "nodes_executed": len(nodes),
    }


def head_category(node: dict, hw: tuple[int, int]) -> str:
    """Which part of the map head a profiled node belongs to, by op type and by whether it touches an
    (.., >=H, >=W) tensor (full resolution; the blur works on a padded H+2r x W+2r plane)."""
    full = any(len(s) >= 2 and s[-2] >= hw[0] and s[-1] >= hw[1] for s in node["in"] + node["out"])
    if not full:
        return "below HxW (pair maps, UNet disc, Mahalanobis)"
    op = node["op_type"]
    if op in ("Resize", "Upsample"):
        return "HxW upsample (Resize)"
    if op.endswith("Conv"):
        return "HxW Gaussian blur (Conv)"
    if op in ("ReorderInput", "ReorderOutput"):
        return "HxW NCHWc reorder"
    if op == "Pad":
        return "HxW replicate pad (blur)"
    return "HxW other (fusion, max, ...)"


def deciding_outputs(manifest: Manifest) -> list[str]:
    """What the ok/ng decision reads (decision.decide): the score and the anomaly map."""
    names = {o.name for o in manifest.graphs[-1].outputs}
    return [n for n in (manifest.score_output, manifest.map_output) if n in names]


def lean_head(model_dir: Path, manifest: Manifest) -> tuple[bytes | None, str]:
    """The head graph cut in memory to score + anomaly_map; None without onnx."""
    try:
        import onnx
        import onnx.utils
    except ImportError:
        return None, "onnx is not installed (pip install -e '.[dev]'): cut-down graphs skipped"
    model = onnx.load(str(Path(model_dir) / manifest.graphs[-1].file))
    cut = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], deciding_outputs(manifest))
    return cut.SerializeToString(), f"onnx {onnx.__version__} utils.Extractor"


def diagnostic_only(exported: dict[str, dict], cut: dict[str, dict]) -> list[str]:
    """Nodes of the exported head's own profile that the cut head does not run (read from one profile, so
    free of run-to-run noise). Node names are those after ONNX Runtime's optimisations; the nodes it inserts
    itself (``..._token_N`` reorders) are numbered per graph, so those are matched by op type and shapes."""

    def sig(n: dict) -> str:
        return f"{n['op_type']}|{n['in']}|{n['out']}"

    spare = Counter(sig(n) for k, n in cut.items() if "_token_" in k)
    out = []
    for k, n in exported.items():
        if "_token_" not in k:
            if k not in cut:
                out.append(k)
        elif spare[sig(n)] > 0:
            spare[sig(n)] -= 1
        else:
            out.append(k)
    return out


def profile_model(ort, model_dir: Path, manifest: Manifest, feeds: dict[str, dict], setting: tuple,
                  runs: int, warmup: int, lean_bytes: bytes | None) -> dict:
    hw = (manifest.input.height, manifest.input.width)
    out: dict = {"graphs": {}}
    head = manifest.graphs[-1]
    keep = deciding_outputs(manifest)
    with tempfile.TemporaryDirectory(prefix="ei_prof_") as tmp:
        for g in manifest.graphs:
            out["graphs"][g.name] = profile_session(ort, str(Path(model_dir) / g.file), feeds[g.name],
                                                    [o.name for o in g.outputs], setting, runs, warmup,
                                                    os.path.join(tmp, g.name))
        # Does RunOptions.only_execute_path_to_fetches let ONNX Runtime skip the diagnostic branches by itself?
        ro = ort.RunOptions()
        ro.only_execute_path_to_fetches = True
        subset = profile_session(ort, str(Path(model_dir) / head.file), feeds[head.name], keep, setting, runs,
                                 warmup, os.path.join(tmp, "subset"), run_options=ro)
        lean = None
        if lean_bytes is not None:
            lean = profile_session(ort, lean_bytes, feeds[head.name], keep, setting, runs, warmup,
                                   os.path.join(tmp, "lean"))
    cats: dict[str, dict[str, float]] = defaultdict(lambda: {"exported_ms": 0.0, "exported_nodes": 0,
                                                             "cut_ms": 0.0, "cut_nodes": 0,
                                                             "diag_only_ms": 0.0, "diag_only_nodes": 0})
    for tag, prof in (("exported", out["graphs"][head.name]), ("cut", lean)):
        for n in (prof or {}).get("nodes", {}).values():
            c = cats[head_category(n, hw)]
            c[f"{tag}_ms"] += n["ms_per_run"]
            c[f"{tag}_nodes"] += 1
    diag_only = [] if lean is None else diagnostic_only(out["graphs"][head.name]["nodes"], lean["nodes"])
    for k in diag_only:
        n = out["graphs"][head.name]["nodes"][k]
        c = cats[head_category(n, hw)]
        c["diag_only_ms"] += n["ms_per_run"]
        c["diag_only_nodes"] += 1
    out["head"] = {
        "graph": head.name, "cut_outputs": keep, "categories": dict(cats), "diag_only_nodes": diag_only,
        "cut": {k: v for k, v in lean.items() if k != "nodes"} if lean else None,
        "fetch_subset_with_only_execute_path_to_fetches": {k: v for k, v in subset.items() if k != "nodes"},
    }
    return out


def head_lean_ab(ort, backend: OnnxRuntimeBackend, manifest: Manifest, lean_bytes: bytes | None, setting: tuple,
                 runs: int) -> dict:
    """Unprofiled, interleaved: the backend's head session with every output, the same fetching only score +
    anomaly_map with only_execute_path_to_fetches, and the head cut to those two outputs (same options)."""
    g, ts, all_names = backend._sessions[-1]
    sess, feed = ts.sess, ts.last_feed
    keep = deciding_outputs(manifest)
    full_out = dict(zip(all_names, sess.run(all_names, feed), strict=True))
    res: dict = {"graph": g.name, "all_outputs": all_names, "cut_outputs": keep,
                 "output_mib_all": sum(v.nbytes for v in full_out.values()) / 2**20}
    ro = ort.RunOptions()
    ro.only_execute_path_to_fetches = True
    fns = {"exported, all outputs": lambda: sess.run(all_names, feed),
           "exported, fetch score+map (only_execute_path_to_fetches)": lambda: sess.run(keep, feed, ro)}
    if lean_bytes is not None:
        lsess = ort.InferenceSession(lean_bytes, sess_options=session_options(ort, *setting), providers=CPU)
        lfeed = {i.name: feed[i.name] for i in lsess.get_inputs()}
        lean_out = dict(zip(keep, lsess.run(keep, lfeed), strict=True))
        res["cut_max_abs_diff"] = {n: float(np.max(np.abs(lean_out[n] - full_out[n]))) for n in keep}
        fns["cut to score+map (onnx Extractor)"] = lambda: lsess.run(keep, lfeed)
    res["ms"] = interleaved(fns, runs)
    return res


def nchwc_ab(ort, model_dir: Path, manifest: Manifest, feeds: dict, setting: tuple, runs: int) -> dict:
    """Per graph: product options vs the same with the NCHWc layout transformer disabled (unprofiled)."""
    out = {}
    for g in manifest.graphs:
        path = str(Path(model_dir) / g.file)
        names = [o.name for o in g.outputs]
        a = ort.InferenceSession(path, sess_options=session_options(ort, *setting), providers=CPU)
        b = ort.InferenceSession(path, sess_options=session_options(ort, *setting), providers=CPU,
                                 disabled_optimizers=["NchwcTransformer"])
        feed = feeds[g.name]
        diff = float(max(np.max(np.abs(x - y)) for x, y in zip(a.run(names, feed), b.run(names, feed), strict=True)))
        t = interleaved({"nchwc": lambda a=a, n=names, f=feed: a.run(n, f),
                         "no_nchwc": lambda b=b, n=names, f=feed: b.run(n, f)}, runs)
        out[g.name] = {"with_nchwc_ms": t["nchwc"], "without_nchwc_ms": t["no_nchwc"],
                       "saving_ms_median": t["nchwc"]["median"] - t["no_nchwc"]["median"], "max_abs_diff": diff}
    return out


def merged_ab(ort, model_dir: Path, manifest: Manifest, x: np.ndarray, reference: dict, settings: dict,
              runs: int) -> dict:
    """One session for the whole line (all outputs, and cut to score + anomaly_map) under each thread setting:
    the product's join (edge_inspect.backends.line_graph), so this measures what the backend runs."""
    from edge_inspect.backends.line_graph import CannotJoin, line_graph_bytes, line_outputs

    keep = deciding_outputs(manifest)
    try:
        variants = {"merged, all outputs": line_graph_bytes(model_dir, manifest, line_outputs(manifest, True)),
                    "merged, cut to score+map": line_graph_bytes(model_dir, manifest, keep)}
    except CannotJoin as exc:
        return {"how": f"not merged: {exc}"}
    res: dict = {"how": "edge_inspect.backends.line_graph"}
    feed = {manifest.input.name: x}
    fns, diffs = {}, {}
    for vname, blob in variants.items():
        for label, (threads, config) in settings.items():
            sess = ort.InferenceSession(blob, sess_options=session_options(ort, threads, config), providers=CPU)
            names = [o.name for o in sess.get_outputs()]
            outs = dict(zip(names, sess.run(names, feed), strict=True))
            diffs[vname] = {n: float(np.max(np.abs(outs[n] - reference[n]))) for n in keep}
            fns[f"{vname}, threads={label}"] = lambda s=sess, n=names: s.run(n, feed)
    res["max_abs_diff_vs_chain"] = diffs
    res["ms"] = interleaved(fns, runs)
    return res


# ---- 5: preprocess and decide --------------------------------------------------------------------------


def host_costs(manifest: Manifest, outputs: dict, runs: int) -> dict:
    spec = manifest.input
    small = bench_images(spec.height, spec.width, n=1)[0]
    big = bench_images(1024, 1280, n=1)[0]
    res: dict = {"preprocess_ms": {
        f"{spec.width}x{spec.height} BGR": time_fn(lambda: preprocess(small, spec, "BGR"), runs),
        "1280x1024 BGR": time_fn(lambda: preprocess(big, spec, "BGR"), runs),
    }}
    frame = Frame(camera_id="bench", seq=0, t_capture=time.monotonic(), t_wall=time.time(), image=big)
    score = float(np.asarray(outputs[manifest.score_output]).reshape(-1)[0])
    amap = np.asarray(outputs[manifest.map_output])
    base = Thresholds.from_manifest(manifest)
    ok = base.with_overrides(image=score + 1.0)
    ng = base.with_overrides(image=score - 1.0, pixel=float(np.quantile(amap, 0.99)))
    n_regions = len(decide(outputs, frame, ng, manifest).regions)
    cases = {"ok, no heat map": (ok, False), "ok, heat map": (ok, True),
             f"ng, {n_regions} regions, no heat map": (ng, False), f"ng, {n_regions} regions, heat map": (ng, True)}
    res["decide_ms"] = {k: time_fn(lambda t=t, h=h: decide(outputs, frame, t, manifest, want_heatmap=h), runs)
                        for k, (t, h) in cases.items()}
    res["decide_note"] = ("ng forced (image threshold just below this frame's score, pixel threshold at the map's "
                          "0.99 quantile) so the region search runs; frame 1280x1024 (boxes scaled to it)")
    return res


# ---- report ------------------------------------------------------------------------------------------------


def row(cells, widths) -> str:
    return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def print_report(rep: dict, top: int) -> None:
    env, load = rep["environment"], rep["host_load"]
    print(f"\n== {rep['model']['dir']}  ({rep['model']['model_id']}, input {rep['model']['input']}, batch 1, CPU EP)")
    print(f"   CPU {env['cpu_model']} x{env['cpus']}, onnxruntime {env['onnxruntime']}, numpy {env['numpy']}, "
          f"opencv {env['opencv']}, python {env['python']}")
    if load.get("other_cpu_pct", 0.0) > 10.0:
        print(f"   WARNING: other processes used {load['other_cpu_pct']:.0f} % of the CPU meanwhile; "
              "figures are inflated")
    chain = rep["chain"]
    labels = list(chain)
    w = [17] + [15] * len(labels)
    print("\n-- 1/3/4. ms per frame inside OnnxRuntimeBackend.infer, median / p90, by intra_op_num_threads")
    print(row(["graph"] + [f"threads={lbl}" for lbl in labels], w))
    for gname in chain[labels[0]]["per_graph_ms"]:
        print(row([gname] + [f"{chain[lbl]['per_graph_ms'][gname]['median']:.2f} / "
                             f"{chain[lbl]['per_graph_ms'][gname]['p90']:.2f}" for lbl in labels], w))
    for key, title in (("sum_of_session_runs_ms", "sum of runs"), ("end_to_end_infer_ms", "infer end-to-end"),
                       ("outside_session_run_ms", "outside run")):
        print(row([title] + [f"{chain[lbl][key]['median']:.2f} / {chain[lbl][key]['p90']:.2f}" for lbl in labels], w))

    prof = rep["profile"]
    print(f"\n-- 2. ONNX Runtime profiler, one graph at a time, threads={rep['ab_label']}, ms per run "
          "(profiler on: read as shares)")
    print(row(["graph", "model_run", "kernels", "nodes"], [17, 10, 10, 7]))
    total = 0.0
    overall: dict[str, float] = defaultdict(float)
    for gname, gp in prof["graphs"].items():
        total += gp["kernel_ms_per_run"]
        for op, v in gp["op_types"].items():
            overall[op] += v["ms_per_run"]
        print(row([gname, f"{gp['model_run_ms_median']:.2f}", f"{gp['kernel_ms_per_run']:.2f}",
                   gp["nodes_executed"]], [17, 10, 10, 7]))
    print(f"\n   top operator types, all graphs (of {total:.2f} ms kernel time):")
    for op, v in sorted(overall.items(), key=lambda kv: -kv[1])[:top]:
        print(f"   {op:<22} {v:8.2f} ms  {100 * v / total:5.1f} %")
    hp = prof["graphs"][prof["head"]["graph"]]
    print(f"\n   top operator types, map head '{prof['head']['graph']}' (of {hp['kernel_ms_per_run']:.2f} ms):")
    for op, v in sorted(hp["op_types"].items(), key=lambda kv: -kv[1]["ms_per_run"])[:top]:
        print(f"   {op:<22} {v['ms_per_run']:8.2f} ms  {v['nodes']:3d} nodes")
    print("\n   top nodes, map head:")
    for name, n in sorted(hp["nodes"].items(), key=lambda kv: -kv[1]["ms_per_run"])[:top]:
        print(f"   {n['ms_per_run']:7.3f} ms  {n['op_type']:<13} {name[:52]:<52} out {n['out'][:1]}")
    head = prof["head"]
    print(f"\n   map head by part, exported vs cut to {head['cut_outputs']} (profiler ms per run):")
    print("   (diag only: nodes of the exported head's profile that the cut head does not have)")
    cw = [46, 9, 6, 9, 6, 10, 6]
    print(row(["part", "exported", "nodes", "cut", "nodes", "diag only", "nodes"], cw))
    for cat, c in sorted(head["categories"].items()):
        print(row([cat, f"{c['exported_ms']:.2f}", c["exported_nodes"], f"{c['cut_ms']:.2f}", c["cut_nodes"],
                   f"{c['diag_only_ms']:.2f}", c["diag_only_nodes"]], cw))
    print(row(["total", f"{sum(c['exported_ms'] for c in head['categories'].values()):.2f}", "",
               f"{sum(c['cut_ms'] for c in head['categories'].values()):.2f}", "",
               f"{sum(c['diag_only_ms'] for c in head['categories'].values()):.2f}", ""], cw))
    sub = head["fetch_subset_with_only_execute_path_to_fetches"]
    print(f"   exported head fetching only {head['cut_outputs']} with only_execute_path_to_fetches: "
          f"{sub['nodes_executed']} of {hp['nodes_executed']} nodes still run")
    ab = rep["head_ab"]
    print(f"\n   map head unprofiled, threads={rep['ab_label']} (median / p90 ms; "
          f"{ab['output_mib_all']:.2f} MiB of outputs exported):")
    for k, v in ab["ms"].items():
        print(f"   {k:<60} {v['median']:7.2f} / {v['p90']:.2f}")
    if "cut_max_abs_diff" in ab:
        print(f"   cut head's outputs vs exported: max abs diff {ab['cut_max_abs_diff']}")
    mg = rep["merged"]
    print(f"\n   one merged line graph (one session instead of five; {mg['how']}), median / p90 ms:")
    for k, v in mg.get("ms", {}).items():
        print(f"   {k:<60} {v['median']:7.2f} / {v['p90']:.2f}")
    if "max_abs_diff_vs_chain" in mg:
        print(f"   outputs vs the five-graph chain: max abs diff {mg['max_abs_diff_vs_chain']}")
    print(f"\n   NCHWc layout transformer on vs off, per graph, threads={rep['ab_label']} (median ms, unprofiled):")
    for gname, v in rep["nchwc_ab"].items():
        print(f"   {gname:<16} on {v['with_nchwc_ms']['median']:7.2f}   off {v['without_nchwc_ms']['median']:7.2f}"
              f"   (max abs diff {v['max_abs_diff']:.2g})")
    print("\n-- 5. host side per frame (median / p90 ms)")
    for k, v in rep["host"]["preprocess_ms"].items():
        print(f"   preprocess {k:<34} {v['median']:7.3f} / {v['p90']:.3f}")
    for k, v in rep["host"]["decide_ms"].items():
        print(f"   decide {k:<38} {v['median']:7.3f} / {v['p90']:.3f}")
    other = load.get("other_cpu_pct", float("nan"))
    print(f"\n   wall {load['wall_s']:.0f} s; other processes' CPU meanwhile {other:.1f} %"
          f" (loadavg {' '.join(load.get('loadavg', []))})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="exported model folder (manifest.json + graphs)")
    ap.add_argument("--out", help="write every figure as JSON here")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per setting (default 50)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--profile-runs", type=int, default=30, help="runs per graph under the profiler")
    ap.add_argument("--threads", default="default,1,2,2nospin",
                    help="intra_op settings for the chain: 'default' (unset, what the product runs unless configured), "
                         "N, or Nnospin (N threads, session.intra_op.allow_spinning=0)")
    ap.add_argument("--ab-threads", default="2nospin",
                    help="setting for the profiler and the A/Bs (default 2nospin: stable; the product's own "
                         "default setting is bimodal on a 2-core machine, see docs/performance.md)")
    ap.add_argument("--image", help="a camera image file (read as BGR) to feed; default a synthetic grey frame")
    ap.add_argument("--top", type=int, default=10, help="rows in the operator tables")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = HostLoad()

    import cv2
    import onnxruntime as ort

    model_dir = Path(args.model)
    manifest = load_manifest(model_dir)
    spec = manifest.input
    if args.image:
        image = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if image is None:
            ap.error(f"cannot read image {args.image}")
    else:
        image = bench_images(spec.height, spec.width, n=1)[0]
    x = preprocess(image, spec, "BGR")
    configs = parse_thread_configs(args.threads)
    ab_label = args.ab_threads
    ab_setting = parse_thread_configs(ab_label)[ab_label]
    if ab_label not in configs:
        configs[ab_label] = ab_setting

    chain, backends = chain_timing(ort, model_dir, manifest, x, configs, args.runs, args.warmup)
    ref_label = "default" if "default" in configs else next(iter(configs))
    ref = backends[ref_label]
    mirror = compare_options(ref._sessions[0][1].sess.get_session_options(),
                             session_options(ort, *configs[ref_label]))
    be = backends[ab_label]
    feeds = {ts.name: ts.last_feed for _, ts, _ in be._sessions}
    outputs = be.infer({spec.name: x})
    for label, other in backends.items():
        if label != ab_label:
            other.close()
    lean_bytes, lean_how = lean_head(model_dir, manifest)
    head_ab = head_lean_ab(ort, be, manifest, lean_bytes, ab_setting, 2 * args.runs)
    be.close()
    merged_settings = {k: configs[k] for k in dict.fromkeys([ref_label, ab_label])}
    merged = merged_ab(ort, model_dir, manifest, x, outputs, merged_settings, args.runs)
    profile = profile_model(ort, model_dir, manifest, feeds, ab_setting, args.profile_runs, 3, lean_bytes)
    nchwc = nchwc_ab(ort, model_dir, manifest, feeds, ab_setting, args.runs)
    host = host_costs(manifest, outputs, runs=max(20, args.runs))

    teachers = {}
    if manifest.provenance:
        cfg = manifest.provenance.training_config.get("model", {}) or {}
        teachers = {k: cfg[k] for k in ("teacher1", "teacher2") if k in cfg}
    rep = {
        "model": {"dir": str(model_dir), "model_id": manifest.model_id, "input": f"{spec.width}x{spec.height}",
                  "graphs": [g.name for g in manifest.graphs], "teachers": teachers,
                  "image": args.image or "synthetic grey frame (edge_inspect.pipeline.bench.bench_images)"},
        "environment": {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__,
                        "numpy": np.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
                        "providers": CPU, "batch": 1},
        "settings": {"runs": args.runs, "warmup": args.warmup, "profile_runs": args.profile_runs,
                     "threads": args.threads, "argv": sys.argv[1:]},
        "chain": chain,
        "ab_label": ab_label,
        "mirrored_options_match_product": {"compared_with": ref_label, **mirror},
        "profile": profile,
        "lean_head": lean_how,
        "head_ab": head_ab,
        "merged": merged,
        "nchwc_ab": nchwc,
        "host": host,
    }
    rep["host_load"] = load.report()
    print_report(rep, args.top)
    if args.out:
        Path(args.out).write_text(json.dumps(rep, indent=1, default=str))
        print(f"   JSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
