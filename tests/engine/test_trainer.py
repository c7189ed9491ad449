"""The training loop: run-folder contents, loss going down, validation-only model selection,
load_run round trip, evaluate_run, and resume checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny_pairs  # noqa: F401  (registers the tiny_pairs dataset)
import torch
import yaml
from runs_helper import tiny_config

from sbirkit.engine import (
    CheckpointError,
    ConfigError,
    Trainer,
    embedding,
    evaluate_run,
    inference,
    load_run,
    model_fingerprint,
    train,
)
from sbirkit.engine.runlog import read_metrics


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One short run, with every sample that validation embeds recorded."""
    run_dir = tmp_path_factory.mktemp("runs") / "short"
    seen: list = []
    original = embedding.embed_samples  # what the evaluator calls

    def recording(encoder, dataset, samples, *args, **kwargs):
        seen.extend(samples)
        return original(encoder, dataset, samples, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embedding, "embed_samples", recording)
        trainer = Trainer(tiny_config("train.steps=40", "train.eval_every=10", "method.mining=batch_hard"), run_dir)
        trainer.fit()
    return trainer, run_dir, seen


def test_run_dir_holds_every_file(finished):
    trainer, run_dir, _ = finished
    for name in ("config.yaml", "meta.json", "metrics.jsonl", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config == trainer.config and config["run_dir"] == str(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["device"] == "cpu" and meta["started"]
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]
    assert set(meta["versions"]) >= {"torch", "torchvision", "timm", "numpy", "sbirkit", "python"}
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["step"] == 40 and {"optimizer", "scheduler", "scaler", "rng", "best"} <= set(last)
    state = trainer.method.state_dict()
    assert set(last["model"]) == set(state)
    assert all(torch.equal(last["model"][k], state[k]) for k in state)


def test_loss_goes_down_and_log_has_rates(finished):
    _, run_dir, _ = finished
    records = read_metrics(run_dir / "metrics.jsonl")
    train_recs = [r for r in records if "loss" in r]
    assert [r["step"] for r in train_recs] == list(range(2, 41, 2))
    assert all(r["samples_per_s"] > 0 and r["lr"] > 0 for r in train_recs)
    first = np.mean([r["loss"] for r in train_recs[:3]])
    last = np.mean([r["loss"] for r in train_recs[-3:]])
    assert last < 0.6 * first, (first, last)
    # warmup then cosine: lr peaks at step 3 and ends low
    lrs = [r["lr"] for r in train_recs]
    assert max(lrs) == pytest.approx(0.003, rel=0.01) and lrs[-1] < 0.1 * max(lrs)


def test_best_checkpoint_is_the_best_validation_step(finished):
    _, run_dir, seen = finished
    records = read_metrics(run_dir / "metrics.jsonl")
    vals = [r for r in records if r.get("split") == "val"]
    assert [r["step"] for r in vals] == [10, 20, 30, 40]
    best = torch.load(run_dir / "best.pt", weights_only=True)
    values = [r["sketch2photo/map"] for r in vals]
    assert best["value"] == pytest.approx(max(values))
    assert best["step"] == vals[int(np.argmax(values))]["step"]  # first occurrence of the max
    assert best["metric"] == "sketch2photo/map" and "val" in best["selection"]
    # model selection only ever embedded validation samples
    assert seen and {s.split for s in seen} == {"val"}


def test_load_run_round_trip_gives_identical_embeddings(finished):
    trainer, run_dir, _ = finished
    method, config = load_run(run_dir, "last")
    assert config["method"]["name"] == "triplet"
    ds = trainer.dataset
    for samples in (ds.sketches("test"), ds.photos("test")):
        a = inference.embed_samples(trainer.method.encoder, ds, samples, batch_size=5)
        b = inference.embed_samples(method.encoder, ds, samples, batch_size=5)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
        assert a[0].dtype == np.float32 and a[0].shape == (len(samples), 16)
        assert np.allclose(np.linalg.norm(a[0], axis=1), 1.0, atol=1e-5)
    best_method, _ = load_run(run_dir, "best")
    best = torch.load(run_dir / "best.pt", weights_only=True)
    for k, v in best_method.state_dict().items():
        assert torch.equal(v, best["model"][k])


def test_evaluate_run_writes_protocol_and_numbers(finished):
    _, run_dir, _ = finished
    report = evaluate_run(run_dir, split="test", directions=["sketch2photo", "photo2sketch"])
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved["protocol"] == report["protocol"]
    proto = saved["protocol"]
    assert proto["split"] == "test" and proto["directions"] == ["sketch2photo", "photo2sketch"]
    assert proto["queries"] == {"sketch": 8, "photo": 8}  # 4 classes x 2 test instances
    s2p = saved["results"]["sketch2photo"]
    assert s2p["num_queries"] == 8 and s2p["gallery_size"] == 8
    assert 0.0 <= s2p["metrics"]["map"] <= 1.0 and "map" in s2p["conventions"]
    assert saved["checkpoint"]["which"] == "best" and saved["checkpoint"]["fingerprint"] == model_fingerprint(run_dir)
    # the learned model beats chance (4 balanced classes: mAP of a random ranking ~ 0.3)
    assert s2p["metrics"]["map"] > 0.45


def test_evaluate_run_returns_the_embeddings_it_scored(finished):
    _, run_dir, _ = finished
    report = evaluate_run(run_dir, split="test", directions=["sketch2photo"], return_embeddings=True)
    method, config = load_run(run_dir, "best")
    dataset = inference.build_dataset(config["data"])
    for modality, samples in (("sketch", dataset.sketches("test")), ("photo", dataset.photos("test"))):
        fresh, _, _ = inference.embed_samples(method.encoder, dataset, samples, device="cpu")
        assert np.allclose(report["embeddings"][modality], fresh, atol=1e-6)  # same order, same model
    assert "embeddings" not in json.loads((run_dir / "eval.json").read_text())


def test_fingerprint_tracks_weights_and_config(finished, tmp_path):
    _, run_dir, _ = finished
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.yaml", "best.pt"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    original = model_fingerprint(copy)
    assert original == model_fingerprint(run_dir) and len(original) == 16
    ckpt = torch.load(copy / "best.pt", weights_only=True)
    key = next(iter(ckpt["model"]))
    ckpt["model"][key] = ckpt["model"][key] + 1
    torch.save(ckpt, copy / "best.pt")
    changed_weights = model_fingerprint(copy)
    assert changed_weights != original
    # issue 8: the fingerprint follows what decides the embeddings (weights, architecture, image
    # preprocessing), not incidental options: a rerun with train.progress changed keeps it
    config_text = (copy / "config.yaml").read_text()
    (copy / "config.yaml").write_text(config_text.replace("progress: false", "progress: true"))
    assert model_fingerprint(copy) == changed_weights
    (copy / "config.yaml").write_text(config_text.replace("image_size: 16", "image_size: 24"))
    assert model_fingerprint(copy) not in (original, changed_weights)


def test_load_run_errors_are_one_line(finished, tmp_path):
    _, run_dir, _ = finished
    with pytest.raises(CheckpointError, match="run directory not found"):
        load_run(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    (broken / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.pt: could not load checkpoint") as info:
        load_run(broken)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="last.pt: checkpoint not found"):
        load_run(broken, "last")


def test_resume_refuses_a_changed_config(tmp_path):
    run_dir = train(tiny_config("train.steps=4"), tmp_path / "r")
    assert torch.load(run_dir / "last.pt", weights_only=True)["step"] == 4
    with pytest.raises(ConfigError, match="train.lr"):
        train(tiny_config("train.steps=4", "train.lr=0.5"), run_dir)
    # a finished run resumed with the same config does nothing more
    train(tiny_config("train.steps=4", "train.progress=true"), run_dir)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r] == [2, 4]


def test_tensorboard_is_optional(tmp_path):
    config = tiny_config("train.steps=2", "train.tensorboard=true")
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard package is not installed"):
            run_dir = train(config, tmp_path / "tb")
    else:
        run_dir = train(config, tmp_path / "tb")
        assert any((run_dir / "tensorboard").iterdir())
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r] == [2]


