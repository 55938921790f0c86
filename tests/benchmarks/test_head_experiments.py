"""benchmarks/head_experiments.py: the kNN pieces it scores with (coreset, nearest-row distance map)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_knn_map_is_the_distance_to_the_nearest_bank_row():
    from benchmarks.head_experiments import knn_map

    g = torch.Generator().manual_seed(0)
    f, bank = torch.randn(2, 5, 3, 4, generator=g), torch.randn(7, 5, generator=g)
    got = knn_map(f, bank)
    assert got.shape == (2, 1, 3, 4)
    patches = f.permute(0, 2, 3, 1).reshape(-1, 5)
    want = torch.cdist(patches, bank).amin(1).reshape(2, 3, 4)
    assert torch.allclose(got[:, 0], want, atol=1e-4)
    on_bank = bank.T.reshape(1, 5, 7, 1)  # the bank's own rows as seven positions
    assert torch.allclose(knn_map(on_bank, bank).flatten(), torch.zeros(7), atol=1e-3)


def test_coreset_picks_distinct_rows_that_cover_the_clusters():
    from benchmarks.head_experiments import coreset

    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    rows = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    picked = coreset(rows, 4, dims=32)
    assert picked.shape == (4, 2) and len({tuple(r.tolist()) for r in picked}) == 4
    # greedy k-centre: one pick per far-apart cluster, so every row is within the cluster's spread of a pick
    assert torch.cdist(rows, picked).amin(1).max() < 1.0
