"""``Method``: what a training method owns (its encoder, losses and training step) and nothing more.

Data loading, optimisation, checkpoints, logging and evaluation belong to :mod:`sbirkit.engine`;
a method only says which batches it wants (:meth:`Method.sampler_spec`) and turns a batch into
named losses (:meth:`Method.training_step`). Evaluation embeds with ``method.encoder``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class SamplerSpec:
    """Which batches a method trains on.

    ``kind="pairs"``: :class:`~sbirkit.data.samplers.PairBatchSampler` with ``mode`` ("class":
    a same-class positive photo, "instance": the sketch's own photo) and optional P×K
    ``classes_per_batch``. ``kind="episodic"``: k-shot tasks grouped by ``group_by``.
    """

    kind: str = "pairs"
    mode: str = "class"
    classes_per_batch: int | None = None
    group_by: str = "class"
    k_support: int = 1
    k_query: int = 1


class Method(nn.Module):
    """Base class: holds ``encoder`` (``encode_sketch``/``encode_photo``, L2-normalised outputs).

    Subclasses declare their options as a dataclass ``Options``; :meth:`from_config` checks the
    ``method`` section of a run config against it, so a misspelt option is an error.
    """

    name = "method"

    @dataclass
    class Options:
        pass

    def __init__(self, encoder: nn.Module, options: Any | None = None):
        super().__init__()
        self.encoder = encoder
        self.options = options if options is not None else self.Options()

    @classmethod
    def parse_options(cls, section: Mapping[str, Any] | None) -> Any:
        """``Options`` from a config's ``method`` section (its ``name`` key is skipped)."""
        values = {k: v for k, v in dict(section or {}).items() if k != "name"}
        known = [f.name for f in dataclasses.fields(cls.Options)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"method.{unknown[0]}: unknown option for method {cls.name!r}; "
                             f"expected one of: {', '.join(known)}")
        return cls.Options(**values)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Method:
        """Build the encoder from ``config["model"]`` and the method from ``config["method"]``."""
        from ..models import create_encoder

        options = cls.parse_options(config.get("method"))
        return cls(create_encoder(**dict(config.get("model") or {})), options)

    def setup(self, dataset: Any, train_split: str | None) -> None:
        """Called by the trainer with its dataset (seen classes only under ``data.zero_shot``) before
        the optimiser is built: a method whose modules depend on the training classes builds them here."""

    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec()

    def training_step(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Named losses for one batch; ``"loss"`` is the total the engine back-propagates."""
        raise NotImplementedError(f"{type(self).__name__} does not implement training_step()")

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.training_step(batch)
