"""Losses: STPM feature matching and the discriminator's focal loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_matching_loss(students: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    """Σ over scales of mean over pixels of ‖n(t) − n(s)‖² with n = channel-wise L2 normalisation (= 2·(1 − cos))."""
    loss = students[0].new_zeros(())
    for s, t in zip(students, teachers, strict=True):
        d = F.normalize(s, dim=1) - F.normalize(t, dim=1)
        loss = loss + (d * d).sum(dim=1).mean()
    return loss


def focal_loss(logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss on logits (B,1,h,w) with soft targets in [0, 1] (the mask's area fraction per cell)."""
    p = torch.sigmoid(logit)
    bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    return ((1 - p_t) ** gamma * bce).mean()
