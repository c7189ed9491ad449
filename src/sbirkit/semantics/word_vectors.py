"""Class-name vectors from a user's word2vec / GloVe file (text or binary, optionally gzipped).

The file is streamed and only the tokens the class names need are kept (real files are GBs).
A name is normalised (``car_(sedan)`` -> ``car sedan``); a multi-word name first tries its
joined forms (``teddy_bear``, ``teddy-bear``, ``teddybear``), else the mean of its words' vectors.
Each token is matched exactly first, then case-insensitively (the first such word in the file).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DataError, normalize_class_name
from .vectors import ClassVectors

FORMATS = ("auto", "text", "binary")
_CHUNK = 1 << 20
_MAX_WORD_BYTES = 1 << 16


@dataclass
class WordTable:
    """Vectors read for the wanted (lower-case) tokens: ``exact`` where the file has the token as
    is, ``folded`` where it only has another casing of it (the first one in the file)."""

    dim: int
    exact: dict[str, np.ndarray] = field(default_factory=dict)
    folded: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, token: str) -> np.ndarray | None:
        found = self.exact.get(token)
        return found if found is not None else self.folded.get(token)

    def offer(self, word: str, wanted: set[str]) -> str | None:
        """The wanted token ``word`` would fill, or None if it is not wanted / already filled."""
        low = word.lower()
        if low not in wanted or low in self.exact:
            return None
        if word == low or low not in self.folded:
            return low
        return None

    def store(self, word: str, token: str, vector: np.ndarray) -> None:
        (self.exact if word == token else self.folded)[token] = vector


def name_tokens(name: str) -> tuple[list[str], list[str]]:
    """(joined phrase forms to try first, single words to average) for one class name."""
    words = normalize_class_name(name).split()
    if len(words) < 2:
        return [], words
    return ["_".join(words), "-".join(words), "".join(words)], words


def resolve_format(path: Path, format: str) -> str:
    """``auto``: binary for ``.bin`` / ``.bin.gz``, text otherwise."""
    if format not in FORMATS:
        raise ValueError(f"word vectors: format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if format != "auto":
        return format
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    return "binary" if ".bin" in suffixes else "text"


def _open(path: Path, mode: str):
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    if "b" in mode:
        return opener(path, mode)
    return opener(path, mode, encoding="utf-8", errors="replace", newline="\n")


def _parse_header(line: str) -> tuple[int, int] | None:
    """``(count, dim)`` if ``line`` is a word2vec header ``"N d"``, else None."""
    parts = line.split()
    if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]) > 0:
        return int(parts[0]), int(parts[1])
    return None


def _finite(vector: np.ndarray, path: Path, where: str, word: str) -> np.ndarray:
    if not np.all(np.isfinite(vector)):
        raise DataError(f"{path}: {where}: vector of {word!r}: expected finite numbers, found NaN or inf")
    return vector


def read_word_vectors(path: str | os.PathLike, wanted: set[str], format: str = "auto") -> WordTable:
    """Stream a word2vec/GloVe file and keep vectors only for the lower-case tokens in ``wanted``.

    Text: one ``word v1 .. vd`` a line, with or without a ``"N d"`` header (GloVe has none).
    Binary (word2vec ``-binary 1``): header ``"N d\\n"``, then per word ``word``, a space, d
    little-endian float32 and an optional newline. Reading stops once every token has an exact match.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: word vector file: expected an existing file, found none")
    wanted = {t.lower() for t in wanted}
    if resolve_format(path, format) == "binary":
        return _read_binary(path, wanted)
    return _read_text(path, wanted)


def _read_text(path: Path, wanted: set[str]) -> WordTable:
    with _open(path, "rt") as f:
        first = f.readline()
        header = _parse_header(first)
        if header is not None:
            count, dim = header
            pending: list[str] = []
        else:
            count, dim = None, _trailing_numbers(first.rstrip().split(" "))
            pending = [first]
        if dim < 1:
            raise DataError(f"{path}: line 1: expected 'word v1 .. vd' or a 'N d' header, got {first[:60]!r}")
        table = WordTable(dim)
        lineno = 1 if header is not None else 0
        words_seen = 0
        for line in _chain(pending, f):
            lineno += 1
            line = line.rstrip()
            if not line:
                continue
            words_seen += 1
            token = table.offer(line.split(" ", 1)[0], wanted)
            if token is None:
                continue
            parts = line.split(" ")
            if len(parts) < dim + 1:
                raise DataError(f"{path}: line {lineno}: expected a word and {dim} numbers, got {len(parts) - 1} fields")
            word = " ".join(parts[: len(parts) - dim])  # GloVe 840B has a few tokens with spaces
            if table.offer(word, wanted) != token:
                continue
            try:
                vector = np.array(parts[len(parts) - dim :], dtype=np.float32)
            except ValueError:
                raise DataError(f"{path}: line {lineno}: vector of {word!r}: expected {dim} numbers") from None
            table.store(word, token, _finite(vector, path, f"line {lineno}", word))
            if len(table.exact) == len(wanted):
                return table
        if count is not None and words_seen != count:
            raise DataError(f"{path}: header says {count} words, the file has {words_seen} (truncated?)")
    return table


