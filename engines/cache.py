"""Engine cache: keys, file names, verified-record side files and the TensorRT timing cache.

An engine is tied to its ONNX graph, the TensorRT version, the GPU (name and compute capability),
the precision, the DLA core and the build options. The cache key is the sha256 over all of them;
the engine file name carries the key, so

* nothing changed → same name, the file and its verified record exist → the build is skipped;
* the ONNX, TensorRT version, GPU, precision or an option changed → another name → rebuilt.

Beside every engine ``X.engine`` lies ``X.json``: its EngineRecord, written only after the engine
passed verification. Switching precision back and forth therefore reuses both builds.
The timing cache (tactic timings, per TensorRT version and GPU) lives in the same folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError

from edge_inspect.errors import ConfigError
from edge_inspect.manifest import EngineRecord, sha256_file

log = logging.getLogger(__name__)

ENGINE_DIR = "engines"
# Bump when the builder's policy changes what an engine contains (precision constraints, flags):
# every engine built by an older policy then gets a new key and is rebuilt.
BUILDER_REVISION = 1
PRECISIONS = ("fp16", "fp32", "int8")


@dataclass(frozen=True)
class BuildOptions:
    """What the user chose for a build. ``int8`` means explicit quantization only (Q/DQ in the ONNX)."""

    precision: str = "fp16"
    dla_core: int | None = None
    workspace_mb: int = 1024
    max_batch: int = 1
    precision_constraints: str = "obey"  # how firmly score/normalisation layers stay FP32: obey | prefer
    fp32_graphs: tuple[str, ...] = ()  # graphs built entirely in FP32 inside an fp16 build

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision '{self.precision}' is not one of {', '.join(PRECISIONS)}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core must be >= 0, got {self.dla_core}")
        if self.dla_core is not None and self.precision == "fp32":
            raise ConfigError("DLA runs FP16 or INT8 only; use --precision fp16 with --dla-core")
        if self.workspace_mb < 16:
            raise ConfigError(f"--workspace-mb must be >= 16, got {self.workspace_mb}")
        if self.max_batch < 1:
            raise ConfigError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.precision_constraints not in ("obey", "prefer"):
            raise ConfigError(f"precision constraints '{self.precision_constraints}' is not obey or prefer")


@dataclass(frozen=True)
class TargetDevice:
    """What an engine is tied to besides its ONNX graph and options."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str


def cache_key(onnx_sha256: str, target: TargetDevice, options: BuildOptions) -> str:
    """sha256 (hex) over everything that makes an engine different."""
    payload = {
        "onnx_sha256": onnx_sha256,
        "tensorrt_version": target.tensorrt_version,
        "gpu_name": target.gpu_name,
        "compute_capability": target.compute_capability,
        "options": asdict(options),
        "builder_revision": BUILDER_REVISION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_relpath(graph: str, precision: str, key: str) -> str:
    """Engine path relative to the model folder, e.g. ``engines/student1.fp16.3fa2c0d9e1b47a65.engine``."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", graph):
        raise ConfigError(f"graph name '{graph}' cannot be used in a file name")
    return f"{ENGINE_DIR}/{graph}.{precision}.{key[:16]}.engine"


def record_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "gpu"


def timing_cache_path(model_dir: str | Path, target: TargetDevice) -> Path:
    """Timing caches are only valid for one TensorRT version and GPU: one file per pair."""
    cc = target.compute_capability.replace(".", "")
    return Path(model_dir) / ENGINE_DIR / f"timing-trt{target.tensorrt_version}-{_slug(target.gpu_name)}-sm{cc}.cache"


def load_timing_cache(path: str | Path) -> bytes:
    """Serialized timing cache, or b"" (TensorRT then starts an empty one)."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def save_timing_cache(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), bytes(data))


def write_record(model_dir: str | Path, record: EngineRecord) -> Path:
    """Write the verified EngineRecord beside its engine file."""
    path = record_path(Path(model_dir) / record.file)
    _atomic_write(path, (json.dumps(record.model_dump(mode="json"), indent=2) + "\n").encode())
    return path


def cached_record(model_dir: str | Path, relpath: str) -> EngineRecord | None:
    """The verified record of a cached engine, or None when it must be (re)built.

    None when the engine or its record is missing, the record does not parse or names another file,
    was never verified, or the engine's sha256 differs from the record (replaced or truncated file).
    """
    engine = Path(model_dir) / relpath
    side = record_path(engine)
    if not engine.is_file() or not side.is_file():
        return None
    try:
        record = EngineRecord.model_validate_json(side.read_text())
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("%s: unreadable engine record, rebuilding (%s)", side, str(exc).splitlines()[0])
        return None
    if record.file != relpath or record.max_abs_error is None:
        return None
    if sha256_file(engine) != record.sha256:
        log.warning("%s: engine does not match its record (sha256), rebuilding", engine)
        return None
    return record


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
