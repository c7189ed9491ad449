"""The fusion method: two finished runs fused into one embedding, the weight chosen on validation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from sbirkit.engine import Trainer, apply_overrides, inference, load_preset, load_run, train
from sbirkit.engine.runlog import read_metrics
from sbirkit.errors import ConfigError
from sbirkit.eval import evaluate_retrieval
from sbirkit.methods.fusion import FusedEncoder

TINY = ["data.name=synthetic", "data.options={num_classes: 4, photos_per_class: 12, image_size: 32, seed: 0}",
        "model.backbone=tiny_cnn", "model.shared=false", "model.pretrained=false", "train.batch_size=8",
        "train.log_every=5", "train.eval_every=0", "train.progress=false", "train.warmup_steps=0",
        "eval.batch_size=64", "method.classes_per_batch=4"]


@pytest.fixture(scope="module")
def components(tmp_path_factory, one_torch_thread):
    """Two different triplet runs (another seed, embedding size and length), and where they live."""
    root = tmp_path_factory.mktemp("fusion")
    runs = []
    for i, (dim, steps) in enumerate(((8, 20), (12, 6))):
        config = apply_overrides(load_preset("triplet-synthetic"), [*TINY, f"seed={i}", f"model.embed_dim={dim}",
                                                                    f"train.steps={steps}"])
        runs.append(train(config, root / f"component{i}"))
    return root, runs


def _fusion_config(runs, *extra):
    config = apply_overrides(load_preset("triplet-synthetic"), TINY)
    config["method"] = {"name": "fusion", "runs": [str(r) for r in runs]}
    return apply_overrides(config, ["train.steps=1", "train.log_every=1", *extra])


def _embeddings(encoder, dataset, split):
    s = inference.embed_samples(encoder, dataset, dataset.sketches(split))
    p = inference.embed_samples(encoder, dataset, dataset.photos(split))
    return s, p


def test_the_fused_score_is_the_weighted_sum_of_the_two_cosines():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(12, 5), torch.nn.Linear(12, 7)

    class Part(torch.nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin, self.embed_dim = lin, lin.out_features

        def encode_sketch(self, x):
            return self.lin(x.flatten(1))

        encode_photo = encode_sketch

    x, y = torch.randn(6, 3, 2, 2), torch.randn(9, 3, 2, 2)
    cos = lambda lin: torch.nn.functional.normalize(lin(x.flatten(1)), dim=1) @ \
        torch.nn.functional.normalize(lin(y.flatten(1)), dim=1).T  # noqa: E731
    for w in (0.0, 0.3, 1.0):
        fused = FusedEncoder([Part(a), Part(b)], [None, None], w)
        zx, zy = fused.encode_sketch(x), fused.encode_photo(y)
        assert fused.embed_dim == 12 and zx.shape == (6, 12)
        torch.testing.assert_close(zx.norm(dim=1), torch.ones(6))
        torch.testing.assert_close(zx @ zy.T, (1 - w) * cos(a) + w * cos(b), atol=1e-5, rtol=1e-5)


def test_the_weight_is_the_validation_argmax_and_the_run_stands_alone(components, tmp_path):
    root, runs = components
    trainer = Trainer(_fusion_config(runs), tmp_path / "fused")
    trainer.fit()
    method = trainer.method
    chosen = float(method.encoder.weight)
    sweep = method.validation["values"]
    assert set(map(float, sweep)) == {round(0.1 * i, 1) for i in range(11)}

    # the same sweep, recomputed from the components' own embeddings with the evaluation function
    ds = trainer.dataset
    (sa, sl, _), (pa, pl, _) = _embeddings(load_run(runs[0])[0].encoder, ds, "val")
    (sb, _, _), (pb, _, _) = _embeddings(load_run(runs[1])[0].encoder, ds, "val")
    expected = {}
    for w in sorted(map(float, sweep)):
        q = np.concatenate([np.sqrt(1 - w) * sa, np.sqrt(w) * sb], 1)
        g = np.concatenate([np.sqrt(1 - w) * pa, np.sqrt(w) * pb], 1)
        expected[w] = evaluate_retrieval(q, g, sl, pl, metrics=["map"]).metrics["map"]
        assert sweep[str(w)] == pytest.approx(expected[w], abs=1e-6)
    best = max(expected.values())
    assert chosen == pytest.approx(min(w for w, v in expected.items() if v >= best - 1e-12))  # ties: the first
    assert expected[0.0] != expected[1.0]  # the two runs differ, so the sweep means something
    logged = [r for r in read_metrics(tmp_path / "fused" / "metrics.jsonl") if "weight" in r]
    assert logged and logged[0]["weight"] == pytest.approx(chosen)

    # the fused run loads, embeds and round-trips without its component folders
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    try:
        again, _ = load_run(tmp_path / "fused")
        for split in ("test",):
            (x1, _, _), (y1, _, _) = _embeddings(method.encoder, ds, split)
            (x2, _, _), (y2, _, _) = _embeddings(again.encoder, ds, split)
            np.testing.assert_array_equal(x1, x2)
            np.testing.assert_array_equal(y1, y2)
        assert float(again.encoder.weight) == chosen and again.components[1]["run"].endswith("component1")
    finally:
        shutil.move(str(moved), str(root))


def test_a_given_weight_is_kept_and_the_fused_run_indexes(components, tmp_path):
    from typer.testing import CliRunner

    from sbirkit.cli import app as cli_app

    _, runs = components
    fused = train(_fusion_config(runs, "method.weight=0.25"), tmp_path / "fused")
    method, config = load_run(fused)
    assert float(method.encoder.weight) == 0.25 and method.validation is None
    photos = tmp_path / "photos"
    result = CliRunner().invoke(cli_app, ["data", "synth", "--out", str(tmp_path / "synth"), "--num-classes", "4",
                                          "--photos-per-class", "3", "--image-size", "32", "--seed", "5"])
    assert result.exit_code == 0, result.output
    photos = tmp_path / "synth" / "photo"
    result = CliRunner().invoke(cli_app, ["index", "build", str(fused), str(photos), "--out", str(tmp_path / "idx")])
    assert result.exit_code == 0, result.output
    sketch = next((tmp_path / "synth" / "sketch").rglob("*.png"))
    result = CliRunner().invoke(cli_app, ["search", "--index", str(tmp_path / "idx"), "--sketch", str(sketch),
                                          "-k", "3"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("method,needle", [
    ({"runs": ["a"]}, "method.runs: expected two run folders"),
    ({"runs": ["a", "b"], "weight": 1.5}, "method.weight: expected a number in [0, 1]"),
    ({"runs": ["a", "b"], "weights": []}, "method.weights: expected a non-empty list"),
    ({"runs": ["a", "b"], "which": "first"}, "method.which: expected 'best' or 'last'"),
])
def test_bad_options_are_one_line_errors(method, needle):
    from sbirkit.methods import method_class

    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        method_class("fusion").from_config({"method": {"name": "fusion", **method}})


def test_a_missing_component_run_is_named(components, tmp_path):
    _, runs = components
    with pytest.raises(ConfigError, match=r"method.runs\[1\]: .*nowhere: expected a finished run folder"):
        Trainer(_fusion_config([runs[0], tmp_path / "nowhere"]), tmp_path / "fused").fit()
    assert not (tmp_path / "fused" / "best.pt").exists()


def test_a_fused_run_trains_nothing_and_one_saved_with_the_old_dummy_parameter_still_loads(components, tmp_path):
    """Fusion has nothing to train: no optimiser, no trainable parameter. Runs saved before the
    engine accepted that hold ``anchor`` (a parameter stepped at lr 0) and load as before."""
    _, runs = components
    trainer = Trainer(_fusion_config(runs, "method.weight=0.25"), tmp_path / "fused")
    trainer.fit()
    assert trainer.optimizers == {} and not any(p.requires_grad for p in trainer.method.parameters())
    ckpt = torch.load(tmp_path / "fused" / "best.pt", weights_only=True)
    assert "anchor" not in ckpt["model"]
    ckpt["model"] = {"anchor": torch.zeros(()), **ckpt["model"]}
    torch.save(ckpt, tmp_path / "fused" / "best.pt")
    old, _ = load_run(tmp_path / "fused")
    assert not hasattr(old, "anchor") and float(old.encoder.weight) == 0.25
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(old.encoder.encode_sketch(x), trainer.method.encoder.encode_sketch(x))
