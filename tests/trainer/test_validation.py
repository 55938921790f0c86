"""Validation without real defects (trainer.validation), head selection on it (trainer.head_select), and
proof that training and export never read a category's test/ or ground_truth/ folders."""

from __future__ import annotations

import contextlib
import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_inspect.data.mvtec import MVTecCategory, list_images, load_image  # noqa: E402
from edge_inspect.data.synth import make_synthetic_category  # noqa: E402
from edge_inspect.errors import ImageError  # noqa: E402
from edge_inspect.manifest import InputSpec, load_manifest  # noqa: E402
from trainer.config import make_config  # noqa: E402
from trainer.export import export  # noqa: E402
from trainer.train import train  # noqa: E402
from trainer.validation import make_validation_set, pooled_masks, split_holdout  # noqa: E402

# ---- a guard on test data: an audit hook (Python's, PEP 578) that refuses any open or listing under the
# blocked folders. Running as root, chmod would not stop a read; the hook does, for every Python-level
# open (numpy.fromfile, which load_image uses, goes through it) and directory listing. Hooks cannot be
# removed, so one is installed per process and is inert while nothing is blocked.
_BLOCKED: list[str] = []
_HITS: list[str] = []
_EVENTS = ("open", "os.listdir", "os.scandir")


def _guard(event: str, args: tuple) -> None:
    if not _BLOCKED or event not in _EVENTS or not args or args[0] is None or isinstance(args[0], int):
        return
    path = os.path.realpath(os.fsdecode(args[0]))
    if any(path == b or path.startswith(b + os.sep) for b in _BLOCKED):
        _HITS.append(path)  # recorded too, in case the caller swallows the error
        raise PermissionError(f"read of blocked test data: {path}")


sys.addaudithook(_guard)


@contextlib.contextmanager
def blocked_test_data(category_dir):
    """Inside: any open or listing under category_dir/test or category_dir/ground_truth raises."""
    _HITS.clear()
    _BLOCKED[:] = [os.path.realpath(category_dir / d) for d in ("test", "ground_truth")]
    try:
        yield _HITS
    finally:
        _BLOCKED.clear()


TINY = {"image_size": 64, "epochs1": 2, "epochs2": 2, "batch_size1": 4, "batch_size2": 4, "pool_factor": 1.0,
        "student2_widths": [32, 16, 16], "disc_base": 8, "disc_depth": 2, "keep_best": True, "line_fraction": 0.3}


@pytest.fixture(scope="module")
def blocked_run(tmp_path_factory):
    """Train and export (head chosen on validation) with the category's test data unreadable."""
    root = tmp_path_factory.mktemp("data")
    make_synthetic_category(root, "widget", n_train=14, n_test_good=3, n_test_per_defect=2, size=96, seed=1)
    cfg = make_config("edge", TINY)
    run, model = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("model")
    with blocked_test_data(root / "widget") as hits:
        train(cfg, root, "widget", run, progress=False)
        export(run, model, head_auto=True)
        assert hits == []
    return root, run, model


def test_the_guard_catches_what_a_test_read_would_do(blocked_run, tmp_path):
    root, _, _ = blocked_run
    cat = root / "widget"
    an_image = list_images(cat / "test" / "good")[0]
    with blocked_test_data(cat) as hits:
        with pytest.raises(ImageError, match="blocked test data"):
            load_image(an_image)
        with pytest.raises(PermissionError):
            MVTecCategory(root, "widget").test_samples()
        assert len(hits) == 2
    load_image(an_image)  # and only while blocked


