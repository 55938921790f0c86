"""Detection quality on an MVTec-format category: train → export → score through ONNX Runtime, with the
paper's ablation from the same run (its students train independently, so the maps of one run give it):

  stpm   — STPM pair only:              Π_k d1_k
  pairs  — both student-teacher pairs:  Π_k (d1_k + d2_k)
  rstpm  — full RSTPM, the deployed map: (Π_k (d1_k + d2_k))^e × discriminator probability
           (e = st_exponent: 1 is the paper's product, 0 the discriminator alone)
  disc   — the discriminator's probability map alone (for comparison when e ≠ 0)
  paper  — when e ≠ 1: the same weights exported with the paper's product (e = 1)

Prints one table (image AUROC, pixel AUROC, AUPRO@30 %) plus the training time, and writes
OUT/quality.json. Example (the 20-minute CPU budget of issue 3):

  python benchmarks/quality.py --data ../shared/data --category magnetic_tile --out /tmp/q \
      --set epochs1=19 --set batch_size1=8 --set epochs2=40 --set pool_factor=1.0
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from edge_inspect.data.mvtec import MVTecCategory, load_image, load_mask  # noqa: E402
from edge_inspect.evaluation import metrics as M  # noqa: E402
from edge_inspect.manifest import load_manifest  # noqa: E402
from edge_inspect.preprocess import preprocess  # noqa: E402

VARIANTS = {"stpm": "stpm_map", "pairs": "st_map", "rstpm": "anomaly_map", "disc": "disc_prob"}


def score_test_set(model_dir: Path, root: str, category: str, progress: bool = True):
    """Per variant: image scores (N,), maps (N,H,W) float32; plus labels (N,), masks (N,H,W) bool."""
    import cv2

    manifest = load_manifest(model_dir)
    samples = MVTecCategory(root, category).test_samples(require_masks=False)
    scores = {v: [] for v in VARIANTS}
    maps = {v: [] for v in VARIANTS}
    labels, masks, latency = [], [], []
    h, w = manifest.input.height, manifest.input.width
    try:
        from tqdm import tqdm

        it = tqdm(samples, desc="scoring", disable=not progress)
    except ImportError:
        it = samples
    with OnnxRuntimeBackend(model_dir, manifest) as backend:
        for s in it:
            img = load_image(s.path)
            t0 = time.perf_counter()
            out = backend.infer({"image": preprocess(img, manifest.input, channel_order="RGB")})
            latency.append((time.perf_counter() - t0) * 1000)
            for v, key in VARIANTS.items():
                m = out[key][0, 0]
                scores[v].append(float(m.max()))
                maps[v].append(m.astype(np.float32))
            labels.append(s.label)
            if s.mask_path is not None:
                mk = load_mask(s.mask_path, img.shape[:2])
                masks.append(cv2.resize(mk.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool))
            else:
                masks.append(np.zeros((h, w), bool))
    return scores, maps, np.asarray(labels), masks, latency


def table(scores, maps, labels, masks, variants=tuple(VARIANTS)) -> dict:
    rows = {}
    for v in variants:
        rows[v] = {
            "image_auroc": M.image_auroc(labels, scores[v]),
            "pixel_auroc": M.pixel_auroc(masks, maps[v]),
            "aupro_30": M.aupro(masks, maps[v]),
        }
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="edge")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/run and OUT/model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    overrides = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    from trainer.config import make_config
    from trainer.export import export
    from trainer.train import train

    cfg = make_config(args.profile, overrides)
    train_s = None
    if not args.skip_train:
        t0 = time.time()
        train(cfg, args.data, args.category, out / "run", resume=True)
        train_s = time.time() - t0
        export(out / "run", out / "model")
    scores, maps, labels, masks, latency = score_test_set(out / "model", args.data, args.category)
    # With st_exponent 0 the deployed map is the discriminator's already: no separate row.
    rows = table(scores, maps, labels, masks, [v for v in VARIANTS if v != "disc" or cfg.model.st_exponent != 0.0])
    if cfg.model.st_exponent != 1.0:
        # The paper's final map (st × discriminator) from the same trained weights: only the head differs.
        paper_dir = out / "model_paper_product"
        if not args.skip_train or not paper_dir.is_dir():
            export(out / "run", paper_dir, head_settings={"st_exponent": 1.0})
        p_scores, p_maps, *_ = score_test_set(paper_dir, args.data, args.category)
        rows["paper"] = table(p_scores, p_maps, labels, masks, ["rstpm"])["rstpm"]
    result = {"settings": cfg.to_dict(), "train_seconds": train_s, "latency_ms_median": float(np.median(latency)),
              "n_test": int(len(labels)), "n_defect": int(labels.sum()), "ablation": rows}
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"\n{args.category}: {len(labels)} test images ({int(labels.sum())} defective); "
          f"training {f'{train_s:.0f} s' if train_s else 'reused'}; ORT latency median {np.median(latency):.1f} ms/image")
    print(f"{'variant':<34} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO@30%':>10}")
    e = cfg.model.st_exponent
    names = {"stpm": "STPM pair only", "pairs": "both student-teacher pairs",
             "rstpm": f"full RSTPM (st^{e:g} x discriminator)", "disc": "discriminator map alone",
             "paper": "full RSTPM, paper's st x discriminator"}
    for v, r in rows.items():
        print(f"{names[v]:<34} {r['image_auroc']:>11.4f} {r['pixel_auroc']:>11.4f} {r['aupro_30']:>10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
