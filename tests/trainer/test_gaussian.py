"""The image-level Gaussian: Ledoit-Wolf shrinkage, whitening and pooled statistics on known cases."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge_inspect.errors import DataError  # noqa: E402
from trainer.gaussian import fit_gaussian, ledoit_wolf, pooled_statistics  # noqa: E402


def _samples(n: int, d: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g)
    return torch.randn(n, d, generator=g) @ mix + 3.0  # correlated, offset


def test_ledoit_wolf_matches_scikit_learn():
    sk = pytest.importorskip("sklearn.covariance")
    x = _samples(40, 25)  # fewer samples than twice the dimension: shrinkage matters
    cov, shrink = ledoit_wolf(x)
    ref = sk.LedoitWolf().fit(x.double().numpy())
    assert 0.0 < shrink < 1.0
    assert shrink == pytest.approx(ref.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(cov.numpy(), ref.covariance_, rtol=1e-9, atol=1e-12)


def test_whitening_gives_the_squared_mahalanobis_distance():
    x = _samples(60, 12, seed=1)
    mean, whiten, _ = fit_gaussian(x)
    cov, _ = ledoit_wolf(x)
    q = _samples(5, 12, seed=2)
    diff = (q.double() - mean.double())
    expected = torch.einsum("nd,de,ne->n", diff, torch.linalg.inv(cov), diff)
    got = ((q - mean) @ whiten.T).pow(2).sum(1)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4)


def test_identical_samples_give_zero_covariance_and_fewer_than_two_are_refused():
    cov, shrink = ledoit_wolf(torch.ones(5, 3))
    assert shrink == 0.0 and torch.count_nonzero(cov) == 0  # no spread: S = 0 and nothing to shrink towards
    with pytest.raises(DataError, match="at least 2"):
        fit_gaussian(torch.ones(1, 3))


def test_pooled_statistics_are_per_channel_mean_and_std():
    a = torch.tensor([[[[1.0, 3.0], [1.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]]]])  # (1, 2, 2, 2)
    b = torch.arange(9.0).reshape(1, 1, 3, 3)
    got = pooled_statistics([a, b])
    expected = torch.tensor([[2.0, 2.0, 1.0, 1e-6, 4.0, float(np.std(np.arange(9.0)))]])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
