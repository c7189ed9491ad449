"""One byte formatter (binary units) for every size sbirkit prints, and the sizes it reads."""

from __future__ import annotations

import re
from pathlib import Path

from sbirkit.index.sizes import format_bytes, parse_memory

SRC = Path(__file__).resolve().parents[2] / "src" / "sbirkit"


def test_a_budget_prints_in_the_unit_it_was_given_in():
    assert format_bytes(parse_memory("4GiB")) == "4.0 GiB"  # was "4.3 GB" in `index info`
    assert format_bytes(parse_memory("512MiB")) == "512.0 MiB"
    assert format_bytes(parse_memory("4GB")) == "3.7 GiB"  # 4e9 bytes, in the same binary units
    assert format_bytes(999) == "999 B" and format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 2**40) == "5.0 TiB"


def test_no_other_byte_formatter_in_src():
    # a decimal "kB/MB/GB" ladder next to the binary one is what made the two disagree
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "sizes.py" and re.search(r'\(\s*"B",\s*"(kB|KiB)"', p.read_text())]
    assert offenders == []
