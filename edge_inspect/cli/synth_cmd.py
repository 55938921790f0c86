"""``edge-inspect synth``: write a synthetic MVTec-format category (turned flanges on a conveyor)."""

from __future__ import annotations

import argparse
import time

from .train_cmd import DefaultsHelpFormatter


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="make a synthetic MVTec-format category",
        formatter_class=DefaultsHelpFormatter,
        description="Render a seeded synthetic production line (good parts plus scratch/hole/stain defects "
        "with masks) into <out>/<category> in MVTec AD layout.",
    )
    parser.add_argument("--out", required=True, help="folder that will hold the category folder")
    parser.add_argument("--category", default="widget", help="category folder name")
    parser.add_argument("--n-train", type=int, default=60, help="good training images")
    parser.add_argument("--n-test-good", type=int, default=12, help="good test images")
    parser.add_argument(
        "--n-test-per-defect", type=int, default=8, help="test images per defect type"
    )
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty category folder"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.synth import DEFECT_TYPES, CategoryExistsError, make_synthetic_category
    from ..errors import DataError

    start = time.perf_counter()
    try:
        path = make_synthetic_category(
            args.out,
            category=args.category,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_per_defect=args.n_test_per_defect,
            size=args.size,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except CategoryExistsError as exc:
        raise DataError(
            f"{exc.path} already exists and is not empty; add --overwrite to replace its train/test/ground_truth "
            "folders, or choose another --out or --category"
        ) from exc
    elapsed = time.perf_counter() - start
    print(path)
    print(
        f"train/good: {args.n_train}  test/good: {args.n_test_good}  "
        + "  ".join(f"test/{kind}: {args.n_test_per_defect}" for kind in DEFECT_TYPES)
        + f"  ({args.size}x{args.size}, seed {args.seed}, {elapsed:.1f} s)"
    )
    return 0
