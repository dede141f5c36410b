"""Rows: the layer under the k-means loops. Data as a 2-D dask array chunked by rows,
the pixel scale of a dtype, and BLAS kept to one thread while dask runs the chunks.

Both the Lloyd loop (:mod:`daskmeans.kmeans`) and k-means|| (:mod:`daskmeans.init_parallel`)
build on these; this module imports neither.
"""

from __future__ import annotations

import contextlib
import math

import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from . import config
from .errors import InputError


def pixel_scale(dtype) -> float:
    """1/255 for uint8 pixels (centres then live in [0, 1]); 1 for anything else."""
    return 1.0 / 255.0 if np.dtype(dtype) == np.uint8 else 1.0


def as_rows(X, chunk_size: int | None = None) -> da.Array:
    """``X`` as a 2-D dask array ``(n_samples, n_features)`` chunked by rows only.

    NumPy (or CuPy) arrays are wrapped with ``chunk_size`` rows per chunk; images
    ``(N, 32, 32, 3)`` are flattened to ``(N, 3072)`` (HWC order).
    """
    if not isinstance(X, da.Array):
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        rows = int(chunk_size or config.get("chunk-size") or 5000)
        X = da.from_array(X, chunks=(rows,) + tuple(-1 for _ in X.shape[1:]))
    if X.ndim < 2:
        raise InputError(f"X must have shape (n_samples, n_features), got shape {X.shape}; reshape it with X.reshape(-1, 1)")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise InputError(f"X has dtype {X.dtype}; k-means needs numbers (uint8 pixels or floats)")
    if any(len(c) > 1 for c in X.chunks[1:]):
        X = X.rechunk({i: -1 for i in range(1, X.ndim)})
    if X.ndim > 2:
        X = X.reshape((X.shape[0], math.prod(X.shape[1:])))
    if chunk_size and max(X.chunks[0], default=0) > chunk_size:
        X = X.rechunk({0: chunk_size})
    return X


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread while dask runs chunks in parallel (as scikit-learn does).

    Chunks already use every core; a multi-threaded BLAS inside each task only
    oversubscribes them (small-k products were measured 30x slower that way).
    Distributed workers already start with one BLAS thread.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield
