"""CrossX-DFL through the one engine: generated source, two named optimisers, a working queue and
pool, students in eval mode during estimator steps, generated validation, the baselines, teacher
errors. Tiny teachers (tests/methods/dfl_helpers.py) are trained once per module and reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sbirkit.engine import StepContext, Trainer, evaluate_run, load_run
from sbirkit.engine.runlog import read_metrics
from sbirkit.errors import SbirkitError
from sbirkit.methods.crossx_dfl import CrossXDFL, overlap_classes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dfl_helpers import DATA, teacher, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder whose teacher runs every test shares (trained by the first run in it)."""
    root = tmp_path_factory.mktemp("dfl")
    Trainer(tiny_config("train.steps=2"), root / "warmup").fit()
    return root


def _built(base: Path, name: str, *extra: str) -> Trainer:
    trainer = Trainer(tiny_config(*extra), base / name)
    torch.manual_seed(0)
    trainer._build()
    trainer.method.train_mode(trainer.train_opts)
    return trainer


def test_it_trains_through_the_engine_and_selects_on_generated_validation(base):
    trainer = Trainer(tiny_config(), base / "run")
    trainer.fit()
    m = trainer.method
    assert trainer.source.kind == "generated" and trainer.val_kind == "method"
    assert set(trainer.optimizers) == {"student", "estimator"}
    assert int(m.estimator_step_count) == 12  # 6 rounds (every 2nd step) x 2 steps
    assert int(m.pool_count) == 6 * 8 and int(m.queue_count) == 12 * 8  # every step enqueues its batch
    rows = read_metrics(base / "run" / "metrics.jsonl")
    train_rows = [r for r in rows if "loss_nce" in r]
    assert all(k in train_rows[0] for k in ("loss_proxy_kl", "loss_proxy_euclid", "est/onehot", "est/align",
                                            "est/guidance", "est/adv_kl", "est/adv_euclid", "lr/estimator"))
    vals = [r for r in rows if r.get("split") == "method"]
    assert [r["step"] for r in vals] == [6, 12]
    assert all(0.0 <= r["generated/map"] <= 1.0 and 0.0 <= r["generated/agreement"] <= 1.0 for r in vals)
    best = torch.load(base / "run" / "best.pt", weights_only=True)
    assert "method's own validation" in best["selection"]
    assert best["value"] == pytest.approx(max(r["generated/map"] for r in vals))
    # evaluation on the real test split, as for any run; load_run needs no teacher
    record = evaluate_run(base / "run", split="test", directions=["sketch2photo"], save=False)
    assert record["protocol"]["queries"]["sketch"] > 0
    assert 0.0 <= record["results"]["sketch2photo"]["metrics"]["map"] <= 1.0
    method, _ = load_run(base / "run")
    assert isinstance(method, CrossXDFL) and method._frozen == {}


def test_the_queue_takes_every_step_at_any_batch_size(base):
    m = _built(base, "queue").method
    k = m.options.queue_size  # 12
    rows = [torch.randn(n, m.students.embed_dim) for n in (5, 5, 5, 20)]
    expected_photo = torch.zeros(k, m.students.embed_dim)
    written = 0
    for i, r in enumerate(rows):
        labels = torch.full((len(r),), i)
        m._enqueue(r, -r, labels)
        for j in range(len(r)):  # a ring: row j of this batch lands at (written + j) % k
            expected_photo[(written + j) % k] = r[j]
        written += len(r)
        assert int(m.queue_count) == written
        assert torch.equal(m.queue_photo, expected_photo) and torch.equal(m.queue_sketch, -expected_photo)
    assert set(m.queue_label.tolist()) == {3}  # the 20-row batch (larger than the queue) holds all of it


