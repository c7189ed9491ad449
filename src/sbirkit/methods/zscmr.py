"""ZSCMR: zero-shot cross-modal retrieval with class-name semantics and cross-modal reconstruction.

U. Chaudhuri, B. Banerjee, A. Bhattacharya, M. Datcu, "A Simplified Framework for Zero-shot
Cross-Modal Sketch Data Retrieval", CVPR Workshops 2020. A photo encoder E_I and a sketch encoder
E_S (the heads of ``model``, ``shared: false``) map backbone features f(.) into one space; P maps
each seen class's name vector s_c there; C_I, C_S classify; g_is / g_si decode one modality's
embedding into the other modality's backbone feature. For a batch of (photo x, sketch y, class c):

* ``cmd``:     L_cmd = ||E_I(x) - P(s_c)||^2 + ||E_S(y) - P(s_c)||^2
* ``triplet``: L_3lt = sketch-anchored + photo-anchored cross-modal triplet hinge (margin alpha)
* ``rcs``:     L_rcs = ||g_is(E_I x) - f(y)||^2 / D_S + ||g_si(E_S y) - f(x)||^2 / D_I
* ``class``:   L_class = CE(C_I(E_I x), c) + CE(C_S(E_S y), c), cosine classifiers over seen classes

Each term is a batch mean, has its own weight (``w_<term>``, default 1) and can be switched off
(``terms``). Embeddings and P's outputs are L2-normalised, so P cannot shrink toward zero. P is a
fixed random projection by default: a learned one, even normalised, lets every class anchor slide
onto one direction under L_cmd alone, and is kept apart only by the other terms
(``projection: learned`` is an option; ``p_min_distance`` is logged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DataError
from ..losses import MINING, bidirectional_triplet_loss, create_distance
from .base import Method, SamplerSpec
from .registry import register_method

if TYPE_CHECKING:
    from ..engine.context import SetupContext, StepContext

TERMS = ("cmd", "triplet", "rcs", "class")
PROJECTIONS = ("learned", "fixed")
PAIRS = ("auto", "class", "instance")


def semantic_alignment_loss(photo: torch.Tensor, sketch: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_cmd: squared L2 distance of each embedding to its class's projected semantic vector,
    averaged over the batch, photo term + sketch term."""
    return (photo - targets).pow(2).sum(1).mean() + (sketch - targets).pow(2).sum(1).mean()


def reconstruction_loss(sketch_from_photo: torch.Tensor, sketch_features: torch.Tensor,
                        photo_from_sketch: torch.Tensor, photo_features: torch.Tensor) -> torch.Tensor:
    """L_rcs: squared L2 error of each cross-modal reconstruction divided by the feature size
    (a per-element mean, so backbones of any width weigh alike), averaged over the batch."""
    return F.mse_loss(sketch_from_photo, sketch_features) + F.mse_loss(photo_from_sketch, photo_features)


