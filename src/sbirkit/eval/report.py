"""Plain-text (markdown) tables of retrieval results that name their conventions.

A number without its convention cannot be compared with a paper, so every table lists, under
the values, the definition of each metric, the distance, the averaging, the tie policy and what
happened to queries with no relevant item.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .retrieval import RetrievalResult

_HEADERS = {"map": "mAP@all", "p": "P", "acc": "Acc"}


def format_table(results: Mapping[str, RetrievalResult] | RetrievalResult, digits: int = 4) -> str:
    """Markdown table: one row per direction (or one row), one column per metric, then notes."""
    if isinstance(results, RetrievalResult):
        results = {"retrieval": results}
    if not results:
        raise ValueError("results: expected at least one RetrievalResult")
    names: list[str] = []
    for result in results.values():
        names += [n for n in result.metrics if n not in names]
    header = ["direction", "queries", "gallery", *(_pretty(n) for n in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for direction, result in results.items():
        cells = [direction, str(result.num_queries), str(result.gallery_size)]
        for n in names:
            value = result.metrics.get(n)
            cells.append("—" if value is None or math.isnan(value) else f"{value:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")

    conventions: dict[str, str] = {}
    for result in results.values():
        for n, text in result.conventions.items():
            conventions.setdefault(n, text)
    lines.append("")
    for n in names:
        lines.append(f"- {conventions[n]}")
    distances = sorted({r.distance for r in results.values()})
    averages = sorted({r.average for r in results.values()})
    lines.append(f"- distance: {', '.join(distances)}; mAP averaged per {', '.join(averages)}")
    policies = sorted({r.tie_policy for r in results.values()})
    lines.append(f"- ties: {'; '.join(policies)}")
    sampled = [f"{d} {n} ±{se:.1e}" for d, r in results.items() for n, se in r.tie_stderr.items()]
    if sampled:
        lines.append("- estimated from random tie orders (no closed form for VOC under 'expected'), standard "
                     "error: " + "; ".join(sampled))
    excluded = [d for d, r in results.items() if r.exclude_self]
    if excluded:
        lines.append(f"- query removed from its own ranking: {', '.join(excluded)}")
    undefined = [
        f"{d} {n}: {count}" for d, r in results.items() for n, count in r.undefined.items() if count
    ]
    rules = sorted({r.no_relevant for r in results.values()})
    what = {"exclude": "left out of the mean as undefined", "zero": "scored 0"}
    lines.append(
        f"- queries with no relevant/true item, {' / '.join(what[r] for r in rules)}: "
        + ("; ".join(undefined) if undefined else "none")
    )
    return "\n".join(lines)


def _pretty(name: str) -> str:
    base, _, convention = name.partition(":")
    kind, _, k = base.partition("@")
    label = _HEADERS.get(kind, kind)
    if kind == "map" and k:
        label = "mAP"
    text = f"{label}@{k}" if k else label
    return f"{text} ({convention})" if convention else text
