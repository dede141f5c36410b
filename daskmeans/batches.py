"""Mini-batches on chunked Dask arrays: counter-based draws, windows of rows, one step's totals.

Orchestration for :class:`daskmeans.MiniBatchKMeans`; the math on rows is the
kernels' (:func:`daskmeans.kernels.lloyd_step`, :func:`~daskmeans.kernels.sum_sq`).

Draws. Step ``s`` of a fit takes the rows whose global indices a generator
keyed by ``(key, s)`` alone gives: ``Philox(key, counter=(0, s, purpose, 0))``
(:func:`stream`). Nothing depends on the chunking, the scheduler, the number of
workers or the steps before, so a batch is the same wherever and whenever it is
drawn (a resumed fit draws the same batches as an uninterrupted one).

Windows. Because every batch is known in advance, the rows of the next steps
are read together (:class:`Window`): each chunk that holds some of them is read
once per window, only the rows the batches need are kept (on the worker that
holds the chunk, with a distributed client; in this process otherwise), and
each step then takes its rows from the window. A lazy array (a Zarr store) is
so read once per window, not once per step.

Exact totals. For uint8 pixels a group of rows returns its per-cluster sums,
counts and sum of squared values as integers (exact in float64 whatever their
order); the batch's inertia is computed on the client from these totals, and a
row's label does not depend on the rows measured with it (see
:mod:`daskmeans.kernels`). A step therefore gives bit-identical centres however
its rows are grouped: one group in this process, or one task per chunk on a
cluster. Float data agree to rounding (their sums depend on the order).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import dask
import dask.array as da
import numpy as np
from dask import delayed

from . import kernels
from .backend import namespace, to_numpy
from .graph import blocks as _blocks
from .graph import offsets as _offsets
from .graph import tree_reduce as _tree
from .kmeans import _is_persisted, pixel_scale
from .placement import current_client

#: The purposes of the streams (the third word of Philox's counter).
BATCH, REASSIGN, INIT, VALIDATION = 0, 1, 2, 3
#: Bytes of rows a window holds at most (its steps' batches, duplicates counted).
WINDOW_BYTES = 256 * 2**20
#: The first window's steps; each next window doubles, up to :data:`WINDOW_BYTES`.
FIRST_WINDOW = 4
#: Batch rows per group when a step runs in this process (a group per thread).
GROUP_ROWS = 512

_POOL = None
_POOL_LOCK = threading.Lock()


def stream(key: int, step: int, purpose: int) -> np.random.Generator:
    """The generator of ``(key, step, purpose)``: Philox with ``key`` and counter words ``(0, step, purpose, 0)``.

    Each step's draws start at their own counter, 2**64 blocks from the next
    step's, so no two streams overlap.
    """
    counter = (int(step) << 64) | (int(purpose) << 128)
    return np.random.Generator(np.random.Philox(key=int(key), counter=counter))


def legacy_stream(key: int, step: int, purpose: int) -> np.random.RandomState:
    """:func:`stream` behind scikit-learn's ``RandomState`` interface (for k-means++ and a callable ``init``)."""
    counter = (int(step) << 64) | (int(purpose) << 128)
    return np.random.RandomState(np.random.Philox(key=int(key), counter=counter))


def draw(key: int, step: int, n: int, size: int, cdf: np.ndarray | None = None) -> np.ndarray:
    """Global row indices ``(size,)`` int64 of step ``step``'s batch, drawn with replacement.

    ``cdf``: the running sum of the sample weights (rows drawn in proportion to
    their weight, as scikit-learn's ``choice(n, size, p=w / w.sum())``); None: uniform.
    """
    g = stream(key, step, BATCH)
    if cdf is None:
        return g.integers(0, n, size=size, dtype=np.int64)
    idx = np.searchsorted(cdf, g.random(size) * cdf[-1], side="right")
    return np.minimum(idx, n - 1).astype(np.int64)


def exact(dtype, weights=None, metric: str = "l2") -> bool:
    """Whether totals are exact integers: uint8 rows, unweighted, squared L2."""
    return np.dtype(dtype) == np.uint8 and weights is None and metric == "l2"


# -- the per-group kernel (no dask) ----------------------------------------------------


