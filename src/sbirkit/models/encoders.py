"""Encoders: images -> L2-normalised embeddings, and the two-branch sketch/photo model.

``SketchPhotoEncoder`` holds one shared (Siamese) branch or two separate ones. Sketches arrive as
3-channel black-on-white images like photos, so one backbone can serve both modalities. Each
branch normalises raw [0, 1] inputs itself (``input_norm``), so datasets need not know the model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..modality import Modality
from .backbones import create_backbone
from .base import HALF_STATS, IMAGENET_STATS, Backbone, TruncatedBackbone
from .heads import EmbeddingHead, GlobalPool, SpatialAttention, global_pool, pooled_width

INPUT_NORMS = {"imagenet": IMAGENET_STATS, "half": HALF_STATS}
Stats = tuple[tuple[float, ...], tuple[float, ...]]


class InputNorm(nn.Module):
    """``(x - mean) / std`` per channel; the statistics are config, not saved in the state dict."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, std={tuple(round(v, 4) for v in self.std.flatten().tolist())}"


def resolve_input_norm(spec: str | Stats | None, backbone: Backbone) -> Stats | None:
    """``"auto"`` (the backbone's ``input_stats``), ``"imagenet"``, ``"half"`` (mean = std = 0.5),
    ``None``/``"none"`` (raw [0, 1]) or an explicit ``(mean, std)`` pair."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return backbone.input_stats
    if isinstance(spec, str):
        if spec not in INPUT_NORMS:
            raise ValueError(
                f"input_norm: expected 'auto', 'none', {', '.join(map(repr, INPUT_NORMS))} or (mean, std); got {spec!r}"
            )
        return INPUT_NORMS[spec]
    mean, std = spec
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class Encoder(nn.Module):
    """backbone -> (spatial attention | backbone pooling) -> embedding head.

    With ``attention`` the head sees the attention-pooled map (``backbone.feature_channels``
    wide); without, the backbone's pooled vector (``backbone.num_features``).
    """

    def __init__(
        self,
        backbone: Backbone,
        head: EmbeddingHead,
        attention: SpatialAttention | None = None,
        input_norm: str | Stats | None = None,
        pool: str = "avg",
        pool_grid: int = 2,
    ):
        super().__init__()
        width = backbone.feature_channels if attention is not None else backbone.num_features
        if attention is None:
            width = pooled_width(width, pool, pool_grid)
        else:
            width = attention.pool.width(width)
        if head.in_dim != width:
            which = "feature_channels" if attention is not None else "num_features"
            raise ValueError(f"Encoder: head.in_dim: expected backbone.{which} = {width}, got {head.in_dim}")
        stats = resolve_input_norm(input_norm, backbone)
        self.input_norm = InputNorm(*stats) if stats is not None else None
        self.backbone = backbone
        self.attention = attention
        self.head = head
        # pooling without attention: the backbone's own (average) unless another mode is asked for
        self.pool = GlobalPool(pool, grid=pool_grid) if attention is None and pool != "avg" else None

    @property
    def embed_dim(self) -> int:
        return self.head.dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the head, ``(B, head.in_dim)``."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.attention is not None:
            return self.attention(self.backbone.forward_features(x))
        if self.pool is not None:
            return self.pool(self.backbone.forward_features(x))
        return self.backbone(x)

    # ---- a backbone cut at a stage: its early stages' maps come from a cache ---------------------
    def trunk(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """The map after the backbone's stages ``0 .. stage - 1`` (what a feature cache stores when
        the later stages train; ``stage == num_stages`` is the final map)."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.backbone.run_stages(x, 0, stage)

    def features_from(self, maps: torch.Tensor, stage: int) -> torch.Tensor:
        """Pooled features from :meth:`trunk` maps: the remaining stages, then attention or pooling."""
        fmap = self.backbone.run_stages(maps, stage, self.backbone.num_stages)
        if self.attention is not None:
            return self.attention(fmap)
        return self.pool(fmap) if self.pool is not None else global_pool(fmap, "avg")

    def encode_features(self, features: torch.Tensor, stage: int | None = None) -> torch.Tensor:
        """The embedding of pooled features (what :meth:`features` returns, e.g. read from a cache),
        or, with ``stage``, of :meth:`trunk` maps cut at that stage."""
        return self.head(features if stage is None else self.features_from(features, stage))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_features(self.features(x))


