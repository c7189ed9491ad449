"""Presets, ``extends:``, typed dotted overrides and unknown-key errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sbirkit.engine.config import (
    DEFAULTS,
    ConfigError,
    apply_overrides,
    changed_keys,
    configs_dirs,
    list_presets,
    load_preset,
    parse_override,
    save_config,
)

SHIPPED = ("triplet-synthetic", "siamese-synthetic", "triplet_sn-synthetic", "triplet_sn-qmul_v1")


def test_shipped_presets_resolve_and_name_known_methods():
    from sbirkit.methods import list_methods

    assert set(SHIPPED) <= set(list_presets())
    for name in SHIPPED:
        cfg = load_preset(name)
        assert cfg["name"] == name
        assert cfg["method"]["name"] in list_methods()
        assert set(cfg) == set(DEFAULTS)
    qmul = load_preset("triplet_sn-qmul_v1")
    assert qmul["data"]["name"] == "qmul-v1" and qmul["method"]["name"] == "triplet_sn"
    assert load_preset("triplet_sn-synthetic")["method"]["name"] == "triplet_sn"


def test_shipped_presets_that_fine_tune_a_pretrained_backbone_keep_its_batchnorm_statistics(monkeypatch):
    # re-estimating ImageNet statistics from small batches of sketches or 32-64 px images cost
    # every such preset most of its score (BENCHMARKS.md); a new preset should not repeat that
    monkeypatch.delenv("SBIRKIT_CONFIGS", raising=False)
    fine_tuned = []
    for name in list_presets():
        cfg = load_preset(name)
        if cfg["model"].get("pretrained") and not cfg["train"]["cached_features"]:
            fine_tuned.append(name)
            assert cfg["train"]["backbone_bn"] == "frozen", name
    assert {"triplet_sn-qmul_v1", "triplet-quickdraw_cifar10", "zscmr-synthetic-e2e"} <= set(fine_tuned)


def test_presets_ship_inside_the_package_and_a_user_folder_comes_first(tmp_path, monkeypatch):
    import sbirkit
    from sbirkit.engine.config import configs_dirs

    monkeypatch.delenv("SBIRKIT_CONFIGS", raising=False)
    packaged = Path(sbirkit.__file__).parent / "configs"
    assert configs_dirs() == [packaged]  # package data: a wheel install has the presets too
    shipped = sorted(p.stem for p in packaged.glob("*.yaml"))
    assert shipped == list_presets() and len(shipped) >= 12
    (tmp_path / "mine.yaml").write_text("extends: triplet-synthetic\ntrain: {steps: 7}\n")
    (tmp_path / "triplet-synthetic-zs.yaml").write_text("extends: zscmr-synthetic\ntrain: {steps: 9}\n")
    monkeypatch.setenv("SBIRKIT_CONFIGS", str(tmp_path))
    assert list_presets() == sorted([*shipped, "mine"])
    mine = load_preset("mine")  # a user preset extending a shipped one
    assert mine["train"]["steps"] == 7 and mine["method"]["name"] == load_preset("triplet-synthetic")["method"]["name"]
    assert load_preset("triplet-synthetic-zs")["train"]["steps"] == 9  # the user's folder shadows the package
    with pytest.raises(ConfigError, match="not found in"):
        load_preset("nope")


@pytest.mark.parametrize("raw, expected", [
    ("1e-5", 1e-5), ("1E3", 1000.0), ("-2.5e-3", -2.5e-3), (".5e2", 50.0), ("1.0e-3", 1e-3), ("3", 3), ("0.5", 0.5),
    ("1e", "1e"), ("e5", "e5"), ("abc1e5", "abc1e5"), ("1e5x", "1e5x"), ("null", None)])
def test_override_values_read_exponent_floats_as_yaml_1_2_does(raw, expected):
    key, value = parse_override(f"train.backbone_lr={raw}")
    assert key == "train.backbone_lr" and value == expected and type(value) is type(expected)


def test_a_preset_value_in_exponent_form_is_a_float(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("extends: triplet-synthetic\ntrain: {backbone_lr: 1e-5}\n")
    assert load_preset(str(path))["train"]["backbone_lr"] == 1e-5


def test_extends_merges_deeply(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {steps: 50, lr: 0.01}\nmethod: {name: siamese, margin: 0.5}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\ntrain: {steps: 7}\n")
    cfg = load_preset(tmp_path / "child.yaml")
    assert cfg["train"]["steps"] == 7 and cfg["train"]["lr"] == 0.01
    assert cfg["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert cfg["method"] == {"name": "siamese", "margin": 0.5} and cfg["name"] == "child"
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_preset(tmp_path / "loop.yaml")


def test_unknown_key_in_preset_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {stepz: 5}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'train\.stepz'"):
        load_preset(path)
    with pytest.raises(ConfigError, match="preset 'nope'"):
        load_preset("nope")


def test_overrides_are_typed():
    cfg = load_preset("triplet-synthetic")
    out = apply_overrides(cfg, ["train.steps=200", "model.backbone=tiny_cnn_wide", "train.lr=1e-3",
                                "train.weight_decay=0", "train.progress=false", "method.margin=0.3",
                                "data.options.num_classes=5", "eval.directions=[sketch2photo, photo2sketch]",
                                "model.weights=null"])
    assert out["train"]["steps"] == 200 and isinstance(out["train"]["steps"], int)
    assert out["train"]["lr"] == pytest.approx(1e-3) and isinstance(out["train"]["lr"], float)
    assert out["train"]["weight_decay"] == 0.0 and isinstance(out["train"]["weight_decay"], float)
    assert out["train"]["progress"] is False
    assert out["model"]["backbone"] == "tiny_cnn_wide" and out["model"]["weights"] is None
    assert out["method"]["margin"] == 0.3 and out["data"]["options"]["num_classes"] == 5
    assert out["eval"]["directions"] == ["sketch2photo", "photo2sketch"]
    assert cfg["train"]["steps"] != 200  # the input is not modified
    # open sections take new keys; the method itself validates them (see tests/methods)
    assert apply_overrides(cfg, ["method.mining=semi_hard"])["method"]["mining"] == "semi_hard"
    assert parse_override("data.root=/x/y=z") == ("data.root", "/x/y=z")


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown key 'train.stepz'"),
    ("trian.steps=3", "unknown key 'trian'"),
    ("train.steps=many", "expected an int"),  # issue 8: not "a int"
    ("train.progress=3", "expected a bool"),
    ("train=3", "is a section"),
    ("train.steps", "expected key=value"),
    ("model.backbon=tiny_cnn", "unknown key 'model.backbon'"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_preset("triplet-synthetic"), [override])


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(load_preset("triplet-synthetic"), ["train.steps=9"])
    save_config(cfg, tmp_path / "config.yaml")
    back = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert back == cfg
    assert changed_keys(back, cfg) == []
    assert changed_keys(back, apply_overrides(cfg, ["train.lr=0.5", "train.progress=false"])) == ["train.lr"]


def test_switching_method_or_dataset_drops_their_options(tmp_path):
    cfg = load_preset("triplet-synthetic")
    out = apply_overrides(cfg, ["method.margin=0.7", "method.name=siamese"])  # names apply first
    assert out["method"] == {"name": "siamese", "margin": 0.7}
    out = apply_overrides(cfg, ["data.name=qmul-v1", "data.root=/q"])
    assert out["data"]["options"] == {} and out["data"]["root"] == "/q"
    assert out["data"]["train_split"] == cfg["data"]["train_split"]
    # the same rule for extends: a child naming another method does not inherit its options
    assert "mining" not in load_preset("siamese-synthetic")["method"]
    # model takes any create_encoder keyword
    assert apply_overrides(cfg, ["model.dropout=0.1"])["model"]["dropout"] == 0.1
    (tmp_path / "m.yaml").write_text("model: {hidden: 64}\n")
    assert load_preset(tmp_path / "m.yaml")["model"]["hidden"] == 64


def test_a_folder_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    """The rule (docs/training.md): a path has a separator or ends in .yaml/.yml; a bare name is a
    preset first, whatever the working directory holds; a bare name that is no preset may be a file."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SBIRKIT_CONFIGS", raising=False)
    shipped = load_preset("triplet-synthetic")
    (tmp_path / "triplet-synthetic").mkdir()  # e.g. the run folder of an earlier `--run-dir triplet-synthetic`
    (tmp_path / "triplet-synthetic" / "config.yaml").write_text("train: {steps: 3}\n")
    assert load_preset("triplet-synthetic") == shipped
    (tmp_path / "triplet_sn-synthetic").write_text("extends: triplet-synthetic\ntrain: {steps: 5}\n")
    assert load_preset("triplet_sn-synthetic") == load_preset(Path(configs_dirs()[-1]) / "triplet_sn-synthetic.yaml")
    # a path reads the file, and a folder given as a path is a one-line error naming it
    assert load_preset("./triplet_sn-synthetic")["train"]["steps"] == 5
    with pytest.raises(ConfigError, match=r"^triplet-synthetic/?: expected a preset YAML file, found a folder$"):
        load_preset("triplet-synthetic/")
    # a bare name that is no preset: an existing file is read; a folder is named in the error
    (tmp_path / "mine").write_text("extends: triplet-synthetic\ntrain: {steps: 4}\n")
    assert load_preset("mine")["train"]["steps"] == 4
    (tmp_path / "myrun").mkdir()
    with pytest.raises(ConfigError, match=r"preset 'myrun': not found in .*; known: .*\(myrun in the working "
                                          r"directory is a folder, not a config file"):
        load_preset("myrun")
