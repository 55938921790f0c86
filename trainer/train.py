"""Two-stage RSTPM training (nanoGPT-style: short, linear, commented).

Stage 1 trains both students against frozen teachers. Without augmentation the teachers' outputs
never change, so their features are computed once and cached; student 2 then trains on cached
features alone. Stage 2 trains the discriminator on pseudo-anomalies: a pool of anomalous samples is
generated once, pushed through the frozen networks, and only their small per-scale maps (B,3,H/4,W/4)
are kept, so each discriminator epoch costs a few milliseconds per sample on a CPU.

Checkpoints (RUN/checkpoint.pt) carry the config and resume where they stopped. Multi-GPU: launch
with torchrun; DistributedDataParallel wraps the students and each rank takes a shard of each epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edge_inspect.data.mvtec import MVTecCategory, fingerprint
from edge_inspect.errors import ConfigError, DataError
from edge_inspect.manifest import InputSpec

from .config import TrainConfig
from .data import load_rgb_stack, split_train_holdout, to_input
from .gaussian import fit_gaussian
from .input_shape import resolve_input_shape, spec_for
from .losses import feature_matching_loss, focal_loss
from .model import RSTPM
from .validation import EpochValidator, make_validation_set, split_holdout

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"
FINAL = "model.pt"


def _progress(iterable=None, **kw):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, dynamic_ncols=True, disable=kw.pop("disable", False), **kw)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' requested but CUDA is not available")
    return torch.device(name)


def _dist_info() -> tuple[int, int]:
    """(rank, world_size) under torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return (torch.distributed.get_rank(), world) if world > 1 else (0, 1)


def input_spec(cfg: TrainConfig) -> InputSpec:
    """The run's model input (trainer.input_shape.spec_for)."""
    return spec_for(cfg)


