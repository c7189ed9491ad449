"""QMUL fine-grained SBIR, V1 release ("Sketch Me That Shoe", Yu et al., CVPR 2016).

Layout: ``<cat>_sketch_db_{train,test}.mat`` and ``<cat>_edge_db_{train,test}.mat``, each with key
``data``: a uint8 N×256×256 array of black lines on white. Sketch i of a split was drawn from photo
i of that split. The photo side is the photo's **edge map**: the RGB photos are not in this release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from ..dataset import SBIRDataset
from ..records import DataError, Modality, Sample
from ..registry import register_dataset

SPLITS = ("train", "test")
_MAT_ERRORS = (OSError, ValueError, TypeError, scipy.io.matlab.MatReadError)
_KINDS = (("sketch", Modality.SKETCH), ("edge", Modality.PHOTO))


class QMULV1Dataset(SBIRDataset):
    """QMUL-V1 categories: sketches paired with edge maps by row (``instance_id = split/i``; with
    several categories ``<category>/split/i``, and ``category`` is their names joined by ``+``).

    ``triplets`` holds ``<cat>_train_triplets.mat`` when present, else None: a dict from each key
    in the file (``One``, ``Two``, ``Three`` in the shoes release; one per annotator) to a list with
    one int array of shape (k, 2) per anchor photo, each row a pair of **1-based** photo indices
    as stored (the shoes file has 419 anchors = 304 train + 115 test photos, 45 pairs each). With
    several categories it maps each category that has such a file to that dict (None if none has).
    """

    name = "qmul-v1"

    def __init__(self, category: str, files: dict[tuple, Path], triplets, **kwargs):
        self.category = category
        self.files = files
        self.triplets = triplets
        self._arrays: dict[str, np.ndarray] = {}
        super().__init__(**kwargs)

    def _array(self, path: str) -> np.ndarray:
        if path not in self._arrays:  # loaded on first use, then kept
            self._arrays[path] = np.asarray(scipy.io.loadmat(path, variable_names=["data"])["data"])
        return self._arrays[path]

    def read(self, sample: Sample) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(self._array(sample.source)[sample.index]), "L")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _categories(root: Path) -> dict[str, Path]:
    """category -> folder, for ``<cat>_sketch_db_train.mat`` in ``root`` or its subfolders."""
    found: dict[str, Path] = {}
    suffix = "_sketch_db_train.mat"
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        for f in sorted(folder.glob(f"*{suffix}")):
            found.setdefault(f.name[: -len(suffix)], folder)
    return found


def _check_data(path: Path) -> int:
    """Number of rows of the ``data`` array in ``path``, after checking its shape and type."""
    try:
        info = {name: (shape, cls) for name, shape, cls in scipy.io.whosmat(str(path))}
    except NotImplementedError:
        raise DataError(f"{path}: format: expected a MATLAB v5 .mat file, got v7.3/HDF5") from None
    except _MAT_ERRORS as exc:
        raise DataError(
            f"{path}: format: expected a MATLAB .mat file, got: {_first_line(exc)}"
        ) from None
    if "data" not in info:
        raise DataError(
            f"{path}: key 'data': expected an N×256×256 uint8 array, found keys {sorted(info)}"
        )
    shape, cls = info["data"]
    if len(shape) != 3 or tuple(shape[1:]) != (256, 256) or cls != "uint8":
        raise DataError(
            f"{path}: data: expected an N×256×256 uint8 array, got {cls} {tuple(shape)}"
        )
    if shape[0] == 0:
        raise DataError(f"{path}: data: expected at least one image, got 0")
    return int(shape[0])


def _pairs(obj) -> np.ndarray:
    """Flatten a MATLAB cell of index pairs into a (k, 2) int64 array."""
    flat: list[int] = []

    def visit(x):
        if isinstance(x, np.ndarray) and x.dtype == object:
            for item in x.flat:
                visit(item)
        else:
            flat.extend(int(v) for v in np.asarray(x).ravel())

    visit(obj)
    if len(flat) % 2:
        raise ValueError(f"expected index pairs, got {len(flat)} numbers")
    return np.asarray(flat, dtype=np.int64).reshape(-1, 2)


def _read_triplets(path: Path) -> dict[str, list[np.ndarray]]:
    try:
        mat = scipy.io.loadmat(str(path))
    except (NotImplementedError, *_MAT_ERRORS) as exc:
        raise DataError(
            f"{path}: format: expected a MATLAB v5 .mat file, got: {_first_line(exc)}"
        ) from None
    out: dict[str, list[np.ndarray]] = {}
    for key, value in mat.items():
        if key.startswith("__"):
            continue
        try:
            rows = value.reshape(-1) if value.dtype == object else [value]
            out[key] = [_pairs(cell) for cell in rows]
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{path}: {key}: expected a cell array of photo index pairs ({exc})"
            ) from None
    if not out:
        raise DataError(
            f"{path}: keys: expected triplet annotations (e.g. One/Two/Three), found none"
        )
    return out


def _category_samples(category: str, folder: Path, class_index: int, qualified: bool):
    """The files and samples of one category; ``qualified`` puts the category in instance ids (several
    categories in one dataset must not pair shoe sketch i with chair edge map i)."""
    files: dict[tuple[str, str], Path] = {}
    samples: list[Sample] = []
    for split in SPLITS:
        counts = {}
        for kind, _modality in _KINDS:
            path = folder / f"{category}_{kind}_db_{split}.mat"
            if not path.is_file():
                raise DataError(
                    f"{path}: file: expected the {split} {kind} .mat file of {category!r}, not found"
                )
            files[(kind, split)] = path
            counts[kind] = _check_data(path)
        if counts["sketch"] != counts["edge"]:
            raise DataError(
                f"{files[('sketch', split)]}: data: expected as many sketches as edge maps in "
                f"{files[('edge', split)].name} ({counts['edge']}), got {counts['sketch']}"
            )
        for kind, modality in _KINDS:
            path = str(files[(kind, split)])
            for i in range(counts[kind]):
                samples.append(
                    Sample(
                        key=f"{category}/{split}/{modality.value}/{i}",
                        modality=modality,
                        class_index=class_index,
                        class_name=category,
                        source=path,
                        index=i,
                        instance_id=f"{category}/{split}/{i}" if qualified else f"{split}/{i}",
                        split=split,
                    )
                )
    return files, samples


def _category_triplets(category: str, folder: Path):
    for name in (f"{category}_train_triplets.mat", f"{category}_triplets_train.mat"):
        if (folder / name).is_file():
            return _read_triplets(folder / name)
    return None


@register_dataset("qmul-v1")
def qmul_v1(
    root: str,
    category: str | list[str] | None = None,
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> QMULV1Dataset:
    """QMUL-V1 shoes/chairs .mat files: sketches paired with photo edge maps (Yu et al., CVPR 2016).

    ``category`` names one category (``shoes``), or a list of them (``[shoes, chairs]``): each
    becomes a class of its own (class index = position in the list), for category-level tasks
    such as adapting a model meta-trained on shoes to chairs. With several categories instance
    ids carry the category (``chairs/test/3``) so pairs never cross categories; ``files`` is then
    keyed by ``(category, kind, split)`` and ``triplets`` by category. One category keeps the
    single-category layout (``test/3``, ``files[(kind, split)]``).
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(
            f"{base}: root: expected a folder with <category>_sketch_db_train.mat files, not found"
        )
    found = _categories(base)
    if not found:
        raise DataError(
            f"{base}: files: expected <category>_sketch_db_{{train,test}}.mat, found none"
        )
    if isinstance(category, (list, tuple)):
        names = [str(c) for c in category]
        if not names:
            raise DataError(f"{base}: category: expected a category or a non-empty list of them, got []")
        repeated = sorted({c for c in names if names.count(c) > 1})
        if repeated:
            raise DataError(f"{base}: category: expected distinct names, got {repeated[0]!r} more than once")
        missing = [c for c in names if c not in found]
        if missing:
            raise DataError(
                f"{base}: category: expected names from {sorted(found)}, got {missing[0]!r}"
            )
        if len(names) > 1:
            files: dict = {}
            samples: list[Sample] = []
            triplets = {}
            for index, name in enumerate(names):
                cat_files, cat_samples = _category_samples(name, found[name], index, qualified=True)
                files.update({(name, *key): path for key, path in cat_files.items()})
                samples += cat_samples
                cat_triplets = _category_triplets(name, found[name])
                if cat_triplets is not None:
                    triplets[name] = cat_triplets
            return QMULV1Dataset(
                "+".join(names),
                files,
                triplets or None,
                classes=names,
                samples=samples,
                root=str(base),
                image_size=image_size,
                stroke_width=stroke_width,
            )
        category = names[0]
    if category is None:
        if len(found) > 1:
            raise DataError(
                f"{base}: category: expected one of {sorted(found)} (several found), got None"
            )
        category = next(iter(found))
    elif category not in found:
        raise DataError(f"{base}: category: expected one of {sorted(found)}, got {category!r}")
    folder = found[category]
    files, samples = _category_samples(category, folder, 0, qualified=False)
    return QMULV1Dataset(
        category,
        files,
        _category_triplets(category, folder),
        classes=[category],
        samples=samples,
        root=str(folder),
        image_size=image_size,
        stroke_width=stroke_width,
    )
