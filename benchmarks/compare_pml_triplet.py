"""docs/architecture.md, "Written here, and why": sbirkit's CrossModalTripletLoss against
pytorch-metric-learning's TripletMarginLoss (with ``ref_emb``) on the same batches: loss values and
gradients in float64 and float32, and the time of a forward and backward pass.

pytorch-metric-learning is no dependency of sbirkit: ``pip install --target DIR --no-deps
pytorch-metric-learning==2.9.0``, then ``OMP_NUM_THREADS=1 PYTHONPATH=DIR:src python
benchmarks/compare_pml_triplet.py``.
"""

from __future__ import annotations

import time

import torch
from pytorch_metric_learning import distances as D
from pytorch_metric_learning import losses as L
from pytorch_metric_learning import miners as M
from pytorch_metric_learning import reducers as R

from sbirkit.losses import CrossModalTripletLoss


def batches(n, size=64, dim=128, classes=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        labels = torch.randint(0, classes, (size,), generator=g)
        yield (torch.randn(size, dim, generator=g, dtype=dtype), torch.randn(size, dim, generator=g, dtype=dtype),
               labels)


def compare(name, ours, theirs, dtype, n=50):
    worst_loss = worst_grad = 0.0
    for s, p, y in batches(n, dtype=dtype):
        s1, p1 = s.clone().requires_grad_(), p.clone().requires_grad_()
        s2, p2 = s.clone().requires_grad_(), p.clone().requires_grad_()
        a = ours(s1, p1, y)
        a.backward()
        b = theirs(s2, p2, y)
        b.backward()
        worst_loss = max(worst_loss, (a - b).abs().item() / max(b.abs().item(), 1e-12))
        worst_grad = max(worst_grad, (s1.grad - s2.grad).abs().max().item(), (p1.grad - p2.grad).abs().max().item())
    print(f"{name:42s} {str(dtype):14s} {n} batches: max rel. loss diff {worst_loss:.2e}, "
          f"max abs grad diff {worst_grad:.2e}")


def time_ms(fn, reps=200):
    s, p, y = next(batches(1, dtype=torch.float32))
    s.requires_grad_()
    p.requires_grad_()
    for _ in range(10):
        fn(s, p, y).backward()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(s, p, y).backward()
    return (time.perf_counter() - t0) / reps * 1e3


def cases():
    for dname, pml_distance in (("cosine", D.CosineSimilarity()),
                                ("euclidean", D.LpDistance(normalize_embeddings=False, p=2))):
        pml_loss = L.TripletMarginLoss(margin=0.2, distance=pml_distance, reducer=R.MeanReducer())
        miner = M.BatchHardMiner(distance=pml_distance)
        batch_hard = CrossModalTripletLoss(dname, 0.2, "batch_hard")

        def ours_bh(s, p, y, loss=batch_hard):
            return loss(s, p, y)["loss"]

        def pml_bh(s, p, y, loss=pml_loss, miner=miner):
            # y.clone(): PML drops each anchor's own photo from its positives when ref_labels is the
            # labels tensor itself (it then takes the two sides for one set and clears the diagonal)
            return loss(s, y, miner(s, y, p, y.clone()), ref_emb=p, ref_labels=y.clone())

        yield f"batch_hard, class level, {dname}", ours_bh, pml_bh
        every = CrossModalTripletLoss(dname, 0.2, "all", level="instance")

        def ours_all(s, p, y, loss=every):
            return loss(s, p, y, instances=torch.arange(len(y)))["loss"]

        def pml_all(s, p, y, loss=pml_loss):  # fine-grained: each sketch's own photo its only positive
            ids = torch.arange(len(y))
            return loss(s, ids, ref_emb=p, ref_labels=ids.clone())

        yield f"all triplets, instance level, {dname}", ours_all, pml_all


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name, ours, theirs in cases():
        for dtype in (torch.float64, torch.float32):
            compare(name, ours, theirs, dtype)
    for name, ours, theirs in cases():
        print(f"{name:42s} forward+backward, 64 pairs, 128-d, float32, one thread: sbirkit {time_ms(ours):.2f} ms, "
              f"PML {time_ms(theirs):.2f} ms")
