"""``edge-inspect train``: two-stage RSTPM training on good images of an MVTec-format category."""

from __future__ import annotations

import argparse
import ast
import logging
import time

from ..errors import ConfigError
from ._lazy import import_trainer


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (None, False, an empty
    list) or the help text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        nothing = action.default is None or action.default is False or action.default == []
        if nothing or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def register(sub) -> None:
    p = sub.add_parser("train", help="train RSTPM on good images (needs the [train] extra)",
                       formatter_class=DefaultsHelpFormatter,
                       description="Stage 1 trains both students, stage 2 the discriminator on pseudo-anomalies. "
                       "Resumes from RUN/checkpoint.pt when the config matches.",
                       epilog="Options without a default shown take the --profile's value. "
                       "'edge-inspect train --list-settings [--profile P]' lists every training setting with its "
                       "type, its default under the profile and what it does; set any of them with --set KEY=VALUE.")
    p.add_argument("--data", metavar="DIR", help="data root holding <category>/train/good (MVTec AD layout); required")
    p.add_argument("--category", help="category folder under --data; required")
    p.add_argument("--out", metavar="RUN", help="run folder (checkpoints, model.pt, history.json); required")
    p.add_argument("--profile", default="edge", metavar="NAME",
                   help="edge (EfficientNet-Lite, offline) or paper (ResNet18+ResNet50)")
    p.add_argument("--list-settings", action="store_true",
                   help="print every --set key with its type, default under --profile and description, then exit")
    p.add_argument("--epochs1", type=int, metavar="N", help="stage 1 epochs (students)")
    p.add_argument("--epochs2", type=int, metavar="N", help="stage 2 epochs (discriminator)")
    p.add_argument("--max-train-images", type=int, metavar="N", help="subsample the good training images")
    p.add_argument("--image-size", metavar="HxW", help="model input height x width in pixels (e.g. 256x640), or N "
                   "for NxN; multiples of 32. Default: chosen from the training images' aspect ratio (logged)")
    p.add_argument("--batch-size", type=int, dest="batch_size1", metavar="N",
                   help="stage 1 batch size (stage 2: --set batch_size2=N)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--textures", dest="textures_dir", metavar="DIR",
                   help="folder of texture images for pseudo-anomalies (e.g. DTD)")
    p.add_argument("--teacher1", metavar="BACKBONE", help="teacher of pair 1 (names: --list-settings)")
    p.add_argument("--teacher2", metavar="BACKBONE", help="teacher of pair 2")
    p.add_argument("--teacher1-weights", metavar="FILE", help="local ImageNet weights file for a ResNet teacher 1")
    p.add_argument("--teacher2-weights", metavar="FILE", help="local ImageNet weights file for a ResNet teacher 2")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--no-discriminator", action="store_true", help="ablation: skip stage 2")
    p.add_argument("--no-pair2", action="store_true", help="ablation: STPM pair only in the maps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other training setting, repeatable (keys: --list-settings)")
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
    if args.list_settings:
        print_settings(config, args.profile)
        return 0
    missing = [flag for flag in ("--data", "--category", "--out") if getattr(args, flag[2:]) is None]
    if missing:
        raise ConfigError(f"train needs {', '.join(missing)} (or --list-settings to see the training settings)")
    over = {k: getattr(args, k) for k in ("epochs1", "epochs2", "max_train_images", "image_size", "batch_size1",
                                          "device", "textures_dir", "teacher1", "teacher2", "teacher1_weights",
                                          "teacher2_weights", "seed")}
    if args.no_discriminator:
        over["use_discriminator"] = False
    if args.no_pair2:
        over["use_pair2"] = False
    over.update(parse_sets(args.set))
    cfg = config.make_config(args.profile, over)
    # The input shape chosen from the data is said in one line even without -v (trainer.input_shape).
    if logging.getLogger("trainer.input_shape").getEffectiveLevel() > logging.INFO:
        logging.getLogger("trainer.input_shape").setLevel(logging.INFO)
    train_mod = import_trainer("train")
    t0 = time.time()
    final = train_mod.train(cfg, args.data, args.category, args.out, resume=not args.no_resume, progress=not args.quiet)
    print(f"trained {cfg.profile} profile in {time.time() - t0:.0f} s -> {final}")
    print(f"next: edge-inspect export --run {args.out} --out MODEL_DIR")
    return 0


def print_settings(config, profile: str) -> None:
    """One line per training setting: key, type, default under ``profile``, description."""
    rows = []
    for key, kind, default, text in config.describe_settings(profile):
        if len(kind) > 24:  # a long list of choices: name them in the description
            kind, text = "choice", f"{text}; one of {kind.replace('|', ', ')}"
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        rows.append((key, kind, shown, text))
    header = ("KEY", "TYPE", f"DEFAULT ({profile})", "DESCRIPTION")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print(f"training settings of the '{profile}' profile; set with --set KEY=VALUE (some have a flag too)")
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
