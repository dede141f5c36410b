"""The scikit-learn estimator :class:`MiniBatchKMeans` on chunked Dask arrays.

scikit-learn's parameters, update rules and attributes (``sklearn.cluster.MiniBatchKMeans``,
1.9.1): each step draws ``batch_size`` rows with replacement, assigns them to
the nearest centre and moves each centre to the mean of every row it has seen
(the counts-based learning rate), relocates the centres that see too few rows,
and stops on scikit-learn's rules (smoothed batch inertia, optional centre
shift). The batches come from a counter-based generator (:mod:`daskmeans.batches`),
so they, and the fitted centres, are the same whatever the chunking, the
scheduler or the number of workers, and a fit resumed from a saved state ends
exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin

from . import batches, params, warm
from . import minibatch_checkpoint as states
from .backend import to_numpy
from .errors import InputError
from .estimator import KMeans, _check_fitted, _finite_block, _init_array, _verbosity, check_parameters
from .kmeans import X_work, _is_persisted, init_centers, one_blas_thread, pixel_scale, tolerance

logger = logging.getLogger("daskmeans")


def _key_of(random_state) -> int:
    """The generator's key: the seed itself; one drawn from a ``RandomState``; fresh entropy for None."""
    if random_state is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    return int(random_state.randint(np.iinfo(np.int32).max))


def relocate(counts, centers, ratio: float, m: int, key: int, step: int, fetch, scale: float) -> int:
    """scikit-learn's relocation of starved centres, in place.

    The centres whose count is below ``ratio`` times the largest (at most half
    the batch's ``m`` rows, the least fed first) move to rows of the batch drawn
    without replacement from step ``step``'s own stream; their counts become the
    smallest count kept. ``fetch(positions)`` returns those rows of the batch (raw
    values). Returns how many centres moved.
    """
    to = counts < ratio * counts.max()
    if to.sum() > 0.5 * m:
        to[np.argsort(counts, kind="stable")[int(0.5 * m):]] = False
    moved = int(to.sum())
    if moved:
        picks = batches.stream(key, step, batches.REASSIGN).choice(m, size=moved, replace=False)
        centers[to] = np.asarray(to_numpy(fetch(picks)), dtype=np.float64).reshape(moved, -1) * scale
    if (~to).any():
        counts[to] = counts[~to].min()
    return moved


def _mini_batch_step(X, sample_weight, centers, centers_new, weight_sums, key=0, step=0, random_reassign=False,
                     reassignment_ratio=0.01):
    """One step on the in-memory batch ``X`` (scikit-learn's private ``_mini_batch_step``, for its tests):
    ``centers_new`` and ``weight_sums`` are updated in place; returns the batch's inertia before the update."""
    rows = np.asarray(X.toarray() if hasattr(X, "toarray") else X.compute() if isinstance(X, da.Array) else X)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if w is not None and np.all(w == 1):
        w = None
    scale = pixel_scale(rows.dtype)
    exact = batches.exact(rows.dtype, w)
    totals = batches.group_totals(rows, np.arange(len(rows)), centers, scale, "l2", len(centers), w, exact)
    inertia = batches.batch_inertia(totals, centers, scale, exact)
    new = batches.update(centers, weight_sums, totals, scale)
    if random_reassign and reassignment_ratio > 0:
        relocate(weight_sums, new, reassignment_ratio, len(rows), key, step, lambda picks: rows[picks], scale)
    centers_new[...] = new
    return inertia


class MiniBatchKMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """Mini-batch k-means on chunked Dask arrays (NumPy or CuPy blocks), scikit-learn's API.

    The same parameters, update rules and attributes as
    ``sklearn.cluster.MiniBatchKMeans``; X may be a dask array that does not fit
    in memory: a step reads only its batch's rows (the rows of several steps
    are read together, each chunk once, see :mod:`daskmeans.batches`), and the
    labels and inertia after the fit take one more pass.

    Parameters
    ----------
    n_clusters : int, default 8
    init : {"k-means++", "k-means||", "random", "uniform"}, callable, array (n_clusters, n_features), \
fitted model or run folder, default "k-means++"
        Computed on ``init_size`` rows drawn at random (scikit-learn's rule).
        An array is in the centres' units (pixels in [0, 1] for uint8 data). A
        fitted :class:`~daskmeans.KMeans` or :class:`MiniBatchKMeans` (or the
        folder of a finished run) starts from its centres, in their order.
    max_iter : int, default 100
        At most ``max_iter * n_samples // batch_size`` steps.
    batch_size : int, default 1024
        Rows per step (drawn with replacement, in proportion to ``sample_weight``).
    verbose : int, default 0
        1 or more: a line per step, on stdout unless the application already
        shows the 'daskmeans' log.
    compute_labels : bool, default True
        Label every row and compute the inertia after the fit (one more pass).
    random_state : int, RandomState or None
        The key of the batches' generator (None: fresh entropy, kept in the
        fitted model so that its fit can be resumed).
    tol : float, default 0.0
        Stop when the squared centre shift of a step is <= ``tol * mean(var(X, axis=0))``
        (scikit-learn's rule; > 0 costs one pass over X for the variances).
    max_no_improvement : int or None, default 10
        Stop after this many steps without a lower smoothed batch inertia.
    init_size : int or None
        Rows to initialise on (None: ``3 * batch_size``, at least ``3 * n_clusters``).
    n_init : "auto" or int, default "auto"
        Initialisations, each on its own ``init_size`` rows; the one of lowest
        inertia on ``init_size`` other rows wins. "auto": 3 for "random" and a
        callable, 1 otherwise (scikit-learn's rule).
    reassignment_ratio : float, default 0.01
        Centres that saw fewer rows than this fraction of the busiest one move
        to random rows of the batch (their id stays, their centre jumps).
    chunk_size : int or None
        Rows per chunk when NumPy arrays are given (dask arrays keep theirs).

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features)
        float32 for uint8 pixels (scaled to [0, 1]) and float32 data, float64 otherwise.
    labels_ : dask array or ndarray (n_samples,) int32
        With ``compute_labels``: every row's nearest centre (of the data of the last
        ``fit``, or of the last ``partial_fit`` batch).
    inertia_ : float
        With ``compute_labels``, the (weighted) inertia of those rows; otherwise the
        smoothed batch inertia times the sum of the weights (scikit-learn's).
    n_iter_ : int
        Passes over the data started: ``ceil(n_steps_ * batch_size / n_samples)``.
    n_steps_ : int
        Steps (batches) processed, ``partial_fit`` calls included.
    converged_ : bool
        Whether ``fit`` stopped on a rule before its last step.
    init_centers_ : ndarray (n_clusters, n_features) float64
        The initial centres, in centres' units.
    history_ : list of dict
        Per step: ``step``, ``batch_inertia`` (per row), ``ewa_inertia``,
        ``reassigned``, ``seconds``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
    """

    _parameter_constraints: dict = params.sklearn_constraints(params.MINIBATCH)
    #: The distance (squared Euclidean); predict, transform and score read it.
    metric = "l2"

    def __init__(self, n_clusters=8, *, init="k-means++", max_iter=100, batch_size=1024, verbose=0,
                 compute_labels=True, random_state=None, tol=0.0, max_no_improvement=10, init_size=None,
                 n_init="auto", reassignment_ratio=0.01, chunk_size=None):
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.verbose = verbose
        self.compute_labels = compute_labels
        self.random_state = random_state
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.n_init = n_init
        self.reassignment_ratio = reassignment_ratio
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # densified, as KMeans
        tags.input_tags.allow_nan = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # KMeans's: the same input rules, predict/transform/score and pickling
    _prepare = KMeans._prepare
    _check_weights = staticmethod(KMeans._check_weights)
    _centers = KMeans._centers
    _n_features_out = KMeans._n_features_out
    _transform = KMeans._transform
    predict = KMeans.predict
    transform = KMeans.transform
    score = KMeans.score

    def __getstate__(self):
        """Labels that live on a cluster travel as values (see :meth:`daskmeans.KMeans.__getstate__`)."""
        state = dict(super().__getstate__())
        labels = state.get("labels_")
        if isinstance(labels, da.Array):
            try:
                values = to_numpy(labels.compute())
            except Exception as e:  # the cluster that holds them is gone
                raise InputError(f"cannot pickle this MiniBatchKMeans: its labels_ live on a Dask cluster that "
                                 f"cannot be reached ({e}); pickle it while its Client is open, or set "
                                 "labels_ = None first") from None
            state["labels_"] = da.from_array(values, chunks=labels.chunks)
        return state

    # -- validation ---------------------------------------------------------------------

    def _check_params(self):
        check_parameters(self, params.MINIBATCH)

    def _check_params_vs_input(self, n: int) -> None:
        """scikit-learn's: ``_batch_size``, ``_init_size`` (with its warning) and ``_n_init``."""
        k = self.n_clusters
        if n < k:
            raise InputError(f"n_samples={n} should be >= n_clusters={k}; use fewer clusters or more samples")
        self._batch_size = min(int(self.batch_size), n)
        init_size = self.init_size
        if init_size is None:
            init_size = 3 * self._batch_size
            if init_size < k:
                init_size = 3 * k
        elif init_size < k:
            warnings.warn(f"init_size={init_size} should be larger than n_clusters={k}. Setting it to "
                          "min(3*n_clusters, n_samples)", RuntimeWarning, stacklevel=3)
            init_size = 3 * k
        self._init_size = min(init_size, n)
        self._n_init = params.n_init_for(self.n_init, self.init, default=3)
        explicit = warm.is_source(self.init) or not (isinstance(self.init, str) or callable(self.init))
        if explicit and self._n_init != 1:
            warnings.warn(f"Explicit initial center position passed: performing only one init in MiniBatchKMeans "
                          f"instead of n_init={self._n_init}.", RuntimeWarning, stacklevel=3)
            self._n_init = 1

    def _resolve_init(self, d: int, pixels: bool):
        """The method's name, the callable, or the initial centres ``(k, d)`` float64 (an array or a warm start)."""
        init = self.init
        if warm.is_source(init):
            return warm.centres(init, self.n_clusters, d, pixels)
        if isinstance(init, str):
            return str(init)
        if callable(init):
            return init
        return _init_array(to_numpy(init) if hasattr(init, "shape") else init, self.n_clusters, d)

    def _rows(self, data) -> batches.Rows:
        Xd = data.X
        given = data.given
        if not data.pixels and isinstance(given, da.Array):  # NumPy input was checked already
            if _is_persisted(Xd):  # in memory: one check now keeps the steps reading the chunks as they are
                if not bool(da.isfinite(Xd).all().compute()):
                    raise InputError("Input X contains NaN or infinity; k-means needs finite values: drop or "
                                     "impute them")
            else:  # read lazily: each chunk is checked as it is read
                Xd = Xd.map_blocks(_finite_block, dtype=Xd.dtype, meta=Xd._meta)
        source = None  # NumPy input: its rows are gathered from the array itself, without copying it
        if isinstance(given, np.ndarray) and given.dtype == Xd.dtype:
            source = given.reshape(Xd.shape)
        return batches.Rows(Xd, int(params.default("split_every") or 8), source)

    # -- fit ----------------------------------------------------------------------------------

    def fit(self, X, y=None, sample_weight=None, *, on_iteration=None, resume=None):
        """Compute the centres from mini-batches of ``X`` (n_samples, n_features) or images (n, h, w, c).

        Parameters
        ----------
        X : array-like, dask array or CuPy array
        y : ignored
        sample_weight : array-like (n_samples,) or None
            Rows are drawn in proportion to their weight (scikit-learn's rule);
            the weights also weigh the initialisation and the inertia.
        on_iteration : callable(state dict) or None
            Called after every step with the fit's state (:meth:`get_state`'s),
            enough to resume exactly; it must not modify it.
        resume : dict or None
            A state given to ``on_iteration`` (or saved with
            :func:`daskmeans.minibatch_checkpoint.save`): the fit continues after
            its step and ends as the uninterrupted fit would.
        """
        self._check_params()
        t0 = time.perf_counter()
        data = self._prepare(X, fitting=True)
        n, d = data.X.shape
        self._check_params_vs_input(n)
        w = self._check_weights(sample_weight, n)
        init = self._resolve_init(d, data.pixels) if resume is None else None
        with one_blas_thread(), _verbosity(self.verbose):
            rows = self._rows(data)
            self._tol = tolerance(rows.X, float(self.tol), rows.scale, rows.split_every) if self.tol else 0.0
            if resume is None:
                self._key = _key_of(self.random_state)
                self._start(self._best_init(rows, init, w, data.given), n)
            else:
                self._restore(resume, n, d, data.pixels)
            self._loop(rows, w, on_iteration)
            self._finish(rows, data, w)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _init_once(self, rows, init, w, given, run: int) -> np.ndarray:
        """Initial centres of run ``run`` on its ``init_size`` rows (scikit-learn's ``_init_centroids``)."""
        if isinstance(init, np.ndarray):
            return init.copy()
        rs = batches.legacy_stream(self._key, run, batches.INIT)
        k, n = self.n_clusters, rows.n
        if self._init_size < n:
            idx = rs.randint(0, n, self._init_size)
            sub = rows.gather(idx)
            Xs, w_sub, given = da.from_array(sub, chunks=sub.shape, name=False), None if w is None else w[idx], sub
        else:
            Xs, w_sub = rows.X, w
        if callable(init):
            c = init(given, k, random_state=rs)
            c = c.compute() if isinstance(c, da.Array) else c
            return _init_array(to_numpy(c) if hasattr(c, "shape") else c, k, rows.d,
                               "returned by init(X, n_clusters, random_state)")
        return np.asarray(init_centers(Xs, k, init, rs, rows.split_every, w_sub), dtype=np.float64)

    def _best_init(self, rows, init, w, given) -> np.ndarray:
        """The initialisation of lowest inertia on ``init_size`` other rows, out of ``_n_init``."""
        t0 = time.perf_counter()
        logger.info("initialising %d centres (%s) on %d rows...", self.n_clusters,
                    init if isinstance(init, str) else type(init).__name__, self._init_size)
        best, best_inertia = None, None
        valid = None
        for r in range(self._n_init):
            centers = self._init_once(rows, init, w, given, r)
            if self._n_init > 1:
                if valid is None:
                    idx = batches.stream(self._key, 0, batches.VALIDATION).integers(0, rows.n, self._init_size)
                    valid = (idx, rows.gather(idx), None if w is None else w[idx])
                inertia = self._inertia_of(valid, centers, rows)
                logger.info("Inertia for init %d/%d: %.6g", r + 1, self._n_init, inertia)
                if best_inertia is not None and inertia >= best_inertia:
                    continue
                best_inertia = inertia
            best = centers
        logger.info("Initialization complete: initial centres ready in %.1f s", time.perf_counter() - t0)
        return best

    def _inertia_of(self, valid, centers, rows) -> float:
        idx, sub, w = valid
        exact = batches.exact(rows.dtype, w, self.metric)
        tot = batches.group_totals(sub, idx, centers, rows.scale, self.metric, self.n_clusters, w, exact)
        return batches.batch_inertia(tot, centers, rows.scale, exact)

    def _start(self, centers: np.ndarray, n: int) -> None:
        """A fresh fit's state: the initial centres, no rows seen."""
        self.init_centers_ = np.array(centers, dtype=np.float64)
        self._centers_now = self.init_centers_.copy()
        self._counts = np.zeros(self.n_clusters, dtype=np.float64)
        self._ewa_inertia = self._ewa_inertia_min = None
        self._no_improvement = self._n_since_last_reassign = 0
        self.n_steps_ = 0
        self.converged_ = False
        self.history_ = []
        self._n_samples_fit = n

    def _loop(self, rows, w, on_iteration) -> None:
        """The steps, a window of batches at a time (:class:`daskmeans.batches.Window`)."""
        n, b = rows.n, self._batch_size
        n_steps = (int(self.max_iter) * n) // b
        self._n_steps_planned = n_steps
        cdf = None if w is None or np.all(w == w[0]) else np.cumsum(w)
        exact = batches.exact(rows.dtype, None, self.metric)
        length = 0
        while self.n_steps_ < n_steps and not self.converged_:
            s0 = self.n_steps_
            length = batches.window_steps(length, n_steps - s0, b * rows.d * rows.dtype.itemsize)
            draws = [batches.draw(self._key, s0 + i, n, b, cdf) for i in range(length)]
            with batches.Window(rows, draws) as win:
                for idx in draws:
                    self._step(win, idx, n_steps, n, exact)
                    if on_iteration is not None:
                        on_iteration(self.get_state())
                    if self.converged_:
                        break

    def _step(self, win, idx, n_steps: int, n: int, exact: bool) -> None:
        """One step: assign the batch, move the centres, relocate the starved ones, check convergence."""
        t0 = time.perf_counter()
        step = self.n_steps_
        reassign = self._random_reassign()
        old = self._centers_now
        totals = win.totals(idx, old, self.metric, self.n_clusters)
        inertia = batches.batch_inertia(totals, old, win.src.scale, exact)
        new = batches.update(old, self._counts, totals, win.src.scale)
        moved = 0
        if reassign and self.reassignment_ratio > 0:
            moved = self._reassign(new, len(idx), step, lambda picks: win.rows_at(idx[picks]), win.src.scale)
        diff = float(((new - old) ** 2).sum()) if self._tol > 0 else 0.0
        self._centers_now = new
        self.n_steps_ = step + 1
        self.converged_ = self._mini_batch_convergence(step, n_steps, n, diff, inertia)
        self.history_.append({"step": step + 1, "batch_inertia": inertia / self._batch_size,
                              "ewa_inertia": self._ewa_inertia, "reassigned": moved,
                              "seconds": time.perf_counter() - t0})
        if (step + 1) * self._batch_size // n > step * self._batch_size // n and not self.verbose:
            logger.info("pass %d over the data: step %d/%d, smoothed batch inertia %.6g", (step + 1) * self._batch_size
                        // n, step + 1, n_steps, (self._ewa_inertia or inertia / self._batch_size) * n)

    def _random_reassign(self) -> bool:
        """scikit-learn's: relocate every ``10 * n_clusters`` rows seen, and whenever a cluster has none yet."""
        self._n_since_last_reassign += self._batch_size
        if (self._counts == 0).any() or self._n_since_last_reassign >= 10 * self.n_clusters:
            self._n_since_last_reassign = 0
            return True
        return False

    def _reassign(self, centers, m: int, step: int, fetch, scale: float) -> int:
        moved = relocate(self._counts, centers, self.reassignment_ratio, m, self._key, step, fetch, scale)
        if moved:
            log = logger.info if self.verbose else logger.debug
            log("[MiniBatchKMeans] Reassigning %d cluster centers.", moved)
        return moved

    def _mini_batch_convergence(self, step, n_steps, n_samples, diff, batch_inertia) -> bool:
        """scikit-learn's early stopping: centre shift within ``tol``, or no better smoothed inertia lately."""
        batch_inertia /= self._batch_size
        step += 1
        log = logger.info if self.verbose else logger.debug
        if step == 1:  # its inertia is the initialisation's
            log("Minibatch step %d/%d: mean batch inertia: %s", step, n_steps, batch_inertia)
            return False
        if self._ewa_inertia is None:
            self._ewa_inertia = batch_inertia
        else:
            alpha = min(self._batch_size * 2.0 / (n_samples + 1), 1)
            self._ewa_inertia = self._ewa_inertia * (1 - alpha) + batch_inertia * alpha
        log("Minibatch step %d/%d: mean batch inertia: %s, ewa inertia: %s", step, n_steps, batch_inertia,
            self._ewa_inertia)
        if self._tol > 0.0 and diff <= self._tol:
            logger.info("Converged (small centers change) at step %d/%d", step, n_steps)
            return True
        if self._ewa_inertia_min is None or self._ewa_inertia < self._ewa_inertia_min:
            self._no_improvement = 0
            self._ewa_inertia_min = self._ewa_inertia
        else:
            self._no_improvement += 1
        if self.max_no_improvement is not None and self._no_improvement >= self.max_no_improvement:
            logger.info("Converged (lack of improvement in inertia) at step %d/%d", step, n_steps)
            return True
        return False

    def _finish(self, rows, data, w) -> None:
        """``n_iter_``, the centres in the output dtype, and (``compute_labels``) every row's label and the inertia."""
        n = rows.n
        self.n_iter_ = int(math.ceil(self.n_steps_ * self._batch_size / n))
        if self.compute_labels:
            self._set_labels(rows, data, w)
        else:
            ewa = self._ewa_inertia
            if ewa is None:  # a single step: its own batch inertia
                ewa = self.history_[-1]["batch_inertia"] if self.history_ else 0.0
            self.inertia_ = float(ewa) * (n if w is None else float(w.sum()))
        self._set_centers(rows, data.pixels)
        self.tol_ = self._tol

    def _set_labels(self, rows, data, w) -> None:
        labels, inertia = batches.labels_inertia(rows, self._centers_now, self.metric, self.n_clusters, w)
        self.labels_ = labels if data.was_dask else to_numpy(labels.compute())
        self.inertia_ = float(inertia)

    def _set_centers(self, rows, pixels: bool) -> None:
        """The fitted attributes that predict/transform/score read (as :class:`~daskmeans.KMeans` sets them)."""
        self._pixels = bool(pixels)
        self._offset = None  # mini-batch fits are not centred (scikit-learn's MiniBatchKMeans neither)
        self._centers_fit = np.array(self._centers_now, dtype=np.float64)
        self.cluster_centers_ = self._centers_fit.astype(X_work(rows.X))
        self._centers_out = self.cluster_centers_.copy()
        self.n_features_in_ = rows.d

    # -- partial_fit --------------------------------------------------------------------------

    def partial_fit(self, X, y=None, sample_weight=None):
        """One step on the batch ``X`` (all of its rows): scikit-learn's ``partial_fit``.

        The first call initialises from ``init_size`` of its rows. ``X`` may be a
        dask array (new chunks of a growing store): the step's assignment and
        sums run where its chunks are. :meth:`save` / :meth:`load` keep the
        state between calls (or processes): the next call continues exactly.
        """
        self._check_params()
        has_centers = hasattr(self, "cluster_centers_")
        data = self._prepare(X, fitting=not has_centers)
        n, d = data.X.shape
        w = self._check_weights(sample_weight, n)
        with one_blas_thread(), _verbosity(self.verbose):
            rows = self._rows(data)
            if not has_centers:
                self._check_params_vs_input(n)
                self._key = _key_of(self.random_state)
                self._tol = 0.0
                self._start(self._init_once(rows, self._resolve_init(d, data.pixels), w, data.given, 0), n)
            old = self._centers_now
            reassign = self._random_reassign()
            totals = rows.pass_totals(old, self.metric, self.n_clusters, w)
            new = batches.update(old, self._counts, totals, rows.scale)
            if reassign and self.reassignment_ratio > 0:
                self._reassign(new, n, self.n_steps_, rows.gather, rows.scale)
            self._centers_now = new
            if self.compute_labels:
                self._set_labels(rows, data, w)
            self.n_steps_ += 1
            self._set_centers(rows, data.pixels)
        return self

    # -- state ----------------------------------------------------------------------------------

    def get_state(self) -> dict:
        """What continues this model exactly (a fit after a step, or between ``partial_fit`` calls).

        Arrays are the model's own (not copies): save them, do not modify them.
        """
        _check_fitted_state(self)
        return {"step": int(self.n_steps_), "centers": self._centers_now, "counts": self._counts.copy(),
                "init": self.init_centers_, "since_reassign": int(self._n_since_last_reassign),
                "ewa": self._ewa_inertia, "ewa_min": self._ewa_inertia_min,
                "no_improvement": int(self._no_improvement), "converged": bool(self.converged_),
                "key": int(self._key), "batch_size": int(self._batch_size), "init_size": int(self._init_size),
                "n_init": int(self._n_init), "n_samples": int(self._n_samples_fit),
                "n_features": int(self._centers_now.shape[1]), "history": self.history_,
                "n_steps": getattr(self, "_n_steps_planned", None)}

    def _restore(self, state: dict, n: int, d: int, pixels: bool) -> None:
        """Continue from ``state`` (:meth:`get_state`'s); it must belong to this data and these settings."""
        state = states.check_state(state)
        k = self.n_clusters
        mine = {"n_clusters": k, "n_features": d, "batch_size": self._batch_size, "n_samples": n}
        theirs = {"n_clusters": state["centers"].shape[0], "n_features": state["n_features"],
                  "batch_size": state["batch_size"], "n_samples": state["n_samples"]}
        diff = [f"{key} {theirs[key]} (state) vs {mine[key]}" for key in mine if theirs[key] != mine[key]]
        if diff:
            raise InputError(f"the resume state belongs to another fit ({', '.join(diff)}); resume with the data and "
                             "settings that wrote it, or fit afresh")
        self._progress_from(state)
        logger.info("resuming the mini-batch fit after step %d%s", self.n_steps_, " (converged)" if self.converged_
                    else "")

    def save(self, path) -> Path:
        """Write this model's state, parameters and fitted centres to ``path`` (``.npz``, atomically).

        :meth:`load` gives back a model whose ``partial_fit``, ``predict`` and
        ``transform`` continue exactly; no pickle is involved.
        """
        _check_fitted(self)
        plain = (bool, int, float, str, type(None))  # a RandomState, an array or a model init is not kept
        meta = {"params": {k: v if isinstance(v, plain) else None for k, v in self.get_params(deep=False).items()
                           if k != "init"},
                "init": self.init if isinstance(self.init, str) else None, "pixels": self._pixels,
                "dtype": str(self.cluster_centers_.dtype), "n_iter": int(getattr(self, "n_iter_", 0)),
                "inertia": float(getattr(self, "inertia_", float("nan"))), "tol": float(self._tol)}
        return states.save(path, self.get_state(), model=meta)

    @classmethod
    def load(cls, path) -> MiniBatchKMeans:
        """A model saved by :meth:`save` (labels are not kept: predict them again)."""
        state = states.load(path)
        if state is None:
            raise InputError(f"{path}: no such file; pass the path a MiniBatchKMeans was saved to")
        meta = state.get("model")
        if not meta:
            raise InputError(f"{path}: a fit's checkpoint, not a saved model; resume it with fit(X, resume=...)")
        params_ = dict(meta["params"])
        if meta.get("init"):
            params_["init"] = meta["init"]
        m = cls(**params_)
        m._batch_size, m._init_size, m._n_init, m._tol = state["batch_size"], state["init_size"], state["n_init"], \
            meta["tol"]
        m._restore_fitted(state, meta)
        return m

    def _progress_from(self, state: dict) -> None:
        """The step, centres, counts and convergence monitors of a (checked) state."""
        self._start(state["init"], state["n_samples"])
        self._key = state["key"]
        self._centers_now = np.array(state["centers"], dtype=np.float64)
        self._counts = np.array(state["counts"], dtype=np.float64)
        self._n_since_last_reassign = state["since_reassign"]
        self._ewa_inertia, self._ewa_inertia_min = state["ewa"], state["ewa_min"]
        self._no_improvement = state["no_improvement"]
        self.n_steps_, self.converged_ = state["step"], state["converged"]
        self.history_ = list(state["history"])

    def _restore_fitted(self, state: dict, meta: dict) -> None:
        self._progress_from(state)
        self.n_iter_, self.inertia_ = meta["n_iter"], meta["inertia"]
        self._pixels, self._offset = bool(meta["pixels"]), None
        self._centers_fit = self._centers_now.copy()
        self.cluster_centers_ = self._centers_fit.astype(np.dtype(meta["dtype"]))
        self._centers_out = self.cluster_centers_.copy()
        self.n_features_in_ = state["n_features"]


def _check_fitted_state(model) -> None:
    if not hasattr(model, "_centers_now"):
        raise InputError(f"this {type(model).__name__} has no state yet; call fit or partial_fit first")
