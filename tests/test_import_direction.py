"""Imports go one way (docs/architecture.md, "The import rule"), and no module imports itself
back through others.

Every import in ``src/sbirkit`` is read from the source, wherever it is written: at module level,
inside a function, under ``if TYPE_CHECKING:``, and ``importlib.import_module("literal")``. Each
module belongs to one layer; a module may import its own layer and the layers below it, never one
above. Within a layer, the import graph must have no circle.

Package faces: ``from . import child`` (or ``from .child import x``) is an edge to the child
module, not to the package ``__init__`` (Python runs the ``__init__`` first either way, but that
is the package face re-exporting its children, which is fine). ``from . import name`` where
``name`` is not a submodule, or ``from .. import name``, reads the package face: a child doing
that closes a circle through its own package, and is reported.
"""

from __future__ import annotations

import ast
import functools
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# The layers, bottom first. A module is placed by its longest matching prefix.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("sbirkit.__init__", "sbirkit.errors", "sbirkit.modality", "sbirkit.registry", "sbirkit.fileio")),
    ("data", ("sbirkit.data",)),
    ("models", ("sbirkit.models",)),
    ("semantics", ("sbirkit.semantics",)),
    ("losses", ("sbirkit.losses",)),
    ("eval", ("sbirkit.eval",)),
    # the engine's public API for methods: contexts, sources, optimiser specs, protocols, evaluator
    # (every engine module but the runner's)
    ("engine-api", ("sbirkit.engine",)),
    ("methods", ("sbirkit.methods",)),
    # the runner: trainer, checkpoints, run folders and their lock and log, load_run, fingerprints,
    # evaluate_run; and the engine package face, which re-exports the trainer
    ("runner", ("sbirkit.engine.__init__", "sbirkit.engine.trainer", "sbirkit.engine.checkpoint",
                "sbirkit.engine.run_lock", "sbirkit.engine.runlog", "sbirkit.engine.inference",
                "sbirkit.engine.evaluate", "sbirkit.engine.init_from", "sbirkit.engine.adapt_run",
                "sbirkit.engine.preset_runs")),
    ("index", ("sbirkit.index",)),
    ("top", ("sbirkit.serve", "sbirkit.cli", "sbirkit.demo", "sbirkit.__main__")),
]

#: packages whose ``__init__`` is placed on its own (``<package>.__init__`` in LAYERS)
PACKAGE_FACES = {"sbirkit", "sbirkit.engine"}

# Known violations: what is left of the engine <-> methods circle after phase 2 of issue 21 (the
# method registry in a leaf module, methods/registry.py; the evaluator embeds through
# engine/embedding.py; a method asks ``ctx.load_run`` for another run). Each entry is (importer,
# imported): an upward import, or an import that closes a circle inside a layer. They are left out
# of both checks; this list only shrinks: an entry that no longer occurs fails the test, so it is
# removed with the import it names. None is left: crossx_dfl asks its context for its teachers
# (``ctx.load_run``, ``ctx.preset_run``) and adaptive_fg is started by the runner's ``train.init_from``.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    if module in PACKAGE_FACES:
        module += ".__init__"
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS in {Path(__file__).name}")
    return rank


def find_modules(src: Path) -> dict[str, tuple[Path, bool]]:
    """``dotted name -> (file, is_package)`` for every module under ``src/sbirkit``."""
    mods = {}
    for p in sorted((src / "sbirkit").rglob("*.py")):
        parts = list(p.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (p, is_pkg)
    return mods


def _known(name: str, mods) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _import_module_target(node: ast.Call, package: str) -> str | None:
    """The module a literal ``importlib.import_module("x")`` / ``import_module(".x", __name__)`` names."""
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
    if name != "import_module" or not node.args:
        return None
    arg = node.args[0]
    if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
        return None
    text = arg.value
    if text.startswith("."):
        level = len(text) - len(text.lstrip("."))
        base = package.split(".")[: len(package.split(".")) - (level - 1)]
        return ".".join(base + [text.lstrip(".")])
    return text


@functools.lru_cache(maxsize=None)
def _nodes(text: str) -> tuple[ast.AST, ...]:
    """The import statements and calls of a module's source (cached: the copies in the tests
    below parse once)."""
    return tuple(n for n in ast.walk(ast.parse(text)) if isinstance(n, (ast.Import, ast.ImportFrom, ast.Call)))


def import_edges(src: Path) -> dict[str, set[tuple[str, int]]]:
    """``importer -> {(imported module, line)}`` for every import of a sbirkit module."""
    mods = find_modules(src)
    edges: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        for node in _nodes(path.read_text()):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (node.level - 1)])
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    # a submodule is an edge to it; any other name is read from `module` itself
                    targets.append(sub if sub in mods else module)
            elif isinstance(node, ast.Call):
                target = _import_module_target(node, package)
                targets = [target] if target else []
            for t in targets:
                if not t.startswith("sbirkit"):
                    continue
                known = _known(t, mods)
                if known and known != name:
                    edges[name].add((known, node.lineno))
    return edges


