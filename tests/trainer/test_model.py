"""Map head options: what the discriminator reads and how the final map is combined."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edge_inspect.errors import ConfigError  # noqa: E402
from trainer.config import make_config  # noqa: E402
from trainer.model import MapHead  # noqa: E402

GLOBAL_CHANNELS = [12, 16, 12, 16]  # stride-8 and stride-16 channels of t1 and t2 in _features
REGION_CHANNELS = [16, 16]  # stride-16 channels of t1 and t2


def _features(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 16, 16), (12, 8, 8), (16, 4, 4)]
    return [[torch.randn(2, *s, generator=g) for s in shapes] for _ in range(4)]  # t1, s1, t2, s2


@pytest.mark.parametrize("inputs, channels", [("summed", 3), ("separate", 6)])
def test_discriminator_reads_summed_or_separate_maps(inputs, channels):
    cfg = make_config("edge", {"disc_inputs": inputs, "disc_base": 4, "disc_depth": 2}).model
    head = MapHead(cfg, (64, 64), GLOBAL_CHANNELS, REGION_CHANNELS).eval()
    t1, s1, t2, s2 = _features()
    d1, d2 = head.pair_maps(t1, s1, t2, s2)
    assert d1.shape == d2.shape == (2, 3, 16, 16)
    x = head.disc_input(d1, d2)
    assert x.shape == (2, channels, 16, 16) and head.map_mean.shape[1] == channels
    expected = torch.cat([d1, d2], 1) if inputs == "separate" else d1 + d2
    assert torch.equal(x, expected)
    out = head(t1, s1, t2, s2)
    assert out["anomaly_map"].shape == (2, 1, 64, 64) and out["score"].shape == (2,)


def test_st_exponent_zero_trusts_the_discriminator_alone_and_one_is_the_product():
    t1, s1, t2, s2 = _features(1)
    outs = {}
    for e in (0.0, 1.0):
        cfg = make_config("edge", {"st_exponent": e, "disc_base": 4, "disc_depth": 2, "map_sigma": 0.0}).model
        torch.manual_seed(0)
        # Output size = map size, so upsampling is the identity and the maps compare exactly.
        outs[e] = MapHead(cfg, (16, 16), GLOBAL_CHANNELS, REGION_CHANNELS).eval()(t1, s1, t2, s2)
    prob0 = outs[0.0]["disc_prob"]
    torch.testing.assert_close(outs[0.0]["rstpm_map"], prob0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[1.0]["rstpm_map"], outs[1.0]["st_map"] * outs[1.0]["disc_prob"],
                               rtol=1e-4, atol=1e-6)


def _random_gaussian(head: MapHead, prefix: str, seed: int) -> None:
    """Give the head's "glob" or "reg" Gaussian a random mean and whitening matrix."""
    mean = getattr(head, f"{prefix}_mean")
    dim = mean.shape[1]
    g = torch.Generator().manual_seed(seed)
    mean.copy_(torch.randn(1, dim, generator=g))
    getattr(head, f"{prefix}_whiten").copy_(torch.randn(dim, dim, generator=g) / dim)


def test_region_map_is_the_windowed_mahalanobis_distance_and_fuses_with_the_rstpm_map():
    t1, s1, t2, s2 = _features(5)
    cfg = make_config("edge", {"region_weight": 0.5, "region_window": 3, "map_sigma": 0.0, "disc_base": 4,
                               "disc_depth": 2}).model
    head = MapHead(cfg, (4, 4), GLOBAL_CHANNELS, REGION_CHANNELS).eval()  # output size = stride-16 size: no resampling
    _random_gaussian(head, "reg", 6)
    head.map_stats.copy_(torch.tensor([0.2, 0.1, 3.0, 2.0]))
    with torch.no_grad():
        out = head(t1, s1, t2, s2)
    # by hand at position (0, 0) of image 1: its 3×3 window is clipped to rows/cols 0..1
    window = torch.cat([f[1, :, :2, :2].reshape(f.shape[1], -1) for f in (t1[2], t2[2])])  # (2C, 4)
    stats = torch.cat([torch.stack([w.mean(), w.std(correction=0)]) for w in window]).reshape(-1, 2)
    feats = torch.cat([stats[:16, 0], stats[:16, 1], stats[16:, 0], stats[16:, 1]])
    expected = ((feats - head.reg_mean[0]) @ head.reg_whiten.T).norm()
    torch.testing.assert_close(out["region_map"][1, 0, 0, 0], expected, rtol=1e-4, atol=1e-5)
    fused = (out["rstpm_map"] - 0.2) / 0.1 + 0.5 * (out["region_map"] - 3.0) / 2.0
    torch.testing.assert_close(out["anomaly_map"], fused, rtol=1e-4, atol=1e-4)


