"""CIFAR-10 as chunked Dask arrays, read from the project's own Zarr store.

>>> ds = load_cifar10(split="train")          # doctest: +SKIP
>>> ds.images                                  # (50000, 32, 32, 3) uint8, lazy
>>> ds.subset(10_000, seed=0).flat()           # (10000, 3072) uint8

A source (official archive, its folder, an image-folder tree or tarball, or
Keras) is ingested once into ``<cache>/stores/``; later runs open that store
lazily, so workers read only their own chunks.

On a cluster whose workers share no disk, ingest once to an object store and
pass its URL; every worker then reads its own chunks from there::

    ingest("cifar10-images.tar.gz", to="s3://bucket/cifar10.zarr")   # doctest: +SKIP
    load_cifar10("s3://bucket/cifar10.zarr")                          # doctest: +SKIP

URLs take fsspec options from config ``daskmeans.storage-options``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import dask.array as da
import numpy as np

from .. import config
from ..atomic import atomic_path
from ..errors import DataError, InputError
from .fetch import resolve_source
from .sources import CIFAR10_CLASSES
from .store import (
    check_store,
    fingerprint,
    ingest_source,
    ingest_to,
    is_store,
    is_url,
    local_path,
    open_split,
    read_attrs,
    store_path,
)

__all__ = ["CIFAR10_CLASSES", "Dataset", "ingest", "load_cifar10", "resolve_source"]

SPLITS = ("train", "test", "all")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A split of CIFAR-10 (or a subset of one) as lazy Dask arrays.

    Attributes
    ----------
    images : dask.array.Array
        ``(N, 32, 32, 3)`` uint8, chunked by rows only.
    labels : dask.array.Array
        ``(N,)`` int16 class indices, same row chunks as ``images``.
    class_names : tuple of str
        Class names in label order.
    split : str
        ``"train"``, ``"test"`` or ``"all"`` (train then test).
    source : str
        Where the data came from: a path, or ``"keras"``.
    store : str
        Path or URL of the Zarr store the arrays read from.
    indices : numpy.ndarray or None
        Sorted rows of the split that this subset took; ``None`` for the whole split.
    """

    images: da.Array
    labels: da.Array
    class_names: tuple[str, ...]
    split: str
    source: str
    store: str
    indices: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def flat(self):
        """Images as ``(N, 3072)`` uint8 rows, HWC flatten order, same row chunks.

        Returns
        -------
        dask.array.Array
        """
        return self.images.reshape(self.n_samples, -1)

    def subset(self, n: int, seed: int) -> Dataset:
        """A seeded random subset of ``n`` rows, kept in their original order.

        The rows are ``np.sort(np.random.default_rng(seed).choice(N, n, replace=False))``,
        so the same ``(n, seed)`` always gives the same images.

        Parameters
        ----------
        n : int
            Rows to keep, ``1 <= n <= n_samples``.
        seed : int
            Seed of the NumPy generator.

        Returns
        -------
        Dataset
            With ``indices`` relative to the full split, and chunks no larger
            than this dataset's.

        Raises
        ------
        InputError
            If ``n`` is out of range.
        """
        N = self.n_samples
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise InputError(f"--subset {n!r} must be a whole number of images")
        if n < 1:
            raise InputError(f"--subset {n} must be at least 1")
        if n > N:
            raise InputError(
                f"--subset {n} is larger than the {self.split} split ({N} images); use at most {N}"
            )
        idx = np.sort(np.random.default_rng(seed).choice(N, int(n), replace=False))
        rows = max(self.images.chunks[0])
        # Fancy indexing may merge or split chunks; restore row chunks <= the original size.
        images = self.images[idx].rechunk({0: rows})
        labels = self.labels[idx].rechunk({0: rows})
        indices = idx if self.indices is None else self.indices[idx]
        return replace(self, images=images, labels=labels, indices=indices)

    def describe(self) -> dict:
        """JSON-able summary: n_samples, split, source, store, class_names, chunks, indices."""
        return {
            "n_samples": self.n_samples,
            "split": self.split,
            "source": self.source,
            "store": self.store,
            "class_names": list(self.class_names),
            "chunk_rows": int(max(self.images.chunks[0])) if self.n_samples else 0,
            "n_chunks": len(self.images.chunks[0]),
            "indices": None if self.indices is None else [int(i) for i in self.indices],
        }


def _default_local_cache() -> Path:
    env = os.environ.get("DASKMEANS_CACHE")
    if env and not is_url(env):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "daskmeans"


def _caches(cache_dir) -> tuple[Path, str | None]:
    """``(local cache folder, URL for stores or None)``.

    A cache given as a URL (argument, config ``daskmeans.cache-dir`` or
    ``$DASKMEANS_CACHE``) keeps the stores there; downloads and the table of
    file hashes stay in a local cache folder.
    """
    where = cache_dir if cache_dir is not None else (config.get("cache-dir") or os.environ.get("DASKMEANS_CACHE"))
    if where is not None and is_url(os.fspath(where)):
        url = os.fspath(where)
        path = local_path(url)
        if path is None:
            return _default_local_cache(), url.rstrip("/")
        return path, None
    if cache_dir is not None:
        return Path(cache_dir).expanduser(), None
    return config.cache_dir(), None


