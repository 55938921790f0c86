"""The defect archive: every NG part (and a sample of OK parts) kept on disk for quality review.

Per stored part, in ``<dir>/<YYYYMMDD>/<camera>/``:
  ``<HHMMSS>_<seq>_<label>.png`` (or ``.jpg``)  the camera image as captured (PNG keeps 16-bit mono)
  ``..._overlay.jpg``                           heat map, defect boxes and a caption (judged parts only)
  ``....json``                                  the verdict as published, plus where the files are
and one index row (archive.index). ``ArchiveStore`` does the work synchronously; ``ArchiveWriter`` runs
it in its own thread behind a bounded queue (a full queue is a counted drop, never a wait).

Retention: before a part is written, the oldest parts of this station are deleted until the new one fits
under ``max_size_mb`` (files plus the SQLite index), so the cap is never passed; parts older than
``max_age_days`` are deleted at start and every minute. A failed write (disk full: ENOSPC, any OSError,
a database error) is a counted archive error; the part's partial files are removed and the line goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import re
import socket
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..pipeline.observers import ObserverWorker, PartResult
from .index import ArchiveIndex, db_errors, open_index
from .settings import ArchiveSettings

log = logging.getLogger(__name__)

_AGE_CHECK_S = 60.0
_EVICT_BATCH = 64
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    return _SAFE.sub("_", text).strip("._") or "camera"


class ArchiveStore:
    """Archive folder + index; ``store(result)`` writes one part. Counters: stored, errors, disk_full,
    evicted (retention), bytes (this station's total in the index)."""

    def __init__(self, settings: ArchiveSettings, index: ArchiveIndex | None = None, clock=time.time):
        if settings.dir is None:
            raise DataError("the archive needs a folder: pass --archive DIR or set [archive] dir")
        self.settings = settings
        self.dir = Path(settings.dir)
        self.station = settings.station or socket.gethostname()
        self._clock = clock
        self.index = index if index is not None else open_index(self.dir, settings.index_url)
        self.max_bytes = int(settings.max_size_mb * 1024 * 1024)
        self.total = self.index.total_bytes(self.station)
        self._next_age_check = 0.0
        self.counters = {"stored": 0, "errors": 0, "disk_full": 0, "evicted": 0}
        self._ok_seen: dict[str, int] = {}  # per camera: each camera's OK parts are sampled evenly
        self._db_errors = db_errors()

    # ---- what to keep -------------------------------------------------------------------------

    def wants(self, label: str, camera_id: str = "") -> bool:
        """Every NG part; unknown ones when configured; OK parts at ``ok_sample`` (spread evenly: the
        k-th OK part of a camera is kept when floor(k * share) steps up). Counted per camera, so cameras
        taking turns (a station) are each sampled at the share, not one camera's parts every time."""
        if label == "ng":
            return True
        if label == "unknown":
            return self.settings.store_unknown
        share = self.settings.ok_sample
        if share <= 0:
            return False
        k = self._ok_seen[camera_id] = self._ok_seen.get(camera_id, 0) + 1
        return math.floor(k * share) > math.floor((k - 1) * share)

    # ---- writing ------------------------------------------------------------------------------

    def encode(self, result: PartResult) -> dict[str, bytes]:
        """The part's files in memory: {"image": ..., "overlay": ... (judged parts), "verdict": JSON}."""
        import cv2

        from ..overlay import caption, render_overlay, to_rgb

        s = self.settings
        image = result.frame.image
        if s.image_format == "png":
            ok, img_buf = cv2.imencode(".png", image)
        else:
            img8 = image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)
            ok, img_buf = cv2.imencode(".jpg", img8, [cv2.IMWRITE_JPEG_QUALITY, s.jpeg_quality])
        if not ok:
            raise DataError(f"part {result.verdict.seq}: the image cannot be encoded")
        files = {"image": img_buf.tobytes()}
        v = result.verdict
        if result.label != "unknown" and v.score is not None:
            record = {"label": result.label, "score": v.score, "threshold": v.threshold, "regions": v.regions}
            rgb = render_overlay(to_rgb(image), result.heatmap(), v.regions, caption(record), result.label)
            ok, ov_buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
            if ok:
                files["overlay"] = ov_buf.tobytes()
        return files

    def _paths(self, result: PartResult) -> dict[str, str]:
        t = time.gmtime(result.frame.t_wall)
        folder = f"{time.strftime('%Y%m%d', t)}/{safe_name(result.camera_id)}"
        stem = f"{folder}/{time.strftime('%H%M%S', t)}_{result.verdict.seq}_{result.label}"
        return {"image": f"{stem}.{'png' if self.settings.image_format == 'png' else 'jpg'}",
                "overlay": f"{stem}_overlay.jpg", "verdict": f"{stem}.json"}

    def store(self, result: PartResult) -> int | None:
        """Write one part (files, then its index row); its row id, or None when it failed (counted)."""
        self.expire_old()
        try:
            files = self.encode(result)
        except Exception as exc:  # noqa: BLE001 - an odd frame is a counted archive error, not a dead writer
            self._count_error(result, exc)
            return None
        paths = self._paths(result)
        verdict = {**result.verdict.to_dict(), "label": result.label, "station": self.station,
                   "files": {k: paths[k] for k in ("image", "overlay") if k in files}}
        files["verdict"] = json.dumps(verdict, default=_json_default).encode()
        size = sum(len(b) for b in files.values())
        if not self._make_room(size):
            self._count_error(result, DataError(f"a part of {size} bytes is larger than the archive cap"))
            return None
        written: list[Path] = []
        try:
            for key, data in files.items():
                written.append(self._write(paths[key], data))
            row = {"station": self.station, "camera_id": result.camera_id, "seq": result.verdict.seq,
                   "part_id": result.verdict.part_id, "t_wall": result.frame.t_wall, "label": result.label,
                   "score": result.verdict.score, "threshold": result.verdict.threshold,
                   "model_id": result.verdict.model_id, "model_version": result.verdict.model_version,
                   "image_path": paths["image"], "overlay_path": paths["overlay"] if "overlay" in files else None,
                   "verdict_path": paths["verdict"], "bytes": size}
            new_id = self.index.add(row)
        except (OSError, *self._db_errors) as exc:
            self.index.rollback()
            for p in written:
                p.unlink(missing_ok=True)
            self._count_error(result, exc)
            return None
        self.total += size
        self.counters["stored"] += 1
        return new_id

    def _write(self, rel: str, data: bytes) -> Path:
        """Write ``data`` to a temporary name, then rename: a crash never leaves a half file under its name."""
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            tmp.replace(path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def _count_error(self, result: PartResult, exc: BaseException) -> None:
        self.counters["errors"] += 1
        full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "full" in str(exc).lower()
        if full:
            self.counters["disk_full"] += 1
        n = self.counters["errors"]
        if n <= 5 or n % 100 == 0:
            log.error("archive: part %d of %s NOT stored (%d archive errors so far%s): %s", result.verdict.seq,
                      result.camera_id, n, ", disk full" if full else "", exc)

    # ---- retention ----------------------------------------------------------------------------

    def _budget(self) -> int:
        """Bytes the part files may take: the cap less what the index files take now (three stat calls)."""
        return self.max_bytes - self.index.files_bytes()

    def _make_room(self, size: int) -> bool:
        """Delete this station's oldest parts until ``size`` more bytes fit under the cap; False when they
        cannot (the part alone is over the cap)."""
        budget = self._budget()
        if size > budget:
            return False
        while self.total + size > budget:
            rows = self.index.oldest(self.station, _EVICT_BATCH)
            if not rows:
                self.total = 0  # the index says nothing is left: our running total was off
                break
            take = []
            for row in rows:
                if self.total + size <= budget:
                    break
                take.append(row)
                self.total -= int(row["bytes"])
            self._delete(take)
        return True

    def expire_old(self) -> None:
        """Delete parts older than ``max_age_days`` (checked at most once a minute)."""
        now = self._clock()
        if self.settings.max_age_days is None or now < self._next_age_check:
            return
        self._next_age_check = now + _AGE_CHECK_S
        cutoff = now - self.settings.max_age_days * 86400.0
        while True:
            rows = self.index.oldest(self.station, _EVICT_BATCH * 4, before=cutoff)
            if not rows:
                return
            self.total -= sum(int(r["bytes"]) for r in rows)
            self._delete(rows)

    def _delete(self, rows: list[dict]) -> None:
        """Rows first, then their files: a crash in between leaves stray files, never a dangling row."""
        if not rows:
            return
        try:
            self.index.delete([r["id"] for r in rows])
        except self._db_errors as exc:
            self.index.rollback()
            self.counters["errors"] += 1
            log.error("archive: retention could not delete %d rows: %s", len(rows), exc)
            return
        for row in rows:
            for key in ("image_path", "overlay_path", "verdict_path"):
                if row.get(key):
                    (self.dir / row[key]).unlink(missing_ok=True)
        self.counters["evicted"] += len(rows)

    def stats(self) -> dict:
        return {**self.counters, "bytes": self.total, "cap_bytes": self.max_bytes}

    def close(self) -> None:
        self.index.close()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class ArchiveWriter(ObserverWorker):
    """The archive as a pipeline observer: NG (and sampled OK) parts queued for the writer thread."""

    name = "archive"

    def __init__(self, settings: ArchiveSettings, store: ArchiveStore | None = None):
        super().__init__(queue_size=settings.queue_size)
        self.store = store if store is not None else ArchiveStore(settings)

    def wants(self, result: PartResult) -> bool:
        return self.store.wants(result.label, result.camera_id)

    def handle(self, result: PartResult) -> None:
        self.store.store(result)

    def idle(self) -> None:
        self.store.expire_old()

    def finish(self) -> None:
        self.store.close()

    def stats(self) -> dict:
        out = super().stats()
        s = self.store.stats()
        out["errors"] += s.pop("errors")  # handle() never raises: store errors are the archive's errors
        out.update(s)
        return out
