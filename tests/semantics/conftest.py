"""Tiny word-vector files written in the standard GloVe / word2vec text / word2vec binary formats."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

# float32 whose little-endian bytes are "\n \n ": a vector may contain newline and space bytes.
AWKWARD = float(np.frombuffer(b"\n \n ", dtype="<f4")[0])

# (word, vector) in file order. "cat food" is a GloVe-840B-style token with a space; "Sheep" comes
# before "sheep" so an exact match must win over the earlier case variant.
VOCAB: list[tuple[str, list[float]]] = [
    ("cat food", [7.0, 7.0, 7.0]),
    ("cat", [1.0, 0.0, 0.0]),
    ("dog", [0.0, 1.0, 0.0]),
    ("teddy", [1.0, 1.0, 0.0]),
    ("bear", [0.0, 0.0, 2.0]),
    ("car", [2.0, 0.0, 0.0]),
    ("sedan", [0.0, 2.0, 0.0]),
    ("Airplane", [0.0, 0.0, 1.0]),
    ("Sheep", [9.0, 9.0, 9.0]),
    ("sheep", [1.0, 2.0, 3.0]),
    ("hotdog", [5.0, 5.0, 5.0]),
    ("t-shirt", [3.0, 3.0, 3.0]),
    ("alarm", [1.0, 0.0, 1.0]),
    ("zebra", [AWKWARD, -1.5, 0.25]),
]
# Only in the word2vec files: a phrase token, as GoogleNews vectors have them.
PHRASES: list[tuple[str, list[float]]] = [("teddy_bear", [4.0, 0.0, 4.0])]


def _text(vocab, header: bool, trailing_space: bool) -> str:
    lines = [f"{len(vocab)} 3"] if header else []
    for word, vec in vocab:
        lines.append(word + " " + " ".join(repr(float(np.float32(x))) for x in vec) + (" " if trailing_space else ""))
    return "\n".join(lines) + "\n"


@pytest.fixture
def glove_file(tmp_path: Path) -> Path:
    path = tmp_path / "glove.6B.3d.txt"
    path.write_text(_text(VOCAB, header=False, trailing_space=False), encoding="utf-8")
    return path


@pytest.fixture
def w2v_text_file(tmp_path: Path) -> Path:
    """word2vec.c text output: header line, a space after every number."""
    path = tmp_path / "vectors.txt"
    path.write_text(_text(VOCAB + PHRASES, header=True, trailing_space=True), encoding="utf-8")
    return path


def write_w2v_binary(path: Path, vocab, newline: bool = True, count: int | None = None) -> Path:
    with open(path, "wb") as f:
        f.write(f"{len(vocab) if count is None else count} 3\n".encode("ascii"))
        for word, vec in vocab:
            f.write(word.encode("utf-8") + b" " + np.asarray(vec, dtype="<f4").tobytes() + (b"\n" if newline else b""))
    return path


@pytest.fixture
def binary_vocab():
    """The vocabulary of the text files, less the token with a space (binary words end at a space)."""
    return [v for v in VOCAB + PHRASES if " " not in v[0]]


@pytest.fixture
def write_binary():
    """``write_binary(path, vocab, newline=True, count=None)``: a word2vec binary file."""
    return write_w2v_binary


@pytest.fixture
def w2v_binary_file(tmp_path: Path, binary_vocab) -> Path:
    return write_w2v_binary(tmp_path / "vectors.bin", binary_vocab)


@pytest.fixture
def gz_text_file(tmp_path: Path) -> Path:
    path = tmp_path / "glove.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(_text(VOCAB, header=False, trailing_space=False))
    return path
