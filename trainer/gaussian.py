"""Gaussian models of good images' pooled teacher features: over the whole image (Rippel et al., ICPR
2020, "Modeling the Distribution of Normal Data in Pre-Trained Deep Features for Anomaly Detection")
and over a sliding window (one Gaussian shared by all positions), which gives a regional map.

The fit itself (Ledoit-Wolf shrinkage, whitening) is ``edge_inspect.gaussian`` in numpy, shared with
``edge-inspect quantize``, which refits a quantized model's Gaussians without torch; here are the torch-side
feature pooling and thin tensor wrappers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edge_inspect import gaussian


def ledoit_wolf(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Shrunk covariance (D, D) float64 and shrinkage of samples ``x`` (N, D): ``edge_inspect.gaussian.ledoit_wolf``."""
    cov, shrink = gaussian.ledoit_wolf(x.detach().cpu().double().numpy())
    return torch.from_numpy(cov), shrink


def fit_gaussian(feats: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mean (D,), whitening matrix W (D, D) and shrinkage for pooled features ``feats`` (N, D), float32 on the
    CPU: ``edge_inspect.gaussian.fit_gaussian`` (the same fit ``edge-inspect quantize`` refits heads with)."""
    mean, whiten, shrink = gaussian.fit_gaussian(feats.detach().cpu().numpy())
    return torch.from_numpy(mean), torch.from_numpy(whiten), shrink


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