def _trailing_numbers(parts: list[str]) -> int:
    """How many fields after the first (the word) end the line as numbers: the dimension of a
    header-less file, read off its first line even when its word has spaces (``cat food 1 2``)."""
    n = 0
    for part in reversed(parts[1:]):
        try:
            float(part)
        except ValueError:
            break
        n += 1
    return n


def _chain(first: list[str], rest):
    yield from first
    yield from rest


def _read_binary(path: Path, wanted: set[str]) -> WordTable:
    with _open(path, "rb") as f:
        head = f.readline()
        header = _parse_header(head.decode("ascii", errors="replace"))
        if header is None:
            raise DataError(f"{path}: line 1: expected a word2vec binary header 'N d', got {head[:60]!r}")
        count, dim = header
        width = 4 * dim
        table = WordTable(dim)
        buf, pos = b"", 0

        def fill(need: int) -> bool:
            """Make ``need`` bytes available from ``pos``; False at end of file."""
            nonlocal buf, pos
            while len(buf) - pos < need:
                chunk = f.read(max(_CHUNK, need))
                if not chunk:
                    return False
                buf, pos = buf[pos:] + chunk, 0
            return True

        for i in range(count):
            while fill(1) and buf[pos : pos + 1] == b"\n":  # the newline after the previous vector
                pos += 1
            space = buf.find(b" ", pos)
            while space < 0:
                if len(buf) - pos > _MAX_WORD_BYTES or not fill(len(buf) - pos + 1):
                    raise DataError(f"{path}: word {i + 1} of {count}: expected 'word' + space + {width} bytes, "
                                    f"the file ends or has no space (truncated or not binary?)")
                space = buf.find(b" ", pos)
            word = buf[pos:space].decode("utf-8", errors="replace")
            pos = space + 1
            if not fill(width):
                raise DataError(f"{path}: word {i + 1} of {count} ({word!r}): expected {width} bytes of float32, "
                                f"the file ends first (truncated?)")
            token = table.offer(word, wanted)
            if token is not None:
                vector = np.frombuffer(buf, dtype="<f4", count=dim, offset=pos).astype(np.float32)
                table.store(word, token, _finite(vector, path, f"word {i + 1}", word))
                if len(table.exact) == len(wanted):
                    return table
            pos += width
    return table


def lookup_class_names(class_names: list[str], table: WordTable) -> tuple[np.ndarray, list[str], list[str]]:
    """(vectors with NaN rows for names with no vector, missing names, partially covered names)."""
    vectors = np.full((len(class_names), table.dim), np.nan, dtype=np.float32)
    missing, partial = [], []
    for i, name in enumerate(class_names):
        phrases, words = name_tokens(name)
        phrase = next((v for v in (table.get(p) for p in phrases) if v is not None), None)
        if phrase is not None:
            vectors[i] = phrase
            continue
        found = [v for v in (table.get(w) for w in words) if v is not None]
        if not found:
            missing.append(name)
            continue
        if len(found) < len(words):
            partial.append(name)
        vectors[i] = np.mean(found, axis=0)
    return vectors, missing, partial


def word_file_vectors(class_names: list[str], *, path: str | os.PathLike | None = None,
                      format: str = "auto") -> ClassVectors:
    """Class vectors from the word2vec/GloVe file ``path`` (rows of names with no vector are NaN)."""
    if path is None:
        raise ValueError("word vectors: option path: expected the word2vec/GloVe file to read, got none")
    wanted: set[str] = set()
    for name in class_names:
        phrases, words = name_tokens(name)
        wanted.update(phrases, words)
    table = read_word_vectors(path, wanted, format)
    vectors, missing, partial = lookup_class_names(class_names, table)
    return ClassVectors(names=list(class_names), vectors=vectors, source="word2vec",
                        missing=missing, partial=partial, origin=str(path))


def word_file_identity(*, path: str | os.PathLike | None = None, format: str = "auto") -> dict:
    """What makes a cached table stale: the file (path, size, modification time) and its format."""
    if path is None:
        raise ValueError("word vectors: option path: expected the word2vec/GloVe file to read, got none")
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise DataError(f"{path}: word vector file: expected an existing file, found none")
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "format": resolve_format(resolved, format)}
