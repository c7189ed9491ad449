"""Start the linear embedding heads at a PCA of the training features (``train.head_init: pca``).

On frozen features (``train.cached_features``) a linear head initialised at random starts far
from the geometry the backbone already has; with few training classes, training may then fit
those classes without ever reaching a projection that ranks new classes as well as the
features themselves did. ``pca`` starts each head at the top principal directions of the
*training* features instead: the head maps ``f`` to ``V (f - mean)``, so before the first step
cosine ranking in the embedding is ranking in the centred, PCA-reduced feature space, and
training refines it from there.

What is fitted, and on what:

* only the training split the sampler draws from (seen classes under ``data.zero_shot``): no
  validation, test or unseen-class sample; the fit happens once, before the first step;
* both modalities pooled into one PCA when the two branches' backbones hold the same weights
  (their features share one space, so sketch and photo start in one embedding), else one PCA per
  branch on its own modality;
* the last linear layer of each head, so the head must be linear (``model.hidden: null``).

With cached features the PCA reads the cache; end to end, the training samples go through the
(pretrained) backbones once, in eval mode, before the first step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ConfigError
from .feature_cache import weights_digest

HEAD_INITS = ("default", "pca")


def principal_directions(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(V, mean)``: the top ``k`` principal directions (unit rows, by decreasing variance) of
    ``features`` (rows are samples) and their mean. Each direction's sign is fixed so that its
    largest-magnitude entry is positive (the SVD's sign is arbitrary)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"principal_directions: features: expected a (N >= 2, D) array, got shape {x.shape}")
    if not 1 <= k <= min(x.shape):
        raise ValueError(f"principal_directions: k: expected 1..{min(x.shape)} (samples and feature size), got {k}")
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    v = vt[:k]
    signs = np.sign(v[np.arange(k), np.abs(v).argmax(axis=1)])
    return v * signs[:, None], mean


def _linear_layer(head: nn.Module) -> nn.Linear:
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(layers) != 1:
        raise ConfigError("train.head_init=pca: expected linear embedding heads (model.hidden: null), "
                          f"got a head with {len(layers)} linear layers")
    return layers[0]


def pca_init_heads(encoder: nn.Module, sketch_features: np.ndarray, photo_features: np.ndarray) -> dict[str, Any]:
    """Set each branch's linear head to ``f -> V (f - mean)`` (see the module docstring); returns
    a record of what was fitted (for ``meta.json``)."""
    branches = {m: encoder.branch(m) for m in ("sketch", "photo")}
    pooled = len(encoder.branches()) == 1 or \
        weights_digest(branches["sketch"].backbone) == weights_digest(branches["photo"].backbone)
    k = int(encoder.embed_dim)
    sets = {"sketch+photo": np.concatenate([sketch_features, photo_features])} if pooled else \
        {"sketch": np.asarray(sketch_features), "photo": np.asarray(photo_features)}
    for name, x in sets.items():
        if k > min(x.shape):
            raise ConfigError(f"train.head_init=pca: model.embed_dim={k} principal directions need at least {k} "
                              f"training samples and {k} feature dimensions; the {name} features are {x.shape}")
    fitted = {name: principal_directions(x, k) for name, x in sets.items()}
    fits = {m: fitted["sketch+photo"] for m in ("sketch", "photo")} if pooled else fitted
    for modality, (v, mean) in fits.items():
        layer = _linear_layer(branches[modality].head)
        weight = torch.as_tensor(v, dtype=layer.weight.dtype, device=layer.weight.device)
        with torch.no_grad():
            layer.weight.copy_(weight)
            if layer.bias is not None:
                layer.bias.copy_(-weight @ torch.as_tensor(mean, dtype=weight.dtype, device=weight.device))
    return {"method": "pca", "pooled_modalities": pooled, "components": k,
            "fitted_on": {"sketches": int(len(sketch_features)), "photos": int(len(photo_features))}}


def check_linear_heads(encoder: nn.Module) -> None:
    """Refuse (ConfigError) an encoder whose heads are not linear: ``pca`` needs one linear layer."""
    for modality in ("sketch", "photo"):
        _linear_layer(encoder.branch(modality).head)


def init_heads(kind: str, encoder: nn.Module, training_features: Callable[[str], np.ndarray]) -> dict[str, Any] | None:
    """Apply ``train.head_init`` (``default``: leave the heads as built). ``training_features(m)``
    returns the backbone features of the training samples of modality ``m`` (``"sketch"`` or
    ``"photo"``); it is called only when something is fitted."""
    if kind not in HEAD_INITS:
        raise ConfigError(f"train.head_init: expected one of {HEAD_INITS}, got {kind!r}")
    if kind == "default":
        return None
    check_linear_heads(encoder)  # refuse an MLP head before extracting anything
    return pca_init_heads(encoder, training_features("sketch"), training_features("photo"))
