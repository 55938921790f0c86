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
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ManifestError

# 2: Calibration.map_norm_span (heat maps keep the map's own units when the image score is fused).
# 3: Calibration.threshold_model (the image threshold as a target false-reject rate, with its uncertainty),
#    score_lower_bound / map_lower_bound (the range a threshold must lie in) and score_fusion (how the
#    image score splits into map and image-level parts).
# 4: InputSpec.fit / pad_value (aspect-preserving letterbox) and InputSpec.tiles (overlapping tiles);
#    GraphSpec.precision ("fp32" | "int8-qdq") and Manifest.quantization (how an INT8 model was calibrated).
# Older manifests still load; they have none of the newer fields (all optional, defaults as before).
SCHEMA_VERSION = 4
MANIFEST_NAME = "manifest.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TileSpec(_Strict):
    """Tiling (schema 4): the image at its own resolution is cut into overlapping tiles of the model input's
    size, run as one batch, and the tile maps are stitched back (edge_inspect.geometry)."""

    overlap: float = Field(0.25, ge=0)  # < 1: fraction of the tile side; >= 1: pixels


class InputSpec(_Strict):
    """How a camera image becomes the network input tensor ``image`` (B, 3, H, W) float32.

    Placement (edge_inspect.geometry): ``fit`` "stretch" resizes the whole image to (height, width), aspect
    not kept (schema 1-3); "letterbox" resizes it by one factor to fit and pads the rest with ``pad_value``
    (0-255, every channel, before normalisation). With ``tiles`` the image is cut into tiles instead.
    """

    name: str = "image"
    height: int = 256
    width: int = 256
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW"] = "NCHW"
    scale: float = 1.0 / 255.0  # applied first: pixel * scale
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225])
    resize: Literal["bilinear", "area"] = "bilinear"  # interpolation of the resize to the model input
    dtype: Literal["float32"] = "float32"
    # schema 4 (optional: older manifests stretch, untiled)
    fit: Literal["stretch", "letterbox"] = "stretch"
    pad_value: int = Field(0, ge=0, le=255)
    tiles: TileSpec | None = None

    @property
    def hw(self) -> tuple[int, int]:
        return (self.height, self.width)


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
    # schema 4: "fp32", or "int8-qdq" (explicit QuantizeLinear/DequantizeLinear: what ONNX Runtime runs on the
    # CPU and TensorRT's strongly typed INT8 build takes). A string, not a fixed choice, so a runtime meeting a
    # precision it does not know can refuse it with its own message (backends.onnxrt.check_precision).
    precision: str = "fp32"

    @field_validator("file")
    @classmethod
    def _inside_folder(cls, value: str) -> str:
        p = Path(value)
        if p.is_absolute() or ".." in p.parts or not value.strip():
            raise ValueError(f"graph file {value!r} must be a plain name inside the model folder")
        return value