def test_training_and_export_with_test_data_blocked(blocked_run):
    _, run, model = blocked_run
    history = json.loads((run / "history.json").read_text())
    vals = [h for h in history["history"] if "val" in h]
    assert [h["stage"] for h in vals] == [1, 1, 2, 2]
    assert all(0 <= h["val"][k] <= 1 for h in vals for k in ("image_auroc", "pixel_auroc", "figure"))
    assert history["best"]["stage2"]["figure"] == max(h["val"]["figure"] for h in vals if h["stage"] == 2)
    m = load_manifest(model)
    v = m.provenance.validation
    assert v["shared_with_calibration"] is True  # 4 held-out goods: too few to split
    for k, value in v["selected"].items():
        assert m.provenance.training_config["model"][k] == value  # what was chosen is what was exported
    assert v["selected_figures"]["figure"] == max(r["figure"] for r in v["top5"])
    assert v["selected_figures"]["figure"] >= v["configured_figures"]["figure"]
    # validation anomalies are local: the image-level Gaussian's weight is not searched, it stays configured
    configured_global = v["configured"]["global_weight"]
    assert v["grid"]["global_weight"] == [configured_global] and v["not_searched"] == ["global_weight"]
    assert v["selected"]["global_weight"] == configured_global and len(v["grid"]["region_weight"]) > 1
    # the report says whether the choice beats the configured head by more than the validation set's noise
    assert 0 < v["image_auroc_se"] < 0.5
    gain = v["selected_figures"]["figure"] - v["configured_figures"]["figure"]
    assert v["within_noise"] is (gain < v["image_auroc_se"])


def test_explicit_head_values_win_over_auto(blocked_run, tmp_path):
    root, run, _ = blocked_run
    with blocked_test_data(root / "widget") as hits:
        out = export(run, tmp_path / "m", head_auto=True, head_settings={"st_exponent": 1.0, "global_weight": 0.0})
        assert hits == []
    m = load_manifest(out)
    v = m.provenance.validation
    assert v["grid"]["st_exponent"] == [1.0] and v["grid"]["global_weight"] == [0.0]
    assert m.provenance.training_config["model"]["st_exponent"] == 1.0
    assert m.provenance.training_config["model"]["global_weight"] == 0.0 and m.score_fusion is None


def test_export_cli_head_auto_prints_the_choice(blocked_run, tmp_path, capsys):
    from edge_inspect.cli import main

    _, run, _ = blocked_run
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "m"), "--head", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "head chosen on validation" in printed
    v = load_manifest(tmp_path / "m").provenance.validation
    assert ("validation cannot tell them apart" in printed) is v["within_noise"]
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "f"), "--head", "fixed"]) == 0
    assert load_manifest(tmp_path / "f").provenance.validation is None


def test_split_holdout_halves_only_when_both_halves_can_calibrate():
    calib, val, shared = split_holdout(list(range(40)))
    assert not shared and len(calib) == len(val) == 20 and not set(calib) & set(val)
    calib, val, shared = split_holdout(list(range(39)))
    assert shared and calib == val == list(range(39))


def test_validation_set_is_reproducible_and_changes_goods_only_inside_masks(tmp_path):
    make_synthetic_category(tmp_path, "widget", n_train=6, n_test_good=1, n_test_per_defect=1, size=64, seed=2)
    paths = list_images(tmp_path / "widget" / "train" / "good")
    cfg = make_config("edge", {"image_size": 64})
    spec = InputSpec(height=64, width=64)
    a, b = make_validation_set(paths, cfg, spec), make_validation_set(paths, cfg, spec)
    assert torch.equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    n = len(paths)
    assert a.labels.tolist() == [0] * n + [1] * n and a.source.tolist() == list(range(n)) * 2
    assert not a.masks[:n].any() and all(m.any() for m in a.masks[n:])
    outside = ~a.masks[n:]
    diff = (a.images[n:] - a.images[:n]).abs().sum(dim=1).numpy()
    assert diff[outside].max() == 0 and diff[~outside].max() > 0


def test_pooled_masks_keep_thin_cracks_and_drop_specks():
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 10:50, 30] = True  # a 1-px crack: no cell is half full
    masks[1, 0:8, 0:8] = True  # a blob: 4 cells full
    masks[1, 40, 40] = True  # plus a speck beside it, which must not count
    pooled = pooled_masks(masks, (16, 16))
    assert pooled[0].sum() == 11 and pooled[0][2:13, 7].all()
    assert pooled[1].sum() == 4
