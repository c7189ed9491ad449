"""Several processes, one run: ``torchrun --nproc_per_node N -m sbirkit train PRESET ...``.

The engine uses ``torch.distributed`` directly (gloo on CPU, NCCL on CUDA; the process group is
set up from torchrun's environment: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``):

* **Batches**: ``train.batch_size`` is the *global* batch. Every rank builds the same source, draws
  the same plan for each step and keeps its contiguous share (:func:`shard_bounds`), so gathering
  the shares in rank order gives exactly the batch one process would have had.
* **Losses that need other samples** (triplet mining, InfoNCE) call ``ctx.gather(x)``: a
  gradient-preserving all-gather (``torch.distributed._functional_collectives.all_gather_single_autograd``,
  which replaces the deprecated ``torch.distributed.nn.functional.all_gather``) that returns the
  global batch on every rank. Per-sample terms stay local.
* **Gradients** are averaged over the ranks after each backward (:func:`average_gradients`).
  Together with the gather (whose backward sums the ranks' gradients) this gives the gradient of
  the one-process loss on the global batch, for local and gathered terms alike.
  sbirkit does this instead of wrapping the method in ``DistributedDataParallel`` because a
  method's step calls its encoder branches and heads directly (and may step several optimisers
  in a manual order), while DDP's hooks assume ``forward()`` is the only entry point; what is
  lost is DDP's overlap of communication with the backward pass, which matters on many GPUs.
* **Evaluation**: each rank embeds its share of the queries and the gallery; the embeddings
  are gathered in order and every rank scores the same full set (the numbers equal one process's).
* **Files**: rank 0 alone writes the run folder (config, meta, metrics, checkpoints) and holds
  its lock; the other ranks wait at barriers. A resumed run must use the world size it started
  with (recorded in ``last.pt``); another world size is refused.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


SINGLE = DistContext()


def from_environment(device_type: str) -> DistContext:
    """The context torchrun describes (``WORLD_SIZE`` > 1), with the process group initialised
    (gloo on CPU, NCCL on CUDA) if nobody has yet; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world, local)


def shard_bounds(total: int, rank: int, world: int, what: str = "train.batch_size") -> tuple[int, int]:
    """``(lo, hi)`` of rank ``rank``'s contiguous share of ``total`` items (``total % world == 0``)."""
    if total % world:
        raise ConfigError(f"{what}: expected a multiple of the world size {world} (the global batch is split "
                          f"evenly over the processes), got {total}")
    size = total // world
    return rank * size, (rank + 1) * size


def gather(tensor: torch.Tensor, dist_ctx: DistContext) -> torch.Tensor:
    """The global batch of ``tensor`` (rank order, concatenated on dim 0); gradients flow back to
    every rank's share. Identity in a single process."""
    if not dist_ctx.enabled:
        return tensor
    try:  # the autograd all-gather torch points to since torch.distributed.nn.functional's was deprecated
        from torch.distributed._functional_collectives import all_gather_single_autograd
    except ImportError:  # an older torch (the project allows 2.1), where the old one is not deprecated
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)
    return all_gather_single_autograd(tensor.contiguous(), 0, torch.distributed.group.WORLD)


def average_gradients(params: list[torch.nn.Parameter], dist_ctx: DistContext) -> None:
    """Average the gradients of ``params`` over the ranks (one flat all-reduce; a missing gradient
    counts as zero, so every rank joins the same collective)."""
    if not dist_ctx.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= dist_ctx.world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        chunk = flat[offset:offset + n].view_as(g)
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)
        offset += n


def mean_over_ranks(values: dict[str, float], dist_ctx: DistContext) -> dict[str, float]:
    """The mean of each logged number over the ranks (what one process would have logged)."""
    if not dist_ctx.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return {k: float(v) / dist_ctx.world_size for k, v in zip(keys, t.tolist())}


def all_gather_objects(obj: Any, dist_ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order (pickled; for embeddings of evaluation shards)."""
    if not dist_ctx.enabled:
        return [obj]
    out: list[Any] = [None] * dist_ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, dist_ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist_ctx.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class GlobalBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on CPU (gloo) too.

    torch's ``SyncBatchNorm`` (used on CUDA) accepts only GPU tensors; without a synchronised
    BatchNorm each rank would normalise its share with its own statistics and the run would no
    longer equal one process on the global batch. The sums and sums of squares are all-reduced
    with the differentiable ``torch.distributed.nn.functional.all_reduce``, so gradients flow
    through the shared statistics; parameters and buffers are BatchNorm's own (same state-dict
    keys, so checkpoints load into ordinary BatchNorm). Eval mode uses the running statistics.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected a (B, C, ...) input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        local = torch.tensor(float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        packed = torch.cat([x.sum(dims), (x * x).sum(dims), local.reshape(1)])
        total = all_reduce(packed)
        channels = x.shape[1]
        count = total[-1]
        mean = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def synchronise_batchnorm(module: torch.nn.Module, device_type: str) -> torch.nn.Module:
    """Every BatchNorm of ``module`` computing its training statistics over the global batch:
    torch's ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm` on CPU. Parameters and running
    statistics are kept (the modules are replaced in place)."""
    if device_type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in list(module.named_children()):
        if isinstance(child, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            new.to(next(iter(child.state_dict().values())).device if child.state_dict() else "cpu")
            setattr(module, name, new)
        else:
            synchronise_batchnorm(child, device_type)
    return module