def test_students_are_in_eval_mode_and_unchanged_during_estimator_steps(base):
    trainer = _built(base, "modes")
    m = trainer.method
    seen = []
    branch = m.students.branch("photo")
    handle = branch.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    before = {k: v.clone() for k, v in m.students.state_dict().items()}
    heads_before = {k: v.clone() for k, v in m.heads.state_dict().items()}
    m.synthesise(123, 8, trainer.device, ctx=StepContext(0, trainer.device, trainer.optimizers, 0))
    handle.remove()
    assert seen and not any(seen)  # the adversarial term ran the students, in eval mode
    after = m.students.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert all(torch.equal(heads_before[k], v) for k, v in m.heads.state_dict().items())
    assert all(p.requires_grad for p in m.students.parameters())  # gradients switched back on
    # a step with an empty pool runs a round first (two estimator steps, students in eval mode),
    # then the student step trains them
    seen.clear()
    handle = branch.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    m.training_step({"step": torch.tensor(1), "seed": 5, "batch_size": 8, "inputs": "generated"},
                    StepContext(1, trainer.device, trainer.optimizers, 0))
    handle.remove()
    assert seen == [False, False, True]


def test_a_meta_round_moves_the_initialisation_towards_the_adapted_estimators(base):
    trainer = _built(base, "meta", "method.estimator_lr=0.001")
    m = trainer.method
    before = [p.detach().clone() for p in m.estimators.parameters()]
    m.synthesise(7, 8, trainer.device, ctx=StepContext(0, trainer.device, trainer.optimizers, 0))
    adapted = list(m.last_adapted.parameters())
    moved = 0
    for p0, p1, q in zip(before, m.estimators.parameters(), adapted):
        step, towards = (p1.detach() - p0), (q.detach() - p0)
        big = towards.abs() > 1e-4
        # Reptile through Adam's first step: each coordinate moves by the learning rate towards θ'
        assert torch.all(torch.sign(step[big]) == torch.sign(towards[big]))
        assert torch.allclose(step[big].abs(), torch.full_like(step[big], 0.001), rtol=1e-3)
        moved += int(big.sum())
    assert moved > 100
    assert int(m.estimator_step_count) == 2


def test_the_official_schedule_trains_the_estimators_in_place(base):
    trainer = _built(base, "official", "method.meta_init=false", "method.estimator_every=1",
                     "method.estimator_steps=3", "method.pool_size=8")
    m = trainer.method
    before = [p.detach().clone() for p in m.estimators.parameters()]
    for step in range(2):
        m.training_step({"step": torch.tensor(step), "seed": 11 + step, "batch_size": 8, "inputs": "generated"},
                        StepContext(step, trainer.device, trainer.optimizers, 0))
    assert int(m.estimator_step_count) == 6
    assert int(m.pool_count) == 16  # the pool holds the last round's batch only
    assert any(not torch.equal(a, b) for a, b in zip(before, m.estimators.parameters()))


def test_teacher_features_come_from_the_same_forward_pass(base):
    m = _built(base, "hook").method
    teacher = m._frozen["photo"]
    calls = []
    handle = teacher.net.branch.register_forward_hook(lambda mod, inp, out: calls.append(out))
    x = torch.rand(3, 3, 16, 16)
    logits, features = teacher(x)
    handle.remove()
    assert len(calls) == 1  # one pass through the network
    assert torch.equal(features, calls[0])
    assert torch.allclose(logits, teacher.final(features))


def test_each_term_is_weighted_and_switchable(base):
    trainer = _built(base, "terms")
    m = trainer.method
    x = torch.rand(4, 3, 16, 16)
    s = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        total, terms = m.estimator_objective(x, s)
    assert set(terms) == {"onehot", "balance", "activation", "align", "guidance", "adv_kl", "adv_euclid", "bn"}
    expected = sum(getattr(m.options, f"w_{k}") * v for k, v in terms.items())
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(terms["bn"]) > 0  # the preset turns the DeepInversion extension on; tiny_cnn has BatchNorm
    m.options.w_align, m.options.w_adv_euclid, m.options.w_bn = 0.0, 0.0, 0.0
    with torch.no_grad():
        total, terms = m.estimator_objective(x, s)
    assert set(terms) == {"onehot", "balance", "activation", "guidance", "adv_kl"}
    assert float(total) == pytest.approx(float(sum(getattr(m.options, f"w_{k}") * v for k, v in terms.items())))