def _cache(cache_dir) -> Path:
    return _caches(cache_dir)[0]


def ingest(data, cache_dir=None, progress: bool = True, to: str | None = None) -> Path | str:
    """Ingest a source into the cache (once), or to ``to``, and return its store.

    Parameters
    ----------
    data : path-like, str or None
        A source (see :func:`resolve_source`), ``"keras"``, an existing store
        (a folder or a URL: ``s3://``, ``gs://``, ``http(s)://``, ``file://``),
        or ``None`` to search for / download CIFAR-10. ``file://`` URLs are local paths.
    cache_dir : path-like or str, optional
        Cache folder; default :func:`daskmeans.config.cache_dir`. A URL
        (``s3://bucket/cache``) keeps the stores there, under ``stores/``.
    progress : bool
        Show progress lines on stderr.
    to : str, optional
        Write the store here instead of the cache: a URL (``s3://bucket/cifar10.zarr``)
        or a folder. Reused when it already holds this source's complete store;
        anything else there is refused.

    Returns
    -------
    pathlib.Path or str
        The complete Zarr store (the source itself when it already is one); a
        URL string for a store in an object store.

    Raises
    ------
    DataError
        When the source is missing, unreadable, corrupted, unsafe or of the wrong
        layout, or a URL is unreachable or taken.
    """
    cache, remote = _caches(cache_dir)
    if isinstance(data, str) and is_url(data):
        path = local_path(data)
        if path is None:
            if not is_store(data):
                raise DataError(
                    f"--data {data}: no daskmeans store at this URL (a URL must name an ingested store); "
                    "ingest the source first: daskmeans ingest --data FILE --to URL"
                )
            check_store(data)
            return data.rstrip("/")
        data = path
    source = resolve_source(data, progress=progress, cache_dir=cache)
    if source != "keras" and is_store(source):
        check_store(source)
        return Path(source)
    if to is not None:
        target = os.fspath(to)
        path = local_path(target) if is_url(target) else Path(target).expanduser()
        if path is None:
            return ingest_to(source, target, cache, progress=progress)
        return _ingest_to_folder(source, path, cache, progress)
    if remote is not None:
        fp = fingerprint(source, cache)
        return ingest_to(source, f"{remote}/stores/{store_path(source, cache, fp).name}", cache, progress, fp)
    return ingest_source(source, cache, progress=progress)


def _ingest_to_folder(source, folder: Path, cache: Path, progress: bool) -> Path:
    """Ingest into the cache, then copy the store to ``folder`` (atomically, never over other files)."""
    store = ingest_source(source, cache, progress=progress)
    attrs = read_attrs(folder)
    if attrs is not None and attrs.get("fingerprint") == read_attrs(store).get("fingerprint"):
        check_store(folder)
        return folder
    if folder.exists():
        raise DataError(f"--to {folder}: already exists; pass a new folder name or delete that one first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder) as tmp:
        shutil.copytree(store, tmp)
    return folder


def load_cifar10(data=None, split: str = "train", chunk_size=None, cache_dir=None, progress: bool = True) -> Dataset:
    """Load a CIFAR-10 split as lazy Dask arrays.

    Parameters
    ----------
    data : path-like, str or None
        Source: the official ``cifar-10-python.tar.gz``, its extracted folder, an
        image-folder tree or tarball, an ingested ``.zarr`` store, or ``"keras"``.
        ``None`` searches ``$DASKMEANS_DATA``, the cache and Keras's cache, then
        downloads (md5-verified).
    split : {"train", "test", "all"}
        ``"all"`` is train followed by test.
    chunk_size : int, optional
        Rows per Dask chunk; default config ``daskmeans.chunk-size``.
    cache_dir : path-like, optional
        Cache folder; default :func:`daskmeans.config.cache_dir`.
    progress : bool
        Show progress lines on stderr (download, decoding).

    Returns
    -------
    Dataset

    Raises
    ------
    InputError
        For a bad ``split`` or ``chunk_size``.
    DataError
        For a bad source, or a split the source does not have.
    """
    if split not in SPLITS:
        raise InputError(f"--split {split!r}: choose one of {', '.join(SPLITS)}")
    if chunk_size is None:
        chunk_size = config.get("chunk-size")
    try:
        chunk_size = int(chunk_size)
        ok = chunk_size >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"--chunk-size {chunk_size!r} must be a positive whole number of rows")
    store = ingest(data, cache_dir=cache_dir, progress=progress)
    attrs = read_attrs(store) or {}
    have = [s for s in ("train", "test") if s in attrs.get("splits", ("train", "test"))]
    wanted = have if split == "all" else [split]
    if split != "all" and split not in have:
        raise DataError(
            f"{attrs.get('source', store)}: has no {split} split (only {', '.join(have)}); "
            f"use --split {have[0] if have else 'train'} or a source with {split}/<class>/ folders"
        )
    parts = [open_split(store, s, chunk_size) for s in wanted]
    if len(parts) == 1:
        images, labels = parts[0]
    else:
        images = da.concatenate([p[0] for p in parts])
        labels = da.concatenate([p[1] for p in parts])
    return Dataset(
        images=images,
        labels=labels,
        class_names=tuple(attrs["class_names"]),
        split=split,
        source=str(attrs.get("source", store)),
        store=os.fspath(store),
        indices=None,
    )
