"""Readers for the accepted CIFAR-10 sources.

Each reader returns a :class:`SourceData`: the class names and, per split, the
number of images and a generator of ``(images, labels)`` pieces in order. The
store writer consumes the pieces one at a time, so only one piece of decoded
pixels (plus, for archives, the still-compressed member bytes) is held at once.

Accepted sources: the official ``cifar-10-python.tar.gz``, its extracted
``cifar-10-batches-py/`` folder (or a parent holding it), an image-folder tree
``<root>/{train,test}/<class>/*.png|jpg|jpeg`` (or ``<root>/<class>/...`` as a
single "train" split), a tarball or zip of such a tree, and ``"keras"``.

Every read is bounded: batch files and images by size (:data:`MAX_BATCH_BYTES`,
:data:`MAX_IMAGE_BYTES`), archives also in total and by compression ratio
(:mod:`daskmeans.data.safety`); special files (devices, FIFOs) are never read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .. import userdirs
from ..errors import DataError
from .fetch import HINT, Progress
from .safety import iter_archive_members, read_regular_file, safe_loads

__all__ = [
    "CIFAR10_CLASSES",
    "IMAGE_EXTENSIONS",
    "SourceData",
    "SplitData",
    "describe_source",
    "is_tarball",
    "read_source",
    "source_stem",
]

#: CIFAR-10 class names in label order.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = (*TAR_SUFFIXES, ".zip")
SHAPE = (32, 32, 3)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCH_NAMES = (*TRAIN_BATCHES, "test_batch", "batches.meta")
#: Rows decoded per piece: a multiple of the store's 1024-row chunks.
PIECE_ROWS = 4096
#: Rows in each official batch (``num_cases_per_batch`` may say fewer, never more).
BATCH_ROWS = 10_000
#: Largest official batch file accepted (an official batch is ~31 MB).
MAX_BATCH_BYTES = 64 * 2**20
#: Largest image file accepted (a 32x32 PNG or JPEG is a few KB).
MAX_IMAGE_BYTES = 2**20

logger = logging.getLogger("daskmeans")


@dataclass
class SplitData:
    """One split of a source: its size and a one-shot generator of pieces."""

    n: int
    pieces: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


@dataclass
class SourceData:
    """What a reader found: class names (label order) and the splits present."""

    class_names: tuple[str, ...]
    splits: dict[str, SplitData]
    kind: str  # "official", "image-folder" or "keras"


def is_tarball(path: Path) -> bool:
    """Whether ``path``'s name ends in an archive suffix (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``, ...)."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def describe_source(source) -> str:
    """Human description of a source: its absolute path, or ``"keras"``."""
    return "keras" if source == "keras" else str(source)


def read_source(source, progress: bool = True) -> SourceData:
    """Open a CIFAR-10 source for ingestion.

    Parameters
    ----------
    source : pathlib.Path or "keras"
        As returned by :func:`daskmeans.data.resolve_source`.
    progress : bool
        Show progress lines while reading and decoding.

    Returns
    -------
    SourceData

    Raises
    ------
    DataError
        For a missing, unreadable, corrupted, unsafe or wrongly laid-out source.
    """
    if source == "keras":
        return _read_keras()
    path = Path(source)
    if path.is_dir():
        batches = _find_batch_dir(path)
        if batches is not None:
            return _read_official_dir(batches)
        return _read_image_dir(path, progress)
    if path.is_file():
        return _read_tarball(path, progress)
    raise DataError(f"--data {path}: no such file or folder; {HINT}")


# --- official batches ---------------------------------------------------------


def _find_batch_dir(path: Path) -> Path | None:
    for cand in (path, path / "cifar-10-batches-py"):
        if any((cand / name).is_file() for name in BATCH_NAMES):
            return cand
    return None


def _read_official_dir(folder: Path) -> SourceData:
    missing = [n for n in BATCH_NAMES if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{folder}: incomplete CIFAR-10 batches folder, missing {', '.join(missing)}; "
            "extract the official cifar-10-python.tar.gz again"
        )
    blobs = {}
    for name in BATCH_NAMES:
        blobs[name] = read_regular_file(folder / name, MAX_BATCH_BYTES, "CIFAR-10 batch file")
    return _official_from_blobs(blobs, {n: str(folder / n) for n in BATCH_NAMES})


