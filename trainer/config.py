"""Training configuration: model shape (profiles) and the two-stage schedule. Carried inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from edge_inspect.errors import ConfigError

DISC_INPUTS = ("summed", "separate")


@dataclass
class ModelConfig:
    teacher1: str = "efficientnet-lite0"
    teacher2: str = "efficientnet-lite2"
    teacher1_weights: str | None = None  # local file for ResNet weights (else torch hub cache)
    teacher2_weights: str | None = None
    student2_widths: list[int] = field(default_factory=lambda: [128, 64, 32])  # decoder widths at strides 16/8/4
    attention: bool = True
    disc_base: int = 16
    disc_depth: int = 3
    use_pair2: bool = True
    use_discriminator: bool = True
    map_sigma: float = 4.0  # Gaussian smoothing of the final map in input pixels (STPM uses 4)
    score_topk: int = 1  # 1 = max of the map; >1 = mean of the top-k pixels
    disc_inputs: str = "summed"  # "summed": M4, M8, M16 as in the paper; "separate": both pairs' six maps
    st_exponent: float = 1.0  # final map = st_map^e × disc_prob; 1 is the paper's product, 0 the discriminator alone
    # image score = z(max of map) + w·z(Mahalanobis distance of pooled teacher features); 0 = the map's max alone
    global_weight: float = 0.0
    # final map = z(RSTPM map) + w·z(regional map: Mahalanobis distance of the teachers' stride-16 features
    # pooled over region_window × region_window cells); 0 = the RSTPM map alone
    region_weight: float = 0.0
    region_window: int = 9


@dataclass
class TrainConfig:
    profile: str = "edge"
    image_size: int = 256
    model: ModelConfig = field(default_factory=ModelConfig)
    # stage 1: both students; teachers frozen. 50 + 80 epochs (edge): on magnetic_tile with an H100 this
    # trained in 4-6 min; 150 stage-1 epochs improved the student maps but not the final map (issue 3).
    epochs1: int = 50
    batch_size1: int = 16
    optimizer1: str = "adam"  # "sgd" is STPM's recipe (lr 0.4, momentum 0.9) for ResNet students
    lr1: float = 3e-3  # Adam, cosine-decayed over stage 1
    weight_decay1: float = 1e-5
    # stage 2: discriminator on pseudo-anomalies; everything else frozen
    epochs2: int = 80
    batch_size2: int = 16
    lr2: float = 1e-3
    pool_factor: float = 2.0  # pseudo-anomaly samples generated per training image, maps cached
    clean_fraction: float = 0.5
    self_fraction: float = 0.0  # share of pseudo-anomalies textured with a crop of the same image
    focal_gamma: float = 2.0
    textures_dir: str | None = None
    # data
    max_train_images: int | None = None
    # good images held out for the score statistics and the threshold (at least data.MIN_HOLDOUT, see there)
    holdout_fraction: float = 0.2
    augment: bool = False
    seed: int = 0
    device: str = "auto"
    workers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        model = ModelConfig(**d.pop("model", {}))
        return TrainConfig(model=model, **d)


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
        model=ModelConfig(teacher1="resnet18", teacher2="resnet50", student2_widths=[1024, 512, 256], disc_base=64, disc_depth=4),
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
    cfg = TrainConfig.from_dict(PROFILES[profile].to_dict())
    model_keys = {f.name for f in fields(ModelConfig)}
    top_keys = {f.name for f in fields(TrainConfig)}
    model_over, top_over = {}, {}
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k in model_keys:
            model_over[k] = v
        elif k in top_keys:
            top_over[k] = v
        else:
            raise ConfigError(f"unknown training setting '{k}'")
    cfg = replace(cfg, model=replace(cfg.model, **model_over), **top_over)
    if cfg.model.disc_inputs not in DISC_INPUTS:
        raise ConfigError(f"disc_inputs must be one of {', '.join(DISC_INPUTS)}, got {cfg.model.disc_inputs!r}")
    if not 0.0 <= float(cfg.model.st_exponent) <= 4.0:
        raise ConfigError(f"st_exponent must be between 0 and 4, got {cfg.model.st_exponent!r}")
    if not 0.0 <= float(cfg.model.global_weight) <= 10.0:
        raise ConfigError(f"global_weight must be between 0 and 10, got {cfg.model.global_weight!r}")
    if not 0.0 <= float(cfg.model.region_weight) <= 10.0:
        raise ConfigError(f"region_weight must be between 0 and 10, got {cfg.model.region_weight!r}")
    if not (isinstance(cfg.model.region_window, int) and cfg.model.region_window >= 1 and cfg.model.region_window % 2 == 1):
        raise ConfigError(f"region_window must be an odd number of stride-16 cells ≥ 1, got {cfg.model.region_window!r}")
    if not 0.0 <= float(cfg.self_fraction) <= 1.0:
        raise ConfigError(f"self_fraction must be between 0 and 1, got {cfg.self_fraction!r}")
    return cfg
