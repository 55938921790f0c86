"""Build one TensorRT engine per ONNX graph of a model folder, verify them, record them in the manifest.

Precision policy (TensorRT 10, weakly typed networks):

* ``fp16`` (default): BuilderFlag.FP16, and *score / normalisation arithmetic stays FP32* through layer
  precision constraints: in every graph, accumulating layers (Reduce, Normalization, Softmax, TopK)
  are pinned to FP32; in the graphs that produce the score or the anomaly map, the element-wise,
  unary, resize, matrix-multiply and pooling layers are pinned too (cosine / L2 normalisation, products
  of maps, max, the Gaussians' window statistics and whitening). The
  flag OBEY_PRECISION_CONSTRAINTS (or PREFER with ``precision_constraints="prefer"``) makes
  TensorRT honour them. Convolutions (and matrix products outside those graphs) run in FP16. Graphs named in
  ``fp32_graphs`` are built without FP16 at all.
* ``fp32``: no FP16 and TF32 cleared (TensorRT allows TF32 by default, which rounds convolution
  inputs to a 10-bit mantissa, i.e. no better than FP16).
* ``int8``: explicit quantization only: the ONNX must carry QuantizeLinear/DequantizeLinear; the
  network is built strongly typed (TensorRT's recommendation for Q/DQ) with no precision flags.
  Calibrators (implicit INT8) are deprecated in TensorRT 10 and removed in 11: not supported.

API checked against the TensorRT 10.3 Python bindings: Builder.create_network / create_builder_config /
create_optimization_profile / build_serialized_network / num_DLA_cores / platform_has_fast_fp16,
OnnxParser.parse_from_file / num_errors / get_error, IBuilderConfig.set_memory_pool_limit(
MemoryPoolType.WORKSPACE) / set_flag / clear_flag / create_timing_cache / set_timing_cache(cache,
ignore_mismatch) / get_timing_cache / default_device_type / DLA_core, ILayer.precision /
set_output_type, NetworkDefinitionCreationFlag.STRONGLY_TYPED.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_inspect.backends.tensorrt_runner import take_trt_errors, trt_logger
from edge_inspect.backends.trt_probe import TrtEnvironment, probe_environment
from edge_inspect.errors import ConfigError, EngineError
from edge_inspect.manifest import EngineRecord, GraphSpec, Manifest, TensorSpec, sha256_file, utc_now

from .cache import (
    BuildOptions,
    TargetDevice,
    cache_key,
    cached_record,
    engine_relpath,
    load_timing_cache,
    save_timing_cache,
    timing_cache_path,
)

log = logging.getLogger(__name__)

# Layer types (TensorRT LayerType names) pinned to FP32 in an fp16 build; see the module docstring.
FP32_EVERYWHERE = ("REDUCE", "NORMALIZATION", "SOFTMAX", "TOPK")
# MATRIX_MULTIPLY and POOLING: the Gaussians' whitening products and window statistics (E[x²] − E[x]²
# cancels badly in FP16); the U-Net's max pools in the same graph run on small maps, so pinning costs little.
FP32_IN_SCORE_GRAPHS = ("ELEMENTWISE", "UNARY", "RESIZE", "MATRIX_MULTIPLY", "POOLING")


def target_of(env: TrtEnvironment) -> TargetDevice:
    env.raise_if_missing("edge-inspect build")
    return TargetDevice(env.tensorrt_version, env.gpu_name, env.compute_capability)


# --------------------------------------------------------------------------------------------
# Planning (pure: which engines to build, which to reuse)
# --------------------------------------------------------------------------------------------


@dataclass
class PlannedBuild:
    graph: GraphSpec
    relpath: str
    key: str
    cached: EngineRecord | None  # verified record of a reusable engine; None → build

    @property
    def needs_build(self) -> bool:
        return self.cached is None


def plan_builds(model_dir, manifest: Manifest, options: BuildOptions, target: TargetDevice,
                force: bool = False) -> list[PlannedBuild]:
    """One PlannedBuild per graph, in manifest order; reuse a cached engine unless ``force``."""
    unknown = set(options.fp32_graphs) - {g.name for g in manifest.graphs}
    if unknown:
        raise ConfigError(f"--fp32-graph names unknown graphs {sorted(unknown)}; the model has "
                          f"{[g.name for g in manifest.graphs]}")
    if manifest.input.tiles is not None and options.max_batch == 1:
        # The profile's shapes come from the graphs (non-square inputs need nothing here); only the batch
        # range must hold all tiles of one part, which the camera image's size decides.
        log.warning("this model cuts each image into %dx%d tiles that run as one batch; build with --max-batch "
                    "at least the tiles per part (the backend refuses a larger batch)",
                    manifest.input.height, manifest.input.width)
    plans = []
    for g in manifest.graphs:
        key = cache_key(g.sha256, target, options)
        relpath = engine_relpath(g.name, options.precision, key)
        cached = None if force else cached_record(model_dir, relpath)
        plans.append(PlannedBuild(g, relpath, key, cached))
    return plans


def score_graph_names(manifest: Manifest) -> set[str]:
    """Graphs that produce the score or the anomaly map (where normalisation/score arithmetic lives)."""
    finals = {manifest.score_output, manifest.map_output}
    return {g.name for g in manifest.graphs if finals & {t.name for t in g.outputs}}


def parser_errors(parser) -> list[str]:
    """Every message of the TensorRT ONNX parser, one string each (never swallowed)."""
    messages = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        try:
            desc, code, node = err.desc(), err.code(), err.node()
            where = f"node {node}"
            for attr in ("node_name", "node_operator"):
                value = getattr(err, attr, None)
                if callable(value) and value():
                    where += f" {value()}"
            messages.append(f"{desc} ({where}; {code})")
        except Exception:  # noqa: BLE001 - older bindings lack these or raise their own: the error still prints itself
            messages.append(str(err))
    return messages


# --------------------------------------------------------------------------------------------
# One engine
# --------------------------------------------------------------------------------------------


@dataclass
class EngineBuild:
    seconds: float
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    fp32_layers: int = 0
    notes: list[str] = field(default_factory=list)


def build_engine(onnx_path: Path, engine_path: Path, options: BuildOptions, timing_cache: Path,
                 fp32_scope: str, graph_name: str) -> EngineBuild:
    """Parse ``onnx_path`` and write a serialized engine to ``engine_path``.

    ``fp32_scope``: "graph" (whole graph FP32), "score" (score-graph policy) or "accumulate"
    (only accumulating layers pinned). Raises EngineError with every parser/builder message.
    """
    import tensorrt as trt

    logger = trt_logger(trt)
    take_trt_errors()  # forget errors of earlier, unrelated calls
    builder = trt.Builder(logger)
    strongly_typed = options.precision == "int8"
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    if not ok or parser.num_errors:
        messages = parser_errors(parser) or [take_trt_errors()]
        raise EngineError(f"{onnx_path}: the TensorRT ONNX parser rejected graph '{graph_name}': "
                          + " | ".join(m.replace("\n", " ") for m in messages))

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    notes: list[str] = []
    fp32_layers = 0
    if options.precision == "int8":
        if not _has_qdq(trt, network):
            raise EngineError(f"{onnx_path}: --precision int8 needs explicit quantization (QuantizeLinear/"
                              "DequantizeLinear in the ONNX); calibration (implicit INT8) is not supported")
    elif options.precision == "fp16" and fp32_scope != "graph":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise EngineError(f"TensorRT {trt.__version__} has no FP16 builder flag (removed in TensorRT 11); "
                              "this converter targets TensorRT 10 (JetPack 6); use --precision fp32")
        if not builder.platform_has_fast_fp16:
            notes.append("this GPU has no fast FP16; the engine may not be faster than fp32")
        config.set_flag(trt.BuilderFlag.FP16)
        names = FP32_EVERYWHERE + (FP32_IN_SCORE_GRAPHS if fp32_scope == "score" else ())
        fp32_layers = _pin_fp32(trt, network, names)
        if fp32_layers:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS if options.precision_constraints == "obey"
                            else trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    else:  # fp32, or an fp16 build's FP32 graph: true FP32, not TF32
        config.clear_flag(trt.BuilderFlag.TF32)

    if options.dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise EngineError("--dla-core given but this device has no DLA (TensorRT reports 0 DLA cores)")
        if options.dla_core >= builder.num_DLA_cores:
            raise ConfigError(f"--dla-core {options.dla_core}: "
                              f"this device has DLA cores 0..{builder.num_DLA_cores - 1}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers the DLA cannot run go to the GPU

    inputs = _io_specs(trt, [network.get_input(i) for i in range(network.num_inputs)])
    outputs = _io_specs(trt, [network.get_output(i) for i in range(network.num_outputs)])
    profile = _batch_profile(trt, builder, network, options.max_batch, onnx_path)
    if profile is not None:
        config.add_optimization_profile(profile)

    cache_blob = load_timing_cache(timing_cache)
    cache = config.create_timing_cache(cache_blob)
    if not config.set_timing_cache(cache, False):
        log.warning("%s: timing cache not usable here (other TensorRT/GPU); starting a new one", timing_cache)
        config.set_timing_cache(config.create_timing_cache(b""), False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineError(f"{onnx_path}: TensorRT failed to build an engine for graph '{graph_name}': "
                          f"{take_trt_errors()}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(serialized)
    tmp.replace(engine_path)
    save_timing_cache(timing_cache, config.get_timing_cache().serialize())
    return EngineBuild(seconds, inputs, outputs, fp32_layers, notes)


def _pin_fp32(trt, network, type_names: tuple[str, ...]) -> int:
    """Pin the float layers of the given types to FP32 (compute and outputs); returns how many."""
    types = {getattr(trt.LayerType, n) for n in type_names if hasattr(trt.LayerType, n)}
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type not in types:
            continue
        tensors = [layer.get_output(j) for j in range(layer.num_outputs)]
        tensors += [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]
        if not tensors or any(t.dtype != trt.float32 for t in tensors):
            continue  # integer shape arithmetic, casts: leave alone
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


def _has_qdq(trt, network) -> bool:
    qdq = {trt.LayerType.QUANTIZE, trt.LayerType.DEQUANTIZE}
    return any(network.get_layer(i).type in qdq for i in range(network.num_layers))


def _io_specs(trt, tensors) -> list[TensorSpec]:
    import numpy as np

    specs = []
    for t in tensors:
        shape = [int(d) for d in t.shape]
        shape = ["batch" if (i == 0 and d < 0) else d for i, d in enumerate(shape)]
        specs.append(TensorSpec(name=t.name, shape=shape, dtype=np.dtype(trt.nptype(t.dtype)).name))
    return specs


def _batch_profile(trt, builder, network, max_batch: int, onnx_path: Path):
    """Profile for the dynamic batch axis: min 1, opt = max = ``max_batch``. None when all shapes are static."""
    profile = None
    for i in range(network.num_inputs):
        t = network.get_input(i)
        shape = [int(d) for d in t.shape]
        if any(d < 0 for d in shape[1:]):
            raise EngineError(f"{onnx_path}: input '{t.name}' has dynamic axes other than the batch {shape}; "
                              "re-export with a fixed input size")
        if shape and shape[0] < 0:
            profile = profile or builder.create_optimization_profile()
            rest = tuple(shape[1:])
            profile.set_shape(t.name, (1, *rest), (max_batch, *rest), (max_batch, *rest))
        elif max_batch > 1 and shape and shape[0] != max_batch:
            raise EngineError(f"{onnx_path}: input '{t.name}' has a fixed batch of {shape[0]}; --max-batch "
                              f"{max_batch} needs a dynamic batch axis in the export")
    return profile


# --------------------------------------------------------------------------------------------
# The whole model folder
# --------------------------------------------------------------------------------------------


@dataclass
class BuildReport:
    records: list[EngineRecord]
    rebuilt: list[str]  # graph names built in this run (the rest came from the cache)
    end_to_end: dict[str, float] = field(default_factory=dict)  # output name -> max abs error vs ONNX Runtime


def check_graph_precision(manifest: Manifest, precision: str) -> None:
    """Raise EngineError (one line) when the folder's graphs cannot be built at ``precision``: Q/DQ graphs
    (``int8-qdq``) only as ``int8``, and only with int8 symmetric activations (TensorRT takes no uint8 Q/DQ)."""
    qdq = [g.name for g in manifest.graphs if g.precision == "int8-qdq"]
    if qdq and precision != "int8":
        raise EngineError(f"graphs {', '.join(qdq)} carry INT8 Q/DQ; build them with --precision int8, or build "
                          "the float model folder")
    q = manifest.quantization
    if qdq and q is not None and q.activations.startswith("uint8"):
        raise EngineError("this INT8 folder was quantized for ONNX Runtime (uint8 activations), which TensorRT "
                          "cannot build; quantize for TensorRT with 'edge-inspect quantize --activations s8-symmetric'")


def build_model(model_dir, options: BuildOptions, force: bool = False, verify_images: str | Path | None = None,
                env: TrtEnvironment | None = None) -> BuildReport:
    """Build (or reuse) and verify one engine per graph; record them in the manifest.

    The manifest is written only when every engine passed verification; an engine outside tolerance
    raises EngineError (its file stays, but without a verified record it is never reused).
    """
    from edge_inspect.manifest import load_manifest, save_manifest

    from .verify import verify_model

    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    check_graph_precision(manifest, options.precision)
    env = env or probe_environment()
    target = target_of(env)
    plans = plan_builds(model_dir, manifest, options, target, force)
    timing = timing_cache_path(model_dir, target)
    scores = score_graph_names(manifest)
    fresh: dict[str, EngineRecord] = {}
    for plan in plans:
        g = plan.graph
        if not plan.needs_build:
            log.info("%s: cached engine %s is up to date", g.name, plan.relpath)
            continue
        scope = "graph" if g.name in options.fp32_graphs else "score" if g.name in scores else "accumulate"
        log.info("%s: building %s engine (%s)", g.name, options.precision, plan.relpath)
        built = build_engine(model_dir / g.file, model_dir / plan.relpath, options, timing, scope, g.name)
        for note in built.notes:
            log.warning("%s: %s", g.name, note)
        fresh[g.name] = EngineRecord(
            graph=g.name, file=plan.relpath, sha256=sha256_file(model_dir / plan.relpath), onnx_sha256=g.sha256,
            precision=options.precision, tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
            compute_capability=target.compute_capability, dla_core=options.dla_core, inputs=built.inputs,
            outputs=built.outputs, built_at=utc_now(), build_seconds=round(built.seconds, 3),
        )
    records = [fresh.get(p.graph.name) or p.cached for p in plans]
    candidate = manifest.model_copy(update={"engines": records})
    end_to_end = verify_model(model_dir, candidate, only=set(fresh), images_dir=verify_images)
    from .cache import write_record

    verified = candidate.engines
    for rec in verified:
        if rec.graph in fresh:
            write_record(model_dir, rec)
    save_manifest(candidate, model_dir)
    return BuildReport(verified, sorted(fresh), end_to_end)
