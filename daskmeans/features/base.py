"""The featurizer object shared by every kind of feature: options, NumPy arrays, a lazy transform.

A :class:`Featurizer` holds only JSON-able options and NumPy arrays, so it pickles
(to the workers, into a fresh process) and saves to one ``.npz`` file that loads
with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from ..errors import InputError

#: The feature kinds, in the order of ``--features``.
KINDS = ("raw", "pca", "patches")

#: The image shape a flat row of 3072 values is read as (CIFAR-10, HWC order).
IMAGE_SHAPE = (32, 32, 3)


def as_images(X, image_shape=IMAGE_SHAPE, chunk_size: int = 5000) -> da.Array:
    """``X`` as a dask array of images ``(n, H, W, C)`` chunked by rows only.

    Accepts dask or NumPy arrays of images ``(n, H, W, C)`` or flat rows
    ``(n, H*W*C)`` (HWC order), uint8 pixels or floats in [0, 1].
    """
    if not isinstance(X, da.Array):
        X = np.asarray(X)
        X = da.from_array(X, chunks=(chunk_size,) + (-1,) * (X.ndim - 1))
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise InputError(f"images have dtype {X.dtype}; pass uint8 pixels or floats in [0, 1]")
    if X.ndim == 2:
        if X.shape[1] != math.prod(image_shape):
            raise InputError(f"rows of {X.shape[1]} values are not {image_shape} images; "
                             f"pass images of shape (n, {', '.join(map(str, image_shape))})")
        X = X.rechunk({1: -1}).reshape((X.shape[0],) + tuple(image_shape))
    if X.ndim != 4:
        raise InputError(f"images must have shape (n, height, width, channels), got {X.shape}")
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({1: -1, 2: -1, 3: -1})
    return X


def as_flat(X, chunk_size: int = 5000) -> da.Array:
    """``X`` as flat rows ``(n, d)`` chunked by rows only (images flattened in HWC order)."""
    if not isinstance(X, da.Array):
        X = np.asarray(X)
        X = da.from_array(X, chunks=(chunk_size,) + (-1,) * (X.ndim - 1))
    if X.ndim < 2:
        raise InputError(f"X must have shape (n_samples, n_features), got {X.shape}")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise InputError(f"X has dtype {X.dtype}; pass uint8 pixels or floats")
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    if X.ndim > 2:
        X = X.reshape((X.shape[0], math.prod(X.shape[1:])))
    return X


def pixel_units(dtype) -> float:
    """Factor to [0, 1]: 1/255 for uint8 pixels, 1 for floats (taken as already in [0, 1])."""
    return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0


class Featurizer:
    """Features fitted on a training split, applied chunk by chunk to any split.

    Attributes
    ----------
    kind : str
        ``"raw"``, ``"pca"`` or ``"patches"``.
    options : dict
        JSON-able options of the fit (dimension, patch size, ...).
    arrays : dict of str -> numpy.ndarray
        What the fit learned (mean, components, dictionary, ...).
    info : dict
        JSON-able facts about the fit (seconds, explained variance ratio, ...).
    """

    kind = "raw"

    def __init__(self, options: dict | None = None, arrays: dict | None = None, info: dict | None = None):
        self.options = dict(options or {})
        self.arrays = {k: np.asarray(v) for k, v in (arrays or {}).items()}
        self.info = dict(info or {})

    @property
    def n_features(self) -> int:
        """Number of features per image."""
        return int(math.prod(IMAGE_SHAPE))

    def transform(self, X) -> da.Array:
        """Features of ``X`` (images or flat rows): dask array ``(n, n_features)``.

        ``raw`` returns the flat pixels unchanged (uint8 stays uint8, so k-means
        keeps its exact pixel path).
        """
        return as_flat(X)

    def describe(self) -> dict:
        """JSON-able summary for ``report.json``: kind, options, n_features, info."""
        return {"kind": self.kind, "options": dict(self.options), "n_features": self.n_features, **self.info}

    # -- saving ----------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write ``path`` (``.npz``): the arrays and the options as JSON; loads without pickle."""
        meta = json.dumps({"kind": self.kind, "options": self.options, "info": self.info}, default=float)
        with open(path, "wb") as f:
            np.savez(f, __meta__=np.asarray(meta), **self.arrays)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    def __eq__(self, other) -> bool:
        return (type(self) is type(other) and self.options == other.options
                and self.arrays.keys() == other.arrays.keys()
                and all(np.array_equal(self.arrays[k], other.arrays[k]) for k in self.arrays))

    __hash__ = None


def load(path, registry: dict) -> Featurizer:
    """A featurizer saved by :meth:`Featurizer.save` (``registry``: kind -> class)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (OSError, ValueError, KeyError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{p}: not a featurizer saved by daskmeans ({msg}); rerun the training run") from None
    cls = registry.get(meta.get("kind"))
    if cls is None:
        raise InputError(f"{p}: unknown feature kind {meta.get('kind')!r}; expected one of {', '.join(KINDS)}")
    return cls(meta.get("options"), arrays, meta.get("info"))


def _cluster_sums(block, labels, k):
    labels = np.asarray(labels).reshape(-1)
    onehot = np.zeros((k, len(labels)), dtype=np.float64)
    onehot[labels, np.arange(len(labels))] = 1.0
    return onehot @ np.asarray(block, dtype=np.float64), onehot.sum(axis=1)


def cluster_mean_images(X, labels, k: int) -> np.ndarray:
    """``(k, d)`` float64: the mean image of each cluster in [0, 1] (zeros for an empty one).

    ``X``: images or flat rows (dask), ``labels``: dask ``(n,)`` cluster of each row.
    Each chunk sums its own rows per cluster; only ``k x d`` sums per chunk reach the client.
    """
    X = as_flat(X)
    labels = labels.rechunk({0: X.chunks[0]}) if isinstance(labels, da.Array) else da.from_array(
        np.asarray(labels), chunks=(X.chunks[0],))
    parts = [dask.delayed(_cluster_sums)(xb, lb, k)
             for xb, lb in zip(X.to_delayed().ravel(), labels.to_delayed().ravel())]
    sums = np.zeros((k, X.shape[1]))
    counts = np.zeros(k)
    for s, c in dask.compute(*parts):
        sums += s
        counts += c
    return sums / np.maximum(counts, 1)[:, None] * pixel_units(X.dtype)
