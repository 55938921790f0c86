"""Bad input: malformed config values and files, malformed control requests, truncated / garbage /
odd images in dir:// sources and from cameras, wrong-shape inputs to a backend. Each must give one
clear line or a counted drop / ``unknown`` verdict, never a traceback or a hang."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest

from benchmarks.soak import Station, WireCollector, free_port, summary_counts
from edge_inspect.backends.onnxrt import OnnxRuntimeBackend
from edge_inspect.cli import main
from edge_inspect.errors import InputShapeError
from edge_inspect.manifest import load_manifest, save_manifest
from edge_inspect.preprocess import preprocess
from tests.fixtures.tiny_model import make_tiny_model
from tests.pipeline.fakes import model_variant
from tests.reliability.test_faults import _Frames, counters, no_traceback, settings, start_wired

pytestmark = pytest.mark.slow


# ---- config values and files -------------------------------------------------------------------

CONFIGS = {
    "toml-syntax": ("[pipeline\nmode = lossless", "not valid TOML"),
    "binary-garbage": (b"\x00\xff\xfe garbage \x89PNG", "not valid TOML"),
    "unknown-key": ("[pipeline]\nmode = \"lossless\"\nqueue_sise = 4\n", "pipeline.queue_sise"),
    "wrong-type": ("[pipeline]\nqueue_size = \"four\"\n", "pipeline.queue_size"),
    "out-of-range": ("[pipeline]\nqueue_size = 0\n", "pipeline.queue_size"),
    "bad-mode": ("[pipeline]\nmode = \"fast\"\n", "pipeline.mode"),
    "bad-camera-uri": ("[camera]\nuri = \"ftp://cam\"\n", "unknown scheme"),
    "bad-uri-option": ("[camera]\nuri = \"synthetic://?fps=-3\"\n", "fps"),
    "bad-bind": ("[publisher]\nbind = \"tcp://127.0.0.1:notaport\"\n", "publisher.bind"),
    "bad-line-id": ("[publisher]\nline_id = \"line.1\"\n", "publisher.line_id"),
    "negative-timeout": ("[camera]\nread_timeout_s = -1\n", "camera.read_timeout_s"),
    "unknown-section": ("[pipline]\nmode = \"lossless\"\n", "pipline"),
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_malformed_config_file_is_one_line_exit_2(case, tmp_path, tiny_model_dir, capsys):
    text, must_name = CONFIGS[case]
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    argv = ["run", "--config", str(cfg), "--model", str(tiny_model_dir), "--no-control"]
    if "uri" not in case:
        argv += ["--camera", "synthetic://?count=2"]
    if case != "bad-bind":
        argv += ["--bind", f"tcp://127.0.0.1:{free_port()}"]
    rc = main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 2, err
    assert len(errors) == 1 and must_name in errors[0], err


@pytest.mark.parametrize("env, flags, must_name", [
    ({"EDGE_INSPECT_PIPELINE__QUEUE_SIZE": "lots"}, [], "pipeline.queue_size"),
    ({"EDGE_INSPECT_PIPELINE__MODE": "turbo"}, [], "pipeline.mode"),
    ({}, ["--threshold", "nan"], "finite"),
    ({}, ["--threshold", "inf"], "finite"),
    ({}, ["--max-frames", "0"], "max_frames"),
    ({}, ["--config", "/nonexistent/config.toml"], "config file not found"),
    ({}, ["--camera", "dir:///nonexistent-folder"], "folder not found"),
])
def test_malformed_env_and_flags_are_one_line(env, flags, must_name, monkeypatch, tiny_model_dir, capsys):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    argv = ["run", "--model", str(tiny_model_dir), "--no-control", "--bind", f"tcp://127.0.0.1:{free_port()}"]
    if "--camera" not in flags:
        argv += ["--camera", "synthetic://?count=2"]
    rc = main(argv + flags)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 2 and len(errors) == 1 and must_name in errors[0], err


# ---- malformed control requests against a running station ----------------------------------------

BAD_REQUESTS = [
    b"",
    b"\xff\xfe\x00garbage",
    b"not json at all",
    b"[1, 2, 3]",
    b'"status"',
    b'{"cmd": 5}',
    b'{"cmd": "explode"}',
    b'{"cmd": "status", "verbose": true}',
    b'{"cmd": "set_threshold"}',
    b'{"cmd": "set_threshold", "image": -1}',  # below the model's lower bound (0): the pipeline refuses
    b'{"cmd": "set_threshold", "pixel": -0.5}',
    b'{"cmd": "set_threshold", "image": "high"}',
    b'{"cmd": "set_threshold", "image": NaN}',
    b'{"cmd": "set_threshold", "image": 1e999}',
    b'{"cmd": "last", "n": 0}',
    b'{"cmd": "last", "since_seq": "x"}',
    b'{"cmd": "reload"}',
    b'{"cmd": "reload", "model_dir": ""}',
    b'{"cmd": "reload", "model_dir": "/nonexistent/model"}',
    b'{"cmd": "reload", "model_dir": "/etc"}',
    b'{"cmd": "trigger", "part_id": "P1"}',  # free-run camera: refused
    b'{"cmd": "trigger", "part_id": "bad\\u0000id"}',
    b'{"cmd": "status"' + b" " * 10 + b"}" * 3,
    json.dumps({"cmd": "status", "pad": "x" * 10_000}).encode(),
]


def test_malformed_control_requests_get_an_error_and_change_nothing(tiny_model_dir, tmp_path):
    import zmq

    # the tiny model's score and map are squared distances: with their real lower bound 0 in the manifest,
    # a negative threshold is refused by the pipeline (the protocol passes any finite number)
    model = model_variant(tiny_model_dir, tmp_path / "model", score_lower_bound=0.0, map_lower_bound=0.0)
    st = Station(model, "synthetic://?fps=100&size=64", tmp_path, args=["--mode", "lossless"])
    wire = WireCollector(st.pub)
    wire.start()
    st.start()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    replies = []
    try:
        before = st.wait_running()
        sock.connect(st.ctl)
        for raw in BAD_REQUESTS:
            sock.send_multipart([b"", raw])
            assert sock.poll(5000), f"no reply to {raw[:60]!r}"
            replies.append(json.loads(sock.recv_multipart()[-1]))
        sock.send_multipart([b"", b"{}", b"second body frame"])  # multi-frame: one reply, an error
        assert sock.poll(5000)
        replies.append(json.loads(sock.recv_multipart()[-1]))
        n_before = len(wire.verdicts)
        time.sleep(0.3)
        after = st.control("status").result
        n_after = len(wire.verdicts)
        rc = st.terminate()
    finally:
        st.kill()
        wire.stop()
        sock.close(0)
        ctx.term()
    assert rc == 0, st.err[-2000:]
    no_traceback(st.err)
    for raw, reply in zip(BAD_REQUESTS + [b"multi"], replies, strict=True):
        assert reply["ok"] is False and reply["error"], (raw, reply)
        assert "\n" not in reply["error"] and "internal error" not in reply["error"], (raw, reply)
    assert after["state"] == "running" and n_after > n_before  # still inspecting
    assert after["threshold"] == before["threshold"] and after["generation"] == before["generation"]
    seqs = [v.seq for v in wire.verdicts]
    assert seqs == sorted(set(seqs)) and summary_counts(st.out)["unknown"] == 0
    print(f"FIG control: {len(replies)} bad requests, in {summary_counts(st.out)['taken']} out {len(seqs)}")


def test_oversized_control_request_is_dropped_and_the_server_lives(tiny_model_dir, tmp_path):
    """Beyond the 64 KiB request limit ZeroMQ disconnects the peer (MAXMSGSIZE); others are still served."""
    import zmq

    from edge_inspect.protocol.control import ControlServer
    from edge_inspect.protocol.settings import ControlSettings, SecuritySettings

    with ControlServer(ControlSettings(bind="tcp://127.0.0.1:*"), SecuritySettings(curve="off"), None) as srv:
        ctx = zmq.Context()
        big = ctx.socket(zmq.DEALER)
        big.setsockopt(zmq.LINGER, 0)
        big.connect(srv.endpoint)
        big.send_multipart([b"", b"{" + b" " * (200 * 1024) + b"}"])
        assert not big.poll(500)  # no reply: the connection was dropped
        big.close(0)
        ctx.term()
        from edge_inspect.protocol.control import ControlClient

        with ControlClient(srv.endpoint) as c:
            assert c.request("ping", timeout_s=3)["pong"] is True


# ---- images in dir:// sources ----------------------------------------------------------------------


def _image_folder(folder):
    """Good, odd and broken files; returns ({name: expected 'ok'|'ng'|'same-as:<name>'}, [bad names])."""
    import cv2

    folder.mkdir()
    good = np.full((64, 64, 3), 124, np.uint8)
    blob = good.copy()
    blob[24:40, 24:40] = 255
    w = lambda name, img: cv2.imwrite(str(folder / name), img)  # noqa: E731
    w("a00_good.png", good)
    w("a01_blob.png", blob)
    w("a02_gray8.png", good[:, :, 0])
    w("a03_gray16.png", good[:, :, 0].astype(np.uint16) * 257)  # 16-bit mono, same picture
    w("a04_blob16.png", blob.astype(np.uint16) * 257)  # 16-bit colour, same picture as a01
    w("a05_bgra.png", np.dstack([blob, np.full((64, 64), 255, np.uint8)]))
    w("a06_tiny.png", np.full((3, 5, 3), 124, np.uint8))  # wrong size: resized
    w("a07_huge.jpg", np.full((1500, 2000, 3), 124, np.uint8))
    w("a08_onepixel.bmp", np.full((1, 1, 3), 124, np.uint8))
    w("a09_float.tiff", np.full((64, 64, 3), 0.5, np.float32))  # 32-bit float: refused
    data = (folder / "a01_blob.png").read_bytes()
    (folder / "a11_truncated.png").write_bytes(data[: len(data) // 2])
    jpg = (folder / "a07_huge.jpg").read_bytes()
    (folder / "a12_truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    (folder / "a13_garbage.png").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "a14_empty.jpg").write_bytes(b"")
    (folder / "a15_text.bmp").write_text("this is not a bitmap\n")
    w("a16_good.png", good)
    expected = {"a00_good.png": "ok", "a01_blob.png": "ng", "a02_gray8.png": "ok", "a03_gray16.png": "ok",
                "a04_blob16.png": "ng", "a05_bgra.png": "ng", "a06_tiny.png": "ok", "a07_huge.jpg": "ok",
                "a08_onepixel.bmp": "ok", "a16_good.png": "ok"}
    bad = ["a09_float.tiff", "a11_truncated.png", "a12_truncated.jpg", "a13_garbage.png",
           "a14_empty.jpg", "a15_text.bmp"]
    return expected, bad


def test_dir_source_bad_images_are_counted_drops_and_odd_ones_work(tiny_model_dir, tmp_path):
    folder = tmp_path / "imgs"
    expected, bad = _image_folder(folder)
    names = sorted(p.name for p in folder.iterdir())
    st = Station(tiny_model_dir, f"dir://{folder}", tmp_path, args=["--mode", "lossless"])
    wire = WireCollector(st.pub)
    wire.start()
    st.start()
    try:
        rc = st.finish(60)
    finally:
        st.kill()
        wire.stop()
    assert rc == 0, st.err[-2000:]
    no_traceback(st.err)
    s = summary_counts(st.out)
    assert s["taken"] == s["judged"] == len(expected) and s["dropped_gap"] == len(bad) and s["unknown"] == 0
    by_name = {names[v.seq]: v for v in wire.verdicts}  # seq = index in name order (bad files use theirs up)
    assert sorted(by_name) == sorted(expected)
    assert {n: v.state for n, v in by_name.items()} == expected
    print(f"FIG dir-images: files {len(names)} in {s['taken']} out {len(wire.verdicts)} gap {s['dropped_gap']}")
    for name in bad:  # each skipped file is named in one warning line
        assert sum(name in ln and "skipped bad image" in ln for ln in st.err.splitlines()) == 1, name


def test_16bit_images_score_like_their_8bit_originals(tiny_model_dir):
    """16-bit industrial images work: the top 8 bits are used, so score(x16) == score(x8)."""
    from edge_inspect.camera.files import read_image_file

    m = load_manifest(tiny_model_dir)
    img8 = np.random.default_rng(1).integers(90, 160, (64, 64, 3), dtype=np.uint8)
    low = np.random.default_rng(2).integers(0, 256, img8.shape, dtype=np.uint16)
    img16 = img8.astype(np.uint16) * 256 + low  # the low byte (sensor noise) must not matter
    with OnnxRuntimeBackend(tiny_model_dir, m) as be:
        be.load()
        s8 = be.infer({"image": preprocess(img8, m.input)})["score"][0]
        s16 = be.infer({"image": preprocess(img16, m.input)})["score"][0]
        s16m = be.infer({"image": preprocess(img16[:, :, 0], m.input)})["score"][0]
        s8m = be.infer({"image": preprocess(img8[:, :, 0], m.input)})["score"][0]
    assert s16 == pytest.approx(s8, abs=1e-6) and s16m == pytest.approx(s8m, abs=1e-6)
    assert read_image_file  # imported: the dir:// test above reads real 16-bit PNGs through it


# ---- odd frames from a camera (not files): each becomes a counted unknown ---------------------------


def test_odd_camera_frames_become_counted_unknowns_not_crashes(tiny_model_dir):
    good = np.full((48, 64, 3), 124, np.uint8)
    frames = [
        good,
        np.zeros((48, 64, 2), np.uint8),  # two channels
        np.zeros((48, 64, 5), np.uint8),  # five channels
        np.zeros((0, 0, 3), np.uint8),  # empty
        np.zeros((48, 64, 3), np.int32),  # unsupported dtype
        np.full((48, 64, 3), np.nan, np.float32),  # NaN float image
        np.zeros((2, 48, 64, 3), np.uint8),  # a batch, not an image
        good,
        np.full((48, 64), 124 * 257, np.uint16),  # 16-bit mono: judged
        np.full((1, 1, 3), 124, np.uint8),  # one pixel: judged
        good,
    ]
    be = OnnxRuntimeBackend(tiny_model_dir, load_manifest(tiny_model_dir))
    p, wire = start_wired(settings(mode="lossless"), _Frames(frames), be)
    assert p.wait(20)
    wire.stop(0.3)
    states = {v.seq: v.state for v in wire.verdicts}
    assert sorted(states) == list(range(len(frames)))
    assert [states[i] for i in range(len(frames))] == ["ok"] + ["unknown"] * 6 + ["ok"] * 4
    errors = {v.seq: v.error for v in wire.verdicts if v.error}
    assert all("preprocess failed" in e and "\n" not in e for e in errors.values()), errors
    c = counters(p)
    assert (c["frames_in"], c["verdicts_out"], c["unknown"], c["errors"]) == (11, 11, 6, 6)


# ---- wrong-shape inputs to a backend ----------------------------------------------------------------


@pytest.mark.parametrize("inputs, fragment", [
    ({"image": np.zeros((1, 3, 32, 32), np.float32)}, "expected ('batch', 3, 64, 64)"),
    ({"image": np.zeros((3, 64, 64), np.float32)}, "shape (3, 64, 64)"),
    ({"image": np.zeros((1, 1, 64, 64), np.float32)}, "shape (1, 1, 64, 64)"),
    ({"image": np.zeros((1, 3, 64, 64), np.float64)}, "dtype float64"),
    ({"image": np.zeros((1, 3, 64, 64), np.uint8)}, "dtype uint8"),
    ({"picture": np.zeros((1, 3, 64, 64), np.float32)}, "missing input 'image'"),
])
def test_wrong_shape_inputs_to_the_backend_are_one_line_and_the_next_call_works(tiny_model_dir, inputs, fragment):
    m = load_manifest(tiny_model_dir)
    with OnnxRuntimeBackend(tiny_model_dir, m) as be:
        be.load()
        with pytest.raises(InputShapeError) as exc:
            be.infer(inputs)
        assert fragment in str(exc.value) and "\n" not in str(exc.value)
        out = be.infer({"image": preprocess(np.full((64, 64, 3), 124, np.uint8), m.input)})
        assert out["score"].shape == (1,) and out["anomaly_map"].shape == (1, 1, 64, 64)


def test_manifest_input_size_disagreeing_with_the_graph_fails_at_start_in_one_line(tmp_path, capsys):
    model = make_tiny_model(tmp_path / "m32", size=32)
    m = load_manifest(model)
    m.input.height = m.input.width = 64  # manifest says 64, graphs take 32
    save_manifest(m, model)
    rc = main(["run", "--camera", "synthetic://?count=2", "--model", str(model), "--no-control",
               "--bind", f"tcp://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert rc == 1 and len(errors) == 1 and "expected ('batch', 3, 32, 32)" in errors[0], err
    assert shutil.which  # keep the import used