def test_global_score_is_the_mahalanobis_distance_and_fuses_with_the_map_max():
    t1, s1, t2, s2 = _features(3)
    cfg = make_config("edge", {"global_weight": 2.0, "disc_base": 4, "disc_depth": 2}).model
    head = MapHead(cfg, (16, 16), GLOBAL_CHANNELS, REGION_CHANNELS).eval()
    _random_gaussian(head, "glob", 4)
    head.score_stats.copy_(torch.tensor([0.3, 0.2, 5.0, 4.0]))
    with torch.no_grad():
        out = head(t1, s1, t2, s2)
    pooled = torch.cat([torch.cat([f.mean((2, 3)), f.std((2, 3), correction=0)], 1)
                        for f in (t1[1], t1[2], t2[1], t2[2])], 1)
    expected = ((pooled - head.glob_mean) @ head.glob_whiten.T).norm(dim=1)
    torch.testing.assert_close(out["global_score"], expected, rtol=1e-4, atol=1e-5)
    local = out["anomaly_map"].flatten(1).amax(1)
    torch.testing.assert_close(out["score"], (local - 0.3) / 0.2 + 2.0 * (expected - 5.0) / 4.0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("override", [{"disc_inputs": "both"}, {"st_exponent": -1.0}, {"self_fraction": 2.0},
                                      {"no_such_key": 1}, {"global_weight": -1.0}, {"region_weight": 11.0},
                                      {"region_window": 4}])
def test_bad_model_settings_are_refused(override):
    with pytest.raises(ConfigError):
        make_config("edge", override)


def test_head_options_export_to_onnx_and_match_torch(tmp_path):
    """The fractional exponent, the six-map input and the fused score survive the ONNX export the runtime runs."""
    ort = pytest.importorskip("onnxruntime")
    import warnings

    import numpy as np

    cfg = make_config("edge", {"st_exponent": 0.5, "disc_inputs": "separate", "global_weight": 1.5, "disc_base": 4,
                               "disc_depth": 2}).model
    head = MapHead(cfg, (64, 64), GLOBAL_CHANNELS, REGION_CHANNELS).eval().requires_grad_(False)
    head.score_stats.copy_(torch.tensor([0.1, 0.5, 7.0, 2.0]))  # the fused score with non-trivial statistics
    t1, s1, t2, s2 = _features(2)
    # Distances near 0 make x^0.5 steep; keep the comparison in a well-conditioned range.
    s1 = [s + 0.5 * torch.ones_like(s) for s in s1]

    class Wrap(torch.nn.Module):
        def forward(self, *xs):
            out = head(list(xs[0:3]), list(xs[3:6]), list(xs[6:9]), list(xs[9:12]))
            return out["anomaly_map"], out["score"]

    args = tuple(t1 + s1 + t2 + s2)
    path = tmp_path / "head.onnx"
    names = [f"x{i}" for i in range(12)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrap(), args, str(path), input_names=names, output_names=["map", "score"], opset_version=17,
                          dynamo=False)
    with torch.no_grad():
        ref_map, ref_score = Wrap()(*args)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_map, got_score = sess.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})
    np.testing.assert_allclose(got_score, ref_score.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_map, ref_map.numpy(), rtol=1e-4, atol=1e-5)
