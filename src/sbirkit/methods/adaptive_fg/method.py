"""The adaptive_fg method: its modules (F's branch, the margin net, learned step sizes, the
regularisers' discriminator, classifier and decoder), setup from the training data, and the engine's
hooks (episode source, validation by adaptation). The step is in :mod:`.step`, test-time adaptation
in :mod:`.test_time`; the design in the package docstring and docs/adaptive_fg.md."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...engine.init_spec import starts_from_run
from ...errors import ConfigError, DataError
from ...losses.regularizers import CosineClassifier, domain_discriminator
from ..base import Method
from ..registry import register_method
from .groups import resolve_groups, training_view
from .margin import MarginNet
from .options import AdaptiveFGOptions, check_options
from .step import MetaStep
from .test_time import AdaptAtTestTime

if TYPE_CHECKING:
    from ...engine.context import SetupContext


@register_method("adaptive_fg")
class AdaptiveFG(MetaStep, AdaptAtTestTime, Method):
    """Adaptive fine-grained SBIR (Bhunia et al., ECCV 2022); the package docstring has the design."""

    name = "adaptive_fg"
    Options = AdaptiveFGOptions

    def __init__(self, encoder: nn.Module, options: Any | None = None):
        super().__init__(encoder, options)
        o = self.options
        self.regularizers = check_options(o)
        if not getattr(encoder, "shared", False):
            raise ConfigError("model.shared: adaptive_fg's feature extractor is one Siamese network for sketches "
                              "and photos; set model.shared=true")
        branch = encoder.branch("sketch")
        proj = getattr(branch.head, "proj", None)
        if not (isinstance(proj, nn.Sequential) and len(proj) == 2 and isinstance(proj[1], nn.Linear)):
            raise ConfigError("model.hidden: adaptive_fg's meta-learning head is one linear layer; set model.hidden=null")
        if not branch.head.normalize:
            raise ConfigError("model.normalize: adaptive_fg's head L2-normalises its embeddings; set model.normalize=true")
        self.feature_dim = int(branch.head.in_dim)
        # inner-loop parameters, named relative to the branch
        self.inner_names = [f"head.{n}" for n, p in branch.head.named_parameters()] if o.inner == "head" else \
            [n for n, p in branch.named_parameters() if p.requires_grad]
        if o.learn_alpha == "scalar":
            self.alpha = nn.Parameter(torch.tensor(float(o.alpha)))
        elif o.learn_alpha == "per_parameter":
            params = dict(branch.named_parameters())
            self.alphas = nn.ParameterDict({n.replace(".", "__"): nn.Parameter(torch.full_like(params[n], float(o.alpha)))
                                            for n in self.inner_names})
        self.margin_net = MarginNet(self.feature_dim, int(o.margin_hidden), float(o.inner_margin)) \
            if o.margin == "learned" else None
        hidden = int(o.reg_hidden)
        self.discriminator = domain_discriminator(self.feature_dim, hidden) if "d" in self.regularizers else None
        # built by setup() from the training classes, or by load_state_dict() from a checkpoint
        self.register_buffer("class_lookup", None)
        self.register_buffer("semantic", None)
        self.classifier: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.active_regularizers = tuple(r for r in self.regularizers if r not in ("c", "s"))
        self.groups: dict[str, list[str]] = {}
        self.init_record: dict[str, Any] | None = None  # what train.init_from loaded (initialised_from)
        self.starts_from_run = False  # train.init_from (or method.init_from) is set: feature_norm auto
        self.train_split: str | None = None
        self._probe: list[dict[str, Any]] | None = None  # the monitors' fixed tasks (monitors.py)
        self._step = 0  # steps trained (the regularisers' ramp; the monitors' step)

    @property
    def branch(self) -> nn.Module:
        return self.encoder.branch("sketch")

    # ---- groups and class-dependent modules ---------------------------------------------------------
    def _resolve_groups(self, dataset) -> dict[str, list[str]]:
        return resolve_groups(self.options, dataset)

    def _training_view(self, dataset):
        """The samples of the meta-train groups only (every photo, for user tasks)."""
        return training_view(self.options, self.groups, dataset)

    def _build_class_modules(self, num_classes: int, train_classes: Sequence[int], vectors: torch.Tensor | None,
                             classifier: str | None = None) -> None:
        hidden = int(self.options.reg_hidden)
        classifier = classifier or self.options.c_mode
        lookup = torch.full((int(num_classes),), -1, dtype=torch.long)
        lookup[torch.as_tensor(list(train_classes), dtype=torch.long)] = torch.arange(len(train_classes))
        self.class_lookup = lookup
        many = len(train_classes) >= 2
        if "c" in self.regularizers and many:
            self.classifier = nn.Linear(self.feature_dim, len(train_classes)) if classifier == "linear" else \
                CosineClassifier(self.feature_dim, len(train_classes), float(self.options.c_scale))
        if "s" in self.regularizers and many and vectors is not None:
            self.semantic = torch.as_tensor(vectors, dtype=torch.float32).clone()
            self.decoder = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.ReLU(),
                                         nn.Linear(hidden, self.semantic.shape[1]))
        self.active_regularizers = tuple(r for r in self.regularizers
                                         if (r == "c" and self.classifier is not None)
                                         or (r == "s" and self.decoder is not None) or r in ("d", "ud"))

    def setup(self, ctx: SetupContext) -> None:
        """Resolve the groups and build the category modules (L_C, L_S) over the meta-train classes.
        F is started from ``train.init_from`` by the runner afterwards (a new run only: a resumed one
        loads everything from last.pt)."""
        if ctx.train.cached_features and self.options.inner == "all":
            raise ConfigError("method.inner=all with train.cached_features: MAML over every parameter needs the "
                              "images; train end to end (train.cached_features=false) or adapt the head (inner=head)")
        dataset = ctx.require_dataset("episodes")
        self.groups = self._resolve_groups(dataset)
        self.train_split = ctx.train_split
        view = self._training_view(dataset)
        classes = sorted({s.class_index for s, _ in view.pairs(ctx.train_split)})
        if not classes:
            raise DataError(f"{dataset.name} split {ctx.train_split!r}: expected (sketch, photo) pairs of the "
                            f"meta-train {self.options.group_by}s {', '.join(self.groups['train'])}, found none")
        vectors = None
        if "s" in self.regularizers and len(classes) >= 2:
            from ...semantics import class_vectors

            names = [dataset.classes[i] for i in classes]
            table = class_vectors(names, self.options.semantic, **dict(self.options.semantic_options or {}))
            vectors = torch.from_numpy(table.vectors)
            if not bool(torch.isfinite(vectors).all()):
                raise DataError(f"{table.origin or self.options.semantic}: semantic vectors: expected one finite "
                                f"vector per meta-train class, missing: {', '.join(table.missing)}")
        self._build_class_modules(len(dataset.classes), classes, vectors)
        # F starts from another run's weights (train.init_from, or method.init_from read as it): the
        # runner copies them after setup (engine/init_from.py) and tells check_init_source / initialised_from
        self.starts_from_run = starts_from_run(ctx.config)

    def check_init_source(self, source_config: Mapping[str, Any] | None, where: str) -> None:
        """F comes from a run of the same backbone (a run of another backbone is refused, even where
        some tensor shapes happen to agree)."""
        if source_config is None:
            return
        theirs = source_config["model"].get("backbone")
        ours = self.encoder.config.get("backbone") if getattr(self.encoder, "config", None) else None
        if ours is not None and theirs != ours:
            raise ConfigError(f"{where} has backbone {theirs!r}, this model {ours!r}")

    def initialised_from(self, record: Mapping[str, Any]) -> None:
        """What ``init_from`` loaded into F's (shared) branch: at least a backbone weight, else an error;
        kept for :meth:`init_heads`."""
        branch = next(iter(record["branches"].values()))
        if branch["parts"].get("backbone", "none") == "none":
            raise ConfigError(f"{record['key']}: {record['run']}: no backbone weight fits this model "
                              f"({branch['source_tensors']} encoder tensors in the checkpoint)")
        self.init_record = dict(record)

    def init_heads(self, kind: str, training_features):
        """``train.head_init`` (e.g. PCA) for a run of its own; a run whose head came from
        ``init_from`` keeps that head (the preset's ``pca`` serves its baseline)."""
        loaded = self.init_record is not None and \
            next(iter(self.init_record["branches"].values()))["parts"].get("head") == "all"
        if kind != "default" and loaded:
            return {"kind": kind, "skipped": f"the head was loaded from {self.init_record['key']}"}
        return super().init_heads(kind, training_features)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Rebuild the class-dependent modules from a checkpoint's shapes, then load (no dataset needed)."""
        if self.class_lookup is None and "class_lookup" in state_dict:
            lookup = state_dict["class_lookup"]
            classes = [int(i) for i in torch.nonzero(lookup >= 0).flatten().tolist()]
            classes.sort(key=lambda i: int(lookup[i]))
            # a checkpoint keeps the classifier it was trained with (a linear one has a bias)
            kind = "linear" if "classifier.bias" in state_dict else \
                ("cosine" if "classifier.log_scale" in state_dict else None)
            self._build_class_modules(len(lookup), classes, state_dict.get("semantic"), kind)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # ---- engine hooks ----------------------------------------------------------------------------------
    def train_source(self, ctx: SetupContext):
        """The engine's episode source over the meta-train groups' samples only."""
        from ...data.samplers import EpisodicTaskSampler
        from ...engine.sources import EpisodeSource

        o = self.options
        if not self.groups:
            self.groups = self._resolve_groups(ctx.require_dataset("episodes"))
        view = self._training_view(ctx.require_dataset("episodes"))
        try:
            sampler = EpisodicTaskSampler(view, ctx.train_split, o.group_by, int(o.k_support), int(o.k_query),
                                          seed=ctx.seed, within_class=bool(o.within_class))
        except ValueError as exc:
            raise ConfigError(f"method: episodes: {exc}") from None
        return EpisodeSource(sampler, int(o.tasks_per_step))

    def validation_protocol(self, ctx: SetupContext):
        """Adapt on tasks of the validation groups (held-out meta-train categories or users), or of the
        meta-train groups' validation split when none are held out; never on the test groups."""
        from ...engine.adaptation import AdaptationProtocol
        from ..collapse import CollapseWatch, MonitoredProtocol
        from .monitors import adaptive_monitors

        o = self.options
        groups = self.groups.get("val") or self.groups.get("train")
        protocol = AdaptationProtocol(ctx.config.get("data", {}), ctx.seed, adapt=self.adapt,
                                      k=int(o.val_k or o.k_support), group_by=o.group_by, groups=groups,
                                      draws=int(o.val_draws), max_queries=o.val_max_queries,
                                      strategy=self.default_strategy, within_class=bool(o.within_class))
        if int(o.monitor_tasks) < 1:
            return protocol
        self.train_split = self.train_split or ctx.train_split
        return MonitoredProtocol(protocol, lambda evaluator, split: adaptive_monitors(self, evaluator, split),
                                 CollapseWatch(log=ctx.run_dir / "metrics.jsonl" if ctx.run_dir else None), step=lambda: self._step)
