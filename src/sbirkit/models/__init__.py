"""Models: backbones behind one factory, embedding/attention heads, sketch-photo encoders."""

from __future__ import annotations

from .backbones import BACKBONES, create_backbone, list_backbones, register_backbone
from .base import Backbone
from .doodlenet import DoodleNet, load_doodlenet
from .encoders import Encoder, InputNorm, SketchPhotoEncoder, create_encoder
from .heads import EmbeddingHead, GlobalPool, SpatialAttention, global_pool
from .weights import WeightsError, read_state_dict

__all__ = [
    "BACKBONES",
    "Backbone",
    "DoodleNet",
    "Encoder",
    "InputNorm",
    "SketchPhotoEncoder",
    "create_encoder",
    "load_doodlenet",
    "EmbeddingHead",
    "GlobalPool",
    "SpatialAttention",
    "WeightsError",
    "create_backbone",
    "global_pool",
    "list_backbones",
    "read_state_dict",
    "register_backbone",
]
