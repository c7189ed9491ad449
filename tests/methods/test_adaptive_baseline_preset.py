"""A preset that names its supervised baseline (``train.init_from: {preset, overrides}``) trains it
once beside the run and starts from it: the one-command path gives the weights of the explicit
two-command path (the baseline command, then ``train.init_from=RUN``) bit for bit, a second run
reuses the baseline, the baseline command itself trains from scratch, and a dry run trains nothing."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from adaptive_helpers import tiny_config

from sbirkit.engine import Trainer, load_run
from sbirkit.engine.config import apply_overrides, load_preset, save_config
from sbirkit.engine.init_spec import preset_spec, starts_from_run
from sbirkit.errors import ConfigError

SUPERVISED = ["method.mode=supervised", "method.regularizers=[]"]
SPEC = {"preset": "afg-tiny", "overrides": SUPERVISED}


@pytest.fixture()
def tiny_preset(tmp_path, monkeypatch):
    """``afg-tiny``: adaptive_fg-synthetic at test size, naming its own baseline as the shipped preset does."""
    folder = tmp_path / "configs"
    folder.mkdir()
    config = tiny_config("train.steps=8", "train.eval_every=4", "train.checkpoint_every=4")
    config.update(name="afg-tiny", run_dir=None)
    config["train"]["init_from"] = dict(SPEC)
    save_config(config, folder / "afg-tiny.yaml")
    monkeypatch.setenv("SBIRKIT_CONFIGS", str(folder))
    return load_preset("afg-tiny")


def _weights(run, which):
    return torch.load(run / f"{which}.pt", weights_only=True)["model"]


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_shipped_presets_name_their_baseline_and_the_paper_twins_share_it_where_the_model_is_the_same():
    for name in ("adaptive_fg-synthetic", "adaptive_fg-synthetic_users", "adaptive_fg-qmul_v1",
                 "adaptive_fg-qmul_v1_chairs"):
        t = load_preset(name)["train"]
        assert t["init_from"] == {"preset": name, "overrides": SUPERVISED} and t["init_modules"] == "encoder", name
    # the synthetic -paper twins change only the regularisers: same model, same baseline (the benchmark's
    # ours_paper row); the QMUL-V1 ones pool the final map (another model), so they train from scratch
    for name, twin in (("adaptive_fg-synthetic-paper", "adaptive_fg-synthetic"),
                       ("adaptive_fg-synthetic_users-paper", "adaptive_fg-synthetic_users")):
        paper, shipped = load_preset(name), load_preset(twin)
        assert paper["train"]["init_from"] == shipped["train"]["init_from"], name
        assert paper["model"] == shipped["model"], name
    for name in ("adaptive_fg-qmul_v1-paper", "adaptive_fg-qmul_v1_chairs-paper"):
        assert load_preset(name)["train"]["init_from"] is None, name
    # a run folder or null over a preset's spec replaces it whole
    shipped = load_preset("adaptive_fg-synthetic")
    assert apply_overrides(shipped, ["train.init_from=runs/base"])["train"]["init_from"] == "runs/base"
    assert apply_overrides(shipped, ["train.init_from=null"])["train"]["init_from"] is None
    with pytest.raises(ConfigError, match="train.init_from: expected null or a run folder or {preset: NAME"):
        Trainer(apply_overrides(shipped, ["train.init_from={presets: x}"]))


def test_the_spec_run_takes_the_runs_seed_and_data_root_and_no_baseline_of_its_own():
    config = apply_overrides(load_preset("adaptive_fg-qmul_v1"), ["seed=3", "data.root=/data/qmul v1"])
    spec = preset_spec(config["train"]["init_from"], config)
    assert spec["overrides"] == [*SUPERVISED, "seed=3", 'data.root="/data/qmul v1"', "train.init_from=null"]
    assert apply_overrides(load_preset("adaptive_fg-qmul_v1"), spec["overrides"])["data"]["root"] == "/data/qmul v1"
    # the preset's own values add nothing; an override of the spec's own is kept as it is
    same = preset_spec({"preset": "adaptive_fg-synthetic", "overrides": ["seed=5"]}, load_preset("adaptive_fg-synthetic"))
    assert same["overrides"] == ["seed=5", "train.init_from=null"]


def test_one_command_trains_the_baseline_once_and_equals_the_two_command_path(tiny_preset, tmp_path, capsys):
    # a dry run says what it would train and trains nothing
    Trainer(tiny_preset, tmp_path / "one" / "dry").check()
    assert "afg-tiny would be trained into" in capsys.readouterr().err
    base = tmp_path / "one" / ("afg-tiny-" + hashlib.sha256("\n".join([*SUPERVISED, "train.init_from=null"])
                                                          .encode()).hexdigest()[:8])
    assert not base.exists()

    # one command: the baseline is trained beside the run, then the run starts from it
    Trainer(tiny_preset, tmp_path / "one" / "run").fit()
    assert f"training afg-tiny into {base}" in capsys.readouterr().err
    assert (base / "best.pt").is_file()
    record = json.loads((tmp_path / "one" / "run" / "meta.json").read_text())["init_from"]
    assert record["run"] == str(base) and record["preset"]["overrides"][-1] == "train.init_from=null"
    assert record["branches"]["sketch"]["parts"] == {"attention": "all", "backbone": "all", "head": "all"}

    # two commands: the baseline (the commands from before the preset named it: the baseline command is
    # the spec's run itself, so it trains from scratch), then train.init_from=RUN
    two = tmp_path / "two"
    Trainer(apply_overrides(tiny_preset, SUPERVISED), two / "base").fit()
    Trainer(apply_overrides(tiny_preset, [f"train.init_from={two / 'base'}"]), two / "run").fit()
    for which in ("best", "last"):
        assert _same(_weights(base, which), _weights(two / "base", which)), which
        assert _same(_weights(tmp_path / "one" / "run", which), _weights(two / "run", which)), which
    assert not _same(_weights(base, "last"), _weights(two / "run", "last"))  # meta-training moved it

    # a second run reuses the baseline (not trained again) and trains to the same weights
    stamp = (base / "best.pt").stat().st_mtime_ns
    Trainer(tiny_preset, tmp_path / "one" / "again").fit()
    assert "training afg-tiny" not in capsys.readouterr().err and (base / "best.pt").stat().st_mtime_ns == stamp
    assert _same(_weights(tmp_path / "one" / "again", "last"), _weights(two / "run", "last"))
    # the baseline command itself (the preset + the spec's overrides) is the spec's run: it trains from
    # scratch, not from a copy of itself (the two-command path without train.init_from=null)
    own = Trainer(apply_overrides(tiny_preset, SUPERVISED), tmp_path / "one" / "own")
    own.check()
    assert own.init_record is None and not own.method.starts_from_run
    assert "this run is the run of afg-tiny" in capsys.readouterr().err
    assert starts_from_run(tiny_preset) and not starts_from_run(apply_overrides(tiny_preset, SUPERVISED))
    assert not starts_from_run(apply_overrides(tiny_preset, ["train.init_from=null"]))
    # the saved config keeps the spec, and the run loads
    method, config = load_run(tmp_path / "one" / "run")
    assert config["train"]["init_from"] == SPEC and type(method).__name__ == "AdaptiveFG"
