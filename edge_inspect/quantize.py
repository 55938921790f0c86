"""INT8 with explicit Q/DQ: a float model folder → an INT8 model folder (``edge-inspect quantize``).

Each network's graph is quantized on its own with ONNX Runtime's ``quantize_static`` in QDQ format, so the
folder keeps one graph per network (what TensorRT's strongly typed INT8 build takes) and ONNX Runtime runs
the same graphs on the CPU:

* weights int8, symmetric, per output channel; activations per tensor, their ranges calibrated on good
  images: each graph sees the inputs the *float* graphs before it produce for those images;
* activations ``u8-asymmetric`` (default, for the CPU) or ``s8-symmetric`` (zero point 0: the only form
  TensorRT's INT8 build accepts). Measured on teacher1 (docs/performance.md): with u8 asymmetric, ONNX
  Runtime fuses every Conv and Add into QLinearConv / QLinearAdd and drops the ReLU6 clips (≈2× faster than
  float); with s8 symmetric it cannot drop a clip at 0 from a range that includes negatives, so 17 of 48
  convolutions stay float behind Q/DQ pairs, and the graph runs *slower* than float;
* the nodes that lose accuracy stay float (chosen on validation: docs/performance.md): in the backbones the
  nodes computing each graph output, teacher 1's stem and first blocks (``FLOAT_NODES``), in the map head
  everything but the discriminator's convolutions (distances, Gaussian whitening, blur, fusion);
* the map head's good-image statistics (its Gaussians, the discriminator's input scaling, the fusion scales)
  are fitted again on the INT8 graphs' own features of the same goods (``head_refit``): quantized teachers
  move their features, and the Gaussians' whitening magnifies such moves;
* the manifest records ``precision: "int8-qdq"`` per quantized graph and a ``quantization`` record (method,
  calibration images, what stayed float).

An INT8 model's scores are not the float model's, so its thresholds are set again on INT8 scores with the
same calibration as ``edge-inspect calibrate`` (``evaluation.calibration.calibrate``), from good images the
model never trained on (``threshold_goods``). Without them the float thresholds are carried over and the
record says so.

Needs ``onnxruntime`` and ``onnx`` (extra ``cpu``); no torch.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelError, require
from .head_refit import GraphChain, refit_head
from .manifest import SCHEMA_VERSION, Manifest, Quantization, load_manifest, save_manifest, sha256_file, utc_now

log = logging.getLogger(__name__)

INT8 = "int8-qdq"
METHODS = ("minmax", "percentile", "entropy")
ACTIVATIONS = ("u8-asymmetric", "s8-symmetric")
# Quantized by default: every network, with teacher 1's stem and first five blocks kept float (FLOAT_NODES).
# Chosen on validation (held-out goods + validation anomalies, no test image; docs/performance.md, "Latest"),
# with the head refitted. Validation image / pixel AUROC change and median ms (2-core CPU, float 29.8):
# students + discriminator -0.0006 / -0.0013, 23.7; + teacher 2 -0.0011 / -0.0031, 20.5; + all of teacher 1
# -0.0025 / -0.0053, 17.4; + teacher 1 but its stem and blocks 0-2 -0.0030 / -0.0031, 18.8; + teacher 1 but
# its stem and blocks 0-4 (this) -0.0018 / -0.0013, 18.6. Teacher 1 (Lite0) feeds both pairs and both
# Gaussians; its error starts in its early, high-resolution blocks, which cost little time.
QUANTIZE_GRAPHS = ("teacher1", "teacher2", "student1", "student2", "discriminator")
# Nodes kept float inside a quantized graph, by graph: a regular expression searched in node names. A graph
# whose pattern matches none of its nodes (another backbone than the one measured) is not quantized at all.
FLOAT_NODES = {"teacher1": r"/net/(stem|blocks\.[0-4])/"}
REFIT_IMAGES = 1000  # training goods the head's Gaussians are refitted on (the trainer used all of them)


@dataclass
class QuantizeResult:
    out_dir: Path
    manifest: Manifest
    max_abs_score_diff: float  # INT8 vs float on the calibration images, score units
    float_scores: np.ndarray  # (N,) on the calibration images
    int8_scores: np.ndarray


def _goods(paths: list[Path], limit: int) -> list[Path]:
    """At most ``limit`` of ``paths``, spread evenly over the list (deterministic)."""
    if len(paths) <= limit:
        return list(paths)
    idx = np.linspace(0, len(paths) - 1, limit).round().astype(int)
    return [paths[i] for i in idx]


class _Inputs:
    """Image files as preprocessed network inputs (B, 3, H, W), loaded as iterated (memory stays flat)."""

    def __init__(self, paths: list[Path], spec):
        self.paths, self.spec = list(paths), spec

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self):
        from .data.mvtec import load_image
        from .preprocess import preprocess

        return (preprocess(load_image(f), self.spec, channel_order="RGB") for f in self.paths)


def _graph_feeds(model_dir: Path, manifest: Manifest, images: list[np.ndarray]) -> dict[str, list[dict]]:
    """For each graph, its input feeds for every image, computed by the float graphs (the chain)."""
    chain = GraphChain(model_dir, manifest)
    feeds: dict[str, list[dict]] = {g.name: [] for g in manifest.graphs}
    for x in images:
        tensors = chain.run(x)
        for g in manifest.graphs:
            feeds[g.name].append({t.name: tensors[t.name] for t in g.inputs})
    return feeds


def _reader(feeds: list[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class _Feeds(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

        def rewind(self):
            self._it = iter(feeds)

    return _Feeds()


def _calibrate_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def output_producers(model) -> list[str]:
    """Names of the nodes that compute each graph output, looking through the float-only ops after them
    (the teachers' feature normalisation ``(x - mean) / std``): the last quantizable node of each output."""
    passthrough = {"Sub", "Div", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast"}
    prod = {o: n for n in model.graph.node for o in n.output}
    names = []
    for out in model.graph.output:
        node = prod.get(out.name)
        while node is not None and node.op_type in passthrough:
            node = prod.get(node.input[0])
        if node is not None and node.name not in names:
            names.append(node.name)
    return names


def discriminator_convs(model) -> list[str]:
    """The map head's quantizable nodes: the convolutions of its UNet discriminator (trainer.model's
    ``MapHead.disc``, exported under ``/disc/``). Everything else in the head stays float: the distances,
    the Gaussians' whitening, the 1-channel blur and the score fusion."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and "/disc/" in n.name]


class NotQuantized(Exception):
    """A graph's float-node pattern matched nothing: the graph is left float (the message says why)."""


def quantize_graph(src: Path, dst: Path, feeds: list[dict], method: str = "minmax",
                   activations: str = "u8-asymmetric", float_outputs: bool = True, head: bool = False,
                   float_nodes: str | None = None) -> str | None:
    """Write ``dst``: ``src`` with Q/DQ (int8 symmetric per-channel weights), activations calibrated on ``feeds``.

    ``float_outputs``: the nodes that compute the graph's outputs stay float (``output_producers``), so the
    features the map head compares are not rounded to 8 bits per tensor. ``head``: ``src`` is the map head,
    of which only the discriminator's convolutions are quantized (``discriminator_convs``; a head without
    them is quantized like any graph). ``float_nodes``: a regular expression; the nodes whose names it
    matches stay float too, and NotQuantized is raised (nothing written) when it matches none. Returns what
    was kept float, in words (None: nothing).
    """
    import onnx

    require("onnx", "cpu", "quantization")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activations not in ACTIVATIONS:
        raise ConfigError(f"unknown activation format '{activations}'; choose {', '.join(ACTIVATIONS)}")
    symmetric = activations == "s8-symmetric"
    with tempfile.TemporaryDirectory(prefix="edge-inspect-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference + the constant folding that quantization expects (ONNX Runtime's recommendation)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        # node names of the pre-processed graph: that is the graph quantize_static sees. Exclusion goes by
        # name, so unnamed nodes get one first (else excluding "" would exclude every unnamed node).
        model = onnx.load(str(pre))
        for i, node in enumerate(model.graph.node):
            node.name = node.name or f"{node.op_type}_{i}"
        onnx.save(model, str(pre))
        # a head without a discriminator (not trainer-made) is quantized like any graph
        only = (discriminator_convs(model) or None) if head else None
        excluded = output_producers(model) if float_outputs and not only else []
        if float_nodes:
            pattern = re.compile(float_nodes)
            matched = [n.name for n in model.graph.node if pattern.search(n.name)]
            if not matched:
                raise NotQuantized(f"no node matches its float-node pattern {float_nodes!r}")
            excluded += [n for n in matched if n not in excluded]
        quantize_static(
            str(pre), str(dst), _reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=_calibrate_method(method), nodes_to_exclude=excluded, nodes_to_quantize=only,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True},
            calibration_cache_path=str(Path(tmp) / "cal.cache") if _has_cache_arg() else None,
        )
    if only:
        return "every node but the discriminator's convolutions (distances, Gaussians, blur, fusion)"
    if float_nodes:
        return f"the nodes matching {float_nodes!r} and those computing its outputs ({len(excluded)} nodes)"
    return f"the nodes computing its outputs ({', '.join(excluded)})" if excluded else None


def _has_cache_arg() -> bool:
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def quantize(model_dir: str | Path, goods: list[Path], goods_source: str, out_dir: str | Path,
             method: str = "minmax", activations: str = "u8-asymmetric", max_images: int = 32,
             float_outputs: bool = True, graphs: tuple[str, ...] = QUANTIZE_GRAPHS,
             threshold_goods: tuple[list[Path], str] | None = None,
             defects: tuple[list[Path], str] | None = None, target_frr: float = 0.005,
             refit: bool = True, refit_images: int = REFIT_IMAGES, float_nodes: dict[str, str] | None = None,
             progress: Callable | None = None) -> QuantizeResult:
    """Write an INT8 (Q/DQ) copy of the float model folder ``model_dir`` into ``out_dir``; see the module doc.

    goods: the model's training goods: the activation ranges come from at most ``max_images`` of them, evenly
    spread (ranges, not thresholds), and the refitted Gaussians from up to ``refit_images``. graphs: which
    networks to quantize (the others are copied). float_nodes: graph name → regular expression of node names
    kept float in it (default ``FLOAT_NODES``; ``{}`` for none).
    threshold_goods: (files, source) of goods the model never trained on, to set the thresholds on INT8
    scores; defects: (files, source) of labelled defects for the escape rate. refit: fit the map head's
    good-image statistics again on the INT8 graphs (``head_refit``): the Gaussians and the discriminator's
    input scaling on up to ``refit_images`` of ``goods`` (the training goods they were first fitted on), the
    fusion scales on ``threshold_goods`` (skipped, with a warning, without them). Raises ConfigError for bad
    options, ModelError for a folder that is not a float model, DataError for unreadable images.
    """
    from .backends.onnxrt import OnnxRuntimeBackend
    from .data.mvtec import load_image
    from .evaluation.calibration import calibrate
    from .evaluation.recalibrate import score_images
    from .preprocess import preprocess

    ort = require("onnxruntime", "cpu", "quantization")
    if activations not in ACTIVATIONS:
        raise ConfigError(f"unknown activation format '{activations}'; choose {', '.join(ACTIVATIONS)}")
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method '{method}'; choose {', '.join(METHODS)}")
    if max_images < 1:
        raise ConfigError("the number of calibration images must be at least 1")
    src, out = Path(model_dir), Path(out_dir)
    manifest = load_manifest(src)
    if any(g.precision != "fp32" for g in manifest.graphs):
        raise ModelError(f"{src}: already {manifest.precision}; quantize the float model folder")
    unknown = sorted(set(graphs) - {g.name for g in manifest.graphs})
    if unknown:
        raise ConfigError(f"no graph named {', '.join(unknown)} in {src}; it has "
                          f"{', '.join(g.name for g in manifest.graphs)}")
    if out.resolve() == src.resolve():
        raise ConfigError("--out must be a new folder, not the float model folder")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty; choose a new --out")
    files = _goods(goods, max_images)
    if not files:
        raise ConfigError("no good images to calibrate the activations on")
    fit_goods: list[Path] = []
    if refit and threshold_goods is not None:
        # the Gaussians must not see the goods that then set the fusion scales and the thresholds: those would
        # look more normal than the line's parts, and the threshold would come out too low
        held_out = {Path(f).resolve() for f in threshold_goods[0]}
        fit_goods = [f for f in goods if Path(f).resolve() not in held_out]
        if len(fit_goods) < 2:
            raise ConfigError("--goods has no images besides --threshold-goods to refit the head's Gaussians on")
    images = [preprocess(load_image(f), manifest.input, channel_order="RGB") for f in files]
    feeds = _graph_feeds(src, manifest, images)
    out.mkdir(parents=True, exist_ok=True)
    new_graphs = []
    kept = [f"graph {g.name}" for g in manifest.graphs if g.name not in graphs]
    for g in progress(manifest.graphs, "quantizing graphs") if progress else manifest.graphs:
        if g.name in graphs:
            is_head = manifest.score_output in {t.name for t in g.outputs}
            pattern = (FLOAT_NODES if float_nodes is None else float_nodes).get(g.name)
            try:
                kept_note = quantize_graph(src / g.file, out / g.file, feeds[g.name], method, activations,
                                           float_outputs, head=is_head, float_nodes=pattern)
            except NotQuantized as why:
                log.warning("graph %s stays float: %s", g.name, why)
                kept.append(f"graph {g.name} ({why})")
                shutil.copy2(src / g.file, out / g.file)
                new_graphs.append(g.model_copy())
                continue
            if kept_note:
                kept.append(f"{g.name}: {kept_note}")
            new_graphs.append(g.model_copy(update={"sha256": sha256_file(out / g.file), "precision": INT8}))
        else:
            shutil.copy2(src / g.file, out / g.file)
            new_graphs.append(g.model_copy())
    record = Quantization(
        method="onnxruntime quantize_static, QDQ format", weights="int8 symmetric, per output channel",
        activations=("int8 symmetric (zero point 0; TensorRT)" if activations == "s8-symmetric"
                     else "uint8 asymmetric (ONNX Runtime on the CPU; TensorRT cannot build it)") + ", per tensor",
        calibration_method={"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}[method],
        calibration_source=goods_source, calibration_count=len(files),
        float_model=f"{manifest.model_id} v{manifest.model_version}, "
        + ", ".join(f"{g.name} {g.sha256[:12]}" for g in manifest.graphs),
        kept_float=kept, onnxruntime_version=ort.__version__,
        thresholds="carried over from the float model, NOT set on INT8 scores: run 'edge-inspect calibrate'",
        quantized_at=utc_now(),
    )
    # schema 4 fields (precision, quantization): the copy is a schema-4 manifest whatever the float one was
    int8 = manifest.model_copy(update={"graphs": new_graphs, "quantization": record, "schema_version": SCHEMA_VERSION,
                                       "model_id": manifest.model_id + "-int8"})
    int8 = Manifest.model_validate(int8.model_dump())
    if fit_goods:
        int8, refit_report = refit_head(out, int8, _Inputs(_goods(fit_goods, refit_images), manifest.input),
                                        _Inputs(threshold_goods[0], manifest.input), progress=progress)
        record = record.model_copy(update={"head_refit": f"{refit_report.describe()}; training-goods statistics "
                                           f"from {refit_report.train_count} inputs of {goods_source}, fusion "
                                           f"scales from {refit_report.held_out_count} of {threshold_goods[1]}"})
        int8 = Manifest.model_validate(int8.model_copy(update={"quantization": record}).model_dump())
    elif refit:
        log.warning("the map head keeps the float model's good-image statistics: refitting them on the INT8 "
                    "graphs needs held-out goods (--threshold-goods)")
    # score the calibration images both ways: the first check that the INT8 graphs work
    with OnnxRuntimeBackend(src, manifest) as fb, OnnxRuntimeBackend(out, int8) as qb:
        fs = np.array([float(fb.infer({manifest.input.name: x})[manifest.score_output][0]) for x in images])
        qs = np.array([float(qb.infer({manifest.input.name: x})[manifest.score_output][0]) for x in images])
    if not np.all(np.isfinite(qs)):
        raise ModelError("the INT8 graphs give non-finite scores; try another calibration method")
    if threshold_goods is not None:
        tfiles, tsource = threshold_goods
        with OnnxRuntimeBackend(out, int8) as qb:
            gs, gm = score_images(qb, int8, (load_image(f) for f in tfiles))
            ds = score_images(qb, int8, (load_image(f) for f in defects[0]))[0] if defects else None
        old = manifest.calibration
        calibration = calibrate(gs, defect_scores=ds, good_maps=gm, target_frr=target_frr, source=tsource,
                                defects_source=defects[1] if defects else None,
                                score_lower_bound=old.score_lower_bound, map_lower_bound=old.map_lower_bound)
        record = record.model_copy(update={"thresholds": f"set on INT8 scores of {tsource} "
                                           "(evaluation.calibration.calibrate, as 'edge-inspect calibrate')"})
        int8 = Manifest.model_validate(int8.model_copy(update={"calibration": calibration,
                                                               "quantization": record}).model_dump())
    else:
        log.warning("the INT8 model keeps the float thresholds; set them on INT8 scores with "
                    "'edge-inspect calibrate --model %s --goods DIR' (goods the model never trained on)", out)
    save_manifest(int8, out)  # last: a folder whose quantization failed has no manifest and does not load
    return QuantizeResult(out, int8, float(np.max(np.abs(qs - fs))), fs, qs)