def group_totals(rows, pos, centers, scale, metric, k, weights=None, need_sq=True):
    """The totals of one group of batch rows under their nearest centres, on the host.

    Parameters
    ----------
    rows : array (m, d) raw values (NumPy or CuPy)
    pos : int array (m,)
        The rows' global indices (their places in the distance tiles).
    centers : array (k, d) in centres' units
    weights : array (m,) or None
        Weighted sums and counts (scikit-learn's ``sample_weight`` in ``partial_fit``).
    need_sq : bool
        Compute the sum of squared values (exact for uint8, for the client's inertia).

    Returns
    -------
    tuple : sums (k, d) float64 raw units, counts (k,) float64, sum of squared
        raw values float64, inertia float64 in centres' units (summed per row).
    """
    xp = namespace(rows)
    if rows.shape[0] == 0:
        return np.zeros((k, rows.shape[1])), np.zeros(k), np.float64(0.0), np.float64(0.0)
    sq = kernels.sum_sq(rows) if need_sq else 0.0
    if weights is not None:
        weights = xp.asarray(weights, dtype=xp.float64)
    _, (sums, counts, inertia, _) = kernels.lloyd_step(
        rows, centers, None, scale=scale, metric=metric, offset=np.asarray(pos, dtype=np.int64), weights=weights,
        sq_total=sq if (need_sq and weights is None) else None)
    return (to_numpy(sums).astype(np.float64), to_numpy(counts).astype(np.float64), np.float64(sq),
            np.float64(to_numpy(inertia)))


def local_totals(fetch, idx, centers, scale, metric, k, need_sq):
    """A batch's totals in this process: fixed groups of :data:`GROUP_ROWS` batch rows, on threads.

    The groups depend on the batch alone (not on the cores), and their totals
    are added in order, so the result does not depend on the number of threads.
    """
    groups = [idx[s : s + GROUP_ROWS] for s in range(0, len(idx), GROUP_ROWS)]

    def one(g):
        return group_totals(fetch(g), g, centers, scale, metric, k, None, need_sq)

    parts = list(_pool().map(one, groups)) if len(groups) > 1 else [one(g) for g in groups]
    return kernels.combine(*parts)


def _pool() -> ThreadPoolExecutor:
    """Threads for a step's groups (the compiled kernels release the GIL): as many as dask's threaded
    scheduler uses (config ``num_workers``, else the cores)."""
    global _POOL
    threads = max(1, int(dask.config.get("num_workers", None) or os.cpu_count() or 1))
    with _POOL_LOCK:
        if _POOL is None or _POOL._max_workers != threads:
            old, _POOL = _POOL, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="daskmeans-batch")
            if old is not None:
                old.shutdown(wait=False)
    return _POOL


def _take(block, local):
    """Rows ``local`` (sorted, unique) of one chunk."""
    xp = namespace(block)
    return xp.take(block, xp.asarray(local), axis=0)


def _window_group(rows, sel, pos, centers, scale, metric, k, need_sq):
    """:func:`group_totals` of ``rows[sel]``: one chunk's part of a batch, where the window's rows live."""
    xp = namespace(rows)
    return group_totals(xp.take(rows, xp.asarray(sel), axis=0), pos, centers, scale, metric, k, None, need_sq)


def _block_group(block, first, centers, scale, metric, k, weights, need_sq):
    return group_totals(block, np.arange(first, first + block.shape[0], dtype=np.int64), centers, scale, metric, k,
                        weights, need_sq)


def batch_inertia(totals, centers, scale: float, exact_totals: bool) -> float:
    """The batch's inertia (before the update) in centres' units.

    From exact totals: ``s^2 SQ - 2 s sum_j c_j . S_j + sum_j n_j |c_j|^2``,
    computed here on the client, so it does not depend on how the rows were
    grouped; otherwise the groups' per-row sums.
    """
    sums, counts, sq, inertia = totals
    if not exact_totals:
        return float(inertia)
    c = np.asarray(centers, dtype=np.float64)
    value = scale * scale * float(sq) - 2 * scale * float(np.einsum("ij,ij->", c, sums)) \
        + float(counts @ np.einsum("ij,ij->i", c, c))
    return max(value, 0.0)


def update(centers: np.ndarray, weight_sums: np.ndarray, totals, scale: float) -> np.ndarray:
    """scikit-learn's counts-based step: each cluster with rows in the batch moves to the
    mean of everything it has seen, ``(c * W + S) / (W + w)``; ``weight_sums`` grows in place.
    Returns the new centres (float64, centres' units)."""
    sums, counts = totals[0], totals[1]
    new = np.array(centers, dtype=np.float64, copy=True)
    hit = counts > 0
    if np.any(hit):
        total = weight_sums[hit] + counts[hit]
        new[hit] = (new[hit] * weight_sums[hit, None] + sums[hit] * scale) * (1.0 / total)[:, None]
        weight_sums[hit] = total
    return new


