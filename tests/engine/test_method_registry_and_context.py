"""Phase 2 of issue 21: the method registry in a leaf module, a method asking its context for
another run (``ctx.load_run``) instead of importing the runner, ``validation_metric_names`` on
``Method``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tiny_pairs  # noqa: F401  (registers the tiny_pairs dataset)
from runs_helper import tiny_config

from sbirkit.engine import ConfigError, Trainer
from sbirkit.engine.context import SetupContext
from sbirkit.methods import Method, register_method
from sbirkit.methods import registry as method_registry
from sbirkit.methods.baseline import Triplet

SRC = Path(__file__).resolve().parents[2] / "src"


def test_the_registry_is_a_leaf_and_the_package_face_re_exports_it():
    assert register_method is method_registry.register_method
    # a fresh interpreter that imports only the leaf finds every built-in method (Python runs the
    # package face first, and the face imports them)
    code = ("from sbirkit.methods.registry import list_methods, method_class; "
            "print(' '.join(list_methods())); print(method_class('triplet').__name__)")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    names, cls = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                env=env).stdout.splitlines()
    assert {"triplet", "siamese", "triplet_sn", "zscmr", "classifier", "crossx_dfl", "adaptive_fg"} <= set(names.split())
    assert cls == "Triplet"


class UsesAnotherRun(Triplet):
    """A triplet method that reads another run in setup, through its context."""

    seen: dict = {}

    @dataclass
    class Options(Triplet.Options):
        other_run: str = ""

    def setup(self, ctx):
        method, config = ctx.load_run(self.options.other_run)
        UsesAnotherRun.seen = {"method": type(method).__name__, "device": str(next(method.parameters()).device),
                               "classes": config["data"]["options"]["num_classes"]}
        super().setup(ctx)


def test_a_method_loads_another_run_through_its_context(tmp_path):
    first = tmp_path / "first"
    Trainer(tiny_config("train.steps=4", "train.eval_every=4"), first).fit()
    Trainer(tiny_config("train.steps=2", "train.eval_every=2", f"method.name={__name__}:UsesAnotherRun",
                        f"method.other_run={first}"), tmp_path / "second").fit()
    assert UsesAnotherRun.seen == {"method": "Triplet", "device": "cpu", "classes": 4}
    # a context nobody gave a loader says so in one line
    with pytest.raises(ConfigError, match="cannot load other runs"):
        SetupContext.for_dataset(None).load_run(first)
    with pytest.raises(ConfigError, match="cannot find or train preset runs"):
        SetupContext.for_dataset(None).preset_run({"preset": "triplet-synthetic"}, "method.x")


def test_a_preset_run_comes_through_the_context_and_a_dry_run_trains_none(tmp_path):
    from sbirkit.engine.context import PresetRunNotTrained
    from sbirkit.engine.preset_runs import preset_runner
    from sbirkit.engine.trainer import train

    spec = {"preset": "triplet-synthetic", "overrides": ["train.steps=2", "train.eval_every=2", "train.progress=false",
                                                         "train.batch_size=8", "method.classes_per_batch=4",
                                                         "data.options={num_classes: 4, photos_per_class: 4, "
                                                         "image_size: 16}"]}
    config = tiny_config()
    dry = SetupContext.for_run(config, tmp_path / "me", preset_runner=preset_runner(train), dry_run=True)
    with pytest.raises(PresetRunNotTrained, match="would be trained into"):
        dry.preset_run(spec, "method.x")
    assert not any(tmp_path.iterdir())
    ctx = SetupContext.for_run(config, tmp_path / "me", preset_runner=preset_runner(train))
    folder = ctx.preset_run(spec, "method.x")  # trained beside the asking run, then reused
    assert folder.parent == tmp_path and folder.name.startswith("triplet-synthetic-") and (folder / "best.pt").is_file()
    stamp = (folder / "best.pt").stat().st_mtime_ns
    assert ctx.preset_run(spec, "method.x") == folder and (folder / "best.pt").stat().st_mtime_ns == stamp
    loading = SetupContext.for_run(config, tmp_path / "other" / "me", preset_runner=preset_runner(None))
    with pytest.raises(PresetRunNotTrained):  # the context load_run gives trains nothing
        loading.preset_run(spec, "method.x")


class NamedMetrics(Triplet):
    def validation_metrics(self, ctx):
        return {"mine/score": 1.0}

    def validation_metric_names(self):
        return ["mine/score"]


def test_validation_metric_names_is_a_method_hook_checked_before_training(tmp_path):
    assert "validation_metric_names" in vars(Method)  # declared on the base class, default None
    name = f"{__name__}:NamedMetrics"
    cfg = tiny_config(f"method.name={name}", "data.val_split=null", "eval.select=other/score")
    with pytest.raises(ConfigError, match=rf"eval.select: 'other/score' is not among the validation metrics of "
                                          rf"method '{name}' \(mine/score\)"):
        Trainer(cfg, tmp_path / "r").check()


class Frozen(Triplet):
    """Nothing to train: every parameter frozen, no optimiser."""

    def setup(self, ctx):
        super().setup(ctx)
        self.requires_grad_(False)

    def configure_optimizers(self, train):
        return {}


class NoOptimiserButTrainable(Triplet):
    def configure_optimizers(self, train):
        return {}


def test_a_method_with_no_optimiser_is_validated_checkpointed_and_evaluated(tmp_path):
    import torch

    from sbirkit.engine import evaluate_run

    run = tmp_path / "frozen"
    config = tiny_config("train.steps=4", "train.eval_every=2", f"method.name={__name__}:Frozen")
    start = Trainer(config, tmp_path / "start")
    start.check()  # the same seed builds the same starting weights
    initial = {n: p.detach().clone() for n, p in start.method.named_parameters()}
    trainer = Trainer(config, run)
    trainer.fit()
    assert trainer.optimizers == {} and trainer.step == 4
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["optimizer"] == {} and last["scheduler"] == {} and last["step"] == 4
    assert initial and all(torch.equal(last["model"][n], p) for n, p in initial.items())  # no parameter moved
    rows = [r for r in (run / "metrics.jsonl").read_text().splitlines() if '"split"' in r]
    assert len(rows) == 2 and (run / "best.pt").is_file()  # validated at steps 2 and 4
    record = evaluate_run(run, split="test", save=False)
    assert 0.0 < record["results"]["sketch2photo"]["metrics"]["map"] <= 1.0
    # a method that returns no optimiser but has trainable parameters is refused in one line
    with pytest.raises(ConfigError, match="configure_optimizers returned no optimiser, but the method has trainable"):
        Trainer(tiny_config(f"method.name={__name__}:NoOptimiserButTrainable"), tmp_path / "bad").check()
