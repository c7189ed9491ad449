"""Fusion of two trained runs into one embedding, the weight chosen on validation (``fusion``).

Two runs that each embed sketches and photos (any methods: a learned triplet model, the
classifier-only posterior of ``crossx_dfl``, a class-posterior model) often know different things:
on Quick, Draw! -> CIFAR-10 a model trained on 138 drawings and DoodleNet, which saw the whole
Quick, Draw! corpus, fail on different drawings. ``fusion`` combines them by their scores,
written as one vector so that an index searches the fused score exactly::

    z(x) = [ sqrt(1 - w) * zA(x) / |zA(x)| ,  sqrt(w) * zB(x) / |zB(x)| ]
    cos(z(q), z(g)) = (1 - w) * cos(zA(q), zA(g)) + w * cos(zB(q), zB(g))

(both parts have unit length, so z has too). ``w`` is ``method.weight``, or, when that is null,
the candidate of ``method.weights`` with the best validation value of ``eval.select`` on the
run's ``data.val_split`` (ties: the first candidate, so the grid's order says what to prefer).
Each component embeds the validation samples once; the sweep is then arithmetic. Nothing is
trained (one step at learning rate 0, as ``classifier_only``); the validation sweep is logged
at step 1 (``metrics.jsonl``: ``weight`` and ``val@<w>`` per candidate).

The components are finished runs named by ``method.runs`` (two folders), loaded through the
setup context (:meth:`~sbirkit.engine.context.SetupContext.load_run`); their configs and every
weight go into this run's checkpoint, so a fused run loads with ``load_run``, indexes and serves
like any run without the component folders (a component that reads files when it is built, such
as a ``crossx_dfl`` teacher's DoodleNet weights, still needs them). Components trained at another
image size than this run's ``data.options.image_size`` get their input resized (bilinear,
antialiased) to their own size; rasterise at one size where possible.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import Method
from .registry import method_class, register_method

#: model settings that say where a component's initial weights came from; its checkpoint holds them all
_PROVENANCE = (("pretrained", False), ("photo_pretrained", False), ("weights", None), ("photo_weights", None))


def _grid() -> list[float]:
    return [round(0.1 * i, 1) for i in range(11)]


class FusedEncoder(nn.Module):
    """Two encoders' unit embeddings, concatenated with weights ``sqrt(1 - w)`` and ``sqrt(w)``."""

    def __init__(self, parts: Sequence[nn.Module] = (), sizes: Sequence[int | None] = (), weight: float = 0.5):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        self.sizes = [None if s is None else int(s) for s in sizes] or [None] * len(self.parts)
        self.register_buffer("weight", torch.tensor(float(weight)))

    @property
    def embed_dim(self) -> int:
        return int(sum(int(p.embed_dim) for p in self.parts))

    def part_embeddings(self, x: torch.Tensor, modality: str) -> list[torch.Tensor]:
        """Each component's L2-normalised embedding of ``x`` (resized to the component's size)."""
        out = []
        for part, size in zip(self.parts, self.sizes):
            xi = x
            if size is not None and tuple(x.shape[-2:]) != (size, size):
                xi = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            z = part.encode_sketch(xi) if modality == "sketch" else part.encode_photo(xi)
            out.append(F.normalize(z.float(), dim=1))
        return out

    def combine(self, parts: Sequence[torch.Tensor], weight: float | torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        w = w.to(parts[0].device).clamp(0.0, 1.0)
        return torch.cat([torch.sqrt(1.0 - w) * parts[0], torch.sqrt(w) * parts[1]], dim=1)

    def encode(self, x: torch.Tensor, modality: Any) -> torch.Tensor:
        if len(self.parts) != 2:
            raise ConfigError("fusion: the encoder has no components yet (train the run, or load its checkpoint)")
        return self.combine(self.part_embeddings(x, str(getattr(modality, "value", modality))))

    def encode_sketch(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, "sketch")

    def encode_photo(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, "photo")

    def forward(self, x: torch.Tensor, modality: Any) -> torch.Tensor:
        return self.encode(x, modality)

    def freeze_backbone_norm(self) -> None:  # nothing trains: every component stays in eval mode
        self.eval()


def _image_size(config: Mapping[str, Any]) -> int | None:
    size = ((config.get("data") or {}).get("options") or {}).get("image_size")
    return int(size) if size else None


def _build_component(config: Mapping[str, Any]) -> Method:
    """A component method rebuilt from its config without reading any initial-weights file (the
    fused checkpoint holds its weights)."""
    model = dict(config.get("model") or {})
    for key, neutral in _PROVENANCE:
        if key in model or key in ("pretrained", "weights"):
            model[key] = neutral
    return method_class(config["method"]["name"]).from_config({**config, "model": model})


def _encode_json(value: Any) -> torch.Tensor:
    return torch.tensor(list(json.dumps(value, default=str).encode("utf-8")), dtype=torch.uint8)


def _decode_json(buffer: torch.Tensor) -> Any:
    return json.loads(bytes(buffer.cpu().tolist()).decode("utf-8")) if buffer.numel() else None


@register_method("fusion", "two trained runs fused into one embedding, the weight chosen on validation")
class Fusion(Method):
    """See the module docstring."""

    name = "fusion"
    manual_optimization = True  # nothing to back-propagate: the step only keeps the schedule's order
    training_free = True

    @dataclass
    class Options:
        runs: list = field(default_factory=list)  # [run A, run B]: finished run folders
        which: str = "best"  # the components' checkpoint
        weight: float | None = None  # B's weight in [0, 1]; null: chosen on validation from ``weights``
        weights: list = field(default_factory=_grid)

    def __init__(self, encoder: nn.Module | None = None, options: Any | None = None):
        super().__init__(encoder if encoder is not None else FusedEncoder(), options)
        o = self.options
        if not isinstance(o.runs, (list, tuple)) or len(o.runs) != 2 or not all(isinstance(r, str) and r
                                                                                 for r in o.runs):
            raise ConfigError(f"method.runs: expected two run folders [A, B] to fuse, got {o.runs!r}")
        if o.which not in ("best", "last"):
            raise ConfigError(f"method.which: expected 'best' or 'last', got {o.which!r}")
        if o.weight is not None and not _is_fraction(o.weight):
            raise ConfigError(f"method.weight: expected a number in [0, 1] (run B's weight) or null, got {o.weight!r}")
        if not isinstance(o.weights, (list, tuple)) or not o.weights or not all(_is_fraction(w) for w in o.weights):
            raise ConfigError(f"method.weights: expected a non-empty list of numbers in [0, 1], got {o.weights!r}")
        self.register_buffer("components_utf8", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("validation_utf8", torch.zeros(0, dtype=torch.uint8))
        self._sweep: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Fusion:
        return cls(None, cls.parse_options(config.get("method")))

    # ---- components ---------------------------------------------------------------------------------
    @property
    def components(self) -> list[dict[str, Any]]:
        """``[{"run", "which", "config"}, ...]`` of the fused runs, as saved in the checkpoint."""
        return _decode_json(self.components_utf8) or []

    @property
    def validation(self) -> dict[str, Any] | None:
        """How the weight was chosen: ``{"metric", "split", "values": {w: value}, "weight"}``."""
        return _decode_json(self.validation_utf8)

    def _attach(self, encoders: Sequence[nn.Module], configs: Sequence[Mapping[str, Any]], weight: float) -> None:
        self.encoder = FusedEncoder(encoders, [_image_size(c) for c in configs], weight)
        self.encoder.requires_grad_(False)
        self.encoder.eval()

    def setup(self, ctx) -> None:
        """Load both runs through the context, then choose the weight on validation (see the module docstring)."""
        o = self.options
        loaded, configs, records = [], [], []
        for i, run in enumerate(o.runs):
            path = Path(run)
            if not (path / f"{o.which}.pt").is_file():
                raise ConfigError(f"method.runs[{i}]: {path}: expected a finished run folder with {o.which}.pt; "
                                  "train that run first")
            method, config = ctx.load_run(path, o.which)
            loaded.append(method.encoder)
            configs.append(config)
            records.append({"run": str(path.resolve()), "which": o.which, "config": dict(config)})
        self.components_utf8 = _encode_json(records)
        self._attach(loaded, configs, 0.5 if o.weight is None else float(o.weight))
        self.encoder.to(ctx.device)
        if o.weight is None and not ctx.dry_run:
            self._choose_weight(ctx)

    def _choose_weight(self, ctx) -> None:
        from ..engine.evaluator import Evaluator, flat_metrics
        from ..eval import evaluate_directions

        o = self.options
        dataset, split = ctx.dataset, ctx.data.val_split
        sketches = dataset.sketches(split) if dataset is not None and split else []
        photos = dataset.photos(split) if dataset is not None and split else []
        if not sketches or not photos:
            raise ConfigError("method.weight: null chooses the weight on validation data, but data.val_split holds "
                              f"{len(sketches)} sketches and {len(photos)} photos; set data.val_split (or "
                              "data.val_fraction), or give method.weight")
        parts = {}
        for m, samples in (("sketch", sketches), ("photo", photos)):
            embedded = []
            for k, part in enumerate(self.encoder.parts):
                ev = Evaluator(_Single(part, self.encoder.sizes[k]), dataset, batch_size=ctx.eval.batch_size,
                               device=ctx.device)
                embedded.append(ev.embed(samples))
            parts[m] = embedded
        select, values = ctx.eval.select, {}
        for w in o.weights:
            z = {m: self.encoder.combine([torch.from_numpy(e[0]) for e in parts[m]], float(w)).numpy()
                 for m in parts}
            results = evaluate_directions(z["sketch"], parts["sketch"][0][1], z["photo"], parts["photo"][0][1],
                                          directions=list(ctx.eval.directions), distance="cosine")
            metrics = flat_metrics(results)
            if select not in metrics:
                raise ConfigError(f"eval.select: {select!r} is not among the validation metrics "
                                  f"({', '.join(metrics)})")
            values[float(w)] = float(metrics[select])
        best = max(values, key=lambda w: (values[w], -list(values).index(w)))
        self.encoder.weight.fill_(best)
        self._sweep = {f"val@{w:g}": v for w, v in values.items()}
        self.validation_utf8 = _encode_json({"metric": select, "split": split, "values": values, "weight": best})
        shown = ", ".join(f"{w:g}: {v:.3f}" for w, v in values.items())
        print(f"fusion: weight of {o.runs[1]} chosen on {split} {select}: {best:g} ({shown})", file=sys.stderr)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Rebuild the components from the configs saved in the checkpoint (``load_run`` builds the
        method before its weights are known), then load every weight. A run saved by a version that
        stepped a dummy parameter (``anchor``) loads without it."""
        state = dict(state_dict)
        state.pop("anchor", None)
        saved = state.get("components_utf8")
        if saved is not None and len(self.encoder.parts) != 2:
            records = _decode_json(saved)
            parts = [_build_component(r["config"]).encoder for r in records]
            self._attach(parts, [r["config"] for r in records], 0.5)
        for name in ("components_utf8", "validation_utf8"):
            if name in state and getattr(self, name).shape != state[name].shape:
                setattr(self, name, torch.zeros_like(state[name]))
        return super().load_state_dict(state, strict=strict, assign=assign)

    # ---- the engine's hooks ---------------------------------------------------------------------------
    def train_source(self, ctx):
        return ctx.generated()

    def configure_optimizers(self, train):
        return {}  # nothing learns: the weight is chosen on validation, the components are frozen

    def train_mode(self, train) -> None:
        self.train()
        self.encoder.eval()

    def init_heads(self, kind, training_features):
        if kind != "default":
            raise ConfigError(f"train.head_init: fusion has no heads of its own to initialise; got {kind!r}")
        return None

    def training_step(self, batch, ctx=None):
        logs = {"weight": self.encoder.weight.detach().clone()}
        logs.update({k: torch.tensor(v) for k, v in self._sweep.items()})
        return logs


class _Single(nn.Module):
    """One component as an encoder of its own (for embedding the validation samples once)."""

    def __init__(self, part: nn.Module, size: int | None):
        super().__init__()
        self.fused = FusedEncoder([part], [size])

    @property
    def embed_dim(self) -> int:
        return int(self.fused.parts[0].embed_dim)

    def encode_sketch(self, x):
        return self.fused.part_embeddings(x, "sketch")[0]

    def encode_photo(self, x):
        return self.fused.part_embeddings(x, "photo")[0]


def _is_fraction(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
