"""The defect archive: what is kept, the files and index rows, retention by size and age, the writer's
queue, and the CLI's list / show / export."""

from __future__ import annotations

import json
import time

import cv2
import pytest

from edge_inspect.archive.index import Filters, SQLiteIndex
from edge_inspect.archive.settings import ArchiveSettings
from edge_inspect.archive.store import ArchiveStore, ArchiveWriter
from edge_inspect.cli import main
from edge_inspect.data.mvtec import defect_images, good_images
from tests.archive.parts import part


def make_store(tmp_path, **kw) -> ArchiveStore:
    return ArchiveStore(ArchiveSettings(enabled=True, dir=tmp_path / "arch", station="st1", **kw))


def test_ng_part_writes_image_overlay_verdict_and_row(tmp_path, tiny_model_dir):
    store = make_store(tmp_path)
    new_id = store.store(part(tiny_model_dir, 7, "ng", 3.0))
    row = store.index.get(new_id)
    assert (row["label"], row["seq"], row["camera_id"], row["station"]) == ("ng", 7, "cam1", "st1")
    image = cv2.imread(str(store.dir / row["image_path"]))
    overlay = cv2.imread(str(store.dir / row["overlay_path"]))
    assert image.shape == (64, 64, 3) and (image == 120).all()  # the camera image as captured
    assert overlay.shape[0] > 64 and overlay.shape[1] == 64  # heat map + a caption strip below
    assert not (overlay[:64] == 120).all()
    verdict = json.loads((store.dir / row["verdict_path"]).read_text())
    assert (verdict["label"], verdict["score"], verdict["seq"]) == ("ng", 3.0, 7)
    assert verdict["regions"][0]["w"] == 32
    files = [store.dir / row[k] for k in ("image_path", "overlay_path", "verdict_path")]
    assert row["bytes"] == sum(f.stat().st_size for f in files)
    assert store.index.integrity() == "ok"
    assert store.index._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keeps_every_ng_a_spread_sample_of_ok_and_unknown_when_asked(tmp_path):
    store = make_store(tmp_path, ok_sample=0.25, store_unknown=False)
    kept = [store.wants("ok") for _ in range(100)]
    assert sum(kept) == 25 and kept[:8] == [False, False, False, True] * 2
    assert all(store.wants("ng") for _ in range(10))
    assert not store.wants("unknown")
    assert not make_store(tmp_path / "b").wants("ok")  # default: no OK parts


def test_ok_sample_is_spread_over_each_camera_of_a_station(tmp_path):
    store = make_store(tmp_path, ok_sample=0.5)
    kept = {"top": 0, "side": 0}
    for _ in range(50):  # two cameras taking turns: a shared count would keep only one camera's parts
        for cid in kept:
            kept[cid] += store.wants("ok", cid)
    assert kept == {"top": 25, "side": 25}


def test_unknown_part_has_image_and_verdict_but_no_overlay(tmp_path, tiny_model_dir):
    store = make_store(tmp_path)
    row = store.index.get(store.store(part(tiny_model_dir, 1, "unknown")))
    assert row["overlay_path"] is None and row["score"] is None
    assert (store.dir / row["image_path"]).is_file()


def test_size_cap_evicts_oldest_first_and_is_never_passed(tmp_path, tiny_model_dir):
    store = make_store(tmp_path, max_size_mb=1.0)  # ~17 KiB per noisy part: room for a few dozen
    for seq in range(120):
        assert store.store(part(tiny_model_dir, seq, "ng", noise=True, size=64, t_wall=1e9 + seq)) is not None
        on_disk = sum(p.stat().st_size for p in store.dir.rglob("*") if p.is_file())
        assert on_disk <= store.max_bytes + 16384  # the index may grow by a few pages after its size was read
        assert store.total <= store.max_bytes - store.index.files_bytes() + 16384
    rows = store.index.query(Filters(oldest_first=True))
    assert store.counters["evicted"] == 120 - len(rows) > 0 and store.counters["errors"] == 0
    assert [r["seq"] for r in rows] == list(range(120 - len(rows), 120))  # the newest are kept
    files = {p.relative_to(store.dir).as_posix() for p in store.dir.rglob("*_ng.png")}
    assert files == {r["image_path"] for r in rows}  # evicted parts' files are gone too
    assert store.total == store.index.total_bytes("st1")


