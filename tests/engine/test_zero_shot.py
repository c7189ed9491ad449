"""The zero-shot protocol in the engine: split assignment, held-out validation classes, ZSL/GZSL
metrics against a per-query sklearn reference, the no-leak property of training, model selection
and ITQ fitting, and `sbirkit train zscmr-synthetic` + `sbirkit eval` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from typer.testing import CliRunner

from sbirkit.cli import app
from sbirkit.data import DataError, splits
from sbirkit.engine import ConfigError, Trainer, evaluate_run, inference, zero_shot
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.eval import itq

SPLIT = "random:2:0"  # over the first 6 synthetic classes: fish and star unseen


def zs_config(*overrides: str, preset: str = "zscmr-synthetic") -> dict:
    """A seconds-long run on 6 tiny synthetic classes (2 unseen), tiny_cnn; ZSCMR with onehot semantics."""
    method = ["method.semantic=onehot", "method.decoder_hidden=0"] if preset.startswith("zscmr") else []
    base = [
        "data.options={num_classes: 6, photos_per_class: 10, sketches_per_photo: 1, image_size: 16, seed: 0}",
        f"data.zero_shot={SPLIT}", "data.zero_shot_val_classes=0",
        "data.cache_images=true",
        "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=16", "model.hidden=null",
        *method, "method.classes_per_batch=null",
        "train.cached_features=false", "train.steps=8", "train.batch_size=8", "train.warmup_steps=0",
        "train.log_every=4", "train.eval_every=4", "train.checkpoint_every=4", "train.progress=false",
        "eval.binary_bits=8", "eval.batch_size=64",
    ]
    return apply_overrides(load_preset(preset), [*base, *overrides])


def test_unseen_samples_are_test_items_and_training_views_hold_seen_classes_only():
    data = zs_config()["data"]
    plain = inference.build_dataset({**data, "zero_shot": None})
    ds = inference.build_dataset(data)
    cs = splits.class_split(ds, SPLIT)
    assert cs.unseen == ("fish", "star") and len(cs.seen) == 4
    unseen = set(cs.unseen_indices(ds))
    by_key = {s.key: s for s in plain.samples}
    for s in ds.samples:
        assert s.split == ("test" if s.class_index in unseen else by_key[s.key].split)
    assert {s.split for s in plain.samples if s.class_index in unseen} == {"train", "val", "test"}
    view = splits.seen_view(ds, cs)
    assert {s.class_index for s in view.samples} == set(cs.seen_indices(ds)) and len(view.samples) == 80
    # unsplit datasets: seen samples become training items
    unsplit = inference.build_dataset({**data, "options": {**data["options"], "splits": None}})
    assert {s.split for s in unsplit.samples if s.class_index in unseen} == {"test"}
    assert {s.split for s in unsplit.samples if s.class_index not in unseen} == {"train"}


def test_bad_split_specs_name_the_key():
    data = zs_config()["data"]
    with pytest.raises(DataError, match="data.zero_shot.*nope"):
        inference.build_dataset({**data, "zero_shot": "nope"})
    with pytest.raises(DataError, match="split sketchy_25: unseen classes"):
        inference.build_dataset({**data, "zero_shot": "sketchy_25"})
    with pytest.raises(ConfigError, match="zero_shot_val_classes"):
        Trainer(zs_config("data.zero_shot=null", "data.zero_shot_val_classes=1"), "unused")._build()


def test_validation_classes_are_held_out_seen_classes():
    data = zs_config()["data"]
    ds = inference.build_dataset(data)
    cs = splits.class_split(ds, SPLIT)
    held = splits.validation_classes(cs, 1, seed=0)
    assert len(held) == 1 and held[0] in cs.seen and held == splits.validation_classes(cs, 1, seed=0)
    view = splits.hold_out_validation_classes(splits.seen_view(ds, cs), held, "train", "val")
    h = ds.class_index(held[0])
    assert {s.class_index for s in view.select(split="val")} == {h}
    assert h not in {s.class_index for s in view.select(split="train")}
    assert len(view.select(split="train")) == sum(1 for s in ds.samples
                                                  if s.class_index in set(cs.seen_indices(ds)) - {h}
                                                  and s.split in ("train", "val"))
    with pytest.raises(ValueError, match="zero_shot_val_classes"):
        splits.validation_classes(cs, 3)


def _reference_map(q_emb, q_lab, g_emb, g_lab, same: bool) -> float:
    """Per-query sklearn AP (cosine), the query removed from its own ranking when ``same``."""
    q = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
    g = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
    aps = []
    for i in range(len(q)):
        keep = np.ones(len(g), bool)
        if same:
            keep[i] = False
        aps.append(average_precision_score((g_lab[keep] == q_lab[i]).astype(int), q[i] @ g[keep].T))
    return float(np.mean(aps))


@pytest.mark.parametrize("gzsl", [False, True])
def test_zsl_and_gzsl_against_a_per_query_reference(gzsl):
    rng = np.random.default_rng(3)
    s_lab, p_lab = rng.integers(0, 5, 40), rng.integers(0, 5, 30)
    centres = rng.normal(size=(5, 6))
    s_emb = centres[s_lab] + rng.normal(size=(40, 6))
    p_emb = centres[p_lab] + rng.normal(size=(30, 6))
    unseen = [1, 3]
    res = zero_shot.evaluate_zero_shot(s_emb, s_lab, p_emb, p_lab, unseen, gzsl=gzsl, metrics=("map", "p@5"))
    qs, qp = np.isin(s_lab, unseen), np.isin(p_lab, unseen)
    gs, gp = (np.ones(40, bool), np.ones(30, bool)) if gzsl else (qs, qp)
    assert res["sketch2photo"]["map"] == pytest.approx(_reference_map(s_emb[qs], s_lab[qs], p_emb[gp], p_lab[gp], False))
    assert res["photo2sketch"]["map"] == pytest.approx(_reference_map(p_emb[qp], p_lab[qp], s_emb[gs], s_lab[gs], False))
    if gzsl:  # all sketches rank, only unseen queries count
        full = _reference_map(s_emb, s_lab, s_emb, s_lab, True)
        per = [_reference_map(s_emb[[i]], s_lab[[i]], np.delete(s_emb, i, 0), np.delete(s_lab, i), False)
               for i in np.flatnonzero(qs)]
        assert res["sketch2sketch"]["map"] == pytest.approx(np.mean(per)) != pytest.approx(full)
    else:
        assert res["sketch2sketch"]["map"] == pytest.approx(_reference_map(s_emb[qs], s_lab[qs], s_emb[qs], s_lab[qs], True))
    assert res["sketch2sketch"].num_queries == qs.sum() and res["photo2photo"].gallery_size == gp.sum() - 1
    q = s_emb[qs] / np.linalg.norm(s_emb[qs], axis=1, keepdims=True)
    g = p_emb[gp] / np.linalg.norm(p_emb[gp], axis=1, keepdims=True)
    top = np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :5]
    assert res["sketch2photo"]["p@5"] == pytest.approx(np.mean(p_lab[gp][top] == s_lab[qs][:, None]))
    chance = zero_shot.chance_levels(s_lab, p_lab, unseen, gzsl, ["sketch2photo"])["sketch2photo"]
    assert chance == pytest.approx(np.mean([(p_lab[gp] == c).mean() for c in s_lab[qs]]))


@pytest.mark.parametrize("gzsl", [False, True])
def test_binary_codes_rank_by_exact_hamming_under_each_tie_policy(gzsl):
    rng = np.random.default_rng(8)
    s_lab, p_lab = rng.integers(0, 4, 30), rng.integers(0, 4, 25)
    patterns = rng.integers(0, 2, (4, 6))
    s_codes = np.where((patterns[s_lab] ^ (rng.random((30, 6)) < 0.2)) > 0, 1.0, -1.0)
    p_codes = np.where((patterns[p_lab] ^ (rng.random((25, 6)) < 0.2)) > 0, 1.0, -1.0)
    values = {}
    for ties in ("pessimistic", "expected", "optimistic"):
        res = zero_shot.evaluate_zero_shot(s_codes, s_lab, p_codes, p_lab, [0, 2], gzsl=gzsl, metrics=("map", "p@5"),
                                           distance="hamming", ties=ties, no_relevant="zero")
        assert all(r.ties == ties and r.distance == "hamming" and r.no_relevant == "zero" for r in res.values())
        values[ties] = res["sketch2sketch"]["p@5"], res["sketch2photo"]["map"]
    for i in range(2):  # 6-bit codes tie everywhere: the three policies bracket each other strictly
        assert values["pessimistic"][i] < values["expected"][i] < values["optimistic"][i]


def test_sketchy_21_adds_its_map_at_200_convention():
    assert zero_shot.metrics_for("random:3:0") == ("map", "p@100")
    assert zero_shot.metrics_for("sketchy_21") == ("map", "p@100", "map@200:yelamarthi", "p@200")


def _record_pixels(monkeypatch) -> list:
    """Every sample whose pixels any dataset built by the engine reads."""
    seen: list = []
    original = inference.build_dataset

    def recording(*args, **kwargs):
        ds = original(*args, **kwargs)
        load = ds.load_image

        def load_image(sample, size=None):
            seen.append(sample)
            return load(sample, size)

        ds.load_image = load_image
        return ds

    monkeypatch.setattr(inference, "build_dataset", recording)
    return seen


@pytest.mark.parametrize("cached", [False, True])
def test_no_unseen_sample_reaches_training_selection_or_itq(tmp_path, monkeypatch, cached):
    pixels = _record_pixels(monkeypatch)
    labels: list[int] = []
    build = Trainer._build

    def build_and_record(self):
        build(self)
        step = self.method.training_step

        def training_step(batch, ctx=None):
            labels.extend(batch["label"].tolist())
            return step(batch, ctx)

        self.method.training_step = training_step

    monkeypatch.setattr(Trainer, "_build", build_and_record)
    config = zs_config(f"train.cached_features={str(cached).lower()}", "data.zero_shot_val_classes=1")
    trainer = Trainer(config, tmp_path / "run")
    trainer.fit()
    ds = inference.build_dataset(config["data"])
    cs = trainer.class_split
    seen = set(cs.seen_indices(ds))
    assert labels and set(labels) <= seen
    assert pixels and {s.class_index for s in pixels} <= seen
    held = ds.class_index(trainer.val_classes[0])
    assert held in {s.class_index for s in pixels}  # validation ran (on the held-out seen class) ...
    assert held not in labels  # ... which training never saw
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["zero_shot"]["unseen"] == ["fish", "star"]
    assert meta["zero_shot"]["validation_classes"] == list(trainer.val_classes)

    pixels.clear()
    fitted: list[int] = []
    fit = itq.fit_itq

    def recording_fit(x, *args, **kwargs):
        fitted.append(len(x))
        return fit(x, *args, **kwargs)

    monkeypatch.setattr(itq, "fit_itq", recording_fit)
    report = evaluate_run(tmp_path / "run", device="cpu")
    seen_train = [s for s in ds.samples if s.class_index in seen and s.split == "train"]
    assert fitted == [len(seen_train)]  # ITQ is fitted on seen-class training samples only
    seen_read = [s for s in pixels if s.class_index in seen]
    assert all(s.split == "train" for s in seen_read)  # the only seen samples evaluation reads are those
    if not cached:  # (with the cache, the ones training extracted are not read again)
        assert len(seen_read) == len(seen_train)
        assert len(pixels) - len(seen_read) == 2 * 2 * 10  # ZSL: 2 unseen classes x (10 photos + 10 sketches)
    assert report["protocol"]["binary"]["bits"] == 8
    binary = report["results"]["sketch2photo (8-bit ITQ, Hamming)"]
    assert binary["distance"] == "hamming" and binary["ties"] == report["protocol"]["ties"] == "expected"
    assert "ties: expected" in report["protocol"]["binary"]["ranking"]


def _cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_cli_train_then_eval_on_unseen_classes_with_a_word_vector_file(tmp_path):
    """ZSCMR from a small GloVe-style file the test writes; the unseen names are not in it, so the
    run only works because training never looks them up."""
    words = tmp_path / "words.txt"
    rng = np.random.default_rng(0)
    seen = ["house", "tree", "cup", "umbrella"]
    words.write_text("".join(f"{w} " + " ".join(f"{v:.4f}" for v in rng.normal(size=10)) + "\n" for w in seen))
    run = tmp_path / "run"
    args = ["train", "zscmr-synthetic", "--run-dir", run,
            "data.options={num_classes: 6, photos_per_class: 10, sketches_per_photo: 1, image_size: 16, seed: 0}",
            f"data.zero_shot={SPLIT}", "data.zero_shot_val_classes=0", "model.backbone=tiny_cnn", "model.pretrained=false", "model.embed_dim=16",
            "model.hidden=null", "method.semantic=glove", f"method.semantic_options={{path: {words}, cache: false}}",
            "method.classes_per_batch=null", "train.cached_features=true", "train.steps=6", "train.batch_size=8",
            "train.warmup_steps=0", "train.eval_every=3", "train.checkpoint_every=3", "train.progress=false",
            "eval.binary_bits=8"]
    _cli(*args)
    from sbirkit.engine import load_run

    method, _ = load_run(run)
    expected = np.stack([rng_vec / np.linalg.norm(rng_vec) for rng_vec in
                         [np.array([float(v) for v in line.split()[1:]]) for line in words.read_text().splitlines()]])
    assert np.allclose(method.semantic.numpy(), expected, atol=1e-4)  # the file's vectors, seen classes only

    out = _cli("eval", run).output
    for direction in ("sketch2photo", "photo2sketch", "sketch2sketch", "photo2photo"):
        assert f"| {direction} | 20 |" in out
        assert f"| {direction} (8-bit ITQ, Hamming) | 20 |" in out
    assert "zero-shot (ZSL)" in out and "4 seen / 2 unseen" in out and "chance" in out
    saved = json.loads((run / "eval.json").read_text())
    assert saved["protocol"]["zero_shot"]["unseen"] == ["fish", "star"] and saved["protocol"]["setting"] == "zsl"
    assert saved["protocol"]["chance"]["sketch2photo"] == pytest.approx(0.5)

    gz = _cli("eval", run, "--gzsl").output
    assert "generalised zero-shot (GZSL)" in gz
    saved = json.loads((run / "eval.json").read_text())
    test_items = 2 * 10 + 4 * 2  # unseen (all) + seen-class test items (2 of 10 per class)
    assert saved["results"]["sketch2photo"]["gallery_size"] == test_items
    assert saved["protocol"]["chance"]["sketch2photo"] == pytest.approx(10 / test_items)


def test_gzsl_needs_a_zero_shot_run(tmp_path):
    run = Trainer(zs_config("data.zero_shot=null", "eval.binary_bits=0", "train.steps=2", "train.eval_every=0",
                            preset="triplet-synthetic-zs"), tmp_path / "plain").fit()
    with pytest.raises(ValueError, match="gzsl: expected a run trained with data.zero_shot"):
        evaluate_run(run, gzsl=True, device="cpu")


@pytest.mark.parametrize("preset, manifest, size", [("zscmr-sketchy_25", "sketchy_25", 25),
                                                    ("zscmr-sketchy_21", "sketchy_21", 21),
                                                    ("zscmr-tuberlin_30", "tuberlin_30", 30),
                                                    ("zscmr-quickdraw_30", "quickdraw_30", 30)])
def test_real_dataset_presets_name_their_published_split(preset, manifest, size):
    from sbirkit.data.splits import read_manifest

    config = load_preset(preset)
    assert config["method"]["name"] == "zscmr" and config["data"]["zero_shot"] == manifest
    assert config["train"]["cached_features"] and config["data"]["zero_shot_val_classes"] > 0
    unseen = read_manifest(manifest)
    assert len(unseen) == size
    classes = ["seen class a", "seen class b", *unseen]
    split = splits.class_split(classes, manifest)
    assert split.unseen == tuple(unseen) and split.seen == ("seen class a", "seen class b")
    extra = ("map@200:yelamarthi", "p@200") if manifest == "sketchy_21" else ()
    assert zero_shot.metrics_for(manifest) == ("map", "p@100", *extra)


def test_quickdraw_30_preset_on_a_folder_in_its_layout(tmp_path):
    """The preset's data section on a tiny QuickDraw-Extended folder: unseen classes are test items."""
    from PIL import Image, ImageDraw

    from sbirkit.data.splits import read_manifest

    unseen = read_manifest("quickdraw_30")
    seen = ["apple", "yoga"]
    for cls in [*seen, *unseen]:
        for side, ext in (("sketch", "png"), ("images", "jpg")):
            folder = tmp_path / side / cls
            folder.mkdir(parents=True)
            img = Image.new("RGB", (32, 32), "white")
            ImageDraw.Draw(img).line((2, 2, 30, 30), fill="black", width=3)
            img.save(folder / f"0.{ext}")
    data = {**load_preset("zscmr-quickdraw_30")["data"], "root": str(tmp_path)}
    ds = inference.build_dataset(data)
    split = splits.class_split(ds, "quickdraw_30")
    assert set(split.seen) == set(seen)
    for s in ds.samples:
        assert s.split == ("train" if s.class_name in seen else "test")
