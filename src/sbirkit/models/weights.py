"""Reading local weight files into backbones. Nothing here touches the network.

A file is a state dict or a checkpoint holding one (under ``state_dict``, ``model`` or
``model_state_dict``, possibly nested); ``.safetensors`` files are read with safetensors. DDP's
``module.`` and ``torch.compile``'s ``_orig_mod.`` prefixes are stripped. Loading is strict except
for the keys of the classifier the backbone dropped; anything else that does not fit is an error
listing the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import DataError

NESTED_KEYS = ("state_dict", "model", "model_state_dict")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")


class WeightsError(DataError):
    """A weights file is missing, unreadable or does not fit the model; or none was given."""


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _key_list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... (+{len(keys) - limit} more)' if len(keys) > limit else ''}]"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local state dict / checkpoint file, unwrapped and with DDP prefixes stripped."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights: expected a local state dict or checkpoint file; no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors: name the file
        raise WeightsError(f"{p}: weights: could not read a torch state dict ({_first_line(exc)})") from exc
    while isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((k for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            bad = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
            raise WeightsError(
                f"{p}: weights: expected a dict of tensors or a checkpoint with one of {NESTED_KEYS}; "
                f"non-tensor entries {_key_list(bad)}"
            )
        obj = obj[nested]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{p}: weights: expected a non-empty dict of tensors, got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        for prefix in STRIPPED_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _is_under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == c or key.startswith(c + ".") for c in prefixes)


def _adapt_input_conv(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """A 3-channel first-conv kernel summed to 1 channel (timm's convention), else None."""
    if src.ndim == 4 and dst.ndim == 4 and src.shape[1] == 3 and dst.shape[1] == 1:
        if src.shape[0] == dst.shape[0] and src.shape[2:] == dst.shape[2:]:
            return src.sum(dim=1, keepdim=True)
    return None


def fit_state_dict(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    prefix: str = "",
    ignore: tuple[str, ...] = (),
) -> list[str]:
    """Load ``state`` into ``module`` strictly, after mapping native keys under ``prefix``.

    Keys under ``ignore`` (native names of a dropped classifier) are skipped and returned (native
    names), so a caller can report them. Raises :class:`WeightsError` naming ``source`` and the keys that do
    not fit.
    """
    if prefix and not all(k.startswith(prefix) for k in state):
        state = {prefix + k: v for k, v in state.items()}
    ignored = sorted(k[len(prefix) :] for k in state if _is_under(k[len(prefix) :], ignore))
    state = {k: v for k, v in state.items() if not _is_under(k[len(prefix) :], ignore)}
    own = module.state_dict()
    for key, value in list(state.items()):
        if key in own and own[key].shape != value.shape:
            adapted = _adapt_input_conv(value, own[key])
            if adapted is not None:
                state[key] = adapted
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys {_key_list(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatch (file vs model) {_key_list(mismatched)}")
        raise WeightsError(f"{source}: weights do not fit {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)
    return ignored


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> list[str]:
    """Load a local weights file into ``backbone`` (a :class:`~.base.Backbone`: its
    ``weights_prefix`` and ``classifier_keys`` say where its keys start and which to ignore);
    returns the ignored classifier keys. ``base.py`` imports this module, never the reverse."""
    state = read_state_dict(path)
    return fit_state_dict(backbone, state, str(path), prefix=backbone.weights_prefix, ignore=backbone.classifier_keys)
