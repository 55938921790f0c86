"""TensorRT backend: runs the engines recorded in the manifest (TensorRT 10 named-tensor API, pycuda buffers).

Every engine of the model is bound once at load time to one device buffer per *global* tensor name
(``image``, the features between graphs, ``score``, ``anomaly_map``), so an intermediate tensor is
written by its producer engine and read by its consumer engine on the device: no host round trip.
Only the image input and the final outputs cross to the host, through pinned (page-locked) buffers.
All work is queued on one CUDA stream; ``infer`` synchronises once at the end.

The same module owns the *refusal* rules (``engine_problems`` / ``usable``) so a stale or foreign
engine is never loaded: missing file, sha256 mismatch, ONNX changed since the build, other TensorRT
version, other GPU. tensorrt and pycuda are imported lazily; importing this module needs neither.

API checked against the TensorRT 10.3 Python bindings (JetPack 6): ``Runtime.deserialize_cuda_engine``,
``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode / get_tensor_shape / get_tensor_dtype /
get_tensor_profile_shape``, ``IExecutionContext.set_input_shape / set_tensor_address /
execute_async_v3(stream_handle)``; pycuda ``mem_alloc``, ``pagelocked_empty``, ``memcpy_htod_async``,
``memcpy_dtoh_async``, ``Stream.handle``, ``Device.retain_primary_context``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendError, DependencyError, EngineError, InputShapeError
from ..manifest import EngineRecord, Manifest, sha256_file
from .base import Backend

log = logging.getLogger(__name__)

BATCH_AXIS_NAME = "batch"


# --------------------------------------------------------------------------------------------
# Environment probe (what this machine has)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrtEnvironment:
    """What the machine offers for TensorRT. ``missing`` lists what is absent, in words (empty: all there)."""

    tensorrt_version: str | None = None
    pycuda_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None  # "8.7" for Orin
    missing: tuple[str, ...] = ()
    missing_packages: bool = False  # True when a Python package (not the device) is what is missing

    @property
    def ok(self) -> bool:
        return not self.missing

    @property
    def reason(self) -> str:
        """One line: what is missing, or what is there."""
        if self.missing:
            return "; ".join(self.missing)
        return f"TensorRT {self.tensorrt_version} on GPU '{self.gpu_name}' (compute capability {self.compute_capability})"

    def raise_if_missing(self, feature: str) -> None:
        """Raise DependencyError (a package is missing) or EngineError (no CUDA device) naming what is missing."""
        if self.ok:
            return
        message = f"{feature} needs TensorRT, pycuda and a CUDA device: {self.reason}"
        raise (DependencyError if self.missing_packages else EngineError)(message)


_probe_lock = threading.Lock()
_probe_cache: TrtEnvironment | None = None


def probe_environment(refresh: bool = False) -> TrtEnvironment:
    """Probe (once per process) whether tensorrt and pycuda import and a CUDA device answers."""
    global _probe_cache
    with _probe_lock:
        if _probe_cache is None or refresh:
            _probe_cache = _probe()
        return _probe_cache


def _probe() -> TrtEnvironment:
    missing: list[str] = []
    missing_packages = False
    trt_version = pycuda_version = gpu = cc = None
    try:
        import tensorrt as trt

        trt_version = str(trt.__version__)
    except Exception as exc:  # ImportError, or OSError when libnvinfer is absent
        missing.append(f"the Python module 'tensorrt' is not importable ({_first_line(exc)}); "
                       "it comes with JetPack 6 (TensorRT 10) or NVIDIA's tensorrt wheels")
        missing_packages = True
    try:
        import pycuda
        import pycuda.driver as cuda

        pycuda_version = getattr(pycuda, "VERSION_TEXT", "?")
        try:
            cuda.init()
            if cuda.Device.count() < 1:
                missing.append("no CUDA device found (cuda.Device.count() == 0)")
            else:
                dev = cuda.Device(0)
                gpu = str(dev.name())
                major, minor = dev.compute_capability()
                cc = f"{major}.{minor}"
        except Exception as exc:  # pycuda raises its own error types when there is no driver/device
            missing.append(f"no CUDA device or driver ({_first_line(exc)})")
    except Exception as exc:
        missing.append(f"the Python module 'pycuda' is not importable ({_first_line(exc)}); "
                       "install it with: pip install 'edge-inspect[jetson]'")
        missing_packages = True
        gpu, cc = _probe_gpu_without_pycuda()
        if gpu is None:
            missing.append("no CUDA device found")
    return TrtEnvironment(trt_version, pycuda_version, gpu, cc, tuple(missing), missing_packages)


def _probe_gpu_without_pycuda() -> tuple[str | None, str | None]:
    """Best effort GPU name via cuda-python, only to make the 'pycuda missing' message more useful."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # older cuda-python layout
        err, count = cudart.cudaGetDeviceCount()
        if int(err) != 0 or count < 1:
            return None, None
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) != 0:
            return None, None
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return name, f"{props.major}.{props.minor}"
    except Exception:  # no cuda-python, no driver: nothing more to say
        return None, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Refusal rules (pure: testable without TensorRT by passing a fabricated TrtEnvironment)
