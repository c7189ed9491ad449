"""The students of data-free SBIR: where their weights start (``method.student_init``).

``teachers`` starts each student branch's backbone from its own modality's teacher: the photo
student from the photo classifier's backbone, the sketch student from the sketch classifier's
(the model section must name the teachers' architectures, e.g. ``small_cnn`` for the paper-like
teachers). Nothing but the teachers is read, so the run stays data-free; the students then
begin with features that already separate the teachers' classes on real images, and the
data-free training has to align the two modalities rather than learn to see. ``none`` keeps the
model section's initialisation (random, or its pretrained weights).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ...errors import ConfigError

STUDENT_INITS = ("none", "teachers")


def _matching_part(net: nn.Module, target: Mapping) -> dict | None:
    """The state dict of the first submodule of ``net`` whose tensors have ``target``'s names and shapes."""
    for _, module in net.named_modules():
        state = module.state_dict()
        if set(state) == set(target) and all(state[k].shape == target[k].shape for k in state):
            return state
    return None


def init_students_from_teachers(students: nn.Module, teachers: Mapping[str, nn.Module]) -> list[str]:
    """Copy each teacher's backbone into the student branch of its modality; returns what was copied."""
    if getattr(students, "shared", False):
        raise ConfigError("method.student_init: teachers needs one student branch per modality (model.shared: false)")
    copied = []
    for m, teacher in teachers.items():
        backbone = students.branch(m).backbone
        state = _matching_part(teacher.net, backbone.state_dict())
        if state is None:
            raise ConfigError(f"method.student_init: teachers: the {m} student's backbone "
                              f"({getattr(backbone, 'backbone_name', type(backbone).__name__)}) matches no part of the "
                              f"{m} teacher {teacher.source}; give the model section the teacher's architecture, or "
                              "student_init: none")
        backbone.load_state_dict(state)
        copied.append(f"{m} <- {teacher.source}")
    return copied