def upward_imports(edges) -> list[tuple[str, str, int]]:
    out = []
    for a, targets in edges.items():
        for b, line in targets:
            if layer_of(b) > layer_of(a):
                out.append((a, b, line))
    return sorted(out)


def circles(edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph = {a: sorted({b for b, _ in t}) for a, t in edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(graph.get(w, ()))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def check(src: Path, known: set[tuple[str, str]] = KNOWN_VIOLATIONS) -> list[str]:
    """One line per problem: an upward import not in ``known``, a stale known entry, a
    circle that remains once the known imports are taken out."""
    edges = import_edges(src)
    problems = []
    found = upward_imports(edges)
    for a, b, line in found:
        if (a, b) not in known:
            problems.append(f"upward import: {a} (line {line}, layer {LAYERS[layer_of(a)][0]}) imports {b} "
                            f"(layer {LAYERS[layer_of(b)][0]})")
    every = {(a, b) for a, t in edges.items() for b, _ in t}
    for a, b in sorted(known - every):
        problems.append(f"known violation {a} -> {b} no longer occurs: remove it from KNOWN_VIOLATIONS")
    # circles, with the known imports taken out (they are the circle phase 2 breaks)
    pruned = {a: {(b, line) for b, line in t if (a, b) not in known} for a, t in edges.items()}
    for comp in circles(pruned):
        problems.append(f"import circle of {len(comp)} modules: {', '.join(comp)}")
    return problems


def test_imports_go_one_way_and_close_no_circle():
    problems = check(SRC)
    assert not problems, "\n".join(problems)


def test_every_module_has_a_layer():
    for name in find_modules(SRC):
        layer_of(name)


def _copy_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(SRC / "sbirkit", src / "sbirkit", ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    return src


@pytest.mark.parametrize("where, text", [
    ("module level", "from ..engine.trainer import Trainer\n"),
    ("inside a function", "def f():\n    from ..index.gallery import GalleryIndex\n    return GalleryIndex\n"),
    ("under TYPE_CHECKING", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..methods import Method\n"),
    ("import_module", "import importlib\n\ndef f():\n    return importlib.import_module('sbirkit.serve')\n"),
])
def test_a_reintroduced_upward_import_fails(tmp_path, where, text):
    src = _copy_src(tmp_path)
    assert check(src) == []
    (src / "sbirkit" / "data" / "upward.py").write_text(text)
    problems = check(src)
    assert len(problems) == 1 and problems[0].startswith("upward import: sbirkit.data.upward"), (where, problems)


def test_a_child_importing_its_package_face_is_a_circle(tmp_path):
    src = _copy_src(tmp_path)
    # the package face re-exports its child; the child reads a name back from the face
    init = src / "sbirkit" / "losses" / "__init__.py"
    init.write_text(init.read_text() + "\nfrom .face_child import helper  # noqa: E402,F401\n")
    (src / "sbirkit" / "losses" / "face_child.py").write_text("from . import TripletLoss\n\n\ndef helper():\n"
                                                             "    return TripletLoss\n")
    problems = check(src)
    assert problems == ["import circle of 2 modules: sbirkit.losses, sbirkit.losses.face_child"], problems


def test_a_stale_known_violation_is_reported():
    problems = check(SRC, KNOWN_VIOLATIONS | {("sbirkit.data.records", "sbirkit.cli")})
    assert problems == ["known violation sbirkit.data.records -> sbirkit.cli no longer occurs: "
                        "remove it from KNOWN_VIOLATIONS"]


if __name__ == "__main__":  # python tests/test_import_direction.py: the problems, one a line
    for line in check(SRC, set()):
        print(line)
    sys.exit(0)
