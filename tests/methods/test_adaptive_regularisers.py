"""adaptive_fg's regularisers and monitors in a run: the ramp and the gate by hand, D trained only by
its own loss, the collapse monitors in metrics.jsonl at every validation (the start included),
user tasks within one category, and checkpoints with the earlier linear L_C still loading."""

from __future__ import annotations

import json
import math

import pytest
import torch
from adaptive_helpers import tiny_config

from sbirkit.data import create_dataset
from sbirkit.data.samplers import EpisodicTaskSampler
from sbirkit.engine import StepContext, Trainer, load_run
from sbirkit.engine.adapt_run import protocol_for_run
from sbirkit.engine.adaptation import draw_tasks
from sbirkit.engine.sources import step_loader
from sbirkit.errors import ConfigError


def _built(*overrides: str, run_dir) -> Trainer:
    trainer = Trainer(tiny_config(*overrides), run_dir)
    torch.manual_seed(0)
    trainer._build()
    return trainer


def _step(trainer: Trainer, step: int = 0) -> dict:
    method = trainer.method
    method.train_mode(trainer.train_opts)
    batch = next(iter(step_loader(trainer.source, 0, 1)))
    return method.training_step(batch, StepContext(step, trainer.device, trainer.optimizers))


def test_the_ramp_and_the_gate_weigh_the_regularisers_by_hand(tmp_path):
    trainer = _built("method.regularizers=[d, c, s]", "method.w_d=0.2", "method.w_c=0.1", "method.w_s=0.3",
                     "method.reg_ramp_steps=10", run_dir=tmp_path / "r")
    method = trainer.method
    losses = {"outer": torch.tensor(0.05), "reg_d": torch.tensor(1.0), "reg_c": torch.tensor(2.0),
              "reg_s": torch.tensor(4.0), "disc": torch.tensor(0.7), "margin": torch.tensor(0.2)}
    for step, ramp in ((0, 0.0), (4, 0.4), (10, 1.0), (50, 1.0)):
        method._step = step
        w = method.weighted_terms(losses)
        assert set(w) == {"outer", "reg_d", "reg_c", "reg_s"}  # D's own loss and the margin never reach F
        assert w["outer"].item() == pytest.approx(0.05)
        assert [w[k].item() for k in ("reg_d", "reg_c", "reg_s")] == pytest.approx([0.2 * ramp, 0.2 * ramp, 1.2 * ramp])
    gated = _built("method.regularizers=[d]", "method.reg_gate=0.1", run_dir=tmp_path / "g").method
    assert gated.weighted_terms({"outer": torch.tensor(0.05), "reg_d": torch.tensor(1.0)})["reg_d"].item() == 0.0
    assert gated.weighted_terms({"outer": torch.tensor(0.15), "reg_d": torch.tensor(1.0)})["reg_d"].item() == \
        pytest.approx(0.1)


def test_the_step_trains_d_by_its_own_loss_and_f_by_confusion(tmp_path):
    trainer = _built("method.regularizers=[d]", "method.w_d=0.5", run_dir=tmp_path / "d")
    out = _step(trainer, step=3)
    assert {"disc", "reg_d", "d_acc", "outer"} <= set(out)
    assert 0.0 <= out["d_acc"].item() <= 1.0 and out["reg_d"].item() >= 0.0
    assert out["loss"].item() == pytest.approx(out["outer"].item() + 0.5 * out["reg_d"].item() + out["disc"].item(),
                                               rel=1e-5)
    method = trainer.method
    method.zero_grad(set_to_none=True)
    out["loss"].backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in method.discriminator.parameters())
    assert method._step == 4


def test_monitors_are_logged_at_every_validation_from_the_start(tmp_path):
    run = tmp_path / "m"
    Trainer(tiny_config("method.regularizers=[d, c]", "train.validate_at_start=true", "method.monitor_tasks=3"),
            run).fit()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in val] == [0, 6, 12]
    for r in val:
        for key in ("effective_rank", "embed_rank", "photo_spread", "feature_spread", "modality_cosine",
                    "d_accuracy", "value/outer", "grad_F/outer", "value/reg_d", "grad_F/reg_d", "weight/reg_c",
                    "value/reg_c", "grad_F/reg_c"):
            assert math.isfinite(r[f"monitor/{key}"]), key
        assert 1.0 <= r["monitor/effective_rank"] <= 24  # one direction .. the 3 x 8 probe images
        assert 0.0 <= r["monitor/d_accuracy"] <= 1.0 and 0.0 <= r["monitor/photo_spread"] <= 2.0
    # the monitors see the same fixed probe every time: the start is reproducible from the checkpoint
    assert val[0]["monitor/value/outer"] > 0
    quiet = tmp_path / "q"
    Trainer(tiny_config("method.monitor_tasks=0", "train.steps=6"), quiet).fit()
    assert not any(k.startswith("monitor/") for line in (quiet / "metrics.jsonl").read_text().splitlines()
                   for k in json.loads(line))


