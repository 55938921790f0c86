"""Pack an MVTec category and the edge profile's teacher weights small enough to travel to a borrowed
GPU machine that has torch but no internet and a size limit on what can be sent (64 MiB here).

What it writes under OUT (each step exact, nothing approximated):
  data/<category>/...      every image resized to the model input exactly as the trainer and the runtime
                           do (whole image, bilinear; masks nearest, >127), stored as lossless WebP;
                           masks as PNG. Training and quality.py's scores are unchanged by this: both
                           resize to the same size with the same filter, and resizing to the size an
                           image already has is a copy. (Not for `edge-inspect eval`, which reports at
                           the original resolution.)
  md5.json                 md5 and channel count of every stored pixel array, checked by unpack.py
  weights/<name>.pth.xz    only the ImageNet tensors the teachers use (stem + blocks up to their deepest
                           tap): 16 MB instead of 42 MB
  wheels/ (--wheels)       the packages the device's Python 3.12 lacks (pydantic, efficientnet-lite-pytorch)

magnetic_tile at 256²: 44 MiB of data + 14.6 MiB of weights + 2.7 MiB of wheels.

  python benchmarks/remote_gpu/pack.py --data ../shared/data --category magnetic_tile --out .gpu --wheels
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

WHEELS = ["pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5",
          "efficientnet-lite-pytorch==0.1.0"]
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def pack_one(path: Path, src: Path, dst: Path, size: int) -> tuple[str, dict]:
    """Resize one file as the trainer would and store it; returns (relative png path, {md5, channels}) where
    the md5 is of the stored pixel array (grey, or RGB order for colour images)."""
    from PIL import Image

    rel = path.relative_to(src)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint8:
        raise SystemExit(f"{path}: not an 8-bit image; pack.py handles 8-bit data only")
    if rel.parts[0] == "ground_truth":
        img = (img if img.ndim == 2 else img[:, :, :3].max(axis=2)) > 127
        out_img = cv2.resize(img.astype(np.uint8) * 255, (size, size), interpolation=cv2.INTER_NEAREST)
        out = dst / rel.with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), out_img)
    else:
        out_img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out = dst / rel.with_suffix(".webp")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out_img.ndim == 3:  # WebP stores RGB; alpha is dropped as the loaders drop it
            out_img = cv2.cvtColor(out_img[:, :, :3], cv2.COLOR_BGR2RGB)
        Image.fromarray(out_img).save(out, "WEBP", lossless=True, quality=100, method=6)
    digest = hashlib.md5(np.ascontiguousarray(out_img).tobytes()).hexdigest()
    return str(rel.with_suffix(".png")), {"md5": digest, "channels": 1 if out_img.ndim == 2 else 3}


def trunk_weights(name: str, deepest: bool) -> dict:
    """The ImageNet tensors a Teacher(name) actually loads, under the EfficientNet's own key names."""
    import torch

    from trainer.backbones import effnet_weights_path
    from trainer.model import Teacher

    full = torch.load(effnet_weights_path(name), map_location="cpu", weights_only=True)
    n_blocks = len(Teacher(name, with_deepest=deepest).net.blocks)
    return {k: v for k, v in full.items()
            if k.startswith(("_conv_stem", "_bn0")) or (k.startswith("_blocks.") and int(k.split(".")[1]) < n_blocks)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--wheels", action="store_true", help="also pip-download the wheels (cp312, manylinux)")
    args = ap.parse_args(argv)
    import torch

    from trainer.config import make_config

    src = Path(args.data) / args.category
    out = Path(args.out)
    dst = out / "data" / args.category
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXT)
    with ProcessPoolExecutor() as ex:
        md5 = dict(ex.map(partial(pack_one, src=src, dst=dst, size=args.image_size), files, chunksize=16))
    for extra in src.glob("*.csv"):
        shutil.copy(extra, dst / extra.name)
    (out / "md5.json").write_text(json.dumps(md5))
    model = make_config("edge").model
    (out / "weights").mkdir(exist_ok=True)
    for name, deepest in ((model.teacher1, True), (model.teacher2, False)):
        buf = io.BytesIO()
        torch.save(trunk_weights(name, deepest), buf)
        (out / "weights" / f"{name}.pth.xz").write_bytes(lzma.compress(buf.getvalue(), preset=9))
    if args.wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
                        "-d", str(out / "wheels"), *WHEELS], check=True)
    print(f"packed {len(md5)} files into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
