"""The project's own chunked store: a Zarr (v3) folder per ingested source.

Layout::

    <cache>/stores/<stem>-<fingerprint16>.zarr/
        zarr.json            root attrs: class_names, source, fingerprint,
                             format_version, complete (written last)
        train/images         (N, 32, 32, 3) uint8, chunks (1024, 32, 32, 3)
        train/labels         (N,) int16, chunks (1024,)
        test/...             same

A local store is written into ``.<final>.tmp-<pid>-<random>`` and renamed into
place, so readers see either nothing or a complete store; staging folders of
dead processes are swept. Object stores have no rename: a store at a URL
(``s3://``, ``gs://``, ...; see :func:`ingest_to`) is written in place with
``complete: false`` and marked complete last. Stores without ``complete: true``
are never served.

Stores are read by URL as well as by path (``s3://``, ``gs://``, ``http(s)://``,
``file://``), with fsspec options from config ``daskmeans.storage-options``; the
arrays come from :func:`dask.array.from_zarr`, so each task opens its own chunks
where it runs and the client reads metadata only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import urllib.parse
from pathlib import Path

import dask.array as da
import fsspec
import numpy as np
import zarr
from dask.base import tokenize

from .. import config, userdirs
from ..atomic import atomic_file, atomic_path, sweep_stale
from ..errors import DataError, InputError
from .fetch import HINT
from .safety import special_kind
from .sources import SHAPE, describe_source, read_source, source_stem

__all__ = [
    "CHUNK_ROWS",
    "FORMAT_VERSION",
    "check_store",
    "fingerprint",
    "file_sha256",
    "ingest_source",
    "ingest_to",
    "is_store",
    "is_url",
    "local_path",
    "open_split",
    "read_attrs",
    "storage_options",
    "store_path",
]

#: Bumped when the store layout or the decoding changes: old stores are then re-ingested.
FORMAT_VERSION = 1
#: Rows per on-disk chunk; dask chunks (``--chunk-size``) are read as groups of these.
CHUNK_ROWS = 1024
_HASH_CACHE = "file-hashes.json"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: Protocols that can only be read (no ingest target).
READ_ONLY_PROTOCOLS = ("http", "https")


# --- URLs ---------------------------------------------------------------------


def is_url(x) -> bool:
    """Whether ``x`` is a URL string (``s3://b/k``, ``file:///p``), not a path."""
    return isinstance(x, str) and bool(_URL.match(x))


def local_path(url: str) -> Path | None:
    """The path of a ``file://`` URL; ``None`` for other URLs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme.lower() != "file":
        return None
    if parsed.netloc not in ("", "localhost"):
        raise DataError(f"{url}: a file:// URL names a local path (file:///abs/path), not host {parsed.netloc!r}")
    return Path(urllib.parse.unquote(parsed.path))


def storage_options() -> dict:
    """fsspec options for URLs: config ``daskmeans.storage-options`` (a mapping)."""
    opts = config.get("storage-options", None) or {}
    if not isinstance(opts, dict):
        raise InputError(
            f"config daskmeans.storage-options is {type(opts).__name__} {opts!r:.60}; it must be a mapping "
            "of fsspec options, e.g. {endpoint_url: 'http://127.0.0.1:9000'}"
        )
    return dict(opts)


def _url_fs(url: str):
    """``(filesystem, path)`` for a URL, with :func:`storage_options`."""

    try:
        return fsspec.core.url_to_fs(url, **storage_options())
    except ImportError as e:
        raise DataError(
            f"{url}: reading this URL needs a package that is not installed ({_one_line(e)}); "
            "e.g. pip install s3fs (s3://), gcsfs (gs://), aiohttp (http://)"
        ) from None
    except (ValueError, TypeError) as e:
        raise DataError(f"{url}: not a usable URL ({_one_line(e)}); check it and daskmeans.storage-options") from None


def _zarr_store(where, read_only: bool = True):
    if is_url(where):
        try:
            return zarr.storage.FsspecStore.from_url(where, storage_options=storage_options(), read_only=read_only)
        except ImportError as e:
            raise DataError(f"{where}: needs a package that is not installed ({_one_line(e)}); e.g. pip install s3fs") from None
    return zarr.storage.LocalStore(str(where), read_only=read_only)


def _one_line(e: BaseException) -> str:
    return " ".join((str(e) or type(e).__name__).split())


# --- fingerprints -------------------------------------------------------------


def file_sha256(path: Path, cache_dir: Path) -> str:
    """SHA-256 of a file's content, cached by (realpath, size, mtime_ns).

    The cache (``<cache_dir>/file-hashes.json``) spares rehashing a 170 MB archive
    on every run; any change of size or mtime invalidates the entry.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):  # hashing /dev/zero or a FIFO would never end
        raise DataError(f"--data {path}: {special_kind(st.st_mode)}, not a file or folder; {HINT}")
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
        raise DataError(f"--data {path}: cannot read ({e.strerror or e}); {userdirs.read_fix(path)}") from None
    digest = h.hexdigest()
    table[real] = [*key, digest]
    _write_json_atomic(cache_file, table)
    return digest


def _write_json_atomic(path: Path, obj) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "w") as f:
            f.write(json.dumps(obj, indent=0, sort_keys=True))
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


