"""``edge-inspect predict``: score a folder or glob of images with a model folder, as the line decides them;
overlays, predictions.jsonl and predictions.csv (see edge_inspect.evaluation.predict).

Usage::

    edge-inspect predict --model models/widget --images shots/ --out pred/
    edge-inspect predict --model models/widget --images 'shots/**/*.jpg' --out pred/ --threshold 3.2
    edge-inspect predict --model models/widget --images shots/ --out pred/ --no-overlays

Exit code 0 when at least one image was judged (unreadable ones are recorded as "unknown" and counted);
a missing model, no matching image, an output folder that is a file, a bad threshold, or no image that
could be read: one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="score a folder or glob of images: overlays + predictions.jsonl/csv",
        description="Score every image of a folder (recursively) or a glob pattern through the line's backend "
        "and decision rule, and write one overlay PNG per image (heat map, defect boxes, verdict), "
        "predictions.jsonl and predictions.csv into OUT.",
    )
    p.add_argument("--model", required=True, type=Path, help="model folder (manifest.json + ONNX graphs)")
    p.add_argument("--images", required=True,
                   help="image folder (searched recursively), glob pattern (quote it; ** spans folders) or file")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--backend", default="auto", choices=["auto", "onnxruntime", "tensorrt"],
                   help="inference backend (default: auto, TensorRT when usable, else ONNX Runtime; as the line)")
    p.add_argument("--threshold", type=float, default=None,
                   help="image threshold to judge OK/NG (default: the manifest's calibrated one)")
    p.add_argument("--no-overlays", action="store_true", help="write only predictions.jsonl and predictions.csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=handle)


@contextmanager
def _quiet_opencv(quiet: bool):
    """No OpenCV C++ log lines on stderr for corrupt files while ``quiet`` (each one is recorded as "unknown"
    with its error); the log level is restored after."""
    try:
        import cv2

        log = cv2.utils.logging
        before = log.getLogLevel()
    except (ImportError, AttributeError):  # no OpenCV (the model load says so) or a build without the module
        quiet = False
    if quiet:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        if quiet:
            log.setLogLevel(before)


def handle(args) -> int:
    from ..evaluation.predict import predict

    with _quiet_opencv(not args.verbose):
        s = predict(args.model, args.images, args.out, backend=args.backend, threshold=args.threshold,
                    overlays=not args.no_overlays, progress=not args.no_progress)
    print(f"{s['model_id']} ({s['backend']}), threshold {s['threshold']:.6g} ({s['threshold_source']})")
    print(f"  images      {s['images']}")
    print(f"  ok / ng     {s['ok']} / {s['ng']}")
    if s["unknown"]:
        print(f"  unknown     {s['unknown']} ({s['unreadable']} unreadable, {s['not_judged']} not judged; "
              f"skipped, first: {s['first_error']})")
    print(f"  predictions {s['predictions']}, {s['predictions_csv']}")
    if not args.no_overlays:
        print(f"  overlays    {s['overlays']} in {s['out_dir']}")
    return 0
