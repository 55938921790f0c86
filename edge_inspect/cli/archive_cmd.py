"""``edge-inspect archive list|show|export``: look through the defect archive that ``run --archive`` keeps.

Usage::

    edge-inspect archive list --archive /var/lib/edge-inspect/archive --verdict ng --since 2026-11-26
    edge-inspect archive list --archive DIR --camera top          # one camera of a station
    edge-inspect archive show 42 --archive DIR
    edge-inspect archive export --archive DIR --verdict ok --out goods/      # then: calibrate --goods goods/test
    edge-inspect archive export --config /etc/edge-inspect/config.toml --verdict ng --min-score 4 --out ng/

The archive is ``--archive DIR`` or the config's ``[archive] dir`` (and ``index_url`` for a PostgreSQL index).
Times are ISO 8601 (``2026-11-26``, ``2026-11-26T08:00``; UTC unless they carry an offset) or epoch seconds.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from ..errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser("archive", help="list, show and export archived parts (run --archive)",
                              description="Look through the defect archive kept by 'run --archive'.")
    sub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    common = _common()
    ls = sub.add_parser("list", parents=[common], help="list archived parts, newest first")
    ls.add_argument("--limit", type=int, default=50, metavar="N", help="at most N parts (default 50; 0: all)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=list_parts)
    show = sub.add_parser("show", parents=[common], help="one part: its files and verdict")
    show.add_argument("id", type=int, help="the part's id (from 'archive list')")
    show.set_defaults(func=show_part)
    ex = sub.add_parser("export", parents=[common],
                        help="copy parts out: test/good (calibrate --goods), test/ng (calibrate --defects, eval)")
    ex.add_argument("--out", required=True, type=Path, help="output folder (created)")
    ex.set_defaults(func=export_parts)


def _common():
    import argparse

    c = argparse.ArgumentParser(add_help=False)
    c.add_argument("--archive", type=Path, metavar="DIR", help="archive folder (default: [archive] dir)")
    c.add_argument("--index-url", metavar="URL", help="postgresql://... index (default: [archive] index_url)")
    c.add_argument("--config", metavar="FILE", help="TOML settings file")
    c.add_argument("--verdict", action="append", choices=["ok", "ng", "unknown"],
                   help="only parts with this verdict (repeatable)")
    c.add_argument("--since", metavar="TIME", help="only parts captured at or after TIME")
    c.add_argument("--until", metavar="TIME", help="only parts captured before TIME")
    c.add_argument("--min-score", type=float, metavar="X", help="only parts scoring at least X")
    c.add_argument("--max-score", type=float, metavar="X", help="only parts scoring at most X")
    c.add_argument("--camera", "--camera-id", dest="camera_id", metavar="ID",
                   help="only this camera's parts (its id, as in 'run --camera ID=URI')")
    c.add_argument("--station", metavar="NAME", help="only this station's parts (a shared index)")
    return c


def parse_time(text: str | None, flag: str) -> float | None:
    """ISO 8601 (UTC unless an offset is given) or epoch seconds → epoch seconds; ConfigError otherwise."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{flag}: expected ISO 8601 (2026-11-26T08:00) or epoch seconds, got {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _open(args):
    """(index, archive folder, filters) from the flags and the config."""
    from ..archive.index import Filters, open_index
    from ..settings import load_settings

    settings = load_settings(args.config, {"archive": {"dir": args.archive, "index_url": args.index_url}})
    a = settings.archive
    if a.dir is None:
        raise ConfigError("no archive folder: pass --archive DIR or set [archive] dir in the config")
    if not a.index_url and not (Path(a.dir) / "index.sqlite").is_file():
        raise ConfigError(f"{a.dir} holds no archive (no index.sqlite)")
    limit = getattr(args, "limit", None)
    filters = Filters(since=parse_time(args.since, "--since"), until=parse_time(args.until, "--until"),
                      labels=tuple(args.verdict or ()), min_score=args.min_score, max_score=args.max_score,
                      camera_id=args.camera_id, station=args.station, limit=limit or None)
    return open_index(a.dir, a.index_url), Path(a.dir), filters


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def list_parts(args) -> int:
    index, _, filters = _open(args)
    try:
        rows = index.query(filters)
    finally:
        index.close()
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'id':>7}  {'time (UTC)':<19}  {'camera':<10} {'seq':>7}  verdict  {'score':>9}  image")
    for r in rows:
        score = "" if r["score"] is None else f"{r['score']:.4g}"
        print(f"{r['id']:>7}  {_when(r['t_wall']):<19}  {r['camera_id']:<10} {r['seq']:>7}  {r['label']:<7}  "
              f"{score:>9}  {r['image_path']}")
    print(f"{len(rows)} part(s)")
    return 0


def show_part(args) -> int:
    from ..errors import DataError

    index, folder, _ = _open(args)
    try:
        row = index.get(args.id)
    finally:
        index.close()
    if row is None:
        raise DataError(f"no archived part with id {args.id}")
    print(f"part {row['id']}: {row['label']} (score {row['score']}, threshold {row['threshold']}), "
          f"camera {row['camera_id']} seq {row['seq']} at {_when(row['t_wall'])} UTC, station {row['station']}")
    for key in ("image_path", "overlay_path", "verdict_path"):
        if row[key]:
            path = folder / row[key]
            print(f"  {key[:-5]:<8} {path}{'' if path.is_file() else '  (missing)'}")
    verdict = folder / row["verdict_path"]
    if verdict.is_file():
        print(verdict.read_text())
    return 0


def export_parts(args) -> int:
    from ..archive.export import export

    index, folder, filters = _open(args)
    try:
        counts = export(index, folder, filters, args.out)
    finally:
        index.close()
    missing = f"; {counts.pop('missing')} image file(s) missing" if counts.get("missing") else ""
    counts.pop("missing", None)
    print(f"exported {', '.join(f'{n} {label}' for label, n in counts.items())} into {args.out}{missing}")
    if "ok" in counts:
        print(f"  goods:   edge-inspect calibrate --model MODEL --goods {args.out / 'test'}")
    if "ng" in counts:
        print(f"  defects: edge-inspect calibrate --model MODEL --goods GOODS --defects {args.out / 'test'}")
    return 0
