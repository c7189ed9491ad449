"""The students' side of ``crossx_dfl`` and the encoders a run embeds with.

* :class:`ProxyHeads`: the teachers' class proxies in the students' embedding space (learned
  maps, trained with the students);
* :class:`ClassSpaceEncoder`: the ``unimodal`` baseline's embedding, the students' distribution
  over the shared classes;
* :class:`TeacherEncoder` and :class:`AveragedEncoder`: the training-free baselines
  (``classifier_only``, ``averaging``), whose encoder is made of the teachers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...losses import data_free as L
from .label_space import LabelSpace
from .teachers import Teacher


# ---- student-side proxies --------------------------------------------------------------------------
class ProxyHeads(nn.Module):
    """The teachers' class proxies in the students' embedding space: ``P^m_k = A^m w^m_k`` for each
    teacher class k a target uses (``w^m_k`` its final-layer weights, a buffer; ``A^m`` learned),
    with the class-map tensors. Built in ``setup`` from the teachers, or from a checkpoint's shapes."""

    def __init__(self):
        super().__init__()
        self.maps = nn.ModuleDict()
        self.built = False

    def build(self, space: LabelSpace, teachers: dict[str, Teacher], embed_dim: int, scale: float,
              anchors: bool = False) -> None:
        """With ``anchors``, also one learned unit vector per shared class that both students share
        (the ``w_anchor`` objective)."""
        if anchors:
            self.anchors = nn.Parameter(F.normalize(torch.randn(len(space.shared), embed_dim), dim=1))
        for m, teacher in teachers.items():
            labels = space.teachers[m]
            weight = teacher.final.weight.detach()[labels.natives.to(teacher.final.weight.device)].float().cpu()
            a = nn.Linear(weight.shape[1], embed_dim, bias=False)
            with torch.no_grad():
                norm = a(weight).norm(dim=1).mean().clamp_min(1e-6)
                a.weight.mul_(float(scale) / norm)
            self.maps[m] = a
            self.register_buffer(f"weight_{m}", weight.clone())
            self.register_buffer(f"member_{m}", labels.member.clone())
            self.register_buffer(f"covered_{m}", labels.covered.clone())
        self.register_buffer("shared", torch.tensor(space.shared, dtype=torch.long))
        self.built = True

    def materialise(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Create the modules and buffers a checkpoint holds (``load_run`` has no teachers)."""
        for m in ("photo", "sketch"):
            w = state.get(f"{prefix}maps.{m}.weight")
            if w is None:
                continue
            if m not in self.maps or self.maps[m].weight.shape != w.shape:
                self.maps[m] = nn.Linear(w.shape[1], w.shape[0], bias=False)
            for name in (f"weight_{m}", f"member_{m}", f"covered_{m}"):
                if f"{prefix}{name}" in state:
                    self.register_buffer(name, torch.zeros_like(state[f"{prefix}{name}"]))
        if f"{prefix}shared" in state:
            self.register_buffer("shared", torch.zeros_like(state[f"{prefix}shared"]))
            self.built = True
        if f"{prefix}anchors" in state:
            self.anchors = nn.Parameter(torch.zeros_like(state[f"{prefix}anchors"]))

    def proxies(self, m: str) -> torch.Tensor:
        return self.maps[m](getattr(self, f"weight_{m}"))

    def covered(self, m: str) -> torch.Tensor:
        return getattr(self, f"covered_{m}")

    def distribution(self, z: torch.Tensor, m: str, kind: str, euclid_temperature: float) -> torch.Tensor:
        """The student's distribution over teacher m's covered targets (``(B, T)``, 0 elsewhere)."""
        logits = L.proxy_logits(z.float(), self.proxies(m).float(), kind, euclid_temperature)
        return L.student_distribution(logits, getattr(self, f"member_{m}"), self.covered(m))


# ---- evaluation encoders of the class-space variants ---------------------------------------------
class _ModalityEncoder(nn.Module):
    """``encode(x, modality)`` does the work; the rest of the encoder interface calls it."""

    def encode_sketch(self, x):
        return self.encode(x, "sketch")

    def encode_photo(self, x):
        return self.encode(x, "photo")

    def forward(self, x, modality):
        return self.encode(x, modality)


class ClassSpaceEncoder(_ModalityEncoder):
    """Students whose retrieval embedding is their distribution over the shared classes (through
    the proxies): the ``unimodal`` baseline, whose two students share no metric space."""

    def __init__(self, students: nn.Module):
        super().__init__()
        self.students = students
        object.__setattr__(self, "_heads", None)  # the method's ProxyHeads (not registered twice)
        self.config = getattr(students, "config", {})

    def attach(self, heads: ProxyHeads) -> None:
        object.__setattr__(self, "_heads", heads)

    @property
    def embed_dim(self) -> int:
        return int(self._heads.shared.numel()) if self._heads is not None and self._heads.built else 0

    def encode(self, x, modality):
        m = str(getattr(modality, "value", modality))
        z = self.students.encode(x, m)
        q = self._heads.distribution(z, m, "prob", 1.0)[:, self._heads.shared]
        return F.normalize(q / q.sum(1, keepdim=True).clamp_min(1e-12), dim=1)

    def __getattr__(self, name):  # branch(), branches(), backbone_parameters(), freeze_*: the students'
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("students"), name)


class _TeacherSpaceEncoder(_ModalityEncoder):
    """What the training-free baselines' encoders share: there is no backbone BatchNorm of their
    own to freeze."""

    def freeze_backbone_norm(self):
        pass


class TeacherEncoder(_TeacherSpaceEncoder):
    """The ``classifier_only`` baseline: each modality embedded by its teacher's output over the
    shared classes (``output: logits``: the class logits, centred; ``probs``: the renormalised
    probabilities), compared by cosine."""

    def __init__(self, photo: Teacher, sketch: Teacher, space: LabelSpace, output: str = "logits"):
        super().__init__()
        if output not in ("logits", "probs"):
            raise ConfigError(f"method.classifier_output: expected 'logits' or 'probs', got {output!r}")
        self.photo_teacher, self.sketch_teacher, self.output = photo, sketch, output
        for m in ("photo", "sketch"):
            labels = space.teachers[m]
            self.register_buffer(f"natives_{m}", labels.natives.clone())
            self.register_buffer(f"member_{m}", labels.member.clone())
            self.register_buffer(f"covered_{m}", labels.covered.clone())
        self.register_buffer("shared", torch.tensor(space.shared, dtype=torch.long))
        self.config = {}

    @property
    def embed_dim(self) -> int:
        return int(self.shared.numel())

    def encode(self, x, modality):
        m = str(getattr(modality, "value", modality))
        teacher = self.photo_teacher if m == "photo" else self.sketch_teacher
        logits, _ = teacher(x)
        natives, member = getattr(self, f"natives_{m}"), getattr(self, f"member_{m}")
        if self.output == "probs":
            v = L.renormalise(L.target_mass(logits, natives, member), getattr(self, f"covered_{m}"))[:, self.shared]
        else:  # a target's logit: log-sum-exp over the teacher classes mapped to it
            sub = logits.float()[:, natives]
            v = torch.logsumexp(sub[:, :, None] + member.clamp_min(1e-30).log()[None], dim=1)[:, self.shared]
            v = v - v.mean(1, keepdim=True)
        return F.normalize(v, dim=1)


class AveragedEncoder(_TeacherSpaceEncoder):
    """The ``averaging`` baseline: one network with the mean of the two teachers' weights embeds
    both modalities by its features (the final layer's input), L2-normalised."""

    def __init__(self, photo: Teacher, sketch: Teacher):
        super().__init__()
        a, b = photo.net.state_dict(), sketch.net.state_dict()
        final = photo._final_name + "."
        if set(a) != set(b) or any(a[k].shape != b[k].shape for k in a if not k.startswith(final)):
            raise ConfigError("method.variant=averaging: expected two teachers of one architecture (same weight "
                              f"names and shapes); got {photo.source} and {sketch.source}")
        net = copy.deepcopy(photo.net)
        avg = {k: ((a[k].float() + b[k].float()) / 2).to(a[k].dtype) if a[k].is_floating_point()
               and a[k].shape == b[k].shape else a[k] for k in a}
        net.load_state_dict(avg)
        self.teacher = Teacher(net, net.get_submodule(photo._final_name), photo.class_names, "photo",
                               f"mean of {photo.source} and {sketch.source}", photo.input_size)
        self.config = {}

    @property
    def embed_dim(self) -> int:
        return self.teacher.feature_dim

    def encode(self, x, modality):
        return F.normalize(self.teacher(x)[1], dim=1)
