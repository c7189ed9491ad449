"""The procedural synthetic SBIR dataset (registered as ``"synthetic"``): parametric shape
classes rendered as cluttered photos and as hand-drawn sketches in several users' styles.

Deterministic and file-free; the built-in default for the demo and the tests.
"""

from __future__ import annotations

from .dataset import DEFAULT_SPLITS, SyntheticSBIR, assign_splits, instance_shape, synthetic
from .photo import render_photo
from .preview import contact_sheet
from .primitives import Part, Shape
from .shapes import CLASS_NAMES, FAMILIES, make_shape
from .sketch import draw_sketch
from .styles import PRESET_USERS, UserStyle, make_users
from .writer import strokes_to_svg, write_folder_layout

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_SPLITS",
    "FAMILIES",
    "PRESET_USERS",
    "Part",
    "Shape",
    "SyntheticSBIR",
    "UserStyle",
    "assign_splits",
    "contact_sheet",
    "draw_sketch",
    "instance_shape",
    "make_shape",
    "make_users",
    "render_photo",
    "strokes_to_svg",
    "synthetic",
    "write_folder_layout",
]
