"""Tiny end-to-end: synth → train (edge profile, small settings) → export → ONNX Runtime matches torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_inspect.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from edge_inspect.data.mvtec import MVTecCategory, load_image  # noqa: E402
from edge_inspect.data.synth import make_synthetic_category  # noqa: E402
from edge_inspect.errors import ConfigError, ModelError  # noqa: E402
from edge_inspect.manifest import load_manifest  # noqa: E402
from edge_inspect.preprocess import preprocess  # noqa: E402
from trainer.config import make_config  # noqa: E402
from trainer.evaluate_backend import TorchBackend  # noqa: E402
from trainer.export import export  # noqa: E402
from trainer.train import load_trained, train  # noqa: E402

# Tolerances of ONNX Runtime vs torch on CPU, float32: relative to the map's scale. The edge profile's
# image score is a sum of z-scores, which can be near 0, so it gets an absolute tolerance too.
SCORE_RTOL = 1e-3
SCORE_ATOL = 1e-2
MAP_ATOL_REL = 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_category(root, "widget", n_train=14, n_test_good=3, n_test_per_defect=2, size=96, seed=1)
    cfg = make_config("edge", {"image_size": 64, "epochs1": 2, "epochs2": 2, "batch_size1": 4, "batch_size2": 4,
                               "pool_factor": 1.0, "student2_widths": [32, 16, 16], "disc_base": 8, "disc_depth": 2})
    run = tmp_path_factory.mktemp("run")
    train(cfg, root, "widget", run, progress=False)
    model_dir = export(run, tmp_path_factory.mktemp("model"))
    return root, cfg, run, model_dir


def test_model_folder_and_manifest(trained):
    _, cfg, run, model_dir = trained
    m = load_manifest(model_dir)
    assert [g.name for g in m.graphs] == ["teacher1", "student1", "teacher2", "student2", "discriminator"]
    assert m.input.height == 64 and m.profile == "edge"
    assert m.calibration.good_scores.count >= 2
    assert m.calibration.image_threshold > m.calibration.good_scores.quantiles["0.5"]
    assert m.provenance.training_config["epochs1"] == 2
    assert all(g.gmacs and g.gmacs > 0 for g in m.graphs) and all(len(g.sha256) == 64 for g in m.graphs)
    history = json.loads((run / "history.json").read_text())
    assert [h["stage"] for h in history["history"]] == [1, 1, 2, 2]


def test_onnx_matches_torch(trained):
    root, _, run, model_dir = trained
    model, _, _ = load_trained(run)
    manifest = load_manifest(model_dir)
    samples = MVTecCategory(root, "widget").test_samples()
    with OnnxRuntimeBackend(model_dir, manifest) as backend:
        for s in samples[:4]:
            x = preprocess(load_image(s.path), manifest.input, channel_order="RGB")
            got = backend.infer({"image": x})
            with torch.no_grad():
                ref = model(torch.from_numpy(x))
            scale = float(ref["anomaly_map"].abs().max())
            np.testing.assert_allclose(got["score"], ref["score"].numpy(), rtol=SCORE_RTOL, atol=SCORE_ATOL)
            np.testing.assert_allclose(got["anomaly_map"], ref["anomaly_map"].numpy(), atol=MAP_ATOL_REL * scale)


def test_batch_axis_is_dynamic(trained):
    _, _, _, model_dir = trained
    manifest = load_manifest(model_dir)
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    with OnnxRuntimeBackend(model_dir, manifest) as backend:
        out = backend.infer({"image": x})
    assert out["score"].shape == (3,) and out["anomaly_map"].shape == (3, 1, 64, 64)


def test_resume_is_a_no_op_when_finished_and_config_change_is_refused(trained):
    root, cfg, run, _ = trained
    before = (run / "model.pt").stat().st_mtime_ns
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    ckpt["config"].pop("self_fraction")  # as a run from before the setting: its default is this run's value
    torch.save(ckpt, run / "checkpoint.pt")
    train(cfg, root, "widget", run, progress=False)  # resumes at the end: nothing left to train
    state = torch.load(run / "checkpoint.pt", weights_only=False)["state"]
    assert state["stage"] == 2 and state["epoch"] == 2
    assert (run / "model.pt").stat().st_mtime_ns >= before
    other = cfg.override({"epochs1": 3})
    with pytest.raises(ConfigError, match="different config"):
        train(other, root, "widget", run, progress=False)


def test_eval_torch_backend_agrees_with_onnxruntime(trained, tmp_path):
    from edge_inspect.evaluation.runner import evaluate

    root, _, _, model_dir = trained
    ort = evaluate(model_dir, root, "widget", tmp_path / "ort", backend="onnxruntime", progress=False, report=False)
    pt = evaluate(model_dir, root, "widget", tmp_path / "pt", backend=TorchBackend, progress=False, report=False)
    assert ort["image_auroc"] == pytest.approx(pt["image_auroc"], abs=1e-6)
    ort_lines = (tmp_path / "ort" / "predictions.jsonl").read_text().splitlines()
    ort_scores = [json.loads(line)["score"] for line in ort_lines]
    pt_scores = [json.loads(line)["score"] for line in (tmp_path / "pt" / "predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(ort_scores, pt_scores, rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_head_settings_change_at_export_without_retraining(trained, tmp_path):
    """st_exponent/map_sigma re-export from the same weights; eval through torch follows the folder."""
    from edge_inspect.evaluation.runner import evaluate
    from trainer.export import with_head_settings

    root, _, run, _ = trained
    settings = {"st_exponent": 0.5, "map_sigma": 2.0}
    model_dir = export(run, tmp_path / "m", head_settings=settings)
    m = load_manifest(model_dir)
    assert {k: m.provenance.training_config["model"][k] for k in settings} == settings
    assert "head settings changed at export" in m.provenance.notes
    model, cfg, ckpt = load_trained(run)
    before = model.head.score_stats.clone()
    model, _ = with_head_settings(model, cfg, settings, ckpt)
    assert not torch.equal(model.head.score_stats[:2], before[:2])  # the map's good-image stats were measured again
    assert torch.equal(model.head.score_stats[2:], before[2:])  # the global score's did not change
    with pytest.raises(ModelError, match="checkpoint"):
        with_head_settings(load_trained(run)[0], cfg, settings)
    x = preprocess(load_image(MVTecCategory(root, "widget").test_samples()[0].path), m.input, channel_order="RGB")
    with OnnxRuntimeBackend(model_dir, m) as backend:
        got = backend.infer({"image": x})
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
        plain = load_trained(run)[0](torch.from_numpy(x))
    np.testing.assert_allclose(got["score"], ref["score"].numpy(), rtol=SCORE_RTOL, atol=SCORE_ATOL)
    assert not np.allclose(ref["score"].numpy(), plain["score"].numpy(), rtol=1e-3)  # the override did something
    ort = evaluate(model_dir, root, "widget", tmp_path / "ort", backend="onnxruntime", progress=False, report=False)
    pt = evaluate(model_dir, root, "widget", tmp_path / "pt", backend=TorchBackend, progress=False, report=False)
    assert ort["image_auroc"] == pytest.approx(pt["image_auroc"], abs=1e-6)
    with pytest.raises(ConfigError, match="no retraining"):
        export(run, tmp_path / "bad", head_settings={"disc_base": 4})


@pytest.mark.parametrize("head, message", [("st_exponent", "expects KEY=VALUE"), ("disc_base=4", "no retraining"),
                                           ("st_exponent=-1", "'st_exponent': got -1")])
def test_export_cli_refuses_bad_head_settings_in_one_line(trained, tmp_path, capsys, head, message):
    from edge_inspect.cli import main

    _, _, run, _ = trained
    code = main(["export", "--run", str(run), "--out", str(tmp_path / "m"), "--head", head])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_training_with_flip_augmentation(trained, tmp_path):
    """augment=True skips the teacher-feature cache and flips half of each batch on the training device."""
    root, cfg, _, _ = trained
    aug = cfg.override({"augment": True, "epochs1": 1, "epochs2": 1})
    train(aug, root, "widget", tmp_path, progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["stage"] for h in history["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in history["history"])
    model, _, _ = load_trained(tmp_path)
    assert bool(model.teacher1.fitted) and bool(model.teacher2.fitted)


def test_global_score_fuses_on_held_out_statistics(trained, tmp_path):
    """Training fits the image-level Gaussian; z-scores of the held-out good images centre on 0 (they set
    the statistics), and the fused score (the edge default) exports to ONNX unchanged."""
    root, _, run, model_dir = trained
    model, cfg, ckpt = load_trained(run)
    assert bool(model.head.glob_fitted) and cfg.model.global_weight == 1.0
    holdout = [root / "widget" / p for p in ckpt["data"]["holdout"]]
    assert len(holdout) >= 2
    m = load_manifest(model_dir)
    assert "global_score" in m.extra_outputs
    x = np.concatenate([preprocess(load_image(p), m.input, channel_order="RGB") for p in holdout])
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    a, b, _, _ = model.head.score_stats.tolist()
    z_local = (model.head.image_score(ref["anomaly_map"]) - a) / b
    assert float(ref["score"].mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(z_local.std()) == pytest.approx(1.0, rel=1e-4)
    with OnnxRuntimeBackend(model_dir, m, diagnostics=True) as backend:
        got = backend.infer({"image": x})
    np.testing.assert_allclose(got["global_score"], ref["global_score"].numpy(), rtol=SCORE_RTOL)
    np.testing.assert_allclose(got["score"], ref["score"].numpy(), rtol=SCORE_RTOL, atol=SCORE_ATOL)
    paper = export(run, tmp_path / "paper_score", head_settings={"global_weight": 0.0})
    with OnnxRuntimeBackend(paper, load_manifest(paper)) as backend:  # weight 0: the map's max, as in the paper
        plain = backend.infer({"image": x})
    np.testing.assert_allclose(plain["score"], plain["anomaly_map"].reshape(len(x), -1).max(1), rtol=1e-6)


def test_runs_older_than_the_global_score_still_load_but_refuse_it(trained, tmp_path):
    from trainer.export import with_head_settings

    _, _, run, _ = trained
    ckpt = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    ckpt["config"]["model"].pop("global_weight")
    for k in ("glob_mean", "glob_whiten", "score_stats", "glob_fitted"):
        ckpt["model"].pop(f"head.{k}")
    torch.save(ckpt, tmp_path / "model.pt")
    model, cfg, _ = load_trained(tmp_path)
    assert not bool(model.head.glob_fitted)
    with pytest.raises(ConfigError, match="predates"):
        with_head_settings(model, cfg, {"global_weight": 1.0})
    ckpt["model"]["head.map_mean"] = torch.zeros(1, 5, 1, 1)  # any other mismatch is still an error
    torch.save(ckpt, tmp_path / "model.pt")
    from edge_inspect.errors import DataError

    with pytest.raises(DataError, match="do not match"):
        load_trained(tmp_path)


def test_cross_fitting_rebuilds_the_graphs_fusion_and_scores_each_fold_on_the_others(trained):
    """The fused score and map are rebuilt from the graph's parts with the head's own statistics; cross-fitted
    scores of a fold use statistics from the other folds only."""
    from trainer.train import cross_fitted, fused_outputs, score_statistics

    root, _, run, model_dir = trained
    model, _, ckpt = load_trained(run)
    m = load_manifest(model_dir)
    files = [root / "widget" / p for p in ckpt["data"]["holdout"]]
    x = np.concatenate([preprocess(load_image(p), m.input, channel_order="RGB") for p in files])
    with OnnxRuntimeBackend(model_dir, m, diagnostics=True) as backend:
        out = backend.infer({"image": x})
    parts = [torch.from_numpy(np.asarray(out[k], np.float32)) for k in ("rstpm_map", "region_map", "global_score")]
    head = model.head
    amap, score = fused_outputs(head, *parts, head.map_stats, head.score_stats)
    np.testing.assert_allclose(score.numpy(), out["score"], rtol=SCORE_RTOL, atol=SCORE_ATOL)
    np.testing.assert_allclose(amap.numpy(), out["anomaly_map"],
                               atol=MAP_ATOL_REL * float(np.abs(out["anomaly_map"]).max()))
    n = len(files)
    scores, maps = cross_fitted(head, *parts, folds=n)
    rest = torch.arange(n) != 0
    stats = score_statistics(head, parts[0][rest], parts[1][rest], parts[2][rest])
    _, alone = fused_outputs(head, parts[0][:1], parts[1][:1], parts[2][:1], *stats)
    assert float(scores[0]) == pytest.approx(float(alone[0]), rel=1e-5)
    assert not np.allclose(scores.numpy(), out["score"])  # in-sample statistics would give the graph's scores


def test_export_calibrates_for_a_false_reject_rate_and_records_fusion_and_bounds(trained, tmp_path):
    root, _, run, model_dir = trained
    model, _, _ = load_trained(run)
    m = load_manifest(model_dir)
    cal = m.calibration
    assert m.schema_version == 4
    assert cal.threshold_model.target_frr == 0.005 and "cross-fitted" in cal.threshold_model.source
    assert cal.score_lower_bound is None and cal.map_lower_bound is None  # fused z-scores may be negative
    _, _, g_mean, g_std = model.head.score_stats.tolist()
    assert (m.score_fusion.global_mean, m.score_fusion.global_std) == (pytest.approx(g_mean), pytest.approx(g_std))
    # the paper's map and score (no fusion): non-negative, so thresholds may not go below 0; defects from test/
    plain = export(run, tmp_path / "plain", head_settings={"global_weight": 0.0, "region_weight": 0.0},
                   calibration_defects=root / "widget" / "test", target_frr=0.02)
    pc = load_manifest(plain).calibration
    assert load_manifest(plain).score_fusion is None
    assert pc.score_lower_bound == 0.0 and pc.map_lower_bound == 0.0 and pc.threshold_model.target_frr == 0.02
    assert pc.defect_scores.count == 6 and "good/ left out" in pc.defects_source  # 3 types x 2, no goods
    assert 0.0 <= pc.escape_rate <= 1.0


def test_export_refuses_a_good_folder_as_defects_and_leaves_no_half_written_folder(trained, tmp_path, monkeypatch):
    from edge_inspect.errors import DataError, ManifestError
    from trainer import export as export_module

    root, _, run, _ = trained
    with pytest.raises(DataError, match="good parts"):
        export(run, tmp_path / "m", calibration_defects=root / "widget" / "test" / "good")
    assert not (tmp_path / "m").exists()  # refused before anything was written

    def broken(*a, **k):
        raise DataError("calibration failed on purpose")

    monkeypatch.setattr("edge_inspect.evaluation.calibration.calibrate", broken)
    with pytest.raises(DataError, match="on purpose"):
        export_module.export(run, tmp_path / "half")
    assert (tmp_path / "half" / "teacher1.onnx").is_file()
    with pytest.raises(ManifestError, match="no manifest.json"):
        load_manifest(tmp_path / "half")  # graphs without a manifest never load
    monkeypatch.undo()
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a model folder"):
        export(run, tmp_path / "stray")


def _run_files(run) -> tuple[list, list]:
    """The training and held-out good files a finished run used (its checkpoint's data record)."""
    from pathlib import Path

    data = torch.load(run / "model.pt", map_location="cpu", weights_only=False)["data"]
    cat = Path(data["root"]) / data["category"]
    return [cat / p for p in data["train"]], [cat / p for p in data["holdout"]]


def _head_stats(model_dir):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    m = load_manifest(model_dir, verify_files=False)
    head = onnx.load(str(model_dir / m.graphs[-1].file))
    return {i.name: numpy_helper.to_array(i).copy() for i in head.graph.initializer}


def test_head_refit_on_the_float_graphs_reproduces_the_trainers_statistics(trained, tmp_path):
    """The runtime-side refit (numpy, no torch) is the trainer's estimators on the trainer's images: run on
    the float graphs it must give back the statistics the trainer fitted (and it finds every one of them)."""
    import shutil

    from edge_inspect.head_refit import refit_head
    from edge_inspect.quantize import _Inputs

    _, _, run, model_dir = trained
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    manifest = load_manifest(copy)
    train_files, held_out = _run_files(run)
    before = _head_stats(copy)
    refitted, report = refit_head(copy, manifest, _Inputs(train_files, manifest.input),
                                  _Inputs(held_out, manifest.input))
    assert len(report.fitted) == 5, report.fitted  # input scaling, two Gaussians, two fusion scales
    assert report.train_count == len(train_files) and report.held_out_count == len(held_out)
    after = _head_stats(copy)
    for name in ("m.map_mean", "m.map_std", "m.glob_mean", "m.reg_mean", "m.map_stats", "m.score_stats"):
        np.testing.assert_allclose(after[name], before[name], rtol=2e-3, atol=1e-4 * np.abs(before[name]).max(),
                                   err_msg=name)
    # whitening matrices: equal up to the eigenvectors' signs, so compare the inverse covariances WᵀW they give
    for name, w in before.items():
        if name.startswith("onnx::MatMul") and w.ndim == 2 and w.shape[0] == w.shape[1]:
            np.testing.assert_allclose(after[name] @ after[name].T, w @ w.T, rtol=1e-2,
                                       atol=1e-3 * np.abs(w @ w.T).max(), err_msg=name)
    assert refitted.score_fusion.global_mean == pytest.approx(manifest.score_fusion.global_mean, rel=1e-3)
    assert refitted.graphs[-1].sha256 != manifest.graphs[-1].sha256  # rewritten (float rounding differs)
    from edge_inspect.manifest import save_manifest

    save_manifest(refitted, copy)
    load_manifest(copy)  # the manifest's hash is the rewritten head's


def test_quantize_with_int8_teachers_refits_the_head_and_records_it(trained, tmp_path):
    """Every graph INT8 (the fastest variant): the head gets Q/DQ on its discriminator's convolutions only,
    and its Gaussians and scales are fitted again on the INT8 features."""
    onnx = pytest.importorskip("onnx")
    from edge_inspect.quantize import quantize

    _, _, run, model_dir = trained
    train_files, held_out = _run_files(run)
    backbones = ("teacher1", "student1", "teacher2", "student2", "discriminator")
    # --goods given as the whole train/good folder: the held-out goods in it must not reach the Gaussians
    refit = quantize(model_dir, train_files + held_out, "train goods", tmp_path / "refit", graphs=backbones,
                     max_images=8, threshold_goods=(held_out, "held-out goods"))
    kept = quantize(model_dir, train_files, "train goods", tmp_path / "kept", graphs=backbones, max_images=8,
                    threshold_goods=(held_out, "held-out goods"), refit=False)
    q = refit.manifest.quantization
    assert q.head_refit and "image-level Gaussian" in q.head_refit and "held-out goods" in q.head_refit
    assert f"from {len(train_files)} inputs of train goods" in q.head_refit
    assert kept.manifest.quantization.head_refit is None
    stats_refit, stats_kept = _head_stats(tmp_path / "refit"), _head_stats(tmp_path / "kept")
    assert not np.allclose(stats_refit["m.glob_mean"], stats_kept["m.glob_mean"])  # fitted on INT8 features
    assert load_manifest(tmp_path / "refit").quantization.head_refit == q.head_refit  # written, verified hashes
    head = onnx.load(str(tmp_path / "refit" / "discriminator.onnx"))
    producer = {o: n for n in head.graph.node for o in n.output}
    quantized = [n for n in head.graph.node if n.op_type == "Conv" and producer.get(n.input[1]) is not None
                 and producer[n.input[1]].op_type == "DequantizeLinear"]
    assert quantized and all("/disc/" in n.name for n in quantized)  # the UNet's convolutions, not the blur
    for n in head.graph.node:  # the Gaussians' whitening stays float
        if n.op_type == "MatMul":
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in n.input)
    with OnnxRuntimeBackend(tmp_path / "refit", refit.manifest) as backend:
        x = preprocess(load_image(held_out[0]), refit.manifest.input, channel_order="RGB")
        assert np.isfinite(backend.infer({"image": x})["score"]).all()
