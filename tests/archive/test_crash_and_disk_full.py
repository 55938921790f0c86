"""The archive under failure: a full disk (a real 2 MiB tmpfs) is a counted error, never a stalled line;
a SQLite index killed (SIGKILL) mid-write reopens cleanly with rows that match their files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_inspect.archive.index import Filters, SQLiteIndex
from edge_inspect.archive.settings import ArchiveSettings
from edge_inspect.archive.store import ArchiveWriter
from tests.archive.parts import part

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs mounted on a temp folder (needs root and mount; skips with the reason elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_is_a_counted_error_and_the_writer_goes_on(tiny_tmpfs, tiny_model_dir):
    # The cap (50 MiB) is far above the disk (2 MiB): the disk fills first.
    writer = ArchiveWriter(ArchiveSettings(dir=tiny_tmpfs / "arch", station="st1", max_size_mb=50, queue_size=500))
    writer.start()
    parts = [part(tiny_model_dir, i, "ng", noise=True, size=128) for i in range(60)]  # ~65 KiB each: ~4 MiB
    t0 = time.perf_counter()
    for p in parts:
        writer.offer(p)
    offer_s = time.perf_counter() - t0
    writer.close(timeout=60)
    s = writer.stats()
    assert offer_s < 0.1  # handing over never waits on the disk
    assert s["stored"] > 5 and s["disk_full"] > 0 and s["errors"] >= s["disk_full"]
    assert s["stored"] + s["errors"] == 60 and s["dropped"] == 0
    index = SQLiteIndex(tiny_tmpfs / "arch" / "index.sqlite")
    rows = index.query(Filters())
    assert len(rows) == s["stored"] and index.integrity() == "ok"
    for r in rows:  # every row's files are whole; no half-written file kept under a real name
        assert (tiny_tmpfs / "arch" / r["image_path"]).stat().st_size > 0
    assert not list((tiny_tmpfs / "arch").rglob("*.part"))
    index.close()


_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from edge_inspect.archive.settings import ArchiveSettings
    from edge_inspect.archive.store import ArchiveStore
    from tests.archive.parts import part
    store = ArchiveStore(ArchiveSettings(dir=sys.argv[1], station="st1", max_size_mb=0.6))
    seq = 0
    while True:
        store.store(part(sys.argv[2], seq, "ng", noise=True, size=48))
        seq += 1
        if seq == 20:
            print("writing", flush=True)
""")


@pytest.mark.slow
def test_sqlite_index_survives_sigkill_mid_write(tmp_path, tiny_model_dir):
    arch = tmp_path / "arch"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(arch), str(tiny_model_dir), str(ROOT)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "writing"
        time.sleep(1.0)  # well into eviction (a 0.6 MiB cap): inserts and deletes both in flight
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    index = SQLiteIndex(arch / "index.sqlite")
    assert index.integrity() == "ok"
    rows = index.query(Filters(oldest_first=True))
    assert len(rows) > 5
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # oldest evicted, none lost
    for r in rows:  # a committed row always has its files (written first)
        for key in ("image_path", "overlay_path", "verdict_path"):
            assert (arch / r[key]).is_file(), r[key]
    assert index.total_bytes("st1") == sum(r["bytes"] for r in rows)
    index.add({"station": "st1", "camera_id": "c", "seq": 10**6, "t_wall": time.time(), "label": "ng",
               "image_path": "x", "verdict_path": "y", "bytes": 1})  # writable again
    index.close()
