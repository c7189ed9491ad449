"""Synthesis quality of data-free SBIR as measured quantities (``synthesis/*`` in metrics.jsonl).

Whether generated pairs can teach anything shows in a few numbers, logged at every validation of
a generating CrossX-DFL run and printed by ``sbirkit dfl samples``:

* **agreement**: how often the two teachers give a generated (photo, sketch) pair the same class
  (arg-max over the shared classes), against ``agreement_chance``, the agreement of two
  independent labellings with the same class frequencies (Σ_c f^p_c f^s_c);
* **balance**: the entropy of the pairs' class histogram over the shared classes divided by
  log |shared| (1 = every class equally often), ``top_share`` (the most frequent class's share)
  and ``missing`` (shared classes no pair has); ``pool_balance`` / ``pool_top_share`` the same
  over the students' training pool;
* **confidence**: each teacher's mean top probability over the shared classes, and ``mass``: the
  share of its softmax on the classes the class map uses at all (a 345-class sketch teacher that
  puts 0.03 of its probability on the nine mapped classes does not recognise the image);
* **probe** (only with a real reference, ``method.reference``, read for diagnosis and never for
  training): the held-out accuracy of a logistic probe separating generated from real images by
  the teacher's features (0.5 = indistinguishable; CIFAR-10 train vs test photos: 0.52), and
  ``reference/map``, the students' sketch -> photo mAP@all on the reference images.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import ConfigError, DataError


def pair_diagnostics(t_photo: torch.Tensor, t_sketch: torch.Tensor, shared: Sequence[int]) -> dict[str, float]:
    """Agreement, balance and confidence of generated pairs from the two teachers' distributions
    ``(B, T)`` over the target classes (renormalised over each teacher's covered targets)."""
    idx = torch.as_tensor(list(shared), dtype=torch.long, device=t_photo.device)
    p = t_photo.float()[:, idx]
    s = t_sketch.float()[:, idx]
    p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
    s = s / s.sum(1, keepdim=True).clamp_min(1e-12)
    k, n = len(idx), len(p)
    lp, ls = p.argmax(1), s.argmax(1)
    fp = torch.bincount(lp, minlength=k).float() / n
    fs = torch.bincount(ls, minlength=k).float() / n
    counts = torch.bincount((p + s).argmax(1), minlength=k).float()
    out = {"agreement": float((lp == ls).float().mean()), "agreement_chance": float((fp * fs).sum()),
           "confidence_photo": float(p.max(1).values.mean()), "confidence_sketch": float(s.max(1).values.mean())}
    out.update(class_balance(counts))
    return out


def class_balance(counts: torch.Tensor) -> dict[str, float]:
    """``balance`` (normalised entropy), ``top_share`` and ``missing`` of a class histogram."""
    counts = counts.float()
    total = float(counts.sum())
    if total <= 0 or len(counts) < 2:
        return {"balance": float("nan"), "top_share": float("nan"), "missing": float(len(counts))}
    f = counts / total
    entropy = -float((f[f > 0] * f[f > 0].log()).sum())
    return {"balance": entropy / math.log(len(counts)), "top_share": float(f.max()), "missing": float((counts == 0).sum())}


def probe_accuracy(generated: torch.Tensor, real: torch.Tensor, seed: int = 0, l2: float = 1e-2,
                   steps: int = 200) -> float:
    """Held-out accuracy of a logistic regression telling generated from real feature vectors.

    Both sets are cut to the same size k (a seeded draw), each split in half: the probe is
    fitted (L-BFGS, L2 penalty ``l2`` on standardised features) on one half of each and scored
    on the other, so 0.5 is chance. NaN when either set has fewer than 8 vectors."""
    k = min(len(generated), len(real))
    if k < 8:
        return float("nan")
    g = torch.Generator().manual_seed(int(seed))
    gen = generated.detach().double().cpu()[torch.randperm(len(generated), generator=g)[:k]].flatten(1)
    rea = real.detach().double().cpu()[torch.randperm(len(real), generator=g)[:k]].flatten(1)
    half = k // 2
    x_train = torch.cat([gen[:half], rea[:half]])
    y_train = torch.cat([torch.zeros(half), torch.ones(half)]).double()
    x_test = torch.cat([gen[half:], rea[half:]])
    y_test = torch.cat([torch.zeros(k - half), torch.ones(k - half)]).double()
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    w = torch.zeros(x_train.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_train @ w + b, y_train) + l2 * (w * w).sum() / 2
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float(((x_test @ w + b > 0).double() == y_test).double().mean())


# ---- the real reference (diagnosis only) -------------------------------------------------------------
def _image_files(folder: Path, what: str) -> list[Path]:
    from ...data.loaders.folder import file_kind

    if not folder.is_dir():
        raise DataError(f"{what}: {folder}: expected a folder of images (a real reference, for diagnosis only)")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and file_kind(p) == "image")
    if not files:
        raise DataError(f"{what}: {folder}: expected image files (a real reference, for diagnosis only), found none")
    return files