@torch.no_grad()
def _teacher_features(model: RSTPM, images: torch.Tensor, device, batch: int, show: bool):
    """Frozen-teacher features for ``images`` (N,3,H,W): (t1 list of 4, t2 list of 3), on CPU, standardised.

    The first call fits each teacher's per-channel standardisation on these (good) images.
    """
    fit = not bool(model.teacher1.fitted)
    t1_parts, t2_parts = [], []
    for i in _progress(range(0, len(images), batch), desc="teacher features", disable=not show):
        x = _cl(images[i : i + batch].to(device))
        t1_parts.append([f.cpu() for f in model.teacher1(x, standardise=not fit)])
        t2_parts.append([f.cpu() for f in model.teacher2(x, standardise=not fit)])
    t1 = [torch.cat([p[k] for p in t1_parts]) for k in range(4)]
    t2 = [torch.cat([p[k] for p in t2_parts]) for k in range(3)]
    if fit:
        t1 = model.teacher1.fit_standardisation(t1)
        t2 = model.teacher2.fit_standardisation(t2)
    return t1, t2


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, data_root: str | Path, category: str, out_dir: str | Path, resume: bool = True,
          progress: bool = True) -> Path:
    """Train RSTPM on ``data_root/category/train/good`` and write ``out_dir/model.pt``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _dist_info()
    show = progress and rank == 0
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + rank)
    amp = device.type == "cuda"

    cat = MVTecCategory(data_root, category)
    train_samples, holdout = split_train_holdout(cat.train_samples(), cfg.holdout_fraction, cfg.max_train_images,
                                                 cfg.seed)
    calib, val_samples, shared = split_holdout(holdout)
    log.info("training on %d good images; held out: %d for calibration, %d for validation%s", len(train_samples),
             len(calib), len(val_samples), " (the same images: too few to split)" if shared else "")
    cfg = resolve_input_shape(cfg, train_samples)
    spec = input_spec(cfg)
    rgb = load_rgb_stack(train_samples, spec,
                         progress=(lambda it: _progress(it, desc="loading images")) if show else None)
    images = to_input(rgb, spec)

    # channels_last: measured 4-7x faster convolutions (depthwise above all) on CPU than NCHW.
    model = RSTPM(cfg.model, spec.hw).to(device, memory_format=torch.channels_last)
    students = torch.nn.ModuleList([model.student1, model.student2])
    if cfg.optimizer1 == "sgd":
        opt1 = torch.optim.SGD(students.parameters(), lr=cfg.lr1, momentum=0.9, weight_decay=cfg.weight_decay1)
    else:  # "adam": TrainConfig refuses any other name
        opt1 = torch.optim.Adam(students.parameters(), lr=cfg.lr1, weight_decay=cfg.weight_decay1)
    opt2 = torch.optim.Adam(model.head.parameters(), lr=cfg.lr2) if cfg.model.use_discriminator else None
    sched2 = (
        torch.optim.lr_scheduler.MultiStepLR(opt2, [int(cfg.epochs2 * 0.8), int(cfg.epochs2 * 0.9)], gamma=0.2)
        if opt2 else None
    )
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    state = {"stage": 1, "epoch": 0, "history": []}
    ckpt_path = out / CHECKPOINT
    if resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        # Compared as configs: a checkpoint older than a setting lacks its key and gets its default.
        if TrainConfig.from_dict(ckpt["config"]) != cfg:
            raise ConfigError(f"{ckpt_path} was trained with a different config; use a new --out folder or --no-resume")
        model.load_state_dict(ckpt["model"])
        opt1.load_state_dict(ckpt["opt1"])
        if opt2 and ckpt.get("opt2"):
            opt2.load_state_dict(ckpt["opt2"])
            sched2.load_state_dict(ckpt["sched2"])
        state = ckpt["state"]
        log.info("resuming from %s: stage %d, epoch %d", ckpt_path, state["stage"], state["epoch"])

    def checkpoint():
        if rank == 0:
            _save(ckpt_path, {
                "config": cfg.to_dict(), "model": model.state_dict(), "opt1": opt1.state_dict(),
                "opt2": opt2.state_dict() if opt2 else None, "sched2": sched2.state_dict() if sched2 else None,
                "state": state,
            })

    s1, s2 = model.student1, model.student2
    if world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel
        s1, s2 = ddp(s1), ddp(s2)

    # ---- stage 1: students mimic (student 1) and reconstruct (student 2) teacher features ----
    t0 = time.time()
    cached = None
    if state["stage"] == 1 and state["epoch"] < cfg.epochs1:
        if cfg.augment:  # no cache: fit the teachers' standardisation on a subset only
            _teacher_features(model, images[:64], device, max(1, cfg.batch_size1), show)
        else:
            cached = _teacher_features(model, images, device, max(1, cfg.batch_size1), show)
    validator = None
    if cfg.val_every and val_samples and (state["stage"] == 1 or state["epoch"] < cfg.epochs2):
        vset = make_validation_set([s.path for s in val_samples], cfg, spec, limit=cfg.val_images)
        validator = EpochValidator(model, vset, device, max(2, cfg.batch_size1))
        log.info("validation: %d held-out goods + a validation anomaly on each, every %d epochs",
                 len(vset) // 2, cfg.val_every)
    best = state.setdefault("best", {})

    def validate(stage: int, epochs: int, net: torch.nn.Module) -> None:
        """The validation figure into the history (every val_every epochs and at the last); with keep_best
        the best epoch's weights of ``net`` are kept in memory and restored when the stage ends."""
        if validator is None or rank != 0 or (state["epoch"] % cfg.val_every and state["epoch"] != epochs):
            return
        v = validator(stage)
        state["history"][-1]["val"] = v
        log.info("stage %d epoch %d/%d validation: image AUROC %.4f, pixel AUROC %.4f (figure %.4f)", stage,
                 state["epoch"], epochs, v["image_auroc"], v["pixel_auroc"], v["figure"])
        key = f"stage{stage}"
        if v["figure"] > best.get(key, {}).get("figure", -1.0):
            best[key] = {"epoch": state["epoch"], **v}
            if cfg.keep_best:
                best_weights[key] = {k: t.detach().clone() for k, t in net.state_dict().items()}

    def restore_best(stage: int, net: torch.nn.Module) -> None:
        key = f"stage{stage}"
        if cfg.keep_best and key in best_weights and best[key]["epoch"] != state["epoch"]:
            net.load_state_dict(best_weights[key])
            log.info("stage %d: kept epoch %d, best on validation (figure %.4f)", stage, best[key]["epoch"],
                     best[key]["figure"])

    best_weights: dict[str, dict] = {}  # in memory only: a resumed run keeps the best of what it saw
    while state["stage"] == 1 and state["epoch"] < cfg.epochs1:
        students.train()
        # Cosine decay per epoch, computed from the epoch number so a resumed run gets the same rate.
        for group in opt1.param_groups:
            group["lr"] = cfg.lr1 * 0.5 * (1 + math.cos(math.pi * state["epoch"] / cfg.epochs1))
        order = rng.permutation(len(images))[rank::world]
        losses = []
        bar = _progress(range(0, len(order), cfg.batch_size1), desc=f"stage 1 epoch {state['epoch'] + 1}/{cfg.epochs1}",
                        disable=not show, leave=False)
        for i in bar:
            idx = torch.from_numpy(order[i : i + cfg.batch_size1])
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x = _cl(images[idx].to(device))
            if cfg.augment:
                x = torch.where(torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5, x.flip(-1), x)
                with torch.no_grad():
                    t1, t2 = model.teacher1(x), model.teacher2(x)
            else:
                t1 = [f[idx].to(device) for f in cached[0]]
                t2 = [f[idx].to(device) for f in cached[1]]
            with torch.autocast(device.type, enabled=amp):
                loss = feature_matching_loss(s1(x), t1[:3]) + feature_matching_loss(s2(t1[3], *t2), t2)
            opt1.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt1)
            scaler.update()
            losses.append(loss.item())
            if show:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        if not losses or not math.isfinite(float(np.mean(losses))):
            raise DataError("stage 1 loss is not finite; lower --lr1")
        state["epoch"] += 1
        state["history"].append({"stage": 1, "epoch": state["epoch"], "loss": float(np.mean(losses))})
        log.info("stage 1 epoch %d/%d loss %.4f", state["epoch"], cfg.epochs1, np.mean(losses))
        validate(1, cfg.epochs1, students)
        checkpoint()
    if state["stage"] == 1:
        restore_best(1, students)
        state.update(stage=2, epoch=0, stage1_seconds=time.time() - t0)
        _set_map_normalisation(model, images, device, cfg.batch_size1, show)
        checkpoint()
    del cached

    # ---- stage 2: discriminator learns which map responses are defects ----
    t0 = time.time()
    if cfg.model.use_discriminator and state["epoch"] < cfg.epochs2:
        from .pseudo_anomaly import PseudoAnomalyGenerator

        gen = PseudoAnomalyGenerator(
            cfg.textures_dir, clean_fraction=cfg.clean_fraction, self_fraction=cfg.self_fraction,
            line_fraction=cfg.line_fraction, seed=cfg.seed + 1,
        )
        maps, targets = _anomaly_pool(model, rgb, gen, spec, device, int(len(rgb) * cfg.pool_factor), cfg.batch_size2,
                                      rng, show)
        head = model.head
        disc = torch.nn.parallel.DistributedDataParallel(head.disc) if world > 1 else head.disc
        bar = _progress(range(state["epoch"], cfg.epochs2), desc="stage 2 (discriminator)", unit="epoch",
                        initial=state["epoch"], total=cfg.epochs2, disable=not show)
        for _ in bar:
            head.train()
            order = rng.permutation(len(maps))[rank::world]
            losses = []
            for i in range(0, len(order), cfg.batch_size2):
                idx = torch.from_numpy(order[i : i + cfg.batch_size2])
                if len(idx) < 2:
                    continue
                m, y = maps[idx].to(device), targets[idx].to(device)
                flip = torch.rand(2) < 0.5  # cheap augmentation: the maps' statistics are flip-invariant
                if flip[0]:
                    m, y = m.flip(-1), y.flip(-1)
                if flip[1]:
                    m, y = m.flip(-2), y.flip(-2)
                loss = focal_loss(disc(head.normalised(m)), y, cfg.focal_gamma)
                opt2.zero_grad(set_to_none=True)
                loss.backward()
                opt2.step()
                losses.append(loss.item())
            sched2.step()
            state["epoch"] += 1
            state["history"].append({"stage": 2, "epoch": state["epoch"], "loss": float(np.mean(losses))})
            if show:
                bar.set_postfix(focal_loss=f"{np.mean(losses):.5f}")
            if show and (state["epoch"] % max(1, cfg.epochs2 // 10) == 0 or state["epoch"] == cfg.epochs2):
                log.info("stage 2 epoch %d/%d focal loss %.5f", state["epoch"], cfg.epochs2, np.mean(losses))
            validate(2, cfg.epochs2, head.disc)
            if state["epoch"] % 5 == 0:
                checkpoint()
        restore_best(2, head.disc)
    state["stage2_seconds"] = time.time() - t0
    model.eval()
    set_score_stats(model, cfg, [s.path for s in calib], images, device, show=show)

    final = out / FINAL
    if rank == 0:
        _save(final, {
            "config": cfg.to_dict(), "model": model.state_dict(), "state": state,
            "data": {"root": str(Path(data_root).resolve()), "category": category,
                     "train": [s.rel_path for s in train_samples], "holdout": [s.rel_path for s in calib],
                     "validation": [s.rel_path for s in val_samples], "validation_shared": shared,
                     "fingerprint": fingerprint(train_samples)},
            "torch_version": torch.__version__,
        })
        checkpoint()
        (out / "history.json").write_text(json.dumps(state, indent=1))
        log.info("wrote %s", final)
    if world > 1:
        torch.distributed.barrier()
    return final


@torch.no_grad()
def _set_map_normalisation(model: RSTPM, images: torch.Tensor, device, batch: int, show: bool = False) -> None:
    """On good training images: per-map mean/std of the discriminator's input → its input scaling, and
    the Gaussians of the teachers' pooled features (image-level score) and window statistics (regional map)."""
    model.eval()
    head = model.head
    acc, pooled, windows = [], [], []
    for i in _progress(range(0, len(images), batch), desc="map statistics", disable=not show, leave=False):
        t1, s1, t2, s2 = model.features(_cl(images[i : i + batch].to(device)))
        acc.append(head.disc_input(*head.pair_maps(t1[:3], s1, t2, s2)).cpu())
        pooled.append(head.global_features(t1, t2).float().cpu())
        # every other position in each direction: neighbouring windows overlap almost entirely
        w = head.region_features(t1, t2)[:, :, ::2, ::2].float().cpu()
        windows.append(w.permute(0, 2, 3, 1).reshape(-1, w.shape[1]))
    maps = torch.cat(acc)
    head.map_mean.copy_(maps.mean(dim=(0, 2, 3), keepdim=True))
    head.map_std.copy_(maps.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))
    fits = _progress((("glob", torch.cat(pooled)), ("reg", torch.cat(windows))), desc="Gaussian fits", total=2,
                     disable=not show, leave=False)
    for name, feats in fits:
        if show:
            fits.set_postfix_str(f"{'image-level' if name == 'glob' else 'regional'}: {len(feats)} x {feats.shape[1]}")
        mean, whiten, shrink = fit_gaussian(feats)
        getattr(head, f"{name}_mean").copy_(mean[None])
        getattr(head, f"{name}_whiten").copy_(whiten)
        log.info("%s Gaussian: %d samples of %d features, Ledoit-Wolf shrinkage %.4f",
                 "image-level" if name == "glob" else "regional", len(feats), mean.numel(), shrink)
    head.glob_fitted.fill_(True)


@torch.no_grad()
def set_score_stats(model: RSTPM, cfg: TrainConfig, holdout: list[Path], train_images: torch.Tensor | None = None,
                    device="cpu", batch: int = 16, show: bool = False) -> None:
    """Good-image statistics that put fused parts on one scale: pixel mean/std of the RSTPM and regional
    maps (MapHead.fused_map), then mean/std of the local (final map's max) and global scores
    (MapHead.fused_score). Measured on the held-out good image files, unseen by the students and the
    Gaussians; without them the training images ``train_images`` (N,3,H,W) stand in, with a warning."""
    if holdout:
        bar = (lambda it: _progress(it, desc="loading held-out goods", leave=False)) if show else None
        images = to_input(load_rgb_stack(holdout, input_spec(cfg), progress=bar), input_spec(cfg))
    elif train_images is not None:
        log.warning("no held-out good images: score statistics come from training images "
                    "(the Gaussians will over-weigh)")
        images = train_images
    else:
        raise DataError("score statistics need held-out good images, and this run has none")
    rstpm, region, glob = head_components(model, images, device, batch, show)
    map_stats, score_stats = score_statistics(model.head, rstpm, region, glob)
    model.head.map_stats.copy_(map_stats)
    model.head.score_stats.copy_(score_stats)


@torch.no_grad()
def head_components(model: RSTPM, images: torch.Tensor, device="cpu", batch: int = 16, show: bool = False):
    """What the fused map and score are made of, for ``images`` (N,3,H,W): RSTPM map (N,1,H,W), regional
    map (N,1,H,W) and image-level distance (N,), on the CPU."""
    model.eval()
    rstpm, region, glob = [], [], []
    for i in _progress(range(0, len(images), batch), desc="score statistics", disable=not show, leave=False):
        out = model(_cl(images[i : i + batch].to(device)))
        rstpm.append(out["rstpm_map"].float().cpu())
        region.append(out["region_map"].float().cpu())
        glob.append(out["global_score"].float().cpu())
    return torch.cat(rstpm), torch.cat(region), torch.cat(glob)


@torch.no_grad()
def score_statistics(head, rstpm: torch.Tensor, region: torch.Tensor, glob: torch.Tensor):
    """Good-image statistics of the fusion, from components as head_components gives them: map_stats (4,)
    = pixel mean/std of the RSTPM and regional maps, score_stats (4,) = mean/std of the local score (the
    fused map's max under those map stats) and of the global distance. Leaves ``head`` unchanged."""
    std = lambda v: v.std().clamp_min(1e-6) if v.numel() > 1 else torch.tensor(1.0)  # noqa: E731
    map_stats = torch.stack([rstpm.mean(), std(rstpm), region.mean(), std(region)])
    with _head_stats(head, map_stats, head.score_stats):
        final = head.fused_map(rstpm, region) if head.region_weight > 0 else rstpm
        local = head.image_score(final)
    return map_stats, torch.stack([local.mean(), std(local), glob.mean(), std(glob)])


@torch.no_grad()
def fused_outputs(head, rstpm: torch.Tensor, region: torch.Tensor, glob: torch.Tensor, map_stats, score_stats):
    """The final map (N,1,H,W) and image score (N,) the head gives these components under the given stats."""
    with _head_stats(head, map_stats, score_stats):
        final = head.fused_map(rstpm, region) if head.region_weight > 0 else rstpm
        local = head.image_score(final)
        score = head.fused_score(local, glob) if head.global_weight > 0 else local
    return final, score


class _head_stats:
    """Context manager: the head computes with the given map/score stats, and gets its own back after."""

    def __init__(self, head, map_stats, score_stats):
        self.head, self.new = head, (map_stats, score_stats)

    def __enter__(self):
        self.saved = (self.head.map_stats.clone(), self.head.score_stats.clone())
        self.head.map_stats.copy_(self.new[0])
        self.head.score_stats.copy_(self.new[1])

    def __exit__(self, *exc):
        self.head.map_stats.copy_(self.saved[0])
        self.head.score_stats.copy_(self.saved[1])


def cross_fitted(head, rstpm: torch.Tensor, region: torch.Tensor, glob: torch.Tensor, folds: int = 10,
                 groups=None):
    """Held-out scores (N,) and final maps (N,1,H,W) of good images whose statistics also set the fusion.

    The fused score standardises its parts with statistics of the held-out goods; scoring those same goods
    with them would make them look tighter than a new part (their z-scores are exactly standardised).
    Each of ``folds`` folds is scored with statistics from the other folds instead, as a new part is.
    Without fusion (both weights 0) nothing is fitted on these images and the scores are the graph's.
    ``groups`` (N,) ints: rows of one group (the tiles of one image) fall in the same fold; None: one row each.
    """
    n = len(glob)
    if head.region_weight == 0 and head.global_weight == 0:
        maps, scores = fused_outputs(head, rstpm, region, glob, head.map_stats, head.score_stats)
        return scores, maps
    group = torch.arange(n) if groups is None else torch.as_tensor(np.asarray(groups), dtype=torch.long)
    folds = max(2, min(folds, int(group.max()) + 1))
    fold_of = group % folds
    scores, maps = torch.empty(n), torch.empty_like(rstpm)
    for k in range(folds):
        test, rest = fold_of == k, fold_of != k
        stats = score_statistics(head, rstpm[rest], region[rest], glob[rest])
        fold_map, fold_score = fused_outputs(head, rstpm[test], region[test], glob[test], *stats)
        maps[test], scores[test] = fold_map.to(maps.dtype), fold_score.to(scores.dtype)
    return scores, maps


@torch.no_grad()
def _anomaly_pool(model: RSTPM, rgb: np.ndarray, gen, spec, device, n: int, batch: int, rng, show: bool):
    """Generate ``n`` pseudo-anomalous samples once.

    Returns the discriminator inputs (n,C,h4,w4) and soft targets (n,1,h4,w4).
    """
    model.eval()
    maps, targets = [], []
    picks = rng.integers(0, len(rgb), size=n)
    for i in _progress(range(0, n, batch), desc="pseudo-anomaly pool", disable=not show):
        pairs = [gen(rgb[j]) for j in picks[i : i + batch]]
        x = _cl(to_input(np.stack([p[0] for p in pairs]), spec).to(device))
        t1, s1, t2, s2 = model.features(x)
        m = model.head.disc_input(*model.head.pair_maps(t1[:3], s1, t2, s2))
        mask = torch.from_numpy(np.stack([p[1] for p in pairs])).float().unsqueeze(1)
        maps.append(m.cpu())
        targets.append(F.adaptive_avg_pool2d(mask, m.shape[-2:]))  # area fraction of each map cell
    return torch.cat(maps), torch.cat(targets)


def load_trained(run_or_file: str | Path, map_location="cpu") -> tuple[RSTPM, TrainConfig, dict]:
    """Rebuild the trained model from RUN/model.pt (teachers' weights come from the checkpoint)."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / FINAL
    if not path.is_file():
        raise DataError(f"no trained model at {path}; run 'edge-inspect train' first")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        cfg = TrainConfig.from_dict(ckpt["config"])
    except Exception as exc:  # corrupt or foreign file
        raise DataError(f"{path}: not an edge-inspect training checkpoint ({exc})") from exc
    model = RSTPM(cfg.model, input_spec(cfg).hw, pretrained=False)
    # Runs trained before the Gaussians existed lack only their buffers; they load with them unfitted.
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise DataError(f"{path}: weights do not match the model its config describes ({exc})") from exc
    if unexpected or any(k not in _GLOBAL_BUFFERS for k in missing):
        raise DataError(f"{path}: weights do not match the model its config describes "
                        f"(missing {missing}, unexpected {unexpected})")
    return model.eval(), cfg, ckpt


_GLOBAL_BUFFERS = {"head.glob_mean", "head.glob_whiten", "head.score_stats", "head.glob_fitted",
                   "head.reg_mean", "head.reg_whiten", "head.map_stats"}