def test_overlap_classes_split_the_union_with_the_asked_share():
    union = [f"c{i}" for i in range(10)]
    photo, sketch = overlap_classes(union, 0.2, seed=0)
    shared = set(photo) & set(sketch)
    assert len(shared) == 2 and set(photo) | set(sketch) == set(union)
    assert len(photo) == 6 and len(sketch) == 6
    assert overlap_classes(union, 1.0) == (union, union)
    assert overlap_classes(union, 0.2, seed=0) == (photo, sketch)  # seeded
    assert len(set.intersection(*map(set, overlap_classes(union, 0.01)))) == 1  # at least one shared class


def test_class_overlap_trains_teachers_on_parts_of_the_union(base):
    trainer = _built(base, "overlap", "method.class_overlap=0.5")
    space = trainer.method.space
    assert len(space.targets) == 4 and len(space.shared) == 2
    photo, sketch = trainer.method._frozen["photo"], trainer.method._frozen["sketch"]
    assert len(photo.class_names) == 3 and len(sketch.class_names) == 3


@pytest.mark.parametrize("variant", ["unimodal", "gaussian_prior", "deepinversion", "alternative_data",
                                     "classifier_only", "averaging"])
def test_every_baseline_trains_and_evaluates(base, variant):
    extra = [f"method.variant={variant}"]
    if variant == "deepinversion":
        extra += ["method.w_bn=1.0", "method.inner_lr=0.05"]
    if variant == "alternative_data":
        extra += ["method.substitute={name: synthetic, options: {classes: [kite, bottle, balloon], "
                  "photos_per_class: 8, image_size: 16, seed: 0}}"]
    if variant in ("classifier_only", "averaging"):
        extra += ["train.steps=1", "train.eval_every=0"]
    trainer = Trainer(tiny_config(*extra), base / f"baseline-{variant}")
    trainer.fit()
    record = evaluate_run(base / f"baseline-{variant}", split="test", directions=["sketch2photo"], save=False)
    value = record["results"]["sketch2photo"]["metrics"]["map"]
    assert 0.0 < value <= 1.0
    if variant == "classifier_only":
        assert trainer.method.encoder.embed_dim == 4  # the shared classes
        # the teachers are in the checkpoint: evaluation equals a fresh teacher embedding
        method, _ = load_run(base / f"baseline-{variant}")
        x = torch.rand(2, 3, 16, 16)
        assert torch.allclose(method.encoder.encode_sketch(x), trainer.method.encoder.encode_sketch(x), atol=1e-6)
    if variant in ("classifier_only", "averaging"):  # nothing learns: no optimiser, no dummy parameter
        assert trainer.optimizers == {} and not any(p.requires_grad for p in trainer.method.parameters())
        saved = torch.load(base / f"baseline-{variant}" / "last.pt", weights_only=True)
        assert "anchor" not in saved["model"] and saved["optimizer"] == {} and saved["step"] == 1
    if variant == "unimodal":
        assert trainer.method.encoder.embed_dim == 4
        logged = json.dumps(read_metrics(base / f"baseline-{variant}" / "metrics.jsonl"))
        assert "est/align" not in logged and "est/guidance" not in logged and "loss_nce" not in logged