# -- where the rows are --------------------------------------------------------------------


class Rows:
    """X's row chunks as a fit reads them: their tasks, where each starts, the split of a set of rows.

    Parameters
    ----------
    X : dask array (n, d)
        Rows (uint8 pixels or floats), any chunking, persisted or lazy.
    split_every : int
        Fan-in of the tree reductions.
    """

    def __init__(self, X: da.Array, split_every: int = 8, source=None):
        self.X = X
        self.n, self.d = X.shape
        self.dtype = np.dtype(X.dtype)
        self.scale = pixel_scale(X.dtype)
        self.split_every = int(split_every)
        self.offsets = _offsets(X)
        self.blocks = _blocks(X)
        self.distributed = current_client() is not None
        # rows already in this process: X itself (``source``: the NumPy array X wraps), or its persisted chunks
        self.whole = source if source is not None and not self.distributed else None
        self.local = None
        if self.whole is None and not self.distributed and _is_persisted(X):
            self.local = [to_numpy(b) if isinstance(b, np.ndarray) else b
                          for b in dask.compute(*self.blocks, scheduler="sync")]

    @property
    def in_memory(self) -> bool:
        """Whether every row is in this process's memory already (no window needs reading)."""
        return self.whole is not None or self.local is not None

    def local_rows(self, idx: np.ndarray):
        """Rows ``idx`` (any order, repeats allowed) from the rows in memory, in X's array type."""
        if self.whole is not None:
            return self.whole[idx]
        order = np.argsort(idx, kind="stable")
        s = idx[order]
        parts = [self.local[c][s[a:b] - self.offsets[c]] for c, a, b in self.split(s)]
        xp = namespace(parts[0])
        got = parts[0] if len(parts) == 1 else xp.concat(parts)
        return xp.take(got, xp.asarray(np.argsort(order, kind="stable")), axis=0)

    def split(self, u: np.ndarray):
        """``[(chunk, start, stop)]``: the chunks holding the sorted indices ``u``, and their slice of ``u``."""
        which = np.searchsorted(self.offsets, u, side="right") - 1
        chunks, starts = np.unique(which, return_index=True)
        stops = np.append(starts[1:], len(u))
        return [(int(c), int(a), int(b)) for c, a, b in zip(chunks, starts, stops)]

    def takes(self, u: np.ndarray) -> list:
        """Per chunk holding some of ``u``: ``(chunk, start, stop, delayed rows)``."""
        return [(c, a, b, delayed(_take, pure=True)(self.blocks[c], u[a:b] - self.offsets[c]))
                for c, a, b in self.split(u)]

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) in this process, as NumPy in X's dtype."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.in_memory:
            return to_numpy(self.local_rows(idx))
        u, inverse = np.unique(idx, return_inverse=True)
        parts = dask.compute(*[t[3] for t in self.takes(u)])
        rows = np.concatenate([to_numpy(p) for p in parts]) if parts else np.zeros((0, self.d), self.dtype)
        return rows[inverse]

    def pass_totals(self, centers, metric, k, weights=None):
        """:func:`group_totals` over every chunk (``partial_fit``'s batch is the whole X), tree-reduced."""
        c = delayed(np.asarray(centers, dtype=np.float64))
        need_sq = exact(self.dtype, weights, metric)
        parts = []
        for j, block in enumerate(self.blocks):
            lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
            w = None if weights is None else weights[lo:hi]
            parts.append(delayed(_block_group, pure=True)(block, lo, c, self.scale, metric, k, w, need_sq))
        return dask.compute(_tree(parts, self.split_every))[0]


