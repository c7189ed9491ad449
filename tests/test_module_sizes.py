"""No module in ``src/`` over 600 lines (issue 21, "rooms by concern"), except the synthetic shape
builders. A module that outgrows the limit is split into a package whose modules are named for what
they hold (docs/architecture.md).

``ALLOWED`` lists the modules still over the limit while their owners split them; it may only
shrink: an entry that is no longer over the limit (or no longer exists) fails the test, so it is
removed when the split lands. ``python tests/test_module_sizes.py`` prints every module over the
limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 600

#: Exempt for good: procedural drawing code, one builder per shape, long by nature and read alone.
EXEMPT = {"sbirkit/data/synthetic/shapes.py"}

#: Still over the limit. Only shrinks (empty since both method modules became packages, issue 21).
ALLOWED: set[str] = set()


def line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def module_sizes(src: Path) -> dict[str, int]:
    """``path relative to src (posix) -> lines`` for every ``.py`` file under ``src/sbirkit``."""
    return {p.relative_to(src).as_posix(): line_count(p) for p in sorted((src / "sbirkit").rglob("*.py"))}


def problems(src: Path, allowed: set[str] = ALLOWED, exempt: set[str] = EXEMPT,
             limit: int = MAX_LINES) -> list[str]:
    sizes = module_sizes(src)
    out = [f"src/{path}: {n} lines, expected at most {limit} (split it into a package of modules named "
           f"for what they hold)"
           for path, n in sizes.items() if n > limit and path not in allowed and path not in exempt]
    for path in sorted(allowed):
        if path not in sizes:
            out.append(f"src/{path}: in ALLOWED but gone; remove it from ALLOWED in {Path(__file__).name}")
        elif sizes[path] <= limit:
            out.append(f"src/{path}: {sizes[path]} lines, no longer over {limit}; remove it from ALLOWED in "
                       f"{Path(__file__).name}")
    return out


def test_no_module_over_the_limit():
    found = problems(SRC)
    assert not found, "\n".join(found)


def test_the_exempt_and_allowed_modules_exist():
    sizes = module_sizes(SRC)
    for path in EXEMPT:
        assert path in sizes, f"{path}: exempt, but not in src/"


def test_a_big_new_module_fails(tmp_path):
    """A temporary module over the limit in a copy of ``src`` is reported with its file and line count."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(SRC / "sbirkit", src / "sbirkit", ignore=shutil.ignore_patterns("__pycache__", "*.yaml",
                                                                                      "*.json", "*.npz", "static"))
    (src / "sbirkit" / "index" / "too_big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (src / "sbirkit" / "index" / "just_fits.py").write_text("x = 1\n" * MAX_LINES)
    found = problems(src)
    assert found == [f"src/sbirkit/index/too_big.py: {MAX_LINES + 1} lines, expected at most {MAX_LINES} (split "
                     "it into a package of modules named for what they hold)"]


def test_a_stale_allowed_entry_fails(tmp_path):
    """The allow-list only shrinks: a listed module that is now small, or gone, is reported."""
    src = tmp_path / "src"
    (src / "sbirkit" / "methods").mkdir(parents=True)
    (src / "sbirkit" / "methods" / "small.py").write_text("x = 1\n" * 10)
    found = problems(src, allowed={"sbirkit/methods/small.py", "sbirkit/methods/gone.py"}, exempt=set())
    assert found == [
        "src/sbirkit/methods/gone.py: in ALLOWED but gone; remove it from ALLOWED in test_module_sizes.py",
        "src/sbirkit/methods/small.py: 10 lines, no longer over 600; remove it from ALLOWED in "
        "test_module_sizes.py",
    ]


if __name__ == "__main__":
    found = problems(SRC)
    print("\n".join(found) or f"every module in src/ is at most {MAX_LINES} lines (but {sorted(EXEMPT | ALLOWED)})")
    sys.exit(1 if found else 0)
