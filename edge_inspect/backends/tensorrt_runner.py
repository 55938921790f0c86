"""The one TensorRT runner: deserialise engines, bind buffers, run them on one CUDA stream.

Modelled on Polygraphy's ``TrtRunner``: ``infer(dict[str, ndarray]) -> dict[str, ndarray]`` behind a
context manager (``activate`` / ``deactivate``). Used by ``TensorRTBackend`` (all engines of a model,
chained) and by the engine verifier in ``engines/verify.py`` (one engine alone); nothing else in the
code base creates execution contexts, pinned buffers or calls ``execute_async_v3``.

A runner owns, for its lifetime: the CUDA primary context of its device (retained, pushed around every
call so ``activate`` and ``infer`` may run in different threads), one CUDA stream, the TensorRT
runtime, the deserialised engines and their execution contexts, and the buffers:

* one device buffer per *global* tensor name, sized for the largest batch the engines accept. An
  engine's output and a later engine's input of the same name share it, so intermediate tensors
  stay on the device (no host round trip);
* pinned (page-locked) host buffers only for the tensors that cross to the host: the inputs no
  engine of the runner produces, and the requested outputs.

All work is queued on the stream; ``infer`` synchronises once at the end. tensorrt and pycuda are
imported in ``activate``; importing this module needs neither. The planning steps (``read_engine_io``,
``plan_buffers``, ``feed_batch``) are plain functions, testable with fake engine objects.

API checked against the TensorRT 10.3 Python bindings (JetPack 6): ``Runtime.deserialize_cuda_engine``,
``Runtime.DLA_core``, ``ICudaEngine.num_io_tensors / get_tensor_name / get_tensor_mode /
get_tensor_shape / get_tensor_dtype / get_tensor_profile_shape(name, profile) -> [min, opt, max] /
create_execution_context``, ``IExecutionContext.set_input_shape / set_tensor_address /
execute_async_v3(stream_handle)``, ``trt.nptype``; pycuda ``mem_alloc``, ``pagelocked_empty``,
``memcpy_htod_async``, ``memcpy_dtoh_async``, ``Stream.handle``, ``Event.record / time_till``,
``Device.retain_primary_context``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BackendError, EngineError, InputShapeError
from . import trt_probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineFile:
    """One serialised engine to run: a name for messages and timings (the graph), its file, its DLA core."""

    name: str
    path: Path
    dla_core: int | None = None


# --------------------------------------------------------------------------------------------
# Planning (pure: what the engines declare, which buffers they need, what a feed means)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IOTensor:
    """One input or output of an engine, as the engine declares it."""

    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1 on a dynamic batch axis
    dtype: np.dtype
    max_batch: int | None = None  # inputs only: largest batch accepted (profile 0's max, or the fixed batch)

    @property
    def dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] < 0


@dataclass(frozen=True)
class EngineIO:
    """The named tensors of one engine, in the engine's order."""

    name: str
    tensors: tuple[IOTensor, ...]

    @property
    def inputs(self) -> list[IOTensor]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> list[IOTensor]:
        return [t for t in self.tensors if not t.is_input]


def read_engine_io(trt, engine, name: str, where: str = "") -> EngineIO:
    """Read an engine's named tensors (TensorRT 10 named-tensor API).

    ``trt`` is the tensorrt module (for ``TensorIOMode`` and ``nptype``). Only the batch axis of an
    input may be dynamic; EngineError otherwise.
    """
    where = where or f"engine '{name}'"
    tensors = []
    for i in range(engine.num_io_tensors):
        tname = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
        shape = tuple(int(d) for d in engine.get_tensor_shape(tname))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tname)))
        max_batch = None
        if is_input:
            if any(d < 0 for d in shape[1:]):
                raise EngineError(f"{where}: input '{tname}' has dynamic non-batch axes {shape}; only the "
                                  "batch axis may be dynamic")
            if shape and shape[0] < 0:
                max_batch = int(engine.get_tensor_profile_shape(tname, 0)[2][0])
            else:
                max_batch = shape[0] if shape else 1
        tensors.append(IOTensor(tname, is_input, shape, dtype, max_batch))
    return EngineIO(name, tuple(tensors))


