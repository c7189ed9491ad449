"""``timm/<model>``: any timm model as a :class:`Backbone`, always built with ``pretrained=False``."""

from __future__ import annotations

import torch

from ..errors import UnknownNameError
from .base import Backbone


class TimmBackbone(Backbone):
    """Wraps ``timm.create_model(name, pretrained=False, num_classes=0)``.

    ``forward`` is timm's pooled (pre-logits) output, ``num_features`` its size (timm's
    ``head_hidden_size`` where a model has a pre-logits layer). ``forward_features`` is timm's
    feature map, returned NCHW; token models (ViTs) return ``(B, N, C)`` tokens instead.
    Native timm checkpoints and this wrapper's own state dicts both load (keys under ``model.``).
    """

    weights_prefix = "model."

    def __init__(self, model_name: str, in_chans: int = 3, **kw):
        super().__init__()
        import timm

        if not timm.is_model(model_name):
            raise UnknownNameError(f"unknown timm model {model_name!r} (see timm.list_models() or list_backbones('timm/*'))")
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, in_chans=in_chans, **kw)
        self.feature_channels = int(self.model.num_features)
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        cfg = dict(getattr(self.model, "pretrained_cfg", None) or {})
        classifier = cfg.get("classifier") or ()
        self.classifier_keys = (classifier,) if isinstance(classifier, str) else tuple(classifier)
        if "mean" in cfg and "std" in cfg and len(cfg["mean"]) == 3:
            self.input_stats = (tuple(cfg["mean"]), tuple(cfg["std"]))
        self._nhwc = getattr(self.model, "output_fmt", "NCHW") == "NHWC"
        self.weights_hint = (
            f"a timm checkpoint for {model_name!r} (.pth/.bin/.safetensors) copied from a machine with network, "
            f"e.g. timm.create_model({model_name!r}, pretrained=True).state_dict() saved with torch.save"
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.model.forward_features(x)
        return fmap.permute(0, 3, 1, 2) if self._nhwc and fmap.ndim == 4 else fmap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
