"""The teachers' ImageNet weights really load: a known photo is classified into its ImageNet class."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from edge_inspect.errors import ModelError  # noqa: E402
from trainer.backbones import build_backbone, imagenet_classifier, resolve_resnet_weights  # noqa: E402

EGYPTIAN_CAT, ESPRESSO = 285, 967


def _imagenet_input(rgb: np.ndarray) -> torch.Tensor:
    import cv2

    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite2"])
def test_pretrained_effnet_classifies_known_photos(name):
    net = imagenet_classifier(name)
    with torch.no_grad():
        cat = net(_imagenet_input(skdata.chelsea())).argmax(1).item()
        coffee = net(_imagenet_input(skdata.coffee())).argmax(1).item()
    assert cat == EGYPTIAN_CAT
    assert coffee == ESPRESSO


def test_teacher_trunk_carries_the_pretrained_weights():
    clf = imagenet_classifier("efficientnet-lite0")
    trunk = build_backbone("efficientnet-lite0", pretrained=True)
    assert torch.equal(trunk.stem[0].weight, clf._conv_stem.weight)
    assert torch.equal(trunk.blocks[5]._depthwise_conv.weight, clf._blocks[5]._depthwise_conv.weight)
    random = build_backbone("efficientnet-lite0", pretrained=False)
    assert not torch.equal(random.stem[0].weight, clf._conv_stem.weight)


@pytest.mark.parametrize("name,channels", [("efficientnet-lite0", [24, 40, 112, 320]),
                                           ("efficientnet-lite2", [24, 48, 120, 352])])
def test_feature_taps_at_strides_4_8_16_32(name, channels):
    net = build_backbone(name, pretrained=False).eval()
    with torch.no_grad():
        feats = net(torch.zeros(1, 3, 128, 96))
    assert net.channels == channels
    expected = [(c, 128 // s, 96 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)]
    assert [tuple(f.shape[1:]) for f in feats] == expected


def test_resnet_weights_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match="resnet18-f37072fd.pth"):
        resolve_resnet_weights("resnet18")
    with pytest.raises(ModelError, match="not found"):
        resolve_resnet_weights("resnet18", tmp_path / "nope.pth")


def test_resnet_weights_load_from_hub_cache(tmp_path, monkeypatch):
    import torchvision

    # A state dict saved where the hub cache keeps torchvision's file is what a user with the weights has.
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), ckpt / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    trunk = build_backbone("resnet18", pretrained=True)
    assert torch.equal(trunk.stem[0].weight, ref.conv1.weight)
    assert trunk.channels == [64, 128, 256, 512]