def test_no_validation_split_keeps_the_final_model(tmp_path):
    config = tiny_config("train.steps=4", "data.val_split=null")
    with pytest.warns(UserWarning, match="no model selection"):
        run_dir = train(config, tmp_path / "noval")
    best = torch.load(run_dir / "best.pt", weights_only=True)
    assert best["step"] == 4 and best["value"] is None and "no validation" in best["selection"]
    assert not [r for r in read_metrics(run_dir / "metrics.jsonl") if "split" in r]


def test_backbone_lr_gives_the_backbones_their_own_learning_rate(tmp_path):
    def trained(backbone_lr):
        trainer = Trainer(tiny_config("train.steps=3", "train.eval_every=0", f"train.backbone_lr={backbone_lr}"),
                          tmp_path / str(backbone_lr))
        trainer.fit()
        torch.manual_seed(0)  # the trainer seeds with config seed 0 before building: same initial weights
        from sbirkit.methods import create_method

        fresh = dict(create_method(trainer.config["method"]["name"], trainer.config).named_parameters())
        moved = {name: not torch.equal(p.detach(), fresh[name].detach())
                 for name, p in trainer.method.named_parameters()}
        backbone = [m for name, m in moved.items() if ".backbone." in name]
        rest = [m for name, m in moved.items() if ".backbone." not in name]
        rows = read_metrics(trainer.run_dir / "metrics.jsonl")
        return trainer, backbone, rest, rows

    trainer, backbone, rest, rows = trained(0.0)
    assert backbone and not any(backbone) and any(rest)  # lr 0: backbone parameters stay put, heads train
    assert [len(g["params"]) for g in trainer.optimizer.param_groups] == [len(rest), len(backbone)]
    assert all(r["backbone_lr"] == 0.0 for r in rows if "loss" in r)
    trainer, backbone, rest, rows = trained("null")  # one group: the default, as before the option existed
    assert len(trainer.optimizer.param_groups) == 1 and any(backbone) and all("backbone_lr" not in r for r in rows)
    with pytest.raises(ConfigError, match="backbone_lr: expected null or a number >= 0"):
        Trainer(tiny_config("train.backbone_lr=-1"), tmp_path / "bad").fit()


