"""Adaptive fine-grained SBIR by meta-learning (Bhunia, Sain, Shah, Gupta, Chowdhury, Xiang, Song,
"Adaptive Fine-Grained Sketch-Based Image Retrieval", ECCV 2022).

A fine-grained model (a sketch retrieves the very photo it was drawn from) adapts to a new category
or a new person's drawing style from k sketch-photo pairs, with one gradient step on a small head.

* **Feature extractor F**: one network for sketches and photos (Siamese, ``model.shared: true``),
  any registered backbone, then :class:`~sbirkit.models.heads.SpatialAttention` and a global pool
  (``model.attention: true``). ``method.init_from: RUN`` starts it from a trained run (e.g. a
  ``triplet_sn`` run), as the paper builds on its supervised baseline.
* **Meta-learning head M**: the encoder's linear embedding head with L2 normalisation (64-d in the
  presets). Only M adapts in the inner loop (ANIL-like): ``W' = W - alpha * grad_W L_T^mu(support)``,
  ``inner_steps`` times (default 1); ``alpha`` fixed or learned (Meta-SGD: one scalar or one per
  parameter). The meta-gradient is second order through the head step only (the step is on a
  linear layer, so this is cheap); ``first_order: true`` drops it. Implemented functionally
  (:class:`FunctionalLearner`: ``torch.func.functional_call`` + ``torch.autograd.grad``).
* **Meta-learned margin**: :class:`MarginNet` predicts the task's triplet margin mu in (0, 1) from
  the support set (mean sketch and mean photo features). The poster's inner loss is the triplet
  loss ``L_T = 1/N sum max{0, mu + beta+ - beta-}``; a plain hinge gives mu a zero meta-gradient
  almost everywhere, so the inner loss is the smooth hinge ``softplus(tau (mu + beta+ - beta-)) / tau``
  and the outer (query) loss keeps a fixed margin ``outer_margin`` (mu is then learned only through
  what it does to the adapted head). beta = squared Euclidean distance of unit embeddings.
* **Outer-loop regularisers on F's features** (each with a weight ``w_*`` and listed in
  ``regularizers`` to be on; the forms in :mod:`sbirkit.losses.regularizers`, docs/adaptive_fg.md):

  - ``d``: L_D, the poster's sketch-vs-photo discriminator D, trained on detached features, with F
    trained towards D's confusion (a bounded loss whose push vanishes once D cannot tell);
  - ``c``: L_C, cross-entropy of a classifier over the meta-train categories: a cosine classifier
    on normalised features with a learned scale (``c_mode: cosine``) or the poster's linear one;
  - ``s``: L_S = 1/2 (1 - cos(G(F(I)), S_w)), a decoder regressing the class-name vector S_w
    (:func:`sbirkit.semantics.class_vectors`, ``semantic`` source);
  - ``ud``: L_ud = max{0, beta'+ - beta'- + mu'}, an intra-category triplet in F's (normalised)
    space, for single-category tasks such as shoes.

  Their weights rise from 0 over ``reg_ramp_steps``; ``reg_gate`` drops them on tasks whose outer
  loss is already at most that value (where they would act unopposed). ``c`` and ``s`` need two
  meta-train categories or more and are skipped (recorded in :attr:`AdaptiveFG.active_regularizers`)
  with one. Collapse monitors (:mod:`sbirkit.methods.adaptive_monitors`) are added to every
  validation record.
* **Tasks** (:meth:`AdaptiveFG.train_source`): the engine's episode source over the meta-train
  groups only: ``group_by: class`` (a task = one category) or ``user`` (one user's sketches,
  ``Sample.user_id``; with ``within_class`` one user's sketches of one category); each task has
  ``k_support`` + ``k_query`` disjoint (sketch, own photo) pairs.
  The inner loop's negatives for a support sketch are the other support photos (the paper's "another
  photo of the same category"; a 1-shot task borrows one more photo of the task): not the query
  photos, which an inner step would otherwise push the task's sketches away from. The outer loss
  ranks each query sketch against every photo of the task. ``val_groups`` and
  ``test_groups`` are held out of training: model selection adapts on tasks of ``val_groups``
  (:meth:`AdaptiveFG.validation_protocol`, :class:`~sbirkit.engine.adaptation.AdaptationProtocol`),
  ``sbirkit eval --adapt K`` on tasks of ``test_groups``.

Baselines live in the same method (``mode``, ``inner``, ``margin``, ``regularizers``; presets and
overrides in docs/adaptive_fg.md and :data:`BASELINES`): ``mode: supervised`` trains the same
network with the fixed-margin triplet loss on the same tasks and no inner loop (the "baseline";
with regularisers, "baseline + regularisers"), evaluated without adaptation or by fine-tuning at
test time (:meth:`AdaptiveFG.adapt` ``strategy="finetune_head"`` / ``"finetune_all"``);
``inner: all`` is MAML over every parameter (``first_order`` option); ``margin: fixed`` with no
regularisers is ANIL.

Using a trained model: :meth:`AdaptiveFG.adapt` ``(support batch) -> adapted encoder`` (no
optimiser state, no graph kept), ``sbirkit adapt RUN --support DIR -k 5 --out RUN_ADAPTED``
(:func:`sbirkit.engine.adapt_run.adapt_run`) and ``sbirkit eval RUN --adapt K --tasks class|user``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import ConfigError, DataError, UsageError
from ..losses.regularizers import CosineClassifier, domain_discriminator, domain_terms
from .base import Method
from .registry import register_method

if TYPE_CHECKING:
    from ..engine.context import SetupContext, StepContext

MODES = ("meta", "supervised")
INNER = ("head", "all")
MARGINS = ("learned", "fixed")
ALPHAS = ("none", "scalar", "per_parameter")
REGULARIZERS = ("d", "c", "s", "ud")
STRATEGIES = ("meta", "none", "finetune_head", "finetune_all")
CLASSIFIERS = ("cosine", "linear")
__all__ = ["AdaptiveFG", "AdaptedEncoder", "FunctionalLearner", "MarginNet", "smooth_hinge", "triplet_loss"]
GROUP_BY = ("class", "user")

# the baselines of the paper as overrides of an adaptive_fg preset (BENCHMARKS.md, docs/adaptive_fg.md);
# "strategy" is how the trained model adapts at test time (AdaptiveFG.adapt); "from_baseline": the run
# starts from the trained no-adaptation baseline of the same seed (method.init_from), as the paper's
# meta-training builds on its supervised baseline; the others train from scratch
SUPERVISED = ["method.mode=supervised", "method.regularizers=[]"]
BASELINES: dict[str, dict[str, Any]] = {
    "ours": {"overrides": [], "strategy": "meta", "from_baseline": True},
    "no_adaptation": {"overrides": SUPERVISED, "strategy": "none", "from_baseline": False},
    "finetune_head": {"overrides": SUPERVISED, "strategy": "finetune_head", "from_baseline": False},
    "finetune_all": {"overrides": SUPERVISED, "strategy": "finetune_all", "from_baseline": False},
    "baseline_reg": {"overrides": ["method.mode=supervised"], "strategy": "none", "from_baseline": True},
    # alpha 0.005: one all-parameter step of 0.5 (the head's) or 0.05 from the baseline wrecked its
    # validation Acc@1 (0.227 -> 0.09 / 0.06), 0.005 kept it near (0.19), 0.0005 changed nothing
    "maml": {"overrides": ["method.inner=all", "method.margin=fixed", "method.learn_alpha=none", "method.alpha=0.005",
                           "method.regularizers=[]"], "strategy": "meta", "from_baseline": True},
    "maml_fo": {"overrides": ["method.inner=all", "method.margin=fixed", "method.learn_alpha=none", "method.alpha=0.005",
                              "method.regularizers=[]", "method.first_order=true"], "strategy": "meta",
                "from_baseline": True},
    "anil": {"overrides": ["method.margin=fixed", "method.learn_alpha=none", "method.regularizers=[]"],
             "strategy": "meta", "from_baseline": True},
    "upper_bound": {"overrides": [*SUPERVISED, "method.train_on_test_groups=true"], "strategy": "none",
                    "from_baseline": False},
}


# ---- losses -----------------------------------------------------------------------------------------
def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for rows of ``a`` and ``b`` (exact for any rows, not only unit ones)."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp(min=0.0)


def smooth_hinge(x: torch.Tensor, tau: float) -> torch.Tensor:
    """``softplus(tau * x) / tau``: the hinge ``max(0, x)`` as ``tau -> inf``, with a gradient
    everywhere (so a margin inside ``x`` gets a meta-gradient)."""
    return F.softplus(tau * x) / tau


def triplet_loss(anchors: torch.Tensor, photos: torch.Tensor, photo_ids: torch.Tensor,
                 margin: float | torch.Tensor, tau: float | None = None) -> torch.Tensor:
    """Fine-grained triplet loss: anchor i's positive is ``photos[i]``; every photo with another
    id (``photo_ids``) is one of its negatives. Mean over (anchor, negative) triplets of the hinge
    ``max(0, margin + beta+ - beta-)`` (``tau=None``) or its smooth form (:func:`smooth_hinge`)."""
    n = len(anchors)
    d = squared_distances(anchors, photos)
    pos = d[torch.arange(n, device=d.device), torch.arange(n, device=d.device)]
    valid = (photo_ids[None, :] != photo_ids[:n, None]).to(d.dtype)
    x = margin + pos[:, None] - d
    terms = F.relu(x) if tau is None else smooth_hinge(x, tau)
    return (terms * valid).sum() / valid.sum().clamp(min=1.0)


# ---- the functional learner ------------------------------------------------------------------------
class FunctionalLearner:
    """Some parameters of ``module`` as plain tensors that gradient steps replace (MAML, ANIL, Meta-SGD).

    ``learner(x)`` runs ``module`` with the current tensors (``torch.func.functional_call``; the
    module's other parameters and buffers are its own). :meth:`adapt` takes one step,
    ``theta <- theta - alpha * grad theta``; with ``create_graph`` the step stays differentiable, so
    an outer loss on the adapted learner reaches the initial parameters, ``alpha`` and anything the
    inner loss depended on (second order). :meth:`clone` starts a task from the same tensors.
    """

    def __init__(self, module: nn.Module, params: Mapping[str, torch.Tensor],
                 alphas: Mapping[str, torch.Tensor | float], create_graph: bool = True):
        self.module, self.params = module, dict(params)
        self.alphas, self.create_graph = dict(alphas), bool(create_graph)

    def clone(self) -> FunctionalLearner:
        return FunctionalLearner(self.module, self.params, self.alphas, self.create_graph)

    def __call__(self, *args: Any) -> torch.Tensor:
        return functional_call(self.module, self.params, args)

    def adapt(self, loss: torch.Tensor) -> FunctionalLearner:
        names = list(self.params)
        grads = torch.autograd.grad(loss, [self.params[n] for n in names], create_graph=self.create_graph,
                                    allow_unused=True)
        new = {}
        for name, g in zip(names, grads):
            p = self.params[name]
            if g is None:
                new[name] = p
                continue
            if not self.create_graph:
                g = g.detach()
            new[name] = p - self.alphas[name] * g
        self.params = new
        return self

    def detached(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items()}


# ---- the margin network -----------------------------------------------------------------------------
class MarginNet(nn.Module):
    """mu in (0, 1) from the support set: an MLP on [mean sketch, mean photo, |difference|] of the
    L2-normalised support features, then a sigmoid; it starts near ``init`` for every task."""

    def __init__(self, in_dim: int, hidden: int = 64, init: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3 * in_dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            self.net[2].weight.mul_(0.1)
            self.net[2].bias.fill_(math.log(init / (1.0 - init)))

    def forward(self, sketch_features: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
        s = F.normalize(sketch_features, dim=1).mean(0)
        p = F.normalize(photo_features, dim=1).mean(0)
        return torch.sigmoid(self.net(torch.cat([s, p, (s - p).abs()]))).squeeze(0)


# ---- the adapted encoder ----------------------------------------------------------------------------
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


# ---- the method -------------------------------------------------------------------------------------
def _names(value: Any, option: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"method.{option}: expected a list of names, got {value!r}")
    return list(value)


@register_method("adaptive_fg")
class AdaptiveFG(Method):
    """Adaptive fine-grained SBIR (Bhunia et al., ECCV 2022); the module docstring has the design."""

    name = "adaptive_fg"

    @dataclass
    class Options:
        # tasks (the engine's episode source over the meta-train groups)
        group_by: str = "class"  # class: a task is one category; user: one user's sketches
        within_class: bool = False  # user tasks: one user's sketches of one category (negatives share it)
        k_support: int = 5
        k_query: int = 5
        tasks_per_step: int = 4
        val_groups: Sequence[str] | None = None  # held out for model selection; null: validation tasks
        # come from the meta-train groups' data.val_split (held-out instances)
        test_groups: Sequence[str] | None = None  # the new categories / users: never trained on
        train_on_test_groups: bool = False  # the upper bound: train on the test groups' training split too
        # meta-learning
        mode: str = "meta"  # meta | supervised (the baseline: same network and tasks, no inner loop)
        inner: str = "head"  # head: only M adapts (ANIL-like, ours) | all: MAML over every parameter
        inner_steps: int = 1
        alpha: float = 0.5  # inner step size (initial value when learned)
        learn_alpha: str = "scalar"  # none | scalar | per_parameter (Meta-SGD)
        first_order: bool = False  # drop the second-order term of the meta-gradient
        margin: str = "learned"  # learned (MarginNet) | fixed (inner_margin)
        inner_margin: float = 0.2  # the fixed inner margin, and the margin net's starting value
        outer_margin: float = 0.2  # the query loss's fixed margin (and the supervised baseline's)
        tau: float = 10.0  # sharpness of the smooth hinge of the inner loss
        margin_hidden: int = 64
        # regularisers on F's features (the poster's L_D, L_C, L_S, L_ud)
        regularizers: Sequence[str] = REGULARIZERS
        w_d: float = 0.1
        w_c: float = 0.1
        w_s: float = 0.1
        w_ud: float = 0.1
        ud_margin: float = 0.2  # mu' of L_ud
        c_mode: str = "cosine"  # L_C: cosine (scale * cos(F, w_c), learned scale) | linear (on raw features)
        c_scale: float = 10.0  # the cosine classifier's starting scale
        reg_ramp_steps: int = 0  # the regularisers' weights rise linearly from 0 to w_* over this many steps
        reg_gate: float | None = None  # a task's regularisers count only while its outer loss exceeds this
        reg_hidden: int = 128
        semantic: str = "minilm"  # a sbirkit.semantics source (onehot, random work offline)
        semantic_options: dict = field(default_factory=dict)
        # the feature extractor
        init_from: str | None = None  # a run folder (e.g. triplet_sn) to start F (and M where shapes fit) from
        init_which: str = "best"
        # model selection and test-time adaptation
        val_k: int | None = None  # k of the validation tasks (null: k_support)
        val_draws: int = 5
        val_max_queries: int | None = 50
        monitor_tasks: int = 8  # collapse monitors at each validation on this many fixed training tasks; 0 = off
        strategy: str | None = None  # how adapt() adapts by default: null = meta (mode meta) or none (supervised)
        finetune_steps: int = 10  # the fine-tuning baselines (strategy finetune_head / finetune_all)
        finetune_lr: float = 1.0e-3
        finetune_optimizer: str = "adam"  # adam | sgd
        feature_norm: str = "auto"  # BatchNorm in training: running (statistics updated each step, used as at
        # test time) | batch (ordinary) | auto: running when init_from gives trained statistics, else batch

    def __init__(self, encoder: nn.Module, options: Any | None = None):
        super().__init__(encoder, options)
        o = self.options
        for option, value, allowed in (("group_by", o.group_by, GROUP_BY), ("mode", o.mode, MODES),
                                       ("inner", o.inner, INNER), ("margin", o.margin, MARGINS),
                                       ("learn_alpha", o.learn_alpha, ALPHAS),
                                       ("finetune_optimizer", o.finetune_optimizer, ("adam", "sgd")),
                                       ("feature_norm", o.feature_norm, ("auto", "running", "batch")),
                                       ("c_mode", o.c_mode, CLASSIFIERS)):
            if value not in allowed:
                raise ConfigError(f"method.{option}: expected one of {', '.join(allowed)}, got {value!r}")
        if o.strategy is not None and o.strategy not in STRATEGIES:
            raise ConfigError(f"method.strategy: expected null or one of {', '.join(STRATEGIES)}, got {o.strategy!r}")
        regs = _names(o.regularizers, "regularizers") or []
        unknown = [r for r in regs if r not in REGULARIZERS]
        if unknown:
            raise ConfigError(f"method.regularizers: expected names from {', '.join(REGULARIZERS)}, got {unknown[0]!r}")
        self.regularizers = tuple(r for r in REGULARIZERS if r in regs)
        if int(o.reg_ramp_steps) < 0:
            raise ConfigError(f"method.reg_ramp_steps: expected 0 (no ramp) or more, got {o.reg_ramp_steps!r}")
        if float(o.c_scale) <= 0:
            raise ConfigError(f"method.c_scale: expected a positive scale, got {o.c_scale!r}")
        if int(o.monitor_tasks) < 0:
            raise ConfigError(f"method.monitor_tasks: expected 0 (off) or more, got {o.monitor_tasks!r}")
        for option in ("k_support", "k_query", "tasks_per_step", "val_draws", "finetune_steps"):
            if int(getattr(o, option)) < 1:
                raise ConfigError(f"method.{option}: expected a positive integer, got {getattr(o, option)!r}")
        if int(o.inner_steps) < 0:
            raise ConfigError(f"method.inner_steps: expected 0 or more, got {o.inner_steps!r}")
        if not 0.0 < float(o.inner_margin) < 1.0:
            raise ConfigError(f"method.inner_margin: expected a value in (0, 1), got {o.inner_margin!r}")
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
        self.init_record: dict[str, Any] | None = None
        self.train_split: str | None = None
        self._probe: list[dict[str, Any]] | None = None  # the monitors' fixed tasks (adaptive_monitors.py)
        self._step = 0  # steps trained (the regularisers' ramp; the monitors' step)

    @property
    def branch(self) -> nn.Module:
        return self.encoder.branch("sketch")

    # ---- groups and class-dependent modules ---------------------------------------------------------
    def _resolve_groups(self, dataset) -> dict[str, list[str]]:
        o = self.options
        if o.group_by == "class":
            known = list(dataset.classes)

            def canon(name: str, option: str) -> str:
                try:
                    return dataset.classes[dataset.class_index(name)]
                except KeyError:
                    raise ConfigError(f"method.{option}: {name!r} is not a class of {dataset.name} "
                                      f"({', '.join(known)})") from None
        else:
            known = list(dataset.users)

            def canon(name: str, option: str) -> str:
                if name not in known:
                    raise ConfigError(f"method.{option}: {name!r} is not a user of {dataset.name} "
                                      f"({', '.join(known) or 'no user ids'})")
                return name
        val = [canon(n, "val_groups") for n in (_names(o.val_groups, "val_groups") or [])]
        test = [canon(n, "test_groups") for n in (_names(o.test_groups, "test_groups") or [])]
        both = sorted(set(val) & set(test))
        if both:
            raise ConfigError(f"method.val_groups, method.test_groups: {both[0]!r} is in both")
        held = set(val) | (set() if o.train_on_test_groups else set(test))
        train = [g for g in known if g not in held]
        if not train:
            raise ConfigError(f"method.val_groups, method.test_groups: every {o.group_by} is held out; "
                              "nothing is left to meta-train on")
        return {"train": train, "val": val, "test": test}

    def _training_view(self, dataset):
        """The samples of the meta-train groups only (every photo, for user tasks)."""
        train = set(self.groups["train"])
        if self.options.group_by == "class":
            keep = {dataset.class_index(c) for c in train}
            return dataset.subset(s for s in dataset.samples if s.class_index in keep)
        return dataset.subset(s for s in dataset.samples if not s.is_sketch or s.user_id in train)

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
        """Resolve the groups, build the category modules (L_C, L_S) over the meta-train classes, and
        start F from ``init_from`` (a new run only: a resumed one loads everything from last.pt)."""
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
            from ..semantics import class_vectors

            names = [dataset.classes[i] for i in classes]
            table = class_vectors(names, self.options.semantic, **dict(self.options.semantic_options or {}))
            vectors = torch.from_numpy(table.vectors)
            if not bool(torch.isfinite(vectors).all()):
                raise DataError(f"{table.origin or self.options.semantic}: semantic vectors: expected one finite "
                                f"vector per meta-train class, missing: {', '.join(table.missing)}")
        self._build_class_modules(len(dataset.classes), classes, vectors)
        if self.options.init_from and not ctx.resuming:
            self.init_record = self.load_feature_extractor(self.options.init_from, self.options.init_which)

    def load_feature_extractor(self, run_dir: str, which: str = "best") -> dict[str, Any]:
        """Copy a trained run's encoder weights into this one wherever name and shape agree (its
        backbone, attention, and head when the sizes match); returns what was loaded and skipped."""
        from pathlib import Path

        from ..engine.checkpoint import load_checkpoint
        from ..engine.config import read_config

        run = Path(run_dir)
        path = run / f"{which}.pt"
        if not path.is_file():
            raise ConfigError(f"method.init_from: {path}: checkpoint not found (expected a run folder with {which}.pt)")
        config = read_config(run / "config.yaml")
        theirs = config["model"].get("backbone")
        ours = self.encoder.config.get("backbone") if getattr(self.encoder, "config", None) else None
        if ours is not None and theirs != ours:
            raise ConfigError(f"method.init_from: {run} has backbone {theirs!r}, this model {ours!r}")
        state = load_checkpoint(path, map_location="cpu")["model"]
        branch_state = {}
        for key, value in state.items():
            for prefix in ("encoder.encoder.", "encoder.sketch_encoder."):
                if key.startswith(prefix):
                    branch_state[key[len(prefix):]] = value
        mine = self.branch.state_dict()
        loaded = {k: v for k, v in branch_state.items() if k in mine and tuple(mine[k].shape) == tuple(v.shape)}
        if not any(k.startswith("backbone.") for k in loaded):
            raise ConfigError(f"method.init_from: {path}: no backbone weight fits this model "
                              f"({len(branch_state)} encoder tensors in the checkpoint)")
        with torch.no_grad():
            for k, v in loaded.items():
                mine[k].copy_(v)
        return {"run": str(run), "which": which, "loaded": len(loaded),
                "skipped": sorted(k for k in mine if k not in loaded)}

    def init_heads(self, kind: str, training_features):
        """``train.head_init`` (e.g. PCA) for a run of its own; a run whose head came from
        ``init_from`` keeps that head (the preset's ``pca`` serves its baseline)."""
        loaded = self.init_record is not None and not any(k.startswith("head.") for k in self.init_record["skipped"])
        if kind != "default" and loaded:
            return {"kind": kind, "skipped": "the head was loaded from method.init_from"}
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
        from ..data.samplers import EpisodicTaskSampler
        from ..engine.sources import EpisodeSource

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
        from ..engine.adaptation import AdaptationProtocol
        from .adaptive_monitors import adaptive_monitors
        from .collapse import CollapseWatch, MonitoredProtocol

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

    @property
    def default_strategy(self) -> str:
        if self.options.strategy is not None:
            return self.options.strategy
        return "meta" if self.options.mode == "meta" else "none"

    # ---- pieces of the step ---------------------------------------------------------------------------
    def inner_alphas(self) -> dict[str, torch.Tensor | float]:
        o = self.options
        if o.learn_alpha == "scalar":
            return {n: self.alpha for n in self.inner_names}
        if o.learn_alpha == "per_parameter":
            return {n: self.alphas[n.replace(".", "__")] for n in self.inner_names}
        return {n: float(o.alpha) for n in self.inner_names}

    def learner(self, create_graph: bool, detach: bool = False) -> FunctionalLearner:
        """The inner-loop learner at the meta-learned initialisation: the head (``inner: head``,
        called on F's features) or the whole branch (``inner: all``, called on images)."""
        branch = self.branch
        params = dict(branch.named_parameters())
        if self.options.inner == "head":
            module = branch.head
            tensors = {n[len("head."):]: params[n] for n in self.inner_names}
            alphas = {n[len("head."):]: a for n, a in self.inner_alphas().items()}
        else:
            module, tensors, alphas = branch, {n: params[n] for n in self.inner_names}, self.inner_alphas()
        if detach:
            tensors = {n: t.detach().requires_grad_(True) for n, t in tensors.items()}
            alphas = {n: (a.detach() if isinstance(a, torch.Tensor) else a) for n, a in alphas.items()}
        return FunctionalLearner(module, tensors, alphas, create_graph)

    def task_margin(self, sketch_features: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
        """mu of a task from its support features (the fixed ``inner_margin`` when not learned)."""
        if self.margin_net is None:
            return torch.tensor(float(self.options.inner_margin), device=sketch_features.device)
        return self.margin_net(sketch_features.detach(), photo_features.detach())

    def inner_loop(self, learner: FunctionalLearner, sketches: torch.Tensor, photos: torch.Tensor,
                   photo_ids: torch.Tensor, margin: torch.Tensor, steps: int) -> FunctionalLearner:
        """``steps`` gradient steps of the smooth-hinge triplet loss on the support: sketch i's
        positive is ``photos[i]``, the other photos (other ids) its negatives."""
        tau = float(self.options.tau)
        for _ in range(int(steps)):
            loss = triplet_loss(learner(sketches), learner(photos), photo_ids, margin, tau)
            learner.adapt(loss)
        return learner

    def regularizer_losses(self, f_sketch: torch.Tensor, f_photo: torch.Tensor, labels: torch.Tensor,
                           photo_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_D, L_C, L_S, L_ud on F's features of a task: sketch i pairs with photo i (same class
        ``labels[i]``, photo id ``photo_ids[i]``)."""
        o, out = self.options, {}
        feats = torch.cat([f_sketch, f_photo])
        if "d" in self.active_regularizers:
            # D's own loss (reaches D only) and F's bounded confusion term (reaches F only)
            terms = domain_terms(self.discriminator, f_sketch, f_photo)
            out["disc"], out["reg_d"], out["d_acc"] = terms["disc"], terms["confusion"], terms["accuracy"]
        if "c" in self.active_regularizers or "s" in self.active_regularizers:
            targets = self.class_lookup[labels].repeat(2)
            known = targets >= 0
            if bool(known.any()):
                if "c" in self.active_regularizers:
                    out["reg_c"] = F.cross_entropy(self.classifier(feats[known]), targets[known])
                if "s" in self.active_regularizers:
                    decoded = self.decoder(feats[known])
                    out["reg_s"] = 0.5 * (1.0 - F.cosine_similarity(decoded, self.semantic[targets[known]], dim=1)).mean()
        if "ud" in self.active_regularizers:
            out["reg_ud"] = triplet_loss(F.normalize(f_sketch, dim=1), F.normalize(f_photo, dim=1), photo_ids,
                                         float(o.ud_margin))
        return out

    def features(self, x: torch.Tensor, inputs: str = "images", stage: int | None = None) -> torch.Tensor:
        """F's pooled features of images, of cached pooled features (returned as they are) or of
        cached maps cut at ``stage`` (``train.cached_features``)."""
        if inputs == "images":
            return self.branch.features(x)
        return x if stage is None else self.branch.features_from(x, int(stage))

    @contextlib.contextmanager
    def _running_norm(self, images: torch.Tensor | None):
        """``feature_norm: running``: the step's images go through F once without gradient in training
        mode, which updates the BatchNorm running statistics, and the step itself normalises with
        those statistics (BatchNorm in eval mode), as evaluation and adaptation do. A task holds one
        category (or one user): normalising by its batch statistics would take out exactly what tells
        categories apart, make every feature depend on which tasks share the step, and differ from the
        statistics used at test time. ``batch``: ordinary training-mode BatchNorm (over every image of
        the step; from scratch, where running statistics are not yet meaningful, training with them
        collapsed). ``auto``: running with ``init_from``, else batch."""
        norms = [m for m in self.branch.backbone.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        if self.feature_norm != "running" or not norms or images is None:
            yield
            return
        with torch.no_grad():
            self.branch.features(images)
        for m in norms:
            m.eval()
        try:
            yield
        finally:
            for m in norms:
                m.train()

    @property
    def feature_norm(self) -> str:
        norm = self.options.feature_norm
        return norm if norm != "auto" else ("running" if self.options.init_from else "batch")

    @staticmethod
    def _task_images(task: Mapping[str, Any]) -> list[torch.Tensor]:
        sup, qry = task["support"], task["query"]
        return [sup["sketch"], sup["photo"], qry["sketch"], qry["photo"]]

    def _task_losses(self, task: Mapping[str, Any], feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of one task from F's features of its images (support sketches, support photos,
        query sketches, query photos, in that order)."""
        o = self.options
        sup, qry = task["support"], task["query"]
        k, q = len(sup["sketch"]), len(qry["sketch"])
        branch = self.branch
        fs_s, fs_p, fq_s, fq_p = feats.split([k, k, q, q])
        ids_s, ids_q = sup["photo_index"], qry["photo_index"]
        out: dict[str, torch.Tensor] = {}
        if o.mode == "supervised":
            emb = branch.head(feats)
            es_s, es_p, eq_s, eq_p = emb.split([k, k, q, q])
            main = triplet_loss(torch.cat([es_s, eq_s]), torch.cat([es_p, eq_p]), torch.cat([ids_s, ids_q]),
                                float(o.outer_margin))
            out["triplet"] = main
        else:
            margin = self.task_margin(fs_s, fs_p)
            learner = self.learner(create_graph=not o.first_order)
            # the support triplets' negatives are the other support photos; only a 1-shot task borrows
            # one photo of the task (the inner step must not push sketches away from query photos)
            extra = 1 if k == 1 else 0
            if o.inner == "head":
                sketches_in, photos_in = fs_s, torch.cat([fs_p, fq_p[:extra]])
            else:
                sketches_in, photos_in = sup["sketch"], torch.cat([sup["photo"], qry["photo"][:extra]])
            learner = self.inner_loop(learner, sketches_in, photos_in, torch.cat([ids_s, ids_q[:extra]]), margin,
                                      int(o.inner_steps))
            if o.inner == "head":
                eq_s, photos_out = learner(fq_s), learner(torch.cat([fq_p, fs_p]))
            else:
                eq_s, photos_out = learner(qry["sketch"]), learner(torch.cat([qry["photo"], sup["photo"]]))
            main = triplet_loss(eq_s, photos_out, torch.cat([ids_q, ids_s]), float(o.outer_margin))
            out["outer"] = main
            out["margin"] = margin.detach()
        regs = self.regularizer_losses(torch.cat([fs_s, fq_s]), torch.cat([fs_p, fq_p]),
                                       torch.cat([sup["label"], qry["label"]]), torch.cat([ids_s, ids_q]))
        out.update(regs)
        total = sum(self.weighted_terms(out).values())
        out["loss"] = total + out["disc"] if "disc" in out else total
        return out

    def weighted_terms(self, losses: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The terms of a task that reach F, each at the weight it has now: the main (outer or
        supervised triplet) loss and ``w_x * ramp * gate * reg_x`` for each regulariser (ramp: from 0
        to 1 over ``reg_ramp_steps``; gate: 0 while the task's main loss is at most ``reg_gate``)."""
        o = self.options
        main = "outer" if "outer" in losses else "triplet"
        out = {main: losses[main]}
        scale = min(1.0, self._step / int(o.reg_ramp_steps)) if int(o.reg_ramp_steps) > 0 else 1.0
        if o.reg_gate is not None and not float(losses[main].detach()) > float(o.reg_gate):
            scale = 0.0
        for name, value in losses.items():
            if name.startswith("reg_"):
                out[name] = float(getattr(o, "w_" + name[len("reg_"):])) * scale * value
        return out

    def domain_accuracy(self, f_sketch: torch.Tensor, f_photo: torch.Tensor) -> float | None:
        """The domain discriminator's accuracy on these features (sketch = 1), None without L_D."""
        if self.discriminator is None:
            return None
        with torch.no_grad():
            logits = self.discriminator(torch.cat([f_sketch, f_photo])).squeeze(1)
        target = torch.cat([torch.ones(len(f_sketch)), torch.zeros(len(f_photo))]).to(logits.device)
        return float(((logits > 0).float() == target).float().mean())

    def training_step(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        inputs = batch.get("inputs", "images")
        if inputs not in ("images", "features"):
            raise ConfigError(f"adaptive_fg: expected images or cached features, got {inputs!r}")
        tasks = batch["tasks"]
        if ctx is not None:
            self._step = int(ctx.global_step)
        parts = [self._task_images(t) for t in tasks]
        sizes = [sum(len(x) for x in p) for p in parts]
        images = torch.cat([x for p in parts for x in p])
        stage = tasks[0]["support"].get("feature_stage")
        with self._running_norm(images if inputs == "images" else None):
            feats = self.features(images, inputs, stage).float()
            per_task = [self._task_losses(t, f) for t, f in zip(tasks, feats.split(sizes))]
        out = {name: torch.stack([t[name] for t in per_task]).mean() for name in per_task[0]}
        if self.options.learn_alpha == "scalar":
            out["alpha"] = self.alpha.detach()
        if ctx is not None:
            self._step = int(ctx.global_step) + 1
        return out

    # ---- test time ----------------------------------------------------------------------------------------
    def adapt(self, support: Mapping[str, Any], *, strategy: str | None = None, steps: int | None = None,
              lr: float | None = None, optimizer: str | None = None) -> AdaptedEncoder:
        """An encoder adapted to a support set, without changing this method or keeping any graph.

        ``support``: ``{"sketch": (k,3,H,W), "photo": (k,3,H,W)}``, sketch i drawn from photo i, and
        optionally ``"negative"``: (n,3,H,W) more photos of the category (user) that no support
        sketch shows (needed with k = 1, where they are the only negatives). ``"photo_id"`` / ``"negative_id"``
        (int tensors) mark repeated photos, which are then never negatives of their own sketches.
        ``"inputs": "features"`` (with ``"feature_stage"``) says the slots hold cached backbone
        features or maps instead of images (:func:`sbirkit.engine.adaptation.support_batch`).

        ``strategy``: ``meta`` (the meta-learned inner loop: ``inner_steps`` steps of size alpha
        with the predicted margin), ``none``, ``finetune_head`` / ``finetune_all`` (``steps`` steps
        of ``optimizer`` (default ``finetune_optimizer``: adam or sgd) at ``lr`` on the fixed-margin
        triplet loss: the fine-tuning baselines). The result's ``record`` holds the strategy, steps, margin and time taken.
        """
        o = self.options
        strategy = strategy or self.default_strategy
        if strategy not in STRATEGIES:
            raise UsageError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
        started = time.perf_counter()
        device = next(self.parameters()).device
        inputs, stage = support.get("inputs", "images"), support.get("feature_stage")
        sketch = torch.as_tensor(support["sketch"]).to(device)
        photo = torch.as_tensor(support["photo"]).to(device)
        k = len(sketch)
        if k < 1 or len(photo) != k:
            raise UsageError(f"support: expected k >= 1 sketches and as many photos, got {len(sketch)} and {len(photo)}")
        negative = support.get("negative")
        negative = torch.as_tensor(negative).to(device) if negative is not None and len(negative) else photo[:0]
        ids = torch.as_tensor(support.get("photo_id", torch.arange(k))).to(device).long()
        neg_ids = torch.as_tensor(support.get("negative_id", torch.arange(k, k + len(negative)))).to(device).long()
        all_ids = torch.cat([ids, neg_ids])
        if strategy != "none" and not bool((all_ids[None, :] != ids[:, None]).any()):
            raise UsageError("support: a triplet needs a negative photo: with k = 1 give at least one more photo "
                             "of the category (\"negative\")")
        needs_images = strategy == "finetune_all" or (strategy == "meta" and o.inner == "all")
        if needs_images and inputs != "images":
            raise UsageError(f"strategy {strategy} (inner={o.inner}): adapting every parameter needs images, this "
                             "support set holds cached features; adapt the head (finetune_head, or inner=head)")
        was_training = self.training
        self.eval()
        record: dict[str, Any] = {"strategy": strategy, "k": k, "negatives": len(negative)}
        try:
            photos = torch.cat([photo, negative])
            with torch.no_grad():
                f_s = self.features(sketch, inputs, stage).float()
                f_p = self.features(photos, inputs, stage).float()
            if strategy == "none":
                params: dict[str, torch.Tensor] = {}
                record["steps"] = 0
            elif strategy == "meta" and o.mode == "meta":
                steps = int(o.inner_steps if steps is None else steps)
                with torch.enable_grad():
                    margin = self.task_margin(f_s, f_p[:k]).detach()
                    learner = self.learner(create_graph=False, detach=True)
                    s_in, p_in = (f_s, f_p) if o.inner == "head" else (sketch, photos)
                    learner = self.inner_loop(learner, s_in, p_in, all_ids, margin, steps)
                params = learner.detached()
                if o.inner == "head":
                    params = {f"head.{n}": p for n, p in params.items()}
                record.update(steps=steps, margin=float(margin), alpha=self._alpha_record())
            elif strategy == "meta":
                raise UsageError("strategy meta: this run was trained with method.mode=supervised (no inner loop); "
                                 "use none, finetune_head or finetune_all")
            else:
                steps = int(o.finetune_steps if steps is None else steps)
                lr = float(o.finetune_lr if lr is None else lr)
                optimizer = optimizer or o.finetune_optimizer
                if optimizer not in ("adam", "sgd"):
                    raise UsageError(f"optimizer: expected adam or sgd, got {optimizer!r}")
                params = self._finetune(strategy, f_s, f_p, sketch, photos, all_ids, steps, lr, optimizer)
                record.update(steps=steps, lr=lr, optimizer=optimizer, margin=float(o.outer_margin))
        finally:
            self.train(was_training)
        record["seconds"] = round(time.perf_counter() - started, 6)
        return AdaptedEncoder(self.encoder, params, record)

    def _alpha_record(self) -> float | None:
        o = self.options
        if o.learn_alpha == "scalar":
            return float(self.alpha.detach())
        if o.learn_alpha == "none":
            return float(o.alpha)
        return float(torch.cat([a.detach().flatten() for a in self.alphas.values()]).mean())

    def _finetune(self, strategy: str, f_s, f_p, sketch, photos, ids, steps: int, lr: float,
                  optimizer: str = "adam") -> dict[str, torch.Tensor]:
        """Plain fine-tuning on the support triplets (fixed margin): the head, or every parameter."""
        o, branch = self.options, self.branch
        if strategy == "finetune_head":
            names = [f"head.{n}" for n, _ in branch.head.named_parameters()]
        else:
            names = [n for n, p in branch.named_parameters() if p.requires_grad]
        own = dict(branch.named_parameters())
        params = {n: own[n].detach().clone().requires_grad_(True) for n in names}
        opt = torch.optim.Adam(params.values(), lr=lr) if optimizer == "adam" else torch.optim.SGD(params.values(), lr=lr)
        head_params = {n[len("head."):]: p for n, p in params.items()} if strategy == "finetune_head" else None
        with torch.enable_grad():
            for _ in range(int(steps)):
                if head_params is not None:
                    es, ep = functional_call(branch.head, head_params, (f_s,)), functional_call(branch.head, head_params, (f_p,))
                else:
                    es, ep = functional_call(branch, params, (sketch,)), functional_call(branch, params, (photos,))
                loss = triplet_loss(es, ep, ids, float(o.outer_margin))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return {n: p.detach() for n, p in params.items()}