@dataclass
class TensorBuffer:
    """One global tensor: dtype, shape at the largest batch, device buffer and (maybe) pinned host buffer."""

    name: str
    dtype: np.dtype
    max_shape: tuple[int, ...]
    on_host: bool = False  # crosses to the host (runner input or requested output): gets a pinned buffer
    device: object = None  # pycuda DeviceAllocation, while active
    host: np.ndarray | None = None  # pinned, while active; only when on_host


@dataclass
class BufferPlan:
    max_batch: int
    tensors: dict[str, TensorBuffer]
    inputs: list[str]  # fed from the host: read by an engine before any engine of the runner writes them
    outputs: list[str]  # copied back to the host, in this order
    dynamic_inputs: dict[str, list[tuple[str, tuple[int, ...]]]] = field(default_factory=dict)
    # engine name -> [(input name, engine shape with -1 on the batch axis)]: set_input_shape per batch


def _with_hint(message: str, hint: str) -> str:
    return f"{message}; {hint}" if hint else message


def plan_buffers(engines: Sequence[EngineIO], outputs: Sequence[str] | None = None,
                 required_outputs: Sequence[str] = (), hint: str = "") -> BufferPlan:
    """One buffer per global tensor name, sized for the largest batch every engine accepts.

    ``outputs``: the tensors to return, in order; names no engine produces are skipped, except those
    in ``required_outputs`` (EngineError). ``None``: every output that no engine of the runner consumes.
    Producer and consumers of a name must agree on its dtype (EngineError otherwise).
    """
    limits = [t.max_batch for e in engines for t in e.inputs if t.max_batch is not None]
    max_batch = min(limits) if limits else 1
    tensors: dict[str, TensorBuffer] = {}
    inputs: list[str] = []
    produced: list[str] = []
    dynamic: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for e in engines:
        for t in e.tensors:
            shape = (max_batch, *t.shape[1:]) if t.dynamic else t.shape
            known = tensors.get(t.name)
            if known is None:
                tensors[t.name] = TensorBuffer(t.name, t.dtype, shape)
            elif known.dtype != t.dtype:
                raise EngineError(_with_hint(f"tensor '{t.name}' is {known.dtype} in one engine and "
                                             f"{t.dtype} in engine '{e.name}'; rebuild the engines", hint))
            elif int(np.prod(shape)) > int(np.prod(known.max_shape)):
                known.max_shape = shape
        for t in e.inputs:
            if t.name not in produced and t.name not in inputs:
                inputs.append(t.name)
            if t.dynamic:
                dynamic.setdefault(e.name, []).append((t.name, t.shape))
        produced += [t.name for t in e.outputs if t.name not in produced]
    for name in required_outputs:
        if name not in produced:
            raise EngineError(_with_hint(f"no engine produces the model output '{name}'", hint))
    if outputs is None:
        consumed = {t.name for e in engines for t in e.inputs}
        wanted = [n for n in produced if n not in consumed]
    else:
        wanted = [n for n in dict.fromkeys(outputs) if n in produced]
    for name in (*inputs, *wanted):
        tensors[name].on_host = True
    return BufferPlan(max_batch, tensors, inputs, wanted, dynamic)


def feed_batch(plan: BufferPlan, feeds: dict[str, np.ndarray]) -> int:
    """The batch of a feed, after checking it against the plan (InputShapeError naming what is wrong).

    Every runner input must be present, with the buffer's trailing shape, one common batch within
    1..max_batch, and a dtype that casts to the engine's ("same_kind"). Other names are ignored.
    """
    batch = None
    for name in plan.inputs:
        arr = feeds.get(name)
        if arr is None:
            raise InputShapeError(f"missing input '{name}'")
        t = plan.tensors[name]
        arr = np.asarray(arr)
        if arr.ndim != len(t.max_shape) or arr.shape[1:] != t.max_shape[1:]:
            raise InputShapeError(f"input '{name}' has shape {arr.shape}, expected "
                                  f"(batch, {', '.join(str(d) for d in t.max_shape[1:])})")
        if not np.can_cast(arr.dtype, t.dtype, casting="same_kind"):
            raise InputShapeError(f"input '{name}' has dtype {arr.dtype}, the engine takes {t.dtype}")
        if batch is None:
            batch = int(arr.shape[0])
        elif int(arr.shape[0]) != batch:
            raise InputShapeError(f"input '{name}' has batch {arr.shape[0]}, other inputs have {batch}")
    batch = 1 if batch is None else batch
    if not 1 <= batch <= plan.max_batch:
        raise InputShapeError(f"batch {batch} is outside the engines' range 1..{plan.max_batch}")
    return batch


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


