"""Gaussian models of good images' pooled teacher features: over the whole image (Rippel et al., ICPR
2020, "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for Anomaly Detection")
and over a sliding window (one Gaussian shared by all positions), which gives a regional map.

The covariance is shrunk with the Ledoit-Wolf estimate, because there are about as many features
(hundreds) as good images. The fit is returned as a mean and a whitening matrix W, so the squared
Mahalanobis distance is ‖(f − μ) Wᵀ‖²: a matrix product that stays accurate in float32 in the
exported graph, unlike an explicit inverse of a nearly singular covariance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_inspect.errors import DataError


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Shrunk covariance (D, D) and the shrinkage in [0, 1] of samples ``x`` (N, D), in float64.

    Σ = (1 − s)·S + s·(tr S / D)·I with S the maximum-likelihood covariance (divided by N) and s the
    Ledoit-Wolf (2004) estimate, the formula scikit-learn's ``LedoitWolf`` uses.
    """
    x = x.double()
    n, d = x.shape
    xc = x - x.mean(dim=0, keepdim=True)
    s = xc.T @ xc / n
    mu = torch.trace(s) / d
    # delta: squared distance of S from mu·I; beta: the sampling variance of S, both per dimension
    delta = ((s - mu * torch.eye(d, dtype=s.dtype)) ** 2).sum() / d
    x2 = xc**2
    beta = ((x2.T @ x2).sum() / n - (s**2).sum()) / (d * n)
    beta = torch.minimum(beta, delta)
    shrink = 0.0 if float(delta) == 0.0 else float(beta / delta)
    cov = (1 - shrink) * s + shrink * mu * torch.eye(d, dtype=s.dtype)
    return cov, shrink


def fit_gaussian(feats: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean (D,), whitening matrix W (D, D) and shrinkage for pooled features ``feats`` (N, D).

    With Σ = V Λ Vᵀ, W = Λ^(−1/2) Vᵀ, so ‖W (f − μ)‖² is the squared Mahalanobis distance of f.
    """
    if feats.ndim != 2 or len(feats) < 2:
        raise DataError(f"a Gaussian needs at least 2 feature vectors, got shape {tuple(feats.shape)}")
    cov, shrink = ledoit_wolf(feats)
    evals, evecs = torch.linalg.eigh(cov)
    scale = evals.clamp_min(eps * float(evals.max().clamp_min(eps))).rsqrt()
    whiten = scale[:, None] * evecs.T
    return feats.double().mean(dim=0).float(), whiten.float(), shrink


def pooled_statistics(feats: list[torch.Tensor]) -> torch.Tensor:
    """Per-channel spatial mean and standard deviation of each map (B, C, h, w) → (B, 2·ΣC).

    Standard deviation (not only the mean) carries texture: it made the difference for magnetic_tile's
    large low-contrast `uneven` regions (issue 3).
    """
    parts = []
    for f in feats:
        mean = f.mean(dim=(2, 3))
        var = (f - mean[:, :, None, None]).pow(2).mean(dim=(2, 3))
        parts += [mean, var.clamp_min(0).add(1e-12).sqrt()]
    return torch.cat(parts, dim=1)


def window_statistics(feats: list[torch.Tensor], window: int) -> torch.Tensor:
    """Per-channel mean and standard deviation over a ``window`` × ``window`` neighbourhood of each
    position (edges use the part of the window inside the map): [(B, C, h, w), ...] → (B, 2·ΣC, h, w)."""
    pad = window // 2
    parts = []
    for f in feats:
        mean = F.avg_pool2d(f, window, stride=1, padding=pad, count_include_pad=False)
        sq = F.avg_pool2d(f * f, window, stride=1, padding=pad, count_include_pad=False)
        parts += [mean, (sq - mean * mean).clamp_min(0).add(1e-12).sqrt()]
    return torch.cat(parts, dim=1)
