"""Export a trained run as a model folder: one ONNX graph per network + manifest.json.

Graph I/O names are global tensor names (see edge_inspect.manifest), so the runtime wires the graphs
by name. Thresholds are calibrated on the run's held-out good images *through the exported graphs*
(ONNX Runtime), so the numbers match what runs on the line, and are stored in the manifest only.
The manifest is written last and atomically: a folder whose export failed has none and does not load.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from edge_inspect import __version__
from edge_inspect.errors import ConfigError, ModelError
from edge_inspect.manifest import (
    GraphSpec,
    Manifest,
    Provenance,
    ScoreFusion,
    TensorSpec,
    save_manifest,
    sha256_file,
    utc_now,
)

from .config import TrainConfig
from .flops import count_macs, count_params
from .frame_scores import held_out_goods, image_scores, score_files
from .model import RSTPM, MapHead
from .train import _progress, input_spec, load_trained, set_score_stats
from .validation import split_holdout

log = logging.getLogger(__name__)
OPSET = 17
HEAD_INPUTS = ["t1_4", "t1_8", "t1_16", "s1_4", "s1_8", "s1_16", "t2_4", "t2_8", "t2_16", "s2_4", "s2_8", "s2_16"]
HEAD_OUTPUTS = ["anomaly_map", "score", "st_map", "stpm_map", "disc_prob", "global_score", "rstpm_map", "region_map"]
# Map-head settings that change no trained weight, so they may differ between export and training.
HEAD_SETTINGS = ("st_exponent", "map_sigma", "score_topk", "global_weight", "region_weight")


class _Teacher1(nn.Module):
    def __init__(self, m: RSTPM):
        super().__init__()
        self.m = m.teacher1

    def forward(self, image):
        return tuple(self.m(image))


class _Image3(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        return tuple(self.net(image))


class _Student2(nn.Module):
    def __init__(self, m: RSTPM):
        super().__init__()
        self.m = m.student2

    def forward(self, t1_32, t2_4, t2_8, t2_16):
        return tuple(self.m(t1_32, t2_4, t2_8, t2_16))


class _Head(nn.Module):
    def __init__(self, m: RSTPM):
        super().__init__()
        self.m = m.head

    def forward(self, t1_4, t1_8, t1_16, s1_4, s1_8, s1_16, t2_4, t2_8, t2_16, s2_4, s2_8, s2_16):
        out = self.m([t1_4, t1_8, t1_16], [s1_4, s1_8, s1_16], [t2_4, t2_8, t2_16], [s2_4, s2_8, s2_16])
        return tuple(out[k] for k in HEAD_OUTPUTS)


def _graphs(model: RSTPM):
    """(name, wrapper, input names, output names) in execution order."""
    return [
        ("teacher1", _Teacher1(model), ["image"], ["t1_4", "t1_8", "t1_16", "t1_32"]),
        ("student1", _Image3(model.student1), ["image"], ["s1_4", "s1_8", "s1_16"]),
        ("teacher2", _Image3(model.teacher2), ["image"], ["t2_4", "t2_8", "t2_16"]),
        ("student2", _Student2(model), ["t1_32", "t2_4", "t2_8", "t2_16"], ["s2_4", "s2_8", "s2_16"]),
        ("discriminator", _Head(model), HEAD_INPUTS, HEAD_OUTPUTS),
    ]


def _spec(name: str, t: torch.Tensor) -> TensorSpec:
    return TensorSpec(name=name, shape=["batch", *t.shape[1:]], dtype="float32")


def with_head_settings(model: RSTPM, cfg: TrainConfig, overrides: dict | None,
                       ckpt: dict | None = None) -> tuple[RSTPM, TrainConfig]:
    """Apply map-head settings that change no trained weight (see HEAD_SETTINGS) to a trained model.

    When the map or the score is fused (region_weight or global_weight > 0) and a setting changes what
    is fused, the good-image statistics are measured again on the run's held-out images (``ckpt["data"]``).
    """
    if not overrides:
        return model, cfg
    unknown = sorted(set(overrides) - set(HEAD_SETTINGS))
    if unknown:
        raise ConfigError(f"only {', '.join(HEAD_SETTINGS)} can change at export (no retraining); "
                          f"not {', '.join(unknown)}")
    old_model_cfg = cfg.model
    cfg = cfg.override(overrides)
    if (cfg.model.global_weight > 0 or cfg.model.region_weight > 0) and not bool(model.head.glob_fitted):
        raise ConfigError("global_weight or region_weight > 0 needs the Gaussians, which this run predates; retrain it")
    head = MapHead(cfg.model, model.head.image_size, model.head.global_channels, model.head.region_channels)
    trained = {k: v for k, v in model.head.state_dict().items() if k != "blur"}  # blur follows map_sigma
    head.load_state_dict({**head.state_dict(), **trained})
    model.head = head.eval().requires_grad_(False)
    # A new global_weight alone keeps every statistic; any other setting changes the map or how it is fused.
    map_changed = any(k != "global_weight" and v != getattr(old_model_cfg, k) for k, v in overrides.items())
    model.cfg = cfg.model
    if (cfg.model.global_weight > 0 or cfg.model.region_weight > 0) and map_changed:
        if ckpt is None:
            raise ModelError("changing the map of a fused score needs the training checkpoint (its held-out images)")
        cat_dir = Path(ckpt["data"]["root"]) / ckpt["data"]["category"]
        set_score_stats(model, cfg, [cat_dir / p for p in ckpt["data"]["holdout"]], show=True)
    return model, cfg


# What an export writes; a folder holding only these (e.g. left by a failed export) may be written again.
_EXPORT_FILES = {f"{name}.onnx" for name in ("teacher1", "student1", "teacher2", "student2", "discriminator")} | {
    "manifest.json", "manifest.json.tmp", "training_history.json", "calibrations"}


@torch.no_grad()
def export(run_dir: str | Path, out_dir: str | Path, calibration_defects: str | Path | None = None,
           target_frr: float = 0.005, head_settings: dict | None = None, head_auto: bool | None = None) -> Path:
    """Write ``out_dir`` (ONNX graphs + manifest.json) from ``run_dir/model.pt``; returns out_dir.

    The image threshold is set for ``target_frr`` (false-reject rate of good parts) from the run's held-out
    good images, scored through the exported graphs and cross-fitted (trainer.train.cross_fitted).
    ``calibration_defects``: a folder of labelled defective images (good/ under it is left out): the escape
    rate at the threshold and the F1-optimal threshold are stored too. ``head_settings`` overrides how maps
    are combined and scored (keys in HEAD_SETTINGS) without retraining. ``head_auto`` (default: the run's
    head_selection setting) picks those settings on validation (trainer.head_select), explicit
    ``head_settings`` win; the choice and its figures go to the manifest's provenance. The manifest is written once, at
    the end: a failed export leaves no loadable folder.
    """
    from edge_inspect.data.mvtec import defect_images

    defects = defect_images(calibration_defects) if calibration_defects is not None else None  # refuse early
    model, cfg, ckpt = load_trained(run_dir)
    selection = None
    if head_auto if head_auto is not None else cfg.head_selection == "auto":
        from .head_select import select_head

        unknown = sorted(set(head_settings or {}) - set(HEAD_SETTINGS))
        if unknown:  # refuse before the search, not after it
            raise ConfigError(f"only {', '.join(HEAD_SETTINGS)} can change at export (no retraining); "
                              f"not {', '.join(unknown)}")
        if "validation" not in ckpt["data"]:
            # A run from before the split: split its held-out goods now as training does today, so the
            # goods that choose the head do not also set the threshold (trainer.validation).
            calib, val, shared = split_holdout(ckpt["data"]["holdout"])
            ckpt["data"] = {**ckpt["data"], "holdout": calib, "validation": val, "validation_shared": shared}
        chosen, selection = select_head(model, cfg, ckpt, fixed=head_settings)
        head_settings = {**chosen, **(head_settings or {})}
    model, cfg = with_head_settings(model, cfg, head_settings, ckpt)
    out = Path(out_dir)
    if out.exists() and any(p.name not in _EXPORT_FILES for p in out.iterdir()):
        raise ModelError(f"{out} exists and is not a model folder; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # until the new one is complete, the folder does not load
    spec = input_spec(cfg)
    x = torch.zeros(1, 3, spec.height, spec.width)
    tensors: dict[str, torch.Tensor] = {"image": x}
    graphs: list[GraphSpec] = []
    total_gmacs = 0.0
    for name, wrapper, in_names, out_names in _progress(_graphs(model), desc="exporting graphs", leave=False):
        wrapper.eval()
        args = tuple(tensors[n] for n in in_names)
        outs = wrapper(*args)
        path = out / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                wrapper, args, str(path), input_names=in_names, output_names=out_names, opset_version=OPSET,
                dynamic_axes={n: {0: "batch"} for n in in_names + out_names}, dynamo=False,
            )
        tensors.update(zip(out_names, outs, strict=True))
        gmacs = count_macs(wrapper, *args) / 1e9
        total_gmacs += gmacs
        graphs.append(GraphSpec(
            name=name, file=path.name, sha256=sha256_file(path),
            inputs=[_spec(n, tensors[n]) for n in in_names], outputs=[_spec(n, tensors[n]) for n in out_names],
            params=count_params(wrapper), gmacs=round(gmacs, 4),
        ))
        log.info("exported %s: %.3f GMACs, %.2f M params", path.name, gmacs, count_params(wrapper) / 1e6)

    from edge_inspect.evaluation.calibration import calibrate

    data = ckpt["data"]
    cat_dir = Path(data["root"]) / data["category"]
    head = model.head
    fused_score, fused_map = head.global_weight > 0, head.region_weight > 0
    score_fusion = None
    if fused_score:
        _, _, g_mean, g_std = (float(v) for v in head.score_stats)
        score_fusion = ScoreFusion(global_weight=head.global_weight, global_mean=g_mean, global_std=g_std)
    unfinished = Manifest(
        model_id=f"rstpm-{cfg.profile}-{data['category']}", profile=cfg.profile, input=spec, graphs=graphs,
        extra_outputs=["st_map", "stpm_map", "disc_prob", "global_score", "rstpm_map", "region_map"],
        calibration=_placeholder_calibration(), score_fusion=score_fusion,
        provenance=Provenance(
            code_version=__version__, created_at=utc_now(), training_config=cfg.to_dict(),
            data_fingerprint=data["fingerprint"],
            torch_version=ckpt.get("torch_version"), onnx_opset=OPSET, run_dir=str(Path(run_dir).resolve()),
            notes=f"trained on {len(data['train'])} images of {data['category']}; "
            f"{ckpt['state'].get('history', [{}])[-1]}"
            + (f"; head settings {'chosen on validation' if selection else 'changed'} at export: {head_settings}"
               if head_settings else ""),
            validation=selection,
        ),
    )
    # Calibrate on held-out good images through the exported graphs (what runs on the line).
    holdout = [cat_dir / p for p in data["holdout"]]
    source = f"{len(holdout)} held-out training goods, cross-fitted"
    if len(holdout) < 2:
        log.warning("fewer than 2 held-out good images; calibrating on training images (the threshold will be too low: "
                    "retrain with a larger holdout_fraction, or run 'edge-inspect calibrate --goods DIR' on new goods)")
        holdout = [cat_dir / p for p in data["train"][:32]]
        source = f"{len(holdout)} TRAINING goods (no held-out images; optimistic)"
    # scores per image and maps in the image frame (letterbox padding cropped, tiles stitched): trainer.frame_scores
    good_scores, good_maps = held_out_goods(head, score_files(out, unfinished, holdout, "scoring held-out goods"),
                                            unfinished)
    defect_scores = defects_source = None
    if defects is not None:
        files, defects_source = defects
        log.info("calibration defects: %s", defects_source)
        defect_scores = image_scores(score_files(out, unfinished, files, "scoring calibration defects"), unfinished)
    calibration = calibrate(
        good_scores, defect_scores=defect_scores, good_maps=good_maps, target_frr=target_frr, source=source,
        defects_source=defects_source, score_lower_bound=None if (fused_score or fused_map) else 0.0,
        map_lower_bound=None if fused_map else 0.0,
    )
    manifest = unfinished.model_copy(update={"calibration": calibration})
    if (Path(run_dir) / "history.json").is_file():
        shutil.copy2(Path(run_dir) / "history.json", out / "training_history.json")
    save_manifest(Manifest.model_validate(manifest.model_dump()), out)
    log.info("model folder %s: %.3f GMACs total, image threshold %.5f", out, total_gmacs, calibration.image_threshold)
    return out


def _placeholder_calibration():
    """A valid calibration for the in-memory manifest used while scoring; never written to disk."""
    from edge_inspect.manifest import Calibration, ScoreStats

    z = ScoreStats(count=0, mean=0.0, std=0.0, min=0.0, max=0.0)
    return Calibration(image_threshold=0.0, image_threshold_method="uncalibrated", pixel_threshold=0.0,
                       good_scores=z, norm_min=0.0, norm_max=1.0)
