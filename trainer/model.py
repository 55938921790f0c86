"""RSTPM networks: teachers, students, the reconstructing decoder, the discriminator and the map head.

Shapes at input (B, 3, H, W); scale k ∈ {4, 8, 16} means a feature map (B, C, H/k, W/k).
Each network is a separate nn.Module so each exports to its own ONNX graph with global tensor names:
teacher1: image → t1_4, t1_8, t1_16, t1_32 · student1: image → s1_4, s1_8, s1_16 ·
teacher2: image → t2_4, t2_8, t2_16 · student2: t1_32, t2_4, t2_8, t2_16 → s2_4, s2_8, s2_16 ·
discriminator (with map head): all twelve features → anomaly_map, score, st_map, stpm_map, disc_prob,
global_score, rstpm_map, region_map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import build_backbone
from .config import ModelConfig
from .gaussian import pooled_statistics, window_statistics

SCALES = (4, 8, 16)
GLOBAL_TAPS = (1, 2)  # strides 8 and 16 of each teacher feed the image-level Gaussian (as PatchCore's taps)
REGION_TAP = 2  # stride 16 of each teacher feeds the regional Gaussian


class Teacher(nn.Module):
    """Frozen ImageNet backbone; returns the taps at strides 4/8/16 (and 32 when ``with_deepest``)."""

    def __init__(self, backbone: str, with_deepest: bool, weights_path=None, pretrained: bool = True):
        super().__init__()
        self.net = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
        self.with_deepest = with_deepest
        self.channels = self.net.channels if with_deepest else self.net.channels[:3]
        if not with_deepest:
            _trim_to_stride16(self.net)
        # Per-channel standardisation of each tap, fitted on good training images. EfficientNet taps are
        # linear bottleneck outputs with large channel offsets that otherwise dominate the cosine.
        for i, c in enumerate(self.channels):
            self.register_buffer(f"mean{i}", torch.zeros(1, c, 1, 1))
            self.register_buffer(f"std{i}", torch.ones(1, c, 1, 1))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def fit_standardisation(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Set the per-channel mean/std from raw features [(N,C,h,w), ...]; returns them standardised."""
        out = []
        for i, f in enumerate(feats):
            mean = f.mean(dim=(0, 2, 3), keepdim=True)
            std = f.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4)
            getattr(self, f"mean{i}").copy_(mean)
            getattr(self, f"std{i}").copy_(std)
            out.append((f - mean) / std)
        self.fitted.fill_(True)
        return out

    def train(self, mode: bool = True):  # frozen: BatchNorm statistics must never update
        return super().train(False)

    def forward(self, image: torch.Tensor, standardise: bool = True) -> list[torch.Tensor]:
        feats = self.net(image)
        feats = feats if self.with_deepest else feats[:3]
        if standardise:
            feats = [(f - getattr(self, f"mean{i}")) / getattr(self, f"std{i}") for i, f in enumerate(feats)]
        return feats


def _trim_to_stride16(net: nn.Module) -> None:
    """Drop the stride-32 stage a network never uses (saves its compute in training and at run time)."""
    if hasattr(net, "blocks"):  # EfficientNet-Lite
        net.blocks = net.blocks[: net.taps[2] + 1]
        net.taps = net.taps[:3]
    else:  # ResNet
        net.layers = net.layers[:3]


class Student1(nn.Module):
    """Plain STPM student: the teacher's architecture from scratch, taps at strides 4/8/16."""

    def __init__(self, backbone: str):
        super().__init__()
        self.net = build_backbone(backbone, pretrained=False)
        self.channels = self.net.channels[:3]
        _trim_to_stride16(self.net)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.net(image)[:3]


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class AttentionGate(nn.Module):
    """Spatial attention from teacher 2's feature: 3×3 conv → BN → ReLU → 1×1 conv → sigmoid, (B,1,h,w)."""

    def __init__(self, cin: int, hidden: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin, hidden), nn.Conv2d(hidden, 1, 1))

    def forward(self, t2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(t2))


