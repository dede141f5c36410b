"""k-means on chunked Dask arrays: initialisation, the Lloyd loop, prediction.

Orchestration only: the math on one block lives in :mod:`daskmeans.kernels`.
Each Lloyd iteration maps :func:`~daskmeans.kernels.lloyd_step` over the row
blocks, keeps each block's labels on the workers (per-chunk state, used to count
changed labels), tree-reduces the partial sums and counts, and brings only the
k x d sums, k counts, inertia and changed count to the client: one small compute
per iteration, and a graph that does not grow across iterations.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state
from dask import delayed

from . import algorithms, kernels
from .backend import namespace, to_numpy
from .errors import InputError
from .graph import blocks as _blocks
from .graph import host as _host
from .graph import offsets as _offsets
from .graph import tree_reduce as _tree
from .algorithms.base import many_group, merged, with_weights
from .placement import Placement, current_client
from .progress import bar as progress_bar
from .rows import as_rows, one_blas_thread, pixel_scale
from .init_parallel import kmeans_parallel

logger = logging.getLogger("daskmeans")

_METRICS = ("l2", "l1", "cosine")
_ALGORITHMS = ("lloyd", "hamerly")


# -- helpers ------------------------------------------------------------------------


def tolerance(X: da.Array, tol: float, scale: float, split_every: int = 8, metric: str = "l2") -> float:
    """scikit-learn's tolerance: ``tol * mean(var(X, axis=0))``, from exact sums
    (for ``metric="cosine"``, of the rows scaled to norm 1: the centres' space)."""
    if tol == 0:
        return 0.0
    unit = metric == "cosine"
    parts = [delayed(kernels.moments)(b, unit) for b in _blocks(X)]
    n, s, ss = dask.compute(delayed(_host)(_tree(parts, split_every)))[0]
    n = float(n)
    mean = s / n
    var = np.maximum(ss / n - mean * mean, 0.0) * (1.0 if unit else scale * scale)
    return float(np.mean(var) * tol)


# -- initialisation -----------------------------------------------------------------


def kmeans_plusplus(X, n_clusters: int, random_state, *, n_local_trials=None, split_every=8, sample_weight=None):
    """Greedy k-means++ on a dask array, the same draws as scikit-learn's.

    Mirrors ``sklearn.cluster.kmeans_plusplus``: the same random numbers are
    drawn in the same order, so for the same ``random_state`` it picks the same
    rows (up to floating-point ties). Per-row distances to the chosen centres
    stay on the workers (per-chunk state); each new centre costs two small
    computes (locate the sampled rows, then score the candidates).

    Returns
    -------
    centers : ndarray (k, d) float64 in centres' units
    indices : ndarray (k,) int64, the rows chosen
    """
    X = as_rows(X)
    with one_blas_thread():
        return _kmeans_plusplus(X, n_clusters, random_state, n_local_trials, split_every, sample_weight)


#: Data up to this size, in memory on dask's threads, runs k-means++'s kernels directly on its
#: chunks: the same calls on the same blocks, without 2k graph computes (7 ms each on the thread
#: pool, measured: half of a 2,000-image fit).
EAGER_INIT_BYTES = 64 * 2**20


class _Lazy:
    """k-means++'s steps as dask tasks over the chunks (any size, any scheduler)."""

    def __init__(self, X):
        self.blocks = _blocks(X)

    @staticmethod
    def call(fn, *args, nout=None, **kw):
        return delayed(fn, nout=nout)(*args, **kw)

    @staticmethod
    def const(value):
        return delayed(value)

    @staticmethod
    def persist(*lists):
        return dask.persist(*lists)

    @staticmethod
    def values(obj):
        return dask.compute(obj)[0]


class _Eager:
    """The same steps called directly on chunks already in this process's memory."""

    def __init__(self, X):
        self.blocks = list(dask.compute(*_blocks(X), scheduler="sync"))

    @staticmethod
    def call(fn, *args, nout=None, **kw):
        return fn(*args, **kw)

    @staticmethod
    def const(value):
        return value

    @staticmethod
    def persist(*lists):
        return lists

    @staticmethod
    def values(obj):
        return obj


def _kmeans_plusplus(X, n_clusters, random_state, n_local_trials, split_every, sample_weight=None):
    """See :func:`kmeans_plusplus`; ``sample_weight`` (n,) float64 or None weighs the draws as scikit-learn's."""
    eager = X.nbytes <= EAGER_INIT_BYTES and current_client() is None and _is_persisted(X)
    run = _Eager(X) if eager else _Lazy(X)
    return _kmeans_plusplus_loop(X, run, n_clusters, random_state, n_local_trials, sample_weight)


def _kmeans_plusplus_loop(X, run, n_clusters, random_state, n_local_trials, sample_weight):
    rng = check_random_state(random_state)
    n, d = X.shape
    scale = pixel_scale(X.dtype)
    blocks = run.blocks
    sizes = np.asarray(X.chunks[0])
    offsets = _offsets(X)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    wb = [None if w is None else w[o : o + s] for o, s in zip(offsets, sizes)]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))

    centers = np.empty((n_clusters, d), dtype=np.float64)
    indices = np.full(n_clusters, -1, dtype=np.int64)
    first = int(rng.choice(n, p=np.full(n, 1.0 / n) if w is None else w / w.sum()))
    indices[0] = first
    centers[0] = to_numpy(X[first].compute()).astype(np.float64).reshape(-1) * scale

    c0 = run.const(centers[:1].copy())
    outs = [run.call(kernels.closest_sq_dist, b, c0, nout=2, scale=scale, weights=wi) for b, wi in zip(blocks, wb)]
    closest, pots = run.persist([o[0] for o in outs], [run.call(_host, o[1]) for o in outs])
    block_pots = np.asarray(run.values(list(pots)), dtype=np.float64)
    current_pot = block_pots.sum()

    nonempty = np.flatnonzero(sizes > 0)
    for c in range(1, n_clusters):
        rand_vals = rng.uniform(size=n_local_trials) * current_pot
        # Which block holds each target: searchsorted over the running block totals.
        cum = np.cumsum(block_pots[nonempty])
        which = nonempty[np.clip(np.searchsorted(cum, rand_vals), None, len(nonempty) - 1)]
        before = np.concatenate([[0.0], cum])[np.searchsorted(nonempty, which)]
        located = {}
        for b in np.unique(which):
            sel = np.flatnonzero(which == b)
            located[int(b)] = (sel, run.call(kernels.locate, blocks[b], closest[b], rand_vals[sel] - before[sel],
                                              wb[b], nout=2))
        results = run.values({b: run.call(_host, v[1]) for b, v in located.items()})
        cand_rows = np.empty((n_local_trials, d), dtype=np.float64)
        cand_ids = np.empty(n_local_trials, dtype=np.int64)
        for b, (sel, _) in located.items():
            local, rows = results[b]
            cand_ids[sel] = offsets[b] + local
            cand_rows[sel] = np.asarray(rows, dtype=np.float64).reshape(len(sel), -1) * scale

        cands = run.const(cand_rows)
        outs = [
            run.call(kernels.candidate_pots, b, cl, cands, nout=2, scale=scale, weights=wi)
            for b, cl, wi in zip(blocks, closest, wb)
        ]
        mins, pots = run.persist([o[0] for o in outs], [run.call(_host, o[1]) for o in outs])
        per_block = np.asarray(run.values(list(pots)), dtype=np.float64).reshape(len(blocks), n_local_trials)
        candidates_pot = per_block.sum(axis=0)
        best = int(np.argmin(candidates_pot))
        current_pot = candidates_pot[best]
        block_pots = per_block[:, best]
        (closest,) = run.persist([run.call(kernels.column, m, best) for m in mins])
        centers[c] = cand_rows[best]
        indices[c] = cand_ids[best]
    return centers, indices


