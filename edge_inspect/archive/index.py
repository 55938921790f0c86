"""The archive's index: one row per stored part, in SQLite (default, WAL mode) or PostgreSQL (a URL).

The files (image, overlay, verdict JSON) live in the archive folder; a row names them relative to it.
Files are written before their row is committed and a row is deleted before its files, so a crash
(power loss, SIGKILL) can leave a stray file, never a row without its files.

In a shared PostgreSQL index every station writes its own rows (``station``); retention only ever
deletes this station's rows.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DataError, DependencyError

log = logging.getLogger(__name__)

SQLITE_NAME = "index.sqlite"
COLUMNS = ("id", "station", "camera_id", "seq", "part_id", "t_wall", "label", "score", "threshold",
           "model_id", "model_version", "image_path", "overlay_path", "verdict_path", "bytes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS parts (
    id {id_type},
    station TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    part_id TEXT,
    t_wall DOUBLE PRECISION NOT NULL,
    label TEXT NOT NULL,
    score DOUBLE PRECISION,
    threshold DOUBLE PRECISION,
    model_id TEXT,
    model_version TEXT,
    image_path TEXT NOT NULL,
    overlay_path TEXT,
    verdict_path TEXT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS parts_station_time ON parts (station, t_wall);
CREATE INDEX IF NOT EXISTS parts_label_time ON parts (label, t_wall)
"""


@dataclass(frozen=True)
class Filters:
    """What ``query`` selects: times are epoch seconds (UTC), scores raw score units; None: no limit."""

    since: float | None = None
    until: float | None = None
    labels: tuple[str, ...] = ()
    min_score: float | None = None
    max_score: float | None = None
    camera_id: str | None = None
    station: str | None = None
    limit: int | None = None
    oldest_first: bool = False

    def where(self) -> tuple[str, list]:
        parts, args = [], []
        for sql, value in (("t_wall >= ?", self.since), ("t_wall < ?", self.until), ("score >= ?", self.min_score),
                           ("score <= ?", self.max_score), ("camera_id = ?", self.camera_id),
                           ("station = ?", self.station)):
            if value is not None:
                parts.append(sql)
                args.append(value)
        if self.labels:
            parts.append(f"label IN ({', '.join('?' * len(self.labels))})")
            args.extend(self.labels)
        return (" WHERE " + " AND ".join(parts)) if parts else "", args


class ArchiveIndex:
    """Rows of stored parts. ``open_index`` picks the database; the methods are the same for both.

    Not thread-safe: one thread uses one index (the writer has its own; the CLI opens another).
    """

    placeholder = "?"

    def __init__(self, conn, what: str):
        self._conn = conn
        self.what = what

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, sql: str, args=()):
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), list(args))
        return cur

    def add(self, row: dict) -> int:
        """Insert one part (COLUMNS but ``id``) and commit; its new id."""
        names = [c for c in COLUMNS if c != "id"]
        cur = self._exec(f"INSERT INTO parts ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) RETURNING id",
                         [row.get(c) for c in names])
        new_id = int(cur.fetchone()[0])
        self._conn.commit()
        return new_id

    def query(self, filters: Filters = Filters()) -> list[dict]:
        where, args = filters.where()
        order = "ASC" if filters.oldest_first else "DESC"
        sql = f"SELECT {', '.join(COLUMNS)} FROM parts{where} ORDER BY t_wall {order}, id {order}"
        if filters.limit is not None:
            sql += f" LIMIT {int(filters.limit)}"
        rows = self._exec(sql, args).fetchall()
        self._conn.commit()  # end the read transaction (PostgreSQL) so a long-lived reader holds no snapshot
        return [dict(zip(COLUMNS, r, strict=True)) for r in rows]

    def get(self, part_id: int) -> dict | None:
        rows = self._exec(f"SELECT {', '.join(COLUMNS)} FROM parts WHERE id = ?", [int(part_id)]).fetchall()
        self._conn.commit()
        return dict(zip(COLUMNS, rows[0], strict=True)) if rows else None

    def oldest(self, station: str, n: int, before: float | None = None) -> list[dict]:
        """Up to ``n`` of ``station``'s oldest rows (older than ``before`` when given)."""
        return self.query(Filters(station=station, until=before, limit=n, oldest_first=True))

    def delete(self, ids: list[int]) -> None:
        if ids:
            self._exec(f"DELETE FROM parts WHERE id IN ({', '.join('?' * len(ids))})", [int(i) for i in ids])
            self._conn.commit()

    def total_bytes(self, station: str) -> int:
        value = self._exec("SELECT COALESCE(SUM(bytes), 0) FROM parts WHERE station = ?", [station]).fetchone()[0]
        self._conn.commit()
        return int(value)

    def count(self, station: str | None = None) -> int:
        if station is None:
            value = self._exec("SELECT COUNT(*) FROM parts").fetchone()[0]
        else:
            value = self._exec("SELECT COUNT(*) FROM parts WHERE station = ?", [station]).fetchone()[0]
        self._conn.commit()
        return int(value)

    def rollback(self) -> None:
        """After a failed statement: leave the transaction so the next one can run."""
        try:
            self._conn.rollback()
        except Exception:  # the connection itself may be gone; the next statement says so
            log.debug("rollback failed", exc_info=True)

    def files_bytes(self) -> int:
        """Bytes the index itself takes on the archive's disk (SQLite files; 0 for a server)."""
        return 0

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:
            log.debug("closing the index failed", exc_info=True)


