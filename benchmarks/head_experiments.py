"""Heads tried on a finished training run without retraining it (issue 19, item 3), scored on validation and,
for the record, on the test set. Decisions use the validation columns only.

``knn``: a PatchCore-like nearest-neighbour map. Teacher 1's stride-8 and stride-16 features (3 × 3 mean,
the stride-16 map upsampled to stride 8), a greedy k-centre coreset of ``--bank`` rows out of every training
good's patches, and per patch the Euclidean distance to the nearest bank row, smoothed like the deployed map.
It is scored alone and fused into the deployed head: map + w · z(kNN map), score z(max) + z(global), with every
statistic from the calibration half of the held-out goods.

``gaussian``: estimators of the image-level Gaussian (which taps, joint or block-diagonal covariance, log of the
pooled standard deviations), each scored by image AUROC of its Mahalanobis distance.

Validation = the run's validation goods (the half of its held-out goods that never sets a statistic) + one
validation anomaly on each (trainer.validation); every statistic the fusion needs comes from the other half
(the calibration goods). Pixel AUROC here is at the model's input size (256² for magnetic_tile), so it differs a
little from ``edge-inspect eval``'s, which works in each image's own frame.

  python benchmarks/head_experiments.py --run RUN --what knn --bank 1000 --bank 3000
  python benchmarks/head_experiments.py --run RUN --what gaussian

Rows of the magnetic_tile runs so far: benchmarks/head_experiments_results.jsonl (``--results`` appends).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_inspect.data.mvtec import MVTecCategory, load_mask
from edge_inspect.evaluation.metrics import image_auroc, pixel_auroc
from edge_inspect.gaussian import fit_gaussian
from trainer.data import load_rgb_stack, to_input
from trainer.gaussian import pooled_statistics
from trainer.model import smooth_full
from trainer.train import fused_outputs, head_components, input_spec, load_trained, score_statistics
from trainer.validation import make_validation_set, split_holdout

TAPS = ("t1_4", "t1_8", "t1_16", "t1_32", "t2_4", "t2_8", "t2_16")


def batched(fn, x: torch.Tensor, batch: int = 16) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def load_test_set(cat_dir: Path, hw: tuple[int, int]):
    """MVTec test images, labels (N,) and masks (N, H, W) bool resized (nearest) to the model's input size."""
    samples = MVTecCategory(cat_dir.parent, cat_dir.name).test_samples()
    masks = [np.zeros(hw, bool) if s.mask_path is None else
             cv2.resize(load_mask(s.mask_path).astype(np.uint8), hw[::-1], interpolation=cv2.INTER_NEAREST) > 0
             for s in samples]
    return [s.path for s in samples], np.array([s.label for s in samples]), np.stack(masks)


def patch_features(model, x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) → (B, 40 + 112, H/8, W/8) for Lite0: teacher 1's stride-8 and stride-16 taps, 3 × 3 mean."""
    t1 = model.teacher1(x)
    f8, f16 = (F.avg_pool2d(f, 3, 1, 1, count_include_pad=False) for f in (t1[1], t1[2]))
    return torch.cat([f8, F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)], 1)


def coreset(rows: torch.Tensor, k: int, dims: int = 32, seed: int = 0) -> torch.Tensor:
    """Greedy k-centre selection (PatchCore's) of ``k`` of ``rows`` (N, D), on a random projection to ``dims``."""
    g = torch.Generator().manual_seed(seed)
    z = rows @ (torch.randn(rows.shape[1], dims, generator=g) / dims**0.5) if rows.shape[1] > dims else rows
    picked = [int(torch.randint(len(z), (1,), generator=g))]
    nearest = (z - z[picked[0]]).pow(2).sum(1)
    for _ in range(k - 1):
        picked.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, (z - z[picked[-1]]).pow(2).sum(1))
    return rows[picked]