def test_a_training_free_run_saved_with_the_old_dummy_parameter_still_loads(base):
    """Runs saved before the engine accepted a method without optimiser hold ``anchor`` (a
    parameter stepped at lr 0) and its optimiser "main": they load for eval, index and serve
    (``load_run``, the fingerprint) and resume without training, embedding exactly as before."""
    import shutil

    from sbirkit.engine import model_fingerprint

    new = base / "free-new"
    Trainer(tiny_config("method.variant=classifier_only", "train.steps=1", "train.eval_every=0"), new).fit()
    old = base / "free-old"  # beside the teacher runs, which a resume loads
    shutil.copytree(new, old)
    (old / "config.yaml").write_text((new / "config.yaml").read_text().replace(str(new), str(old)))
    anchor = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.AdamW([anchor], lr=0.0)
    anchor.grad = torch.zeros(())
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(old / name, weights_only=True)
        ckpt["model"] = {"anchor": anchor.detach().clone(), **ckpt["model"]}
        if name == "last.pt":
            ckpt.update(optimizer={"main": opt.state_dict()}, scheduler={"main": sched.state_dict()},
                        scaler={"main": torch.amp.GradScaler("cpu", enabled=False).state_dict()})
        torch.save(ckpt, old / name)
    method_old, _ = load_run(old)
    method_new, _ = load_run(new)
    assert not hasattr(method_old, "anchor")
    x = torch.rand(3, 3, 16, 16)
    assert torch.equal(method_old.encoder.encode_sketch(x), method_new.encoder.encode_sketch(x))
    assert torch.equal(method_old.encoder.encode_photo(x), method_new.encoder.encode_photo(x))
    record = evaluate_run(old, split="test", directions=["sketch2photo"], save=False)
    reference = evaluate_run(new, split="test", directions=["sketch2photo"], save=False)
    assert record["results"] == reference["results"]
    assert len(model_fingerprint(old)) == 16  # what an index records (the saved tensors differ: anchor)
    resumed = Trainer(tiny_config("method.variant=classifier_only", "train.steps=1", "train.eval_every=0"), old)
    resumed.fit()  # a finished run: resumes at step 1, ignores the dummy's optimiser state, trains nothing
    assert resumed.step == 1 and resumed.optimizers == {}


def test_the_training_data_is_never_read(base, monkeypatch):
    from sbirkit.data.synthetic import SyntheticSBIR

    Trainer(tiny_config("train.steps=1"), base / "prime").fit()  # the teachers exist now

    def refuse(self, *args, **kwargs):
        raise AssertionError("a data-free run read an image of its evaluation data")

    monkeypatch.setattr(SyntheticSBIR, "load_image", refuse)
    monkeypatch.setattr(SyntheticSBIR, "read", refuse)
    trainer = Trainer(tiny_config(), base / "no-read")
    trainer.fit()
    assert trainer.summary["steps"] == 12


# ---- one-line errors -------------------------------------------------------------------------------
def _error(base: Path, name: str, *extra: str) -> str:
    with pytest.raises(SbirkitError) as info:
        Trainer(tiny_config(*extra), base / name).fit()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_teacher_of_the_wrong_modality_is_refused(base):
    message = _error(base, "wrong", f"method.photo_teacher={teacher('sketch')}")
    assert message.startswith("method.photo_teacher:") and "is a sketch classifier; expected a photo teacher" in message
    message = _error(base, "wrong2", "method.sketch_teacher={pretrained: efficientnet_lite0}")
    assert "efficientnet_lite0 is a photo classifier; expected a sketch teacher" in message


def test_a_checkpoint_that_does_not_load_is_one_line(base, tmp_path):
    bad = tmp_path / "teacher.pt"
    bad.write_bytes(b"not a checkpoint")
    names = tmp_path / "classes.txt"
    names.write_text("house\ntree\nfish\nstar\n")
    message = _error(base, "badckpt", f"method.photo_teacher={{checkpoint: {bad}, backbone: tiny_cnn_wide, "
                                      f"classes: {names}}}")
    assert message.startswith("method.photo_teacher.checkpoint:") and str(bad) in message


def test_a_user_checkpoint_teacher_loads_and_its_class_count_is_checked(base, tmp_path):
    from sbirkit.engine.context import SetupContext
    from sbirkit.methods.crossx_dfl.teachers import load_teacher, teacher_state_from_classifier

    run = next(p for p in base.iterdir() if p.name.startswith("classifier-synthetic-photo"))
    state, backbone, names = teacher_state_from_classifier(load_run(run)[0], str(run))
    path = tmp_path / "mine.pt"
    torch.save({k: v for k, v in state.items() if k not in ("class_names_utf8", "modality_code")}, path)
    good = tmp_path / "classes.txt"
    good.write_text("\n".join(names) + "\n")
    mine = load_teacher({"checkpoint": str(path), "backbone": backbone, "classes": str(good)}, "photo", "t")
    ctx = SetupContext.for_dataset(None, run_loader=load_run)  # a run: teacher is loaded through a context
    reference = load_teacher({"run": str(run)}, "photo", "t", ctx)
    x = torch.rand(4, 3, 16, 16)
    assert torch.allclose(mine(x)[0], reference(x)[0], atol=1e-5)  # the same classifier, as a plain state dict
    short = tmp_path / "short.txt"
    short.write_text("\n".join(names[:3]) + "\n")
    with pytest.raises(SbirkitError) as info:
        load_teacher({"checkpoint": str(path), "backbone": backbone, "classes": str(short)}, "photo", "method.t")
    assert str(info.value) == (f"method.t.classes: 3 class names, but {path} has 4 classifier outputs")
    # a self-describing checkpoint of the other modality is refused
    torch.save(state, tmp_path / "described.pt")
    with pytest.raises(SbirkitError, match="is a photo classifier; expected a sketch teacher"):
        load_teacher({"checkpoint": str(tmp_path / "described.pt"), "backbone": backbone}, "sketch", "method.s")