def read_folder_images(folder: str | os.PathLike, size: int, sketch: bool, limit: int,
                       seed: int = 0, what: str = "reference") -> tuple[torch.Tensor, list[str]]:
    """Up to ``limit`` images of a folder (searched recursively, a seeded draw), as RGB tensors in
    [0, 1] at ``size`` (sketches read as grey, lines thickened when shrunk), and each file's
    parent folder name (its class where the layout is ROOT/<class>/file). ``what`` names the
    setting in errors."""
    from ...data.dataset import pil_to_tensor, resize_image
    from ...data.loaders.folder import read_image

    files = _image_files(Path(folder), what)
    if len(files) > limit:
        order = np.random.default_rng(int(seed)).permutation(len(files))[:limit]
        files = [files[i] for i in sorted(order)]
    images = []
    for path in files:
        img = read_image(path).convert("L" if sketch else "RGB")
        x = pil_to_tensor(resize_image(img, int(size), thicken=sketch, where=str(path)))
        images.append(x.expand(3, -1, -1) if x.shape[0] == 1 else x)
    return torch.stack(images), [p.parent.name for p in files]


def load_reference(spec: Mapping[str, Any], size: int, limit: int = 512, seed: int = 0) -> dict[str, Any]:
    """The real reference images a spec names, for diagnosis only: ``{photos: DIR, sketches: DIR}``
    (folders of images, ROOT/<class>/* gives labels) or ``{data: <data section>, split: NAME}``
    (a dataset's split, e.g. the teachers' own training split). Returns ``{"photo": (N, 3, S, S),
    "sketch": ..., "photo_labels": [...], "sketch_labels": [...]}`` (either modality may be absent)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"method.reference: expected {{photos: DIR, sketches: DIR}} or {{data: {{...}}, split: "
                          f"NAME}}, got {spec!r}")
    known = {"photos", "sketches", "data", "split", "size"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"method.reference.{unknown[0]}: unknown key; expected some of {', '.join(sorted(known))}")
    limit = int(spec.get("size") or limit)
    out: dict[str, Any] = {}
    if spec.get("data") is not None:
        from ...data import SampleDataset
        from ...engine.datasets import build_dataset

        section = dict(spec["data"])
        section.setdefault("options", {})
        section["options"] = {**dict(section["options"] or {}), "image_size": int(size)}
        ds = build_dataset(section)
        split = spec.get("split") or "train"
        rng = np.random.default_rng(int(seed))
        for modality, samples in (("photo", ds.photos(split)), ("sketch", ds.sketches(split))):
            if not samples:
                continue
            if len(samples) > limit:
                samples = [samples[i] for i in sorted(rng.permutation(len(samples))[:limit])]
            items = SampleDataset(ds, samples)
            images = torch.stack([items[i]["image"] for i in range(len(items))])
            out[modality] = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
            out[f"{modality}_labels"] = [ds.classes[s.class_index] for s in samples]
        if not out:
            raise DataError(f"method.reference.data: split {split!r} of {section.get('name')} has no images")
        return out
    if not (spec.get("photos") or spec.get("sketches")):
        raise ConfigError("method.reference: expected photos: DIR and/or sketches: DIR, or data: {...}")
    for modality, key in (("photo", "photos"), ("sketch", "sketches")):
        if spec.get(key):
            out[modality], out[f"{modality}_labels"] = read_folder_images(spec[key], size, modality == "sketch",
                                                                          limit, seed, f"method.reference.{key}")
    return out


def format_diagnostics(values: Mapping[str, float]) -> str:
    """The ``synthesis/*`` and ``reference/*`` numbers as a few readable lines."""
    v = {k.split("/", 1)[-1]: x for k, x in values.items()}

    def f(key, digits=3):
        x = v.get(key)
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"

    lines = [f"teachers' pair agreement {f('agreement')} (chance {f('agreement_chance')})",
             f"class balance {f('balance')} (1 = uniform), top class share {f('top_share')}, "
             f"shared classes never generated {f('missing', 0)}",
             f"confidence photo {f('confidence_photo')} / sketch {f('confidence_sketch')}; "
             f"mass on mapped classes photo {f('mass_photo')} / sketch {f('mass_sketch')}"]
    if "pool_balance" in v:
        lines.append(f"training pool: balance {f('pool_balance')}, top class share {f('pool_top_share')}")
    if "probe_photo" in v or "probe_sketch" in v:
        lines.append(f"generated-vs-real probe accuracy photo {f('probe_photo')} / sketch {f('probe_sketch')} "
                     "(0.5 = indistinguishable)")
    if "map" in v:
        lines.append(f"students' sketch -> photo mAP@all on the reference {f('map')}")
    return "\n".join(lines)


# ---- a CrossX-DFL run's diagnostics --------------------------------------------------------------------
@torch.no_grad()
def teacher_outputs(method, photos: torch.Tensor, sketches: torch.Tensor) -> dict[str, tuple]:
    """``{modality: (distribution over the targets (B, T), mass on the mapped classes (B,), features)}``
    from the run's loaded teachers (``method._frozen``) and label space."""
    from ...losses import data_free as L
    from .estimators import rgb

    out = {}
    for m, x in (("photo", photos), ("sketch", sketches)):
        labels = method.space.teachers[m]
        logits, feats = method._frozen[m](rgb(x))
        mass = L.target_mass(logits, labels.natives.to(x.device), labels.member.to(x.device))
        covered = labels.covered.to(x.device)
        out[m] = (L.renormalise(mass, covered), (mass * covered.to(mass.dtype)).sum(1), feats)
    return out


@torch.no_grad()
def synthesis_metrics(method, photos: torch.Tensor, sketches: torch.Tensor) -> dict[str, float]:
    """``synthesis/*`` of generated pairs (in [0, 1], 8-bit like the pool) and, when the run names a
    real reference (``method.reference``), ``synthesis/probe_*`` and ``reference/map``."""
    outs = teacher_outputs(method, photos, sketches)
    values = pair_diagnostics(outs["photo"][0], outs["sketch"][0], method.space.shared)
    values["mass_photo"] = float(outs["photo"][1].mean())
    values["mass_sketch"] = float(outs["sketch"][1].mean())
    if hasattr(method, "pool_label") and int(method.pool_count) > 0:
        filled = int(min(int(method.pool_count), len(method.pool_label)))
        shared = torch.as_tensor(method.space.shared, device=method.pool_label.device)
        labels = method.pool_label[:filled]
        counts = (labels[:, None] == shared[None]).sum(0)
        pool = class_balance(counts)
        values["pool_balance"], values["pool_top_share"] = pool["balance"], pool["top_share"]
    out = {f"synthesis/{k}": v for k, v in values.items()}
    reference = method.reference_images(photos.device)
    if reference:
        for m, generated in (("photo", outs["photo"][2]), ("sketch", outs["sketch"][2])):
            if f"{m}_features" in reference:
                out[f"synthesis/probe_{m}"] = probe_accuracy(generated, reference[f"{m}_features"])
        if "photo" in reference and "sketch" in reference:
            out["reference/map"] = reference_map(method, reference)
    return out


@torch.no_grad()
def reference_map(method, reference: Mapping[str, Any]) -> float:
    """The students' sketch -> photo mAP@all on the reference images (labels: their classes)."""
    from ...eval import evaluate_retrieval

    names = sorted(set(reference["photo_labels"]) | set(reference["sketch_labels"]))
    lookup = {n: i for i, n in enumerate(names)}
    was = method.training
    method.eval()
    try:
        ep = torch.cat([method.encoder.encode_photo(x) for x in reference["photo"].split(128)])
        es = torch.cat([method.encoder.encode_sketch(x) for x in reference["sketch"].split(128)])
    finally:
        method.train(was)
    lp = torch.tensor([lookup[n] for n in reference["photo_labels"]])
    ls = torch.tensor([lookup[n] for n in reference["sketch_labels"]])
    return float(evaluate_retrieval(es.cpu(), ep.cpu(), ls, lp, metrics=["map"]).metrics["map"])
