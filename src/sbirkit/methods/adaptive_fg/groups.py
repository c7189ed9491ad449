"""adaptive_fg's groups: which categories (or users) it meta-trains on, selects the model on
(``val_groups``) and adapts to at test time (``test_groups``), and the training samples they leave."""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .options import AdaptiveFGOptions, names


def resolve_groups(o: AdaptiveFGOptions, dataset: Any) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...], "test": [...]}``, each name checked against the dataset."""
    if o.group_by == "class":
        known = list(dataset.classes)

        def canon(name: str, option: str) -> str:
            try:
                return dataset.classes[dataset.class_index(name)]
            except KeyError:
                raise ConfigError(f"method.{option}: {name!r} is not a class of {dataset.name} "
                                  f"({', '.join(known)})") from None
    else:
        known = list(dataset.users)

        def canon(name: str, option: str) -> str:
            if name not in known:
                raise ConfigError(f"method.{option}: {name!r} is not a user of {dataset.name} "
                                  f"({', '.join(known) or 'no user ids'})")
            return name
    val = [canon(n, "val_groups") for n in (names(o.val_groups, "val_groups") or [])]
    test = [canon(n, "test_groups") for n in (names(o.test_groups, "test_groups") or [])]
    both = sorted(set(val) & set(test))
    if both:
        raise ConfigError(f"method.val_groups, method.test_groups: {both[0]!r} is in both")
    held = set(val) | (set() if o.train_on_test_groups else set(test))
    train = [g for g in known if g not in held]
    if not train:
        raise ConfigError(f"method.val_groups, method.test_groups: every {o.group_by} is held out; "
                          "nothing is left to meta-train on")
    return {"train": train, "val": val, "test": test}

def training_view(o: AdaptiveFGOptions, groups: dict[str, list[str]], dataset: Any):
    """The samples of the meta-train groups only (every photo, for user tasks)."""
    train = set(groups["train"])
    if o.group_by == "class":
        keep = {dataset.class_index(c) for c in train}
        return dataset.subset(s for s in dataset.samples if s.class_index in keep)
    return dataset.subset(s for s in dataset.samples if not s.is_sketch or s.user_id in train)
