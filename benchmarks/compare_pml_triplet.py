"""docs/architecture.md, "Written here, and why": sbirkit's CrossModalTripletLoss against pytorch-metric-learning
on the same batches: loss values and gradients, float64 and float32."""
import sys, time
# pytorch-metric-learning is no dependency: pip install --target DIR pytorch-metric-learning==2.9.0 --no-deps,
# then PYTHONPATH=DIR:src python benchmarks/compare_pml_triplet.py

import torch
from pytorch_metric_learning import losses as L, miners as M, distances as D, reducers as R
from sbirkit.losses import CrossModalTripletLoss

def batches(n, B=64, dim=128, classes=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        labels = torch.randint(0, classes, (B,), generator=g)
        yield torch.randn(B, dim, generator=g, dtype=dtype), torch.randn(B, dim, generator=g, dtype=dtype), labels

def compare(name, ours_fn, pml_fn, dtype, n=50):
    worst_l = worst_g = 0.0
    for s, p, y in batches(n, dtype=dtype):
        s1, p1 = s.clone().requires_grad_(), p.clone().requires_grad_()
        s2, p2 = s.clone().requires_grad_(), p.clone().requires_grad_()
        a = ours_fn(s1, p1, y); a.backward()
        b = pml_fn(s2, p2, y); b.backward()
        worst_l = max(worst_l, (a - b).abs().item() / max(b.abs().item(), 1e-12))
        worst_g = max(worst_g, max((s1.grad - s2.grad).abs().max().item(), (p1.grad - p2.grad).abs().max().item()))

    print(f"{name:48s} {str(dtype):14s} {n} batches: max rel. loss diff {worst_l:.2e}, max abs grad diff {worst_g:.2e}")

def timeit(fn, dtype=torch.float32, reps=200):
    s, p, y = next(batches(1, dtype=dtype))
    s.requires_grad_(); p.requires_grad_()
    for _ in range(10): fn(s, p, y).backward()
    t = time.perf_counter()
    for _ in range(reps): fn(s, p, y).backward()
    return (time.perf_counter() - t) / reps * 1e3

torch.set_num_threads(1)
cases = []
for dname, ours_d, pml_d in (("cosine", "cosine", D.CosineSimilarity()),
                             ("euclidean", "euclidean", D.LpDistance(normalize_embeddings=False, p=2))):
    ours_bh = CrossModalTripletLoss(ours_d, 0.2, "batch_hard")
    pml_loss = L.TripletMarginLoss(margin=0.2, distance=pml_d, reducer=R.MeanReducer())
    miner = M.BatchHardMiner(distance=pml_d)
    ours_f = lambda s, p, y, m=ours_bh: m(s, p, y)["loss"]
    # y.clone(): PML drops the diagonal from the positives when ref_labels is the labels tensor itself
    pml_f = lambda s, p, y, l=pml_loss, mi=miner: l(s, y, mi(s, y, p, y.clone()), ref_emb=p, ref_labels=y.clone())
    cases.append((f"batch_hard, class level, {dname}", ours_f, pml_f))
    # every triplet: fine-grained (instance) level, each sketch's own photo its only positive
    ours_all = CrossModalTripletLoss(ours_d, 0.2, "all", level="instance")
    inst = lambda y: torch.arange(len(y))
    ours_fa = lambda s, p, y, m=ours_all: m(s, p, y, instances=inst(y))["loss"]
    pml_fa = lambda s, p, y, l=pml_loss: l(s, inst(y), ref_emb=p, ref_labels=inst(y))
    cases.append((f"all triplets, instance level, {dname}", ours_fa, pml_fa))
for name, a, b in cases:
    for dtype in (torch.float64, torch.float32):
        compare(name, a, b, dtype)
for name, a, b in cases:
    print(f"{name:48s} forward+backward B=64 d=128 float32, one thread: sbirkit {timeit(a):.2f} ms, PML {timeit(b):.2f} ms")
