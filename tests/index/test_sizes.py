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


def test_one_rule_for_the_number_of_ivf_lists():
    # suggested_ivf_factory and the memory-budget chooser agree (they used 4*sqrt(n) and sqrt(n))
    from sbirkit.index import suggested_ivf_factory
    from sbirkit.index.autotune import candidates
    from sbirkit.index.faiss_ops import default_nlist

    for n in (8_000, 100_000, 1_000_000, 10_000_000):
        nlist = default_nlist(n)
        assert suggested_ivf_factory(n) == f"IVF{nlist},Flat"
        ivf = [c.factory for c in candidates(n, 64) if "IVF" in c.factory]  # IVF-Flat from 20k rows, IVF-PQ below
        assert ivf and all(f"IVF{nlist}," in f for f in ivf), ivf
    assert [default_nlist(n) for n in (8_000, 100_000, 1_000_000, 10_000_000)] == [64, 256, 1024, 4096]
    assert default_nlist(1000) == 16  # sqrt(1000) ~ 32 lists would hold fewer than 39 vectors each
