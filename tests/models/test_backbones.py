"""Backbone factory: shapes, names, offline-only pretrained weights, strict local loading."""

from __future__ import annotations

import pytest
import torch

from sbirkit.data import DataError
from sbirkit.models import WeightsError, create_backbone, list_backbones, read_state_dict

TINY = {"tiny_cnn": (64, (8, 16, 32, 64)), "tiny_cnn_wide": (128, (16, 32, 64, 128))}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_list_backbones_names_registered_and_families():
    names = list_backbones()
    assert {"tiny_cnn", "tiny_cnn_wide", "doodlenet", "efficientnet_lite0"} <= set(names)
    assert "tv/resnet18" in list_backbones("tv/resnet*") and "tv/vgg16" in list_backbones("tv/vgg*")
    assert "timm/test_resnet" in list_backbones("timm/test_*")
    assert list_backbones("tiny_*") == ["tiny_cnn", "tiny_cnn_wide"]


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_backbone_shapes(name):
    dim, widths = TINY[name]
    model = create_backbone(name).eval()
    x = torch.rand(5, 3, 64, 64)
    assert model.num_features == model.feature_channels == dim
    assert model.forward_features(x).shape == (5, dim, 4, 4)  # four stride-2 layers: 64 / 16
    out = model(x)
    assert out.shape == (5, dim)
    torch.testing.assert_close(out, model.forward_features(x).mean(dim=(2, 3)))
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == list(widths)


def test_tiny_backbone_in_chans():
    model = create_backbone("tiny_cnn", in_chans=1).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 64)


def test_timm_backbone_shapes():
    model = create_backbone("timm/test_resnet").eval()
    x = torch.rand(2, 3, 64, 64)
    fmap = model.forward_features(x)
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, model.feature_channels)
    assert model(x).shape == (2, model.num_features)
    assert model.classifier_keys == ("fc",)
    assert model.input_stats is not None and len(model.input_stats[0]) == 3


def test_timm_prelogits_num_features_is_pooled_size():
    # mobilenetv3 has a 1x1 conv head after pooling: pooled size (head_hidden_size) != map channels
    model = create_backbone("timm/mobilenetv3_small_050").eval()
    assert model.num_features != model.feature_channels
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, model.num_features)
    assert model.forward_features(torch.rand(1, 3, 32, 32)).shape[1] == model.feature_channels


def test_torchvision_backbone_shapes():
    model = create_backbone("tv/resnet18").eval()
    x = torch.rand(2, 3, 32, 32)
    assert (model.num_features, model.feature_channels) == (512, 512)
    assert model(x).shape == (2, 512)
    assert model.forward_features(x).shape == (2, 512, 1, 1)
    assert model.classifier_keys == ("fc",)
    assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())


@pytest.mark.parametrize(
    "name, pooled, channels, dropped",
    [
        ("tv/vgg16", 4096, 512, "classifier.6"),  # VGG keeps fc6-fc7
        ("tv/resnet50", 2048, 2048, "fc"),
        ("tv/mobilenet_v3_small", 1024, 576, "classifier.3"),
        ("tv/densenet121", 1024, 1024, "classifier"),
        ("tv/efficientnet_b0", 1280, 1280, "classifier.1"),
    ],
)
def test_torchvision_families_shapes_on_meta(name, pooled, channels, dropped):
    # built on the meta device: no memory, no init cost; forward still checks every shape
    with torch.device("meta"):
        model = create_backbone(name).eval()
        x = torch.empty(2, 3, 64, 64)
        assert model(x).shape == (2, pooled)
        assert model.forward_features(x).shape == (2, channels, 2, 2)
    assert (model.num_features, model.feature_channels, model.classifier_keys) == (pooled, channels, (dropped,))
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in model.modules())


def test_unknown_names_raise():
    with pytest.raises(KeyError, match="unknown backbone 'nope'.*tiny_cnn"):
        create_backbone("nope")
    with pytest.raises(KeyError, match="timm model 'nope'"):
        create_backbone("timm/nope")
    with pytest.raises(KeyError, match="torchvision model 'vit_b_16'"):
        create_backbone("tv/vit_b_16")


@pytest.mark.parametrize("name", ["tiny_cnn", "timm/test_resnet", "tv/resnet18", "doodlenet"])
def test_pretrained_without_weights_is_a_clear_offline_error(name, no_network):
    with pytest.raises(WeightsError) as info:
        create_backbone(name, pretrained=True)
    msg = str(info.value)
    assert "\n" not in msg and f"{name!r}" in msg and "weights=PATH" in msg and "nothing is downloaded" in msg
    assert isinstance(info.value, DataError)


def test_no_network_fixture_really_blocks(no_network):
    import socket

    with pytest.raises(AssertionError, match="network access"):
        socket.create_connection(("example.com", 80))


