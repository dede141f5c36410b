"""The project's own chunked store: a Zarr (v3) folder per ingested source.

Layout::

    <cache>/stores/<stem>-<fingerprint16>.zarr/
        zarr.json            root attrs: class_names, source, fingerprint,
                             format_version, complete (written last)
        train/images         (N, 32, 32, 3) uint8, chunks (1024, 32, 32, 3)
        train/labels         (N,) int16, chunks (1024,)
        test/...             same

A store is written into ``<final>.tmp-<pid>-<random>`` and renamed into place,
so readers see either nothing or a complete store. Stores without
``complete: true`` are never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import DataError
from .fetch import HINT
from .sources import SHAPE, describe_source, read_source, source_stem

__all__ = [
    "CHUNK_ROWS",
    "FORMAT_VERSION",
    "check_store",
    "fingerprint",
    "file_sha256",
    "ingest_source",
    "is_store",
    "open_split",
    "read_attrs",
    "store_path",
]

#: Bumped when the store layout or the decoding changes: old stores are then re-ingested.
FORMAT_VERSION = 1
#: Rows per on-disk chunk; dask chunks (``--chunk-size``) are read as groups of these.
CHUNK_ROWS = 1024
#: Temporary ingest folders older than this are from a dead process and are removed.
STALE_TMP_SECONDS = 3600
_HASH_CACHE = "file-hashes.json"


# --- fingerprints -------------------------------------------------------------


def file_sha256(path: Path, cache_dir: Path) -> str:
    """SHA-256 of a file's content, cached by (realpath, size, mtime_ns).

    The cache (``<cache_dir>/file-hashes.json``) spares rehashing a 170 MB archive
    on every run; any change of size or mtime invalidates the entry.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = [st.st_size, st.st_mtime_ns]
    cache_file = Path(cache_dir) / _HASH_CACHE
    try:
        table = json.loads(cache_file.read_text())
        if not isinstance(table, dict):
            table = {}
    except (OSError, ValueError):
        table = {}
    hit = table.get(real)
    if isinstance(hit, list) and hit[:2] == key and len(hit) == 3:
        return hit[2]
    h = hashlib.sha256()
    try:
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise DataError(f"--data {path}: cannot read ({e.strerror or e}); check permissions") from None
    digest = h.hexdigest()
    table[real] = [*key, digest]
    _write_json_atomic(cache_file, table)
    return digest


