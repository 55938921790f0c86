"""Parameter and multiply-accumulate counts per network (Conv2d and Linear dominate; others ignored)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def count_macs(module: nn.Module, *inputs: torch.Tensor) -> int:
    """MACs of one forward pass of ``module`` on ``inputs`` (batch 1 recommended), from Conv2d/Linear hooks."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out):
        nonlocal total
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out.numel() * k

    def linear_hook(m: nn.Linear, _inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        module(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