def test_a_class_map_naming_an_unknown_class_is_refused(base):
    message = _error(base, "badmap", f"method.photo_teacher={{preset: classifier-synthetic-photo, overrides: "
                                     f"[train.steps=4, train.batch_size=8, train.eval_every=4, train.log_every=2, "
                                     f"train.progress=false, 'data.options={DATA}'], "
                                     f"class_map: {{house: [house], tree: [oak]}}}}")
    assert "map.tree: 'oak' is not a class of the photo teacher" in message


def test_no_shared_class_is_refused(base):
    message = _error(base, "noshare", f"method.photo_teacher={{preset: classifier-synthetic-photo, overrides: "
                                      f"[train.steps=4, train.batch_size=8, train.eval_every=4, train.log_every=2, "
                                      f"train.progress=false, 'data.options={DATA}'], "
                                      f"class_map: {{elephant: [house], giraffe: [tree]}}}}")
    assert "share no class; give a class_map" in message


def test_a_teacher_run_with_another_config_is_not_trained_over(base):
    run = next(p for p in base.iterdir() if p.name.startswith("classifier-synthetic-photo"))
    before = (run / "best.pt").read_bytes()
    message = _error(base, "clash", f"method.photo_teacher={{preset: classifier-synthetic-photo, run: {run}, "
                                    "overrides: [train.steps=5]}")
    assert f"{run} holds a teacher trained with another config" in message
    assert (run / "best.pt").read_bytes() == before


def test_dfl_samples_writes_a_grid_of_pairs_per_class_and_overwrites_nothing(base, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from sbirkit.cli import app

    Trainer(tiny_config("train.steps=2"), base / "samples").fit()
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["dfl", "samples", str(base / "samples"), "--out", str(out), "--per-class", "2",
                                      "--n", "16"])
    assert result.exit_code == 0, result.output
    image = Image.open(out)
    side = 16 * 2  # image_size x scale
    assert image.width == 96 + 2 * (2 * side + 4)
    rows = (image.height + 4) // (side + 4)
    assert 1 <= rows <= 4 and image.height == rows * (side + 4)
    again = CliRunner().invoke(app, ["dfl", "samples", str(base / "samples"), "--out", str(out)])
    assert again.exit_code == 2 and "exists; pass --overwrite" in again.output
    Trainer(tiny_config("method.variant=classifier_only", "train.steps=1", "train.eval_every=0"),
            base / "samples-free").fit()
    free = CliRunner().invoke(app, ["dfl", "samples", str(base / "samples-free"), "--out", str(tmp_path / "x.png")])
    assert free.exit_code == 2 and "expected a crossx_dfl run that generates its data" in free.output


@pytest.mark.parametrize("variant", ["crossx_dfl", "classifier_only"])
def test_a_dry_run_trains_no_teacher_and_writes_nothing(tmp_path, variant):
    import yaml
    from typer.testing import CliRunner

    from sbirkit.cli import app

    config = tiny_config(f"method.variant={variant}")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("run_dir", "name")}))
    fresh = tmp_path / "fresh"
    result = CliRunner().invoke(app, ["train", str(preset), "--run-dir", str(fresh / "run"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would be trained into" in result.output and "# dry run: nothing trained or written" in result.output
    assert not fresh.exists()