def test_age_limit_deletes_old_parts(tmp_path, tiny_model_dir):
    now = [2e9]
    store = ArchiveStore(ArchiveSettings(dir=tmp_path / "a", station="st1", max_age_days=1.0), clock=lambda: now[0])
    old = store.store(part(tiny_model_dir, 1, t_wall=now[0] - 2 * 86400))
    new = store.store(part(tiny_model_dir, 2, t_wall=now[0] - 3600))
    assert store.index.count() == 2  # the age check ran before the first store, not again within a minute
    now[0] += 61
    store.expire_old()
    assert store.index.get(old) is None and store.index.get(new) is not None
    assert store.counters["evicted"] == 1


def test_writer_queue_full_is_a_counted_drop_and_offer_never_waits(tmp_path, tiny_model_dir):
    writer = ArchiveWriter(ArchiveSettings(dir=tmp_path / "a", station="st1", queue_size=3))
    parts = [part(tiny_model_dir, i) for i in range(10)]
    t0 = time.perf_counter()
    for p in parts:  # the writer thread is not started: nothing is taken
        writer.offer(p)
    assert time.perf_counter() - t0 < 0.05
    assert writer.stats()["dropped"] == 7 and writer.stats()["queued"] == 3
    writer.start()
    writer.close()
    s = writer.stats()
    assert (s["stored"], s["dropped"], s["errors"]) == (3, 7, 0)
    assert SQLiteIndex(tmp_path / "a" / "index.sqlite").count() == 3


def test_cli_list_show_export_feed_calibrate_and_eval_folders(tmp_path, tiny_model_dir, capsys):
    store = ArchiveStore(ArchiveSettings(dir=tmp_path / "a", station="st1", ok_sample=1.0))
    for seq, (label, score) in enumerate([("ok", 0.1), ("ng", 3.0), ("ng", 9.0), ("ok", 0.2), ("unknown", None)]):
        store.store(part(tiny_model_dir, seq, label, score, t_wall=1.8e9 + 60 * seq))
    store.close()
    arch = str(tmp_path / "a")
    assert main(["archive", "list", "--archive", arch, "--json", "--verdict", "ng", "--min-score", "5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["label"], r["score"]) for r in rows] == [("ng", 9.0)]
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1.8e9 + 120))
    assert main(["archive", "list", "--archive", arch, "--json", "--since", since]) == 0
    assert sorted(json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()) == [2, 3, 4]
    assert main(["archive", "show", str(rows[0]["id"]), "--archive", arch]) == 0
    out = capsys.readouterr().out
    assert "ng (score 9.0" in out and "_overlay.jpg" in out and '"label": "ng"' in out

    assert main(["archive", "export", "--archive", arch, "--verdict", "ok", "--out", str(tmp_path / "x")]) == 0
    assert main(["archive", "export", "--archive", arch, "--verdict", "ng", "--out", str(tmp_path / "x")]) == 0
    goods, _ = good_images(tmp_path / "x" / "test")
    defects, _ = defect_images(tmp_path / "x" / "test")
    assert len(goods) == 2 and len(defects) == 2
    assert len((tmp_path / "x" / "parts.jsonl").read_text().splitlines()) == 4

    assert main(["archive", "list", "--archive", arch, "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err
    assert main(["archive", "list", "--archive", str(tmp_path / "none")]) == 2
    assert main(["archive", "export", "--archive", arch, "--verdict", "unknown", "--out", str(tmp_path / "y")]) == 1


@pytest.mark.parametrize("fmt,suffix", [("png", ".png"), ("jpeg", ".jpg")])
def test_image_format(tmp_path, tiny_model_dir, fmt, suffix):
    store = make_store(tmp_path, image_format=fmt, jpeg_quality=50)
    row = store.index.get(store.store(part(tiny_model_dir, 1)))
    assert row["image_path"].endswith(suffix)
    assert cv2.imread(str(store.dir / row["image_path"])).shape == (64, 64, 3)
