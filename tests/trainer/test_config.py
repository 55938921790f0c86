"""Training config: pydantic models with Literal choices and ranges; a mistyped key or value is one
ConfigError line naming it; checkpoints' dicts round-trip, and older ones (fewer keys) still load."""

from __future__ import annotations

import typing

import pytest

from edge_inspect.cli import main
from edge_inspect.errors import ConfigError
from trainer.config import (
    PROFILES,
    Backbone,
    ModelConfig,
    TrainConfig,
    describe_settings,
    make_config,
    setting_names,
)


@pytest.mark.parametrize("override, names", [
    ({"optimizer1": "adamw"}, "optimizer1"),  # used to become Adam without a word
    ({"optimiser1": "sgd"}, "did you mean 'optimizer1'"),
    ({"epochs1": "many"}, "epochs1"),
    ({"batch_size1": 1}, "batch_size1"),
    ({"lr1": 0}, "lr1"),
    ({"teacher1": "resnet19"}, "teacher1"),
    ({"student2_widths": [64, 32]}, "student2_widths"),
    ({"holdout_fraction": 1.0}, "holdout_fraction"),
    ({"device": "gpu"}, "device"),
    ({"st_exponent": 5}, "st_exponent"),
    ({"region_window": 4}, "region_window"),
    ({"model": {}}, "unknown training setting 'model'"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(override, names):
    with pytest.raises(ConfigError) as err:
        make_config("edge", override)
    assert names in str(err.value) and "\n" not in str(err.value)


def test_overrides_reach_both_levels_and_none_is_ignored():
    cfg = make_config("paper", {"epochs1": 3, "disc_base": 8, "seed": None, "optimizer1": "adam"})
    assert (cfg.epochs1, cfg.model.disc_base, cfg.seed, cfg.optimizer1) == (3, 8, 0, "adam")
    assert cfg.model.teacher1 == "resnet18"  # the rest is the profile's
    assert PROFILES["paper"].epochs1 == 100  # profiles are never changed by an override
    with pytest.raises(ConfigError, match="unknown profile"):
        make_config("fast")


def test_checkpoint_dicts_round_trip_and_old_ones_load():
    cfg = make_config("edge", {"epochs1": 2})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    old["model"].pop("region_weight")  # a run from before the setting existed
    old["workers"] = 0  # a retired key
    assert TrainConfig.from_dict(old).model.region_weight == ModelConfig().region_weight
    with pytest.raises(ConfigError, match="optimizer2"):
        TrainConfig.from_dict({**cfg.to_dict(), "optimizer2": "sgd"})


def test_assignment_is_validated_too():
    cfg = make_config("edge")
    with pytest.raises(ValueError):
        cfg.optimizer1 = "adamw"


def test_backbone_choices_match_the_backbones_module():
    backbones = pytest.importorskip("trainer.backbones")  # needs torch
    assert typing.get_args(Backbone) == backbones.BACKBONES


def test_every_setting_is_described():
    rows = describe_settings("paper")
    assert [r[0] for r in rows] == setting_names()
    assert all(r[3] for r in rows), [r[0] for r in rows if not r[3]]
    by_key = {r[0]: r for r in rows}
    assert by_key["epochs1"][1:3] == ("int >=0", 100)
    assert by_key["optimizer1"][1:3] == ("adam|sgd", "sgd")
    assert by_key["st_exponent"][1] == "float 0..4"


def test_cli_lists_settings_without_data_and_refuses_typos_in_one_line(capsys):
    assert main(["train", "--list-settings", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("optimizer1 "))
    assert "adam|sgd" in line and "sgd" in line.split("adam|sgd", 1)[1] and "STPM" in line
    assert all(any(ln.startswith(k + " ") for ln in out.splitlines()) for k in setting_names())
    assert main(["train", "--data", "d", "--category", "c", "--out", "o", "--set", "optimiser1=sgd"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'optimizer1'" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--data", "d"]) == 2
    assert "--category, --out" in capsys.readouterr().err


def test_train_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "(default: edge)" in out and "--list-settings" in out
    assert "(default: None)" not in out and "(default: False)" not in out


@pytest.mark.parametrize("given, expected", [(64, (64, 64)), ("64x160", (64, 160)), ("96X32", (96, 32)),
                                             ([64, 160], (64, 160)), ("256", (256, 256)), (None, None)])
def test_image_size_is_height_by_width(given, expected):
    assert make_config("edge", {"image_size": given} if given is not None else {}).image_size == expected


@pytest.mark.parametrize("given", [100, "64x100", "16x64", "64x", "wide", [64, 64, 64], True])
def test_image_size_must_be_multiples_of_32_in_one_line(given):
    with pytest.raises(ConfigError, match="image_size") as err:
        make_config("edge", {"image_size": given})
    assert "\n" not in str(err.value)


def test_old_checkpoints_square_int_size_loads_as_height_width():
    d = make_config("edge").to_dict()
    d["image_size"] = 256
    for key in ("fit", "tile_overlap"):
        d.pop(key)
    cfg = TrainConfig.from_dict(d)
    assert cfg.image_size == (256, 256) and cfg.fit is None and cfg.tile_overlap is None


def test_cli_refuses_a_bad_image_size_in_one_line(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path), "--category", "x", "--out", str(tmp_path / "r"),
               "--image-size", "64x100"])
    err = capsys.readouterr().err
    assert rc != 0 and "multiples of 32" in err and "Traceback" not in err
