"""Metric losses for cross-modal retrieval; distance and margin are injected, terms are named."""

from .base import MetricLoss, match_masks
from .contrastive import ContrastiveLoss
from .distances import CosineDistance, Distance, EuclideanDistance, create_distance
from .triplet import MINING, CrossModalTripletLoss

__all__ = [
    "MINING",
    "ContrastiveLoss",
    "CosineDistance",
    "CrossModalTripletLoss",
    "Distance",
    "EuclideanDistance",
    "MetricLoss",
    "create_distance",
    "match_masks",
]
