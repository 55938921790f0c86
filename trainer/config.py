"""Training configuration: model shape (profiles) and the two-stage schedule. Carried inside every checkpoint.

Pydantic models, the runtime settings' idiom: choices are ``Literal``, ranges are field constraints, and
an unknown key or a bad value is a ConfigError of one line that names the key. ``to_dict`` /
``from_dict`` give and take the plain dict that checkpoints store; keys a run older than a setting
lacks take the setting's default.
"""

from __future__ import annotations

import difflib
import re
import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from edge_inspect.errors import ConfigError

# Must match trainer.backbones.BACKBONES (tests/trainer/test_backbones.py checks it).
Backbone = Literal["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "resnet18", "resnet50",
                   "wide_resnet50_2"]
_STRICT = ConfigDict(extra="forbid", validate_assignment=True)
# Keys older checkpoints carry that no longer mean anything; from_dict drops them.
_RETIRED = ("workers",)


class ModelConfig(BaseModel):
    model_config = _STRICT

    teacher1: Backbone = Field("efficientnet-lite0", description="teacher of pair 1 (student 1 is its architecture)")
    teacher2: Backbone = Field("efficientnet-lite2", description="teacher of pair 2 (student 2 reconstructs it)")
    teacher1_weights: str | None = Field(None, description="local ImageNet weights file for a ResNet teacher 1 "
                                         "(else the torch hub cache)")
    teacher2_weights: str | None = Field(None, description="local ImageNet weights file for a ResNet teacher 2")
    student2_widths: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=3, max_length=3)] = Field(
        default_factory=lambda: [128, 64, 32], description="student 2's decoder widths at strides 16/8/4")
    attention: bool = Field(True, description="attention gates from teacher 2 in student 2's decoder")
    disc_base: int = Field(16, ge=1, description="channels of the discriminator U-Net's first level")
    disc_depth: int = Field(3, ge=1, description="levels of the discriminator U-Net")
    use_pair2: bool = Field(True, description="use the second (reconstructing) pair in the maps")
    use_discriminator: bool = Field(True, description="train the discriminator (stage 2); off: ablation")
    map_sigma: float = Field(4.0, ge=0, description="Gaussian smoothing of the final map, input pixels (STPM: 4)")
    score_topk: int = Field(1, ge=1, description="image score from the map: 1 = its max, k > 1 = mean of top k pixels")
    disc_inputs: Literal["summed", "separate"] = Field(
        "summed", description="discriminator input: the M4/M8/M16 sums (paper) or both pairs' six maps")
    st_exponent: float = Field(1.0, ge=0, le=4, description="final map = st_map^e x disc_prob: 1 = paper's product, "
                               "0 = discriminator alone")
    global_weight: float = Field(0.0, ge=0, le=10, description="image score = z(map max) + w z(Mahalanobis distance "
                                 "of pooled teacher features); 0 = the map's max alone")
    region_weight: float = Field(0.0, ge=0, le=10, description="final map = z(RSTPM map) + w z(regional Gaussian map); "
                                 "0 = the RSTPM map alone")
    region_window: int = Field(9, ge=1, description="regional Gaussian window, in stride-16 cells (odd)")

    @field_validator("region_window")
    @classmethod
    def _odd_window(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("must be odd (the window is centred on its cell)")
        return v


class TrainConfig(BaseModel):
    model_config = ConfigDict(**_STRICT, protected_namespaces=())

    profile: Literal["edge", "paper"] = Field("edge", description="the profile these defaults came from")
    image_size: tuple[int, int] | None = Field(
        None, description="model input (height, width) in pixels, multiples of 32; 'HxW' or N for NxN; none: "
        "chosen from the training images' aspect ratio (trainer.input_shape)")
    fit: Literal["stretch", "letterbox"] | None = Field(
        None, description="image to model input: stretch (aspect not kept) or letterbox (aspect kept, padded); "
        "none: chosen from the training images with the input shape (trainer.input_shape)")
    tile_overlap: float | None = Field(None, ge=0, description="tile the image at its own resolution into "
                                       "overlapping model-input tiles (< 1: fraction of the tile, >= 1: pixels); "
                                       "none: no tiles")
    model: ModelConfig = Field(default_factory=ModelConfig)
    # stage 1: both students; teachers frozen. 50 + 80 epochs (edge): on magnetic_tile with an H100 this
    # trained in 4-6 min; 150 stage-1 epochs improved the student maps but not the final map (issue 3).
    epochs1: int = Field(50, ge=0, description="stage 1 epochs (both students; teachers frozen)")
    batch_size1: int = Field(16, ge=2, description="stage 1 batch size (BatchNorm needs 2)")
    optimizer1: Literal["adam", "sgd"] = Field("adam", description="stage 1 optimiser; sgd is STPM's recipe "
                                               "(lr 0.4, momentum 0.9) for ResNet students")
    lr1: float = Field(3e-3, gt=0, description="stage 1 learning rate, cosine-decayed")
    weight_decay1: float = Field(1e-5, ge=0, description="stage 1 weight decay")
    # stage 2: discriminator on pseudo-anomalies; everything else frozen
    epochs2: int = Field(80, ge=0, description="stage 2 epochs (discriminator on pseudo-anomalies)")
    batch_size2: int = Field(16, ge=2, description="stage 2 batch size")
    lr2: float = Field(1e-3, gt=0, description="stage 2 learning rate (x0.2 at 80 % and 90 % of the epochs)")
    pool_factor: float = Field(2.0, gt=0, description="pseudo-anomalies generated per training image (maps cached)")
    clean_fraction: float = Field(0.5, ge=0, le=1, description="share of pseudo-anomaly samples left clean")
    self_fraction: float = Field(0.0, ge=0, le=1, description="share of pseudo-anomalies textured with a crop of "
                                 "the same image")
    focal_gamma: float = Field(2.0, ge=0, description="focusing exponent of the discriminator's focal loss")
    textures_dir: str | None = Field(None, description="folder of texture images for pseudo-anomalies (e.g. DTD); "
                                     "none: built-in textures")
    line_fraction: float = Field(0.0, ge=0, le=1, description="share of pseudo-anomalies shaped as thin crack-like "
                                 "lines instead of Perlin blobs")
    # validation: held-out goods + pseudo-anomalies made on them (trainer.validation); no real defects
    val_every: int = Field(1, ge=0, description="validation figure every k epochs of each stage, into the history "
                           "(0 = off)")
    val_images: int = Field(48, ge=1, description="held-out goods in the per-epoch validation (each also gives "
                            "a pseudo-anomaly)")
    keep_best: bool = Field(False, description="keep each stage's epoch that is best on validation, not its last")
    head_selection: Literal["fixed", "auto"] = Field(
        "fixed", description="auto: export picks st_exponent, map_sigma and region_weight on validation "
        "(explicit --head values win; global_weight stays configured); fixed: the config's values")
    # data
    max_train_images: int | None = Field(None, ge=2, description="use at most this many good training images")
    holdout_fraction: float = Field(0.2, ge=0, lt=1, description="good images held out for the score statistics "
                                    "and the threshold (at least trainer.data.MIN_HOLDOUT)")
    augment: bool = Field(False, description="random horizontal flips in stage 1 (no teacher-feature cache)")
    seed: int = Field(0, ge=0, description="random seed")
    device: str = Field("auto", description="auto (cuda when available, else cpu), cpu, cuda, cuda:1, mps")

    @field_validator("image_size", mode="before")
    @classmethod
    def _height_width(cls, v: Any) -> Any:
        return parse_image_size(v) if v is not None else None

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("choose auto, cpu, cuda, cuda:N or mps")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrainConfig:
        """From a checkpoint's dict; keys it lacks (a run older than the setting) take their defaults."""
        d = {k: v for k, v in d.items() if k not in _RETIRED}
        try:
            return TrainConfig.model_validate(d)
        except ValidationError as exc:
            raise ConfigError(_one_line(exc)) from exc

    def override(self, overrides: dict[str, Any] | None) -> TrainConfig:
        """A validated copy with ``overrides`` applied (flat: keys of ModelConfig at top level too); None
        values are ignored."""
        model_over, top_over = {}, {}
        for k, v in (overrides or {}).items():
            if v is None:
                continue
            if k in ModelConfig.model_fields:
                model_over[k] = v
            elif k in TrainConfig.model_fields and k != "model":
                top_over[k] = v
            else:
                close = difflib.get_close_matches(k, setting_names(), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown training setting '{k}'{hint}; "
                                  "'edge-inspect train --list-settings' lists them")
        d = self.to_dict()
        d.update(top_over)
        d["model"] = {**d["model"], **model_over}
        return TrainConfig.from_dict(d)


STRIDE = 32  # the deepest teacher tap's stride: the input must divide into whole stride-32 cells


def parse_image_size(v: Any) -> tuple[int, int]:
    """(height, width) from N, "N", "HxW" or [H, W]; ValueError unless both are positive multiples of STRIDE."""
    if isinstance(v, str):
        parts = v.lower().replace("×", "x").split("x")
        try:
            v = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"expected HxW (e.g. 64x160) or N, got {v!r}") from None
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v]
    if not isinstance(v, (list, tuple)) or len(v) not in (1, 2) or not all(isinstance(p, int) for p in v):
        raise ValueError(f"expected HxW (e.g. 64x160) or N, got {v!r}")
    h, w = (v[0], v[0]) if len(v) == 1 else v
    if h < STRIDE or w < STRIDE or h % STRIDE or w % STRIDE:
        raise ValueError(f"height and width must be multiples of {STRIDE} (the teachers' stride-32 taps), "
                         f"got {h}x{w}")
    return int(h), int(w)


