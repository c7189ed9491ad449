"""Issue 19's CrossX-DFL additions on tiny teachers (tests/methods/dfl_helpers.py): the students'
optimiser honours train.backbone_lr, the synthesis diagnostics and the real-reference probe (for
diagnosis only), selection of the last checkpoint, the stroke-drawing sketch estimator, the
DeepInversion estimator priors, the modality-guidance warm-up and the shared class anchors."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from sbirkit.engine import Trainer, load_run
from sbirkit.engine.runlog import read_metrics
from sbirkit.errors import SbirkitError
from sbirkit.methods.crossx_dfl import diagnostics as D
from sbirkit.methods.crossx_dfl.estimators import StrokeEstimator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dfl_helpers import tiny_config, warm_root  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return warm_root(tmp_path_factory, "dfl_signals")


@pytest.fixture(scope="module")
def reference(base) -> Path:
    """Real-looking images as folders: the synthetic data's photos and sketches (ROOT/<class>/*)."""
    from typer.testing import CliRunner

    from sbirkit.cli import app

    out = base / "reference"
    result = CliRunner().invoke(app, ["data", "synth", "--out", str(out), "--num-classes", "4", "--photos-per-class",
                                      "8", "--image-size", "16", "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_the_students_optimiser_honours_backbone_lr(base):
    trainer = Trainer(tiny_config("train.backbone_lr=1.0e-4", "train.lr=2.0e-3"), base / "groups")
    trainer._build()
    groups = trainer.optimizers["student"].optimizer.param_groups
    students = trainer.method.students
    backbone = {id(p) for p in students.backbone_parameters()}
    assert len(groups) == 2
    rest, bb = groups
    assert {id(p) for p in bb["params"]} == backbone and bb["initial_lr"] == pytest.approx(1e-4)
    assert not backbone & {id(p) for p in rest["params"]} and rest["initial_lr"] == pytest.approx(2e-3)
    heads = {id(p) for p in trainer.method.heads.parameters()}
    assert heads and heads <= {id(p) for p in rest["params"]}
    every = {id(p) for p in [*students.parameters(), *trainer.method.heads.parameters()]}
    assert {id(p) for g in groups for p in g["params"]} == every
    one = Trainer(tiny_config(), base / "groups1")
    one._build()
    assert len(one.optimizers["student"].optimizer.param_groups) == 1


def test_pair_diagnostics_on_known_distributions():
    eye = torch.eye(3)
    # 4 pairs over 3 shared classes: photo says 0,0,1,2; sketch says 0,1,1,1
    photo = eye[[0, 0, 1, 2]] * 0.8 + 0.2 / 3
    sketch = eye[[0, 1, 1, 1]] * 0.8 + 0.2 / 3
    d = D.pair_diagnostics(photo, sketch, [0, 1, 2])
    assert d["agreement"] == pytest.approx(0.5)
    assert d["agreement_chance"] == pytest.approx(0.5 * 0.25 + 0.25 * 0.75 + 0.25 * 0.0)
    assert d["confidence_photo"] == pytest.approx(0.8 + 0.2 / 3)
    # pair labels (argmax of the sum): 0, 1 (tie 0/1 -> first), 1, 1 ... counts [2, 2, 0]?
    labels = (photo + sketch).argmax(1).tolist()
    counts = torch.bincount(torch.tensor(labels), minlength=3).float()
    f = counts / 4
    entropy = -sum(float(x * math.log(x)) for x in f if x > 0)
    assert d["balance"] == pytest.approx(entropy / math.log(3))
    assert d["top_share"] == pytest.approx(float(f.max())) and d["missing"] == float((counts == 0).sum())
    assert D.class_balance(torch.tensor([5.0, 5.0, 5.0]))["balance"] == pytest.approx(1.0)


def test_the_probe_matches_scikit_learn_and_reads_chance_on_one_distribution():
    sklearn = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 6, generator=g)
    b = torch.randn(200, 6, generator=g) + torch.tensor([0.6, 0, 0, 0, 0, 0])
    ours = D.probe_accuracy(a, b, seed=1)
    # the same split and standardisation, fitted by scikit-learn (C = 1 / l2)
    g2 = torch.Generator().manual_seed(1)
    ga, gb = a.double()[torch.randperm(200, generator=g2)], b.double()[torch.randperm(200, generator=g2)]
    xtr, xte = torch.cat([ga[:100], gb[:100]]), torch.cat([ga[100:], gb[100:]])
    y = [0] * 100 + [1] * 100
    mean, std = xtr.mean(0), xtr.std(0)
    model = sklearn.LogisticRegression(C=1 / 1e-2 / 200, max_iter=1000).fit(((xtr - mean) / std).numpy(), y)
    theirs = model.score(((xte - mean) / std).numpy(), y)
    assert ours == pytest.approx(theirs, abs=0.02) and 0.55 < ours < 0.8
    assert D.probe_accuracy(a[:100], a[100:], seed=0) < 0.62  # one distribution: about chance
    assert D.probe_accuracy(a, b + 10.0) == 1.0
    assert math.isnan(D.probe_accuracy(a[:4], b[:4]))


def test_diagnostics_are_logged_and_the_reference_is_for_diagnosis_only(base, reference):
    ref = f"method.reference={{photos: {reference / 'photo'}, sketches: {reference / 'sketch'}}}"
    trainer = Trainer(tiny_config(ref, "eval.select=generated/step"), base / "diag")
    trainer.fit()
    vals = [r for r in read_metrics(base / "diag" / "metrics.jsonl") if r.get("split") == "method"]
    last = vals[-1]
    for key in ("synthesis/agreement", "synthesis/agreement_chance", "synthesis/balance", "synthesis/top_share",
                "synthesis/confidence_photo", "synthesis/mass_sketch", "synthesis/pool_balance",
                "synthesis/probe_photo", "synthesis/probe_sketch", "reference/map"):
        assert key in last and math.isfinite(last[key]), key
    assert 0.0 <= last["synthesis/agreement"] <= 1.0 and 0.0 <= last["synthesis/probe_photo"] <= 1.0
    assert 0.0 < last["reference/map"] <= 1.0
    # generated/step selects the last validated checkpoint
    assert [r["generated/step"] for r in vals] == [6.0, 12.0] and trainer.best["step"] == 12
    # the reference is never a selection signal
    with pytest.raises(SbirkitError, match="eval.select: 'reference/map' is not among the validation metrics"):
        Trainer(tiny_config(ref, "eval.select=reference/map"), base / "diag-select").fit()


def test_a_stroke_estimator_draws_lines_and_its_gradients_reach_the_strokes(base, reference):
    est = StrokeEstimator(16, 16, 1, strokes=4, curve="quadratic")
    z = torch.randn(8, 16)
    image = est(z)
    pixels = image.detach()
    assert image.shape == (8, 1, 16, 16) and 0.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0
    ink = 1 - image.detach()
    assert 0.02 < float(ink.mean()) < 0.6  # lines on paper, not a filled page
    image.mean().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in est.parameters())
    trainer = Trainer(tiny_config("method.sketch_estimator=strokes", "method.stroke_count=4"), base / "strokes")
    trainer.fit()
    m = trainer.method
    assert isinstance(m.estimators["sketch"], StrokeEstimator) and int(m.estimator_step_count) == 12
    method, _ = load_run(base / "strokes")  # the estimator is in the checkpoint
    assert isinstance(method.estimators["sketch"], StrokeEstimator)
    from typer.testing import CliRunner

    from sbirkit.cli import app

    out = base / "strokes-samples.png"
    result = CliRunner().invoke(app, ["dfl", "samples", str(base / "strokes"), "--out", str(out), "--n", "16",
                                      "--reference-sketches", str(reference / "sketch")])
    assert result.exit_code == 0, result.output
    assert "teachers' pair agreement" in result.output and "probe accuracy" in result.output
    values = json.loads(out.with_suffix(".json").read_text())
    assert 0.0 <= values["synthesis/probe_sketch"] <= 1.0 and "synthesis/probe_photo" not in values
    with pytest.raises(SbirkitError, match="method.stroke_curve: expected one of quadratic, cubic"):
        Trainer(tiny_config("method.sketch_estimator=strokes", "method.stroke_curve=spline"), base / "bad")._build()
    with pytest.raises(SbirkitError, match="method.sketch_estimator: expected one of conv, strokes"):
        Trainer(tiny_config("method.sketch_estimator=pencil"), base / "bad2")._build()


