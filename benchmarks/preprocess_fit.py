"""Per-frame cost of placing a camera image in the model input: stretch vs letterbox vs tiles (CPU, ms).

    python benchmarks/preprocess_fit.py [--runs 200]

Times ``edge_inspect.preprocess.preprocess`` (what the line runs per frame, BGR camera images) and, for
tiles, ``restore_outputs`` stitching one anomaly map per tile. Prints the median and 90th percentile.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edge_inspect.geometry import choose_input_shape
from edge_inspect.manifest import Calibration, InputSpec, Manifest, Provenance, ScoreStats, TileSpec
from edge_inspect.preprocess import preprocess, restore_outputs


def time_ms(fn, runs: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t)), float(np.percentile(t, 90))


def _manifest(spec: InputSpec) -> Manifest:
    stats = ScoreStats(count=0, mean=0, std=0, min=0, max=0)
    cal = Calibration(image_threshold=0, image_threshold_method="-", pixel_threshold=0, good_scores=stats,
                      norm_min=0, norm_max=1)
    return Manifest(model_id="bench", profile="edge", input=spec, graphs=[], calibration=cal,
                    provenance=Provenance(code_version="bench", created_at="-"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cameras = {"500x1240 grey": rng.integers(0, 255, (500, 1240), dtype=np.uint8),
               "1024x1280 BGR": rng.integers(0, 255, (1024, 1280, 3), dtype=np.uint8)}
    tall_hw = choose_input_shape([1240 / 500])[0]
    print(f"{'camera image':<16} {'model input':<12} {'placement':<22} {'median ms':>9} {'p90 ms':>8}")
    for name, image in cameras.items():
        for hw in ((256, 256), tall_hw):
            for label, spec in (("stretch", InputSpec(height=hw[0], width=hw[1])),
                                ("letterbox", InputSpec(height=hw[0], width=hw[1], fit="letterbox"))):
                med, p90 = time_ms(lambda s=spec, im=image: preprocess(im, s, "BGR"), args.runs)
                print(f"{name:<16} {hw[0]}x{hw[1]:<8} {label:<22} {med:9.3f} {p90:8.3f}")
        spec = InputSpec(height=256, width=256, tiles=TileSpec(overlap=0.25))
        x = preprocess(image, spec, "BGR")
        med, p90 = time_ms(lambda s=spec, im=image: preprocess(im, s, "BGR"), max(20, args.runs // 4))
        print(f"{name:<16} {'256x256':<12} {f'{len(x)} tiles, preprocess':<22} {med:9.3f} {p90:8.3f}")
        m = _manifest(spec)
        out = {"score": np.zeros(len(x), np.float32), "anomaly_map": np.zeros((len(x), 1, 256, 256), np.float32)}
        med, p90 = time_ms(lambda o=out, hw=image.shape[:2], m=m: restore_outputs(o, hw, m),
                           max(20, args.runs // 4))
        print(f"{name:<16} {'256x256':<12} {f'{len(x)} tiles, stitch map':<22} {med:9.3f} {p90:8.3f}")


if __name__ == "__main__":
    main()