PROFILES: dict[str, TrainConfig] = {
    # Offline and Jetson-sized: two different EfficientNet-Lite teachers, slim decoder and U-Net.
    # Final map: the paper's product (st_exponent 1). On magnetic_tile the discriminator alone
    # (st_exponent 0) localises better (+0.06 pixel AUROC) but ranks parts slightly worse (-0.01 image
    # AUROC); the verdict is per part, so the product stays. Switch at export with --head.
    # Image score: the map's max fused with the image-level Gaussian (global_weight 1); map: the RSTPM map
    # fused with the regional Gaussian's (region_weight 1). Both fit in seconds after stage 1; measured on
    # magnetic_tile in issue 3 (README). Weights 0 give the paper's map and score.
    "edge": TrainConfig(profile="edge", model=ModelConfig(global_weight=1.0, region_weight=1.0)),
    # The paper's shape: ResNet18 + ResNet50 teachers (weights from a local file / hub cache),
    # ResNet18 student with STPM's SGD recipe, wide decoder and DRAEM-width U-Net.
    "paper": TrainConfig(
        profile="paper",
        model=ModelConfig(teacher1="resnet18", teacher2="resnet50", student2_widths=[1024, 512, 256], disc_base=64,
                          disc_depth=4),
        epochs1=100,
        batch_size1=32,
        optimizer1="sgd",
        lr1=0.4,
        weight_decay1=1e-4,
        epochs2=300,
        lr2=1e-4,
    ),
}