def test_the_probe_monitors_match_a_direct_computation(tmp_path):
    from sbirkit.engine.evaluator import Evaluator
    from sbirkit.methods.adaptive_fg.monitors import adaptive_monitors, probe_tasks
    from sbirkit.methods.collapse import effective_rank, mean_pairwise_distance

    trainer = _built("method.regularizers=[]", "method.monitor_tasks=2", run_dir=tmp_path / "p")
    method = trainer.method
    evaluator = Evaluator(method.encoder, trainer.dataset)
    values = adaptive_monitors(method, evaluator)
    tasks = probe_tasks(method, evaluator)
    assert len(tasks) == 2 and all(len(t["support"]["sketch"]) == 2 and len(t["query"]["sketch"]) == 2 for t in tasks)
    method.eval()
    with torch.no_grad():
        sketches = torch.cat([torch.cat([t["support"]["sketch"], t["query"]["sketch"]]) for t in tasks])
        photos = torch.cat([torch.cat([t["support"]["photo"], t["query"]["photo"]]) for t in tasks])
        fs, fp = method.features(sketches), method.features(photos)
    assert values["effective_rank"] == pytest.approx(effective_rank(torch.cat([fs, fp])), rel=1e-5)
    assert values["photo_spread"] == pytest.approx(mean_pairwise_distance(method.branch.head(fp)), rel=1e-5)
    assert method.training is False  # left as it was found


@pytest.fixture(scope="module")
def users():
    return create_dataset("synthetic", num_classes=3, photos_per_class=10, sketches_per_photo=2, image_size=32,
                          seed=0, splits={"train": 0.6, "test": 0.4})


def test_user_tasks_within_one_category(users):
    sampler = EpisodicTaskSampler(users, "train", group_by="user", k_support=2, k_query=2, seed=1, within_class=True)
    assert all("/" in g for g in sampler.groups)
    for t in range(20):
        task = sampler.task(t)
        user, cls = task.group.rsplit("/", 1)
        pairs = [(sampler.sketches[s], sampler.photos[p]) for s, p in task.support + task.query]
        assert {s.user_id for s, _ in pairs} == {user} and {s.class_name for s, _ in pairs} == {cls}
        assert {p.class_name for _, p in pairs} == {cls}
    tasks, _ = draw_tasks(users, "test", "user", 1, 2, groups=[users.users[0]], within_class=True)
    assert tasks and {t.group.rsplit("/", 1)[0] for t in tasks} == {users.users[0]}
    for t in tasks:  # the gallery is the task's category, not every photo of the split
        cls = t.group.rsplit("/", 1)[1]
        assert {p.class_name for p in t.gallery} == {cls}
        assert len(t.gallery) == len([p for p in users.photos("test") if p.class_name == cls])
    across, _ = draw_tasks(users, "test", "user", 1, 1, groups=[users.users[0]])
    assert len(across[0].gallery) == len(users.photos("test"))
    with pytest.raises(Exception, match="zebra"):
        draw_tasks(users, "test", "user", 1, 1, groups=["zebra"], within_class=True)


def test_a_run_trained_within_categories_is_scored_within_them(tmp_path):
    run = tmp_path / "u"
    config = tiny_config("data.options={num_classes: 4, photos_per_class: 12, sketches_per_photo: 4, image_size: 32, "
                         "seed: 0, splits: {train: 0.5, val: 0.25, test: 0.25}}", "method.group_by=user",
                         "method.within_class=true", "method.val_groups=[wobbly]", "method.test_groups=[bold]",
                         "method.regularizers=[]", "train.steps=4", "train.eval_every=4")
    Trainer(config, run).fit()
    meta = json.loads((run / "meta.json").read_text())
    assert all("/" in g for g in meta["source"]["groups"])
    assert not any(g.startswith(("wobbly/", "bold/")) for g in meta["source"]["groups"])
    protocol = protocol_for_run(run, k=2, draws=1)
    assert protocol.within_class and protocol.groups == ["bold"]


def test_a_checkpoint_with_the_earlier_linear_classifier_still_loads(tmp_path):
    run = tmp_path / "lin"
    Trainer(tiny_config("method.c_mode=linear", "method.regularizers=[c]", "train.steps=2", "train.eval_every=0"),
            run).fit()
    state = torch.load(run / "best.pt", weights_only=True)["model"]
    assert "classifier.bias" in state
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("c_mode: linear", "c_mode: cosine"))
    method, _ = load_run(run)  # the default is now cosine; the checkpoint's own classifier is rebuilt
    assert isinstance(method.classifier, torch.nn.Linear)


def test_bad_regulariser_options_are_one_line_errors(tmp_path):
    for bad, needle in (("method.c_mode=arcface", "method.c_mode"), ("method.reg_ramp_steps=-1", "reg_ramp_steps"),
                        ("method.c_scale=0", "c_scale"), ("method.monitor_tasks=-2", "monitor_tasks"),
                        ("method.d_mode=reversal", "d_mode")):
        with pytest.raises(ConfigError, match=needle) as err:
            _built(bad, run_dir=tmp_path / "bad")
        assert "\n" not in str(err.value)
