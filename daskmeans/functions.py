"""scikit-learn's k-means functions with daskmeans underneath: :func:`k_means` and :func:`kmeans_plusplus`.

Same signatures and returns as ``sklearn.cluster.k_means`` and
``sklearn.cluster.kmeans_plusplus``, so code written for those runs on
chunked dask arrays too. Validation happens here (or in :class:`KMeans`);
the engine (:mod:`daskmeans.kmeans`) assumes it.
"""

from __future__ import annotations

import numbers

import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array

from . import kmeans as engine
from .backend import to_numpy
from .errors import InputError
from .estimator import _DEFAULTS, KMeans, _densify, _is_device_array, _one_line


def k_means(
    X,
    n_clusters,
    *,
    sample_weight=None,
    init=_DEFAULTS["init"],
    n_init=_DEFAULTS["n_init"],
    max_iter=_DEFAULTS["max_iter"],
    verbose=False,
    tol=_DEFAULTS["tol"],
    random_state=None,
    copy_x=True,
    algorithm=_DEFAULTS["algorithm"],
    return_n_iter=False,
    metric=_DEFAULTS["metric"],
    chunk_size=_DEFAULTS["chunk_size"],
    persist=_DEFAULTS["persist"],
    split_every=_DEFAULTS["split_every"],
):
    """k-means clustering as a function (``sklearn.cluster.k_means``): fits a :class:`KMeans`.

    Parameters
    ----------
    X : array-like, sparse matrix, dask or CuPy array (n_samples, n_features)
    n_clusters : int
    sample_weight : array-like (n_samples,) or None
    init, n_init, max_iter, verbose, tol, random_state, copy_x, algorithm :
        As :class:`KMeans` (``copy_x`` is accepted: X is never written).
    return_n_iter : bool, default False
        Also return the number of iterations of the best run.
    metric, chunk_size, persist, split_every :
        daskmeans's own parameters, as :class:`KMeans`.

    Returns
    -------
    centroid : ndarray (n_clusters, n_features)
    label : ndarray (n_samples,) int32 (a dask array for dask input)
    inertia : float
    best_n_iter : int
        Only when ``return_n_iter``.
    """
    est = KMeans(
        n_clusters=n_clusters, init=init, n_init=n_init, max_iter=max_iter, verbose=verbose, tol=tol,
        random_state=random_state, copy_x=copy_x, algorithm=algorithm, metric=metric, chunk_size=chunk_size,
        persist=persist, split_every=split_every,
    ).fit(X, sample_weight=sample_weight)
    if return_n_iter:
        return est.cluster_centers_, est.labels_, est.inertia_, est.n_iter_
    return est.cluster_centers_, est.labels_, est.inertia_


def _rows(X):
    """X for k-means++: a dense NumPy array (sparse densified; integers other than uint8 as float64) or
    a dask/CuPy array as it is."""
    if sp.issparse(X):
        X = _densify(X)
    if isinstance(X, da.Array) or _is_device_array(X):
        if X.ndim != 2:
            raise InputError(f"X has shape {X.shape}; kmeans_plusplus needs (n_samples, n_features): reshape it")
        return X
    try:
        return check_array(X, dtype=[np.float64, np.float32, np.uint8], input_name="X",
                           ensure_all_finite=True, ensure_min_samples=1)
    except ValueError as e:
        raise InputError(_one_line(e)) from None


def kmeans_plusplus(X, n_clusters, *, sample_weight=None, x_squared_norms=None, random_state=None,
                    n_local_trials=None):
    """Initial centres by greedy k-means++ (``sklearn.cluster.kmeans_plusplus``'s signature and draws).

    The same random numbers in the same order as scikit-learn's, so the same
    seed picks the same rows (up to floating-point ties); distances are
    computed chunk by chunk (:func:`daskmeans.kmeans.kmeans_plusplus`).

    Parameters
    ----------
    X : array-like, sparse matrix, dask or CuPy array (n_samples, n_features)
        uint8 data is taken as pixels: its centres are in [0, 1] (``/ 255``),
        as everywhere in daskmeans.
    n_clusters : int
    sample_weight : array-like (n_samples,) or None
        Weights of the draws (rows of weight 0 are never picked).
    x_squared_norms : array-like (n_samples,) or None
        Accepted for scikit-learn compatibility (its length is checked);
        daskmeans computes the distances it needs on the chunks.
    random_state : int, RandomState or None
    n_local_trials : int or None
        Candidates per centre; None: ``2 + int(log(n_clusters))``.

    Returns
    -------
    centers : ndarray (n_clusters, n_features)
        X's own rows in X's dtype for float input; float64 for other input.
    indices : ndarray (n_clusters,) int64
        The rows chosen: ``X[indices]`` are the centres.
    """
    X = _rows(X)
    n = X.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or n_clusters < 1:
        raise InputError(f"n_clusters={n_clusters!r} must be an integer >= 1; pass n_clusters=1 or more")
    if n < n_clusters:
        raise InputError(f"n_samples={n} should be >= n_clusters={n_clusters}; use fewer clusters or more samples")
    if x_squared_norms is not None and len(x_squared_norms) != n:
        raise InputError(
            f"The length of x_squared_norms {len(x_squared_norms)} should be equal to the length of n_samples {n}; "
            "pass one norm per row of X, or None"
        )
    if n_local_trials is not None and (isinstance(n_local_trials, bool) or not isinstance(
            n_local_trials, numbers.Integral) or n_local_trials < 1):
        raise InputError(f"n_local_trials={n_local_trials!r} must be an integer >= 1; pass n_local_trials=1 or more, "
                         "or None")
    w = KMeans._check_weights(sample_weight, n)
    rng = check_random_state(random_state)
    kwargs = {} if w is None else {"sample_weight": w}
    centers, indices = engine.kmeans_plusplus(X, int(n_clusters), rng, n_local_trials=n_local_trials, **kwargs)
    dtype = np.dtype(X.dtype)
    if dtype.kind == "f":  # the rows themselves (float32 rows are exact in float64)
        centers = np.asarray(to_numpy(centers)).astype(dtype)
    return centers, np.asarray(indices, dtype=np.int64)


__all__ = ["k_means", "kmeans_plusplus"]