class SQLiteIndex(ArchiveIndex):
    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            conn = sqlite3.connect(str(self.path), timeout=10.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses no committed row's consistency
            # A short WAL, kept short on disk: it counts against the archive's size cap.
            conn.execute("PRAGMA wal_autocheckpoint=64")
            conn.execute(f"PRAGMA journal_size_limit={256 * 1024}")
            conn.executescript(_SCHEMA.format(id_type="INTEGER PRIMARY KEY AUTOINCREMENT") + ";")
        except sqlite3.Error as exc:
            raise DataError(f"archive index {self.path}: cannot open: {exc}") from exc
        super().__init__(conn, str(self.path))

    def files_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += Path(str(self.path) + suffix).stat().st_size
            except OSError:
                pass
        return total

    def integrity(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: "ok" or what is wrong."""
        return "; ".join(r[0] for r in self._conn.execute("PRAGMA integrity_check").fetchall())


class PostgresIndex(ArchiveIndex):
    placeholder = "%s"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError as exc:
            raise DependencyError("a PostgreSQL archive index needs psycopg 3: "
                                  "pip install 'edge-inspect[archive-postgres]'") from exc
        try:
            conn = psycopg.connect(url, connect_timeout=10)
            with conn.cursor() as cur:
                for stmt in _SCHEMA.format(id_type="BIGSERIAL PRIMARY KEY").split(";"):
                    cur.execute(stmt)
            conn.commit()
        except psycopg.Error as exc:
            raise DataError(f"archive index {_redact(url)}: {' '.join(str(exc).split())}") from exc
        super().__init__(conn, _redact(url))


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in cred else url


def db_errors() -> tuple[type[BaseException], ...]:
    """The exception types a database statement may raise (SQLite, and psycopg when installed)."""
    errors: list[type[BaseException]] = [sqlite3.Error]
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    return tuple(errors)


def open_index(archive_dir: Path | None, index_url: str | None) -> ArchiveIndex:
    """SQLite at ``archive_dir``/index.sqlite (created), or PostgreSQL at ``index_url`` (postgresql://...)."""
    if index_url:
        if not index_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(f"archive.index_url: only postgresql://... URLs are supported, got {_redact(index_url)}")
        return PostgresIndex(index_url)
    if archive_dir is None:
        raise ConfigError("no archive folder: pass --archive DIR or set [archive] dir")
    archive_dir = Path(archive_dir)
    try:
        archive_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"archive folder {archive_dir}: {exc.strerror or exc}") from exc
    return SQLiteIndex(archive_dir / SQLITE_NAME)