def knn_map(f: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Distance (B,1,h,w) of each patch of ``f`` (B,D,h,w) to its nearest row of ``bank`` (K, D)."""
    b, d, h, w = f.shape
    q = f.permute(0, 2, 3, 1).reshape(-1, d)
    d2 = q.pow(2).sum(1, keepdim=True) - 2 * q @ bank.T + bank.pow(2).sum(1)[None]
    return d2.amin(1).clamp_min(0).sqrt().reshape(b, 1, h, w)


def aurocs(labels, masks, maps, scores=None) -> list[float]:
    s = maps.flatten(1).amax(1).numpy() if scores is None else np.asarray(scores)
    pixel = pixel_auroc(list(masks), list(maps[:, 0].numpy()))
    return [round(float(image_auroc(labels, s)), 4), round(float(pixel), 4)]


def run_knn(model, sets: dict, train_x: torch.Tensor, banks: list[int], weights: list[float], hw) -> list[dict]:
    head = model.head
    t0 = time.time()
    feats = batched(lambda x: patch_features(model, x), train_x)
    rows_all = feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])
    print(f"{len(rows_all)} training patches of {rows_all.shape[1]} features ({time.time() - t0:.0f} s)", flush=True)
    comps = {n: (head_components(model, x), batched(lambda z: patch_features(model, z), x)) for n, (x, _, _) in
             sets.items()}
    (c_rstpm, c_region, c_glob), _ = comps["calib"]
    stats = score_statistics(head, c_rstpm, c_region, c_glob)
    c_map, _ = fused_outputs(head, c_rstpm, c_region, c_glob, *stats)
    deployed = {n: fused_outputs(head, *comps[n][0], *stats) for n in ("val", "test")}  # (maps, scores)
    results = []
    for k in banks:
        t0 = time.time()
        bank = coreset(rows_all, k)
        seconds = round(time.time() - t0, 1)
        knn = {n: smooth_full(batched(lambda z, b=bank: knn_map(z, b), f, 64), hw, head.blur)
               for n, (_, f) in comps.items()}
        mean, std = knn["calib"].mean(), knn["calib"].std()
        for name in ("val", "test"):
            _, labels, masks = sets[name]
            glob = comps[name][0][2]
            deployed_map, deployed_score = deployed[name]
            row = {"what": "knn", "bank": k, "coreset_s": seconds, "set": name,
                   "knn_alone": aurocs(labels, masks, knn[name]),
                   "deployed": aurocs(labels, masks, deployed_map, deployed_score.numpy())}
            for w in weights:
                local_c = (c_map + w * (knn["calib"] - mean) / std).flatten(1).amax(1)
                fused = deployed_map + w * (knn[name] - mean) / std
                local = fused.flatten(1).amax(1)
                score = (local - local_c.mean()) / local_c.std() + (glob - c_glob.mean()) / c_glob.std()
                row[f"fused_w{w:g}"] = aurocs(labels, masks, fused, score.numpy())
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def pooled_taps(model, x: torch.Tensor) -> list[np.ndarray]:
    """Per tap of both teachers (TAPS): (N, 2C) spatial mean and standard deviation, as the deployed Gaussian
    pools them (trainer.gaussian.pooled_statistics)."""
    out = [[] for _ in TAPS]
    with torch.no_grad():
        for i in range(0, len(x), 16):
            z = x[i : i + 16]
            for k, f in enumerate(list(model.teacher1(z)) + list(model.teacher2(z))):
                out[k].append(pooled_statistics([f]))
    return [torch.cat(o).double().numpy() for o in out]


GAUSSIANS = {  # name: (blocks of TAPS indices, each block its own Gaussian; log of the std columns)
    "deployed: t1_8+t1_16+t2_8+t2_16, joint": ([[1, 2, 5, 6]], False),
    "same taps, one Gaussian per tap": ([[1], [2], [5], [6]], False),
    "same taps, one Gaussian per teacher": ([[1, 2], [5, 6]], False),
    "same taps, joint, log std": ([[1, 2, 5, 6]], True),
    "+ t1_32, joint": ([[1, 2, 3, 5, 6]], False),
    "+ t1_32, one per tap": ([[1], [2], [3], [5], [6]], False),
    "+ t1_4 and t2_4, one per tap": ([[0], [1], [2], [4], [5], [6]], False),
    "teacher 1 only": ([[1, 2]], False),
    "teacher 2 only": ([[5, 6]], False),
}


def run_gaussian(model, sets: dict, train_x: torch.Tensor) -> list[dict]:
    pooled = {"train": pooled_taps(model, train_x)} | {n: pooled_taps(model, x) for n, (x, _, _) in sets.items()}
    results = []
    for name, (blocks, log_std) in GAUSSIANS.items():
        dist = {n: 0.0 for n in ("val", "test")}
        for block in blocks:
            cols = {n: np.concatenate([pooled[n][i] for i in block], 1) for n in pooled}
            if log_std:  # each tap's columns are its C means, then its C standard deviations
                halves = [pooled["train"][i].shape[1] // 2 for i in block]
                std_cols = np.concatenate([np.r_[np.zeros(c, bool), np.ones(c, bool)] for c in halves])
                cols = {n: np.where(std_cols, np.log(np.maximum(v, 1e-12)), v) for n, v in cols.items()}
            mean, whiten, _ = fit_gaussian(cols["train"].astype(np.float32))
            for n in dist:
                dist[n] = dist[n] + (((cols[n] - mean) @ whiten.T.astype(np.float64)) ** 2).sum(1)
        row = {"what": "gaussian", "variant": name}
        row.update({f"{n}_image_auroc": round(float(image_auroc(sets[n][1], np.sqrt(d))), 4) for n, d in dist.items()})
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished training run (RUN/model.pt)")
    ap.add_argument("--what", choices=("knn", "gaussian"), required=True)
    ap.add_argument("--bank", type=int, action="append", help="kNN bank size (repeatable; default 1000 and 3000)")
    ap.add_argument("--weight", type=float, action="append", help="kNN fusion weight (repeatable; default 0.5 1 2)")
    ap.add_argument("--results", help="append the rows to this jsonl file")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, cfg, ckpt = load_trained(args.run)
    spec = input_spec(cfg)
    cat_dir = Path(ckpt["data"]["root"]) / ckpt["data"]["category"]
    calib, val = ckpt["data"]["holdout"], ckpt["data"].get("validation")
    if val is None:  # a run from before the calibration / validation split: split as export does
        calib, val, _ = split_holdout(calib)
    vset = make_validation_set([cat_dir / p for p in val], cfg, spec)
    test_paths, test_labels, test_masks = load_test_set(cat_dir, spec.hw)
    goods = lambda names: to_input(load_rgb_stack([cat_dir / p for p in names], spec), spec)  # noqa: E731
    calib_x = goods(calib)
    sets = {"val": (vset.images, vset.labels, vset.masks),
            "test": (to_input(load_rgb_stack(test_paths, spec), spec), test_labels, test_masks),
            "calib": (calib_x, np.zeros(len(calib_x), int), np.zeros((len(calib_x), *spec.hw), bool))}
    train_x = goods(ckpt["data"]["train"])
    if args.what == "knn":
        rows = run_knn(model, sets, train_x, args.bank or [1000, 3000], args.weight or [0.5, 1.0, 2.0], spec.hw)
    else:
        rows = run_gaussian(model, {k: v for k, v in sets.items() if k != "calib"}, train_x)
    if args.results:
        with open(args.results, "a") as f:
            f.writelines(json.dumps({"run": str(args.run), **r}) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
