"""Detection quality on an MVTec-format category: train → export → score through ONNX Runtime, with the
paper's ablation from the same run (its students train independently, so the maps of one run give it):

  stpm   — STPM pair only:              Π_k d1_k
  pairs  — both student-teacher pairs:  Π_k (d1_k + d2_k)
  rstpm  — full RSTPM, the paper's map: (Π_k (d1_k + d2_k))^e × discriminator probability
           (e = st_exponent: 1 is the paper's product, 0 the discriminator alone)
  disc   — the discriminator's probability map alone (for comparison when e ≠ 0)
  region — regional Gaussian alone: Mahalanobis distance of window-pooled teacher features (trainer.gaussian)
  global — image level only: Mahalanobis distance of the teachers' pooled features
  fused  — when region_weight or global_weight > 0, what is deployed: map z(rstpm) + r·z(region), score
           z(max of that map) + w·z(global)
  paper  — when e ≠ 1: the same weights exported with the paper's product (e = 1): its rstpm row and,
           when fused, its fused row (paper_fused)

Image AUROC is of each map's max, except for fused (the deployed score) and global. Prints one table
(image AUROC, pixel AUROC, AUPRO@30 %, image / pixel AUROC per defect type) plus the training time, and writes
OUT/quality.json. Example (the 20-minute CPU budget of issue 3):

  python benchmarks/quality.py --data ../shared/data --category magnetic_tile --out /tmp/q \
      --set epochs1=19 --set batch_size1=8 --set epochs2=40 --set pool_factor=1.0
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.data.mvtec import MVTecCategory, load_image, load_mask
from edge_inspect.evaluation import metrics as M
from edge_inspect.manifest import load_manifest
from edge_inspect.preprocess import preprocess

VARIANTS = {"stpm": "stpm_map", "pairs": "st_map", "rstpm": "rstpm_map", "disc": "disc_prob", "region": "region_map",
            "fused": "anomaly_map"}
# Model folders exported before the Gaussians have no rstpm_map (their anomaly_map is it) and no region_map.
FALLBACK = {"rstpm_map": "anomaly_map"}


def score_test_set(model_dir: Path, root: str, category: str, progress: bool = True):
    """Per variant: image scores (N,), maps (N,H,W) float32; plus labels (N,), masks (N,H,W) bool, latency
    (ms per image) and defect types (N,) ("good" for good images)."""
    import cv2

    manifest = load_manifest(model_dir)
    samples = MVTecCategory(root, category).test_samples(require_masks=False)
    scores = {v: [] for v in (*VARIANTS, "global", "deployed")}
    maps = {v: [] for v in VARIANTS}
    labels, masks, latency, types = [], [], [], []
    h, w = manifest.input.height, manifest.input.width
    try:
        from tqdm import tqdm

        it = tqdm(samples, desc="scoring", disable=not progress)
    except ImportError:
        it = samples
    with OnnxRuntimeBackend(model_dir, manifest, diagnostics=True) as backend:
        for s in it:
            img = load_image(s.path)
            t0 = time.perf_counter()
            out = backend.infer({"image": preprocess(img, manifest.input, channel_order="RGB")})
            latency.append((time.perf_counter() - t0) * 1000)
            for v, key in VARIANTS.items():
                key = key if key in out else FALLBACK.get(key)
                if key is None:
                    continue
                m = out[key][0, 0]
                scores[v].append(float(m.max()))
                maps[v].append(m.astype(np.float32))
            scores["deployed"].append(float(out["score"][0]))
            if "global_score" in out:  # model folders exported before the image-level Gaussian lack it
                scores["global"].append(float(out["global_score"][0]))
            labels.append(s.label)
            types.append(s.defect_type)
            if s.mask_path is not None:
                mk = load_mask(s.mask_path, img.shape[:2])
                masks.append(cv2.resize(mk.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool))
            else:
                masks.append(np.zeros((h, w), bool))
    return scores, maps, np.asarray(labels), masks, latency, np.asarray(types)


def table(scores, maps, labels, masks, types, variants=tuple(VARIANTS)) -> dict:
    """Rows {variant: image AUROC, pixel AUROC, AUPRO@30 %, image and pixel AUROC per defect type (each
    type against all good images)}; "global" has no map, "fused" is scored by the deployed score."""
    rows = {}
    for v in variants:
        image_scores = np.asarray(scores["deployed" if v == "fused" else v])
        row = {"image_auroc": M.image_auroc(labels, image_scores), "pixel_auroc": None, "aupro_30": None,
               "image_auroc_per_type": {}, "pixel_auroc_per_type": {}}
        if v != "global":
            row.update(pixel_auroc=M.pixel_auroc(masks, maps[v]), aupro_30=M.aupro(masks, maps[v]))
        for t in sorted(set(types) - {"good"}):
            sel = np.flatnonzero((types == "good") | (types == t))
            row["image_auroc_per_type"][t] = M.image_auroc(labels[sel], image_scores[sel])
            if v != "global":
                row["pixel_auroc_per_type"][t] = M.pixel_auroc([masks[i] for i in sel], [maps[v][i] for i in sel])
        rows[v] = row
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="edge")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="training setting (keys: edge-inspect train --list-settings)")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/run and OUT/model")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    from edge_inspect.cli.train_cmd import parse_sets
    from trainer.config import make_config
    from trainer.export import export
    from trainer.train import train

    cfg = make_config(args.profile, parse_sets(args.set))
    train_s = None
    if not args.skip_train:
        t0 = time.time()
        train(cfg, args.data, args.category, out / "run", resume=True)
        train_s = time.time() - t0
        export(out / "run", out / "model")
    scores, maps, labels, masks, latency, types = score_test_set(out / "model", args.data, args.category)
    # With st_exponent 0 the rstpm map is the discriminator's already: no separate row.
    fused = cfg.model.global_weight > 0 or cfg.model.region_weight > 0
    variants = ["stpm", "pairs", "rstpm"] + (["disc"] if cfg.model.st_exponent != 0.0 else [])
    variants += ((["region"] if scores["region"] else []) + (["global"] if scores["global"] else [])
                 + (["fused"] if fused else []))
    rows = table(scores, maps, labels, masks, types, variants)
    if cfg.model.st_exponent != 1.0:
        # The paper's final map (st × discriminator) from the same trained weights: only the head differs.
        paper_dir = out / "model_paper_product"
        if not args.skip_train or not paper_dir.is_dir():
            export(out / "run", paper_dir, head_settings={"st_exponent": 1.0})
        p_scores, p_maps, *_ = score_test_set(paper_dir, args.data, args.category)
        paper = table(p_scores, p_maps, labels, masks, types, ["rstpm", "fused"] if fused else ["rstpm"])
        rows["paper"] = paper["rstpm"]
        if fused:
            rows["paper_fused"] = paper["fused"]
    result = {"settings": cfg.to_dict(), "train_seconds": train_s, "latency_ms_median": float(np.median(latency)),
              "n_test": int(len(labels)), "n_defect": int(labels.sum()), "ablation": rows}
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print(f"\n{args.category}: {len(labels)} test images ({int(labels.sum())} defective); "
          f"training {f'{train_s:.0f} s' if train_s else 'reused'}; "
          f"ORT latency median {np.median(latency):.1f} ms/image")
    print(f"{'variant':<40} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO@30%':>10}")
    e = cfg.model.st_exponent
    names = {"stpm": "STPM pair only", "pairs": "both student-teacher pairs",
             "rstpm": f"full RSTPM (st^{e:g} x discriminator)", "disc": "discriminator map alone",
             "region": "regional Gaussian alone", "global": "image-level Gaussian alone",
             "fused": f"deployed: + {cfg.model.region_weight:g} region, + {cfg.model.global_weight:g} global",
             "paper": "full RSTPM, paper's st x discriminator",
             "paper_fused": "paper's map, fused as deployed"}
    cell = lambda x, w: f"{x:>{w}.4f}" if x is not None else f"{'-':>{w}}"  # noqa: E731
    kinds = list(next(iter(rows.values()))["image_auroc_per_type"])
    print(" " * 77 + "image / pixel AUROC per defect type")
    print(" " * 77 + " ".join(f"{t[:11]:>11}" for t in kinds))
    for v, r in rows.items():
        per_type = [f"{r['image_auroc_per_type'][t]:.2f}/"
                    + (f"{r['pixel_auroc_per_type'][t]:.2f}" if t in r["pixel_auroc_per_type"] else "-")
                    for t in kinds]
        print(f"{names[v]:<40} {cell(r['image_auroc'], 11)} {cell(r['pixel_auroc'], 11)} {cell(r['aupro_30'], 10)}  "
              + " ".join(f"{c:>11}" for c in per_type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