def make_config(profile: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Profile defaults with overrides applied; keys of ModelConfig may be given at top level."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile].override(overrides)


def setting_names() -> list[str]:
    """Every key ``make_config`` takes (ModelConfig's at top level), in declaration order."""
    return [k for k in TrainConfig.model_fields if k not in ("model", "profile")] + list(ModelConfig.model_fields)


def describe_settings(profile: str) -> list[tuple[str, str, Any, str]]:
    """(key, type, default under ``profile``, description) for every key ``make_config`` takes."""
    cfg = make_config(profile)
    rows = []
    for name in setting_names():
        model_key = name in ModelConfig.model_fields
        info = (ModelConfig if model_key else TrainConfig).model_fields[name]
        value = getattr(cfg.model if model_key else cfg, name)
        rows.append((name, _type_text(info), value, info.description or ""))
    return rows


def _type_text(info: FieldInfo) -> str:
    """``int >= 2``, ``float 0..4``, ``adam|sgd``, ``str or none`` ..."""
    ann = info.annotation
    args = typing.get_args(ann)
    optional = type(None) in args
    if optional:
        ann = next(a for a in args if a is not type(None))
    if typing.get_origin(ann) is Literal:
        text = "|".join(str(a) for a in typing.get_args(ann))
    elif typing.get_origin(ann) is list:
        sizes = {type(m).__name__: m for m in info.metadata}
        n = getattr(sizes.get("MinLen"), "min_length", None)
        fixed = n is not None and n == getattr(sizes.get("MaxLen"), "max_length", None)
        text = f"list of {n} int" if fixed else "list of int"
    else:
        text = getattr(ann, "__name__", str(ann))
    bounds = {type(m).__name__: m for m in info.metadata}
    lo = next((f"{op}{getattr(m, attr)}" for op, attr, m in
               ((">=", "ge", bounds.get("Ge")), (">", "gt", bounds.get("Gt"))) if m is not None), None)
    hi = next((f"{op}{getattr(m, attr)}" for op, attr, m in
               (("<=", "le", bounds.get("Le")), ("<", "lt", bounds.get("Lt"))) if m is not None), None)
    if lo and hi and lo.startswith(">=") and hi.startswith("<="):
        text += f" {lo[2:]}..{hi[2:]}"
    else:
        text += "".join(f" {b}" for b in (lo, hi) if b)
    return text + (" or none" if optional else "")


def _one_line(exc: ValidationError) -> str:
    errors = exc.errors()
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    key = loc[-1] if loc[:1] == ["model"] and len(loc) == 2 else ".".join(loc)  # make_config takes model keys flat
    value = err.get("input")
    shown = f" got {value!r}:" if value is not None and not isinstance(value, dict) and err["type"] != "missing" else ""
    if err["type"] == "extra_forbidden":
        return f"unknown training setting '{key}'; 'edge-inspect train --list-settings' lists them"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    msg = err["msg"].removeprefix("Value error, ")
    return " ".join(f"invalid training setting '{key}':{shown} {msg}{more}".split())
