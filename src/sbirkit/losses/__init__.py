"""Metric losses for cross-modal retrieval; distance and margin are injected, terms are named."""

from .base import MetricLoss, match_masks
from .contrastive import ContrastiveLoss
from .distances import DISTANCES, CosineDistance, Distance, EuclideanDistance, create_distance, squared_distances
from .miners import MINERS, MINING, Miner, MiningSchedule, create_miner
from .triplet import CrossModalTripletLoss, bidirectional_triplet_loss, fine_grained_triplet_loss, smooth_hinge

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
    "fine_grained_triplet_loss",
    "match_masks",
    "smooth_hinge",
    "squared_distances",
]
