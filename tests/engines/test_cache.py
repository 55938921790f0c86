"""Engine cache: keys change exactly when they should; cached engines are reused only when verified and intact."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from edge_inspect.errors import ConfigError
from edge_inspect.manifest import EngineRecord, load_manifest, save_manifest, sha256_file
from engines.builder import plan_builds, score_graph_names
from engines.cache import (
    BuildOptions,
    TargetDevice,
    cache_key,
    cached_record,
    engine_relpath,
    load_timing_cache,
    record_path,
    save_timing_cache,
    timing_cache_path,
    write_record,
)

ORIN = TargetDevice("10.3.0", "Orin", "8.7")
ONNX = "a" * 64


def test_key_is_deterministic():
    same_device = TargetDevice("10.3.0", "Orin", "8.7")
    assert cache_key(ONNX, ORIN, BuildOptions()) == cache_key(ONNX, same_device, BuildOptions())
    assert len(cache_key(ONNX, ORIN, BuildOptions())) == 64


@pytest.mark.parametrize(
    "onnx, target, options",
    [
        ("b" * 64, ORIN, BuildOptions()),
        (ONNX, TargetDevice("10.3.1", "Orin", "8.7"), BuildOptions()),
        (ONNX, TargetDevice("10.3.0", "NVIDIA A100-SXM4-40GB", "8.7"), BuildOptions()),
        (ONNX, TargetDevice("10.3.0", "Orin", "8.6"), BuildOptions()),
        (ONNX, ORIN, BuildOptions(precision="fp32")),
        (ONNX, ORIN, BuildOptions(dla_core=0)),
        (ONNX, ORIN, BuildOptions(dla_core=1)),
        (ONNX, ORIN, BuildOptions(workspace_mb=2048)),
        (ONNX, ORIN, BuildOptions(max_batch=4)),
        (ONNX, ORIN, BuildOptions(precision_constraints="prefer")),
        (ONNX, ORIN, BuildOptions(fp32_graphs=("head",))),
    ],
)
def test_key_changes_with_every_input(onnx, target, options):
    assert cache_key(onnx, target, options) != cache_key(ONNX, ORIN, BuildOptions())


def test_all_option_fields_enter_the_key():
    # A new BuildOptions field that is forgotten in the key would make stale engines look current.
    base = cache_key(ONNX, ORIN, BuildOptions())
    changed = {"precision": "fp32", "dla_core": 0, "workspace_mb": 64, "max_batch": 2,
               "precision_constraints": "prefer", "fp32_graphs": ("x",)}
    assert set(changed) == {f.name for f in dataclasses.fields(BuildOptions)}
    for name, value in changed.items():
        assert cache_key(ONNX, ORIN, dataclasses.replace(BuildOptions(), **{name: value})) != base, name


def test_engine_file_name_carries_graph_precision_and_key():
    key = cache_key(ONNX, ORIN, BuildOptions())
    rel = engine_relpath("student1", "fp16", key)
    assert rel == f"engines/student1.fp16.{key[:16]}.engine"
    assert record_path(rel).name == f"student1.fp16.{key[:16]}.json"
    with pytest.raises(ConfigError):
        engine_relpath("../evil", "fp16", key)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"precision": "bf16"}, "precision"), ({"dla_core": -1}, "dla-core"),
     ({"dla_core": 0, "precision": "fp32"}, "DLA"), ({"workspace_mb": 1}, "workspace"),
     ({"max_batch": 0}, "max-batch"), ({"precision_constraints": "maybe"}, "constraints")],
)
def test_invalid_options_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BuildOptions(**kwargs)


def test_timing_cache_is_per_tensorrt_version_and_gpu(tmp_path):
    a = timing_cache_path(tmp_path, ORIN)
    assert a != timing_cache_path(tmp_path, TargetDevice("10.7.0", "Orin", "8.7"))
    assert a != timing_cache_path(tmp_path, TargetDevice("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"))
    assert a.parent == tmp_path / "engines" and a.name == "timing-trt10.3.0-orin-sm87.cache"
    assert load_timing_cache(a) == b""  # absent: TensorRT starts an empty cache
    save_timing_cache(a, b"\x00tactics")
    assert load_timing_cache(a) == b"\x00tactics"


def _fake_engine(model_dir, graph, relpath, verified=True) -> EngineRecord:
    g = load_manifest(model_dir).graph(graph)
    path = model_dir / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"engine " + relpath.encode())
    rec = EngineRecord(
        graph=graph, file=relpath, sha256=sha256_file(path), onnx_sha256=g.sha256, precision="fp16",
        tensorrt_version=ORIN.tensorrt_version, gpu_name=ORIN.gpu_name, compute_capability=ORIN.compute_capability,
        inputs=g.inputs, outputs=g.outputs, built_at="2025-01-01T00:00:00+00:00", build_seconds=2.5,
        tolerance={"atol": 1e-3, "rtol": 1e-2} if verified else {}, max_abs_error=2e-4 if verified else None,
    )
    write_record(model_dir, rec)
    return rec


@pytest.fixture
def model(tiny_model_dir, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def test_cached_record_round_trip_and_invalidation(model):
    rel = "engines/features.fp16.0011223344556677.engine"
    assert cached_record(model, rel) is None  # nothing built yet
    rec = _fake_engine(model, "features", rel)
    assert cached_record(model, rel) == rec
    (model / rel).write_bytes(b"truncated")
    assert cached_record(model, rel) is None  # engine no longer matches its record
    _fake_engine(model, "features", rel)
    record_path(model / rel).write_text("{ not json")
    assert cached_record(model, rel) is None
    _fake_engine(model, "features", rel, verified=False)
    assert cached_record(model, rel) is None  # never verified: never reused
    _fake_engine(model, "features", rel)
    record_path(model / rel).unlink()
    assert cached_record(model, rel) is None


def test_plan_reuses_only_what_is_current(model):
    manifest = load_manifest(model)
    options = BuildOptions()
    first = plan_builds(model, manifest, options, ORIN)
    assert [p.graph.name for p in first] == ["features", "head"] and all(p.needs_build for p in first)
    for p in first:
        _fake_engine(model, p.graph.name, p.relpath)
    again = plan_builds(model, manifest, options, ORIN)
    assert [p.relpath for p in again] == [p.relpath for p in first]
    assert not any(p.needs_build for p in again)  # nothing changed: skip
    assert all(p.needs_build for p in plan_builds(model, manifest, options, ORIN, force=True))
    # another TensorRT version, another GPU, another precision: other files, rebuilt
    for target, opts in [(TargetDevice("10.7.0", "Orin", "8.7"), options),
                         (TargetDevice("10.3.0", "NVIDIA H100 80GB HBM3", "9.0"), options),
                         (ORIN, BuildOptions(precision="fp32"))]:
        plans = plan_builds(model, manifest, opts, target)
        assert all(p.needs_build for p in plans)
        assert not {p.relpath for p in plans} & {p.relpath for p in first}


def test_plan_rebuilds_the_graph_whose_onnx_changed(model):
    manifest = load_manifest(model)
    for p in plan_builds(model, manifest, BuildOptions(), ORIN):
        _fake_engine(model, p.graph.name, p.relpath)
    # re-export of the head graph: new ONNX bytes, new sha in the manifest
    from onnx import load, save

    head = load(str(model / "head.onnx"))
    head.doc_string = "re-exported"
    save(head, str(model / "head.onnx"))
    manifest.graphs[1].sha256 = sha256_file(model / "head.onnx")
    save_manifest(manifest, model)
    plans = plan_builds(model, load_manifest(model), BuildOptions(), ORIN)
    assert [p.needs_build for p in plans] == [False, True]


def test_plan_rejects_unknown_fp32_graph(model):
    with pytest.raises(ConfigError, match="nope"):
        plan_builds(model, load_manifest(model), BuildOptions(fp32_graphs=("nope",)), ORIN)


def test_score_graphs_are_those_producing_score_or_map(tiny_model_dir):
    assert score_graph_names(load_manifest(tiny_model_dir)) == {"head"}
