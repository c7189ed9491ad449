"""Metric names and the one-line definitions reports print beside each number.

``map`` / ``map:<convention>`` (mAP@all: ``none``, ``voc``, ``sklearn``), ``map@K`` /
``map@K:<convention>`` (``sake``, ``yelamarthi``, ``standard``, ``sem-pcyc``), ``p@K`` /
``p@K:<convention>`` (``standard``, ``zse``, ``doodle2search``) and ``acc@K`` (fine-grained,
needs instance ids). docs/metrics.md maps each paper's code to these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import metrics as M

_METRIC = re.compile(
    r"^(?:(map)(?::([\w-]+))?|(map)@(\d+)(?::([\w-]+))?|(p)@(\d+)(?::([\w-]+))?|(acc)@(\d+))$"
)


@dataclass(frozen=True)
class MetricSpec:
    """One parsed metric name: its kind (map, map@k, p@k, acc@k), K and convention."""

    name: str
    kind: str
    k: int | None = None
    convention: str | None = None


def _known_convention(name: str, kind: str, convention: str, known) -> str:
    if convention not in known:
        raise ValueError(f"metrics: {name!r} names {kind} convention {convention!r}; expected one of {tuple(known)}")
    return convention


def parse_metric(name: str, *, interpolation: str = "none", map_convention: str = "sake") -> MetricSpec:
    """Parse ``map``, ``map:voc``, ``map@200``, ``map@200:yelamarthi``, ``p@100:zse`` or ``acc@1``."""
    m = _METRIC.match(name.strip().lower())
    if m is None:
        raise ValueError(
            f"metrics: unknown metric {name!r}; expected map, map:<convention>, map@K, map@K:<convention>, "
            "p@K, p@K:<convention> or acc@K"
        )
    if m.group(1):
        convention = _known_convention(name, "mAP@all", m.group(2) or interpolation, M.MAP_CONVENTIONS)
        return MetricSpec(name, "map", None, convention)
    if m.group(3):
        convention = _known_convention(name, "mAP@K", m.group(5) or map_convention, M.MAP_AT_K_CONVENTIONS)
        return MetricSpec(name, "map@k", _positive_k(name, m.group(4)), convention)
    if m.group(6):
        convention = _known_convention(name, "P@K", m.group(8) or "standard", M.PRECISION_CONVENTIONS)
        return MetricSpec(name, "p@k", _positive_k(name, m.group(7)), convention)
    return MetricSpec(name, "acc@k", _positive_k(name, m.group(10)))


def describe_metric(spec: MetricSpec) -> str:
    """One line naming the metric's definition and convention, for reports."""
    if spec.kind == "map":
        if spec.convention == "none":
            return "mAP@all: non-interpolated AP over the full ranking (sum of P@rank over relevant items / #relevant)"
        return f"mAP@all ({spec.convention}): {M.MAP_CONVENTIONS[spec.convention]}"
    if spec.kind == "map@k":
        return f"mAP@{spec.k} ({spec.convention}): {M.MAP_AT_K_CONVENTIONS[spec.convention]}"
    if spec.kind == "p@k":
        text = M.PRECISION_CONVENTIONS[spec.convention].replace("(K", f"({spec.k}").replace("min(K,", f"min({spec.k},")
        label = f"P@{spec.k}" if spec.convention == "standard" else f"P@{spec.k} ({spec.convention})"
        return f"{label}: {text}"
    return f"Acc@{spec.k}: true instance ranked <= {spec.k} (fine-grained)"


def _positive_k(name: str, digits: str) -> int:
    k = int(digits)
    if k < 1:
        raise ValueError(f"metrics: {name!r} needs K >= 1")
    return k
