"""The model folder contract between trainer and runtime: ``manifest.json`` beside the ONNX graphs.

A model folder holds one ONNX graph per network and this manifest. The runtime needs nothing else.
Graph wiring uses *global tensor names*: every graph input is named after the tensor that feeds
it (``image`` or an output of an earlier graph), so running the graphs in listed order with one
dictionary of named tensors reproduces the model. The final outputs are ``score`` (B,) and
``anomaly_map`` (B, 1, H, W); thresholds live here, never inside a graph, so they can be changed
without re-export.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ManifestError

# 2: Calibration.map_norm_span (heat maps keep the map's own units when the image score is fused).
# Version-1 manifests still load; their heat maps use the score span, as they always did.
SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class InputSpec(_Strict):
    """How a camera image becomes the network input tensor ``image`` (B, 3, H, W) float32."""

    name: str = "image"
    height: int = 256
    width: int = 256
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = 1.0 / 255.0  # applied first: pixel * scale
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    resize: Literal["bilinear", "area"] = "bilinear"  # whole image to (height, width), aspect not kept
    dtype: Literal["float32"] = "float32"


class TensorSpec(_Strict):
    name: str
    shape: list[int | str]  # "batch" marks the dynamic batch axis
    dtype: str = "float32"


class GraphSpec(_Strict):
    """One ONNX graph of the model, run in manifest order."""

    name: str  # teacher1, student1, teacher2, student2, discriminator
    file: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    params: int | None = None
    gmacs: float | None = None  # per single 256² image (or the manifest input size)


class ScoreStats(_Strict):
    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = Field(default_factory=dict)  # "0.5", "0.99", ...


class Calibration(_Strict):
    """Thresholds and raw-score statistics from held-out images at export time."""

    image_threshold: float  # the default threshold in force (quantile of good scores × margin)
    image_threshold_method: str
    image_threshold_f1: float | None = None  # F1-optimal, when labelled defects were given
    pixel_threshold: float  # for defect regions on the anomaly map
    good_scores: ScoreStats
    defect_scores: ScoreStats | None = None
    # score normalisation: normalised = clip((score - threshold) / (norm_max - norm_min) + 0.5, 0, 1)
    norm_min: float
    norm_max: float
    # heat maps: clip((map - pixel_threshold) / map_norm_span + 0.5, 0, 1); None: the score span above
    map_norm_span: float | None = None


class EngineRecord(_Strict):
    """A TensorRT engine built on the target device (written by ``edge-inspect build``)."""

    graph: str
    file: str
    sha256: str
    onnx_sha256: str
    precision: Literal["fp16", "fp32", "int8"]
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    dla_core: int | None = None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    built_at: str
    build_seconds: float
    tolerance: dict[str, float] = Field(default_factory=dict)  # atol/rtol used in verification
    max_abs_error: float | None = None


class Provenance(_Strict):
    code_version: str
    created_at: str
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None
    torch_version: str | None = None
    onnx_opset: int | None = None
    run_dir: str | None = None  # the training run exported (for eval --backend torch on the workstation)
    notes: str | None = None


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    model_id: str
    model_version: str = "1"
    profile: str
    input: InputSpec
    graphs: list[GraphSpec]
    score_output: str = "score"
    map_output: str = "anomaly_map"
    extra_outputs: list[str] = Field(default_factory=list)  # e.g. st_map, disc_prob for diagnostics
    calibration: Calibration
    provenance: Provenance
    engines: list[EngineRecord] = Field(default_factory=list)

    def graph(self, name: str) -> GraphSpec:
        for g in self.graphs:
            if g.name == name:
                return g
        raise ManifestError(f"manifest has no graph named '{name}'")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_manifest(model_dir: str | Path, verify_files: bool = True) -> Manifest:
    """Read and validate ``model_dir/manifest.json``; optionally check every graph file and hash.

    Raises ManifestError (naming the file) for a missing/malformed manifest or a newer schema,
    and ModelError for a missing or modified graph file.
    """
    from .errors import ModelError

    path = Path(model_dir) / MANIFEST_NAME
    if not Path(model_dir).is_dir():
        raise ModelError(f"model folder not found: {model_dir}")
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest.json; export a model with 'edge-inspect export'")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: expected a JSON object")
    version = raw.get("schema_version")
    if not isinstance(version, int):
        raise ManifestError(f"{path}: schema_version missing or not an integer")
    if version > SCHEMA_VERSION:
        raise ManifestError(
            f"{path}: manifest schema {version} is newer than this runtime supports ({SCHEMA_VERSION}); "
            "upgrade edge-inspect or re-export the model with this version"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{path}: invalid field '{loc}': {first['msg']}") from exc
    if verify_files:
        for g in manifest.graphs:
            gp = Path(model_dir) / g.file
            if not gp.is_file():
                raise ModelError(f"{gp}: graph '{g.name}' listed in the manifest is missing")
            if sha256_file(gp) != g.sha256:
                raise ModelError(
                    f"{gp}: sha256 does not match the manifest (file replaced or corrupted); re-export the model"
                )
    return manifest


def save_manifest(manifest: Manifest, model_dir: str | Path) -> Path:
    """Write the manifest atomically (temp file + rename) so a reader never sees half a file."""
    path = Path(model_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    tmp.replace(path)
    return path
