"""Which map carries the detection? Per-map and per-defect-type AUROC of a trained run (torch, CPU).

For every test image of an MVTec-format category it computes, at the stride-4 resolution (H/4, W/4):
each student-teacher distance map (pair p ∈ {1, 2}, stride k ∈ {4, 8, 16}), the discriminator's
probability, and the final map st^e × disc for several exponents e (see ModelConfig.st_exponent).
It prints image AUROC / pixel AUROC overall and per defect type, so one sees which defect type
decides the pixel figure and what each part of RSTPM contributes. Example (issue 3):

  python benchmarks/map_breakdown.py --run OUT/run --data ../shared/data --category magnetic_tile
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def collect(run: str, root: str, category: str):
    """Maps {name: (N, h, w)}, labels (N,), masks (N, h, w) bool, types (N,) for the test set."""
    import cv2
    import torch

    from edge_inspect.data.mvtec import MVTecCategory, load_image, load_mask
    from edge_inspect.preprocess import preprocess
    from trainer.train import input_spec, load_trained

    model, cfg, _ = load_trained(run)
    model = model.to(memory_format=torch.channels_last)
    spec = input_spec(cfg)
    maps, labels, masks, types = {}, [], [], []
    samples = MVTecCategory(root, category).test_samples(require_masks=False)
    with torch.no_grad():
        for s in samples:
            img = load_image(s.path)
            x = torch.from_numpy(preprocess(img, spec, channel_order="RGB"))
            x = x.contiguous(memory_format=torch.channels_last)
            t1, s1, t2, s2 = model.features(x)
            d1, d2 = model.head.pair_maps(t1[:3], s1, t2, s2)  # (1,3,h4,w4) each: strides 4, 8, 16
            found = {}
            for p, d in ((1, d1), (2, d2)):
                if d is not None:  # pair 2 is absent when the run was trained without it
                    found.update({f"d{p}_{stride}": d[0, k] for k, stride in enumerate((4, 8, 16))})
            if model.head.use_disc:
                found["disc"] = torch.sigmoid(model.head.disc_logit(model.head.disc_input(d1, d2)))[0, 0]
            for name, m in found.items():
                maps.setdefault(name, []).append(m.numpy())
            h, w = d1.shape[-2:]
            mk = load_mask(s.mask_path, img.shape[:2]) if s.mask_path else np.zeros(img.shape[:2], bool)
            masks.append(cv2.resize(mk.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool))
            labels.append(s.label)
            types.append(Path(s.rel_path).parts[1])
    return {k: np.stack(v) for k, v in maps.items()}, np.asarray(labels), np.stack(masks), np.asarray(types)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="training run folder (holds model.pt)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    args = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    maps, y, masks, types = collect(args.run, args.data, args.category)
    if "disc" in maps:
        st = np.prod([maps[f"d1_{k}"] + maps.get(f"d2_{k}", 0.0) for k in (4, 8, 16)], axis=0)
        for e in (0.5, 1.0):  # e = 0 is the "disc" row itself
            maps[f"st^{e:g} x disc"] = st**e * maps["disc"]
    kinds = sorted(set(types) - {"good"})
    pixels = {t: int(masks[types == t].sum()) for t in kinds}
    total = max(1, sum(pixels.values()))
    print("defect pixels per type: " + ", ".join(f"{t} {100 * n / total:.0f} %" for t, n in pixels.items()))
    print(f"{'map':<14} {'all':>11} " + " ".join(f"{t[:10]:>11}" for t in kinds) + "   (image / pixel AUROC)")
    for name, m in maps.items():
        score = m.reshape(len(m), -1).max(axis=1)
        cells = [f"{roc_auc_score(y, score):.3f}/{roc_auc_score(masks.ravel(), m.ravel()):.3f}"]
        for t in kinds:
            sel = (types == "good") | (types == t)
            cells.append(f"{roc_auc_score(y[sel], score[sel]):.2f}/"
                         f"{roc_auc_score(masks[sel].ravel(), m[sel].ravel()):.2f}")
        print(f"{name:<14} " + " ".join(f"{c:>11}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
