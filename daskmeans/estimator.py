"""The scikit-learn estimator: :class:`KMeans`.

Validation happens here, once, at the edge; the engine (:mod:`daskmeans.kmeans`)
assumes it. The estimator also owns what scikit-learn does around its kernels:
centring float data before the fit (precision far from the origin), the dtype
rules (float32 stays float32, other non-pixel input becomes float64), sample
weights, ``transform``/``score``, warnings and pickling.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass

import dask.array as da
import numpy as np
import scipy.sparse as sp
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import _check_feature_names, check_array, check_is_fitted

from . import algorithms, params, warm
from .backend import namespace, to_numpy
from .errors import InputError
from .kmeans import (
    X_work,
    as_rows,
    backend_name,
    init_centers,
    lloyd_many,
    one_blas_thread,
    pixel_scale,
    predict_labels,
    tolerance,
)

logger = logging.getLogger("daskmeans")

#: Rows per sub-block in transform/score: bounds the float64 temporaries.
_ROWS = 4096

#: Sparse input is densified up to this many bytes (scikit-learn takes CSR; the engine works on dense chunks).
SPARSE_DENSE_LIMIT = 2 * 2**30


class ParameterError(InputError, InvalidParameterError):
    """A bad estimator parameter: scikit-learn's ``InvalidParameterError`` and daskmeans's ``InputError``."""


class NotFitted(InputError, NotFittedError):
    """predict/transform/score before fit: scikit-learn's ``NotFittedError`` and daskmeans's ``InputError``."""


def _check_fitted(est):
    try:
        check_is_fitted(est)
    except NotFittedError as e:
        raise NotFitted(str(e)) from None


@dataclass
class _Data:
    """X as the engine sees it: a 2-D dask array of rows, centred if it is float data."""

    X: da.Array  # (n, d): uint8 pixels as they are, float data minus ``offset``
    was_dask: bool
    pixels: bool  # uint8 pixels: exact sums, centres in [0, 1]
    given: object = None  # X as the user gave it, checked (NumPy or dask): what a callable init sees


def _center_block(block, offset):
    xp = namespace(block)
    return block - xp.asarray(offset, dtype=block.dtype)


def _finite_block(block):
    xp = namespace(block)
    if not bool(xp.all(xp.isfinite(block))):
        raise InputError("Input X contains NaN or infinity; k-means needs finite values: drop or impute them")
    return block


def _distances_block(block, centers, *, scale, metric, squared, out_dtype):
    """Distances ``(n, k)`` from rows to centres, in float64, cast to ``out_dtype``.

    ``block`` is in raw units (``* scale`` gives centres' units). Works on any
    array-API block (NumPy, CuPy); sub-blocks bound the temporaries.
    """
    xp = namespace(block)
    n = block.shape[0]
    c = xp.asarray(centers, dtype=xp.float64)
    cc = xp.vecdot(c, c)
    parts = []
    for s in range(0, max(n, 1), _ROWS):
        x = xp.astype(block[s : s + _ROWS, ...], xp.float64)
        if scale != 1.0:
            x = x * scale
        if metric == "l2":
            d = xp.vecdot(x, x)[:, None] - 2 * (x @ xp.matrix_transpose(c)) + cc[None, :]
            d = xp.clip(d, min=0.0)  # rounding can make a zero distance slightly negative
            if not squared:
                d = xp.sqrt(d)
        elif metric == "cosine":  # 1 - cos (the same for `squared`)
            d = 1 - (x @ xp.matrix_transpose(c)) / (xp.sqrt(xp.vecdot(x, x))[:, None] * xp.sqrt(cc)[None, :])
        else:
            d = xp.stack([xp.sum(xp.abs(x - c[j : j + 1, :]), axis=1) for j in range(c.shape[0])], axis=1)
        parts.append(d)
    out = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return xp.astype(out, out_dtype)


def _check_directions(Xd: da.Array) -> None:
    """Spherical k-means scores rows by direction: a row of zeros has none and is refused."""
    zero = da.all(Xd == 0, axis=1)
    count = int(zero.sum().compute())
    if count:
        first = int(da.argmax(zero).compute())
        raise InputError(f"X has {count} row(s) of zeros (the first is row {first}); metric='cosine' needs a "
                         "direction for every row: drop those rows or use metric='l2'")


def _min_block(block, centers, *, scale, metric):
    xp = namespace(block)
    d = _distances_block(block, centers, scale=scale, metric=metric, squared=True, out_dtype=xp.float64)
    return xp.min(d, axis=1)


def check_parameters(est, names) -> None:
    """The estimator's parameters ``names``: the project's words first (value, bound, fix),
    then scikit-learn's constraints; :class:`ParameterError` on the first bad one."""
    if get_config().get("skip_parameter_validation"):
        return
    try:
        for name in names:
            if name not in _SKLEARN_ONLY:
                params.check(name, getattr(est, name))
    except InputError as e:
        raise ParameterError(str(e)) from None
    try:
        est._validate_params()
    except InvalidParameterError as e:
        raise ParameterError(_parameter_message(est, str(e))) from None


def _parameter_message(est, msg: str) -> str:
    """scikit-learn's "The 'tol' parameter of KMeans must be ... Got -1.0 instead." as
    "tol=-1.0 must be ...; pass e.g. tol=0.0001" (the value, the bound, the fix)."""
    m = re.match(r"The '(\w+)' parameter of \w+ must be (.*)\. Got .* instead\.?$", msg, re.S)
    if not m:
        return msg
    name, wanted = m.groups()
    default = inspect.signature(type(est)).parameters[name].default
    return f"{name}={getattr(est, name)!r} must be {wanted}; pass e.g. {name}={default!r}"


def _one_line(e: Exception) -> str:
    """scikit-learn's validation message, first line only (the CLI prints one line), with the fix."""
    lines = [ln.strip() for ln in str(e).strip().splitlines()]
    first = lines[0].rstrip(".")
    if "NaN" in first or "infinity" in first:
        return f"{first}; k-means needs finite values: drop or impute them (e.g. sklearn.impute.SimpleImputer)"
    if "Complex" in first:
        return f"{first}; pass the real part (X.real) or the magnitude (abs(X))"
    # the rest without the dump of the data ("array=[...]")
    return " ".join(ln for ln in lines if ln and not ln.startswith(("array=", "[")))


def _densify(X):
    """Sparse X as a dense NumPy array (scikit-learn takes CSR; daskmeans's chunks are dense), within a size."""
    dtype = X.dtype if X.dtype.kind == "f" else np.dtype(np.float64)  # what the fit computes in
    nbytes = math.prod(X.shape) * dtype.itemsize
    if nbytes > SPARSE_DENSE_LIMIT:
        raise InputError(
            f"X is a sparse {type(X).__name__} of shape {X.shape} whose dense copy would take "
            f"{nbytes / 2**30:.1f} GiB, more than daskmeans densifies ({SPARSE_DENSE_LIMIT / 2**30:g} GiB); pass a "
            "dask array of dense chunks (e.g. da.from_array over row blocks of X.toarray())"
        )
    return X.toarray()


def _bound_init(user_init, given, offset, k, d, X, n_clusters, random_state):
    """Centres from a callable ``init``, called scikit-learn's way on X as the user gave it.

    The engine calls this with its own (centred, chunked) ``X``, ignored here;
    the callable's centres are in X's units like an init array, so float data's
    centring ``offset`` is taken off.
    """
    centers = user_init(given, k, random_state=random_state)
    if isinstance(centers, da.Array):
        centers = centers.compute()
    arr = _init_array(to_numpy(centers) if hasattr(centers, "shape") else centers, k, d,
                      "returned by init(X, n_clusters, random_state)")
    return arr if offset is None else arr - offset


def _init_array(init, k: int, d: int, what: str = "") -> np.ndarray:
    """Initial centres as float64 ``(k, d)``, checked: numbers, shape (scikit-learn's words), finite."""
    arr = np.asarray(init)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise InputError(f"init has dtype {arr.dtype}; pass real numbers (n_clusters x n_features)")
    arr = arr.astype(np.float64)
    if arr.shape != (k, d) and not (arr.ndim >= 2 and arr.shape[0] == k and math.prod(arr.shape[1:]) == d):
        what = f" {what}" if what else ""
        if arr.ndim < 1 or arr.shape[0] != k:
            mismatch = f"the number of clusters {k}"
        else:
            mismatch = f"the number of features of the data {d}"
        raise InputError(
            f"The shape of the initial centers {arr.shape}{what} does not match {mismatch}: init has shape "
            f"{arr.shape}, expected ({k}, {d}) (n_clusters x n_features); pass centres of that shape or "
            "init='k-means++'"
        )
    if not np.all(np.isfinite(arr)):
        raise InputError("init contains NaN or infinity; pass finite centres")
    return arr.reshape(k, d)


def _is_device_array(X) -> bool:
    """A non-NumPy array the engine takes as it is (CuPy, array-API arrays), not a list or a DataFrame."""
    if isinstance(X, np.ndarray) or not hasattr(X, "shape") or not hasattr(X, "dtype"):
        return False
    return hasattr(X, "__array_namespace__") or type(X).__module__.split(".")[0] == "cupy"


@contextlib.contextmanager
def _verbosity(verbose: int):
    """``verbose >= 1``: the 'daskmeans' log lines (one per iteration) show, on stdout
    unless the application already shows them (the command line's handler)."""
    if not verbose or (logger.isEnabledFor(logging.INFO) and logger.hasHandlers()):
        yield
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


#: The estimator's defaults, from the parameter table.
_DEFAULTS = {name: params.PARAMS[name].default for name in params.ESTIMATOR}

#: Checked by scikit-learn's own rules only: a RandomState instance, verbose=True.
_SKLEARN_ONLY = ("random_state", "verbose")


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """k-means clustering on chunked Dask arrays (NumPy or CuPy blocks), scikit-learn's API.

    scikit-learn's semantics (``fit``/``predict``/``transform``/``score``,
    ``cluster_centers_``, ``labels_``, ``inertia_``, ``n_iter_``, the same
    convergence rules, k-means++ with the same random draws, float data centred
    before the fit), computed chunk by chunk with a tree reduction so the data
    never has to fit in memory.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "k-means||", "random", "uniform"}, callable or array (n_clusters, n_features), \
default "k-means++"
        "random": ``n_clusters`` rows of X drawn at random (scikit-learn's
        draws: the same rows for the same seed, weighted by ``sample_weight``).
        "uniform": centres uniform in [0, 1]^d, as the original notebook.
        An array is in the centres' units (pixels in [0, 1] for uint8 data).
        A callable ``init(X, n_clusters, random_state)`` gets X as given (NumPy
        or dask, checked) and a ``RandomState`` and returns such an array.
    n_init : "auto" or int, default "auto"
        Runs with different initial centres; the lowest inertia wins. "auto"
        (scikit-learn's rule): 10 for "random" and a callable, 1 otherwise.
        The runs share every pass over the data (one task per worker thread and
        iteration serves all of them); each equals the run alone from its
        initial centres.
    max_iter : int, default 300
    tol : float, default 1e-4
        Relative tolerance: the run stops when the total squared centre shift
        is <= ``tol * mean(var(X, axis=0))`` (scikit-learn's rule).
    metric : {"l2", "l1", "cosine"}, default "l2"
        "l1" assigns by Manhattan distance and updates by the mean: the
        original notebook's variant (not a k-medians). "cosine": spherical
        k-means: each row goes to the centre of largest cosine similarity, the
        centres are the normalised means of their rows scaled to norm 1 (unit
        vectors; float data are not centred), the inertia is the sum of
        ``1 - cos``; rows of zeros are refused.
    random_state : int, RandomState or None
    chunk_size : int or None
        Rows per chunk when NumPy arrays are given (dask arrays keep theirs).
    persist : bool, default True
        Keep the data in memory (or on the workers) during the fit; False reads
        chunks from their source in every iteration (out of core).
    split_every : int or None
        Fan-in of the tree reduction (default: config ``kmeans.split-every``).
    algorithm : {"auto", "lloyd", "hamerly", "elkan", "full"}, default "auto"
        "hamerly" keeps per-row distance bounds on the workers and skips the
        distances they prove unnecessary: the same labels, centres and
        iterations as "lloyd" (``metric="l2"`` and uint8 data only). "auto":
        hamerly for l2 on uint8 NumPy chunks, lloyd otherwise. "elkan"
        (scikit-learn's name for its bounds algorithm) is taken as "auto":
        Lloyd's results either way; ``algorithm_`` says which ran. "full"
        (dask-ml's and older scikit-learn's name) is "lloyd".
    oversampling_factor : float, default 2.0
        ``init="k-means||"``: about ``oversampling_factor * n_clusters`` rows join
        the candidates in each round (dask-ml's parameter).
    init_max_iter : int or None, default None
        ``init="k-means||"``: its rounds, one pass over the data each (None: 5).
    copy_x : bool, default True
        Accepted for scikit-learn compatibility: daskmeans never writes to X
        (float data is centred in a lazy copy), whatever its value.
    verbose : int, default 0
        0: no output of its own (the 'daskmeans' logger logs as the application
        configured it); 1 or more: a progress bar over the iterations
        (terminal or notebook) and the log lines (one per iteration), on stdout
        unless the application already shows them.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
        float32 for uint8 pixels (scaled to [0, 1]) and float32 data; float64
        for float64 and every other input (integers, bool), as scikit-learn.
    labels_ : dask array or ndarray (n_samples,) int32
        A dask array for dask input, NumPy for NumPy input.
    inertia_ : float
        Sum of (weighted) squared distances to the nearest centre (sum of L1
        distances for ``metric="l1"``), in centres' units.
    n_iter_ : int
    _n_init : int
        The runs ``n_init`` stood for (scikit-learn's name).
    converged_ : bool
    algorithm_ : str
        The algorithm that ran ("lloyd" or "hamerly").
    init_centers_ : ndarray (n_clusters, n_features) float64
        The initial centres of the best run, in centres' units.
    history_ : list of dict
        Per iteration: inertia, shift, changed, empty, seconds.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string column names (a DataFrame).

    Notes
    -----
    Sparse input (scipy.sparse) is densified, up to 2 GiB.
    Input types: uint8 pixels keep their exact path (integer sums, centres in
    [0, 1]); float32 and float64 are computed in their own precision after
    subtracting the column means (added back to the centres); any other
    numeric input (integers, bool, float16) is computed in float64. A model
    fitted on pixels predicts pixels (uint8) and a model fitted on numbers
    predicts numbers: mixing them is refused rather than silently rescaled.
    """

    #: Ranges and choices from the single parameter table (:mod:`daskmeans.params`).
    _parameter_constraints: dict = params.sklearn_constraints(params.ESTIMATOR)

    def __init__(
        self,
        n_clusters=_DEFAULTS["n_clusters"],
        *,
        init=_DEFAULTS["init"],
        n_init=_DEFAULTS["n_init"],
        max_iter=_DEFAULTS["max_iter"],
        tol=_DEFAULTS["tol"],
        metric=_DEFAULTS["metric"],
        random_state=_DEFAULTS["random_state"],
        chunk_size=_DEFAULTS["chunk_size"],
        persist=_DEFAULTS["persist"],
        split_every=_DEFAULTS["split_every"],
        algorithm=_DEFAULTS["algorithm"],
        oversampling_factor=_DEFAULTS["oversampling_factor"],
        init_max_iter=_DEFAULTS["init_max_iter"],
        copy_x=_DEFAULTS["copy_x"],
        verbose=_DEFAULTS["verbose"],
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.metric = metric
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.persist = persist
        self.split_every = split_every
        self.algorithm = algorithm
        self.oversampling_factor = oversampling_factor
        self.init_max_iter = init_max_iter
        self.copy_x = copy_x
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified (SPARSE_DENSE_LIMIT)
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- validation at the edge -------------------------------------------------------

    def _check_params(self):
        check_parameters(self, params.ESTIMATOR)

    def _prepare(self, X, *, fitting: bool) -> _Data:
        """Check ``X`` once and bring it to the engine's form (lazily for dask input).

        NaN/inf in NumPy input are found here; in dask input, during the fit's
        first pass (the column means) or, for predict/transform/score, by a
        check inside each chunk's task.
        """
        _check_feature_names(self, X, reset=fitting)
        if sp.issparse(X):
            X = _densify(X)
        was_dask = isinstance(X, da.Array)
        lazy = was_dask or _is_device_array(X)
        if lazy:
            kind = np.dtype(X.dtype).kind
            if kind == "c":
                raise InputError("Complex data not supported; pass the real part (X.real) or its magnitude (abs(X))")
            if kind not in "biuf":
                raise InputError(f"X has dtype {X.dtype}; k-means needs numbers (uint8 pixels, integers or floats)")
            if X.ndim < 2:
                raise InputError(
                    f"Expected 2D array, got {X.ndim}D array of shape {X.shape} instead; reshape your data "
                    "with X.reshape(-1, 1) (one feature) or X.reshape(1, -1) (one sample)"
                )
        else:
            try:
                X = check_array(
                    X, accept_sparse=False, dtype="numeric", allow_nd=True, ensure_all_finite=True,
                    ensure_min_samples=1, ensure_min_features=1, estimator=self, input_name="X",
                )
            except ValueError as e:
                raise InputError(_one_line(e)) from None
        given = X
        n = X.shape[0]
        d = math.prod(X.shape[1:])
        if n < 1 or d < 1:
            what = f"{n} sample(s)" if n < 1 else f"{d} feature(s)"
            raise InputError(f"Found array with {what} (shape={X.shape}) while a minimum of 1 is required by "
                             f"{type(self).__name__}")
        Xd = as_rows(X, self.chunk_size)
        pixels = np.dtype(Xd.dtype) == np.uint8
        if not pixels and np.dtype(Xd.dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
            Xd = Xd.astype(np.float64)  # integers, bool, float16: float64 as scikit-learn
        if not fitting:
            if d != self.n_features_in_:
                raise InputError(
                    f"X has {d} features, but {type(self).__name__} is expecting {self.n_features_in_} features "
                    "as input (the number it was fitted with)"
                )
            if pixels != self._pixels:
                fitted, given = ("uint8 pixels", "numbers") if self._pixels else ("numbers", "uint8 pixels")
                raise InputError(
                    f"this {type(self).__name__} was fitted on {fitted} but X holds {given} (dtype {X.dtype}); "
                    "pixels are scaled to [0, 1] and numbers are not, so pass X of the kind it was fitted on"
                )
            if lazy and not pixels:
                Xd = Xd.map_blocks(_finite_block, dtype=Xd.dtype, meta=Xd._meta)
            if self._offset is not None:
                Xd = Xd.map_blocks(_center_block, offset=self._offset.astype(Xd.dtype), dtype=Xd.dtype,
                                   meta=Xd._meta)
        return _Data(X=Xd, was_dask=was_dask, pixels=pixels, given=given)

    def _check_init(self, d: int, pixels: bool):
        """The ``init`` array as float64 ``(n_clusters, d)``, the method's name or the callable;
        sets ``_n_init``, the runs ``n_init`` stands for (scikit-learn's rule for "auto").

        A fitted model or a run folder (a warm start, :mod:`daskmeans.warm`) gives its
        centres as the array, in their order: cluster ``j`` continues its cluster ``j``."""
        self._n_init = params.n_init_for(self.n_init, self.init)
        if warm.is_source(self.init):
            arr = warm.centres(self.init, self.n_clusters, d, pixels)
        elif isinstance(self.init, str):
            return str(self.init)  # np.str_ too
        elif callable(self.init):
            return self.init
        else:
            arr = _init_array(to_numpy(self.init) if hasattr(self.init, "shape") else self.init, self.n_clusters, d)
        if self._n_init != 1:
            warnings.warn(
                f"Explicit initial center position passed: performing only one init in KMeans instead of "
                f"n_init={self._n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._n_init = 1
        return arr

    def _resolve_algorithm(self, Xd: da.Array, weighted: bool = False) -> str:
        pixels = np.dtype(Xd.dtype) == np.uint8
        if self.algorithm == "elkan" and self.n_clusters == 1:
            warnings.warn("algorithm='elkan' doesn't make sense for a single cluster. Using 'lloyd' instead.",
                          RuntimeWarning, stacklevel=3)
            return "lloyd"
        if self.algorithm == "full":  # dask-ml's (and older scikit-learn's) name for Lloyd
            return "lloyd"
        # elkan (scikit-learn's bounds algorithm) gives Lloyd's results: daskmeans's bounds where they are exact
        if self.algorithm in ("auto", "elkan"):  # the engine's rule (other integers were made float64 already)
            return algorithms.resolve("auto", Xd.dtype, self.metric, backend_name(Xd), weighted)
        if self.algorithm == "hamerly":
            if weighted:
                raise InputError(
                    "algorithm='hamerly' takes no unequal sample_weight (its incremental sums are exact only "
                    "unweighted); use algorithm='lloyd' or 'auto'"
                )
            if self.metric != "l2":
                raise InputError("algorithm='hamerly' needs metric='l2' (its bounds are Euclidean); use algorithm='lloyd'")
            if not pixels:
                raise InputError(
                    f"algorithm='hamerly' needs uint8 data (exact sums), got {Xd.dtype} (integers other than uint8 "
                    "are computed in float64); use algorithm='lloyd' or 'auto'"
                )
        return self.algorithm

    @staticmethod
    def _check_weights(sample_weight, n: int):
        """``sample_weight`` as float64 NumPy ``(n,)`` (None stays None), checked."""
        if sample_weight is None:
            return None
        w = sample_weight.compute() if isinstance(sample_weight, da.Array) else sample_weight
        w = to_numpy(w) if hasattr(w, "shape") and not isinstance(w, np.ndarray) else w
        try:
            w = np.asarray(w, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"sample_weight must be numbers, one per sample ({e})") from None
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,):
            raise InputError(f"sample_weight.shape == {w.shape}, expected ({n},): one weight per sample")
        if not np.all(np.isfinite(w)):
            raise InputError("sample_weight contains NaN or infinity; pass finite weights")
        if np.any(w < 0):
            raise InputError("Negative values in sample_weight are not allowed; pass weights >= 0")
        if not np.any(w > 0):
            raise InputError("Sample weights must contain at least one non-zero number")
        return w

    # -- fitting ----------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, *, on_iteration=None, resume=None):
        """Cluster ``X`` (n_samples, n_features) or images (n, h, w, c).

        Parameters
        ----------
        X : array-like, dask array or CuPy array
            Rows to cluster; images are flattened (HWC order).
        y : ignored
        sample_weight : array-like (n_samples,) or None
            Weights of the rows, as scikit-learn's: weighted k-means++ draws,
            weighted means and inertia. Rows of weight 0 take no part in the
            fit but still get a label. Equal weights give the unweighted fit
            (exact integer sums for pixels); unequal weights use Lloyd's steps
            with float64 weighted sums (``algorithm="auto"`` picks it).
        on_iteration, resume :
            Checkpointing, see :func:`daskmeans.kmeans.lloyd`; the states are in
            the centres' units of X (the centring of float data is undone).
        """
        self._check_params()
        data = self._prepare(X, fitting=True)
        self._fit(data, sample_weight, on_iteration, resume)
        return self

    def _fit(self, data: _Data, sample_weight, on_iteration, resume, others=()) -> da.Array:
        """Fit on prepared data; returns the (centred, persisted) working array.

        ``others``: more models (other ``n_clusters``, the same other parameters)
        fitted in the same passes over the data (:func:`fit_together`).
        """
        Xd = data.X
        n, d = Xd.shape
        models = [self, *others]
        k_max = max(m.n_clusters for m in models)
        if k_max > n:
            raise InputError(f"n_samples={n} should be >= n_clusters={k_max}; use fewer clusters or more samples")
        keep, weight, fit_w = _fit_weights(self._check_weights(sample_weight, n), k_max)
        algorithm = self._resolve_algorithm(Xd, weighted=fit_w is not None)
        inits = [m._check_init(d, data.pixels) for m in models]
        split_every = int(self.split_every or params.default("split_every") or 8)
        t0 = time.perf_counter()
        with one_blas_thread(), _verbosity(self.verbose):
            if self.persist:
                Xd = Xd.persist()
            offset = None
            if self.metric == "cosine":
                _check_directions(Xd)
            elif not data.pixels:  # directions (cosine) must not move: only l2 and l1 data are centred
                Xd, offset = self._centre(Xd)
            scale = pixel_scale(Xd.dtype)
            tol = tolerance(Xd, float(self.tol), scale, split_every, self.metric)
            Xfit = Xd if keep is None else Xd[keep]
            inits = [functools.partial(_bound_init, init, data.given, offset, m.n_clusters, d) if callable(init)
                     else init for m, init in zip(models, inits)]  # a callable is called on X as given
            bests = self._runs(Xfit, inits, offset, split_every, tol, algorithm, on_iteration, resume, fit_w, models)
            fitted = []
            for m, (best, best_init) in zip(models, bests):
                labels = best.labels
                if keep is not None:  # the rows left out get their nearest centre too, as in scikit-learn
                    labels = predict_labels(Xd, best.centers, self.metric).persist()
                if not data.was_dask:
                    labels = to_numpy(labels.compute())
                fitted.append((m, best, best_init, labels, _distinct(labels, m.n_clusters)))
        for m, best, best_init, labels, distinct in fitted:
            m._set_fitted(best, best_init, labels, distinct, data.pixels, offset, weight, X_work(Xd), tol, algorithm,
                          d, time.perf_counter() - t0)
        return Xd

    def _set_fitted(self, best, best_init, labels, distinct, pixels, offset, weight, wd, tol, algorithm, d, seconds):
        """The fitted attributes from the best run (and warn as scikit-learn when clusters are missing)."""
        k = self.n_clusters
        if distinct < k:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
                "Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=4,
            )
        shift = 0.0 if offset is None else offset
        self._offset = offset
        self._pixels = pixels
        self._centers_fit = np.array(best.centers, dtype=np.float64)
        self.cluster_centers_ = (best.centers + shift).astype(wd)
        self._centers_out = self.cluster_centers_.copy()
        self.init_centers_ = best_init + shift
        self.labels_ = labels
        self.inertia_ = float(best.inertia) * weight
        self.n_iter_ = int(best.n_iter)
        self.converged_ = bool(best.converged)
        self.history_ = best.history
        self.algorithm_ = algorithm
        self.tol_ = tol
        self.n_features_in_ = d
        self.fit_seconds_ = seconds

    def _centre(self, Xd: da.Array):
        """Float data minus its column means (scikit-learn centres X too), checked finite on the way."""
        n = Xd.shape[0]
        sums = to_numpy(Xd.sum(axis=0, dtype=np.float64).compute())
        if not np.all(np.isfinite(sums)):
            if not bool(da.isfinite(Xd).all().compute()):
                raise InputError("Input X contains NaN or infinity; k-means needs finite values: drop or impute them")
            raise InputError("X holds values too large to sum in float64; rescale X (e.g. divide it by its maximum)")
        # The mean as X's dtype holds it: exactly what is subtracted, and added back to the centres.
        offset = (sums / n).astype(Xd.dtype).astype(np.float64)
        Xc = Xd.map_blocks(_center_block, offset=offset.astype(Xd.dtype), dtype=Xd.dtype, meta=Xd._meta)
        if self.persist:
            Xc = Xc.persist()
        return Xc, offset

    def _runs(self, Xd, inits, offset, split_every, tol, algorithm, on_iteration, resume, sample_weight, models):
        """Every model's ``n_init`` runs on centred data, all sharing every pass over it
        (:func:`~daskmeans.kmeans.lloyd_many`); per model, the best result (with its labels)
        and its initial centres. Each run equals the run alone from the same initial centres."""
        shift = 0.0 if offset is None else offset
        owner = [j for j, m in enumerate(models) for _ in range(m._n_init)]
        states = _resume_states(resume, len(owner), offset)
        if states is not None:
            starts = [np.asarray(st["init"], dtype=np.float64) for st in states]
        else:
            starts = []
            for m, init in zip(models, inits):  # each model's runs drawn one after the other from its generator
                rng = check_random_state(m.random_state)
                starts += [m._initial_centers(Xd, init, rng, split_every, sample_weight, shift) for _ in range(m._n_init)]
        report = None
        if on_iteration is not None:
            def report(run_states):
                full = []
                for st, c0 in zip(run_states, starts):
                    st = {**st, "init": c0}
                    if offset is not None:
                        st.update({key: np.asarray(st[key], dtype=np.float64) + offset
                                   for key in ("centers", "centers_prev", "init")})
                    full.append(st)
                on_iteration(full[0] if len(full) == 1 else
                             {"iteration": max(st["iteration"] for st in full), "runs": full})
        results = lloyd_many(
            Xd, starts, max_iter=self.max_iter, tol=tol, metric=self.metric, split_every=split_every,
            on_iteration=report, resume=states, algorithm=algorithm, progress=bool(self.verbose),
            sample_weight=sample_weight,
        )
        out = []
        for j, m in enumerate(models):
            mine = [r for r, o in enumerate(owner) if o == j]
            best = mine[0]
            for r in mine:
                if m._n_init > 1:
                    logger.info("k=%d run %d/%d: inertia %.6g", m.n_clusters, r - mine[0] + 1, m._n_init,
                                results[r].inertia)
                if results[r].inertia < results[best].inertia:
                    best = r
            result = results[best]
            result.labels = predict_labels(Xd, result.centers, self.metric).persist()
            out.append((result, np.asarray(starts[best], dtype=np.float64)))
        return out

    def _initial_centers(self, Xd, init, rng, split_every, sample_weight, shift):
        """One run's initial centres (centred units), drawn from ``rng``."""
        if not (isinstance(init, str) or callable(init)):
            return init - shift
        t_init = time.perf_counter()
        logger.info("initialising %d centres (%s)...", self.n_clusters, init)
        parallel = {"oversampling": float(self.oversampling_factor)}
        if self.init_max_iter is not None:
            parallel["n_rounds"] = int(self.init_max_iter)
        centers0 = init_centers(Xd, self.n_clusters, init, rng, split_every, sample_weight, parallel)
        if init == "uniform":  # uniform in [0, 1]^d in X's units, not the centred ones
            centers0 = centers0 - shift
        logger.info("Initialization complete: initial centres ready in %.1f s", time.perf_counter() - t_init)
        return centers0

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit and return ``labels_`` (a dask array for dask input)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None):
        """Fit and return the distances of X's rows to the centres (validated once)."""
        self._check_params()
        data = self._prepare(X, fitting=True)
        data.X = self._fit(data, sample_weight, None, None)
        return self._transform(data)

    # -- using the fitted model -------------------------------------------------------

    @property
    def _n_features_out(self):
        return self.cluster_centers_.shape[0]

    def _centers(self) -> np.ndarray:
        """The centres in the working units (centred for float data), float64."""
        if np.array_equal(self.cluster_centers_, self._centers_out):
            return self._centers_fit
        c = np.asarray(self.cluster_centers_, dtype=np.float64)  # set by the user after the fit
        return c if self._offset is None else c - self._offset

    def predict(self, X):
        """Nearest learned centre of each row: dask array in, dask array out (lazy); NumPy in, NumPy out."""
        _check_fitted(self)
        data = self._prepare(X, fitting=False)
        labels = predict_labels(data.X, self._centers(), self.metric)
        if data.was_dask:
            return labels
        with one_blas_thread():
            return to_numpy(labels.compute())

    def transform(self, X):
        """Distances ``(n_samples, n_clusters)`` from each row to each centre.

        Euclidean for ``metric="l2"`` (as scikit-learn), Manhattan for "l1",
        ``1 - cos`` for "cosine", in centres' units; float32 when both X (float32 or
        pixels) and the fitted centres are float32, float64 otherwise (as scikit-learn).
        Dask in, dask out (lazy, X's row chunks); NumPy in, NumPy out.
        """
        _check_fitted(self)
        return self._transform(self._prepare(X, fitting=False))

    def _transform(self, data: _Data):
        Xd = data.X
        k = self.n_clusters
        # scikit-learn's rule: float32 only when both X and the fitted centres are float32
        out = np.result_type(X_work(Xd), self.cluster_centers_.dtype)
        xp = namespace(Xd._meta)
        D = Xd.map_blocks(
            _distances_block, self._centers(), scale=pixel_scale(Xd.dtype), metric=self.metric, squared=False,
            out_dtype=out, chunks=(Xd.chunks[0], (k,)), dtype=out, meta=xp.zeros((0, 0), dtype=out),
        )
        if data.was_dask:
            return D
        with one_blas_thread():
            return to_numpy(D.compute())

    def score(self, X, y=None, sample_weight=None):
        """Opposite of the (weighted) k-means objective of X: ``-sum(w * min distance)``.

        Squared Euclidean distances for ``metric="l2"`` (scikit-learn's
        ``score``), L1 distances for "l1", ``1 - cos`` for "cosine"; in centres' units. Any non-negative
        weights are fine here (a weighted sum).
        """
        _check_fitted(self)
        data = self._prepare(X, fitting=False)
        Xd = data.X
        w = self._check_weights(sample_weight, Xd.shape[0])
        xp = namespace(Xd._meta)
        mins = Xd.map_blocks(
            _min_block, self._centers(), scale=pixel_scale(Xd.dtype), metric=self.metric, drop_axis=1,
            dtype=np.float64, meta=xp.zeros((0,), dtype=np.float64),
        )
        with one_blas_thread():
            if w is None:
                return -float(to_numpy(mins.sum().compute()))
            m = to_numpy(mins.compute())
            return -float(np.dot(m, w))

    # -- pickling ---------------------------------------------------------------------

    def __getstate__(self):
        """Labels that live on a cluster (persisted futures) travel as values.

        A model fitted with a distributed Client then loads and predicts in a
        process that has no cluster; dask labels stay dask arrays (same chunks).
        """
        state = dict(super().__getstate__())  # a copy: the live model keeps its own labels
        labels = state.get("labels_")
        if isinstance(labels, da.Array):
            try:
                values = to_numpy(labels.compute())
            except Exception as e:  # the cluster that holds them is gone
                raise InputError(
                    f"cannot pickle this KMeans: its labels_ live on a Dask cluster that cannot be reached ({e}); "
                    "pickle it while its Client is open, or set km.labels_ = None first"
                ) from None
            state["labels_"] = da.from_array(values, chunks=labels.chunks)
        return state


def _resume_states(resume, n_runs: int, offset):
    """The runs' states to continue from (centred units), or None to start afresh.

    One run: ``resume`` is its state; several: ``{"runs": [state, ...]}`` as the
    fit's ``on_iteration`` gave them. A state for another number of runs is refused.
    """
    if resume is None:
        return None
    states = resume.get("runs") if isinstance(resume, dict) and "runs" in resume else [resume]
    if len(states) != n_runs:
        raise InputError(
            f"the resume state holds {len(states)} run(s) but n_init={n_runs}; resume with the n_init that wrote it"
        )
    if offset is None:
        return [dict(st) for st in states]
    return [{**st, **{key: np.asarray(st[key], dtype=np.float64) - offset
                      for key in ("centers", "centers_prev", "init") if key in st}} for st in states]


def _fit_weights(w, k: int):
    """``(keep, weight, fit_w)`` from checked weights: the rows in the fit (None: all), the
    common weight of equal weights (which scales the inertia), or the unequal ones."""
    if w is None:
        return None, 1.0, None
    positive = w > 0
    values = w[positive]
    keep = None
    if not positive.all():  # rows of weight 0 take no part in the fit (they still get a label)
        keep = positive
        if int(keep.sum()) < k:
            raise InputError(
                f"only {int(keep.sum())} samples have a positive sample_weight, fewer than n_clusters={k}; "
                "use fewer clusters or give more samples a weight"
            )
    if values.max() == values.min():
        return keep, float(values[0]), None  # equal weights: the unweighted fit (exact sums), inertia scaled
    return keep, 1.0, values


def _distinct(labels, k: int) -> int:
    """The number of clusters that have rows."""
    if isinstance(labels, np.ndarray):
        return len(np.unique(labels))
    return int(np.count_nonzero(to_numpy(da.bincount(labels, minlength=k).compute())))


def fit_together(models: list, X, sample_weight=None) -> list:
    """Fit several :class:`KMeans` that differ only in ``n_clusters``, sharing every pass over ``X``.

    Each model ends exactly as ``model.fit(X, sample_weight=sample_weight)``
    would leave it (the same initial centres from its own ``random_state``, the
    same iterations), but one task per worker thread and iteration serves all
    of their runs: the data is read once per iteration, not once per model.
    Used by :func:`daskmeans.sweep.sweep`. Returns ``models``.
    """
    models = list(models)
    if not models:
        return models
    first = models[0]
    if not all(isinstance(m, KMeans) for m in models):
        raise InputError("fit_together needs daskmeans.KMeans models, got "
                         + ", ".join(sorted({type(m).__name__ for m in models if not isinstance(m, KMeans)})))
    mine = {key: v for key, v in first.get_params().items() if key != "n_clusters"}
    for m in models:
        other = {key: v for key, v in m.get_params().items() if key != "n_clusters"}
        if repr(other) != repr(mine):
            raise InputError("fit_together needs KMeans models that differ only in n_clusters; fit the others "
                             "one by one")
        m._check_params()
    data = first._prepare(X, fitting=True)
    for m in models[1:]:
        _check_feature_names(m, X, reset=True)
    first._fit(data, sample_weight, None, None, others=models[1:])
    return models