def test_state_dict_round_trips_exactly(tmp_path, no_network):
    src = create_backbone("tiny_cnn")
    src.train()
    src(torch.rand(4, 3, 32, 32))  # move BN running stats off their defaults
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    fresh = create_backbone("tiny_cnn")
    assert not _same_state(fresh.state_dict(), src.state_dict())
    loaded = create_backbone("tiny_cnn", pretrained=True, weights=path)
    assert _same_state(loaded.state_dict(), src.state_dict())
    assert loaded.weights_source == str(path) and loaded.ignored_weight_keys == ()
    x = torch.rand(3, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(x), src.eval()(x), rtol=0, atol=0)


def test_nested_checkpoint_and_module_prefix(tmp_path):
    src = create_backbone("tiny_cnn")
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "model": {"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}}, path)
    assert set(read_state_dict(path)) == set(src.state_dict())
    loaded = create_backbone("tiny_cnn", weights=path)  # weights alone also loads
    assert _same_state(loaded.state_dict(), src.state_dict())


def test_wrapper_and_native_keys_both_load(tmp_path):
    src = create_backbone("timm/test_resnet")
    wrapped, native = tmp_path / "wrapped.pt", tmp_path / "native.pt"
    torch.save(src.state_dict(), wrapped)  # keys "model.*"
    torch.save(src.model.state_dict(), native)  # timm's own keys
    for path in (wrapped, native):
        assert _same_state(create_backbone("timm/test_resnet", weights=path).state_dict(), src.state_dict())


def test_native_torchvision_checkpoint_drops_only_the_classifier(tmp_path, no_network):
    import torchvision

    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    model = create_backbone("tv/resnet18", pretrained=True, weights=path)
    assert model.ignored_weight_keys == ("fc.bias", "fc.weight")
    assert torch.equal(model.model.conv1.weight, full.conv1.weight)
    full.fc = torch.nn.Identity()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), full.eval()(x))


def test_three_channel_weights_adapt_to_one_channel(tmp_path):
    src = create_backbone("tiny_cnn")
    path = tmp_path / "rgb.pt"
    torch.save(src.state_dict(), path)
    gray = create_backbone("tiny_cnn", in_chans=1, weights=path)
    torch.testing.assert_close(gray.features[0].weight, src.features[0].weight.sum(dim=1, keepdim=True))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(gray.eval()(x), src.eval()(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_mismatched_weights_list_the_keys(tmp_path):
    state = create_backbone("tiny_cnn").state_dict()
    state.pop("features.1.running_var")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        create_backbone("tiny_cnn", weights=path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert "missing 1 keys [features.1.running_var]" in msg and "unexpected 1 keys [extra.weight]" in msg

    torch.save(create_backbone("tiny_cnn").state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape mismatch .*features\.0\.weight \(8, 3, 3, 3\) vs \(16, 3, 3, 3\)"):
        create_backbone("tiny_cnn_wide", weights=path)


def test_unreadable_weight_files(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        create_backbone("tiny_cnn", weights=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=f"{junk}: weights: could not read"):
        create_backbone("tiny_cnn", weights=junk)
    odd = tmp_path / "odd.pt"
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, odd)
    with pytest.raises(WeightsError, match="non-tensor entries"):
        read_state_dict(odd)


def test_torchvision_in_chans_replaces_the_first_conv(tmp_path):
    import torchvision

    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    gray = create_backbone("tv/resnet18", in_chans=1, weights=path).eval()
    assert gray.model.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(gray.model.conv1.weight, full.conv1.weight.sum(dim=1, keepdim=True))
    assert gray(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def test_truncated_backbone_is_the_first_stages_of_the_full_one():
    from sbirkit.models.base import TruncatedBackbone

    full = create_backbone("tiny_cnn").eval()
    twin = create_backbone("tiny_cnn")
    twin.load_state_dict(full.state_dict())
    buffers = {k: v.clone() for k, v in twin.state_dict().items()}
    cut = TruncatedBackbone(twin, 2).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cut.forward_features(x), full.run_stages(x, 0, 2))
    assert cut.num_stages == 2 and cut.feature_channels == cut.num_features == full.run_stages(x, 0, 2).shape[1]
    assert cut(x).shape == (2, cut.num_features)
    # the later stages are gone from the parameters and the state dict, and the channel probe moved no statistic
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in full.parameters())
    kept = {k.removeprefix("inner."): v for k, v in cut.state_dict().items()}
    assert set(kept) < set(buffers)
    for k, v in kept.items():
        assert torch.equal(v, buffers[k]), k
    with pytest.raises(IndexError):
        cut.run_stages(x, 0, 3)
    with pytest.raises(ValueError, match=r"model.backbone_stages: expected 1..4"):
        TruncatedBackbone(create_backbone("tiny_cnn"), 5)
    with pytest.raises(ValueError, match=r"model.backbone_stages: expected 1..4"):
        TruncatedBackbone(create_backbone("tiny_cnn"), 0)
