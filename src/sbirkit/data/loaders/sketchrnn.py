"""sketch-rnn ``.npz`` files (Ha & Eck, 2017): stroke-3 drawings under keys train/valid/test.

Each key holds an object array of (n, 3) int arrays (dx, dy, pen_lifted), y pointing down; the
class is the file stem. Loading needs ``allow_pickle=True``: open only files you trust.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from .. import register_dataset
from ..dataset import SBIRDataset, SkippedFile
from ..records import DataError, Modality, Sample
from ..strokes import Strokes

#: npz key -> split name used in sbirkit
SPLIT_KEYS = {"train": "train", "valid": "val", "test": "test"}


class SketchRNNDataset(SBIRDataset):
    """Vector sketches from sketch-rnn stroke-3 files; ``index`` is the row within its split."""

    name = "sketch-rnn"

    def __init__(self, drawings: dict[str, np.ndarray], **kwargs):
        self._drawings = drawings  # sample key -> (n, 3) stroke-3 array
        super().__init__(**kwargs)

    def read(self, sample: Sample) -> Strokes:
        return Strokes.from_stroke3(self._drawings[sample.key], source=sample.location())


def _files(root: str) -> list[Path]:
    base = Path(root)
    if base.is_file():
        if base.suffix != ".npz":
            raise DataError(f"{base}: file: expected a sketch-rnn .npz file or a folder of them")
        return [base]
    if not base.is_dir():
        raise DataError(
            f"{base}: root: expected a sketch-rnn .npz file or a folder of them, not found"
        )
    files = sorted(base.glob("*.npz"))
    if not files:
        raise DataError(f"{base}: files: expected one <class>.npz file per class, found none")
    return files


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=True, encoding="latin1") as npz:
            present = {k: npz[k] for k in npz.files if k in SPLIT_KEYS}
            keys = list(npz.files)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{path}: format: expected a .npz archive, got: {reason}") from None
    if not present:
        raise DataError(
            f"{path}: keys: expected train/valid/test arrays of stroke-3 drawings, found {keys}"
        )
    for key, arr in present.items():
        if arr.ndim != 1:
            raise DataError(
                f"{path}: {key}: expected a 1-D array of (n, 3) drawings, got shape {arr.shape}"
            )
    return present


@register_dataset("sketch-rnn")
def sketch_rnn(root: str, image_size: int = 64, stroke_width: float = 2.0) -> SketchRNNDataset:
    """sketch-rnn stroke-3 ``.npz`` (one class per file); splits train/val/test ("valid" -> "val").

    A drawing that is not an (n, 3) array or has no points is recorded in ``skipped`` as
    ``path#key[row]``.
    """
    files = _files(root)
    drawings: dict[str, np.ndarray] = {}
    samples: list[Sample] = []
    skipped: list[SkippedFile] = []
    for ci, path in enumerate(files):
        for npz_key, arr in _load(path).items():
            split = SPLIT_KEYS[npz_key]
            for i, drawing in enumerate(arr):
                d = np.asarray(drawing)
                where = f"{path}#{npz_key}[{i}]"
                if d.ndim != 2 or d.shape[1] != 3 or not np.issubdtype(d.dtype, np.number):
                    reason = f"expected an (n, 3) stroke-3 array, got {d.dtype} {d.shape}"
                    skipped.append(SkippedFile(where, reason))
                    continue
                if len(d) == 0:
                    skipped.append(SkippedFile(where, "empty drawing: expected at least one point"))
                    continue
                key = f"{path.stem}/{split}/{i}"
                drawings[key] = d
                samples.append(
                    Sample(
                        key=key,
                        modality=Modality.SKETCH,
                        class_index=ci,
                        class_name=path.stem,
                        source=str(path),
                        index=i,
                        split=split,
                    )
                )
    return SketchRNNDataset(
        drawings,
        classes=[f.stem for f in files],
        samples=samples,
        root=str(root),
        image_size=image_size,
        stroke_width=stroke_width,
        skipped=skipped,
    )
