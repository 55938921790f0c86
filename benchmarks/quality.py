"""Detection quality across categories: for each, train → export → score through ONNX Runtime, print image and
pixel AUROC, AUPRO@30 %, the escape rate at 1 % false rejects and the training time, and append one row per
category to a results file (benchmarks/quality_results.jsonl), so every experiment stays visible with its
settings and time.

Categories: ``--category NAME`` under ``--data`` (repeatable), ``--folder DIR`` (any MVTec-layout category
folder, repeatable) and ``--synth`` (the synthetic widget of ``edge-inspect synth``, generated under OUT).
Settings are chosen without test images: ``--head auto`` picks the head on validation at export (held-out
goods + pseudo-anomalies); the test set is read only here, after export, to score.

Per category it also prints the paper's ablation from the same run (its students train independently,
so the maps of one run give it):

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

Image AUROC is of each map's max, except for fused (the deployed score) and global. Each category's
folder OUT/<name> gets run/, model/ and quality.json. Example (the 20-minute CPU budget of issue 3):

  python benchmarks/quality.py --data ../shared/data --category magnetic_tile --synth --out /tmp/q \
      --head auto --set epochs1=19 --set batch_size1=8 --set epochs2=40 --set pool_factor=1.0 \
      --set max_train_images=300
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
from edge_inspect.preprocess import preprocess, restore_outputs

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
            # letterbox padding cropped off, tiles stitched: the maps are in the image's frame, then all
            # brought to the model's (h, w) like the masks below, so every image weighs the same
            out = restore_outputs(out, img.shape[:2], manifest)
            for v, key in VARIANTS.items():
                key = key if key in out else FALLBACK.get(key)
                if key is None:
                    continue
                m = out[key][0, 0]
                if m.shape != (h, w):
                    m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
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


RESULTS = Path(__file__).resolve().parent / "quality_results.jsonl"
SYNTH = {"n_train": 200, "n_test_good": 30, "n_test_per_defect": 10, "size": 256, "seed": 0}  # 40 held out: split
ESCAPE_AT_FRR = 0.01


def deployed_summary(scores, maps, labels, masks) -> dict:
    """What the line sees: image AUROC of the deployed score, pixel AUROC and AUPRO@30 % of the deployed
    map, and the share of defects let through at the threshold giving 1 % false rejects on the test goods."""
    s = np.asarray(scores["deployed"])
    point = M.threshold_for_frr(labels, s, ESCAPE_AT_FRR)
    return {"image_auroc": M.image_auroc(labels, s), "pixel_auroc": M.pixel_auroc(masks, maps["fused"]),
            "aupro_30": M.aupro(masks, maps["fused"]), "escape_at_1pct_frr": point["escape_rate"]}


def run_category(name: str, root: str, category: str, out: Path, cfg, head_auto: bool | None, skip_train: bool,
                 overrides: dict, from_run: Path | None = None) -> dict:
    """Train, export and score one category; print its ablation table; returns its results row.
    ``from_run``: export that finished run instead of training (its training time comes from its history)."""
    from edge_inspect.manifest import load_manifest
    from trainer.config import TrainConfig
    from trainer.export import export
    from trainer.train import train

    train_s = export_s = None
    run_dir = Path(from_run) if from_run else out / "run"
    if not skip_train:
        if from_run is None:
            t0 = time.time()
            train(cfg, root, category, run_dir, resume=True)
            train_s = time.time() - t0
        t0 = time.time()
        export(run_dir, out / "model", head_auto=head_auto)
        export_s = time.time() - t0
    history = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else {}
    if train_s is None and "stage1_seconds" in history:
        train_s = history["stage1_seconds"] + history.get("stage2_seconds", 0.0)
    manifest = load_manifest(out / "model")
    deployed_cfg = TrainConfig.from_dict(manifest.provenance.training_config)  # the head as exported
    scores, maps, labels, masks, latency, types = score_test_set(out / "model", root, category)
    mc = deployed_cfg.model
    fused = mc.global_weight > 0 or mc.region_weight > 0
    variants = ["stpm", "pairs", "rstpm"] + (["disc"] if mc.st_exponent != 0.0 else [])
    variants += ((["region"] if scores["region"] else []) + (["global"] if scores["global"] else [])
                 + (["fused"] if fused else []))
    rows = table(scores, maps, labels, masks, types, variants)
    if mc.st_exponent != 1.0:
        # The paper's final map (st × discriminator) from the same trained weights: only the head differs.
        paper_dir = out / "model_paper_product"
        if not skip_train or not paper_dir.is_dir():
            head = {k: getattr(mc, k) for k in ("map_sigma", "region_weight", "global_weight")}
            export(run_dir, paper_dir, head_settings={**head, "st_exponent": 1.0}, head_auto=False)
        p_scores, p_maps, *_ = score_test_set(paper_dir, root, category)
        paper = table(p_scores, p_maps, labels, masks, types, ["rstpm", "fused"] if fused else ["rstpm"])
        rows["paper"] = paper["rstpm"]
        if fused:
            rows["paper_fused"] = paper["fused"]
    last_val = next((h["val"] for h in reversed(history.get("history", [])) if "val" in h), None)
    summary = deployed_summary(scores, maps, labels, masks)
    result = {"settings": deployed_cfg.to_dict(), "train_seconds": train_s, "export_seconds": export_s,
              "latency_ms_median": float(np.median(latency)), "n_test": int(len(labels)),
              "n_defect": int(labels.sum()), "deployed": summary, "validation_last_epoch": last_val,
              "head_selection": manifest.provenance.validation, "ablation": rows}
    (out / "quality.json").write_text(json.dumps(result, indent=1))
    print_ablation(name, result, mc)
    trained = {k: getattr(deployed_cfg, k) for k in ("epochs1", "epochs2", "batch_size1", "pool_factor",
                                                      "max_train_images", "line_fraction", "image_size", "seed")}
    return {"category": name, "data": str(Path(root) / category), "overrides": overrides, "trained": trained,
            "run": str(run_dir),
            "head": "auto" if head_auto else ("fixed" if head_auto is False else "run default"),
            "deployed_head": {k: getattr(mc, k) for k in ("st_exponent", "map_sigma", "region_weight",
                                                          "global_weight", "region_window")},
            "train_seconds": train_s, "export_seconds": export_s, **summary,
            # the head selection's figure (full-resolution maps, chosen head) when there was one, else the
            # training's last per-epoch figure (stride-4 map, before fusion)
            "validation": (manifest.provenance.validation or {}).get("selected_figures") or last_val,
            "validation_source": "head selection" if manifest.provenance.validation else "last epoch",
            "n_test": result["n_test"], "n_defect": result["n_defect"], "out": str(out)}


def print_ablation(name: str, result: dict, mc) -> None:
    rows, train_s = result["ablation"], result["train_seconds"]
    print(f"\n{name}: {result['n_test']} test images ({result['n_defect']} defective); "
          f"training {f'{train_s:.0f} s' if train_s else 'reused'}; "
          f"ORT latency median {result['latency_ms_median']:.1f} ms/image")
    print(f"{'variant':<40} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO@30%':>10}")
    e = mc.st_exponent
    names = {"stpm": "STPM pair only", "pairs": "both student-teacher pairs",
             "rstpm": f"full RSTPM (st^{e:g} x discriminator)", "disc": "discriminator map alone",
             "region": "regional Gaussian alone", "global": "image-level Gaussian alone",
             "fused": f"deployed: + {mc.region_weight:g} region, + {mc.global_weight:g} global",
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


def print_summary(rows: list[dict]) -> None:
    print(f"\n{'category':<20} {'image AUROC':>11} {'pixel AUROC':>11} {'AUPRO@30%':>10} {'escape@1%FRR':>12} "
          f"{'train s':>8}  head (e, sigma, region, global) / validation figure")
    for r in rows:
        h, v = r["deployed_head"], r["validation"] or {}
        esc = f"{r['escape_at_1pct_frr']:.3f}" if r["escape_at_1pct_frr"] is not None else "-"
        train_s = f"{r['train_seconds']:.0f}" if r["train_seconds"] else "reused"
        print(f"{r['category']:<20} {r['image_auroc']:>11.4f} {r['pixel_auroc']:>11.4f} {r['aupro_30']:>10.4f} "
              f"{esc:>12} {train_s:>8}  {h['st_exponent']:g}, {h['map_sigma']:g}, {h['region_weight']:g}, "
              f"{h['global_weight']:g} / {v.get('figure', '-')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset root holding the --category folders")
    ap.add_argument("--category", action="append", default=[], help="category under --data (repeatable)")
    ap.add_argument("--folder", action="append", default=[], help="an MVTec-layout category folder (repeatable)")
    ap.add_argument("--synth", action="store_true", help="also the synthetic widget (generated under OUT)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--profile", default="edge")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="training setting (keys: edge-inspect train --list-settings)")
    ap.add_argument("--head", choices=("auto", "fixed"), help="head settings: chosen on validation at export, or "
                    "the config's (default: the config's head_selection)")
    ap.add_argument("--tag", default="", help="a note for the results row (what this experiment tries)")
    ap.add_argument("--results", default=str(RESULTS), help="jsonl file each category's row is appended to")
    ap.add_argument("--skip-train", action="store_true", help="reuse OUT/<category>/run and model")
    ap.add_argument("--from-run", metavar="RUN", help="export and score this finished training run (one category; "
                    "training time from its history) instead of training")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    from edge_inspect.cli.train_cmd import parse_sets
    from edge_inspect.errors import ConfigError
    from trainer.config import make_config

    overrides = parse_sets(args.set)
    cfg = make_config(args.profile, overrides)
    jobs = [(c, args.data, c) for c in args.category]
    if args.category and not args.data:
        raise ConfigError("--category needs --data")
    jobs += [(Path(f).name, str(Path(f).resolve().parent), Path(f).name) for f in args.folder]
    if args.synth:
        from edge_inspect.data.synth import make_synthetic_category

        synth_root = out / "synth_data"
        if not (synth_root / "widget").is_dir():
            make_synthetic_category(synth_root, "widget", **SYNTH)
        jobs.append(("widget (synthetic)", str(synth_root), "widget"))
    if not jobs:
        raise ConfigError("no category: give --category (with --data), --folder or --synth")
    if args.from_run and len(jobs) != 1:
        raise ConfigError("--from-run takes exactly one category")
    head_auto = None if args.head is None else args.head == "auto"
    rows = []
    for name, root, category in jobs:
        # One folder per category; a single --category keeps the old layout (OUT/run, OUT/model).
        cat_out = out if len(jobs) == 1 else out / category
        t0 = time.time()
        row = run_category(name, root, category, cat_out, cfg, head_auto, args.skip_train, overrides,
                           from_run=Path(args.from_run) if args.from_run else None)
        row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tag": args.tag, "profile": args.profile,
               **row, "wall_seconds": round(time.time() - t0, 1)}
        rows.append(row)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
    print_summary(rows)
    print(f"\nappended {len(rows)} row(s) to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