def classification_loss(photo_logits: torch.Tensor, sketch_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_class: cross-entropy of the photo classifier plus that of the sketch classifier (seen classes)."""
    return F.cross_entropy(photo_logits, targets) + F.cross_entropy(sketch_logits, targets)


class CosineClassifier(nn.Module):
    """Seen-class logits ``scale * cos(w_c, e)``: a linear classifier on unit-norm embeddings could
    only reach logits as large as its weights, which grow slowly (NormFace, Wang et al., 2017)."""

    def __init__(self, dim: int, num_classes: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_classes, dim) / dim ** 0.5)
        self.scale = float(scale)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T


class SemanticProjection(nn.Module):
    """P: class-name vectors -> the shared space, ``normalize(W s)``; W learned or fixed.

    W starts as a Gaussian random projection (which keeps the angles between name vectors
    approximately, Johnson-Lindenstrauss); the output is L2-normalised, so it cannot shrink to 0.
    """

    def __init__(self, semantic_dim: int, embed_dim: int, learned: bool = True):
        super().__init__()
        weight = torch.randn(embed_dim, semantic_dim) / embed_dim ** 0.5
        self.learned = bool(learned)
        if self.learned:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return F.normalize(vectors @ self.weight.T, dim=1)


def _decoder(embed_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if not hidden:
        return nn.Linear(embed_dim, out_dim)
    return nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


def min_pairwise_distance(points: torch.Tensor) -> torch.Tensor:
    """Smallest L2 distance between two different rows (inf with fewer than two rows)."""
    if len(points) < 2:
        return torch.tensor(float("inf"))
    d = torch.cdist(points, points)
    return d.masked_fill(torch.eye(len(points), dtype=torch.bool, device=d.device), float("inf")).min()


@register_method("zscmr")
class ZSCMR(Method):
    """ZSCMR (Chaudhuri et al., CVPRW 2020); see the module docstring for the objective."""

    name = "zscmr"

    @dataclass
    class Options:
        semantic: str = "minilm"  # a source of sbirkit.semantics.class_vectors
        semantic_options: dict = field(default_factory=dict)  # its options (path=..., dim=..., cache_dir=...)
        projection: str = "fixed"  # fixed | learned (P; see the module docstring)
        terms: Sequence[str] = TERMS  # the loss terms in use (ablations switch some off)
        w_cmd: float = 1.0
        w_triplet: float = 1.0
        w_rcs: float = 1.0
        w_class: float = 1.0
        margin: float = 0.2  # alpha of L_3lt
        distance: str = "squared_euclidean"  # of L_3lt
        mining: str = "random"  # L_3lt negatives (sbirkit.losses.miners): random | hard (closest other-class) | ...
        class_scale: float = 16.0  # C_I, C_S: cosine classifiers, logits = scale * cos
        decoder_hidden: int = 512  # hidden width of g_is and g_si (0 = linear)
        pairs: str = "auto"  # auto: instance pairs where the dataset has them, else same-class pairs
        classes_per_batch: int | None = None

    def __init__(self, encoder: nn.Module, options: Any | None = None):
        super().__init__(encoder, options)
        o = self.options
        terms = [t.strip() for t in o.terms.split(",")] if isinstance(o.terms, str) else list(o.terms)
        unknown = [t for t in terms if t not in TERMS]
        if unknown or not terms:
            raise ValueError(f"method.terms: expected a non-empty list from {', '.join(TERMS)}, got {o.terms!r}")
        self.terms = tuple(t for t in TERMS if t in terms)
        if o.projection not in PROJECTIONS:
            raise ValueError(f"method.projection: expected one of {PROJECTIONS}, got {o.projection!r}")
        if o.mining not in MINING:
            raise ValueError(f"method.mining: expected one of {MINING}, got {o.mining!r}")
        if o.pairs not in PAIRS:
            raise ValueError(f"method.pairs: expected one of {PAIRS}, got {o.pairs!r}")
        if getattr(encoder, "shared", False):
            raise ValueError("model.shared: ZSCMR needs separate photo and sketch encoders (E_I, E_S); "
                             "set model.shared=false")
        self.distance = create_distance(o.distance)
        sketch, photo = encoder.branch("sketch"), encoder.branch("photo")
        embed = int(encoder.embed_dim)
        self.decode_sketch = _decoder(embed, int(o.decoder_hidden or 0), sketch.head.in_dim)  # g_is
        self.decode_photo = _decoder(embed, int(o.decoder_hidden or 0), photo.head.in_dim)  # g_si
        self.mode = "class" if o.pairs == "auto" else o.pairs
        # built by setup() from the training classes, or by load_state_dict() from a checkpoint
        self.register_buffer("semantic", None)
        self.register_buffer("seen_classes", None)
        self.register_buffer("seen_lookup", None)
        self.projection: SemanticProjection | None = None
        self.classify_photo: CosineClassifier | None = None
        self.classify_sketch: CosineClassifier | None = None

    # ---- classes and semantics -----------------------------------------------------------------
    def _build_class_modules(self, num_classes: int, seen: Sequence[int], vectors: torch.Tensor) -> None:
        embed = int(self.encoder.embed_dim)
        self.semantic = torch.as_tensor(vectors, dtype=torch.float32).clone()
        self.seen_classes = torch.as_tensor(list(seen), dtype=torch.long)
        lookup = torch.full((int(num_classes),), -1, dtype=torch.long)
        lookup[self.seen_classes] = torch.arange(len(self.seen_classes))
        self.seen_lookup = lookup
        self.projection = SemanticProjection(self.semantic.shape[1], embed, self.options.projection == "learned")
        self.classify_photo = CosineClassifier(embed, len(self.seen_classes), self.options.class_scale)
        self.classify_sketch = CosineClassifier(embed, len(self.seen_classes), self.options.class_scale)

    def setup(self, ctx: SetupContext) -> None:
        """Seen classes = the classes of the training split; one semantic vector per seen class name
        only (unseen names are not looked up); instance pairs as positives where the split has them."""
        from ..semantics import class_vectors

        dataset, train_split = ctx.require_dataset("(sketch, photo) pairs"), ctx.train_split

        seen = sorted({s.class_index for s in dataset.select(split=train_split)})
        if len(seen) < 2:
            raise DataError(f"{dataset.name} split {train_split!r}: classes: expected at least 2 training classes "
                            f"for ZSCMR, got {len(seen)}")
        names = [dataset.classes[i] for i in seen]
        o = self.options
        table = class_vectors(names, o.semantic, **dict(o.semantic_options or {}))
        vectors = torch.from_numpy(table.vectors)
        if table.names != names or not bool(torch.isfinite(vectors).all()):
            raise DataError(f"{table.origin or o.semantic}: semantic vectors: expected one finite vector per seen "
                            f"class, missing: {', '.join(table.missing) or '(rows dropped)'}")
        self._build_class_modules(len(dataset.classes), seen, vectors)
        if o.pairs == "auto":
            self.mode = "instance" if dataset.pairs(train_split) else "class"

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Rebuild the class-dependent modules from a checkpoint's shapes, then load (no dataset needed)."""
        if self.semantic is None and "semantic" in state_dict:
            self._build_class_modules(state_dict["seen_lookup"].shape[0], state_dict["seen_classes"].tolist(),
                                      state_dict["semantic"])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def seen_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Dataset class indices -> positions among the seen classes; an unseen label is an error."""
        if self.seen_lookup is None:
            raise RuntimeError("ZSCMR: call setup(ctx) (the trainer does) before training")
        bad = (labels < 0) | (labels >= len(self.seen_lookup))
        targets = self.seen_lookup[labels.clamp(0, len(self.seen_lookup) - 1)]
        bad |= targets < 0
        if bool(bad.any()):
            raise DataError(f"batch labels: expected seen classes only, got class index {int(labels[bad][0])}, "
                            f"not among the {len(self.seen_classes)} classes ZSCMR was set up with")
        return targets

    def projected_semantics(self) -> torch.Tensor:
        """P(s_c) for every seen class, ``(num_seen, embed_dim)``, unit rows."""
        return self.projection(self.semantic)

    # ---- training ------------------------------------------------------------------------------
    def sampler_spec(self) -> SamplerSpec:
        return SamplerSpec(kind="pairs", mode=self.mode, classes_per_batch=self.options.classes_per_batch)

    def training_step(self, batch: Mapping[str, Any], ctx: StepContext | None = None) -> dict[str, torch.Tensor]:
        enc, o = self.encoder, self.options
        f_sketch = self.backbone_features(batch, "sketch").float()
        f_photo = self.backbone_features(batch, "photo").float()
        e_sketch, e_photo = enc.encode_features(f_sketch, "sketch"), enc.encode_features(f_photo, "photo")
        targets = self.seen_targets(batch["label"])
        out: dict[str, torch.Tensor] = {}
        total = e_sketch.sum() * 0.0
        if "cmd" in self.terms:
            anchors = self.projected_semantics()
            out["cmd"] = semantic_alignment_loss(e_photo, e_sketch, anchors[targets])
            total = total + o.w_cmd * out["cmd"]
            out["p_min_distance"] = min_pairwise_distance(anchors.detach())
        if "triplet" in self.terms:
            gather = ctx.gather if ctx is not None else (lambda x: x)  # the global batch under torchrun
            t = bidirectional_triplet_loss(gather(e_sketch), gather(e_photo), gather(batch["label"]), o.margin,
                                           self.distance, mining=o.mining)
            out["triplet"] = t["triplet"]
            total = total + o.w_triplet * out["triplet"]
        if "rcs" in self.terms:  # targets are the other modality's features, not trained through
            out["rcs"] = reconstruction_loss(self.decode_sketch(e_photo), f_sketch.detach(),
                                             self.decode_photo(e_sketch), f_photo.detach())
            total = total + o.w_rcs * out["rcs"]
        if "class" in self.terms:
            out["class"] = classification_loss(self.classify_photo(e_photo), self.classify_sketch(e_sketch), targets)
            total = total + o.w_class * out["class"]
        out["loss"] = total
        return out
