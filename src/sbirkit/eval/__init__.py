"""Evaluation: retrieval metrics as pure functions, a blocked engine, a stateful wrapper, tables."""

from __future__ import annotations

from .chance import expected_ap, random_ranking_scores
from .hamming import pairwise_hamming
from .metrics import (
    MAP_AT_K_CONVENTIONS,
    MAP_CONVENTIONS,
    NO_RELEVANT,
    PRECISION_CONVENTIONS,
    TIE_POLICY,
    TrueMatch,
    accuracy_at_k,
    average_precision,
    average_precision_at_k,
    class_mean,
    mean_defined,
    precision_at_k,
    true_match,
    true_match_rank,
)
from .presets import PRESETS, Preset
from .ranking import RankedRelevant, rank_relevant
from .report import format_table
from .retrieval import (
    DEFAULT_METRICS,
    DIRECTIONS,
    MetricSpec,
    RetrievalResult,
    evaluate_directions,
    evaluate_retrieval,
    parse_metric,
)
from .retrieval_metric import RetrievalMetric
from .ties import DEFAULT_TIES, TIE_POLICIES

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_TIES",
    "DIRECTIONS",
    "MAP_AT_K_CONVENTIONS",
    "MAP_CONVENTIONS",
    "NO_RELEVANT",
    "PRECISION_CONVENTIONS",
    "PRESETS",
    "TIE_POLICIES",
    "TIE_POLICY",
    "MetricSpec",
    "Preset",
    "RankedRelevant",
    "RetrievalMetric",
    "RetrievalResult",
    "TrueMatch",
    "accuracy_at_k",
    "average_precision",
    "average_precision_at_k",
    "class_mean",
    "evaluate_directions",
    "evaluate_retrieval",
    "expected_ap",
    "format_table",
    "mean_defined",
    "pairwise_hamming",
    "parse_metric",
    "precision_at_k",
    "random_ranking_scores",
    "rank_relevant",
    "true_match",
    "true_match_rank",
]