# --------------------------------------------------------------------------------------------


def build_hint(model_dir) -> str:
    return f"run 'edge-inspect build --model {model_dir}' on this device"


def engine_for_graph(manifest: Manifest, graph_name: str) -> EngineRecord | None:
    for rec in manifest.engines:
        if rec.graph == graph_name:
            return rec
    return None


def engine_problems(model_dir, manifest: Manifest, env: TrtEnvironment, check_hash: bool = True) -> list[str]:
    """Why the recorded engines cannot run here: one message per refused graph (empty list: all fine).

    Checked per graph, cheapest first: engine recorded, file present, ONNX unchanged since the
    build, same TensorRT version, same GPU name and compute capability, file sha256 as recorded.
    """
    model_dir = Path(model_dir)
    hint = build_hint(model_dir)
    if not manifest.engines:
        return [f"{model_dir / 'manifest.json'}: no TensorRT engines recorded; {hint}"]
    problems = []
    for g in manifest.graphs:
        rec = engine_for_graph(manifest, g.name)
        if rec is None:
            problems.append(f"{model_dir / 'manifest.json'}: no engine recorded for graph '{g.name}'; {hint}")
            continue
        path = model_dir / rec.file
        if not path.is_file():
            problems.append(f"{path}: engine file for graph '{g.name}' is missing; {hint}")
        elif rec.onnx_sha256 != g.sha256:
            problems.append(f"{path}: engine was built from another version of {g.file} (the ONNX graph changed "
                            f"since the build); {hint}")
        elif (rec.tensorrt_version, rec.gpu_name, rec.compute_capability) != (
            env.tensorrt_version, env.gpu_name, env.compute_capability
        ):
            problems.append(
                f"{path}: engine built for GPU '{rec.gpu_name}' (compute {rec.compute_capability}) / TensorRT "
                f"{rec.tensorrt_version}, but this machine has GPU '{env.gpu_name}' (compute "
                f"{env.compute_capability}) / TensorRT {env.tensorrt_version}; {hint}"
            )
        elif check_hash and sha256_file(path) != rec.sha256:
            problems.append(f"{path}: sha256 does not match the manifest (engine replaced or corrupted); "
                            f"run 'edge-inspect build --model {model_dir} --force'")
    return problems


def usable(model_dir, manifest: Manifest, env: TrtEnvironment | None = None) -> tuple[bool, str]:
    """(True, what) when TensorRT can run this model folder here, else (False, why) in one line."""
    env = env or probe_environment()
    if not env.ok:
        return False, env.reason
    problems = engine_problems(model_dir, manifest, env)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return False, problems[0] + more
    precisions = sorted({engine_for_graph(manifest, g.name).precision for g in manifest.graphs})
    return True, (f"{len(manifest.graphs)} engines ({'/'.join(precisions)}) built for '{env.gpu_name}' / "
                  f"TensorRT {env.tensorrt_version}")


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


@dataclass
class _Tensor:
    """One global tensor: its device buffer (shared by producer and consumer engines) and host view."""

    name: str
    dtype: np.dtype
    max_shape: tuple[int, ...]  # at the largest batch the engines accept
    device: object = None  # pycuda DeviceAllocation
    host: np.ndarray | None = None  # pinned; only for the image input and the final outputs


@dataclass
class _Engine:
    graph: str
    engine: object
    context: object
    inputs: list[str]
    outputs: list[str]
    dynamic_inputs: dict[str, tuple[int, ...]]  # name -> engine shape with -1 on the batch axis