def init_centers(X: da.Array, n_clusters: int, init, random_state, split_every=8, sample_weight=None,
                 parallel: dict | None = None):
    """Initial centres in centres' units: 'k-means++', 'k-means||', 'random', 'uniform', a callable or an array.

    'random': ``n_clusters`` rows of X, scikit-learn's draws
    (``random_state.choice(n, k, replace=False, p=w / w.sum())``, ``w`` ones
    when unweighted); 'uniform': uniform in [0, 1]^d, the original notebook's
    rule; a callable: ``init(X, n_clusters, random_state=random_state)``.

    ``sample_weight`` weighs k-means++'s draws (k-means|| ignores it: a seeding heuristic);
    ``parallel``: k-means||'s keywords (``n_rounds``, ``oversampling``)."""

    d = X.shape[1]
    if isinstance(init, str) and init == "k-means++":
        return _kmeans_plusplus(X, n_clusters, random_state, None, split_every, sample_weight)[0]
    if isinstance(init, str) and init == "k-means||":
        return kmeans_parallel(X, n_clusters, random_state, split_every=split_every, **(parallel or {}))
    if isinstance(init, str) and init == "random":
        rng = check_random_state(random_state)
        n = X.shape[0]
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        seeds = rng.choice(n, size=n_clusters, replace=False, p=w / w.sum())
        order = np.argsort(seeds)  # dask gathers sorted rows; the centres keep the draws' order
        picked = np.empty((n_clusters, d), dtype=np.float64)
        picked[order] = to_numpy(X[seeds[order]].compute()).astype(np.float64).reshape(n_clusters, d)
        return picked * pixel_scale(X.dtype)
    if isinstance(init, str) and init == "uniform":
        # As the original notebook: uniform in [0, 1]^d (pixel scale).
        rng = check_random_state(random_state)
        return rng.uniform(size=(n_clusters, d))
    if callable(init):
        return np.asarray(init(X, n_clusters, random_state=random_state), dtype=np.float64).reshape(n_clusters, d)
    arr = np.asarray(to_numpy(init), dtype=np.float64)
    return arr.reshape(n_clusters, d)


