"""Archived parts out to folders the other commands read.

``export(index, archive_dir, filters, out)`` copies the original images of the selected parts into
  ``<out>/test/good/``  OK parts:  ``calibrate --goods <out>/test`` (or ``<out>/test/good``) takes them;
  ``<out>/test/ng/``    NG parts:  ``calibrate --defects <out>/test`` takes them; and ``eval`` reads
                        ``<out>`` as an MVTec-style category once it also has a ``train/good`` folder
                        (eval checks that one exists; copy or link any good images there): defect type "ng",
                        no ground-truth masks, so eval gives image-level figures only;
plus ``<out>/parts.jsonl``: one line per exported part (its index row and the exported file). Unknown parts
are not exported (they have no confirmed label). File names are ``<id>_<camera>_<seq>.<ext>``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import DataError
from .index import ArchiveIndex, Filters
from .store import safe_name

FOLDERS = {"ok": "good", "ng": "ng"}


def export(index: ArchiveIndex, archive_dir: Path, filters: Filters, out: Path) -> dict[str, int]:
    """Copy the selected OK/NG parts' images into ``out`` (layout above); counts per label and ``missing``
    (rows whose image file is gone). DataError when nothing was selected."""
    labels = tuple(label for label in (filters.labels or ("ok", "ng")) if label in FOLDERS)
    if not labels:
        raise DataError("export takes OK and NG parts only (unknown parts have no confirmed label)")
    rows = index.query(Filters(**{**filters.__dict__, "labels": labels, "oldest_first": True}))
    if not rows:
        raise DataError("no archived part matches the filters")
    counts = dict.fromkeys(labels, 0)
    counts["missing"] = 0
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "parts.jsonl", "a") as listing:
            for row in rows:
                src = Path(archive_dir) / row["image_path"]
                if not src.is_file():
                    counts["missing"] += 1
                    continue
                name = f"{row['id']}_{safe_name(row['camera_id'])}_{row['seq']}{src.suffix}"
                dst = out / "test" / FOLDERS[row["label"]] / name
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                listing.write(json.dumps({**row, "exported": dst.relative_to(out).as_posix()}) + "\n")
                counts[row["label"]] += 1
    except OSError as exc:
        raise DataError(f"export to {out}: {exc.strerror or exc}: {exc.filename or ''}") from exc
    return counts
