"""Read ``.npz`` archives without running code from them, object arrays included.

``np.load(..., allow_pickle=True)`` unpickles object arrays, and a pickle can call any function
(``os.system``, ``builtins.open``, ...) while it loads: opening a crafted file runs its code.
:func:`read_npz` opens the zip itself, reads each ``.npy`` member's header, and

* reads plain (numeric, string) arrays with ``numpy.lib.format.read_array(allow_pickle=False)``;
* unpickles object arrays with :class:`ArrayUnpickler`, whose ``find_class`` admits only what
  numpy's own array pickles name: ``numpy.core.multiarray._reconstruct`` (``numpy._core...`` in
  numpy 2), ``numpy.ndarray`` and ``numpy.dtype``. Those are wrapped so that a pickle cannot use
  them for anything but rebuilding an array: ``_reconstruct`` accepts only the empty
  placeholder numpy writes, ``ndarray`` can be named but not called, ``dtype`` only takes a type
  string. Every other global is refused.

Anything refused, malformed or over the limits below raises :class:`~sbirkit.errors.DataError`
with one line naming the file and the member. Limits (module constants):

* :data:`MAX_MEMBER_BYTES` -- uncompressed size of one member (2 GiB).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

#: Largest uncompressed ``.npy`` member read (bytes); a bigger one is refused before reading.
MAX_MEMBER_BYTES = 2 * 1024**3

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's own array-rebuilding function, any version
_RECONSTRUCT_NAMES = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}


class _NdarrayName:
    """What ``numpy.ndarray`` resolves to inside a pickle: a name for ``_reconstruct``, not callable."""

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayName()


def _reconstruct(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct`` limited to the empty placeholder numpy pickles write.

    numpy pickles an array as ``_reconstruct(ndarray, (0,), b'b')`` followed by ``__setstate__``
    with the real shape, dtype and data; anything else (a subclass, a big preallocation) is refused.
    """
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"_reconstruct: expected numpy.ndarray, got {subtype!r}")
    if not (isinstance(shape, tuple) and all(type(n) is int and 0 <= n <= 1 for n in shape)):
        raise pickle.UnpicklingError(f"_reconstruct: expected the placeholder shape (0,), got {shape!r}")
    if not isinstance(dtype, (bytes, str)) or len(dtype) > 8:
        raise pickle.UnpicklingError(f"_reconstruct: expected a type code, got {dtype!r}")
    return _RECONSTRUCT(np.ndarray, shape, dtype)


def _dtype(spec, align=False, copy=False):
    """``numpy.dtype`` limited to a type string (``'i2'``, ``'O8'``, ``'<f4'``...)."""
    if not isinstance(spec, str) or len(spec) > 16:
        raise pickle.UnpicklingError(f"dtype: expected a type string, got {spec!r}")
    return np.dtype(spec, bool(align), bool(copy))


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays (of any nesting) and nothing that runs code.

    ``find_class`` resolves only ``_reconstruct``, ``ndarray`` and ``dtype`` (as restricted
    wrappers); every other global raises ``pickle.UnpicklingError``. Persistent ids are refused
    by the base class.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _RECONSTRUCT_NAMES:
            return _reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _dtype
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed (only numpy arrays are)")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, encoding: str) -> np.ndarray:
    if info.file_size > MAX_MEMBER_BYTES:
        raise DataError(f"{where}: size: expected at most {MAX_MEMBER_BYTES} bytes uncompressed, got {info.file_size}")
    with zf.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:  # 3.0 only adds UTF-8 field names (structured dtypes); read_array refuses objects
            dtype = None
        if dtype is not None and dtype.hasobject:
            if dtype != np.dtype(object):
                raise DataError(f"{where}: dtype: expected a plain object array or a numeric array, got {dtype}")
            arr = ArrayUnpickler(fp, encoding=encoding).load()
        else:
            arr = None
    if arr is None:  # no objects: numpy's reader, which never unpickles with allow_pickle=False
        with zf.open(info) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)
    if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != tuple(shape):
        got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{where}: data: expected an object array of shape {tuple(shape)} as the header says, got {got}")
    return arr.T if fortran else arr


def read_npz(path: str | Path, keys=None, encoding: str = "ASCII") -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file by key (member name without ``.npy``), read without running code.

    ``keys`` limits which members are read (others are skipped unread); ``encoding`` is passed to
    the unpickler for object arrays written by Python 2 (``'latin1'`` for sketch-rnn files).
    Raises :class:`DataError` naming the file (and member) for anything that is not a plain
    ``.npz`` of numpy arrays.
    """
    p = Path(path)
    wanted = None if keys is None else set(keys)
    out: dict[str, np.ndarray] = {}
    try:
        zf = zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{p}: format: expected a .npz (zip) archive, got: {_one_line(exc)}") from None
    with zf:
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if wanted is not None and key not in wanted:
                continue
            where = f"{p}#{info.filename}"
            if not info.filename.endswith(".npy"):
                raise DataError(f"{where}: member: expected only .npy arrays in the archive")
            try:
                out[key] = _read_member(zf, info, where, encoding)
            except DataError:
                raise
            except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, KeyError, IndexError,
                    EOFError, OSError, MemoryError, OverflowError, zipfile.BadZipFile, UnicodeError) as exc:
                raise DataError(f"{where}: data: expected a numpy array, refused: {_one_line(exc)}") from None
    return out


def npz_keys(path: str | Path) -> list[str]:
    """Member keys of an ``.npz`` file (names without ``.npy``), without reading any array."""
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(f"{p}: format: expected a .npz (zip) archive, got: {_one_line(exc)}") from None


__all__ = ["MAX_MEMBER_BYTES", "ArrayUnpickler", "npz_keys", "read_npz"]

