"""An encoder adapted to a support set: the base encoder with some parameters replaced, usable
wherever a :class:`~sbirkit.models.SketchPhotoEncoder` is (evaluator, index, search)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ...errors import ConfigError


class _EncodeFeatures(nn.Module):
    """``branch.encode_features`` as a module's forward, so ``functional_call`` can run it."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, features: torch.Tensor, stage: int | None) -> torch.Tensor:
        return self.branch.encode_features(features, stage)


class AdaptedEncoder(nn.Module):
    """An encoder whose shared branch runs with some parameters replaced (the adapted head, or every
    parameter after MAML / fine-tuning): ``encode_sketch``, ``encode_photo``, ``encode_features``
    and ``embed_dim`` as a :class:`~sbirkit.models.SketchPhotoEncoder`, so the evaluator, index and
    search embed with it unchanged. ``params`` are detached copies (no graph, no optimiser state);
    the base encoder's weights are shared, not copied. ``record`` says how it was adapted."""

    def __init__(self, base: nn.Module, params: Mapping[str, torch.Tensor], record: dict[str, Any] | None = None):
        super().__init__()
        self.base = base
        self.adapted = {n: p.detach() for n, p in params.items()}
        self.record = dict(record or {})

    @property
    def embed_dim(self) -> int:
        return int(self.base.embed_dim)

    def branch(self, modality: Any = "sketch") -> nn.Module:
        return self.base.branch(modality)

    def encode(self, x: torch.Tensor, modality: Any) -> torch.Tensor:
        branch = self.base.branch(modality)
        return functional_call(branch, self.adapted, (x,)) if self.adapted else branch(x)

    def encode_sketch(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, "sketch")

    def encode_photo(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, "photo")

    def encode_features(self, features: torch.Tensor, modality: Any, stage: int | None = None) -> torch.Tensor:
        """Embed cached backbone features (pooled, or maps cut at ``stage``), as the engine's
        feature store does for a plain encoder."""
        branch = self.base.branch(modality)
        if not self.adapted:
            return branch.encode_features(features, stage)
        return functional_call(_EncodeFeatures(branch), {f"branch.{n}": p for n, p in self.adapted.items()},
                               (features, stage))

    def forward(self, x: torch.Tensor, modality: Any) -> torch.Tensor:
        return self.encode(x, modality)

    def state_for(self, method: nn.Module) -> dict[str, torch.Tensor]:
        """``method.state_dict()`` with the adapted tensors in place: a checkpoint that
        :func:`~sbirkit.engine.load_run` rebuilds as an ordinary run of this method."""
        state = {k: v.detach().clone() for k, v in method.state_dict().items()}
        for name, value in self.adapted.items():
            key = "encoder.encoder." + name  # the shared (Siamese) branch
            if key not in state:
                raise ConfigError(f"adapted parameter {name!r}: expected {key!r} in the method's state")
            state[key] = value.detach().cpu().clone()
        return state

