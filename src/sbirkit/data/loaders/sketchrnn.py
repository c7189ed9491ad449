"""sketch-rnn ``.npz`` files (Ha & Eck, 2017): stroke-3 drawings under keys train/valid/test.

Each key holds an object array of (n, 3) int arrays (dx, dy, pen_lifted), y pointing down; the
class is the file stem. The object arrays are pickles; they are read with
:func:`sbirkit.data.npz.read_npz`, which rebuilds numpy arrays and refuses anything else, so a
crafted file cannot run code. Non-finite coordinates make a drawing a skipped row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..dataset import SBIRDataset, SkippedFile
from ..npz import npz_keys, read_npz
from ..records import DataError, Modality, Sample
from ..registry import register_dataset
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
    present = read_npz(path, keys=SPLIT_KEYS, encoding="latin1")  # DataError names file and member
    if not present:
        raise DataError(
            f"{path}: keys: expected train/valid/test arrays of stroke-3 drawings, found {npz_keys(path)}"
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

    A drawing that is not an (n, 3) array, has no points or has a NaN/inf coordinate is recorded
    in ``skipped`` as ``path#key[row]``. A file whose pickles name anything but numpy arrays is
    refused with a :class:`DataError` (nothing in it runs).
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
                if not np.isfinite(d).all():
                    skipped.append(SkippedFile(where, "coordinates: expected finite numbers, got NaN or inf"))
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