@dataclass
class _Loaded:
    io: EngineIO
    engine: object  # trt.ICudaEngine
    context: object  # trt.IExecutionContext


class TensorRTRunner:
    """Runs serialised TensorRT engines in the given order on one CUDA stream.

    ``with TensorRTRunner([EngineFile("features", path)]) as runner: outs = runner.infer({"image": x})``

    ``outputs``: which tensors ``infer`` returns (see ``plan_buffers``; default: every output no engine
    here consumes). ``required_outputs``: names that must be produced. ``hint``: appended to messages
    about engines that cannot run (what to do, e.g. the build command). One lock: calls from several
    threads are serialised.
    """

    def __init__(self, engines: Sequence[EngineFile], outputs: Sequence[str] | None = None,
                 required_outputs: Sequence[str] = (), device_index: int = 0, hint: str = ""):
        if not engines:
            raise EngineError("TensorRTRunner needs at least one engine")
        self.engine_files = list(engines)
        self.requested_outputs = None if outputs is None else list(outputs)
        self.required_outputs = list(required_outputs)
        self.device_index = device_index
        self.hint = hint
        self.plan: BufferPlan | None = None
        self._loaded: list[_Loaded] = []
        self._batch = 0
        self._cuda = None
        self._cuda_ctx = None
        self._stream = None
        self._runtime = None
        self._lock = threading.Lock()

    # -- lifetime ----------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self.plan is not None

    def activate(self) -> None:
        """Deserialise the engines, create their contexts, allocate and bind the buffers (batch 1)."""
        if self.is_active:
            return
        trt_probe.probe_environment().raise_if_missing("the TensorRT runner")
        import pycuda.driver as cuda
        import tensorrt as trt

        self._cuda = cuda
        cuda.init()
        self._cuda_ctx = cuda.Device(self.device_index).retain_primary_context()
        try:
            with self._current():
                self._stream = cuda.Stream()
                self._runtime = trt.Runtime(trt_logger(trt))
                for f in self.engine_files:  # appended one by one: a failure frees those loaded so far
                    self._loaded.append(self._deserialise(trt, f))
                plan = plan_buffers([e.io for e in self._loaded], self.requested_outputs,
                                    self.required_outputs, self.hint)
                self.plan = plan  # before allocating, so a failure below frees what was allocated
                self._allocate(plan)
                self._set_batch(1)
        except BaseException:
            self.deactivate()
            raise
        log.debug("tensorrt runner: %d engines, max batch %d, inputs %s, outputs %s", len(self._loaded),
                  self.plan.max_batch, self.plan.inputs, self.plan.outputs)

    def _deserialise(self, trt, f: EngineFile) -> _Loaded:
        path = Path(f.path)
        if f.dla_core is not None:
            self._runtime.DLA_core = int(f.dla_core)  # must be set before deserialising a DLA engine
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise EngineError(_with_hint(f"{path}: TensorRT could not deserialise the engine "
                                         f"({take_trt_errors()})", self.hint))
        context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"{path}: cannot create an execution context (out of GPU memory?)")
        return _Loaded(read_engine_io(trt, engine, f.name, where=str(path)), engine, context)

    def _allocate(self, plan: BufferPlan) -> None:
        cuda = self._cuda
        for t in plan.tensors.values():
            t.device = cuda.mem_alloc(max(int(np.prod(t.max_shape)) * t.dtype.itemsize, 1))
            if t.on_host:
                t.host = cuda.pagelocked_empty(t.max_shape, t.dtype)
        for e in self._loaded:
            for t in e.io.tensors:
                # Producer output and consumer input get the same address: features stay on the device.
                if not e.context.set_tensor_address(t.name, int(plan.tensors[t.name].device)):
                    raise EngineError(f"engine '{e.io.name}': cannot bind tensor '{t.name}' "
                                      f"({take_trt_errors()})")

    def _set_batch(self, batch: int) -> None:
        for e in self._loaded:
            for name, shape in self.plan.dynamic_inputs.get(e.io.name, []):
                if not e.context.set_input_shape(name, (batch, *shape[1:])):
                    raise InputShapeError(f"engine '{e.io.name}' rejects batch {batch} for input '{name}' "
                                          f"({take_trt_errors()})")
        self._batch = batch

    def deactivate(self) -> None:
        """Free the buffers, contexts, engines, runtime and stream; release the device's primary context."""
        if self._cuda_ctx is None:
            return
        with self._current():
            if self.plan is not None:
                for t in self.plan.tensors.values():
                    if t.device is not None:
                        t.device.free()
                    t.device = None
                    t.host = None  # pinned memory is released while the context is current
            for e in self._loaded:  # contexts before engines before runtime (reference order)
                e.context = None
            for e in self._loaded:
                e.engine = None
            self._loaded = []
            self._runtime = None
            self._stream = None
        self._cuda_ctx.detach()
        self._cuda_ctx = None
        self.plan = None
        self._batch = 0

    def __enter__(self) -> TensorRTRunner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @contextlib.contextmanager
    def _current(self):
        """Make the device's primary context current in *this* thread."""
        self._cuda_ctx.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    # -- inference ---------------------------------------------------------------------------
    def _require_active(self) -> BufferPlan:
        if self.plan is None:
            raise BackendError("TensorRT runner not active; use it as a context manager or call activate()")
        return self.plan

    @property
    def max_batch(self) -> int:
        return self._require_active().max_batch

    @property
    def input_names(self) -> list[str]:
        return list(self._require_active().inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._require_active().outputs)

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Host arrays in (every name in ``input_names``), host copies out (``output_names``, own dtypes)."""
        plan = self._require_active()
        batch = feed_batch(plan, feeds)
        cuda = self._cuda
        with self._lock, self._current():
            if batch != self._batch:
                self._set_batch(batch)
            for name in plan.inputs:
                t = plan.tensors[name]
                view = t.host[:batch]
                np.copyto(view, feeds[name], casting="same_kind")
                cuda.memcpy_htod_async(t.device, view, self._stream)
            for e in self._loaded:
                if not e.context.execute_async_v3(stream_handle=self._stream.handle):
                    raise BackendError(f"engine '{e.io.name}' failed to enqueue ({take_trt_errors()})")
            for name in plan.outputs:
                t = plan.tensors[name]
                cuda.memcpy_dtoh_async(t.host[:batch], t.device, self._stream)
            self._stream.synchronize()
            # Copies: the pinned buffers are reused by the next call.
            return {name: np.array(plan.tensors[name].host[:batch]) for name in plan.outputs}

    def time_engines(self, runs: int = 200, warmup: int = 20) -> dict[str, list[float]]:
        """Per-engine GPU time in ms (CUDA events around each ``execute_async_v3``) on the current bindings.

        Run ``infer`` once first so the buffers hold real data. For benchmarks, not for the line.
        """
        self._require_active()
        cuda = self._cuda
        times: dict[str, list[float]] = {e.io.name: [] for e in self._loaded}
        with self._lock, self._current():
            start, end = cuda.Event(), cuda.Event()
            for i in range(warmup + runs):
                for e in self._loaded:
                    start.record(self._stream)
                    e.context.execute_async_v3(stream_handle=self._stream.handle)
                    end.record(self._stream)
                    end.synchronize()
                    if i >= warmup:
                        times[e.io.name].append(start.time_till(end))
        return times


# --------------------------------------------------------------------------------------------
# TensorRT logger (one per process: TensorRT treats the logger as a singleton)
# --------------------------------------------------------------------------------------------

_LOGGER = None
_recent_errors: list[str] = []
_errors_lock = threading.Lock()


def trt_logger(trt):
    """The process's trt.ILogger: forwards to ``logging`` and remembers the last errors for our messages."""
    global _LOGGER
    if _LOGGER is None:

        class _Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                sev = trt.ILogger.Severity
                out = logging.getLogger("tensorrt")
                if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                    with _errors_lock:
                        _recent_errors.append(str(msg))
                        del _recent_errors[:-20]
                    out.error("%s", msg)
                elif severity == sev.WARNING:
                    out.warning("%s", msg)
                elif severity == sev.INFO:
                    out.info("%s", msg)
                else:
                    out.debug("%s", msg)

        _LOGGER = _Logger()
    return _LOGGER


def take_trt_errors(clear: bool = True) -> str:
    """The TensorRT error messages logged since the last call, joined on one line."""
    with _errors_lock:
        text = " | ".join(m.replace("\n", " ") for m in _recent_errors) or "no TensorRT error message"
        if clear:
            _recent_errors.clear()
    return text
