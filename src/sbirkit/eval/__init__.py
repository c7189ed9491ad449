"""Evaluation: retrieval metrics as pure functions, a blocked engine, a stateful wrapper, tables."""

from __future__ import annotations

from .metrics import (
    MAP_AT_K_CONVENTIONS,
    TIE_POLICY,
    accuracy_at_k,
    average_precision,
    average_precision_at_k,
    class_mean,
    mean_defined,
    precision_at_k,
    true_match_rank,
)
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

__all__ = [
    "DEFAULT_METRICS",
    "DIRECTIONS",
    "MAP_AT_K_CONVENTIONS",
    "TIE_POLICY",
    "MetricSpec",
    "RankedRelevant",
    "RetrievalMetric",
    "RetrievalResult",
    "accuracy_at_k",
    "average_precision",
    "average_precision_at_k",
    "class_mean",
    "evaluate_directions",
    "evaluate_retrieval",
    "format_table",
    "mean_defined",
    "parse_metric",
    "precision_at_k",
    "rank_relevant",
    "true_match_rank",
]
