"""Drawing styles of the synthetic users: how one person's sketches differ from another's.

A style sets line weight, tremor (jitter), slow drift (wobble), how coarsely lines are sampled
(simplification), how often strokes or small details are left out, how far a stroke over- or
under-shoots its end, and whether the person draws smaller or larger than the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class UserStyle:
    """One user's drawing habits. Lengths are in canvas units (the canvas is 1 × 1);
    ``width`` is the line width in pixels at 64 px and scales with the image size."""

    name: str
    width: float = 2.0
    jitter: float = 0.003
    wobble: float = 0.008
    spacing: float = 0.02
    drop_prob: float = 0.05
    detail_drop: float = 0.2
    overshoot: float = 0.04
    undershoot: float = 0.02
    split_prob: float = 0.2
    scale: float = 1.0

    def __post_init__(self) -> None:
        for field_name in ("drop_prob", "detail_drop", "split_prob"):
            p = getattr(self, field_name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"UserStyle {self.name!r}: {field_name}: expected a probability in [0, 1], got {p}")
        if self.width <= 0 or self.spacing <= 0 or self.scale <= 0:
            raise ValueError(f"UserStyle {self.name!r}: width, spacing and scale: expected > 0")


PRESET_USERS: tuple[UserStyle, ...] = (
    UserStyle(
        "neat",
        width=1.4,
        jitter=0.0015,
        wobble=0.003,
        spacing=0.012,
        drop_prob=0.0,
        detail_drop=0.0,
        overshoot=0.02,
        undershoot=0.0,
        split_prob=0.05,
    ),
    UserStyle(
        "sketchy",
        width=1.6,
        jitter=0.005,
        wobble=0.01,
        spacing=0.025,
        drop_prob=0.1,
        detail_drop=0.3,
        overshoot=0.09,
        undershoot=0.04,
        split_prob=0.5,
    ),
    UserStyle(
        "bold",
        width=3.6,
        jitter=0.002,
        wobble=0.005,
        spacing=0.045,
        drop_prob=0.05,
        detail_drop=0.7,
        overshoot=0.03,
        undershoot=0.02,
        split_prob=0.1,
        scale=1.04,
    ),
    UserStyle(
        "wobbly",
        width=2.2,
        jitter=0.003,
        wobble=0.02,
        spacing=0.018,
        drop_prob=0.12,
        detail_drop=0.25,
        overshoot=0.05,
        undershoot=0.05,
        split_prob=0.2,
        scale=0.9,
    ),
)


def random_style(name: str, rng: np.random.Generator) -> UserStyle:
    """A style drawn from the range the presets span (for more users than presets)."""
    u = rng.uniform
    return UserStyle(
        name,
        width=u(1.2, 3.8),
        jitter=u(0.001, 0.006),
        wobble=u(0.002, 0.022),
        spacing=u(0.01, 0.05),
        drop_prob=u(0.0, 0.15),
        detail_drop=u(0.0, 0.7),
        overshoot=u(0.01, 0.1),
        undershoot=u(0.0, 0.05),
        split_prob=u(0.0, 0.5),
        scale=u(0.88, 1.05),
    )


def make_users(users: int | Sequence[UserStyle], seed: int = 0) -> tuple[UserStyle, ...]:
    """``users`` styles: the presets first, then seeded random ones; or the styles given."""
    if isinstance(users, (int, np.integer)):
        n = int(users)
        if n < 1:
            raise ValueError(f"users: expected at least 1, got {n}")
        styles = list(PRESET_USERS[:n])
        for i in range(len(styles), n):
            styles.append(random_style(f"user{i}", np.random.default_rng([int(seed) % (1 << 64), 4, i])))
        return tuple(styles)
    styles = tuple(users)
    if not styles or not all(isinstance(s, UserStyle) for s in styles):
        raise ValueError("users: expected a positive int or a non-empty sequence of UserStyle")
    names = [s.name for s in styles]
    if len(set(names)) != len(names):
        raise ValueError(f"users: expected distinct style names, got {names}")
    return styles
