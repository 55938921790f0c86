"""``edge-inspect quantize``: an INT8 (Q/DQ) model folder from a float one, calibrated on good images."""

from __future__ import annotations

import re

from ..errors import ConfigError


def register(subparsers) -> None:
    from ..quantize import ACTIVATIONS, METHODS, QUANTIZE_GRAPHS

    p = subparsers.add_parser(
        "quantize", help="write an INT8 (Q/DQ) copy of a float model folder",
        description="Quantize the networks (teacher 1 but its first blocks, teacher 2, the students, the "
        "discriminator's convolutions) with ONNX Runtime (QDQ format, int8 per-channel weights, activation "
        "ranges from good images) into a new model folder. With --threshold-goods "
        "the map head's Gaussians and scales are fitted again on the INT8 features and the thresholds are set "
        "again on INT8 scores (as 'edge-inspect calibrate' does); without them the float ones are kept and the "
        "manifest says so.",
    )
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="float model folder")
    p.add_argument("--goods", required=True, metavar="DIR",
                   help="the model's training goods: the activation ranges, and the head's Gaussians when they "
                   "are refitted (images also in --threshold-goods are left out of that; a good/ subfolder is used "
                   "when present)")
    p.add_argument("--out", required=True, metavar="DIR", help="new model folder to write")
    p.add_argument("--threshold-goods", metavar="DIR",
                   help="good images the model never trained on (held-out or site goods): set the thresholds on "
                   "their INT8 scores")
    p.add_argument("--defects", metavar="DIR", help="labelled defective images: adds the escape rate")
    p.add_argument("--target-frr", type=float, default=0.005, metavar="RATE",
                   help="false-reject rate the image threshold is set for (default 0.005)")
    p.add_argument("--method", choices=METHODS, default="minmax", help="activation range calibration (default minmax)")
    p.add_argument("--activations", choices=ACTIVATIONS, default="u8-asymmetric",
                   help="u8-asymmetric: fastest on the CPU (default); s8-symmetric: what TensorRT's INT8 build takes")
    p.add_argument("--graphs", default=",".join(QUANTIZE_GRAPHS), metavar="NAMES",
                   help=f"graphs to quantize, comma-separated (default {','.join(QUANTIZE_GRAPHS)}; the others "
                   "stay float)")
    p.add_argument("--max-images", type=int, default=32, metavar="N",
                   help="calibration images, evenly spread over --goods (default 32)")
    p.add_argument("--float-nodes", action="append", default=None, metavar="GRAPH=REGEX",
                   help="keep the nodes of GRAPH whose names match REGEX float (repeatable; GRAPH= for none). "
                   "Default: teacher1's stem and blocks 0-4 (a teacher 1 without such nodes stays float)")
    p.add_argument("--no-refit", action="store_true",
                   help="keep the float model's map-head statistics (Gaussians, input and fusion scales) instead of "
                   "fitting them again on the INT8 graphs (which needs --threshold-goods)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.mvtec import defect_images, good_images
    from ..evaluation.recalibrate import describe
    from ..evaluation.scoring import track
    from ..quantize import quantize

    if not 0 < args.target_frr < 0.5:
        raise ConfigError(f"--target-frr must be between 0 and 0.5, got {args.target_frr:g}")
    goods, source = good_images(args.goods)
    tgoods = good_images(args.threshold_goods) if args.threshold_goods else None
    defects = defect_images(args.defects) if args.defects else None
    if defects is not None and tgoods is None:
        raise ConfigError("--defects needs --threshold-goods (the escape rate is measured at the new threshold)")
    graphs = tuple(n.strip() for n in args.graphs.split(",") if n.strip())
    float_nodes = None
    if args.float_nodes is not None:
        float_nodes = {}
        for item in args.float_nodes:
            name, sep, pattern = item.partition("=")
            if not sep or not name:
                raise ConfigError(f"--float-nodes takes GRAPH=REGEX, got '{item}'")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"--float-nodes {item}: not a regular expression ({exc})") from exc
            if pattern:
                float_nodes[name] = pattern
    bar = None if args.no_progress else (lambda items, desc: track(items, len(items), desc))
    result = quantize(args.model, goods, source, args.out, method=args.method, activations=args.activations,
                      max_images=args.max_images, graphs=graphs, threshold_goods=tgoods, defects=defects,
                      target_frr=args.target_frr, refit=not args.no_refit, float_nodes=float_nodes, progress=bar)
    m = result.manifest
    q = m.quantization
    int8 = [g.name for g in m.graphs if g.precision != "fp32"]
    kept = [g.name for g in m.graphs if g.precision == "fp32"]
    print(f"wrote {result.out_dir}: int8 Q/DQ {', '.join(int8)}; float {', '.join(kept) or 'none'}; activation ranges "
          f"from {q.calibration_count} images ({q.calibration_method})")
    print(f"calibration images: INT8 scores differ from float by at most {result.max_abs_score_diff:.4g}")
    print(f"map head statistics: {q.head_refit or 'kept from the float model'}")
    print(f"thresholds: {q.thresholds}")
    if tgoods is not None:
        print(describe(m.calibration))
    return 0
