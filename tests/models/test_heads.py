"""Heads: pooling against numpy, spatial attention against its documented formula, embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sbirkit.models import EmbeddingHead, GlobalPool, SpatialAttention, global_pool


@pytest.fixture
def fmap() -> torch.Tensor:
    return torch.rand(3, 5, 4, 6, generator=torch.Generator().manual_seed(0)) + 0.05


def test_global_pool_matches_numpy(fmap):
    a = fmap.numpy()
    np.testing.assert_allclose(global_pool(fmap, "avg").numpy(), a.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(global_pool(fmap, "max").numpy(), a.max(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_allclose(global_pool(fmap, "gem", 3.0).numpy(), np.mean(a**3, axis=(2, 3)) ** (1 / 3), rtol=1e-5)
    torch.testing.assert_close(global_pool(fmap, "gem", 1.0), global_pool(fmap, "avg"))
    with pytest.raises(ValueError, match="mode: expected one of"):
        global_pool(fmap, "median")
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) map"):
        global_pool(fmap.flatten(2), "avg")


def test_gem_pool_learns_p(fmap):
    pool = GlobalPool("gem", p=2.0)
    pool(fmap).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs() > 0


@pytest.mark.parametrize("hidden", [None, 8])
@pytest.mark.parametrize("mode", ["softmax", "sigmoid"])
def test_attention_shapes_and_map_semantics(fmap, mode, hidden):
    att = SpatialAttention(5, hidden=hidden, mode=mode)
    pooled, amap = att(fmap, return_map=True)
    assert pooled.shape == (3, 5) and amap.shape == (3, 1, 4, 6)
    if mode == "softmax":
        torch.testing.assert_close(amap.sum(dim=(1, 2, 3)), torch.ones(3))
    else:
        assert bool(((amap > 0) & (amap < 1)).all())
    # the documented formula: pool(f * (1 + a))
    torch.testing.assert_close(pooled, (fmap * (1 + amap)).mean(dim=(2, 3)))


def test_attention_flat_map_values(fmap):
    soft, sig = SpatialAttention(5, mode="softmax"), SpatialAttention(5, mode="sigmoid")
    for att in (soft, sig):
        torch.nn.init.zeros_(att.score.weight)
        torch.nn.init.zeros_(att.score.bias)
    plain = fmap.mean(dim=(2, 3))
    torch.testing.assert_close(soft(fmap), plain * (1 + 1 / 24))  # uniform 1/(H*W)
    torch.testing.assert_close(sig(fmap), plain * 1.5)  # sigmoid(0) = 0.5


def test_attention_matches_numpy_reference(fmap):
    att = SpatialAttention(5, mode="softmax")
    w = att.score.weight.detach().numpy().reshape(5)
    b = float(att.score.bias.detach())
    f = fmap.numpy()
    logits = np.einsum("bchw,c->bhw", f, w) + b
    e = np.exp(logits - logits.reshape(3, -1).max(axis=1)[:, None, None])
    a = e / e.reshape(3, -1).sum(axis=1)[:, None, None]
    expected = (f * (1 + a[:, None])).mean(axis=(2, 3))
    np.testing.assert_allclose(att(fmap).detach().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_attention_prefers_the_scored_cell():
    att = SpatialAttention(2, mode="softmax")
    with torch.no_grad():
        att.score.weight.copy_(torch.tensor([10.0, 0.0]).view(1, 2, 1, 1))
        att.score.bias.zero_()
    f = torch.zeros(1, 2, 3, 3)
    f[0, 0, 1, 2] = 1.0  # one salient cell in channel 0
    amap = att.attention_map(f)
    assert amap.flatten().argmax().item() == 1 * 3 + 2
    assert amap[0, 0, 1, 2] > 0.99


def test_attention_rejects_token_inputs():
    with pytest.raises(ValueError, match=r"expected a \(B, 5, H, W\) feature map, got shape \(2, 17, 5\)"):
        SpatialAttention(5)(torch.rand(2, 17, 5))
    with pytest.raises(ValueError, match="mode: expected 'softmax' or 'sigmoid'"):
        SpatialAttention(5, mode="relu")


@pytest.mark.parametrize("hidden", [None, 16])
def test_embedding_head_is_l2_normalised(hidden):
    head = EmbeddingHead(10, 6, hidden=hidden, dropout=0.1).eval()
    z = head(torch.randn(7, 10) * 5)
    assert z.shape == (7, 6)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(7))


def test_embedding_head_without_normalisation_is_the_linear_map():
    head = EmbeddingHead(4, 3, normalize=False)
    x = torch.randn(2, 4)
    linear = head.proj[-1]
    torch.testing.assert_close(head(x), x @ linear.weight.T + linear.bias)
    with pytest.raises(ValueError, match=r"expected shape \(B, 4\), got \(2, 5\)"):
        head(torch.randn(2, 5))


def test_grid_pool_matches_numpy_cells():
    fmap = torch.rand(2, 3, 4, 6, generator=torch.Generator().manual_seed(1))
    a = fmap.numpy()
    out = global_pool(fmap, "grid", grid=2)
    assert out.shape == (2, 3 * 4)
    cells = np.stack([a[:, :, 2 * i:2 * i + 2, 3 * j:3 * j + 3].mean(axis=(2, 3)) for i in range(2) for j in range(2)],
                     axis=2)  # (B, C, cell), channel-major like flatten(1) of a (B, C, 2, 2) map
    np.testing.assert_allclose(out.numpy(), cells.reshape(2, -1), rtol=1e-6)
    torch.testing.assert_close(global_pool(fmap, "grid", grid=1), global_pool(fmap, "avg"))
    pool = GlobalPool("grid", grid=3)
    assert pool(fmap).shape == (2, 27) and pool.width(3) == 27 and "grid=3" in repr(pool)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="grid: expected an integer >= 1"):
            GlobalPool("grid", grid=bad)


def test_grid_pool_keeps_the_layout_that_global_pooling_loses():
    # the same strokes in the top-left or the bottom-right corner: one vector under average pooling
    a = torch.zeros(1, 1, 8, 8)
    b = torch.zeros(1, 1, 8, 8)
    a[..., :4, :4] = 1.0
    b[..., 4:, 4:] = 1.0
    torch.testing.assert_close(global_pool(a, "avg"), global_pool(b, "avg"))
    assert not torch.allclose(global_pool(a, "grid", grid=2), global_pool(b, "grid", grid=2))


def test_attention_with_grid_pooling_widens_its_output(fmap):
    att = SpatialAttention(5, pool="grid", grid=2)
    assert att(fmap).shape == (3, 5 * 4)
