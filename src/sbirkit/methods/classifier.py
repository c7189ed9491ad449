"""Plain classifiers on one modality, and the photo-vs-sketch modality discriminator.

* ``classifier``: a sbirkit encoder branch (backbone + head) and a linear layer over the classes
  of one modality (``method.modality``: ``photo`` or ``sketch``) of any dataset, trained with
  cross-entropy on single-modality batches (:meth:`~sbirkit.engine.context.SetupContext.samples`).
  These are the teachers of data-free SBIR (:mod:`sbirkit.methods.crossx_dfl`); the presets
  ``classifier-synthetic-photo`` and ``classifier-synthetic-sketch`` train them on the built-in
  data. The classes are those with at least one training sample of the modality, in the
  dataset's order; their names are saved in every checkpoint (the ``class_names`` buffer:
  ``load_run(run)[0].class_names``), so a run is a self-contained teacher.
* ``modality_discriminator``: one logit, photo (1) vs sketch (0), trained with binary
  cross-entropy on pair batches; CrossX-DFL's modality guidance (``docs/data_free.md``).

Model selection scores classification accuracy on the validation split (``classifier/accuracy``
and ``discriminator/accuracy``), through the method's own validation protocol when the dataset
has both modalities, or :meth:`Method.validation_metrics` when it has one (e.g. CIFAR-10 photos).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..engine.protocols import Protocol
from ..errors import ConfigError, DataError
from .base import Method, SamplerSpec
from .registry import register_method

MODALITIES = ("photo", "sketch")


def encode_names(names: Sequence[str]) -> torch.Tensor:
    """A list of class names as a uint8 tensor (UTF-8 JSON), storable as a buffer."""
    return torch.tensor(list(json.dumps(list(names)).encode("utf-8")), dtype=torch.uint8)


def decode_names(buffer: torch.Tensor) -> list[str]:
    if buffer.numel() == 0:
        return []
    return list(json.loads(bytes(buffer.cpu().tolist()).decode("utf-8")))


def _accuracy_over(method: nn.Module, dataset: Any, samples: Sequence[Any], predict, labels_of, batch_size: int,
                   device: torch.device) -> float | None:
    """Accuracy of ``predict(images)`` against ``labels_of(batch)`` over ``samples`` (None when empty)."""
    from ..data import SampleDataset

    if not samples:
        return None
    loader = torch.utils.data.DataLoader(SampleDataset(dataset, samples), batch_size=batch_size, shuffle=False)
    was = method.training
    method.eval()
    right = total = 0
    try:
        with torch.no_grad():
            for batch in loader:
                pred = predict(batch["image"].to(device))
                target = labels_of(batch).to(device)
                keep = target >= 0
                right += int((pred[keep] == target[keep]).sum())
                total += int(keep.sum())
    finally:
        method.train(was)
    return right / total if total else None


def _branch_optimizer(method: Method, modality: str, layer: nn.Module, train) -> dict:
    from ..engine.optim import OptimizerSpec, default_param_groups

    branch = method.encoder.branch(modality)
    trained = nn.ModuleList([branch, layer])  # a view: the modules stay where they are
    return {"main": OptimizerSpec(default_param_groups(trained, train, branch.backbone.parameters()))}


class AccuracyProtocol(Protocol):
    """Validation by the method's own accuracy (``<group>/accuracy``) instead of retrieval metrics."""

    name = "accuracy"

    def __init__(self, method: Any, data: Mapping[str, Any], seed: int = 0):
        super().__init__(data, seed)
        self.method = method

    def metric_names(self, directions, instance_level):
        return [self.method.metric_name]

    def validate(self, evaluator, split, ev):
        value = self.method.accuracy(evaluator.dataset, split, ev.batch_size, evaluator.device)
        return {} if value is None else {self.method.metric_name: value}

    def evaluate(self, evaluator, split, directions, ev, *, gzsl=False, per_query=False):
        from ..engine.protocols import StandardProtocol

        return StandardProtocol(self.data, self.seed).evaluate(evaluator, split, directions, ev, gzsl=gzsl,
                                                               per_query=per_query)


