"""Metric losses for cross-modal retrieval; distance and margin are injected, terms are named."""

from .base import MetricLoss, match_masks
from .contrastive import ContrastiveLoss
from .distances import DISTANCES, CosineDistance, Distance, EuclideanDistance, create_distance
from .miners import MINERS, MINING, Miner, MiningSchedule, create_miner
from .triplet import CrossModalTripletLoss, bidirectional_triplet_loss

__all__ = [
    "DISTANCES",
    "MINERS",
    "MINING",
    "Miner",
    "bidirectional_triplet_loss",
    "MiningSchedule",
    "create_miner",
    "ContrastiveLoss",
    "CosineDistance",
    "CrossModalTripletLoss",
    "Distance",
    "EuclideanDistance",
    "MetricLoss",
    "create_distance",
    "match_masks",
]