def test_estimator_priors_guidance_warmup_and_anchors(base):
    trainer = Trainer(tiny_config("method.w_bn=1.0", "method.bn_sides=[photo]", "method.bn_first_multiplier=10.0",
                                  "method.w_tv=0.5", "method.w_l2=0.5", "method.guidance_warmup=100",
                                  "method.w_anchor=1.0"), base / "priors")
    trainer.fit()
    rows = [r for r in read_metrics(base / "priors" / "metrics.jsonl") if "est/bn" in r]
    assert rows and all(math.isfinite(r[k]) for r in rows for k in ("est/bn", "est/tv", "est/l2", "loss_anchor"))
    assert all(r["est/guidance_grad"] >= 0 for r in rows)
    m = trainer.method
    assert m.heads.anchors.shape == (len(m.space.shared), m.students.embed_dim)
    # during the warm-up the guidance term is computed but weighs nothing
    photos = m.estimators["photo"](torch.randn(4, m.options.noise_dim))
    sketches = m.estimators["sketch"](torch.randn(4, m.options.noise_dim))
    total, terms = m.estimator_objective(photos, sketches)
    expected = sum(getattr(m.options, f"w_{k}") * v for k, v in terms.items() if k not in ("guidance", "guidance_grad"))
    assert float(total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5) and "guidance" in terms
    method, _ = load_run(base / "priors", "last")  # the anchors are in the checkpoint
    assert torch.equal(method.heads.anchors, m.heads.anchors.detach().cpu())
    with pytest.raises(SbirkitError, match="method.bn_sides: expected a list of photo and/or sketch"):
        Trainer(tiny_config("method.bn_sides=[both]"), base / "bad3")._build()


def test_the_agreement_filter_keeps_only_pairs_the_teachers_agree_on(base):
    trainer = Trainer(tiny_config("method.pool_filter=agree", "train.steps=6", "train.eval_every=6"),
                      base / "agree")
    trainer.fit()
    m = trainer.method
    first = m.options.estimator_batch  # the first round fills the pool whatever
    filled = int(min(int(m.pool_count), m.options.pool_size))
    assert first <= filled <= 3 * first
    shared = m.heads.shared
    later_p, later_s = m.pool_prob_photo[first:filled], m.pool_prob_sketch[first:filled]
    assert torch.equal(later_p[:, shared].argmax(1), later_s[:, shared].argmax(1))
    with pytest.raises(SbirkitError, match="method.pool_filter: expected 'none' or 'agree'"):
        Trainer(tiny_config("method.pool_filter=some"), base / "bad4")._build()
