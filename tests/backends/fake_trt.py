"""Stand-ins for ``tensorrt`` and ``pycuda.driver``, so the TensorRT runner's wiring runs without a GPU.

A fake "engine file" is JSON: ``{"onnx": PATH, "max_batch": N}`` (plus optional ``"offset"``, added to
every output, to fake an engine that is numerically wrong). Deserialising it gives an engine whose
named tensors are the ONNX graph's (symbolic axes → -1, optimisation profile 1..N on the batch) and
whose execution context runs the graph with ONNX Runtime, reading its inputs from and writing its
outputs to fake device memory *by address*, exactly where ``set_tensor_address`` bound them. So a
runner that binds, copies or sizes a buffer wrongly gives wrong numbers or an error here too.

Only the calls the runner makes are implemented (TensorRT 10 named-tensor API; pycuda's driver).
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_inspect.backends import tensorrt_runner, trt_probe
from edge_inspect.backends.trt_probe import TrtEnvironment

FAKE_ENV = TrtEnvironment(tensorrt_version="10.3.0-fake", pycuda_version="fake", gpu_name="Fake GPU",
                          compute_capability="8.7")


@dataclass
class FakeDevice:
    """What the fakes did, for assertions."""

    memory: dict[int, np.ndarray] = field(default_factory=dict)  # address -> bytes
    pinned: int = 0  # pagelocked_empty calls
    context_stack: list = field(default_factory=list)
    primary_contexts: list = field(default_factory=list)
    deserialised: list[tuple[str, int]] = field(default_factory=list)  # (onnx file name, Runtime.DLA_core)
    input_shapes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # set_input_shape calls
    executions: list[tuple[str, int]] = field(default_factory=list)  # (onnx file name, stream handle)


def engine_blob(onnx_path: str | Path, max_batch: int = 1, offset: float = 0.0) -> bytes:
    spec = {"onnx": str(Path(onnx_path).resolve()), "max_batch": max_batch, "offset": offset}
    return json.dumps(spec).encode()


def _make_trt(dev: FakeDevice) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = FAKE_ENV.tensorrt_version

    class TensorIOMode:
        INPUT = "INPUT"
        OUTPUT = "OUTPUT"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses: dict[str, int] = {}
            self.shapes = {n: s for n, s in engine.shapes.items() if engine.modes[n] == "INPUT"}

        def set_tensor_address(self, name, address):
            if name not in self.engine.shapes:
                return False
            self.addresses[name] = int(address)
            return True

        def set_input_shape(self, name, shape):
            dev.input_shapes.append((name, tuple(shape)))
            if not 1 <= shape[0] <= self.engine.max_batch:
                return False
            self.shapes[name] = tuple(shape)
            return True

        def execute_async_v3(self, stream_handle):
            e = self.engine
            dev.executions.append((e.onnx.name, stream_handle))
            feeds = {}
            for name, shape in self.shapes.items():
                if any(d < 0 for d in shape) or name not in self.addresses:
                    return False  # shape not set or tensor not bound: TensorRT refuses to enqueue
                count = int(np.prod(shape))
                raw = dev.memory[self.addresses[name]]
                feeds[name] = raw.view(e.dtypes[name])[:count].reshape(shape).copy()
            outs = e.session.run(None, feeds)
            for o, value in zip(e.session.get_outputs(), outs, strict=True):
                raw = dev.memory[self.addresses[o.name]]
                data = (np.asarray(value, e.dtypes[o.name]) + e.offset).astype(e.dtypes[o.name]).reshape(-1)
                assert data.nbytes <= raw.nbytes, f"output '{o.name}' overflows its device buffer"
                raw[:data.nbytes] = data.view(np.uint8)
            return True

    class Engine:
        def __init__(self, spec: dict):
            import onnxruntime as ort

            self.onnx = Path(spec["onnx"])
            self.max_batch = int(spec["max_batch"])
            self.offset = float(spec.get("offset", 0.0))
            self.session = ort.InferenceSession(str(self.onnx), providers=["CPUExecutionProvider"])
            self.names, self.modes, self.shapes, self.dtypes = [], {}, {}, {}
            for mode, items in (("INPUT", self.session.get_inputs()), ("OUTPUT", self.session.get_outputs())):
                for t in items:
                    self.names.append(t.name)
                    self.modes[t.name] = mode
                    self.shapes[t.name] = tuple(d if isinstance(d, int) else -1 for d in t.shape)
                    self.dtypes[t.name] = np.dtype(np.float32)

        @property
        def num_io_tensors(self):
            return len(self.names)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_mode(self, name):
            return self.modes[name]

        def get_tensor_shape(self, name):
            return list(self.shapes[name])

        def get_tensor_dtype(self, name):
            return self.dtypes[name]

        def get_tensor_profile_shape(self, name, profile_index):
            assert profile_index == 0
            rest = self.shapes[name][1:]
            return [(1, *rest), (self.max_batch, *rest), (self.max_batch, *rest)]

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, blob):
            try:
                spec = json.loads(bytes(blob))
            except ValueError:
                self.logger.log(ILogger.Severity.ERROR, "fake: the engine plan file is corrupt")
                return None
            dev.deserialised.append((Path(spec["onnx"]).name, self.DLA_core))
            return Engine(spec)

    trt.TensorIOMode = TensorIOMode
    trt.ILogger = ILogger
    trt.Runtime = Runtime
    trt.nptype = lambda dtype: dtype  # the fake engines report numpy dtypes already
    return trt


def _make_cuda(dev: FakeDevice) -> types.ModuleType:
    cuda = types.ModuleType("pycuda.driver")
    addresses = itertools.count(0x1000, 0x1000)

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.address = next(addresses)
            dev.memory[self.address] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.address

        def free(self):
            del dev.memory[self.address]

    class PrimaryContext:
        def __init__(self):
            self.detached = False
            dev.primary_contexts.append(self)

        def push(self):
            assert not self.detached
            dev.context_stack.append(self)

        def detach(self):
            assert not dev.context_stack, "detached while still current"
            self.detached = True

    class Context:
        @staticmethod
        def pop():
            dev.context_stack.pop()

    class Device:
        def __init__(self, index):
            self.index = index

        @staticmethod
        def count():
            return 1

        def name(self):
            return FAKE_ENV.gpu_name

        def compute_capability(self):
            return 8, 7

        def retain_primary_context(self):
            return PrimaryContext()

    class Stream:
        handle = 0xCAFE

        def synchronize(self):
            pass

    class Event:
        def record(self, stream):
            pass

        def synchronize(self):
            pass

        def time_till(self, other):
            return 0.25

    def _current():
        assert dev.context_stack, "CUDA call without a current context"

    def mem_alloc(nbytes):
        _current()
        return DeviceAllocation(nbytes)

    def pagelocked_empty(shape, dtype):
        _current()
        dev.pinned += 1
        return np.empty(shape, dtype)

    def memcpy_htod_async(dest, src, stream):
        _current()
        data = np.ascontiguousarray(src).reshape(-1).view(np.uint8)
        dev.memory[int(dest)][:data.nbytes] = data

    def memcpy_dtoh_async(dest, src, stream):
        _current()
        assert dest.flags.c_contiguous
        dest[...] = dev.memory[int(src)][:dest.nbytes].view(dest.dtype).reshape(dest.shape)

    cuda.init = lambda: None
    cuda.Device, cuda.Context, cuda.Stream, cuda.Event = Device, Context, Stream, Event
    cuda.mem_alloc, cuda.pagelocked_empty = mem_alloc, pagelocked_empty
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    return cuda


def install(monkeypatch) -> FakeDevice:
    """Put the fakes in ``sys.modules`` and make the probe report FAKE_ENV (undone by monkeypatch)."""
    dev = FakeDevice()
    cuda = _make_cuda(dev)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    pycuda.VERSION_TEXT = FAKE_ENV.pycuda_version
    monkeypatch.setitem(sys.modules, "tensorrt", _make_trt(dev))
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(trt_probe, "probe_environment", lambda refresh=False: FAKE_ENV)
    monkeypatch.setattr(tensorrt_runner, "_LOGGER", None)  # the process logger must not stay a fake one
    return dev


def record_fake_engines(model_dir: str | Path, max_batch: int = 1, offsets: dict[str, float] | None = None,
                        dla_core: int | None = None):
    """Write a fake engine per graph of ``model_dir``; record them, built 'on' FAKE_ENV, in its manifest."""
    from edge_inspect.manifest import EngineRecord, load_manifest, save_manifest, sha256_file

    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    records = []
    for g in manifest.graphs:
        rel = f"engines/{g.name}.fp32.fake.engine"
        path = model_dir / rel
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(engine_blob(model_dir / g.file, max_batch, (offsets or {}).get(g.name, 0.0)))
        records.append(EngineRecord(
            graph=g.name, file=rel, sha256=sha256_file(path), onnx_sha256=g.sha256, precision="fp32",
            tensorrt_version=FAKE_ENV.tensorrt_version, gpu_name=FAKE_ENV.gpu_name,
            compute_capability=FAKE_ENV.compute_capability, dla_core=dla_core, inputs=g.inputs,
            outputs=g.outputs, built_at="2025-01-01T00:00:00+00:00", build_seconds=1.0,
        ))
    manifest.engines = records
    save_manifest(manifest, model_dir)
    return manifest