class Student2(nn.Module):
    """Reconstructing student: decodes teacher 1's deepest feature (stride 32) into teacher 2's
    features at strides 16, 8, 4, each decoder stage weighted by an attention gate from teacher 2."""

    def __init__(self, in_channels: int, t2_channels: list[int], widths: list[int], attention: bool = True):
        super().__init__()
        w16, w8, w4 = widths
        self.entry = _conv_bn_relu(in_channels, w16, 1)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(_conv_bn_relu(w16, w16), _conv_bn_relu(w16, w16)),
                nn.Sequential(_conv_bn_relu(w16, w8), _conv_bn_relu(w8, w8)),
                nn.Sequential(_conv_bn_relu(w8, w4), _conv_bn_relu(w4, w4)),
            ]
        )
        c4, c8, c16 = t2_channels
        self.heads = nn.ModuleList([nn.Conv2d(w16, c16, 1), nn.Conv2d(w8, c8, 1), nn.Conv2d(w4, c4, 1)])
        self.attention = attention
        if attention:
            self.gates = nn.ModuleList([AttentionGate(c, max(16, c // 4)) for c in (c16, c8, c4)])

    def forward(self, t1_32: torch.Tensor, t2_4: torch.Tensor, t2_8: torch.Tensor,
                t2_16: torch.Tensor) -> list[torch.Tensor]:
        x = self.entry(t1_32)
        outs = []
        for i, t2 in enumerate((t2_16, t2_8, t2_4)):
            x = F.interpolate(x, size=t2.shape[-2:], mode="bilinear", align_corners=False)
            x = self.stages[i](x)
            if self.attention:
                x = x * self.gates[i](t2)
            outs.append(self.heads[i](x))
        return outs[::-1]  # s2_4, s2_8, s2_16


class UNetDiscriminator(nn.Module):
    """Small U-Net (DRAEM-like discriminative net): (B, 3, h, w) maps → (B, 1, h, w) anomaly logit."""

    def __init__(self, base: int = 16, depth: int = 3, in_channels: int = 3):
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.enc.append(nn.Sequential(_conv_bn_relu(cin, c), _conv_bn_relu(c, c)))
            cin = c
        self.dec = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.dec.append(nn.Sequential(_conv_bn_relu(chans[i] + chans[i - 1], chans[i - 1]),
                                          _conv_bn_relu(chans[i - 1], chans[i - 1])))
        self.out = nn.Conv2d(chans[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.enc):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x)


def cosine_distance(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """1 − cos(s, t) over channels: (B, C, h, w) × 2 → (B, 1, h, w) in [0, 2]."""
    return 1.0 - F.cosine_similarity(s, t, dim=1, eps=1e-6).unsqueeze(1)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def upsample_full(m: torch.Tensor, image_size) -> torch.Tensor:
    """(B, C, h, w) → (B, C, H, W) bilinear, ``image_size`` = (H, W)."""
    return F.interpolate(m, size=image_size, mode="bilinear", align_corners=False)


def blur_map(m: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian smoothing of (B, 1, H, W) with the 1-D ``kernel`` (one element: none), edges replicated."""
    if kernel.numel() > 1:
        r = kernel.numel() // 2
        m = F.pad(m, (r, r, r, r), mode="replicate")
        m = F.conv2d(m, kernel.view(1, 1, 1, -1))
        m = F.conv2d(m, kernel.view(1, 1, -1, 1))
    return m


def smooth_full(m: torch.Tensor, image_size, kernel: torch.Tensor) -> torch.Tensor:
    """What MapHead does to a map: upsample to the input size, then smooth."""
    return blur_map(upsample_full(m, image_size), kernel)


class MapHead(nn.Module):
    """Per-scale maps → discriminator → final anomaly map and image score.

    Maps are built at the stride-4 resolution (H/4, W/4), where the discriminator runs (16× cheaper
    than full size; the finest feature is at stride 4 anyway), then upsampled to (H, W) and smoothed.
    Outputs (all float32): rstpm_map (B,1,H,W) = st_map^st_exponent × disc_prob; region_map (B,1,H,W):
    Mahalanobis distance of window-pooled stride-16 teacher features from the good images' Gaussian;
    anomaly_map = rstpm_map, or with region_weight r > 0 z(rstpm_map) + r·z(region_map) (pixel stats of
    held-out good images); st_map, stpm_map (STPM pair only) and disc_prob, (B,1,H,W), for diagnostics
    and ablations; global_score (B,): Mahalanobis distance of the teachers' pooled features (strides 8,
    16) from the good images' Gaussian; score (B,): max of anomaly_map, or with global_weight w > 0 the
    fused z(max) + w·z(global_score), each standardised with its mean/std on held-out good images.
    """

    def __init__(self, cfg: ModelConfig, image_size: tuple[int, int], global_channels: list[int],
                 region_channels: list[int]):
        super().__init__()
        self.image_size = image_size
        self.use_disc = cfg.use_discriminator
        self.use_pair2 = cfg.use_pair2
        # "summed": the paper's three maps M_k = pair 1 + pair 2; "separate": both pairs' six maps.
        self.separate = cfg.disc_inputs == "separate" and cfg.use_pair2
        n_in = 6 if self.separate else 3
        self.disc = UNetDiscriminator(cfg.disc_base, cfg.disc_depth, in_channels=n_in) if self.use_disc else None
        self.st_exponent = float(cfg.st_exponent) if self.use_disc else 1.0
        # Discriminator input normalisation (per-map mean/std on good images), set after stage 1.
        self.register_buffer("map_mean", torch.zeros(1, n_in, 1, 1))
        self.register_buffer("map_std", torch.ones(1, n_in, 1, 1))
        self.register_buffer("blur", gaussian_kernel(cfg.map_sigma) if cfg.map_sigma > 0 else torch.ones(1))
        self.score_topk = cfg.score_topk
        # Image-level Gaussian of pooled teacher features (trainer.gaussian), fitted after stage 1, and
        # the good-image mean/std of [local score, global score] that put both on one scale (after stage 2).
        self.global_weight = float(cfg.global_weight)
        self.global_channels = list(global_channels)
        self._gaussian_buffers("glob", 2 * sum(self.global_channels))
        self.register_buffer("score_stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        self.register_buffer("glob_fitted", torch.zeros((), dtype=torch.bool))  # set once both Gaussians are fitted
        # Regional Gaussian (one for all positions) and the good-image pixel mean/std of [RSTPM map, regional map].
        self.region_weight = float(cfg.region_weight)
        self.region_window = int(cfg.region_window)
        self.region_channels = list(region_channels)
        self._gaussian_buffers("reg", 2 * sum(self.region_channels))
        self.register_buffer("map_stats", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def _gaussian_buffers(self, prefix: str, dim: int) -> None:
        """``{prefix}_mean`` (1, dim) and ``{prefix}_whiten`` (dim, dim), filled by trainer.gaussian.fit_gaussian."""
        self.register_buffer(f"{prefix}_mean", torch.zeros(1, dim))
        self.register_buffer(f"{prefix}_whiten", torch.eye(dim))

    def pair_maps(self, t1: list[torch.Tensor], s1: list[torch.Tensor], t2: list[torch.Tensor] | None,
                  s2: list[torch.Tensor] | None):
        """1 − cos per pair and scale at stride 4: pair 1 (B,3,h4,w4) and pair 2 (same, or None)."""
        size = t1[0].shape[-2:]
        up = lambda m: F.interpolate(m, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        d1 = torch.cat([up(cosine_distance(s, t)) for s, t in zip(s1, t1, strict=True)], dim=1)
        if not self.use_pair2 or s2 is None or t2 is None:
            return d1, None
        d2 = torch.cat([up(cosine_distance(s, t)) for s, t in zip(s2, t2, strict=True)], dim=1)
        return d1, d2

    def disc_input(self, d1: torch.Tensor, d2: torch.Tensor | None) -> torch.Tensor:
        """What the discriminator reads, before normalisation: (B,3,h,w) summed M_k or (B,6,h,w) both pairs."""
        if d2 is None:
            return d1
        return torch.cat([d1, d2], dim=1) if self.separate else d1 + d2

    def normalised(self, maps: torch.Tensor) -> torch.Tensor:
        """The discriminator's input standardised with the good-image stats."""
        return (maps - self.map_mean) / self.map_std

    def disc_logit(self, maps: torch.Tensor) -> torch.Tensor:
        return self.disc(self.normalised(maps))

    def _smooth_full(self, m: torch.Tensor) -> torch.Tensor:
        return smooth_full(m, self.image_size, self.blur)

    def image_score(self, amap: torch.Tensor) -> torch.Tensor:
        flat = amap.flatten(1)
        if self.score_topk > 1:
            return flat.topk(self.score_topk, dim=1).values.mean(dim=1)
        return flat.amax(dim=1)

    def global_features(self, t1: list[torch.Tensor], t2: list[torch.Tensor] | None) -> torch.Tensor:
        """Pooled mean/std (B, D) of the teachers' stride-8 and stride-16 features."""
        taps = [t1[i] for i in GLOBAL_TAPS] + ([t2[i] for i in GLOBAL_TAPS] if t2 is not None else [])
        return pooled_statistics(taps)

    def global_score(self, t1: list[torch.Tensor], t2: list[torch.Tensor] | None) -> torch.Tensor:
        """Mahalanobis distance (B,) of the pooled teacher features from the good images' Gaussian."""
        z = (self.global_features(t1, t2) - self.glob_mean) @ self.glob_whiten.T
        return z.pow(2).sum(dim=1).sqrt()

    def region_features(self, t1: list[torch.Tensor], t2: list[torch.Tensor] | None) -> torch.Tensor:
        """Window mean/std (B, Dr, h16, w16) of the teachers' stride-16 features."""
        taps = [t1[REGION_TAP]] + ([t2[REGION_TAP]] if t2 is not None else [])
        return window_statistics(taps, self.region_window)

    def region_map(self, t1: list[torch.Tensor], t2: list[torch.Tensor] | None) -> torch.Tensor:
        """Mahalanobis distance (B, 1, h16, w16) of each position's window statistics from the good Gaussian."""
        f = self.region_features(t1, t2).permute(0, 2, 3, 1)  # (B, h, w, Dr)
        z = (f - self.reg_mean) @ self.reg_whiten.T
        return z.pow(2).sum(dim=-1).sqrt().unsqueeze(1)

    def fused_map(self, rstpm: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """z(RSTPM map) + region_weight · z(regional map), pixel stats of held-out good images."""
        a, b, c, d = self.map_stats
        return (rstpm - a) / b + self.region_weight * (region - c) / d

    def _fused_full(self, final: torch.Tensor, region_small: torch.Tensor) -> torch.Tensor:
        """fused_map of the smoothed maps with one full-size blur instead of two: upsampling and the blur
        are linear and the blur keeps constants, so blurring the weighted sum gives the same map (the line
        graph, cut to this output, saves a full-resolution blur per frame)."""
        a, b, c, d = self.map_stats
        up = lambda m: upsample_full(m, self.image_size)  # noqa: E731
        mixed = up(final) / b + (self.region_weight / d) * up(region_small)
        return blur_map(mixed, self.blur) - (a / b + self.region_weight * c / d)

    def fused_score(self, local: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        """z(local) + global_weight · z(global): both standardised with their held-out good-image stats."""
        a, b, c, d = self.score_stats
        return (local - a) / b + self.global_weight * (glob - c) / d

    def forward(self, t1, s1, t2=None, s2=None) -> dict[str, torch.Tensor]:
        d1, d2 = self.pair_maps(t1, s1, t2, s2)
        stpm = d1.prod(dim=1, keepdim=True)
        st = (d1 + d2).prod(dim=1, keepdim=True) if d2 is not None else stpm
        if self.use_disc:
            prob = torch.sigmoid(self.disc_logit(self.disc_input(d1, d2)))
            # The paper multiplies the student-teacher map in (exponent 1); 0 trusts the discriminator alone.
            # Exponents 0 and 1 are special-cased so the default graph carries no Pow node.
            if self.st_exponent == 0:
                final = prob
            elif self.st_exponent == 1:
                final = st * prob
            else:
                final = st.pow(self.st_exponent) * prob
        else:
            prob = torch.ones_like(st)
            final = st
        region_small = self.region_map(t1, t2)
        rstpm = self._smooth_full(final)
        region = self._smooth_full(region_small)
        out = {
            "anomaly_map": self._fused_full(final, region_small) if self.region_weight > 0 else rstpm,
            "rstpm_map": rstpm,
            "region_map": region,
            "st_map": self._smooth_full(st),
            "stpm_map": self._smooth_full(stpm),
            "disc_prob": upsample_full(prob, self.image_size),
        }
        out["global_score"] = self.global_score(t1, t2)
        local = self.image_score(out["anomaly_map"])
        out["score"] = self.fused_score(local, out["global_score"]) if self.global_weight > 0 else local
        return out


class RSTPM(nn.Module):
    """The whole model for training and torch-side evaluation. ``forward`` returns MapHead's dict."""

    def __init__(self, cfg: ModelConfig, image_size: tuple[int, int] = (256, 256), pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.teacher1 = Teacher(cfg.teacher1, with_deepest=True, weights_path=cfg.teacher1_weights,
                                pretrained=pretrained)
        self.student1 = Student1(cfg.teacher1)
        self.teacher2 = Teacher(cfg.teacher2, with_deepest=False, weights_path=cfg.teacher2_weights,
                                pretrained=pretrained)
        self.student2 = Student2(self.teacher1.channels[3], self.teacher2.channels, cfg.student2_widths, cfg.attention)
        global_channels = ([self.teacher1.channels[i] for i in GLOBAL_TAPS]
                           + [self.teacher2.channels[i] for i in GLOBAL_TAPS])
        region_channels = [self.teacher1.channels[REGION_TAP], self.teacher2.channels[REGION_TAP]]
        self.head = MapHead(cfg, image_size, global_channels, region_channels)

    def features(self, image: torch.Tensor):
        t1 = self.teacher1(image)
        s1 = self.student1(image)
        t2 = self.teacher2(image)
        s2 = self.student2(t1[3], *t2)
        return t1, s1, t2, s2

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        t1, s1, t2, s2 = self.features(image)
        return self.head(t1[:3], s1, t2, s2)
