"""``edge-inspect train``: two-stage RSTPM training on good images of an MVTec-format category."""

from __future__ import annotations

import ast
import time

from ..errors import ConfigError
from ._lazy import import_trainer


def register(sub) -> None:
    p = sub.add_parser("train", help="train RSTPM on good images (needs the [train] extra)",
                       description="Stage 1 trains both students, stage 2 the discriminator on pseudo-anomalies. "
                       "Resumes from OUT/checkpoint.pt when the config matches.")
    p.add_argument("--data", required=True, help="data root holding <category>/train/good (MVTec AD layout)")
    p.add_argument("--category", required=True)
    p.add_argument("--out", required=True, help="run folder (checkpoints, model.pt, history.json)")
    p.add_argument("--profile", default="edge", help="edge (EfficientNet-Lite, offline) or paper (ResNet18+ResNet50)")
    p.add_argument("--epochs1", type=int, help="stage 1 epochs (students)")
    p.add_argument("--epochs2", type=int, help="stage 2 epochs (discriminator)")
    p.add_argument("--max-train-images", type=int, help="subsample the good training images")
    p.add_argument("--image-size", type=int)
    p.add_argument("--batch-size", type=int, dest="batch_size1")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--textures", dest="textures_dir", help="folder of texture images for pseudo-anomalies (e.g. DTD)")
    p.add_argument("--teacher1"), p.add_argument("--teacher2")
    p.add_argument("--teacher1-weights", help="local ImageNet weights file for a ResNet teacher 1")
    p.add_argument("--teacher2-weights", help="local ImageNet weights file for a ResNet teacher 2")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-discriminator", action="store_true", help="ablation: skip stage 2")
    p.add_argument("--no-pair2", action="store_true", help="ablation: STPM pair only in the maps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other training setting")
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def parse_sets(items: list[str], flag: str = "--set") -> dict:
    """``["k=v", ...]`` → ``{k: literal or string}``; a missing ``=`` is a ConfigError naming ``flag``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def run(args) -> int:
    config = import_trainer("config")
    train_mod = import_trainer("train")
    over = {k: getattr(args, k) for k in ("epochs1", "epochs2", "max_train_images", "image_size", "batch_size1", "device",
                                          "textures_dir", "teacher1", "teacher2", "teacher1_weights", "teacher2_weights", "seed")}
    if args.no_discriminator:
        over["use_discriminator"] = False
    if args.no_pair2:
        over["use_pair2"] = False
    over.update(parse_sets(args.set))
    try:
        cfg = config.make_config(args.profile, over)
    except TypeError as exc:
        raise ConfigError(f"bad training setting: {exc}") from exc
    t0 = time.time()
    final = train_mod.train(cfg, args.data, args.category, args.out, resume=not args.no_resume, progress=not args.quiet)
    print(f"trained {cfg.profile} profile in {time.time() - t0:.0f} s -> {final}")
    print(f"next: edge-inspect export --run {args.out} --out MODEL_DIR")
    return 0