def _read_root_json(where) -> bytes | None:
    if not is_url(where):
        try:
            return (Path(where) / "zarr.json").read_bytes()
        except OSError:
            return None
    fs, root = _url_fs(where)
    try:
        return fs.cat_file(f"{root.rstrip('/')}/zarr.json")
    except FileNotFoundError:
        return None
    except Exception as e:  # connection refused, 403, DNS, ... (each backend its own type)
        raise DataError(
            f"{where}: cannot read the store ({type(e).__name__}: {_one_line(e)[:200]}); check the URL, "
            "the server and daskmeans.storage-options (endpoint, credentials)"
        ) from None


def read_attrs(path) -> dict | None:
    """Root attributes of a Zarr store at ``path`` (a folder or a URL), or ``None`` if it is not one."""
    raw = _read_root_json(path)
    if raw is None or len(raw) > 2**20:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def is_store(path) -> bool:
    """Whether ``path`` (a folder or a URL) holds a Zarr group (ours or not)."""
    if is_url(path):
        return read_attrs(path) is not None
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


def open_split(path, split: str, chunk_size: int):
    """Lazy dask arrays ``(images, labels)`` of one split of a store (a folder or a URL).

    :func:`dask.array.from_zarr` over the opened array: each task opens and reads
    its own chunks where it runs (a worker reads from the object store or the
    shared disk itself); here only metadata is read.
    """
    store = _zarr_store(path)
    attrs = read_attrs(path) or {}
    out = []
    for name, chunks in (("images", (chunk_size, *SHAPE)), ("labels", (chunk_size,))):
        component = f"{split}/{name}"
        try:
            z = zarr.open_array(store, path=component, mode="r")
        except Exception as e:  # missing array / corrupted metadata / unreachable server
            raise DataError(
                f"{path}: cannot open {component} ({type(e).__name__}: {_one_line(e)[:160]}); "
                "delete the store and ingest again"
            ) from None
        # Name from the store identity rather than tokenize(z), which may read data.
        token = tokenize(os.fspath(path), attrs.get("fingerprint"), component, chunks, z.shape)
        out.append(da.from_zarr(z, chunks=chunks, name=f"cifar10-{name}-{token}"))
    images, labels = out
    if images.shape[0] != labels.shape[0] or images.shape[1:] != SHAPE:
        raise DataError(f"{path}: {split} images and labels disagree; delete the store and ingest again")
    return images, labels


# --- writing stores -------------------------------------------------------------


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
    sweep_stale(stores)  # staging folders of killed ingests
    try:
        with atomic_path(final) as tmp:
            _write_store(str(tmp), source, fp, progress)
    except OSError:
        # A concurrent ingest of the same source won the race (the rename found
        # its complete store in place): use its store.
        if not _is_complete(read_attrs(final)):
            raise
    return final


def ingest_to(source, url: str, cache_dir: Path, progress: bool = True, fp: str | None = None) -> str:
    """Write a source's store at a URL (``s3://bucket/cifar10.zarr``, ``gs://...``).

    Reused when a complete store of the same source is already there; a store an
    interrupted ingest of the same source left is written over; anything else at
    the URL is refused, never overwritten.

    Parameters
    ----------
    source : pathlib.Path or "keras"
        A resolved source (not a store).
    url : str
        Where the store goes (not http(s): read-only).
    cache_dir : pathlib.Path
        Local cache folder (for the source's cached content hash).
    progress : bool
        Show progress lines.

    Returns
    -------
    str
        ``url``, now a complete store.

    Raises
    ------
    DataError
        For a read-only or unreachable URL, something else at the URL, or any
        problem with the source.
    """
    url = url.rstrip("/")
    protocol = url.split("://", 1)[0].lower()
    if protocol in READ_ONLY_PROTOCOLS:
        raise DataError(
            f"--to {url}: {protocol} is read-only; ingest to s3://, gs:// or a folder, "
            "then serve that folder over HTTP and pass its URL as --data"
        )
    fp = fp or fingerprint(source, cache_dir)
    attrs = read_attrs(url)
    if attrs is not None:
        if attrs.get("fingerprint") == fp and _is_complete(attrs):
            return url
        if attrs.get("fingerprint") != fp:
            raise DataError(
                f"--to {url}: already holds another store ({attrs.get('source', 'not written by daskmeans')}); "
                "pass another URL or delete that one first"
            )
    else:
        fs, root = _url_fs(url)
        try:
            taken = fs.exists(root) and bool(fs.ls(root, detail=False))
        except FileNotFoundError:
            taken = False
        except Exception as e:
            raise DataError(
                f"--to {url}: cannot reach ({type(e).__name__}: {_one_line(e)[:200]}); check the URL, the server "
                "and daskmeans.storage-options"
            ) from None
        if taken:
            raise DataError(f"--to {url}: not empty and not a daskmeans store; pass another URL or empty it first")
    try:
        _write_store(_zarr_store(url, read_only=False), source, fp, progress)
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError) as e:  # botocore/aiohttp errors derive from these
        raise DataError(
            f"--to {url}: writing failed ({type(e).__name__}: {_one_line(e)[:200]}); the partial store is "
            "never served; check the server and daskmeans.storage-options, then ingest again"
        ) from None
    return url


def _write_store(where, source, fp: str, progress: bool) -> None:
    """Write the store at ``where`` (a path string or a zarr store); ``complete: true`` last."""
    data = read_source(source, progress=progress)
    root = zarr.open_group(where, mode="w", zarr_format=3)
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
