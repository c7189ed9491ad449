"""Folder-layout datasets: the shared folder walker, and the ``folder`` and ``image-folder`` loaders.

Every folder-based loader (Sketchy, TU-Berlin, QuickDraw-Extended, QMUL-V2 and the two here)
walks class folders with :class:`FolderCollector`, which classifies each file by extension
(raster image, SVG, Quick, Draw! ``.ndjson``), counts the files it cannot use, matches class
names across modalities with :func:`normalize_class_name` and pairs sketches with photos by
file stem. :class:`FolderDataset` reads the files back lazily.

``folder`` layout::

    ROOT/photo/<class>/<X>.jpg          photos (either side may be absent, not both)
    ROOT/sketch/<class>/<X>-<N>.png     sketches: raster, .svg, or .ndjson (one drawing a line)
    ROOT/metadata.csv                   optional: header ``path,split,user``; path relative to ROOT

A sketch ``X``, ``X-N`` or ``X_N`` pairs with the photo ``X.*`` of its class (both get
``instance_id = '<class>/X'``); ndjson drawings are never paired, their samples are the file's
non-blank lines (``index`` = 0-based line number, key ``path#line``), and a metadata row naming
an ndjson file applies to all its drawings.

``image-folder`` layout (torchvision ``ImageFolder``): ``ROOT/<class>/*`` or, when every
top-level folder is one of train/val/valid/test, ``ROOT/<split>/<class>/*``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from ..classnames import normalize_class_name
from ..dataset import SBIRDataset, SkippedFile
from ..records import DataError, Modality, Sample
from ..registry import register_dataset
from ..strokes import Strokes

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
VECTOR_SUFFIXES = {".svg": "svg", ".ndjson": "ndjson"}
PHOTO_KINDS = frozenset({"image"})
SKETCH_KINDS = frozenset({"image", "svg", "ndjson"})
SPLIT_FOLDERS = frozenset({"train", "val", "valid", "test"})
PAIRING_MODES = ("auto", "none", "required")

_COPY_SUFFIX = re.compile(r"^(.+)[-_](\d+)$")


def file_kind(path: str | os.PathLike) -> str | None:
    """``'image'``, ``'svg'`` or ``'ndjson'`` by extension (case-insensitive); None when unknown."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    return VECTOR_SUFFIXES.get(suffix)


def allowed_kinds(modality: Modality) -> frozenset[str]:
    """Photos are raster images; sketches may also be SVG or ndjson strokes."""
    return PHOTO_KINDS if modality is Modality.PHOTO else SKETCH_KINDS


def photo_stem_for(sketch_stem: str, photo_stems: set[str] | dict) -> str | None:
    """The photo a sketch ``X``, ``X-N`` or ``X_N`` was drawn from: ``X`` if it is a photo stem.

    An exact stem match wins, so ``a_1`` pairs with photo ``a_1`` before photo ``a``.
    """
    if sketch_stem in photo_stems:
        return sketch_stem
    m = _COPY_SUFFIX.match(sketch_stem)
    if m and m.group(1) in photo_stems:
        return m.group(1)
    return None


def require_dir(path: Path, field_name: str, expected: str) -> Path:
    """``path`` if it is a folder, else a one-line :class:`DataError`."""
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "not found"
        raise DataError(f"{path}: {field_name}: expected {expected}, {what}")
    return path


