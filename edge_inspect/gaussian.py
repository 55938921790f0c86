"""A Gaussian of good images' feature vectors, fitted in numpy: the one implementation the trainer (after
stage 1) and ``edge-inspect quantize`` (refitting a quantized model's head, ``head_refit``) share.

The covariance is shrunk with the Ledoit-Wolf estimate, because there are about as many features
(hundreds) as good images. The fit is returned as a mean and a whitening matrix W, so the squared
Mahalanobis distance is ‖(f − μ) Wᵀ‖²: a matrix product that stays accurate in float32 in the
exported graph, unlike an explicit inverse of a nearly singular covariance.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Shrunk covariance (D, D) float64 and the shrinkage in [0, 1] of samples ``x`` (N, D).

    Σ = (1 − s)·S + s·(tr S / D)·I with S the maximum-likelihood covariance (divided by N) and s the
    Ledoit-Wolf (2004) estimate, the formula scikit-learn's ``LedoitWolf`` uses.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    xc = x - x.mean(axis=0, keepdims=True)
    s = xc.T @ xc / n
    mu = np.trace(s) / d
    eye = np.eye(d)
    # delta: squared distance of S from mu·I; beta: the sampling variance of S, both per dimension
    delta = float(((s - mu * eye) ** 2).sum() / d)
    x2 = xc**2
    beta = min(float(((x2.T @ x2).sum() / n - (s**2).sum()) / (d * n)), delta)
    shrink = 0.0 if delta == 0.0 else beta / delta
    return (1 - shrink) * s + shrink * mu * eye, shrink


def fit_gaussian(feats: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean (D,) float32, whitening matrix W (D, D) float32 and shrinkage for feature vectors ``feats`` (N, D).

    With Σ = V Λ Vᵀ, W = Λ^(−1/2) Vᵀ, so ‖W (f − μ)‖² is the squared Mahalanobis distance of f.
    """
    feats = np.asarray(feats)
    if feats.ndim != 2 or len(feats) < 2:
        raise DataError(f"a Gaussian needs at least 2 feature vectors, got shape {tuple(feats.shape)}")
    cov, shrink = ledoit_wolf(feats)
    evals, evecs = np.linalg.eigh(cov)
    scale = 1.0 / np.sqrt(np.maximum(evals, eps * max(float(evals.max()), eps)))
    whiten = scale[:, None] * evecs.T
    mean = feats.astype(np.float64).mean(axis=0)
    return mean.astype(np.float32), whiten.astype(np.float32), shrink