def _write_json_atomic(path: Path, obj) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        tmp.write_text(json.dumps(obj, indent=0, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache of hashes only; failing to update it just costs a rehash later


def fingerprint(source, cache_dir: Path) -> str:
    """Content fingerprint (hex SHA-256) of a source and the store format version.

    A file is fingerprinted by its content hash; a folder by the sorted
    ``(relpath, size, mtime_ns)`` of all its files; ``"keras"`` by name only
    (Keras's copy is fixed).
    """
    if source == "keras":
        parts = ["keras"]
    else:
        path = Path(source)
        if path.is_dir():
            listing = []
            for dirpath, _, filenames in os.walk(path):
                for f in filenames:
                    full = os.path.join(dirpath, f)
                    try:
                        st = os.stat(full)
                    except OSError:
                        continue  # vanished or dangling link: reading it will report it
                    listing.append((os.path.relpath(full, path).replace(os.sep, "/"), st.st_size, st.st_mtime_ns))
            parts = ["dir", sorted(listing)]
        else:
            parts = ["file", file_sha256(path, cache_dir)]
    blob = json.dumps(["daskmeans-cifar10", FORMAT_VERSION, *parts], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def store_path(source, cache_dir: Path, fp: str | None = None) -> Path:
    """``<cache_dir>/stores/<stem>-<fingerprint16>.zarr`` for ``source``."""
    fp = fp or fingerprint(source, cache_dir)
    return Path(cache_dir) / "stores" / f"{source_stem(source)}-{fp[:16]}.zarr"


# --- reading stores -------------------------------------------------------------


def read_attrs(path: Path) -> dict | None:
    """Root attributes of a Zarr store at ``path``, or ``None`` if it is not one."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def is_store(path) -> bool:
    """Whether ``path`` is a folder holding a Zarr group (ours or not)."""
    return Path(path).is_dir() and (Path(path) / "zarr.json").is_file()


def _is_complete(attrs: dict | None) -> bool:
    return bool(attrs) and attrs.get("complete") is True and attrs.get("format_version") == FORMAT_VERSION


def check_store(path: Path) -> dict:
    """Validate a store passed as ``--data`` and return its attributes.

    Raises
    ------
    DataError
        If it is not a daskmeans store, is of another format version, or is incomplete.
    """
    attrs = read_attrs(path)
    if attrs is None or "fingerprint" not in attrs or "class_names" not in attrs:
        raise DataError(f"--data {path}: a Zarr store, but not one written by daskmeans; {HINT}")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"--data {path}: daskmeans store format {attrs.get('format_version')}, this version reads "
            f"format {FORMAT_VERSION}; ingest the original source again"
        )
    if attrs.get("complete") is not True:
        raise DataError(
            f"--data {path}: incomplete store (an interrupted ingest); delete it and ingest the source again"
        )
    return attrs


def open_split(path: Path, split: str, chunk_size: int):
    """Lazy dask arrays ``(images, labels)`` of one split of a store.

    Each task reads its own rows from disk, so the graph can be recomputed by
    any worker that sees the same file system; nothing is loaded here.
    """
    import dask.array as da
    import zarr
    from dask.base import tokenize

    store = zarr.storage.LocalStore(str(path), read_only=True)
    attrs = read_attrs(path) or {}
    out = []
    for name, chunks in (("images", (chunk_size, *SHAPE)), ("labels", (chunk_size,))):
        component = f"{split}/{name}"
        try:
            z = zarr.open_array(store, path=component, mode="r")
        except Exception as e:  # missing array / corrupted metadata
            raise DataError(
                f"{path}: cannot open {component} ({type(e).__name__}); delete the store and ingest again"
            ) from None
        # Name from the store identity rather than tokenize(z), which may read data.
        token = tokenize(os.fspath(path), attrs.get("fingerprint"), component, chunks, z.shape)
        out.append(da.from_array(z, chunks=chunks, name=f"cifar10-{name}-{token}"))
    images, labels = out
    if images.shape[0] != labels.shape[0] or images.shape[1:] != SHAPE:
        raise DataError(f"{path}: {split} images and labels disagree; delete the store and ingest again")
    return images, labels


# --- writing stores -------------------------------------------------------------


def _clean_stale(stores: Path) -> None:
    now = time.time()
    try:
        entries = list(stores.iterdir())
    except OSError:
        return
    for p in entries:
        if ".zarr.tmp-" in p.name:
            try:
                if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def ingest_source(source, cache_dir: Path, progress: bool = True) -> Path:
    """Convert a source into a store in the cache, once; return the store path.

    Parameters
    ----------
    source : pathlib.Path or "keras"
        A resolved source (not a store).
    cache_dir : pathlib.Path
        Cache folder; stores go in ``<cache_dir>/stores/``.
    progress : bool
        Show progress lines while reading and decoding.

    Returns
    -------
    pathlib.Path
        The complete store. Reused as long as the source's fingerprint is unchanged.

    Raises
    ------
    DataError
        For any problem with the source; nothing is left in the cache but the
        (complete) file-hash cache.
    """
    cache_dir = Path(cache_dir)
    fp = fingerprint(source, cache_dir)
    final = store_path(source, cache_dir, fp)
    if final.exists():
        if _is_complete(read_attrs(final)):
            return final
        # Never serve a store without complete: true; it cannot be produced by a
        # normal ingest (those rename complete stores), so it is debris.
        shutil.rmtree(final, ignore_errors=True)
    stores = final.parent
    try:
        stores.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cache folder {stores}: cannot create ({e.strerror or e}); set DASKMEANS_CACHE") from None
    _clean_stale(stores)
    tmp = stores / f"{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _write_store(tmp, source, fp, progress)
        try:
            os.rename(tmp, final)
        except OSError:
            # A concurrent ingest of the same source won the race: use its store.
            if not _is_complete(read_attrs(final)):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_store(tmp: Path, source, fp: str, progress: bool) -> None:
    import zarr

    data = read_source(source, progress=progress)
    root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    root.attrs.update(
        {
            "class_names": list(data.class_names),
            "source": describe_source(source),
            "source_kind": data.kind,
            "fingerprint": fp,
            "format_version": FORMAT_VERSION,
            "splits": list(data.splits),
            "complete": False,
        }
    )
    for split, sd in data.splits.items():
        group = root.create_group(split)
        images = group.create_array(
            "images", shape=(sd.n, *SHAPE), dtype="uint8", chunks=(CHUNK_ROWS, *SHAPE)
        )
        labels = group.create_array("labels", shape=(sd.n,), dtype="int16", chunks=(CHUNK_ROWS,))
        start = 0
        for img, lab in sd.pieces():
            stop = start + len(img)
            if stop > sd.n or len(lab) != len(img):
                raise DataError(f"{describe_source(source)}: {split} split changed while reading; try again")
            images[start:stop] = img
            labels[start:stop] = np.asarray(lab, dtype=np.int16)
            start = stop
        if start != sd.n:
            raise DataError(f"{describe_source(source)}: {split} split changed while reading; try again")
    # Last: only now may the store be served.
    root.attrs["complete"] = True
