"""The paper's baselines of adaptive fine-grained SBIR (Bhunia et al., ECCV 2022) as overrides of an
``adaptive_fg`` preset: the rows of ``bench_adaptive.py`` (BENCHMARKS.md, docs/adaptive_fg.md).

Each entry: ``overrides`` of the preset, ``strategy`` (how the trained model adapts at test time,
:meth:`sbirkit.methods.adaptive_fg.AdaptiveFG.adapt`) and ``from_baseline`` (the run starts from the
trained no-adaptation baseline of the same seed, ``method.init_from``, as the paper's meta-training
builds on its supervised baseline; the others train from scratch).
"""

from __future__ import annotations

from typing import Any

SUPERVISED = ["method.mode=supervised", "method.regularizers=[]"]
BASELINES: dict[str, dict[str, Any]] = {
    "ours": {"overrides": [], "strategy": "meta", "from_baseline": True},
    "no_adaptation": {"overrides": SUPERVISED, "strategy": "none", "from_baseline": False},
    "finetune_head": {"overrides": SUPERVISED, "strategy": "finetune_head", "from_baseline": False},
    "finetune_all": {"overrides": SUPERVISED, "strategy": "finetune_all", "from_baseline": False},
    "baseline_reg": {"overrides": ["method.mode=supervised"], "strategy": "none", "from_baseline": True},
    # alpha 0.005: one all-parameter step of 0.5 (the head's) or 0.05 from the baseline wrecked its
    # validation Acc@1 (0.227 -> 0.09 / 0.06), 0.005 kept it near (0.19), 0.0005 changed nothing
    "maml": {"overrides": ["method.inner=all", "method.margin=fixed", "method.learn_alpha=none", "method.alpha=0.005",
                           "method.regularizers=[]"], "strategy": "meta", "from_baseline": True},
    "maml_fo": {"overrides": ["method.inner=all", "method.margin=fixed", "method.learn_alpha=none", "method.alpha=0.005",
                              "method.regularizers=[]", "method.first_order=true"], "strategy": "meta",
                "from_baseline": True},
    "anil": {"overrides": ["method.margin=fixed", "method.learn_alpha=none", "method.regularizers=[]"],
             "strategy": "meta", "from_baseline": True},
    "upper_bound": {"overrides": [*SUPERVISED, "method.train_on_test_groups=true"], "strategy": "none",
                    "from_baseline": False},
}

