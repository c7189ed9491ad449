"""The collapse monitors of an ``adaptive_fg`` run (docs/adaptive_fg.md, "Collapse monitors").

At each validation the method's feature extractor F runs (BatchNorm with its running statistics,
as at test time) over a fixed *probe*: ``monitor_tasks`` meta-training tasks of the training split,
drawn once with a seed of their own (the same tasks at every validation of every run with that
seed). On them :func:`adaptive_monitors` records:

* ``effective_rank`` of F's features (sketches and photos together) and ``embed_rank`` of the
  head's embeddings (:func:`~sbirkit.methods.collapse.effective_rank`);
* ``photo_spread``: the mean pairwise distance of the photos' unit embeddings, and
  ``feature_spread``: the same for F's L2-normalised photo features;
* ``modality_cosine``: the cosine between the mean sketch and mean photo feature of F;
* ``d_accuracy``: the domain discriminator's accuracy (sketch vs photo) when L_D is on;
* ``value/<term>``, ``weight/<term>`` and ``grad_F/<term>``: each loss term of the step (the outer
  or supervised triplet loss and each regulariser), unweighted; the weight the current step gives
  it; and the norm of the weighted term's gradient on F's trainable parameters (the backbone and
  attention, not the head): what the term actually asks of F.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..collapse import effective_rank, gradient_norms, mean_feature_cosine, mean_pairwise_distance

# ``method`` below is an ``AdaptiveFG``: it is passed in, never imported, so this module stays a leaf
# that adaptive_fg imports (tests/test_import_direction.py forbids the circle).
AdaptiveFG = Any

PROBE_SEED = 0x9B0BE


def probe_tasks(method: AdaptiveFG, evaluator: Any) -> list[dict[str, Any]]:
    """``monitor_tasks`` meta-training tasks as training-step task dicts (images or cached features)."""
    from ...engine.adaptation import draw_tasks, support_batch

    o = method.options
    n = int(o.monitor_tasks)
    dataset = evaluator.dataset
    view = method._training_view(dataset)
    groups = list(method.groups.get("train") or [])
    within = bool(o.within_class) and o.group_by == "user"
    per_group = max(1, math.ceil(n / max(1, len(groups))))
    tasks, _ = draw_tasks(view, method.train_split, o.group_by, int(o.k_support), per_group, groups=groups,
                          max_queries=int(o.k_query), seed=PROBE_SEED, within_class=within)
    # spread the probe over groups: draw 0 of every group first, then draw 1, ...
    tasks = sorted(tasks, key=lambda t: (t.draw, t.group))
    if len(tasks) > n:
        step = len(tasks) / n
        tasks = [tasks[int(i * step)] for i in range(n)]
    out = []
    for t in tasks:
        pairs = [*t.support, *t.queries]
        store = evaluator.features
        batch = support_batch(dataset, pairs, store=store, encoder=evaluator.encoder if store is not None else None)
        k = len(t.support)
        labels = torch.tensor([s.class_index for s, _ in pairs], dtype=torch.long)
        ids = batch["photo_id"]

        def side(lo: int, hi: int, batch=batch, ids=ids, labels=labels) -> dict[str, Any]:
            return {"sketch": batch["sketch"][lo:hi], "photo": batch["photo"][lo:hi], "photo_index": ids[lo:hi],
                    "label": labels[lo:hi]}

        out.append({"group": t.group, "support": side(0, k), "query": side(k, len(pairs)),
                    "inputs": batch["inputs"], "feature_stage": batch.get("feature_stage")})
    return out


def f_parameters(method: AdaptiveFG) -> list[torch.nn.Parameter]:
    """F's trainable parameters: the shared branch without its embedding head."""
    return [p for n, p in method.branch.named_parameters() if not n.startswith("head.") and p.requires_grad]


def adaptive_monitors(method: AdaptiveFG, evaluator: Any, split: str | None = None) -> dict[str, float]:
    """The monitors of the module docstring, as ``{name: value}`` (without the ``monitor/`` prefix)."""
    if method._probe is None:
        method._probe = probe_tasks(method, evaluator)
    tasks = method._probe
    if not tasks:
        return {}
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    try:
        with torch.enable_grad():
            feats, terms = [], {}
            sketch_f, photo_f, photo_e = [], [], []
            for task in tasks:
                task = _to(task, device)
                sup, qry = task["support"], task["query"]
                images = torch.cat([sup["sketch"], sup["photo"], qry["sketch"], qry["photo"]])
                f = method.features(images, task["inputs"], task["feature_stage"]).float()
                k, q = len(sup["sketch"]), len(qry["sketch"])
                fs_s, fs_p, fq_s, fq_p = f.split([k, k, q, q])
                sketch_f += [fs_s, fq_s]
                photo_f += [fs_p, fq_p]
                photo_e.append(method.branch.head(torch.cat([fs_p, fq_p])))
                feats.append(f)
                losses = method._task_losses(task, f)
                for name, value in method.weighted_terms(losses).items():
                    terms.setdefault(name, []).append((losses[name], value))
            raw = {name: float(torch.stack([r for r, _ in v]).mean().detach()) for name, v in terms.items()}
            mean_terms = {name: torch.stack([w for _, w in v]).mean() for name, v in terms.items()}
            grads = gradient_norms(mean_terms, f_parameters(method))
        fs, fp = torch.cat(sketch_f).detach(), torch.cat(photo_f).detach()
        ep = torch.cat(photo_e).detach()
        out: dict[str, float] = {
            "effective_rank": effective_rank(torch.cat([fs, fp])),
            "embed_rank": effective_rank(torch.cat([method.branch.head(fs).detach(), ep])),
            "photo_spread": mean_pairwise_distance(ep),
            "feature_spread": mean_pairwise_distance(F.normalize(fp, dim=1)),
            "modality_cosine": mean_feature_cosine(fs, fp),
        }
        accuracy = method.domain_accuracy(fs, fp)
        if accuracy is not None:
            out["d_accuracy"] = accuracy
        for name, value in mean_terms.items():
            out[f"value/{name}"] = raw[name]
            out[f"weight/{name}"] = float(value.detach()) / raw[name] if raw[name] else float("nan")
            out[f"grad_F/{name}"] = grads[name]
        return out
    finally:
        method.train(was_training)


def _to(task: dict[str, Any], device: torch.device) -> dict[str, Any]:
    def move(side):
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in side.items()}

    return {**task, "support": move(task["support"]), "query": move(task["query"])}