# -- Lloyd ---------------------------------------------------------------------------


@dataclass
class LloydResult:
    centers: np.ndarray  # (k, d) float64, centres' units
    labels: da.Array  # (n,) int32, persisted per chunk
    inertia: float
    n_iter: int
    converged: bool
    strict: bool
    history: list = field(default_factory=list)


def _farthest_group(states, blocks, offsets, shared):
    m = shared["m"]
    parts = [kernels.farthest(b, shared["centers"], off, m, scale=shared["scale"], metric=shared["metric"])
             for b, off in merged(blocks, offsets)]
    return states, kernels.merge_farthest(m, *parts)


def _inertia_group(states, blocks, offsets, shared):
    total = 0.0
    for b, off, w in with_weights(blocks, offsets, shared.get("weights")):
        mind = kernels.assign(b, shared["centers"], shared["scale"], shared["metric"], off)[1]
        total += float(to_numpy(kernels.weigh(namespace(b), mind, w).sum()))
    return states, total


def _relocate_empty(placement, centers_used, sums, counts, empty, scale, metric):
    """scikit-learn's rule: each empty cluster takes the row farthest from its centre.

    The row leaves its old cluster's sums and counts (in place; with sample
    weights, its weighted row and its weight). Rare, so it costs one extra
    (stateless) pass only in the iterations where it happens. When every row
    sits on its centre (more clusters than distinct rows) nothing moves, as in
    scikit-learn (#28055). Returns whether a row moved.
    """
    m = len(empty)
    shared = {"centers": centers_used, "m": m, "scale": scale, "metric": metric}
    dist, idx, rows, labs = placement.run(_farthest_group, shared, None, functools.partial(kernels.merge_farthest, m))
    if not len(idx) or float(np.max(np.asarray(dist))) == 0.0:
        logger.info("%d empty cluster(s) %s left empty: every row sits on its centre (duplicates)", m, empty.tolist())
        return False
    rows = np.asarray(rows, dtype=np.float64).reshape(len(idx), -1)
    if metric == "cosine":  # the sums are of unit rows in fixed point (kernels.unit_sums)
        norms = np.sqrt((rows * rows).sum(axis=1, keepdims=True))
        rows = np.rint(rows / np.where(norms == 0, 1.0, norms) * 2.0**kernels.UNIT_BITS)
    weights = placement.weights
    for j, cluster in enumerate(empty[: len(idx)]):
        old = int(labs[j])
        w = 1 if weights is None else float(weights[int(idx[j])])
        sums[old] -= rows[j] * w
        counts[old] -= w
        sums[cluster] = rows[j] * w
        counts[cluster] = w
    logger.info("%d empty cluster(s) %s relocated to the farthest point(s) %s", m, empty.tolist(), idx.tolist())
    return True