def _finite(value: float | None, what: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return value


class ScoreStats(_Strict):
    count: int = Field(ge=0)
    mean: float
    std: float
    min: float
    max: float
    quantiles: dict[str, float] = Field(default_factory=dict)  # "0.5", "0.99", ...

    @model_validator(mode="after")
    def _all_finite(self) -> ScoreStats:
        for name in ("mean", "std", "min", "max"):
            _finite(getattr(self, name), name)
        for q, v in self.quantiles.items():
            _finite(v, f"quantile {q}")
        return self


class ThresholdModel(_Strict):
    """The fitted distribution of good-part image scores behind the image threshold (schema 3).

    Raw score x → z = (x − center) / scale → y = Yeo-Johnson(z, yj_lambda) (1.0: no transform);
    y of good parts is taken as normal(mean, std) with both estimated from ``n`` scores, so a new good
    part's y follows a Student t with n − 1 degrees of freedom scaled by std·√(1 + 1/n) (the predictive
    distribution). The threshold is that distribution's (1 − target_frr) quantile.
    See edge_inspect.threshold_model.
    """

    method: Literal["t-predictive"] = "t-predictive"
    n: int = Field(ge=2)
    center: float
    scale: float = Field(gt=0)
    yj_lambda: float = Field(ge=0, le=2)
    mean: float
    std: float = Field(gt=0)
    target_frr: float = Field(gt=0, lt=0.5)  # the false-reject rate the threshold was set for
    expected_frr: float = Field(ge=0, le=1)  # the model's false-reject rate at image_threshold
    confidence: float = Field(gt=0, lt=1)  # level of the two intervals below
    frr_interval: tuple[float, float]  # false-reject rate at image_threshold, bootstrap interval
    threshold_interval: tuple[float, float]  # threshold for target_frr, bootstrap interval (score units)
    source: str  # what the good scores were: "held-out training goods, cross-fitted", "site teach ..."
    calibrated_at: str

    @model_validator(mode="after")
    def _all_finite(self) -> ThresholdModel:
        for name in ("center", "scale", "yj_lambda", "mean", "std", "target_frr", "expected_frr"):
            _finite(getattr(self, name), name)
        for name in ("frr_interval", "threshold_interval"):
            lo, hi = getattr(self, name)
            _finite(lo, name)
            _finite(hi, name)
            if lo > hi:
                raise ValueError(f"{name} must be [low, high], got [{lo}, {hi}]")
        return self


class ScoreFusion(_Strict):
    """How the image score is built when it is fused (schema 3): score = local + weight·(g − mean)/std,
    where g is the graph output ``global_score`` (image-level Gaussian distance) and local the z-scored
    maximum of the anomaly map. Lets eval and predict say how much of a score each part contributed."""

    global_output: str = "global_score"
    global_weight: float = Field(ge=0)
    global_mean: float
    global_std: float = Field(gt=0)

    @model_validator(mode="after")
    def _all_finite(self) -> ScoreFusion:
        for name in ("global_weight", "global_mean", "global_std"):
            _finite(getattr(self, name), name)
        return self

    def global_part(self, global_score: float) -> float:
        """The image-level Gaussian's share of the image score."""
        return self.global_weight * (global_score - self.global_mean) / self.global_std


class Calibration(_Strict):
    """Thresholds and raw-score statistics from held-out images (at export, or ``edge-inspect calibrate``).

    Every number that decides a verdict must be finite; thresholds must not lie below the score's
    (or map's) lower bound, where every part would be NG. Violations fail validation at load.
    """

    image_threshold: float  # the threshold in force by default; parts are NG when score > threshold
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
    # schema 3 (all optional so older manifests load)
    threshold_model: ThresholdModel | None = None
    score_lower_bound: float | None = None  # the least score the graphs can give (0 for a map maximum); None: unbounded
    map_lower_bound: float | None = None  # the same for anomaly-map pixels
    # share of the calibration defects passed at image_threshold
    escape_rate: float | None = Field(default=None, ge=0, le=1)
    escape_interval: tuple[float, float] | None = None  # its Wilson interval at threshold_model.confidence (or 0.9)
    defects_source: str | None = None

    @model_validator(mode="after")
    def _deciding_numbers(self) -> Calibration:
        for name in ("image_threshold", "image_threshold_f1", "pixel_threshold", "norm_min", "norm_max",
                     "map_norm_span", "score_lower_bound", "map_lower_bound"):
            _finite(getattr(self, name), name)
        if self.norm_max <= self.norm_min:
            raise ValueError(f"norm_max ({self.norm_max}) must be greater than norm_min ({self.norm_min})")
        if self.map_norm_span is not None and self.map_norm_span <= 0:
            raise ValueError(f"map_norm_span must be > 0, got {self.map_norm_span}")
        check_threshold(self.image_threshold, self.score_lower_bound, "image_threshold")
        check_threshold(self.pixel_threshold, self.map_lower_bound, "pixel_threshold")
        return self


def check_threshold(value: float, lower_bound: float | None, what: str) -> float:
    """``value`` if it is a usable threshold: a finite number not below ``lower_bound`` (the least score the
    model gives; below it every part would be NG). Raises ValueError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if lower_bound is not None and value < lower_bound:
        raise ValueError(f"{what} {value:g} is below {lower_bound:g}, the least value the model outputs "
                         "(everything would be flagged)")
    return float(value)


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


class Quantization(_Strict):
    """How an INT8 (Q/DQ) model folder was made from a float one (schema 4; ``edge-inspect quantize``)."""

    method: str  # "onnxruntime quantize_static, QDQ"
    weights: str  # "int8 symmetric, per channel"
    activations: str  # "uint8 asymmetric, per tensor"
    calibration_method: str  # "MinMax", "Percentile 99.999", ...
    calibration_source: str  # the good images the activation ranges came from
    calibration_count: int = Field(ge=1)
    float_model: str  # model_id and sha256 of the float graphs quantized
    kept_float: list[str] = Field(default_factory=list)  # nodes / op types left in float, and why
    onnxruntime_version: str
    thresholds: str  # how the thresholds were set on INT8 scores
    quantized_at: str
    # the map head's good-image statistics refitted on the INT8 graphs (edge_inspect.head_refit); None: kept
    head_refit: str | None = None


class Provenance(_Strict):
    code_version: str
    created_at: str
    training_config: dict[str, Any] = Field(default_factory=dict)
    data_fingerprint: str | None = None
    torch_version: str | None = None
    onnx_opset: int | None = None
    run_dir: str | None = None  # the training run exported (for eval --backend torch on the workstation)
    notes: str | None = None
    # schema 4: how the head settings were chosen on validation, with its figures (trainer.head_select)
    validation: dict[str, Any] | None = None


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
    score_fusion: ScoreFusion | None = None  # schema 3: set when the image score is fused with global_score
    provenance: Provenance
    engines: list[EngineRecord] = Field(default_factory=list)
    quantization: Quantization | None = None  # schema 4: set for an INT8 model folder

    @property
    def precision(self) -> str:
        """The model's precision: "fp32", "int8-qdq", or "mixed (...)" when its graphs differ."""
        kinds = sorted({g.precision for g in self.graphs})
        if len(kinds) == 1:
            return kinds[0]
        return "mixed (" + ", ".join(f"{g.name} {g.precision}" for g in self.graphs) + ")"

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
        msg = first["msg"].removeprefix("Value error, ")
        raise ManifestError(f"{path}: invalid field '{loc}': {msg}") from exc
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
    # allow_nan=False: a non-finite number never reaches disk (the validators refuse it on load anyway)
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path