class TensorRTBackend(Backend):
    """Runs the recorded engines in manifest order on one CUDA stream (not thread-safe across calls: one lock)."""

    name = "tensorrt"

    def __init__(self, model_dir, manifest: Manifest, device_index: int = 0):
        super().__init__(model_dir, manifest)
        self.device_index = device_index
        self._engines: list[_Engine] = []
        self._tensors: dict[str, _Tensor] = {}
        self._external_inputs: list[str] = []
        self._wanted_outputs: list[str] = []
        self._max_batch = 0
        self._batch = 0
        self._cuda = None
        self._cuda_ctx = None
        self._stream = None
        self._runtime = None
        self._lock = threading.Lock()

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> None:
        env = probe_environment()
        env.raise_if_missing("the TensorRT backend")
        problems = engine_problems(self.model_dir, self.manifest, env)
        if problems:
            raise EngineError(problems[0])
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        cuda.init()
        self._cuda_ctx = cuda.Device(self.device_index).retain_primary_context()
        with self._current():
            self._stream = cuda.Stream()
            self._runtime = trt.Runtime(_trt_logger(trt))
            for g in self.manifest.graphs:
                self._engines.append(self._load_engine(trt, g.name))
            self._plan_buffers(trt)
            self._allocate()
            self._set_batch(1 if self._max_batch >= 1 else 0)
        log.info("tensorrt backend: %d engines, max batch %d, tensors %s", len(self._engines), self._max_batch,
                 sorted(self._tensors))

    def _load_engine(self, trt, graph_name: str) -> _Engine:
        rec = engine_for_graph(self.manifest, graph_name)
        path = Path(self.model_dir) / rec.file
        if rec.dla_core is not None:
            self._runtime.DLA_core = int(rec.dla_core)  # must be set before deserialising a DLA engine
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineError(f"{path}: TensorRT could not deserialise the engine ({_trt_errors()}); "
                              f"{build_hint(self.model_dir)}")
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{path}: cannot create an execution context (out of GPU memory?)")
        inputs, outputs, dynamic = [], [], {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(name)
                shape = tuple(engine.get_tensor_shape(name))
                if any(d < 0 for d in shape[1:]):
                    raise EngineError(f"{path}: input '{name}' has dynamic non-batch axes {shape}; only the batch "
                                      "axis may be dynamic")
                if shape and shape[0] < 0:
                    dynamic[name] = shape
            else:
                outputs.append(name)
        return _Engine(graph_name, engine, context, inputs, outputs, dynamic)

    def _plan_buffers(self, trt) -> None:
        """One tensor per global name; dtypes must agree between producer and consumers."""
        max_batches = []
        for e in self._engines:
            for name in e.dynamic_inputs:
                max_batches.append(int(e.engine.get_tensor_profile_shape(name, 0)[2][0]))
            for name in e.inputs:
                if name not in e.dynamic_inputs:
                    max_batches.append(int(e.engine.get_tensor_shape(name)[0]))
        self._max_batch = min(max_batches) if max_batches else 1
        produced: set[str] = set()
        for e in self._engines:
            for name in e.inputs + e.outputs:
                dtype = np.dtype(trt.nptype(e.engine.get_tensor_dtype(name)))
                shape = tuple(int(d) for d in e.engine.get_tensor_shape(name))
                shape = (self._max_batch, *shape[1:]) if shape and shape[0] < 0 else shape
                known = self._tensors.get(name)
                if known is None:
                    self._tensors[name] = _Tensor(name, dtype, shape)
                elif known.dtype != dtype:
                    raise EngineError(f"tensor '{name}' is {known.dtype} in one engine and {dtype} in engine "
                                      f"'{e.graph}'; rebuild the engines ({build_hint(self.model_dir)})")
                elif int(np.prod(shape)) > int(np.prod(known.max_shape)):
                    known.max_shape = shape
            for name in e.inputs:
                if name not in produced and name not in self._external_inputs:
                    self._external_inputs.append(name)
            produced.update(e.outputs)
        m = self.manifest
        self._wanted_outputs = [n for n in (m.score_output, m.map_output, *m.extra_outputs) if n in produced]
        for name in (m.score_output, m.map_output):
            if name not in produced:
                raise EngineError(f"no engine produces the model output '{name}'; {build_hint(self.model_dir)}")

    def _allocate(self) -> None:
        cuda = self._cuda
        for t in self._tensors.values():
            nbytes = max(int(np.prod(t.max_shape)) * t.dtype.itemsize, 1)
            t.device = cuda.mem_alloc(nbytes)
            if t.name in self._external_inputs or t.name in self._wanted_outputs:
                t.host = cuda.pagelocked_empty(t.max_shape, t.dtype)
        for e in self._engines:
            for name in e.inputs + e.outputs:
                # Producer output and consumer input get the same address: features stay on the device.
                if not e.context.set_tensor_address(name, int(self._tensors[name].device)):
                    raise EngineError(f"engine '{e.graph}': cannot bind tensor '{name}' ({_trt_errors()})")

    def _set_batch(self, batch: int) -> None:
        for e in self._engines:
            for name, shape in e.dynamic_inputs.items():
                if not e.context.set_input_shape(name, (batch, *shape[1:])):
                    raise InputShapeError(f"engine '{e.graph}' rejects batch {batch} for input '{name}' "
                                          f"({_trt_errors()})")
        self._batch = batch

    # -- inference -------------------------------------------------------------------------
    @property
    def max_batch(self) -> int:
        return self._max_batch

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"image": (B,3,H,W) float32}`` → ``{"score": (B,), "anomaly_map": (B,1,H,W), ...}`` (host copies)."""
        if not self._engines:
            raise BackendError("backend not loaded; use it as a context manager or call load()")
        from .onnxrt import check_inputs

        check_inputs([self.manifest.graphs[0].inputs[0]], inputs, "model input")
        batch = int(inputs[self.manifest.graphs[0].inputs[0].name].shape[0])
        if not 1 <= batch <= self._max_batch:
            raise InputShapeError(f"batch {batch} is outside the engines' range 1..{self._max_batch}; rebuild with "
                                  f"'edge-inspect build --model {self.model_dir} --max-batch {batch}'")
        cuda = self._cuda
        with self._lock, self._current():
            if batch != self._batch:
                self._set_batch(batch)
            for name in self._external_inputs:
                if name not in inputs:
                    raise InputShapeError(f"model input: missing input '{name}'")
                t = self._tensors[name]
                view = t.host[:batch]
                np.copyto(view, inputs[name], casting="same_kind")
                cuda.memcpy_htod_async(t.device, view, self._stream)
            for e in self._engines:
                if not e.context.execute_async_v3(stream_handle=self._stream.handle):
                    raise BackendError(f"engine '{e.graph}' failed to enqueue ({_trt_errors()})")
            for name in self._wanted_outputs:
                t = self._tensors[name]
                cuda.memcpy_dtoh_async(t.host[:batch], t.device, self._stream)
            self._stream.synchronize()
            # Copies: the pinned buffers are reused by the next call.
            return {name: np.array(self._tensors[name].host[:batch], dtype=np.float32) for name in self._wanted_outputs}

    def time_engines(self, runs: int = 200, warmup: int = 20) -> dict[str, list[float]]:
        """Per-engine GPU time in ms (CUDA events around each ``execute_async_v3``) on the current bindings.

        Run ``infer`` once first so the buffers hold real data. For benchmarks, not for the line.
        """
        if not self._engines:
            raise BackendError("backend not loaded")
        cuda = self._cuda
        times: dict[str, list[float]] = {e.graph: [] for e in self._engines}
        with self._lock, self._current():
            start, end = cuda.Event(), cuda.Event()
            for i in range(warmup + runs):
                for e in self._engines:
                    start.record(self._stream)
                    e.context.execute_async_v3(stream_handle=self._stream.handle)
                    end.record(self._stream)
                    end.synchronize()
                    if i >= warmup:
                        times[e.graph].append(start.time_till(end))
        return times

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        if self._cuda_ctx is None:
            return
        with self._current():
            for t in self._tensors.values():
                if t.device is not None:
                    t.device.free()
                t.device = None
                t.host = None  # pinned memory is released while the context is current
            self._tensors.clear()
            self._engines.clear()  # contexts before engines before runtime (reference order)
            self._runtime = None
            self._stream = None
        self._cuda_ctx.detach()
        self._cuda_ctx = None

    @contextlib.contextmanager
    def _current(self):
        """Make the device's primary context current in *this* thread (load and infer may run in different ones)."""
        self._cuda_ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()