def subfolders(path: Path) -> list[str]:
    """Names of the folders directly inside ``path``, sorted (hidden ones excluded)."""
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def first_existing(root: Path, names: Sequence[str]) -> Path | None:
    """The first ``root/name`` that is a folder, or None."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    return None


@dataclass
class FoundFile:
    """One usable file found while walking: what it is and what the loader knows about it."""

    path: Path
    key: str
    modality: Modality
    class_name: str
    kind: str
    split: str | None = None
    user: str | None = None
    instance: str | None = (
        None  # explicit instance id (a per-pair folder), else derived from the stem
    )
    pairable: bool = True  # photos: may a sketch pair with it; sketches: should it look for a photo


@dataclass
class FolderCollector:
    """Accumulates files from class folders, then builds a :class:`FolderDataset`.

    ``root`` is the folder keys are relative to. Files with unknown extensions (or of a kind
    the modality cannot hold, e.g. an SVG photo) are recorded in ``skipped`` with the reason.
    """

    root: Path
    files: list[FoundFile] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)

    def skip(self, path: str | os.PathLike, reason: str) -> None:
        self.skipped.append(SkippedFile(os.fspath(path), reason))

    def key_for(self, path: Path, prefix: str | None = None, base: Path | None = None) -> str:
        rel = PurePosixPath(Path(os.path.relpath(path, base or self.root)).as_posix())
        return f"{prefix}/{rel}" if prefix else str(rel)

    def add(
        self,
        path: Path,
        modality: Modality,
        class_name: str,
        *,
        kind: str | None = None,
        key_prefix: str | None = None,
        base: Path | None = None,
        **fields,
    ) -> FoundFile:
        """Record one file known to be usable (its kind already checked by the caller)."""
        found = FoundFile(
            path,
            self.key_for(path, key_prefix, base),
            modality,
            class_name,
            kind or file_kind(path) or "image",
            **fields,
        )
        self.files.append(found)
        return found

    def scan_class_dir(
        self,
        class_dir: Path,
        modality: Modality,
        class_name: str | None = None,
        *,
        key_prefix: str | None = None,
        base: Path | None = None,
        **fields,
    ) -> int:
        """Add every usable file of one class folder; raise when it has none. Returns the count."""
        kinds = allowed_kinds(modality)
        class_name = class_name or class_dir.name
        n = 0
        with os.scandir(class_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            path = class_dir / e.name
            if e.is_dir():
                self.skip(
                    path, f"folder inside class folder {class_dir}: expected {modality.value} files"
                )
                continue
            kind = file_kind(e.name)
            if kind is None:
                self.skip(
                    path,
                    f"unknown extension {os.path.splitext(e.name)[1]!r}: expected one of {_describe(kinds)}",
                )
                continue
            if kind not in kinds:
                self.skip(
                    path,
                    f"{kind} file in a {modality.value} folder: expected one of {_describe(kinds)}",
                )
                continue
            self.add(
                path, modality, class_name, kind=kind, key_prefix=key_prefix, base=base, **fields
            )
            n += 1
        if n == 0:
            raise DataError(
                f"{class_dir}: {modality.value} files: expected at least one of {_describe(kinds)}, found none"
            )
        return n

    def scan_classes(
        self,
        folder: Path,
        modality: Modality,
        *,
        key_prefix: str | None = None,
        base: Path | None = None,
        **fields,
    ) -> list[str]:
        """Walk ``folder/<class>/*``; files directly inside ``folder`` are skipped and counted."""
        require_dir(folder, f"{modality.value} folder", "a folder of class folders")
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        names = []
        for e in entries:
            if e.name.startswith(".") and e.is_dir():
                continue
            if not e.is_dir():
                self.skip(
                    folder / e.name,
                    f"file outside a class folder: expected {folder}/<class>/<file>",
                )
                continue
            self.scan_class_dir(
                folder / e.name, modality, e.name, key_prefix=key_prefix, base=base, **fields
            )
            names.append(e.name)
        if not names:
            raise DataError(
                f"{folder}: class folders: expected at least one <class> folder, found none"
            )
        return names

    def class_names(self, modality: Modality | None = None) -> list[str]:
        """Distinct class names (folder spellings, first seen) of one modality or all."""
        seen: dict[str, str] = {}
        for f in self.files:
            if modality is None or f.modality is modality:
                seen.setdefault(normalize_class_name(f.class_name), f.class_name)
        return list(seen.values())

    def apply_metadata(self, csv_path: Path) -> None:
        """Set split and user per file from a ``path,split,user`` csv (paths relative to ``root``)."""
        by_key = {f.key: f for f in self.files}
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if "path" not in header or not ({"split", "user"} & set(header)):
                raise DataError(
                    f"{csv_path}: header: expected 'path,split,user', got {','.join(header) or '(empty)'!r}"
                )
            reader.fieldnames = header
            seen: set[str] = set()
            for row in reader:
                line = reader.line_num
                raw = (row.get("path") or "").strip()
                rel = PurePosixPath(raw.replace("\\", "/")).as_posix()
                if not raw:
                    raise DataError(
                        f"{csv_path}: row {line}: path: expected a file path relative to {self.root}, got ''"
                    )
                if rel in seen:
                    raise DataError(
                        f"{csv_path}: row {line}: path: expected each file once, {rel!r} is repeated"
                    )
                seen.add(rel)
                found = by_key.get(rel)
                if found is None:
                    target = self.root / rel
                    why = (
                        "is not a photo/sketch sample of this layout"
                        if target.exists()
                        else "does not exist"
                    )
                    raise DataError(
                        f"{csv_path}: row {line}: path: expected an existing sample file, {rel!r} {why}"
                    )
                found.split = (row.get("split") or "").strip() or None
                found.user = (row.get("user") or "").strip() or None

    def build(
        self, name: str, *, pairing: str = "auto", require_both: bool = False, **dataset_options
    ) -> FolderDataset:
        """Turn the files into samples: classes (sorted by normalised name), instance ids, pairing.

        Photos get ``instance_id = '<class>/<stem>'`` (their explicit instance if set; their key
        when not pairable, e.g. extended gallery photos or an ImageFolder across splits). With
        ``pairing`` 'auto' a sketch ``X``/``X-N``/``X_N`` pairs with photo ``X`` of its class when
        there is one; 'required' makes a sketch class without a photo class, or a sketch without
        its photo, a :class:`DataError`; 'none' leaves sketches unpaired.
        """
        if pairing not in PAIRING_MODES:
            raise ValueError(
                f"pairing: expected one of {', '.join(PAIRING_MODES)}, got {pairing!r}"
            )
        if not self.files:
            raise DataError(f"{self.root}: files: expected photos or sketches, found none")
        spelling = self._class_spellings()
        self._check_sides(spelling, require_both, pairing == "required")
        canon = sorted(spelling)
        index = {c: i for i, c in enumerate(canon)}
        photo_instance, photo_stems = self._photo_instances(spelling)

        offsets: dict[str, np.ndarray] = {}
        samples: list[Sample] = []
        for f in self.files:
            c = normalize_class_name(f.class_name)
            if f.modality is Modality.PHOTO:
                inst = photo_instance[id(f)]
            elif f.instance is not None:
                inst = f.instance
            elif pairing == "none" or not f.pairable or f.kind == "ndjson":
                inst = None
            else:
                stem = photo_stem_for(f.path.stem, photo_stems.get(c, {}))
                inst = f"{spelling[c]}/{stem}" if stem is not None else None
                if inst is None and pairing == "required":
                    raise DataError(
                        f"{f.path}: photo: expected '{spelling[c]}/{f.path.stem}.*' or the same "
                        "without a -N/_N suffix (pairing required), found none"
                    )
            common = {
                "modality": f.modality,
                "class_index": index[c],
                "class_name": spelling[c],
                "instance_id": inst,
                "user_id": f.user,
                "split": f.split,
            }
            source = os.fspath(f.path)
            if f.kind == "ndjson":
                lines = offsets[source] = ndjson_line_offsets(f.path)
                for i in np.flatnonzero(lines[:, 1] > 0).tolist():
                    samples.append(Sample(key=f"{f.key}#{i}", source=source, index=i, **common))
            else:
                samples.append(Sample(key=f.key, source=source, **common))
        return FolderDataset(
            [spelling[c] for c in canon],
            samples,
            name=name,
            root=os.fspath(self.root),
            skipped=self.skipped,
            line_offsets=offsets,
            **dataset_options,
        )

    def _class_spellings(self) -> dict[str, str]:
        """normalised name -> folder spelling; the photo folder's spelling wins."""
        spelling: dict[str, str] = {}
        for f in sorted(self.files, key=lambda f: f.modality is not Modality.PHOTO):
            spelling.setdefault(normalize_class_name(f.class_name), f.class_name)
        return spelling

    def _check_sides(
        self, spelling: dict[str, str], require_both: bool, require_pairs: bool
    ) -> None:
        classes = {
            m: {normalize_class_name(f.class_name) for f in self.files if f.modality is m}
            for m in Modality
        }
        if require_both and not all(classes.values()):
            side = "photos" if not classes[Modality.PHOTO] else "sketches"
            raise DataError(
                f"{self.root}: {side}: expected both photos and sketches, found no {side}"
            )
        if require_pairs:
            for c in sorted(classes[Modality.SKETCH] - classes[Modality.PHOTO]):
                where = next(
                    f.path.parent for f in self.files if normalize_class_name(f.class_name) == c
                )
                raise DataError(
                    f"{where}: photo class: expected a photo class matching sketch class "
                    f"{spelling[c]!r} (pairing required), found none"
                )

    def _photo_instances(
        self, spelling: dict[str, str]
    ) -> tuple[dict[int, str], dict[str, dict[str, FoundFile]]]:
        """Instance id of every photo (by ``id(file)``), and class -> stem -> photo for pairing."""
        owner: dict[str, FoundFile] = {}
        instance: dict[int, str] = {}
        stems: dict[str, dict[str, FoundFile]] = {}
        for f in self.files:
            if f.modality is not Modality.PHOTO:
                continue
            c = normalize_class_name(f.class_name)
            inst = f.instance or (f"{spelling[c]}/{f.path.stem}" if f.pairable else f.key)
            if inst in owner:
                raise DataError(
                    f"{f.path}: instance id: expected one photo per instance, {inst!r} is also {owner[inst].path}"
                )
            owner[inst] = f
            instance[id(f)] = inst
            if f.pairable and f.instance is None:
                stems.setdefault(c, {})[f.path.stem] = f
        return instance, stems


def add_extended_photos(
    col: FolderCollector, path: str | os.PathLike, known_classes: list[str], what: str
) -> None:
    """Add ``PATH/<class>/*`` as unpaired photos; every class must be one of ``known_classes``."""
    ext = require_dir(Path(path).absolute(), "extended photos", "a folder of class folders")
    known = {normalize_class_name(c): c for c in known_classes}
    for name in subfolders(ext):
        if normalize_class_name(name) not in known:
            raise DataError(
                f"{ext / name}: class: expected one of the {len(known)} {what} classes, {name!r} is not one"
            )
    start = len(col.files)
    col.scan_classes(ext, Modality.PHOTO, key_prefix="extended", base=ext)
    for f in col.files[start:]:
        f.class_name = known[normalize_class_name(f.class_name)]
        f.pairable = False  # gallery distractors: instance id is the key, extended/<class>/<file>


def ndjson_line_offsets(path: Path) -> np.ndarray:
    """(n_lines, 2) int64: byte offset and stripped length of each line (0 for a blank line)."""
    rows = []
    pos = 0
    with open(path, "rb") as fh:
        for line in fh:
            rows.append((pos, len(line.strip())))
            pos += len(line)
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


class FolderDataset(SBIRDataset):
    """An :class:`SBIRDataset` whose samples are files: images, SVG sketches or ndjson lines."""

    def __init__(
        self,
        classes,
        samples,
        *,
        name: str = "folder",
        line_offsets: dict[str, np.ndarray] | None = None,
        **kw,
    ):
        super().__init__(classes, samples, **kw)
        self.name = name
        self._line_offsets = dict(line_offsets or {})

    def read(self, sample: Sample) -> Image.Image | Strokes:
        path = sample.source
        if path is None:
            raise DataError(f"{sample.location()}: source: expected a file path, got None")
        kind = file_kind(path)
        if kind == "svg":
            # imported lazily: raster-only datasets never need the SVG parser
            from ..svg import read_svg

            return read_svg(path)
        if kind == "ndjson":
            return self._read_ndjson(sample, path)
        return read_image(path)

    def _read_ndjson(self, sample: Sample, path: str) -> Strokes:
        table = self._line_offsets.get(path)
        if table is None:
            table = self._line_offsets[path] = ndjson_line_offsets(Path(path))
        if sample.index is None or not 0 <= sample.index < len(table):
            raise DataError(
                f"{sample.location()}: line: expected 0..{len(table) - 1}, got {sample.index}"
            )
        start = int(table[sample.index, 0])
        with open(path, "rb") as fh:
            fh.seek(start)
            line = fh.readline()
        record = json.loads(line)
        if not isinstance(record, dict) or "drawing" not in record:
            raise DataError(
                f"{sample.location()}: drawing: expected a JSON object with a 'drawing' field"
            )
        return Strokes.from_ndjson_drawing(record["drawing"], source=sample.location())


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image fully (so a corrupt file fails here); transparency is flattened onto white."""
    with Image.open(path) as im:
        im.load()
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            out.alpha_composite(rgba)
            return out.convert("RGB")
        return im.copy()


def _describe(kinds: Iterable[str]) -> str:
    parts = {
        "image": "images (" + ", ".join(sorted(IMAGE_SUFFIXES)) + ")",
        "svg": ".svg",
        "ndjson": ".ndjson",
    }
    return ", ".join(parts[k] for k in sorted(kinds))


def check_root(root: str | os.PathLike | None, what: str) -> Path:
    if root is None:
        raise DataError(f"root: expected the path of a {what} folder, got None")
    return require_dir(Path(root).absolute(), "root", f"a {what} folder")


def _metadata_path(root: Path, metadata: str | bool) -> Path | None:
    if metadata is False or metadata is None:
        return None
    if metadata is True:
        path = root / "metadata.csv"
        return path if path.is_file() else None
    path = Path(metadata)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DataError(
            f"{path}: metadata: expected a csv file with header 'path,split,user', not found"
        )
    return path


@register_dataset("folder")
def load_folder(
    root: str,
    *,
    pairing: str = "auto",
    metadata: str | bool = True,
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> FolderDataset:
    """Generic layout ROOT/photo/<class>/*, ROOT/sketch/<class>/*, optional metadata.csv.

    ``pairing``: 'auto' pairs sketch ``X``/``X-N``/``X_N`` with photo ``X`` where one exists,
    'required' makes every sketch need its photo, 'none' pairs nothing. ``metadata``: True reads
    ``ROOT/metadata.csv`` when present, False ignores it, a path reads that csv.
    """
    base = check_root(root, "dataset")
    col = FolderCollector(base)
    photo_dir, sketch_dir = base / "photo", base / "sketch"
    if not photo_dir.is_dir() and not sketch_dir.is_dir():
        raise DataError(
            f"{base}: photo/, sketch/: expected at least one of {photo_dir} and {sketch_dir}, found neither"
        )
    if photo_dir.is_dir():
        col.scan_classes(photo_dir, Modality.PHOTO)
    if sketch_dir.is_dir():
        col.scan_classes(sketch_dir, Modality.SKETCH)
    meta = _metadata_path(base, metadata)
    if meta is not None:
        col.apply_metadata(meta)
    return col.build("folder", pairing=pairing, image_size=image_size, stroke_width=stroke_width)


@register_dataset("image-folder")
def load_image_folder(
    root: str,
    *,
    modality: str = "photo",
    image_size: int = 64,
    stroke_width: float = 2.0,
) -> FolderDataset:
    """torchvision ImageFolder layout ROOT/<class>/* or ROOT/<split>/<class>/* of one modality.

    The split layout is used when every top-level folder is one of train/val/valid/test; the
    split keeps the folder's name.
    """
    base = check_root(root, "dataset")
    mod = Modality.parse(modality)
    col = FolderCollector(base)
    tops = subfolders(base)
    if tops and all(t.lower() in SPLIT_FOLDERS for t in tops):
        with os.scandir(base) as it:
            for e in sorted(it, key=lambda e: e.name):
                if not e.is_dir() and not e.name.startswith("."):
                    col.skip(
                        base / e.name,
                        f"file outside a split folder: expected {base}/<split>/<class>/<file>",
                    )
        for split in tops:
            col.scan_classes(base / split, mod, split=split, pairable=False)
    else:
        col.scan_classes(base, mod, pairable=False)
    return col.build(
        "image-folder", pairing="none", image_size=image_size, stroke_width=stroke_width
    )