def _official_from_blobs(blobs: dict, origins: dict) -> SourceData:
    """Decode the seven official pickles (name -> bytes); ``blobs`` is emptied as it goes.

    ``origins`` maps each batch name to where it came from, for error messages.
    """
    meta_origin = origins["batches.meta"]
    meta = safe_loads(blobs.pop("batches.meta"), meta_origin)
    names = _get(meta, "label_names", meta_origin)
    try:
        class_names = tuple(n.decode("ascii") if isinstance(n, bytes) else str(n) for n in names)
    except (TypeError, UnicodeDecodeError):
        raise DataError(f"{meta_origin}: label_names is not a list of names; not a CIFAR-10 archive") from None
    if not class_names or len(class_names) > 1000:
        raise DataError(f"{meta_origin}: {len(class_names)} label_names; not a CIFAR-10 archive")
    rows = _meta_rows(meta, meta_origin)
    arrays = {}
    for name in (*TRAIN_BATCHES, "test_batch"):
        origin = origins[name]
        # Pop as we go so each raw pickle is released once decoded.
        arrays[name] = _decode_batch(safe_loads(blobs.pop(name), origin), origin, len(class_names), rows)

    def pieces(names):
        def gen():
            for name in names:
                images, labels = arrays[name]
                for start in range(0, len(images), PIECE_ROWS):
                    yield images[start : start + PIECE_ROWS], labels[start : start + PIECE_ROWS]

        return gen

    splits = {
        "train": SplitData(sum(len(arrays[n][0]) for n in TRAIN_BATCHES), pieces(TRAIN_BATCHES)),
        "test": SplitData(len(arrays["test_batch"][0]), pieces(("test_batch",))),
    }
    return SourceData(class_names, splits, "official")


def _get(obj, key: str, origin: str):
    if isinstance(obj, dict):
        for k in (key.encode(), key):  # bytes keys (Python 2 pickles) or str keys
            if k in obj:
                return obj[k]
    raise DataError(f"{origin}: no {key!r} entry; not a CIFAR-10 batch (crafted or corrupted archive)")


def _meta_rows(meta, origin: str) -> int:
    """Rows every batch must hold: ``num_cases_per_batch`` (10,000 in the official archive)."""
    rows = _get(meta, "num_cases_per_batch", origin)
    if type(rows) is not int or not 1 <= rows <= BATCH_ROWS:
        raise DataError(
            f"{origin}: num_cases_per_batch {rows!r:.40} is not 1..{BATCH_ROWS:,}; "
            "not a CIFAR-10 batch (crafted or corrupted archive)"
        )
    if isinstance(meta, dict) and any(k in meta for k in (b"num_vis", "num_vis")):
        vis = _get(meta, "num_vis", origin)
        if vis != 3072:
            raise DataError(f"{origin}: num_vis {vis!r:.40} is not 3072; not a CIFAR-10 batch (crafted or corrupted archive)")
    return rows