# --------------------------------------------------------------------------------------------
# TensorRT logger (one per process: TensorRT treats the logger as a singleton)
# --------------------------------------------------------------------------------------------

_LOGGER = None
_recent_errors: list[str] = []


def _trt_logger(trt):
    """A trt.ILogger forwarding to ``logging`` and remembering the last errors for our messages."""
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                sev = trt.ILogger.Severity
                if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                    _recent_errors.append(str(msg))
                    del _recent_errors[:-20]
                    logging.getLogger("tensorrt").error("%s", msg)
                elif severity == sev.WARNING:
                    logging.getLogger("tensorrt").warning("%s", msg)
                elif severity == sev.INFO:
                    logging.getLogger("tensorrt").info("%s", msg)
                else:
                    logging.getLogger("tensorrt").debug("%s", msg)

        _LOGGER = _Logger()
    return _LOGGER


def _trt_errors(clear: bool = True) -> str:
    """The TensorRT error messages logged since the last call, joined on one line."""
    text = " | ".join(m.replace("\n", " ") for m in _recent_errors) or "no TensorRT error message"
    if clear:
        _recent_errors.clear()
    return text


def trt_logger_and_errors():
    """For the engine builder (``engines/``): the shared logger factory and the error collector."""
    return _trt_logger, _trt_errors
