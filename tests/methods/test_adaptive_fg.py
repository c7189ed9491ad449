"""adaptive_fg: the losses by hand, the inner step equals W - alpha * grad W, the second-order
meta-gradient reaches the margin network and alpha (and first order drops it), the baselines'
switches, test-time adaptation keeps no graph (memory flat over 1,000 adaptations), and a killed
meta-training run resumes to the uninterrupted run's weights."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from adaptive_helpers import tiny_config
from bench_scripts import load_benchmark
from torch import nn

from sbirkit.engine import StepContext, Trainer, load_run
from sbirkit.engine.sources import step_loader
from sbirkit.errors import ConfigError, UsageError
from sbirkit.methods.adaptive_fg import (
    AdaptedEncoder,
    FunctionalLearner,
    MarginNet,
    smooth_hinge,
    triplet_loss,
)

HERE = Path(__file__).resolve().parent
BASELINES = load_benchmark("adaptive_baselines").BASELINES  # the benchmark's rows (benchmarks/)


def _built(*overrides: str, run_dir: Path) -> Trainer:
    trainer = Trainer(tiny_config(*overrides), run_dir)
    torch.manual_seed(0)
    trainer._build()
    return trainer


def _first_batch(trainer: Trainer) -> dict:
    return next(iter(step_loader(trainer.source, 0, 1)))


# ---- losses ---------------------------------------------------------------------------------------------
def test_triplet_loss_and_smooth_hinge_by_hand():
    anchors = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    photos = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.0, 0.5]])
    ids = torch.tensor([0, 1, 2])
    # d = [[1, 2, .25], [2, 1, 1.25]]; anchor 0: pos 1, negs 2, .25; anchor 1: pos 1, negs 2, 1.25
    # margin .5: max(0, .5+1-2)=0, max(0, .5+1-.25)=1.25, max(0, .5+1-2)=0, max(0, .5+1-1.25)=.25 -> mean .375
    assert triplet_loss(anchors, photos, ids, 0.5).item() == pytest.approx(0.375)
    # a repeated photo id is never a negative of its own sketch: photo 2 is anchor 0's photo again
    assert triplet_loss(anchors, photos, torch.tensor([0, 1, 0]), 0.5).item() == pytest.approx((0 + 0 + 0.25) / 3)
    x = torch.tensor([-1.0, 0.0, 2.0])
    assert torch.allclose(smooth_hinge(x, 10.0), torch.log1p(torch.exp(10.0 * x)) / 10.0)
    assert smooth_hinge(torch.tensor(2.0), 100.0).item() == pytest.approx(2.0, abs=1e-6)  # the hinge as tau grows
    smooth = triplet_loss(anchors, photos, ids, 0.5, tau=10.0)
    terms = torch.tensor([0.5 + 1 - 2, 0.5 + 1 - 0.25, 0.5 + 1 - 2, 0.5 + 1 - 1.25])
    assert smooth.item() == pytest.approx(float(smooth_hinge(terms, 10.0).mean()), rel=1e-6)


# ---- the functional learner -----------------------------------------------------------------------------
def test_the_inner_step_is_w_minus_alpha_times_the_hand_computed_gradient():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0]]))
        lin.bias.fill_(0.25)
    x = torch.tensor([[2.0, 1.0]])
    learner = FunctionalLearner(lin, dict(lin.named_parameters()), {"weight": 0.1, "bias": 0.1}, create_graph=False)
    learner.adapt(learner(x).pow(2).sum())
    # loss = (w.x + b)^2 = (1 - 1 + .25)^2: dL/dw = 2 * .25 * x = [1, .5], dL/db = .5
    assert torch.allclose(learner.params["weight"], torch.tensor([[0.5 - 0.1, -1.0 - 0.05]]))
    assert torch.allclose(learner.params["bias"], torch.tensor([0.25 - 0.05]))
    assert torch.equal(lin.weight, torch.tensor([[0.5, -1.0]]))  # the module keeps its own weights
    clone = learner.clone()
    clone.adapt(clone(x).pow(2).sum())
    assert not torch.equal(clone.params["weight"], learner.params["weight"])


def test_the_methods_head_step_equals_a_plain_autograd_step(tmp_path):
    trainer = _built("method.learn_alpha=none", "method.alpha=0.3", "method.margin=fixed", run_dir=tmp_path / "r")
    method = trainer.method.eval()
    head = method.branch.head
    gen = torch.Generator().manual_seed(1)
    f_s, f_p = torch.randn(3, head.in_dim, generator=gen), torch.randn(5, head.in_dim, generator=gen)
    ids = torch.arange(5)
    learner = method.learner(create_graph=False, detach=True)
    method.inner_loop(learner, f_s, f_p, ids, torch.tensor(0.2), steps=1)
    # the same step with an ordinary module and autograd
    W, b = head.proj[1].weight.detach().clone().requires_grad_(), head.proj[1].bias.detach().clone().requires_grad_()
    loss = triplet_loss(F.normalize(f_s @ W.T + b, dim=1), F.normalize(f_p @ W.T + b, dim=1), ids, 0.2, tau=10.0)
    gW, gb = torch.autograd.grad(loss, [W, b])
    assert gW.abs().sum() > 0
    assert torch.allclose(learner.params["proj.1.weight"], W - 0.3 * gW, atol=1e-7)
    assert torch.allclose(learner.params["proj.1.bias"], b - 0.3 * gb, atol=1e-7)


# ---- the meta-gradient --------------------------------------------------------------------------------------
def _meta_grads(trainer: Trainer) -> dict[str, torch.Tensor | None]:
    method = trainer.method
    method.train_mode(trainer.train_opts)
    out = method.training_step(_first_batch(trainer), StepContext(0, trainer.device, trainer.optimizers))
    method.zero_grad(set_to_none=True)
    out["loss"].backward()
    return {n: p.grad for n, p in method.named_parameters()}


def test_the_second_order_meta_gradient_reaches_the_margin_net_and_alpha(tmp_path):
    grads = _meta_grads(_built(run_dir=tmp_path / "second"))
    margin = [g for n, g in grads.items() if n.startswith("margin_net.")]
    assert margin and all(g is not None for g in margin)
    assert sum(float(g.abs().sum()) for g in margin) > 0
    assert grads["alpha"] is not None and float(grads["alpha"].abs()) > 0
    assert float(grads["encoder.encoder.head.proj.1.weight"].abs().sum()) > 0
    # first order: the margin only acts through the inner gradient, which is then a constant
    first = _meta_grads(_built("method.first_order=true", run_dir=tmp_path / "first"))
    assert all(first[n] is None or float(first[n].abs().sum()) == 0 for n in first if n.startswith("margin_net."))
    assert first["alpha"] is not None and float(first["alpha"].abs()) > 0  # alpha scales the step itself


def test_per_parameter_alpha_and_maml_over_every_parameter(tmp_path):
    trainer = _built("method.learn_alpha=per_parameter", "method.inner=all", run_dir=tmp_path / "maml")
    method = trainer.method
    assert set(method.inner_names) == {n for n, p in method.branch.named_parameters() if p.requires_grad}
    assert any(n.startswith("backbone.") for n in method.inner_names)
    params = dict(method.branch.named_parameters())
    assert all(method.alphas[n.replace(".", "__")].shape == params[n].shape for n in method.inner_names)
    grads = _meta_grads(trainer)
    assert all(grads[f"alphas.{n.replace('.', '__')}"] is not None for n in method.inner_names)
    batch = _first_batch(trainer)["tasks"][0]["support"]
    adapted = method.adapt({"sketch": batch["sketch"], "photo": batch["photo"]})
    assert {n.split(".")[0] for n in adapted.adapted} >= {"backbone", "attention", "head"}


def test_predicted_margins_differ_between_tasks_after_meta_training(tmp_path):
    trainer = Trainer(tiny_config("train.steps=30", "train.eval_every=0", "method.tasks_per_step=4"), tmp_path / "m")
    torch.manual_seed(0)
    trainer.fit()
    method, _ = load_run(tmp_path / "m", "last")
    fresh = _built(run_dir=tmp_path / "fresh").method
    moved = [float((a - b).abs().max()) for (n, a), (_, b) in
             zip(method.margin_net.state_dict().items(), fresh.margin_net.state_dict().items())]
    assert max(moved) > 1e-3  # the margin net was meta-trained
    ds = trainer.dataset
    margins = []
    for cls in ("house", "tree", "fish", "cup"):  # three meta-train classes and a new one
        pairs = [(s, p) for s, p in ds.pairs("train" if cls != "cup" else "test") if s.class_name == cls][:3]
        from sbirkit.engine.adaptation import support_batch

        adapted = method.adapt(support_batch(ds, pairs))
        margins.append(adapted.record["margin"])
        assert 0.0 < adapted.record["margin"] < 1.0
    assert max(margins) - min(margins) > 1e-4, margins


# ---- options and baselines ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BASELINES))
def test_every_baseline_trains_a_step_with_finite_losses(name, tmp_path):
    trainer = _built(*BASELINES[name]["overrides"], run_dir=tmp_path / name)
    method = trainer.method
    method.train_mode(trainer.train_opts)
    out = method.training_step(_first_batch(trainer))
    out["loss"].backward()
    assert all(torch.isfinite(v).all() for v in out.values())
    assert ("triplet" in out) == (method.options.mode == "supervised")
    regs = {k for k in out if k.startswith("reg_")}
    assert regs == {f"reg_{r}" for r in method.active_regularizers}
    if name in ("maml", "anil", "no_adaptation"):
        assert not regs


def test_bad_options_are_one_line_config_errors(tmp_path):
    for bad, needle in (("method.inner=everything", "method.inner"), ("method.regularizers=[d, x]", "'x'"),
                        ("model.shared=false", "model.shared"), ("method.test_groups=[zebra]", "zebra"),
                        ("method.val_groups=[cup]", "in both"), ("model.hidden=32", "model.hidden")):
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[")) as err:
            _built(bad, run_dir=tmp_path / "bad")
        assert "\n" not in str(err.value)


def test_regularisers_that_need_two_classes_are_skipped_with_one(tmp_path):
    trainer = _built("method.test_groups=[tree, fish, cup, umbrella]", "method.regularizers=[d, c, s, ud]",
                     run_dir=tmp_path / "one")
    assert trainer.method.active_regularizers == ("d", "ud")
    assert trainer.method.classifier is None and trainer.method.decoder is None


# ---- test-time adaptation ------------------------------------------------------------------------------------------
def _support(trainer: Trainer) -> dict:
    task = _first_batch(trainer)["tasks"][0]
    return {"sketch": task["support"]["sketch"], "photo": task["support"]["photo"],
            "negative": task["query"]["photo"]}


def test_adapt_changes_only_the_head_keeps_the_method_and_no_graph(tmp_path):
    trainer = _built(run_dir=tmp_path / "a")
    method = trainer.method.train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    adapted = method.adapt(_support(trainer))
    assert isinstance(adapted, AdaptedEncoder) and method.training  # its mode is restored
    assert set(adapted.adapted) == {"head.proj.1.weight", "head.proj.1.bias"}
    assert all(t.grad_fn is None and not t.requires_grad for t in adapted.adapted.values())
    assert not torch.equal(adapted.adapted["head.proj.1.weight"], method.branch.head.proj[1].weight)
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    assert all(p.grad is None for p in method.parameters())
    x = _support(trainer)["sketch"]
    with torch.no_grad():
        emb = adapted.encode_sketch(x)
    assert emb.shape == (len(x), 16) and torch.allclose(emb.norm(dim=1), torch.ones(len(x)))
    record = adapted.record
    assert record["strategy"] == "meta" and record["steps"] == 1 and 0 < record["margin"] < 1
    none = method.adapt(_support(trainer), strategy="none").eval()  # BatchNorm with running statistics
    with torch.no_grad():
        assert torch.equal(none.encode_sketch(x), method.encoder.encode_sketch(x))
    with pytest.raises(UsageError, match="negative"):
        method.adapt({"sketch": x[:1], "photo": _support(trainer)["photo"][:1]})


def test_the_fine_tuning_baselines_move_what_they_say(tmp_path):
    trainer = _built(*BASELINES["finetune_head"]["overrides"], run_dir=tmp_path / "ft")
    method = trainer.method
    head = method.adapt(_support(trainer), strategy="finetune_head", steps=3, lr=0.01)
    assert set(head.adapted) == {"head.proj.1.weight", "head.proj.1.bias"} and head.record["steps"] == 3
    full = method.adapt(_support(trainer), strategy="finetune_all", steps=2, lr=0.01)
    own = dict(method.branch.named_parameters())
    changed = {n for n, p in full.adapted.items() if not torch.equal(p, own[n])}
    assert any(n.startswith("backbone.") for n in changed)
    with pytest.raises(UsageError, match="supervised"):
        method.adapt(_support(trainer), strategy="meta")
    # one SGD step of head fine-tuning is W - lr * grad W of the fixed-margin hinge on the support triplets
    support = _support(trainer)
    sgd = method.adapt(support, strategy="finetune_head", steps=1, lr=0.1, optimizer="sgd")
    method.eval()
    with torch.no_grad():
        f_s = method.branch.features(support["sketch"])
        f_p = method.branch.features(torch.cat([support["photo"], support["negative"]]))
    W = method.branch.head.proj[1].weight.detach().clone().requires_grad_()
    b = method.branch.head.proj[1].bias.detach().clone().requires_grad_()
    loss = triplet_loss(F.normalize(f_s @ W.T + b, dim=1), F.normalize(f_p @ W.T + b, dim=1), torch.arange(len(f_p)),
                        0.2)
    gW, _ = torch.autograd.grad(loss, [W, b])
    assert float(gW.abs().sum()) > 0
    assert torch.allclose(sgd.adapted["head.proj.1.weight"], W - 0.1 * gW, atol=1e-6)
    assert sgd.record["optimizer"] == "sgd"


def _live_tensors() -> int:
    import warnings

    with warnings.catch_warnings():  # isinstance() on every object wakes torch.distributed's deprecated names
        warnings.simplefilter("ignore", FutureWarning)
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_memory_stays_flat_over_a_thousand_adaptations(tmp_path):
    trainer = _built(run_dir=tmp_path / "mem")
    method = trainer.method
    support = _support(trainer)
    for _ in range(20):
        method.adapt(support)
    gc.collect()
    tensors_before = _live_tensors()
    rss_before = _rss_mb()
    for _ in range(1000):
        adapted = method.adapt(support)
    del adapted
    gc.collect()
    tensors_after = _live_tensors()
    assert tensors_after - tensors_before <= 2
    assert _rss_mb() - rss_before < 20


def test_a_predicted_margin_and_alpha_are_recorded_and_supervised_runs_default_to_none(tmp_path):
    trainer = _built(*BASELINES["no_adaptation"]["overrides"], run_dir=tmp_path / "s")
    adapted = trainer.method.adapt(_support(trainer))
    assert adapted.record["strategy"] == "none" and adapted.adapted == {}


# ---- resume after kill -9 -----------------------------------------------------------------------------------------
def _env(sleep: float = 0.0) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "ADAPTIVE_STEP_SLEEP": str(sleep)}


def _logged_step(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return max((json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.endswith("}")),
               default=0)


def test_a_killed_meta_training_run_resumes_to_identical_weights(tmp_path):
    config = tiny_config("method.name=adaptive_helpers:SlowAdaptiveFG", "train.steps=16", "train.eval_every=8",
                         "train.deterministic=true")
    sys.path.insert(0, str(HERE))
    try:
        whole = Trainer(config, tmp_path / "whole")
        whole.fit()
    finally:
        sys.path.remove(str(HERE))
    preset = tmp_path / "slow.yaml"
    # sort_keys=False: the synthetic split fractions are assigned in the order they are listed
    preset.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("run_dir", "name")}, sort_keys=False))
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "sbirkit", "train", str(preset), "--run-dir", str(run)]
    child = subprocess.Popen(cmd, env=_env(0.25), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while _logged_step(run) < 6 and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert child.poll() is None, child.stdout.read()
    child.send_signal(signal.SIGKILL)
    child.wait()
    stopped = torch.load(run / "last.pt", weights_only=True)["step"]
    assert 4 <= stopped < 16
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)  # a hang guard, not a speed target
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(run / "last.pt", weights_only=True)["model"]
    assert set(a) == set(b) and any(k.startswith("margin_net.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    meta = json.loads((run / "meta.json").read_text())
    assert [r["step"] for r in meta["resumed"]] == [stopped] and meta["source"]["kind"] == "episodes"


def test_margin_net_starts_at_its_initial_margin():
    net = MarginNet(8, 16, init=0.3)
    mu = net(torch.randn(4, 8), torch.randn(4, 8))
    assert mu.item() == pytest.approx(0.3, abs=0.05) and mu.requires_grad


def test_init_from_a_trained_triplet_sn_run(tmp_path, capsys):
    from sbirkit.engine.config import apply_overrides, load_preset

    source = tmp_path / "triplet_sn"
    config = apply_overrides(load_preset("triplet_sn-synthetic"), [
        "data.options={num_classes: 6, photos_per_class: 12, sketches_per_photo: 1, image_size: 32, seed: 0}",
        "model.shared=true", "model.embed_dim=16", "train.steps=3", "train.batch_size=8", "train.eval_every=0",
        "train.progress=false", "train.warmup_steps=0", "method.classes_per_batch=4"])
    Trainer(config, source).fit()
    theirs = torch.load(source / "best.pt", weights_only=True)["model"]
    capsys.readouterr()
    trainer = _built(f"method.init_from={source}", run_dir=tmp_path / "init")
    notice = [line for line in capsys.readouterr().err.splitlines() if "method.init_from" in line]
    assert notice == [f"notice: method.init_from is deprecated; read as train.init_from={source} with "
                      "train.init_modules=encoder (docs/adaptive_fg.md)"]
    mine = trainer.method.state_dict()
    backbone = [k for k in theirs if k.startswith("encoder.encoder.backbone.")]
    assert backbone and all(torch.equal(mine[k], theirs[k]) for k in backbone)
    # the triplet_sn head maps the 64-d pooled features to 16-d, as this one maps the attention-pooled ones
    assert torch.equal(mine["encoder.encoder.head.proj.1.weight"], theirs["encoder.encoder.head.proj.1.weight"])
    # method.init_from is read as train.init_from with init_modules encoder (engine/init_from.py): the
    # record the method was given says what came from where
    record = trainer.method.init_record
    assert record["key"] == "method.init_from" and record["modules"] == "encoder" and record["backbone"] == "tiny_cnn"
    branch = record["branches"]["sketch"]
    assert branch["from"] == "encoder.encoder." and branch["loaded"] == len([k for k in theirs if k.startswith("encoder.encoder.")])
    # triplet_sn had no attention: the head (same shapes) came along, the attention did not
    assert branch["parts"] == {"attention": "none", "backbone": "all", "head": "all"}
    assert trainer.init_record == record and trainer.method.starts_from_run
    # the same through train.init_from itself
    again = _built(f"train.init_from={source}", "train.init_modules=encoder", run_dir=tmp_path / "train")
    assert all(torch.equal(again.method.state_dict()[k], v) for k, v in mine.items())
    assert again.init_record["key"] == "train.init_from"
    with pytest.raises(ConfigError, match="backbone 'tiny_cnn'"):
        _built(f"method.init_from={source}", "model.backbone=tiny_cnn_wide", run_dir=tmp_path / "wide")
    with pytest.raises(ConfigError, match="checkpoint not found"):
        _built(f"method.init_from={tmp_path / 'nothing'}", run_dir=tmp_path / "none")


def test_running_feature_norm_uses_the_updated_running_statistics(tmp_path):
    import copy

    trainer = _built("method.feature_norm=running", run_dir=tmp_path / "run")
    method = trainer.method
    method.train_mode(trainer.train_opts)
    batch = _first_batch(trainer)
    twin = copy.deepcopy(method)
    bn = method.branch.backbone.features[1]
    before = bn.running_mean.clone()
    out = method.training_step(batch)
    assert not torch.equal(bn.running_mean, before) and bn.training  # updated once, mode restored
    images = torch.cat([x for t in batch["tasks"] for x in twin._task_images(t)])
    with torch.no_grad():
        twin.branch.features(images)  # the same statistics update, then eval-mode BatchNorm
    for m in twin.branch.backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    feats = twin.branch.features(images)
    sizes = [sum(len(x) for x in twin._task_images(t)) for t in batch["tasks"]]
    losses = [twin._task_losses(t, f)["loss"] for t, f in zip(batch["tasks"], feats.split(sizes))]
    assert torch.allclose(out["loss"], torch.stack(losses).mean(), atol=1e-6)
    assert torch.equal(bn.running_mean, twin.branch.backbone.features[1].running_mean)
    # auto: running statistics only when init_from supplies trained ones
    assert _built(run_dir=tmp_path / "auto").method.feature_norm == "batch"