@register_method("classifier", "a classifier on one modality (a data-free SBIR teacher)")
class Classifier(Method):
    """Backbone + head of ``modality``'s encoder branch, then a linear layer over the classes.

    ``features(x)`` is the branch's output (the head's embedding; set ``model.normalize: false``
    for an unnormalised feature, as the presets do), ``forward(x)`` the logits.
    """

    name = "classifier"
    metric_name = "classifier/accuracy"

    @dataclass
    class Options:
        modality: str = "photo"
        label_smoothing: float = 0.0

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        if self.options.modality not in MODALITIES:
            raise ConfigError(f"method.modality: expected 'photo' or 'sketch', got {self.options.modality!r}")
        if not 0.0 <= float(self.options.label_smoothing) < 1.0:
            raise ConfigError(f"method.label_smoothing: expected a number in [0, 1), got {self.options.label_smoothing!r}")
        self.classifier: nn.Linear | None = None
        self.register_buffer("class_names_utf8", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("label_lookup", torch.zeros(0, dtype=torch.long), persistent=False)

    # ---- classes ----------------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return decode_names(self.class_names_utf8)

    @property
    def modality(self) -> str:
        return self.options.modality

    def _set_classes(self, names: Sequence[str]) -> None:
        self.class_names_utf8 = encode_names(names)
        self.classifier = nn.Linear(self.encoder.embed_dim, len(names))

    def setup(self, ctx) -> None:
        dataset = ctx.require_dataset(f"{self.modality} classification batches")
        present = sorted({s.class_index for s in dataset.select(split=ctx.train_split, modality=self.modality)})
        if len(present) < 2:
            raise DataError(f"{dataset.name} split {ctx.train_split!r}: a classifier needs {self.modality}s of at "
                            f"least 2 classes, found {len(present)}")
        lookup = torch.full((len(dataset.classes),), -1, dtype=torch.long)
        lookup[torch.tensor(present)] = torch.arange(len(present))
        self.label_lookup = lookup
        self._set_classes([dataset.classes[i] for i in present])

    def train_source(self, ctx):
        return ctx.samples(self.modality)

    def configure_optimizers(self, train):
        """One optimiser over the modality's branch and the class layer (the other branch of a
        two-branch encoder is not trained); the backbone at ``train.backbone_lr`` when set."""
        return _branch_optimizer(self, self.modality, self.classifier, train)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Rebuild the class layer from the checkpoint's shapes first (``load_run`` builds the
        method without its dataset, so the number of classes comes from the weights)."""
        weight = state_dict.get("classifier.weight")
        if weight is not None and (self.classifier is None or self.classifier.weight.shape != weight.shape):
            self.classifier = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device)
        names = state_dict.get("class_names_utf8")
        if names is not None and names.shape != self.class_names_utf8.shape:
            self.class_names_utf8 = torch.zeros_like(names)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- forward ----------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.encode(x, self.modality)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if self.classifier is None:
            raise ConfigError("classifier: no classes yet (train it, or load a checkpoint)")
        return self.classifier(self.features(x))

    def training_step(self, batch, ctx=None):
        images = batch["image"]
        target = self.label_lookup[batch["label"]]
        if bool((target < 0).any()):
            raise DataError("classifier: a training sample's class has no output (the class list changed)")
        stage = batch.get("feature_stage")  # cached maps (train.trainable_stages): the later stages run here
        logits = self.classifier(self.encoder.encode_features(images, self.modality,
                                                              None if stage is None else int(stage))
                                 if self.inputs_are_features(batch) else self.features(images))
        loss = F.cross_entropy(logits, target, label_smoothing=float(self.options.label_smoothing))
        return {"loss": loss, "accuracy": (logits.argmax(1) == target).float().mean().detach()}

    # ---- validation -------------------------------------------------------------------------------
    def accuracy(self, dataset, split, batch_size: int, device) -> float | None:
        """Top-1 accuracy on ``split``'s samples of the classifier's modality (classes it has)."""
        lookup = {name: i for i, name in enumerate(self.class_names)}
        index = torch.tensor([lookup.get(c, -1) for c in dataset.classes], dtype=torch.long)
        samples = dataset.select(split=split, modality=self.modality)
        return _accuracy_over(self, dataset, samples, lambda x: self(x).argmax(1),
                              lambda b: index[b["label"]], batch_size, device)

    def validation_protocol(self, ctx):
        return AccuracyProtocol(self, ctx.config.get("data", {}), ctx.seed)

    def validation_metrics(self, ctx):
        if ctx.dataset is None or ctx.data.val_split is None:
            return None
        value = self.accuracy(ctx.dataset, ctx.data.val_split, ctx.eval.batch_size, ctx.device)
        return None if value is None else {self.metric_name: value}

    def validation_metric_names(self):
        return [self.metric_name]


@register_method("modality_discriminator", "photo vs sketch, for CrossX-DFL's modality guidance")
class ModalityDiscriminator(Method):
    """One logit per image: photo (1) vs sketch (0), from the photo branch (``model.shared: true``
    makes it the one branch) and a linear layer; binary cross-entropy on pair batches."""

    name = "modality_discriminator"
    metric_name = "discriminator/accuracy"

    @dataclass
    class Options:
        classes_per_batch: int | None = None

    def __init__(self, encoder, options=None):
        super().__init__(encoder, options)
        self.classifier = nn.Linear(encoder.embed_dim, 1)

    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec(kind="pairs", mode="class", classes_per_batch=self.options.classes_per_batch)

    def configure_optimizers(self, train):
        return _branch_optimizer(self, "photo", self.classifier, train)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """The photo logit of each image, ``(B,)``."""
        return self.classifier(self.encoder.encode(x, "photo")).squeeze(1)

    def training_step(self, batch, ctx=None):
        x = torch.cat([batch["sketch"], batch["photo"]])
        y = torch.cat([torch.zeros(len(batch["sketch"])), torch.ones(len(batch["photo"]))]).to(x.device)
        logits = self(x)
        return {"loss": F.binary_cross_entropy_with_logits(logits, y),
                "accuracy": ((logits > 0).float() == y).float().mean().detach()}

    def accuracy(self, dataset, split, batch_size: int, device) -> float | None:
        """Accuracy on ``split``, the mean of the sketch and the photo accuracies."""
        parts = []
        for modality, target in (("sketch", 0), ("photo", 1)):
            samples = dataset.select(split=split, modality=modality)
            value = _accuracy_over(self, dataset, samples, lambda x: (self(x) > 0).long(),
                                   lambda b, t=target: torch.full_like(b["label"], t), batch_size, device)
            if value is not None:
                parts.append(value)
        return sum(parts) / len(parts) if parts else None  # balanced over the two modalities

    def validation_protocol(self, ctx):
        return AccuracyProtocol(self, ctx.config.get("data", {}), ctx.seed)

    def validation_metrics(self, ctx):
        if ctx.dataset is None or ctx.data.val_split is None:
            return None
        value = self.accuracy(ctx.dataset, ctx.data.val_split, ctx.eval.batch_size, ctx.device)
        return None if value is None else {self.metric_name: value}

    def validation_metric_names(self):
        return [self.metric_name]