def test_backbone_bn_frozen_keeps_the_running_statistics(tmp_path):
    def buffers(setting):
        trainer = Trainer(tiny_config("train.steps=3", "train.eval_every=0", f"train.backbone_bn={setting}"),
                          tmp_path / setting)
        trainer.fit()
        torch.manual_seed(0)
        from sbirkit.methods import create_method

        fresh = create_method(trainer.config["method"]["name"], trainer.config).state_dict()
        stats = [k for k in fresh if ".backbone." in k and k.endswith("running_mean")]
        assert stats
        return [torch.equal(trainer.method.state_dict()[k], fresh[k]) for k in stats]

    assert all(buffers("frozen"))  # eval-mode BatchNorm: statistics untouched by training batches
    assert not any(buffers("train"))
    with pytest.raises(ConfigError, match="backbone_bn: expected 'train' or 'frozen'"):
        Trainer(tiny_config("train.backbone_bn=fixed"), tmp_path / "bad").fit()


def test_each_split_and_checkpoint_keeps_its_own_eval_record(finished):
    _, run_dir, _ = finished
    best = evaluate_run(run_dir, split="test", which="best")
    last = evaluate_run(run_dir, split="val", which="last")
    on_disk = {p.name: json.loads(p.read_text()) for p in run_dir.glob("eval-*.json")}
    assert on_disk["eval-test-best.json"]["checkpoint"]["which"] == "best"
    assert on_disk["eval-val-last.json"]["checkpoint"]["which"] == "last"
    assert on_disk["eval-val-last.json"]["protocol"]["split"] == "val"
    assert on_disk["eval-test-best.json"]["results"] == best["results"]  # not overwritten by --which last
    assert json.loads((run_dir / "eval.json").read_text())["results"] == last["results"]  # the latest
    with pytest.raises(ValueError, match="--direction"):
        evaluate_run(run_dir, directions=["sideways"])