def _decode_batch(batch, origin: str, n_classes: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    data = _get(batch, "data", origin)
    labels = _get(batch, "labels", origin)
    bad = None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = (
            f"shape {data.shape}, dtype {data.dtype}" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        )
        bad = f"'data' is not an (N, 3072) uint8 array (it has {what})"
    elif len(data) != rows:
        bad = f"'data' has {len(data):,} rows, but batches.meta says {rows:,} per batch"
    elif not isinstance(labels, list) or len(labels) != len(data) or not all(type(v) is int for v in labels):
        n = len(labels) if isinstance(labels, (list, tuple, np.ndarray)) else type(labels).__name__
        bad = f"'labels' is not a list of one int per image ({n} for {len(data):,} images)"
    else:
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
            bad = f"labels outside 0..{n_classes - 1}"
    if bad:
        raise DataError(f"{origin}: {bad}; not a CIFAR-10 batch (crafted or corrupted archive)")
    # Channel-planar rows (1024 R, 1024 G, 1024 B) -> HWC images.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int16)


# --- image folders ------------------------------------------------------------


def _is_image_name(rel: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    # Skip hidden files (macOS "._x.jpg" resource forks, ".DS_Store").
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def _layout(rel_paths: list[str], where: str) -> tuple[tuple[str, ...], dict[str, list[tuple[int, str]]]]:
    """Map image paths to splits and labels.

    Returns the class names and, per split (train first), ``(label, path)`` pairs
    sorted by class then file name. Accepts ``{train,test}/<class>/f`` and
    ``<class>/f`` (split "train"), either optionally under one top-level folder.
    """
    if not rel_paths:
        raise DataError(
            f"{where}: no CIFAR-10 batches and no class folders of .png/.jpg images found; {HINT}"
        )
    parts = [p.split("/") for p in rel_paths]
    tops = {p[0] for p in parts}
    if len(tops) == 1 and not tops & {"train", "test"} and all(len(p) >= 3 for p in parts):
        parts = [p[1:] for p in parts]  # strip a single wrapping folder
    if all(len(p) == 3 and p[0] in ("train", "test") for p in parts):
        keys = [tuple(p) for p in parts]
    elif all(len(p) == 2 for p in parts):
        keys = [("train", *p) for p in parts]
    else:
        depth = max(len(p) for p in parts)
        odd = next(r for r, p in zip(rel_paths, parts) if len(p) == depth)
        raise DataError(
            f"{where}: unexpected image-folder layout at {odd!r}; expected "
            f"train/<class>/*.jpg and test/<class>/*.jpg, or <class>/*.jpg; {HINT}"
        )
    # Labels from the union of classes, so that train and test agree.
    class_names = tuple(sorted({k[1] for k in keys}))
    label = {c: i for i, c in enumerate(class_names)}
    by_split: dict[str, list[tuple[int, str]]] = {}
    for (split, cls, _), rel in sorted(zip(keys, rel_paths)):
        by_split.setdefault(split, []).append((label[cls], rel))
    # Train first (sorted() put "test" before "train").
    return class_names, {s: by_split[s] for s in ("train", "test") if s in by_split}


def _decode_one(data: bytes, name: str) -> tuple[np.ndarray, str]:
    """``(32x32x3 uint8 pixels, the file's Pillow mode)``; non-RGB modes are converted to RGB."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.size != (32, 32):
                raise DataError(
                    f"{name}: image is {im.size[0]}x{im.size[1]}, expected 32x32; "
                    "resize the images to 32x32 (CIFAR-10 format)"
                )
            if im.mode != "RGB":
                return np.asarray(im.convert("RGB")), im.mode
            im.load()
            return np.asarray(im), im.mode
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise DataError(
            f"{name}: not a readable image ({type(e).__name__}: {' '.join(str(e).split())}); "
            "remove or replace the file"
        ) from None


class _Converted:
    """Counts images that were not RGB (converted), for one warning per source."""

    #: What each Pillow mode means, for the warning.
    MODES = {"L": "grayscale", "LA": "grayscale with alpha", "1": "black and white", "P": "palette",
             "PA": "palette with alpha", "RGBA": "RGBA, alpha dropped", "CMYK": "CMYK", "I;16": "16-bit grayscale",
             "I": "32-bit grayscale", "F": "float grayscale", "YCbCr": "YCbCr"}  # fmt: skip

    def __init__(self, where: str):
        self.where = where
        self.count = 0
        self.example = None
        self._lock = threading.Lock()

    def add(self, name: str, mode: str) -> None:
        with self._lock:
            self.count += 1
            if self.example is None:
                self.example = (name, mode)

    def warn(self) -> None:
        if self.count:
            name, mode = self.example
            logger.warning(
                "%s: %d image%s not RGB, converted to RGB (e.g. %s is %s); "
                "CIFAR-10 images are RGB, check that this is the data you meant",
                self.where, self.count, " was" if self.count == 1 else "s were", name,
                self.MODES.get(mode, f"mode {mode}"),
            )


def _decode_piece(items: list[tuple[str, Callable[[], bytes]]], converted: _Converted) -> np.ndarray:
    out = np.empty((len(items), *SHAPE), np.uint8)
    for i, (name, get) in enumerate(items):
        out[i], mode = _decode_one(get(), name)
        if mode != "RGB":
            converted.add(name, mode)
    return out


def _image_pieces(entries, load: Callable[[str], bytes], display: Callable[[str], str], bar: Progress,
                  converted: _Converted):
    """Generator factory: decode ``entries`` [(label, key)] in pieces with a thread pool."""

    def gen():
        # Small sub-batches per task: per-image Python overhead dominates at 32x32,
        # so batching into one array per task is what makes the pool worthwhile.
        sub = 512
        workers = max(1, min(4, os.cpu_count() or 1))
        with bar.aborting(), ThreadPoolExecutor(workers, thread_name_prefix="daskmeans-decode") as pool:
            for start in range(0, len(entries), PIECE_ROWS):
                piece = entries[start : start + PIECE_ROWS]
                jobs = [
                    [(display(key), (lambda key=key: load(key))) for _, key in piece[s : s + sub]]
                    for s in range(0, len(piece), sub)
                ]
                images = np.concatenate(list(pool.map(_decode_piece, jobs, [converted] * len(jobs))))
                labels = np.fromiter((lab for lab, _ in piece), np.int16, len(piece))
                bar.update(len(piece))
                yield images, labels

    return gen


def _read_image_dir(root: Path, progress: bool) -> SourceData:
    rel = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_raise_walk_error):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        base = Path(dirpath).relative_to(root).as_posix()
        for f in filenames:
            r = f if base == "." else f"{base}/{f}"
            if _is_image_name(r):
                rel.append(r)
    class_names, by_split = _layout(rel, str(root))

    def load(key: str) -> bytes:
        return read_regular_file(root / key, MAX_IMAGE_BYTES, "image file")

    total = sum(len(v) for v in by_split.values())
    bar = Progress(total, f"decoding images from {root}", progress)
    return _image_source(class_names, by_split, load, lambda k: str(root / k), bar, str(root))


def _raise_walk_error(e: OSError):
    raise DataError(f"{e.filename}: cannot list folder ({e.strerror or e}); "
                    f"{userdirs.read_fix(e.filename, folder=True)}")


def _image_source(class_names, by_split, load, display, bar, where: str) -> SourceData:
    splits = {}
    names = list(by_split)
    converted = _Converted(where)
    for split, entries in by_split.items():
        gen = _image_pieces(entries, load, display, bar, converted)
        if split == names[-1]:
            gen = _closing(gen, bar, converted)
        splits[split] = SplitData(len(entries), gen)
    return SourceData(class_names, splits, "image-folder")


def _closing(gen_factory, bar: Progress, converted: _Converted):
    def gen():
        yield from gen_factory()
        bar.close()
        converted.warn()  # once per source, after every image was seen

    return gen


def _read_tarball(path: Path, progress: bool) -> SourceData:
    where = str(path)
    batches: dict[str, bytes] = {}
    origins: dict[str, str] = {}
    images: dict[str, bytes] = {}

    def want(name: str) -> bool:
        parts = name.split("/")
        return (parts[-1] in BATCH_NAMES and len(parts) <= 2) or _is_image_name(name)

    def limit(name: str) -> int:
        return MAX_IMAGE_BYTES if _is_image_name(name) else MAX_BATCH_BYTES

    # Stream mode gives no compressed offset, so progress counts unpacked bytes.
    with Progress(None, f"reading {path.name}", progress, unit="bytes") as bar:
        for name, data in iter_archive_members(path, want, limit):
            base = name.rsplit("/", 1)[-1]
            if base in BATCH_NAMES and name.count("/") <= 1:
                if base in batches:
                    raise DataError(f"{where}: two {base} members; not a CIFAR-10 archive")
                batches[base] = data
                origins[base] = f"{where}:{name}"
            else:
                images[name] = data
            bar.update(len(data))
    if batches:
        missing = [n for n in BATCH_NAMES if n not in batches]
        if missing:
            raise DataError(
                f"{where}: incomplete CIFAR-10 archive, missing {', '.join(missing)}; "
                "download the official cifar-10-python.tar.gz again"
            )
        images.clear()
        return _official_from_blobs(batches, origins)
    class_names, by_split = _layout(list(images), where)
    total = sum(len(v) for v in by_split.values())
    bar = Progress(total, f"decoding images from {path.name}", progress)

    def load(key: str) -> bytes:
        return images[key]

    return _image_source(class_names, by_split, load, lambda k: f"{where}:{k}", bar, where)


# --- keras --------------------------------------------------------------------


def _read_keras() -> SourceData:
    try:
        # Imported only here: TensorFlow is optional and slow to import.
        from tensorflow.keras.datasets import cifar10  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(
            "--data keras needs TensorFlow: pip install 'daskmeans[keras]' (or pass --data PATH)"
        ) from None
    try:
        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    except Exception as e:  # network errors, corrupted keras cache, ...
        raise DataError(f"--data keras: keras could not load CIFAR-10 ({' '.join(str(e).split())}); {HINT}") from None

    def split(x, y):
        x = np.ascontiguousarray(x, dtype=np.uint8)
        y = np.asarray(y).reshape(-1).astype(np.int16)
        if x.shape[1:] != SHAPE or len(x) != len(y):
            raise DataError(f"--data keras: unexpected array shapes {x.shape}, {y.shape}; {HINT}")

        def gen():
            for s in range(0, len(x), PIECE_ROWS):
                yield x[s : s + PIECE_ROWS], y[s : s + PIECE_ROWS]

        return SplitData(len(x), gen)

    return SourceData(CIFAR10_CLASSES, {"train": split(x_train, y_train), "test": split(x_test, y_test)}, "keras")


_SAFE_STEM = re.compile(r"[^A-Za-z0-9._-]+")


def source_stem(source) -> str:
    """Short file-system-safe name for a source, used in the store's folder name."""
    if source == "keras":
        return "keras"
    name = Path(source).name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _SAFE_STEM.sub("_", name).strip("._") or "data"