class SketchPhotoEncoder(nn.Module):
    """Sketch and photo encoders sharing one embedding space.

    ``shared=True``: one Siamese branch (``self.encoder``) serves both modalities. ``shared=False``:
    ``self.sketch_encoder`` and ``self.photo_encoder`` have separate parameters; a missing
    ``photo_encoder`` is a deep copy of the sketch encoder (same initial weights, then independent).
    """

    def __init__(self, sketch_encoder: Encoder, photo_encoder: Encoder | None = None, shared: bool = True):
        super().__init__()
        self.shared = bool(shared)
        if self.shared:
            if photo_encoder is not None and photo_encoder is not sketch_encoder:
                raise ValueError(
                    "SketchPhotoEncoder: photo_encoder: expected None (or the same module) when shared=True"
                )
            self.encoder = sketch_encoder
        else:
            photo_encoder = photo_encoder if photo_encoder is not None else copy.deepcopy(sketch_encoder)
            if photo_encoder is sketch_encoder:
                raise ValueError("SketchPhotoEncoder: photo_encoder: expected a separate module when shared=False")
            if photo_encoder.embed_dim != sketch_encoder.embed_dim:
                raise ValueError(
                    f"SketchPhotoEncoder: photo_encoder.embed_dim: expected {sketch_encoder.embed_dim} "
                    f"(the sketch encoder's), got {photo_encoder.embed_dim}"
                )
            self.sketch_encoder = sketch_encoder
            self.photo_encoder = photo_encoder
        self.config: dict[str, Any] = {}

    def branch(self, modality: str | Modality) -> Encoder:
        """The encoder that embeds ``modality`` ("sketch" or "photo")."""
        mod = Modality.parse(modality)
        if self.shared:
            return self.encoder
        return self.sketch_encoder if mod is Modality.SKETCH else self.photo_encoder

    @property
    def embed_dim(self) -> int:
        return self.branch(Modality.SKETCH).embed_dim

    def encode(self, x: torch.Tensor, modality: str | Modality) -> torch.Tensor:
        return self.branch(modality)(x)

    def encode_features(self, features: torch.Tensor, modality: str | Modality,
                        stage: int | None = None) -> torch.Tensor:
        """Embed backbone features (e.g. from a feature cache) with ``modality``'s head; with
        ``stage``, features are trunk maps cut there (:meth:`Encoder.trunk`)."""
        return self.branch(modality).encode_features(features, stage)

    # ---- hooks the engine calls (it never reaches into the branches itself) ----------------------
    def branches(self) -> list[Encoder]:
        """The distinct branches (one when shared)."""
        return [self.encoder] if self.shared else [self.sketch_encoder, self.photo_encoder]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every backbone parameter (for a learning rate of their own when fine-tuning)."""
        return [p for branch in self.branches() for p in branch.backbone.parameters()]

    def freeze_backbones(self, stage: int | None = None) -> None:
        """Stop training the backbones' stages before ``stage`` (no gradients): what a feature cache
        replaces. ``stage=None``: the whole backbone (heads on pooled cached features; spatial
        attention would need the map, so it is refused there)."""
        for branch in self.branches():
            if stage is None:
                if branch.attention is not None:
                    raise ValueError("train.cached_features: model.attention needs the feature map; cache maps "
                                     "with train.trainable_stages (0 = the final map, frozen backbone)")
                for p in branch.backbone.parameters():
                    p.requires_grad_(False)
                branch.backbone.eval()
                continue
            for index in range(stage):
                for module in branch.backbone.stage_modules(index):
                    for p in module.parameters():
                        p.requires_grad_(False)

    def freeze_backbone_norm(self) -> None:
        """Put the backbones' BatchNorm layers in eval mode: their running statistics are used and
        kept, not re-estimated from the training batches (``train.backbone_bn: frozen``)."""
        for branch in self.branches():
            for module in branch.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def encode_sketch(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, Modality.SKETCH)

    def encode_photo(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x, Modality.PHOTO)

    def forward(self, x: torch.Tensor, modality: str | Modality) -> torch.Tensor:
        return self.encode(x, modality)


def _build_branch(
    backbone: str,
    pretrained: bool,
    weights: str | Path | None,
    embed_dim: int,
    attention: bool,
    hidden: int | None,
    dropout: float,
    normalize: bool,
    input_norm: str | Stats | None,
    attention_mode: str,
    attention_hidden: int | None,
    pool: str,
    pool_grid: int,
    backbone_stages: int | None,
    in_chans: int,
    options: dict,
) -> Encoder:
    bb = create_backbone(backbone, pretrained=pretrained, weights=weights, in_chans=in_chans, **options)
    if backbone_stages is not None:
        bb = TruncatedBackbone(bb, backbone_stages)
    att = (SpatialAttention(bb.feature_channels, attention_hidden, attention_mode, pool, pool_grid)
           if attention else None)
    width = pooled_width(bb.feature_channels if attention else bb.num_features, pool, pool_grid)
    return Encoder(bb, EmbeddingHead(width, embed_dim, hidden, dropout, normalize), att, input_norm, pool,
                   pool_grid)


def create_encoder(
    backbone: str = "tiny_cnn",
    embed_dim: int = 128,
    shared: bool = True,
    attention: bool = False,
    pretrained: bool = False,
    weights: str | Path | None = None,
    *,
    photo_backbone: str | None = None,
    photo_pretrained: bool | None = None,
    photo_weights: str | Path | None = None,
    hidden: int | None = None,
    dropout: float = 0.0,
    normalize: bool = True,
    input_norm: str | Stats | None = "auto",
    attention_mode: str = "softmax",
    attention_hidden: int | None = None,
    pool: str = "avg",
    pool_grid: int = 2,
    backbone_stages: int | None = None,
    in_chans: int = 3,
    backbone_options: dict | None = None,
) -> SketchPhotoEncoder:
    """Build a :class:`SketchPhotoEncoder` from names (what configs and the CLI call).

    ``backbone`` serves sketches (and photos when ``shared``); with ``shared=False`` the photo
    branch uses ``photo_backbone`` / ``photo_pretrained`` / ``photo_weights``, defaulting to the
    sketch branch's settings (a separately built backbone). ``attention`` inserts
    :class:`SpatialAttention` (``attention_mode``, ``pool``) before the head. ``pool="grid"`` averages
    each cell of a ``pool_grid x pool_grid`` partition of the map and concatenates them (the head
    sees ``pool_grid**2`` times more features), keeping the layout. ``backbone_stages`` keeps only the
    backbone's first stages (:class:`~.base.TruncatedBackbone`): a mid-level map instead of the last.
    ``input_norm="auto"`` uses each backbone's expected mean/std. The resolved arguments are kept
    in ``model.config`` so a checkpoint can record them.
    """
    if shared and photo_backbone not in (None, backbone):
        raise ValueError(f"create_encoder: photo_backbone: expected None with shared=True, got {photo_backbone!r}")
    options = dict(backbone_options or {})
    common = dict(
        embed_dim=embed_dim,
        attention=attention,
        hidden=hidden,
        dropout=dropout,
        normalize=normalize,
        input_norm=input_norm,
        attention_mode=attention_mode,
        attention_hidden=attention_hidden,
        pool=pool,
        pool_grid=pool_grid,
        backbone_stages=backbone_stages,
        in_chans=in_chans,
        options=options,
    )
    sketch = _build_branch(backbone, pretrained, weights, **common)
    photo = None
    if not shared:
        photo_backbone = photo_backbone or backbone
        photo_pretrained = pretrained if photo_pretrained is None else photo_pretrained
        photo_weights = (
            photo_weights if photo_weights is not None else (weights if photo_backbone == backbone else None)
        )
        photo = _build_branch(photo_backbone, photo_pretrained, photo_weights, **common)
    model = SketchPhotoEncoder(sketch, photo, shared=shared)
    branch_args = {k: v for k, v in common.items() if k != "options"}
    model.config = dict(
        backbone=backbone,
        shared=shared,
        pretrained=pretrained,
        weights=str(weights) if weights is not None else None,
        photo_backbone=photo_backbone if not shared else None,
        photo_pretrained=photo_pretrained if not shared else None,
        photo_weights=str(photo_weights) if (not shared and photo_weights is not None) else None,
        **branch_args,
        backbone_options=options,
    )
    return model
