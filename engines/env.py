"""What this machine offers for building and checking engines: TensorRT, pycuda, a CUDA device, ONNX Runtime.

The device part of the probe lives in ``edge_inspect.backends.trt_probe`` (the runtime needs it to refuse
foreign engines and must not import this package); this module adds what only the converter and the
GPU check care about, and turns "something is missing" into one clear line.

``python -m engines.env`` prints the report and exits 0 when engines can be built here, 3 otherwise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass

from edge_inspect.backends.trt_probe import TrtEnvironment, probe_environment


@dataclass(frozen=True)
class BuildEnvironment:
    device: TrtEnvironment
    onnxruntime_version: str | None
    onnxruntime_providers: tuple[str, ...]
    nvidia_smi: str | None  # first line of `nvidia-smi -L`, None when absent (Jetson has no nvidia-smi)

    @property
    def ok(self) -> bool:
        return self.device.ok and self.onnxruntime_version is not None

    @property
    def reason(self) -> str:
        parts = list(self.device.missing)
        if self.onnxruntime_version is None:
            parts.append("the Python module 'onnxruntime' is not importable (needed to verify engines); "
                         "install it with: pip install 'edge-inspect[cpu]'")
        return "; ".join(parts) if parts else self.device.reason


def probe(refresh: bool = False) -> BuildEnvironment:
    """Probe TensorRT / pycuda / CUDA device (cached per process) plus ONNX Runtime and nvidia-smi."""
    device = probe_environment(refresh=refresh)
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, tuple(ort.get_available_providers())
    except Exception:  # noqa: BLE001 - ImportError or a broken install (missing library, ABI): both "cannot verify"
        ort_version, providers = None, ()
    return BuildEnvironment(device, ort_version, providers, _nvidia_smi())


def _nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[0] if out.returncode == 0 and lines else None


def require_build_environment() -> BuildEnvironment:
    """The environment, or DependencyError / EngineError with one line saying everything that is missing."""
    env = probe()
    if not env.device.ok:
        env.device.raise_if_missing("edge-inspect build")
    if env.onnxruntime_version is None:
        from edge_inspect.errors import DependencyError

        raise DependencyError(f"edge-inspect build: {env.reason}")
    return env


def describe(env: BuildEnvironment) -> str:
    """Multi-line human report (for scripts/gpu-check.sh)."""
    d = env.device
    rows = [
        ("nvidia-smi", env.nvidia_smi or "absent (normal on Jetson)"),
        ("tensorrt", d.tensorrt_version or "MISSING"),
        ("pycuda", d.pycuda_version or "MISSING"),
        ("CUDA device", f"{d.gpu_name} (compute capability {d.compute_capability})" if d.gpu_name else "MISSING"),
        ("onnxruntime", f"{env.onnxruntime_version} providers={','.join(env.onnxruntime_providers)}"
         if env.onnxruntime_version else "MISSING"),
    ]
    text = "\n".join(f"  {k:<12} {v}" for k, v in rows)
    status = "OK: engines can be built here" if env.ok else f"MISSING: {env.reason}"
    return f"{text}\n{status}"


def main() -> int:
    env = probe()
    print(describe(env))
    return 0 if env.ok else 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
