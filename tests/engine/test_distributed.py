"""Two processes (gloo, CPU) train like one process with the global batch: the gathered loss and its
gradients equal the single-process ones, a torchrun run ends with the same weights and validation
numbers, evaluation under torchrun equals one process's, and another world size cannot resume."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from sbirkit.engine import Trainer, evaluate_run
from sbirkit.engine.config import apply_overrides, load_preset
from sbirkit.engine.distributed import DistContext, average_gradients, gather, shard_bounds
from sbirkit.engine.runlog import read_metrics
from sbirkit.errors import ConfigError
from sbirkit.losses import CrossModalTripletLoss

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    x_s, x_p = torch.randn(8, 6), torch.randn(8, 6)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    return model, x_s, x_p, labels


def _loss(model, x_s, x_p, labels, ctx):
    s, p = torch.nn.functional.normalize(model(x_s), dim=1), torch.nn.functional.normalize(model(x_p), dim=1)
    s, p, labels = gather(s, ctx), gather(p, ctx), gather(labels, ctx)
    # a global-batch term (the triplet) plus a per-sample term (local, averaged by the gradient mean)
    return CrossModalTripletLoss("cosine", 0.5, "batch_hard")(s, p, labels)["loss"]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    warnings.simplefilter("error", FutureWarning)  # gather() must not use torch's deprecated all_gather
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ctx = DistContext(rank, world, rank)
    model, x_s, x_p, labels = _model_and_batch()
    lo, hi = shard_bounds(len(labels), rank, world)
    local_sq = model(x_s[lo:hi]).pow(2).mean()  # a per-sample term, computed on the local share only
    loss = _loss(model, x_s[lo:hi], x_p[lo:hi], labels[lo:hi], ctx) + local_sq
    loss.backward()
    average_gradients(list(model.parameters()), ctx)
    if rank == 0:
        torch.save({"loss": loss.detach(), "local_sq": local_sq.detach(),
                    "grads": [p.grad for p in model.parameters()]}, out)
    torch.distributed.barrier()  # no rank tears gloo down while its peer is still in a collective
    torch.distributed.destroy_process_group()


def test_gathered_loss_and_gradients_equal_one_process_with_the_global_batch(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    model, x_s, x_p, labels = _model_and_batch()
    single = DistContext()
    loss = _loss(model, x_s, x_p, labels, single) + model(x_s).pow(2).mean()
    loss.backward()
    triplet_part = loss.detach() - model(x_s).pow(2).mean().detach()
    assert torch.allclose(got["loss"] - got["local_sq"], triplet_part, atol=1e-6)  # the global term, on rank 0
    for g, p in zip(got["grads"], model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_shard_bounds_split_the_global_batch_evenly():
    assert [shard_bounds(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]
    with pytest.raises(ConfigError, match="multiple of the world size 2"):
        shard_bounds(7, 0, 2)


# ---- a whole run under torchrun ----------------------------------------------------------------
def _config():
    # no per-sample randomness in the forward pass and random negatives drawn on the gathered
    # batch: two processes must then follow one process exactly
    return apply_overrides(load_preset("triplet-synthetic"), [
        "data.options={num_classes: 4, photos_per_class: 8, image_size: 16, seed: 0}", "model.embed_dim=8",
        "method.mining=random", "method.classes_per_batch=4", "train.steps=8", "train.batch_size=8",
        "train.lr=0.003", "train.warmup_steps=2", "train.log_every=2", "train.eval_every=4",
        "train.checkpoint_every=4", "train.progress=false", "eval.batch_size=5",
        "eval.directions=[sketch2photo,photo2photo]"])


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "sbirkit", *args], env=env, capture_output=True, text=True, timeout=300)


def test_two_processes_train_like_one_process_with_the_global_batch(tmp_path, one_torch_thread):
    config = _config()
    Trainer(config, tmp_path / "one").fit()
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump({k: v for k, v in config.items() if k not in ("run_dir", "name")}))
    proc = _torchrun("train", str(preset), "--run-dir", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    one = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert two["world_size"] == 2 and one["world_size"] == 1
    # the same computation in another summation order (all-reduced BatchNorm sums, gathered batches):
    # after 8 Adam steps the weights agree to ~1e-4 (Adam rescales tiny gradient differences)
    for k in one["model"]:
        assert torch.allclose(one["model"][k].float(), two["model"][k].float(), atol=5e-4), k
    logs = [[r for r in read_metrics(tmp_path / d / "metrics.jsonl") if r.get("split") == "val"] for d in ("one", "two")]
    assert [r["step"] for r in logs[1]] == [4, 8]
    for a, b in zip(*logs):  # validation embedded in shards and gathered: the same numbers
        assert a["sketch2photo/map"] == pytest.approx(b["sketch2photo/map"], abs=1e-6)
    losses = [[r["loss"] for r in read_metrics(tmp_path / d / "metrics.jsonl") if "loss" in r] for d in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # logged: the mean over ranks = the global loss
    meta = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["source"]["world_size"] == 2

    # evaluation under torchrun: each rank embeds a share; the saved numbers are one process's
    single = evaluate_run(tmp_path / "two", split="test", save=False)
    proc = _torchrun("eval", str(tmp_path / "two"), "--split", "test", "-d", "sketch2photo", "-d", "photo2photo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((tmp_path / "two" / "eval-test-best.json").read_text())
    for d in ("sketch2photo", "photo2photo"):
        assert saved["results"][d]["metrics"] == pytest.approx(single["results"][d]["metrics"], abs=1e-6)

    # the run was trained by two processes: one cannot resume it
    from sbirkit.engine.config import read_config

    with pytest.raises(Exception, match="world_size: this run was trained by 2 process"):
        Trainer(read_config(tmp_path / "two" / "config.yaml"), tmp_path / "two").fit()
