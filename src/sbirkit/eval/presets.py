"""Protocol presets: the metrics, conventions and no-relevant rule one paper's released code prints.

``sbirkit eval RUN --as <name>`` scores with :data:`PRESETS`\\[name] and prints, under the usual
table, one line per direction worded as that code prints it. Each preset names the repository,
file and function it matches; docs/metrics.md says what was read and where the preset and the
code may still differ. The tie policy is the run's (``eval.ties``, default ``expected``: the
average of what the code's arbitrary tie order gives) unless ``--ties`` names another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .retrieval import RetrievalResult


@dataclass(frozen=True)
class Preset:
    """What one paper's evaluation code prints, and where that code is."""

    name: str
    paper: str
    repository: str
    source: str  # file(s) and function(s) the preset matches
    metrics: tuple[str, ...]  # sbirkit metric names, in the order the code prints them
    no_relevant: str  # how the code's mean treats a query with no relevant item
    line: str  # the code's print statement, {0}, {1}, ... standing for the metrics in order
    notes: str

    def kwargs(self) -> dict:
        """The :func:`~sbirkit.eval.evaluate_retrieval` arguments of this preset."""
        return {"metrics": list(self.metrics), "no_relevant": self.no_relevant}

    def format(self, result: RetrievalResult) -> str:
        """The code's print statement filled with this result's values."""
        values = [result.metrics.get(m, math.nan) for m in self.metrics]
        return self.line.format(*values)


PRESETS: dict[str, Preset] = {
    p.name: p for p in (
        Preset(
            name="sake",
            paper="Liu et al., Semantic-Aware Knowledge Preservation for Zero-Shot Sketch-Based Image Retrieval "
                  "(SAKE), ICCV 2019",
            repository="https://github.com/qliu24/SAKE",
            source="src/test_cse_resnet_tuberlin_zeroshot.py (also imported by src/test_cse_resnet_sketchy_"
                   "zeroshot.py): eval_AP_inner(top=None) with VOCap, eval_precision(top=100)",
            metrics=("map:voc", "p@100"),
            no_relevant="exclude",
            line="mAP@all = {0:.4f}, Prec@100 = {1:.4f}",
            notes="AP of a query with no relevant item is NaN (the division warning is raised as an error and "
                  "caught) and np.nanmean drops it; its Prec@100 is 0 and counted. The scripts print, per class, "
                  "the nanmean and nanstd of the per-query values (Prec@100 with --precision); the line here is "
                  "the mean over all queries. Scores are -euclidean distances of L2-normalised features.",
        ),
        Preset(
            name="zse",
            paper="Lin et al., Zero-Shot Everything Sketch-Based Image Retrieval, and in Explainable Style "
                  "(ZSE-SBIR), CVPR 2023",
            repository="https://github.com/buptLinfy/ZSE-SBIR",
            source="utils/ap.py: calculate(test=True) -> voc_eval(top=None), voc_eval(top=200), "
                   "precision_eval(top=100), precision_eval(top=200); printed by test.py",
            metrics=("map:voc", "map@200:sake", "p@100:zse", "p@200:zse"),
            no_relevant="exclude",
            line="map_all:{0:.4f} map_200:{1:.4f} precision_100:{2:.4f} precision_200:{3:.4f}",
            notes="Every mean is np.nanmean: a query with no relevant item (AP NaN; precision_eval's mean of an "
                  "empty slice is NaN) is left out of all four. precision_eval takes the top min(K, #relevant). "
                  "Ranks by argsort of the distances (quicksort: ties in arbitrary order); the model runs in "
                  "half precision, which makes ties common.",
        ),
        Preset(
            name="sem-pcyc",
            paper="Dutta & Akata, Semantically Tied Paired Cycle Consistency for Zero-Shot Sketch-Based Image "
                  "Retrieval (Sem-PCYC), CVPR 2019",
            repository="https://github.com/AnjanDutta/sem-pcyc",
            source="src/utils.py: apsak(k=None), apsak(k=200), precak(k=100), precak(k=200) with prec; "
                   "printed by src/test.py (validate)",
            metrics=("p@100", "map:sklearn", "p@200", "map@200:sem-pcyc"),
            no_relevant="zero",
            line="Prec@100 = {0:.4f}, mAP@all = {1:.4f}, Prec@200 = {2:.4f}, mAP@200 = {3:.4f}",
            notes="apsak runs sklearn's average_precision_score on the (top-k) list and leaves 0 for a row "
                  "without a relevant item in it, so mAP@all is tie-order independent (one threshold per tie) "
                  "and mAP@200 is normalised by the hits found. Similarity exp(-euclidean); the binary rows are "
                  "the same metrics on ITQ codes (distance='hamming').",
        ),
        Preset(
            name="doodle2search",
            paper="Dey et al., Doodle to Search: Practical Zero-Shot Sketch-Based Image Retrieval, CVPR 2019",
            repository="https://github.com/sounakdey/doodle2search",
            source="src/test.py: test(): sklearn average_precision_score per query, np.mean",
            metrics=("map:sklearn",),
            no_relevant="zero",
            line="* mAP {0:.3f}",
            notes="A query with no relevant item gets sklearn's 0 (scikit-learn 1.9 warns 'No positive class "
                  "found'). Similarity 1/(1 + euclidean). src/utils.py's prec (p@K:doodle2search) exists but its "
                  "call in test.py is commented out, so the code prints mAP only.",
        ),
        Preset(
            name="yelamarthi",
            paper="Yelamarthi et al., A Zero-Shot Framework for Sketch Based Image Retrieval, ECCV 2018",
            repository="https://github.com/ShivaKrishnaM/ZS-SBIR",
            source="trainCVAE_pre.py: find_precision() with mapChange() over the 200 nearest neighbours",
            metrics=("p@200", "map@200:yelamarthi"),
            no_relevant="zero",
            line="The mean precision@200 for test sketches is {0}\nThe mAP for test_sketches is {1}",
            notes="mAP = mean over the 200 neighbours of rel_i * P@i, i.e. divided by 200; a query with no "
                  "relevant item scores 0. Neighbours from sklearn NearestNeighbors (cosine, brute force).",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a one-line ValueError naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"--as: expected one of {', '.join(PRESETS)}, got {name!r}") from None


def format_preset(name: str, results: Mapping[str, RetrievalResult] | RetrievalResult) -> str:
    """Each direction's values as the preset's code prints them, under a line naming the code."""
    preset = get_preset(name)
    if isinstance(results, RetrievalResult):
        results = {"retrieval": results}
    lines = [f"as {preset.repository} prints it ({preset.source}):"]
    for direction, result in results.items():
        body = preset.format(result).replace("\n", "\n    ")
        lines.append(f"  {direction}:\n    {body}" if len(results) > 1 or "\n" in body else f"  {body}")
    return "\n".join(lines)
