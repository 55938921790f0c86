"""``edge-inspect calibrate``: new thresholds on site from good parts, without retraining.

Good parts come from a folder (``--goods DIR``) or straight from the camera (``--camera URI --frames N``,
the "teach" step: the operator confirms that every part shown was good). Optional labelled defects
(``--defects DIR``) add the escape rate. The manifest's calibration is replaced atomically and the
previous manifest kept in MODEL_DIR/calibrations/; ``--control ENDPOINT`` then tells a running station
to ``reload`` it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from ..errors import CameraError, ConfigError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="set the thresholds from good parts seen on site (folder or camera), without retraining",
        description="Score good parts with the model, fit the good-score model and set the image threshold for a "
        "target false-reject rate. The previous manifest is kept in MODEL_DIR/calibrations/.",
    )
    p.add_argument("--model", required=True, metavar="MODEL_DIR", help="exported model folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--goods", metavar="DIR",
                     help="folder of good-part images (a good/ subfolder is used when present)")
    src.add_argument("--camera", metavar="URI", help="teach from the camera: take --frames frames of good parts")
    p.add_argument("--frames", type=int, default=100, metavar="N", help="frames to take with --camera (default 100)")
    p.add_argument("--yes", action="store_true",
                   help="with --camera: confirm without asking that every part shown was good")
    p.add_argument("--save-frames", metavar="DIR", help="with --camera: also save the taught frames as PNG files")
    p.add_argument("--defects", metavar="DIR",
                   help="labelled defective images (good/ under it is left out): adds the escape rate")
    p.add_argument("--target-frr", type=float, default=0.005, metavar="RATE",
                   help="false-reject rate of good parts to set the threshold for (default 0.005 = 0.5 %%)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto", help="inference backend")
    p.add_argument("--dry-run", action="store_true", help="print the new calibration, write nothing")
    p.add_argument("--control", metavar="ENDPOINT",
                   help="after writing, send 'reload' to the station's control channel")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..backends.select import open_backend
    from ..data.mvtec import defect_images, good_images, load_image
    from ..evaluation import recalibrate as R
    from ..manifest import load_manifest

    if not 0 < args.target_frr < 0.5:
        raise ConfigError(f"--target-frr must be between 0 and 0.5, got {args.target_frr:g}")
    if args.camera is not None and args.frames < 2:
        raise ConfigError(f"--frames must be at least 2, got {args.frames}")
    defects = defect_images(args.defects) if args.defects else None
    goods = good_images(args.goods) if args.goods else None
    manifest = load_manifest(args.model)
    with open_backend(args.model, args.backend, manifest=manifest) as backend:
        if goods is not None:
            files, good_source = goods
            good_scores, good_maps = R.score_images(backend, manifest, (load_image(f) for f in files),
                                                    progress=_bar(len(files), "scoring good parts"))
        else:
            good_scores, good_maps, good_source = _teach(args, backend, manifest)
        defect_scores = defects_source = None
        if defects is not None:
            files, defects_source = defects
            defect_scores, _ = R.score_images(backend, manifest, (load_image(f) for f in files),
                                              progress=_bar(len(files), "scoring defects"))
    result = R.recalibrate(args.model, good_scores, good_maps, good_source, defect_scores, defects_source,
                           target_frr=args.target_frr)
    old = result.previous.calibration
    print(f"previous image threshold {old.image_threshold:.6g}")
    print(R.describe(result.calibration))
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    kept = R.write(result)
    print(f"wrote {Path(args.model) / 'manifest.json'}; previous kept as {kept}")
    if args.control:
        _reload(args.control, args.model)
    else:
        print("a running station takes it with the control command reload (or --control ENDPOINT here)")
    return 0


def _bar(total: int, desc: str):
    """A progress wrapper for ``score_images`` (evaluation.scoring.track: tqdm, or a log line without it)."""
    from ..evaluation.scoring import track

    return lambda items: track(items, total, desc)


def _teach(args, backend, manifest):
    """Take ``args.frames`` frames from the camera, have the operator confirm they were all good, score them."""
    from ..camera.settings import CameraSettings
    from ..camera.uri import open_source
    from ..evaluation.recalibrate import score_images

    source = open_source(CameraSettings(uri=args.camera))
    images = []
    source.open()
    try:
        deadline = time.monotonic() + max(30.0, args.frames * 2.0)
        bar = _bar(args.frames, "taking frames")(range(args.frames))
        for _ in bar:
            frame = None
            while frame is None:
                if time.monotonic() > deadline:
                    raise CameraError(f"{args.camera}: only {len(images)} of {args.frames} frames arrived in time")
                try:
                    frame = source.read(timeout=2.0)
                except Exception as exc:  # EndOfStream or a camera fault: say how far it got
                    raise CameraError(f"{args.camera}: stopped after {len(images)} of {args.frames} frames: "
                                      f"{exc}") from exc
            images.append(frame.image)
    finally:
        source.close()
    if args.save_frames:
        _save_frames(images, Path(args.save_frames))
    if not args.yes and not _confirm(len(images)):
        raise ConfigError("not confirmed: nothing calibrated (pass --yes to confirm without asking)")
    scores, maps = score_images(backend, manifest, images, channel_order="BGR", progress=_bar(len(images), "scoring"))
    return scores, maps, f"site teach: {len(images)} frames of {args.camera}"


def _confirm(n: int) -> bool:
    if not sys.stdin.isatty():
        raise ConfigError("--camera needs the operator's confirmation that every part was good: pass --yes")
    answer = input(f"{n} frames taken. Were ALL of these parts good? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _save_frames(images, folder: Path) -> None:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        if not cv2.imwrite(str(folder / f"teach-{i:05d}.png"), image):
            raise ConfigError(f"cannot write frames to {folder}")
    print(f"saved {len(images)} frames to {folder}")


def _reload(endpoint: str, model_dir: str) -> None:
    from ..protocol.control import ControlClient

    with ControlClient(endpoint) as client:
        result = client.request("reload", timeout_s=30.0, model_dir=str(Path(model_dir).resolve()))
    threshold = result.get("threshold", {}).get("image") if isinstance(result, dict) else None
    in_force = f": image threshold {threshold:.6g} in force" if threshold is not None else ""
    print(f"station at {endpoint} reloaded" + in_force)
