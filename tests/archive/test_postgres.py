"""The archive with its index in a real PostgreSQL server: a throwaway cluster started by the test as the
``postgres`` user on a unix socket in a temp folder (scripts/ci-counterparts-postgres.sh installs the server).
Skips with the reason where there is no server binary, no postgres user, no root, or no psycopg."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from edge_inspect.archive.index import Filters, open_index
from edge_inspect.archive.settings import ArchiveSettings
from edge_inspect.archive.store import ArchiveStore
from edge_inspect.cli import main
from edge_inspect.errors import DataError
from tests.archive.parts import part

pytestmark = [pytest.mark.counterpart, pytest.mark.slow]
PORT = 55433


def _as_postgres(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg", reason="needs psycopg 3 (pip install 'psycopg[binary]')")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("no PostgreSQL server binaries (scripts/ci-counterparts-postgres.sh installs them as root)")
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("starting a throwaway PostgreSQL cluster needs root (to run it as the postgres user)")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    bindir = Path(bins[-1]).parent
    tmp = Path(tempfile.mkdtemp(prefix="ei-pg-"))
    shutil.chown(tmp, "postgres")
    data = tmp / "data"
    done = _as_postgres(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "edge")
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    done = _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "30", "-l", str(tmp / "log"), "-o",
                        f"-k {tmp} -p {PORT} -c listen_addresses=", "start")
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"pg_ctl start failed: {done.stderr.strip()[-300:]}")
    try:
        yield f"postgresql://edge@/postgres?host={tmp}&port={PORT}"
    finally:
        _as_postgres(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


def test_store_query_retention_and_cli_on_postgres(pg_url, tmp_path, tiny_model_dir, capsys):
    settings = ArchiveSettings(dir=tmp_path / "a", index_url=pg_url, station="pg-st1", ok_sample=1.0,
                               max_size_mb=0.2)
    store = ArchiveStore(settings)
    assert not (tmp_path / "a" / "index.sqlite").exists()  # the index is the server's
    t0 = time.time()
    for seq in range(30):
        assert store.store(part(tiny_model_dir, seq, "ng" if seq % 3 else "ok", 1.0 + seq, noise=True,
                                t_wall=t0 + seq)) is not None
    rows = store.index.query(Filters(station="pg-st1", oldest_first=True))
    assert store.counters["evicted"] == 30 - len(rows) > 0  # the 0.2 MiB cap evicted the oldest
    assert [r["seq"] for r in rows] == list(range(30 - len(rows), 30))
    assert store.total == store.index.total_bytes("pg-st1") <= store.max_bytes
    # another station's rows in the same index are never touched by this station's retention
    other = ArchiveStore(ArchiveSettings(dir=tmp_path / "b", index_url=pg_url, station="pg-st2", max_size_mb=0.2))
    other.store(part(tiny_model_dir, 999, "ng", 9.0, noise=True, t_wall=t0 - 1000))
    store.store(part(tiny_model_dir, 30, "ng", 5.0, noise=True, t_wall=t0 + 30))
    assert other.index.count("pg-st2") == 1
    other.close()
    store.close()
    assert main(["archive", "list", "--archive", str(tmp_path / "a"), "--index-url", pg_url, "--json",
                 "--station", "pg-st1", "--verdict", "ng", "--min-score", "20"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed and all('"label": "ng"' in line for line in listed)
    assert main(["archive", "export", "--archive", str(tmp_path / "a"), "--index-url", pg_url, "--station", "pg-st1",
                 "--out", str(tmp_path / "x")]) == 0
    assert list((tmp_path / "x" / "test" / "ng").iterdir())


def test_bad_server_is_one_data_error(tmp_path):
    pytest.importorskip("psycopg", reason="needs psycopg 3")
    with pytest.raises(DataError, match="archive index postgresql://edge:\\*\\*\\*@"):
        open_index(tmp_path, f"postgresql://edge:pw@/postgres?host={tmp_path}&port=1")