def lloyd(
    X: da.Array,
    centers: np.ndarray,
    *,
    max_iter: int = 300,
    tol: float = 0.0,
    metric: str = "l2",
    split_every: int = 8,
    on_iteration=None,
    resume: dict | None = None,
    algorithm: str = "lloyd",
    persist: bool | None = None,
    progress: bool = False,
    sample_weight: np.ndarray | None = None,
) -> LloydResult:
    """k-means iterations with scikit-learn's convergence rules; the algorithm is pluggable.

    Each iteration: one step of the algorithm (:mod:`daskmeans.algorithms`) over
    the chunks, grouped by worker (:mod:`daskmeans.placement`); relocate empty
    clusters; update the centres; record; check convergence (strict: no label
    changed, else total squared centre shift ``<= tol``, already scaled: see
    :func:`tolerance`); checkpoint. Then a final assignment gives the labels of
    the final centres (equal to the last step's labels when strictly converged).

    Parameters
    ----------
    on_iteration : callable(state dict) or None
        Called after every iteration with ``iteration``, ``centers`` (new),
        ``centers_prev`` (used for that iteration's assignment), ``history``,
        ``converged``, ``strict``: enough to checkpoint and resume exactly.
    resume : dict or None
        A state passed to ``on_iteration`` earlier: the loop continues after
        its iteration; the previous labels are rebuilt from ``centers_prev``, so
        the result equals an uninterrupted run.
    algorithm : {"lloyd", "hamerly", "auto"}
        See :data:`daskmeans.algorithms.ALGORITHMS`; every one gives Lloyd's labels.
    persist : bool or None
        Keep the chunks in memory during the loop (None: as ``X`` is).
    progress : bool
        A progress bar over the iterations (:func:`daskmeans.progress.bar`:
        a widget in Jupyter, a line on a terminal).
    sample_weight : ndarray (n,) float64 or None
        Row weights (scikit-learn's): weighted means and inertia; Lloyd only.
    """
    (result,) = lloyd_many(
        X, [centers], max_iter=max_iter, tol=tol, metric=metric, split_every=split_every,
        on_iteration=None if on_iteration is None else (lambda states: on_iteration(states[0])),
        resume=None if resume is None else [resume], algorithm=algorithm, persist=persist, progress=progress,
        sample_weight=sample_weight,
    )
    # the labels of the final centres (the last step's when strictly converged), per chunk
    with one_blas_thread():
        result.labels = predict_labels(X, result.centers, metric).persist()
    return result