class Window:
    """The rows of some steps' batches, each chunk read once: ``u`` (sorted global indices) and their rows.

    With a distributed client each chunk's rows stay on the worker that read
    them and a step runs one task per chunk there; otherwise the rows are
    gathered in this process and a step is one call.
    """

    def __init__(self, rows: Rows, batches: list):
        self.src = rows
        self.local = self.parts = None
        if rows.in_memory:
            return
        self.u = np.unique(np.concatenate(batches)) if batches else np.zeros(0, np.int64)
        takes = rows.takes(self.u)
        if rows.distributed:
            self.local = None
            self.parts = [(a, b, d) for (_, a, b, _), d in zip(takes, dask.persist(*[t[3] for t in takes]))]
        else:
            got = dask.compute(*[t[3] for t in takes])
            self.local = np.concatenate([to_numpy(g) for g in got]) if got else np.zeros((0, rows.d), rows.dtype)
            self.parts = None

    def totals(self, idx: np.ndarray, centers, metric: str, k: int):
        """The batch ``idx``'s totals under ``centers`` (see :func:`group_totals`)."""
        need_sq = exact(self.src.dtype, None, metric)
        if self.src.in_memory or self.local is not None:
            fetch = self.src.local_rows if self.src.in_memory else (lambda g: self.local[np.searchsorted(self.u, g)])
            return local_totals(fetch, idx, centers, self.src.scale, metric, k, need_sq)
        sel = np.searchsorted(self.u, idx)
        c = delayed(np.asarray(centers, dtype=np.float64))
        parts = []
        for a, b, rows in self.parts:
            mine = np.flatnonzero((sel >= a) & (sel < b))  # this chunk's rows, in batch order
            if mine.size:
                parts.append(delayed(_window_group, pure=True)(rows, sel[mine] - a, idx[mine], c, self.src.scale,
                                                              metric, k, need_sq))
        return dask.compute(_tree(parts, self.src.split_every))[0]

    def rows_at(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the window, in this process (for relocated centres)."""
        if self.src.in_memory:
            return to_numpy(self.src.local_rows(idx))
        sel = np.searchsorted(self.u, idx)
        if self.local is not None:
            return to_numpy(self.local[sel])
        out = np.empty((len(idx), self.src.d), dtype=self.src.dtype)
        want = []
        for a, b, rows in self.parts:
            mine = np.flatnonzero((sel >= a) & (sel < b))
            if mine.size:
                want.append((mine, delayed(_take)(rows, sel[mine] - a)))
        for (mine, _), got in zip(want, dask.compute(*[w[1] for w in want])):
            out[mine] = to_numpy(got)
        return out

    def close(self) -> None:
        self.local = self.parts = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def window_steps(previous: int, remaining: int, batch_bytes: int) -> int:
    """Steps in the next window: double the last one, within :data:`WINDOW_BYTES` and the steps left."""
    cap = max(1, WINDOW_BYTES // max(batch_bytes, 1))
    return int(max(1, min(remaining, cap, max(FIRST_WINDOW, 2 * previous))))


# -- the final pass ----------------------------------------------------------------------


def _final_block(block, first, centers, scale, metric, k, weights, need_sq):
    pos = np.arange(first, first + block.shape[0], dtype=np.int64)
    sq = kernels.sum_sq(block) if need_sq else 0.0
    w = None if weights is None else namespace(block).asarray(weights, dtype=namespace(block).float64)
    labels, (sums, counts, inertia, _) = kernels.lloyd_step(block, centers, None, scale=scale, metric=metric,
                                                            offset=pos, weights=w,
                                                            sq_total=sq if need_sq else None)
    return labels, (to_numpy(sums).astype(np.float64), to_numpy(counts).astype(np.float64), np.float64(sq),
                    np.float64(to_numpy(inertia)))


def labels_inertia(rows: Rows, centers, metric: str, k: int, weights=None):
    """Every row's nearest centre (a persisted dask array with X's row chunks) and the (weighted) inertia.

    One pass; for uint8 pixels the inertia comes from exact totals (see :func:`batch_inertia`).
    """
    c64 = np.asarray(centers, dtype=np.float64)
    c = delayed(c64)
    need_sq = exact(rows.dtype, weights, metric)
    meta = namespace(rows.X._meta).zeros((0,), dtype=np.int32)
    labels, parts = [], []
    for j, block in enumerate(rows.blocks):
        lo, hi = int(rows.offsets[j]), int(rows.offsets[j + 1])
        w = None if weights is None else weights[lo:hi]
        out = delayed(_final_block, nout=2, pure=True)(block, lo, c, rows.scale, metric, k, w, need_sq)
        labels.append(da.from_delayed(out[0], shape=(hi - lo,), dtype=np.int32, meta=meta))
        parts.append(out[1])
    lab = da.concatenate(labels) if len(labels) > 1 else labels[0]
    lab, totals = dask.persist(lab, _tree(parts, rows.split_every))
    totals = dask.compute(totals)[0]
    return lab, batch_inertia(totals, c64, rows.scale, need_sq)
