"""Encoders: embeddings, shared vs separate branches, gradient routing, input normalisation."""

from __future__ import annotations

import pytest
import torch

from sbirkit.models import EmbeddingHead, Encoder, SketchPhotoEncoder, create_backbone, create_encoder
from sbirkit.models.encoders import InputNorm


def _ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("attention", [False, True])
def test_create_encoder_embeddings_are_unit_vectors(attention):
    model = create_encoder("tiny_cnn", embed_dim=16, attention=attention).eval()
    x = torch.rand(4, 3, 64, 64)
    for z in (model.encode_sketch(x), model.encode_photo(x), model(x, "sketch")):
        assert z.shape == (4, 16)
        torch.testing.assert_close(z.norm(dim=1), torch.ones(4))
    assert model.embed_dim == 16
    assert (model.encoder.attention is not None) == attention
    assert model.config["backbone"] == "tiny_cnn" and model.config["attention"] == attention


def test_shared_branch_uses_one_parameter_set():
    model = create_encoder("tiny_cnn", embed_dim=8, shared=True).eval()
    assert model.branch("sketch") is model.branch("photo") is model.encoder
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.encode_sketch(x), model.encode_photo(x))
    assert _ids(model) == _ids(model.encoder)
    model.encode_photo(x).sum().backward()
    assert all(p.grad is not None for p in model.encoder.head.parameters())


def test_separate_branches_have_disjoint_parameters_and_route_gradients():
    model = create_encoder("tiny_cnn", embed_dim=8, shared=False)
    sketch, photo = model.branch("sketch"), model.branch("photo")
    assert sketch is model.sketch_encoder and photo is model.photo_encoder and sketch is not photo
    assert not _ids(sketch) & _ids(photo)
    assert _ids(model) == _ids(sketch) | _ids(photo)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    assert not torch.allclose(model.encode_sketch(x), model.encode_photo(x))  # built separately
    model.encode_sketch(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sketch.head.parameters())
    assert all(p.grad is None for p in photo.parameters())


def test_separate_branches_copy_when_photo_encoder_missing():
    enc = Encoder(create_backbone("tiny_cnn"), EmbeddingHead(64, 8))
    model = SketchPhotoEncoder(enc, shared=False).eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.encode_sketch(x), model.encode_photo(x))  # same start
    assert not _ids(model.sketch_encoder) & _ids(model.photo_encoder)  # independent after


def test_two_different_backbones():
    model = create_encoder("tiny_cnn", embed_dim=12, shared=False, photo_backbone="tiny_cnn_wide")
    assert model.sketch_encoder.backbone.num_features == 64
    assert model.photo_encoder.backbone.num_features == 128
    assert model.encode_photo(torch.rand(2, 3, 32, 32)).shape == (2, 12)


def test_branch_arguments_are_checked():
    enc = Encoder(create_backbone("tiny_cnn"), EmbeddingHead(64, 8))
    other = Encoder(create_backbone("tiny_cnn"), EmbeddingHead(64, 4))
    with pytest.raises(ValueError, match="expected None .* when shared=True"):
        SketchPhotoEncoder(enc, other, shared=True)
    with pytest.raises(ValueError, match="embed_dim: expected 8"):
        SketchPhotoEncoder(enc, other, shared=False)
    with pytest.raises(ValueError, match="modality: expected 'photo' or 'sketch'"):
        SketchPhotoEncoder(enc).encode(torch.rand(1, 3, 32, 32), "drawing")
    with pytest.raises(ValueError, match=r"head.in_dim: expected backbone.num_features = 64, got 32"):
        Encoder(create_backbone("tiny_cnn"), EmbeddingHead(32, 8))
    with pytest.raises(ValueError, match="photo_backbone: expected None with shared=True"):
        create_encoder("tiny_cnn", photo_backbone="tiny_cnn_wide")


def test_input_norm_is_applied_before_the_backbone():
    backbone = create_backbone("tiny_cnn").eval()
    head = EmbeddingHead(64, 8)
    x = torch.rand(2, 3, 32, 32)
    raw = Encoder(backbone, head, input_norm=None).eval()
    imagenet = Encoder(backbone, head, input_norm="imagenet").eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(imagenet(x), raw((x - mean) / std))
    assert imagenet.state_dict().keys() == raw.state_dict().keys()  # stats are config, not weights
    with pytest.raises(ValueError, match="input_norm: expected"):
        Encoder(backbone, head, input_norm="cifar")


def test_input_norm_auto_follows_the_backbone():
    assert create_encoder("tiny_cnn").encoder.input_norm is None  # tiny nets take raw [0, 1]
    lite = create_encoder("efficientnet_lite0", embed_dim=8).encoder.input_norm
    assert isinstance(lite, InputNorm) and torch.equal(lite.mean.flatten(), torch.full((3,), 0.5))
    tv = create_encoder("tiny_cnn", input_norm="imagenet").encoder.input_norm
    torch.testing.assert_close(tv.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_encoder_with_pretrained_weights_file(tmp_path, no_network):
    src = create_backbone("tiny_cnn")
    path = tmp_path / "sketch.pt"
    torch.save(src.state_dict(), path)
    model = create_encoder("tiny_cnn", embed_dim=8, shared=False, pretrained=True, weights=path)
    for branch in (model.sketch_encoder, model.photo_encoder):
        assert torch.equal(branch.backbone.features[0].weight, src.features[0].weight)
    assert model.config["weights"] == str(path)


def test_cut_backbone_and_grid_pooling_size_the_head():
    model = create_encoder("tiny_cnn", embed_dim=8, backbone_stages=3, pool="grid", pool_grid=2)
    branch = model.branch("sketch")
    assert branch.backbone.num_stages == 3 and branch.head.in_dim == 32 * 4  # tiny_cnn stage 2: 32 channels
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert branch.features(x).shape == (2, 128)
    z = model(x, "photo")
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))
    assert model.config["backbone_stages"] == 3 and model.config["pool_grid"] == 2
    att = create_encoder("tiny_cnn", embed_dim=8, attention=True, pool="grid", pool_grid=3)
    assert att.branch("sketch").head.in_dim == 64 * 9
    # the same weights load into a model built from the recorded config (what load_run does)
    again = create_encoder(**{k: v for k, v in model.config.items() if v is not None})
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again(x, "photo"), z)
