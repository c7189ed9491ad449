"""Plain-text summaries of a dataset: what ``sbirkit data info`` prints."""

from __future__ import annotations

from typing import Any

from .dataset import ValidationReport


def format_summary(summary: dict[str, Any], report: ValidationReport | None = None, per_class: bool = True,
                   max_failures: int = 20) -> str:
    """Counts per modality, split, user and class, then pairing and any decode failures."""
    lines = [f"dataset: {summary['name']}" + (f"  root: {summary['root']}" if summary.get("root") else "")]
    mods = summary["by_modality"]
    lines.append(f"classes: {summary['classes']}  samples: {summary['samples']}  "
                 f"photos: {mods.get('photo', 0)}  sketches: {mods.get('sketch', 0)}")
    if summary["by_split"]:
        lines.append("by split:")
        for split, counts in summary["by_split"].items():
            lines.append(f"  {split:<8} photos {counts.get('photo', 0):>7}  sketches {counts.get('sketch', 0):>7}")
    if summary["pairs"]:
        lines.append("paired sketch-photo: " + ", ".join(f"{k} {v}" for k, v in summary["pairs"].items()))
    if summary["by_user"]:
        lines.append(f"users: {len(summary['by_user'])}  " +
                     ", ".join(f"{u} {n}" for u, n in sorted(summary["by_user"].items())[:12]) +
                     (" ..." if len(summary["by_user"]) > 12 else ""))
    if per_class:
        width = max([len(c) for c in summary["by_class"]] + [5])
        lines.append(f"{'class':<{width}}  {'photos':>7}  {'sketches':>8}")
        for name, counts in summary["by_class"].items():
            lines.append(f"{name:<{width}}  {counts.get('photo', 0):>7}  {counts.get('sketch', 0):>8}")
    lines.append(f"skipped at load: {summary['skipped']}")
    if report is not None:
        lines.append(f"validated: {report.checked} decoded, {len(report.failures)} failed")
        for f in report.failures[:max_failures]:
            lines.append(f"  FAILED {f.path}: {f.reason}")
        if len(report.failures) > max_failures:
            lines.append(f"  ... and {len(report.failures) - max_failures} more")
    return "\n".join(lines)
