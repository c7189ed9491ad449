"""Byte sizes in words: ``--max-memory`` values read (:func:`parse_memory`) and sizes printed
(:func:`format_bytes`), one formatter for every size sbirkit prints.

Sizes are printed in binary units (KiB, MiB, GiB: powers of 1024), as memory is measured, so
``--max-memory 4GiB`` prints as "4.0 GiB"; both kinds are read (``4GB`` = 4·10^9 bytes,
``4GiB`` = ``4G`` = 4·2^30).
"""

from __future__ import annotations

import re

from ..errors import UsageError

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
          "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}
_MEMORY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_memory(text: str | int, flag: str = "--max-memory") -> int:
    """Bytes in ``"4GB"`` (10^9), ``"4GiB"``/``"4G"`` (2^30), ``"512MB"``, ``"2000000"`` (bytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _MEMORY.fullmatch(str(text))
        unit = m.group(2).lower() if m else None
        if not m or unit not in _UNITS:
            raise UsageError(f"{flag}: expected a size such as 4GB, 4GiB, 512MB or 2000000 (bytes), got {text!r}")
        value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1:
        raise UsageError(f"{flag}: expected a positive size, got {text!r}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: "512 B", "146.5 KiB", "4.0 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover
