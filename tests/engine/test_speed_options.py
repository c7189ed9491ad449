"""The throughput options (DataLoader workers, channels-last, torch.compile, CUDA autocast) change
how fast a run trains, not what it learns."""

from __future__ import annotations

import pytest
import tiny_pairs  # noqa: F401  (registers the tiny_pairs dataset)
import torch
from runs_helper import tiny_config

from sbirkit.engine import Trainer


def _weights(config, run_dir):
    Trainer(config, run_dir).fit()
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def test_dataloader_workers_build_the_same_batches(tmp_path):
    base = _weights(tiny_config("train.steps=6", "train.eval_every=0", "data.augment={photo: {flip: 0.5}}"),
                    tmp_path / "w0")
    workers = _weights(tiny_config("train.steps=6", "train.eval_every=0", "data.augment={photo: {flip: 0.5}}",
                                   "train.num_workers=2"), tmp_path / "w2")
    assert all(torch.equal(base[k], workers[k]) for k in base)


def test_channels_last_trains_the_same_model(tmp_path):
    base = _weights(tiny_config("train.steps=6", "train.eval_every=0"), tmp_path / "a")
    fast = _weights(tiny_config("train.steps=6", "train.eval_every=0", "train.channels_last=true"), tmp_path / "b")
    # other convolution kernels, other summation order: equal up to float rounding amplified by Adam
    assert all(torch.allclose(base[k].float(), fast[k].float(), atol=1e-3) for k in base)


@pytest.mark.slow
def test_compiled_branches_train_the_same_model_and_keep_checkpoint_keys(tmp_path):
    base = _weights(tiny_config("train.steps=4", "train.eval_every=0"), tmp_path / "a")
    compiled = _weights(tiny_config("train.steps=4", "train.eval_every=0", "train.compile=true"), tmp_path / "b")
    assert set(base) == set(compiled)
    assert all(torch.allclose(base[k].float(), compiled[k].float(), atol=1e-3) for k in base)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_cuda_training_with_autocast_runs_and_learns(tmp_path, amp):
    trainer = Trainer(tiny_config("train.steps=20", "train.device=cuda", f"train.amp={amp}",
                                  "train.channels_last=true"), tmp_path / amp)
    trainer.fit()
    from sbirkit.engine.runlog import read_metrics

    losses = [r["loss"] for r in read_metrics(tmp_path / amp / "metrics.jsonl") if "loss" in r]
    assert losses[-1] < losses[0] and all(v == v for v in losses)
