"""``Method``: what a training method owns (its modules, losses, optimisers and step) and nothing more.

The engine (:mod:`sbirkit.engine`) owns the loop, devices, precision, checkpoints, logging, data
order and evaluation; a method plugs in through these hooks, each with a default that fits a
supervised pair-batch method (the shape of PyTorch Lightning's ``LightningModule``):

* :meth:`Method.setup` builds what depends on the training data (``ctx.dataset`` may be None);
* :meth:`Method.train_source` names the batches: pairs, episodes or generated
  (:mod:`sbirkit.engine.sources`; by default what :meth:`sampler_spec` declares);
* :meth:`Method.configure_optimizers` returns named optimiser specs (default: one, ``"main"``);
* :meth:`Method.training_step` turns a batch into named losses; with
  ``manual_optimization = True`` it also back-propagates and steps through ``ctx`` itself;
* :meth:`Method.train_mode`, :meth:`Method.init_heads`: frozen BatchNorm, PCA head start;
* :meth:`Method.validation_protocol`: how validation data is scored, when the method needs its
  own protocol (adapting on each validation task first);
* :meth:`Method.validation_metrics`: the method's own model-selection numbers when there is no
  validation data (a data-free method), and :meth:`Method.validation_metric_names`, their names
  (checked against ``eval.select`` before training);
* :meth:`Method.prepare_load` (``load_run``, not the trainer): build what other runs provide
  before a checkpoint is loaded.

A method with nothing to train returns ``{}`` from ``configure_optimizers``; the trainer then
steps no optimiser but still validates, checkpoints and evaluates.

Evaluation embeds with ``method.encoder`` (``encode_sketch`` / ``encode_photo``, L2-normalised).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..engine.sources import SOURCE_KINDS
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..engine.context import SetupContext, StepContext
    from ..engine.optim import OptimizerSpec
    from ..engine.options import TrainOptions
    from ..engine.sources import TrainSource

#: the kinds a SamplerSpec may name: the engine's source kinds (:data:`~sbirkit.engine.sources.SOURCE_KINDS`)
#: but "samples", which needs a modality (a method asks ``ctx.samples(...)`` in ``train_source``);
#: "episodic" is read as "episodes"
SPEC_KINDS = tuple(kind for kind in SOURCE_KINDS if kind != "samples")


@dataclass(frozen=True)
class SamplerSpec:
    """Which batches a method trains on (read by the default :meth:`Method.train_source`).

    ``kind="pairs"``: :class:`~sbirkit.data.samplers.PairBatchSampler` with ``mode`` ("class":
    a same-class positive photo, "instance": the sketch's own photo) and optional P×K
    ``classes_per_batch``. ``kind="episodes"``: ``tasks_per_step`` k-shot tasks a step, grouped by
    ``group_by`` ("class" or "user"), ``k_support`` + ``k_query`` pairs each. ``kind="generated"``:
    no dataset, step numbers and seeds.
    """

    kind: str = "pairs"
    mode: str = "class"
    classes_per_batch: int | None = None
    group_by: str = "class"
    k_support: int = 1
    k_query: int = 1
    tasks_per_step: int = 1


class Method(nn.Module):
    """Base class: holds ``encoder`` (a :class:`~sbirkit.models.SketchPhotoEncoder`).

    Subclasses declare their options as a dataclass ``Options``; :meth:`from_config` checks the
    ``method`` section of a run config against it, so a misspelt option is an error.
    """

    name = "method"
    manual_optimization = False

    @dataclass
    class Options:
        pass

    def __init__(self, encoder: nn.Module, options: Any | None = None):
        super().__init__()
        self.encoder = encoder
        self.options = options if options is not None else self.Options()

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def parse_options(cls, section: Mapping[str, Any] | None) -> Any:
        """``Options`` from a config's ``method`` section (its ``name`` key is skipped)."""
        values = {k: v for k, v in dict(section or {}).items() if k != "name"}
        known = [f.name for f in dataclasses.fields(cls.Options)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"method.{unknown[0]}: unknown option for method {cls.name!r}; "
                              f"expected one of: {', '.join(known) or '(none)'}")
        return cls.Options(**values)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Method:
        """Build the encoder from ``config["model"]`` and the method from ``config["method"]``."""
        from ..models import create_encoder

        options = cls.parse_options(config.get("method"))
        return cls(create_encoder(**dict(config.get("model") or {})), options)

    def prepare_load(self, ctx: SetupContext) -> None:
        """Called by ``load_run`` between :meth:`from_config` and loading the checkpoint's weights,
        with a context that loads other runs (``ctx.load_run``, ``ctx.preset_run``) but trains
        none and has no data: a method whose modules come from other runs (a training-free
        data-free baseline's teachers) builds them here. Default: nothing."""

    # ---- hooks the trainer calls, in this order -------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        """Before the source and optimisers are built, with the training data (``ctx.dataset``: seen
        classes only under ``data.zero_shot``; None for a dataset-free run): a method whose modules
        depend on the training classes builds them here."""

    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec()

    def train_source(self, ctx: SetupContext) -> TrainSource:
        """The batches to train on; by default the kind :meth:`sampler_spec` declares."""
        spec = self.sampler_spec()
        if spec.kind == "pairs":
            return ctx.pairs(spec.mode, spec.classes_per_batch)
        if spec.kind in ("episodic", "episodes"):
            return ctx.episodes(spec.group_by, spec.k_support, spec.k_query, spec.tasks_per_step)
        if spec.kind == "generated":
            return ctx.generated()
        raise ConfigError(f"method {self.name!r}: sampler_spec kind: expected one of {', '.join(SPEC_KINDS)}, "
                          f"got {spec.kind!r}")

    def init_heads(self, kind: str, training_features: Callable[[str], np.ndarray]) -> dict[str, Any] | None:
        """``train.head_init`` (``default``: leave the heads; ``pca``: see :mod:`sbirkit.engine.head_init`).
        ``training_features(m)`` gives the backbone features of the training samples of modality m."""
        from ..engine.head_init import init_heads

        return init_heads(kind, self.encoder, training_features)

    def check_init_source(self, source_config: Mapping[str, Any] | None, where: str) -> None:
        """Called by the runner before ``train.init_from`` copies another run's weights into the
        encoder, with that run's saved config (None without one); raise a ConfigError starting with
        ``where`` (the key and the run folder) to refuse it. The default accepts any run."""

    def initialised_from(self, record: Mapping[str, Any]) -> None:
        """Called by the runner after ``train.init_from`` started the encoder (a new run only, before
        :meth:`init_heads`): ``record`` says what was loaded (:mod:`sbirkit.engine.init_from`). The
        default ignores it."""

    def configure_optimizers(self, train: TrainOptions) -> dict[str, OptimizerSpec]:
        """Named optimiser specs; the default is one optimiser over every trainable parameter, the
        backbones in a group of their own at ``train.backbone_lr`` when it is set."""
        from ..engine.optim import OptimizerSpec, default_param_groups

        return {"main": OptimizerSpec(default_param_groups(self, train, self.encoder.backbone_parameters()))}

    def train_mode(self, train: TrainOptions) -> None:
        """``self.train()``; with ``train.backbone_bn: frozen`` the backbones' BatchNorm layers stay in
        eval mode (their running statistics are used and kept)."""
        self.train()
        if train.backbone_bn == "frozen":
            self.encoder.freeze_backbone_norm()

    def training_step(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        """Named losses for one batch; ``"loss"`` is the total the engine back-propagates (in manual
        mode the method has already stepped through ``ctx``, and every value is only logged)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement training_step()")

    def validation_protocol(self, ctx: SetupContext) -> Any | None:
        """The :class:`~sbirkit.engine.protocols.Protocol` that scores the validation data, when the
        method needs its own (an adaptive method adapts on each validation task first); None = the
        run's protocol (standard or zero-shot)."""
        return None

    def validation_metrics(self, ctx: SetupContext) -> dict[str, float] | None:
        """Model-selection numbers of the method's own (e.g. on generated data), used when there is
        no validation data; None = no selection."""
        return None

    def validation_metric_names(self) -> list[str] | None:
        """The names :meth:`validation_metrics` returns, so the trainer checks ``eval.select``
        against them before the first step; None = not known until they are computed (checked at
        the first validation)."""
        return None

    # ---- helpers for training steps -------------------------------------------------------------
    @staticmethod
    def inputs_are_features(batch: Mapping[str, Any]) -> bool:
        return batch.get("inputs") == "features"

    def backbone_features(self, batch: Mapping[str, Any], modality: str) -> torch.Tensor:
        """The pooled backbone features of a batch side: the batch's own values when the source
        serves cached pooled features, the trainable stages on cached maps (``batch["feature_stage"]``),
        else the branch's ``features`` of its images."""
        x, branch = batch[modality], self.encoder.branch(modality)
        if not self.inputs_are_features(batch):
            return branch.features(x)
        stage = batch.get("feature_stage")
        return x if stage is None else branch.features_from(x, int(stage))

    def embed_side(self, batch: Mapping[str, Any], modality: str) -> torch.Tensor:
        """The embeddings of a batch side (images, cached features or cached maps)."""
        x = batch[modality]
        if self.inputs_are_features(batch):
            stage = batch.get("feature_stage")
            return self.encoder.encode_features(x, modality, None if stage is None else int(stage))
        return self.encoder.encode(x, modality)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.training_step(batch)