def test_backbone_bn_null_freezes_a_pretrained_backbone_on_small_batches(tmp_path):
    from sbirkit.engine.options import resolve_backbone_bn

    assert resolve_backbone_bn({"backbone_bn": None, "batch_size": 32}, {"pretrained": True})[0] == "frozen"
    assert resolve_backbone_bn({"backbone_bn": None, "batch_size": 128}, {"pretrained": True})[0] == "train"
    assert resolve_backbone_bn({"backbone_bn": None, "batch_size": 32}, {"pretrained": False}) == ("train", None)
    assert resolve_backbone_bn({"backbone_bn": "train", "batch_size": 32}, {"pretrained": True}) == ("train", None)
    value, notice = resolve_backbone_bn({"backbone_bn": None, "batch_size": 16}, {"weights": "/w.pt"})
    assert value == "frozen" and "16 (<= 64)" in notice
    # a run from a weights file (pretrained) with the default: frozen, recorded and logged once
    from sbirkit.models import create_backbone

    weights = tmp_path / "tiny.pt"
    torch.save(create_backbone("tiny_cnn").state_dict(), weights)
    trainer = Trainer(tiny_config("train.steps=2", "train.eval_every=0", f"model.weights={weights}"), tmp_path / "r")
    assert trainer.config["train"]["backbone_bn"] is None and trainer.train_opts.backbone_bn == "frozen"
    trainer.fit()
    assert json.loads((tmp_path / "r" / "meta.json").read_text())["backbone_bn"] == "frozen"
    notices = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r.get("event") == "notice"]
    assert len(notices) == 1 and "backbone_bn=null -> frozen" in notices[0]["message"]


def test_init_from_starts_the_backbones_from_another_run(finished, tmp_path):
    _, source, _ = finished
    trainer = Trainer(tiny_config("train.steps=1", "train.eval_every=0", "train.lr=0", f"train.init_from={source}"),
                      tmp_path / "init")
    trainer.fit()
    donor = torch.load(source / "best.pt", weights_only=True)["model"]
    mine = trainer.method.state_dict()
    backbone = [k for k in mine if ".backbone." in k and k.endswith(("weight", "bias"))]  # (BN statistics move)
    assert backbone and all(torch.equal(mine[k], donor[k]) for k in backbone)  # lr 0: exactly the donor's
    heads = [k for k in mine if ".head." in k]
    assert heads and any(not torch.equal(mine[k], donor[k]) for k in heads)  # init_modules=backbone: heads fresh
    record = json.loads((tmp_path / "init" / "meta.json").read_text())["init_from"]
    assert record["modules"] == "backbone" and record["branches"]["sketch"]["from"] == "encoder.sketch_encoder."
    whole = Trainer(tiny_config("train.steps=1", "train.eval_every=0", "train.lr=0", f"train.init_from={source}",
                                "train.init_modules=encoder"), tmp_path / "whole")
    whole.fit()
    assert all(torch.equal(whole.method.state_dict()[k], donor[k]) for k in heads)
    with pytest.raises(ConfigError, match="checkpoint not found"):
        Trainer(tiny_config(f"train.init_from={tmp_path / 'nowhere'}"), tmp_path / "bad").fit()


def test_init_branches_starts_only_the_named_branch(finished, tmp_path):
    """train.init_branches=[sketch]: a sketch-pretrained sketch branch, the photo branch as built."""
    _, source, _ = finished
    donor = torch.load(source / "best.pt", weights_only=True)["model"]
    fresh = Trainer(tiny_config("train.steps=1", "train.eval_every=0", "train.lr=0"), tmp_path / "fresh")
    fresh.fit()
    trainer = Trainer(tiny_config("train.steps=1", "train.eval_every=0", "train.lr=0", f"train.init_from={source}",
                                  "train.init_branches=[sketch]"), tmp_path / "sketch")
    trainer.fit()
    mine, built = trainer.method.state_dict(), fresh.method.state_dict()
    params = [k for k in mine if ".backbone." in k and k.endswith(("weight", "bias"))]
    sketch = [k for k in params if "sketch_encoder" in k]
    photo = [k for k in params if "photo_encoder" in k]
    assert sketch and photo
    assert all(torch.equal(mine[k], donor[k]) for k in sketch)
    assert all(torch.equal(mine[k], built[k]) for k in photo)  # the same seed builds the same photo branch
    assert any(not torch.equal(built[k], donor[k]) for k in photo)  # ... which the donor's would have changed
    record = json.loads((tmp_path / "sketch" / "meta.json").read_text())["init_from"]
    assert list(record["branches"]) == ["sketch"]
    with pytest.raises(ConfigError, match="train.init_branches"):
        Trainer(tiny_config("train.init_branches=[sideways]"), tmp_path / "bad")