def lloyd_many(
    X: da.Array,
    centers_list: list,
    *,
    max_iter: int = 300,
    tol: float = 0.0,
    metric: str = "l2",
    split_every: int = 8,
    on_iteration=None,
    resume: list | None = None,
    algorithm: str = "lloyd",
    persist: bool | None = None,
    progress: bool = False,
    sample_weight: np.ndarray | None = None,
) -> list[LloydResult]:
    """Several runs (restarts, or several k) of :func:`lloyd` sharing every pass over the data.

    One task per group and iteration serves every run still going: the group
    reads its chunks once and runs each run's step on them in turn
    (:func:`~daskmeans.algorithms.base.many_group`): the same kernel calls, tiles
    and per-chunk state as the run alone, so each result is identical to
    :func:`lloyd` from the same centres. Each run converges (and stops) on its
    own. ``on_iteration`` receives the list of the runs' states, ``resume``
    takes such a list back. The results' ``labels`` are None: compute the
    labels of the run you keep with :func:`predict_labels`.
    """
    scale = pixel_scale(X.dtype)
    wd = X_work(X)
    algorithm = algorithms.resolve(algorithm, X.dtype, metric, backend_name(X), sample_weight is not None)
    resume = list(resume) if resume is not None else [None] * len(centers_list)
    if metric == "cosine":
        centers_list = [unit_rows(c, "initial centres") for c in centers_list]
    loops = [LoopState.begin(c, r, max_iter, wd) for c, r in zip(centers_list, resume)]
    start = min((lp.start for lp in loops), default=max_iter)
    if persist is None:
        persist = _is_persisted(X)
    many = len(loops) > 1
    desc = f"k-means ({algorithm})" + (f" x {len(loops)}" if many else "")
    # one BLAS thread: the labels' arithmetic must not depend on BLAS's thread split (kernels' doc)
    with one_blas_thread(), Placement(X, persist=persist, split_every=split_every, weights=sample_weight) as placement, \
            progress_bar(max(max_iter - start, 0), desc, enabled=progress, unit="iter") as bar:
        algos = [algorithms.ALGORITHMS[algorithm](placement, scale=scale, metric=metric) for _ in loops]
        for i in range(start, max_iter):
            active = [r for r, lp in enumerate(loops) if not lp.converged and lp.start <= i]
            if not active:
                break
            t0 = time.perf_counter()
            used = {r: loops[r].centers.astype(wd) for r in active}
            parts = {r: algos[r].prepare(used[r], loops[r].prev_used, i + 1) for r in active}
            partials = (placement.run(many_group, {"parts": parts}, i + 1) if many
                        else (placement.run(*parts[active[0]], i + 1),))
            for r, partial in zip(active, partials):
                step = algos[r].finish(partial)
                label = f"run {r + 1}/{len(loops)}: " if many else ""
                _advance(loops[r], algos[r], placement, step, used[r], i, tol, scale, metric, X.shape[0], t0, label)
            last = [loops[r].history[-1] for r in active]
            bar.update(1, inertia=f"{min(h['inertia'] for h in last):.6g}", changed=sum(h["changed"] for h in last))
            if on_iteration is not None:
                on_iteration([lp.as_dict() for lp in loops])
        inertias = _final_inertias(placement, loops, wd, scale, metric)
    results = []
    for r, (lp, inertia) in enumerate(zip(loops, inertias)):
        _log_end(lp, tol, f"run {r + 1}/{len(loops)}: " if many else "")
        results.append(LloydResult(centers=lp.centers, labels=None, inertia=float(inertia), n_iter=len(lp.history),
                                   converged=lp.converged, strict=lp.strict, history=lp.history))
    return results


def unit_rows(centers, what: str) -> np.ndarray:
    """``centers`` (k, d) scaled to norm 1 (spherical k-means); a zero row is refused."""
    c = np.asarray(centers, dtype=np.float64)
    norms = np.sqrt((c * c).sum(axis=1))
    if np.any(norms == 0):
        raise InputError(f"{what}: {int(np.sum(norms == 0))} of {len(c)} centres are all zeros and have no "
                         "direction for metric='cosine'; use another init (k-means++, random rows)")
    return c / norms[:, None]


def _final_inertias(placement, loops, wd, scale, metric) -> list:
    """Each run's inertia for its final centres: its last step's when strictly converged
    (the same labels; exact totals for Hamerly), else one pass shared by the others."""
    out = [lp.history[-1]["inertia"] if lp.strict and lp.history else None for lp in loops]
    todo = {r: (_inertia_group, {"centers": lp.centers.astype(wd), "scale": scale, "metric": metric})
            for r, lp in enumerate(loops) if out[r] is None}
    if len(todo) == 1 and len(loops) == 1:
        out[0] = placement.run(*todo[0], None)
    elif todo:
        for r, value in zip(sorted(todo), placement.run(many_group, {"parts": todo}, None)):
            out[r] = value
    return out


def _log_end(loop, tol, label=""):
    n_iter = len(loop.history)
    if loop.converged and loop.strict:
        logger.info("%sConverged at iteration %d: strict convergence.", label, n_iter)
    elif loop.converged:
        logger.info("%sConverged at iteration %d: center shift %.3g within tolerance %.3g.", label, n_iter,
                    loop.history[-1]["shift"] if loop.history else 0.0, tol)
    else:
        logger.info("%sstopped after max_iter=%d iterations without converging", label, n_iter)


