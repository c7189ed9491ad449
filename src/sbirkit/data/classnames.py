"""Canonical class names, so folder names from different datasets compare equal.

``teddy_bear``, ``teddy-bear`` and ``Teddy Bear`` all become ``teddy bear``; ``car_(sedan)``
becomes ``car sedan``. Matching between manifests, folders and word vectors uses this form.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[_\-\s]+")
_BRACKETS = re.compile(r"[()\[\]]")


def normalize_class_name(name: str) -> str:
    """Lower-case; ``_``, ``-`` and runs of white space become one space; brackets are dropped."""
    text = _BRACKETS.sub(" ", name.strip().lower())
    return _SEPARATORS.sub(" ", text).strip()


def class_lookup(names: list[str]) -> dict[str, int]:
    """canonical name -> index; two names that normalise to one form are an error."""
    table: dict[str, int] = {}
    for i, name in enumerate(names):
        key = normalize_class_name(name)
        if key in table:
            raise ValueError(
                f"class names {names[table[key]]!r} and {name!r} normalise to the same name {key!r}"
            )
        table[key] = i
    return table
