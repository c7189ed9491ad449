"""``tv/<model>``: torchvision classifiers with the last classifier layer removed, built with ``weights=None``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownNameError
from .base import IMAGENET_STATS, Backbone

# name prefixes of the families whose feature map and pooled feature this wrapper knows
SUPPORTED_PREFIXES = (
    "resnet",
    "resnext",
    "wide_resnet",
    "regnet_",
    "densenet",
    "vgg",
    "alexnet",
    "mobilenet_v2",
    "mobilenet_v3",
    "efficientnet_",
    "convnext_",
)


def supported_torchvision_models() -> list[str]:
    """torchvision classification models that ``tv/<name>`` can build."""
    import torchvision

    return [n for n in torchvision.models.list_models(module=torchvision.models) if n.startswith(SUPPORTED_PREFIXES)]


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            new = nn.Conv2d(
                in_chans,
                mod.out_channels,
                mod.kernel_size,
                mod.stride,
                mod.padding,
                mod.dilation,
                mod.groups,
                mod.bias is not None,
                mod.padding_mode,
            )
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
            return


class TorchvisionBackbone(Backbone):
    """A torchvision classifier whose last Linear layer is removed (VGG/AlexNet keep fc6-fc7).

    ``forward`` is the model's own forward minus that layer (so ``num_features`` is its input
    size: 512 for resnet18, 4096 for vgg16); ``forward_features`` is the last conv map.
    """

    weights_prefix = "model."
    input_stats = IMAGENET_STATS

    def __init__(self, arch: str, in_chans: int = 3, **kw):
        super().__init__()
        import torchvision

        supported = supported_torchvision_models()
        if arch not in supported:
            raise UnknownNameError(f"unknown or unsupported torchvision model {arch!r}; supported: {', '.join(supported)}")
        model = torchvision.models.get_model(arch, weights=None, **kw)
        if isinstance(getattr(model, "fc", None), nn.Linear):
            self.num_features = model.fc.in_features
            model.fc = nn.Identity()
            self.classifier_keys = ("fc",)
        elif isinstance(model.classifier, nn.Linear):
            self.num_features = model.classifier.in_features
            model.classifier = nn.Identity()
            self.classifier_keys = ("classifier",)
        else:
            head = model.classifier
            last = len(head) - 1
            self.num_features = head[last].in_features
            self.classifier_keys = (f"classifier.{last}",)
            only_dropout = all(isinstance(m, nn.Dropout) for m in list(head)[:last])
            model.classifier = nn.Identity() if only_dropout else head[:last]
        if isinstance(model, torchvision.models.DenseNet):
            self.feature_channels = model.features[-1].num_features
        else:
            self.feature_channels = [m for m in model.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        if in_chans != 3:
            _replace_first_conv(model, in_chans)
        self.model = model
        self.weights_hint = (
            f"a torchvision state dict for {arch!r} copied from a machine with network, e.g. "
            f"torch.save(torchvision.models.get_model({arch!r}, weights='DEFAULT').state_dict(), PATH)"
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        import torchvision

        m = self.model
        if isinstance(m, torchvision.models.ResNet):
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            return m.layer4(m.layer3(m.layer2(m.layer1(x))))
        if isinstance(m, torchvision.models.RegNet):
            return m.trunk_output(m.stem(x))
        if isinstance(m, torchvision.models.DenseNet):
            return F.relu(m.features(x))
        return m.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