@dataclass
class LoopState:
    """What the loop carries from one iteration to the next (and a checkpoint saves).

    ``centers``: the current centres (float64, centres' units); ``prev_used``: the
    centres the last step assigned with (work dtype), from which a group rebuilds
    lost labels; ``history``: one record per iteration.
    """

    centers: np.ndarray
    prev_used: np.ndarray | None = None
    history: list = field(default_factory=list)
    start: int = 0
    converged: bool = False
    strict: bool = False

    @classmethod
    def begin(cls, centers, resume, max_iter, wd):
        if resume is None:
            return cls(np.asarray(centers, dtype=np.float64))
        state = cls(np.asarray(resume["centers"], dtype=np.float64), np.asarray(resume["centers_prev"], dtype=wd),
                    list(resume["history"]), int(resume["iteration"]))
        if resume.get("converged"):  # nothing left but the final assignment
            state.start, state.strict, state.converged = max_iter, bool(resume.get("strict")), True
        return state

    def as_dict(self) -> dict:
        """The state :func:`lloyd`'s ``on_iteration`` receives (and ``resume`` takes back)."""
        return {"iteration": len(self.history), "centers": self.centers,
                "centers_prev": self.prev_used.astype(np.float64), "history": list(self.history),
                "converged": self.converged, "strict": self.strict}


def _advance(loop, algo, placement, step, used, i, tol, scale, metric, n, t0, label=""):
    """Relocate, update, record, converge: iteration ``i + 1`` of one run, after its ``step`` with ``used``."""
    empty = np.flatnonzero(step.counts == 0)
    if empty.size and _relocate_empty(placement, used, step.sums, step.counts, empty, scale, metric):
        algo.invalidate()
    new = loop.centers.copy()
    nz = step.counts > 0
    if metric == "cosine":  # spherical k-means: the mean direction of the cluster's unit rows
        norms = np.sqrt((step.sums * step.sums).sum(axis=1))
        nz &= norms > 0
        new[nz] = step.sums[nz] / norms[nz, None]
    else:
        new[nz] = step.sums[nz] / step.counts[nz, None] * scale
    shift = float(((new - loop.centers) ** 2).sum())
    loop.prev_used, loop.centers = used, new
    loop.history.append(_record(i + 1, step, shift, int(empty.size), time.perf_counter() - t0, n, label))
    # scikit-learn's order: strict convergence first (labels unchanged), then tol.
    if i > 0 and step.changed == 0:
        loop.strict = loop.converged = True
    elif shift <= tol:
        loop.converged = True


def _record(iteration, step, shift, empty, seconds, n, label=""):
    """One line of history (and of the log)."""
    rec = {"iteration": iteration, "inertia": step.inertia, "shift": shift, "changed": step.changed,
           "empty": empty, "seconds": seconds}
    extra = ""
    if step.computed is not None:
        rec["computed"] = step.computed
        extra = f"  ({step.computed / max(n, 1):.0%} of rows measured)"
    logger.info("%sIteration %d, inertia %.6g, shift %.3g, changed %d, %.2fs%s", label, iteration, step.inertia,
                shift, step.changed, seconds, extra)
    return rec


def _is_persisted(X: da.Array) -> bool:
    """Whether every chunk of ``X`` is already in memory (a persisted array's graph holds only its chunks)."""
    return len(X.__dask_graph__()) == X.npartitions


def backend_name(X: da.Array) -> str:
    """'cupy' for CuPy chunks, else 'numpy'."""
    return "cupy" if "cupy" in type(X._meta).__module__ else "numpy"


def X_work(X) -> np.dtype:
    """The dtype the kernels compute in for ``X`` (float64 only for float64 data)."""
    return np.float64 if np.dtype(X.dtype) == np.float64 else np.float32


def _predict_block(block, centers, rows, scale, metric):
    return kernels.assign(block, centers, scale, metric, rows)[0]


def predict_labels(X: da.Array, centers: np.ndarray, metric: str = "l2") -> da.Array:
    """Lazy nearest-centre labels ``(n,)`` int32 with X's row chunks.

    Each block also gets its rows' global indices (lazily, ``da.arange``): a
    row's place in the distance tiles comes from it (see :mod:`daskmeans.kernels`).
    """
    scale = pixel_scale(X.dtype)
    C = da.from_array(np.asarray(centers, dtype=X_work(X)), chunks=-1)
    rows = da.arange(0, X.shape[0], chunks=(X.chunks[0],), dtype=np.int64)
    meta = namespace(X._meta).zeros((0,), dtype=np.int32)
    return da.blockwise(
        _predict_block, "i", X, "ij", C, "kj", rows, "i",
        scale=scale, metric=metric, dtype=np.int32, concatenate=True, meta=meta,
    )
