"""Is TensorRT usable here, and if not, why: the environment probe and the engine refusal rules.

``probe_environment`` says what the machine offers (tensorrt, pycuda, a CUDA device). The refusal
rules (``engine_problems``, ``usable``, ``check_runnable``) compare the engines recorded in a manifest
with that environment, so a stale or foreign engine is never loaded: no engine recorded, file missing,
ONNX changed since the build, other TensorRT version, other GPU, file sha256 not as recorded.

The rules are pure functions of (model folder, manifest, environment): pass a fabricated
``TrtEnvironment`` to test them without TensorRT. Importing this module imports neither tensorrt nor
pycuda; ``probe_environment`` imports them on first use.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import DependencyError, EngineError
from ..manifest import EngineRecord, Manifest, sha256_file

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
        return (f"TensorRT {self.tensorrt_version} on GPU '{self.gpu_name}' "
                f"(compute capability {self.compute_capability})")

    def raise_if_missing(self, feature: str) -> None:
        """Raise DependencyError (a package is missing) or EngineError (no CUDA device), naming what."""
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
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError (no libnvinfer) or a broken wheel's own error
        missing.append(f"the Python module 'tensorrt' is not importable ({first_line(exc)}); "
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
        except Exception as exc:  # noqa: BLE001 - pycuda raises its own error types when there is no driver/device
            missing.append(f"no CUDA device or driver ({first_line(exc)})")
    except Exception as exc:  # noqa: BLE001 - a pycuda built for another CUDA fails in many ways: a reason, not a crash
        missing.append(f"the Python module 'pycuda' is not importable ({first_line(exc)}); "
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
        name = props.name
        name = name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name)
        return name, f"{props.major}.{props.minor}"
    except Exception:  # noqa: BLE001 - no cuda-python, no driver, another bindings layout: nothing more to say
        return None, None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (its type name when it has none)."""
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
            problems.append(f"{path}: engine was built from another version of {g.file} (the ONNX graph "
                            f"changed since the build); {hint}")
        elif (rec.tensorrt_version, rec.gpu_name, rec.compute_capability) != (
            env.tensorrt_version, env.gpu_name, env.compute_capability
        ):
            problems.append(
                f"{path}: engine built for GPU '{rec.gpu_name}' (compute {rec.compute_capability}) / "
                f"TensorRT {rec.tensorrt_version}, but this machine has GPU '{env.gpu_name}' (compute "
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


def check_runnable(model_dir, manifest: Manifest, feature: str = "the TensorRT backend",
                   env: TrtEnvironment | None = None) -> TrtEnvironment:
    """The environment, or DependencyError / EngineError with the first reason the engines cannot run here.

    Touches no device beyond the (cached) probe: call it before loading anything.
    """
    env = env or probe_environment()
    env.raise_if_missing(feature)
    problems = engine_problems(model_dir, manifest, env)
    if problems:
        raise EngineError(problems[0])
    return env
