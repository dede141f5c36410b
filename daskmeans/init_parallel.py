"""k-means|| initialisation (Bahmani et al., "Scalable k-means++", VLDB 2012).

Greedy k-means++ (:func:`daskmeans.kmeans.kmeans_plusplus`) picks one centre
per pass over the data: two small computes per centre, so its cost grows with
k. k-means|| makes a few passes instead, each drawing many candidates at once:

1. one row, drawn uniformly, is the first candidate;
2. for ``n_rounds`` rounds (default 5), every row ``x`` joins the candidates
   independently with probability ``min(1, l * d(x)^2 / phi)``, where ``d(x)``
   is its distance to the nearest candidate so far, ``phi`` the sum of
   ``d(x)^2`` over the data and ``l`` the oversampling factor (default ``2 k``);
   about ``l`` rows join per round;
3. each candidate is weighted by the number of rows nearest to it (a
   tree-reduced count);
4. a weighted greedy k-means++ on the candidates, in NumPy on the client,
   picks the k centres (:func:`weighted_kmeans_plusplus`).

Per-chunk state (each row's distance to the nearest candidate and that
candidate's index) stays on the workers between rounds; each round brings only
the drawn rows and one exact sum to the client.

The result does not depend on the chunking or the scheduler: a row's uniform
draw in a round comes from a counter-based generator (Philox) keyed by the seed
and the round, with the row's global index as the counter; for pixels (small
integers) its distances to the candidates, which are rows too, are integers
computed exactly in float64 (:func:`nearest`); ``phi`` is summed exactly
(integer arithmetic on the float64 mantissas, then rounded once), so no
summation order can move a row across its threshold. Float data use the
work-dtype kernel, whose last bits may depend on a row's position in its
block: the same candidates up to that rounding.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction

import dask
import dask.array as da
import numpy as np
from dask import delayed
from sklearn.utils import check_random_state

from . import kernels
from .backend import namespace, to_numpy
from .graph import blocks as _blocks
from .graph import host as _host
from .graph import offsets as _offsets
from .graph import tree_reduce as _tree
from .rows import as_rows, one_blas_thread, pixel_scale

logger = logging.getLogger("daskmeans")

#: Sampling rounds (Bahmani et al. find 5 enough, far fewer than their O(log phi) bound).
DEFAULT_ROUNDS = 5
#: Candidates expected per round, as a multiple of k (the paper's l = 2k).
DEFAULT_OVERSAMPLING = 2.0
#: Extra rounds allowed when the rounds drew fewer than k candidates (tiny or duplicated data).
_MAX_EXTRA_ROUNDS = 10
#: Row blocks of this many rows per distance product (bounds the (rows, candidates) matrix).
_ROWS = 1024
_SMALL_INTS = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.bool_))


# -- per-row random numbers that do not depend on the chunking --------------------------


def row_uniforms(seed: int, round_: int, offset: int, n: int) -> np.ndarray:
    """Uniforms in [0, 1) for rows ``offset .. offset + n - 1`` of round ``round_``.

    Philox is counter-based: the value of global row ``i`` is a function of
    ``(seed, round_, i)`` only (the first 64-bit output of counter ``i``), so a
    chunk computes its own rows' values without knowing the other chunks.

    Returns
    -------
    ndarray (n,) float64
    """
    bg = np.random.Philox(key=(int(round_) << 64) | (int(seed) & (2**64 - 1)))
    bg.advance(int(offset))
    raw = bg.random_raw(4 * int(n))[::4]  # one counter step (4 outputs) per row
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


# -- exact sums: phi must not depend on the order of the additions ----------------------


def exact_sum(values) -> tuple[int, int]:
    """The exact sum of finite float64 ``values >= 0`` as ``(exponent, integer)``: sum = integer * 2**exponent.

    Each value is ``m * 2**e`` with an integer ``m < 2**53`` (``np.frexp``);
    the mantissas are summed per exponent in int64 halves (exact for up to
    2**36 values), then combined as a Python integer.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[v != 0]
    if v.size == 0:
        return 0, 0
    f, e = np.frexp(v)
    m = (f * 2.0**53).astype(np.int64)  # exact: f has 53 significant bits
    e = e.astype(np.int64) - 53
    order = np.argsort(e, kind="stable")
    e, m = e[order], m[order]
    starts = np.flatnonzero(np.concatenate([[True], e[1:] != e[:-1]]))
    hi = np.add.reduceat(m >> 26, starts)
    lo = np.add.reduceat(m & ((1 << 26) - 1), starts)
    emin = int(e[0])
    total = 0
    for s, h, low in zip(starts, hi, lo):
        total += ((int(h) << 26) + int(low)) << (int(e[s]) - emin)
    return emin, total


def merge_exact(*parts: tuple[int, int]) -> tuple[int, int]:
    """Sum :func:`exact_sum` results exactly."""
    parts = [p for p in parts if p[1]]
    if not parts:
        return 0, 0
    emin = min(p[0] for p in parts)
    return emin, sum(t << (e - emin) for e, t in parts)


def exact_float(part: tuple[int, int]) -> float:
    """An :func:`exact_sum` result rounded once to the nearest float64."""
    e, t = part
    return float(Fraction(t) * (Fraction(2) ** e))


# -- per-chunk steps (run on the workers; no dask inside) --------------------------------


def _exact_ints(dtype) -> bool:
    return np.dtype(dtype) in _SMALL_INTS


def nearest(block, candidates, scale: float):
    """Each row's nearest candidate (the lowest number on ties) and its squared distance.

    Parameters
    ----------
    block : array (n, d) of raw values (NumPy or CuPy)
    candidates : ndarray (m, d), raw values (rows of the data)
    scale : float
        Raw units to centres' units (1/255 for pixels).

    Returns
    -------
    labels : ndarray (n,) int32; mind : ndarray (n,) float64 in centres' units

    Small-integer rows (uint8 pixels) and candidates that are rows of the data
    give integer distances below 2**53, computed exactly in float64 whatever
    the BLAS, the chunking or a row's position in its block. Other data use
    :func:`daskmeans.kernels.assign` (the work dtype), exact up to rounding.
    """
    xp = namespace(block)
    if not _exact_ints(block.dtype):
        labels, mind = kernels.assign(block, np.asarray(candidates, dtype=np.float64) * scale, scale)
        return np.asarray(to_numpy(labels), dtype=np.int32), np.asarray(to_numpy(mind), dtype=np.float64)
    c = xp.asarray(np.asarray(candidates, dtype=np.float64))
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    labels, mins = [], []
    for s in range(0, block.shape[0], _ROWS):
        x = xp.astype(block[s : s + _ROWS, :], xp.float64)
        dist = (xp.vecdot(x, x)[:, None] + cc[None, :]) - 2.0 * (x @ ct)  # integers: exact
        labels.append(to_numpy(xp.argmin(dist, axis=1)))
        mins.append(to_numpy(xp.min(dist, axis=1)))
    if not labels:
        return np.zeros(0, np.int32), np.zeros(0, np.float64)
    return (np.concatenate(labels).astype(np.int32),
            np.concatenate(mins).astype(np.float64) * (scale * scale))


def _start(block, first, scale):
    """The state after the first candidate: every row's squared distance to it, nearest = 0."""
    _, closest = nearest(block, first, scale)
    return (closest, np.zeros(closest.shape[0], dtype=np.int32)), exact_sum(closest)


def _draw(block, state, offset, seed, round_, factor):
    """Rows of this block drawn in round ``round_``: ``u < factor * d(x)^2`` with ``factor = l / phi``.

    Returns ``(global indices (m,) int64, raw rows (m, d) as NumPy)``.
    """
    closest = state[0]
    u = row_uniforms(seed, round_, offset, closest.shape[0])
    local = np.flatnonzero(u < factor * closest)
    xp = namespace(block)
    rows = to_numpy(xp.take(block, xp.asarray(local), axis=0))
    return local.astype(np.int64) + offset, rows


def _update(block, state, candidates, base, drawn, offset, scale):
    """Fold new candidates (raw rows) (global numbers ``base``, ``base + 1``, ...) into the block's state.

    ``drawn``: the global indices of every new candidate, in order; a drawn row
    of this block is its own nearest candidate at distance 0 (exactly, whatever
    the rounding of the distance product).
    """
    closest, near = state
    labels, mind = nearest(block, candidates, scale)
    closer = mind < closest  # ties keep the earlier candidate
    closest = np.where(closer, mind, closest)
    near = np.where(closer, labels + np.int32(base), near).astype(np.int32)
    n = closest.shape[0]
    mine = np.flatnonzero((drawn >= offset) & (drawn < offset + n))
    closest[drawn[mine] - offset] = 0.0
    near[drawn[mine] - offset] = (base + mine).astype(np.int32)
    return (closest, near), exact_sum(closest)


def _counts(state, m):
    return np.bincount(state[1], minlength=m).astype(np.int64)


def _state(pair):
    return pair[0]


def _partial(pair):
    return pair[1]


# -- weighted k-means++ on the client ---------------------------------------------------


def _sq_dist(a, b, b_sq):
    """scikit-learn's ``_euclidean_distances(a, b, Y_norm_squared=b_sq, squared=True)`` for dense float64."""
    d = -2.0 * (a @ b.T)
    d += np.einsum("ij,ij->i", a, a)[:, None]
    d += b_sq[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def weighted_kmeans_plusplus(points, weights, n_clusters: int, random_state, n_local_trials=None):
    """Greedy k-means++ on weighted points (NumPy, on the client).

    The first centre is drawn with probability proportional to the weight, each
    next one from ``n_local_trials`` draws proportional to ``weight * d^2``,
    keeping the draw that lowers the weighted potential most: the same draws in
    the same order as ``sklearn.cluster.kmeans_plusplus(points,
    sample_weight=weights)``.

    Parameters
    ----------
    points : ndarray (m, d) float64
    weights : ndarray (m,) non-negative, not all zero
    n_clusters : int
    random_state : int, RandomState or None
    n_local_trials : int or None
        Default ``2 + int(log(n_clusters))``.

    Returns
    -------
    centers : ndarray (n_clusters, d) float64
    indices : ndarray (n_clusters,) int64, the rows of ``points`` chosen
    """
    rng = check_random_state(random_state)
    X = np.asarray(points, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    m = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    x_sq = np.einsum("ij,ij->i", X, X)
    indices = np.full(n_clusters, -1, dtype=np.int64)
    first = int(rng.choice(m, p=w / w.sum()))
    indices[0] = first
    closest = _sq_dist(X[first : first + 1], X, x_sq)
    current_pot = closest @ w
    for c in range(1, n_clusters):
        rand_vals = rng.uniform(size=n_local_trials) * current_pot
        ids = np.searchsorted(np.cumsum(w * closest), rand_vals)
        np.clip(ids, None, closest.size - 1, out=ids)
        dist = _sq_dist(X[ids], X, x_sq)
        np.minimum(closest, dist, out=dist)
        pots = dist @ w.reshape(-1, 1)
        best = int(np.argmin(pots))
        current_pot = pots[best]
        closest = dist[best]
        indices[c] = ids[best]
    return X[indices].copy(), indices


# -- the distributed driver ---------------------------------------------------------------


def kmeans_parallel(X: da.Array, n_clusters: int, random_state, *, n_rounds: int = DEFAULT_ROUNDS,
                    oversampling: float = DEFAULT_OVERSAMPLING, split_every: int = 8, return_info: bool = False):
    """k-means|| initial centres of a chunked dask array.

    Parameters
    ----------
    X : dask array (n, d), chunked by rows only (see :func:`daskmeans.kmeans.as_rows`)
        uint8 pixels (centres then in [0, 1]) or numbers.
    n_clusters : int
    random_state : int, RandomState or None
        One draw of it seeds the per-row generator; the first row and the
        weighted k-means++ draw from it too.
    n_rounds : int, default 5
        Sampling rounds; more are added (at most 10) while fewer than
        ``n_clusters`` candidates were drawn.
    oversampling : float, default 2.0
        ``l / k``: candidates expected per round, as a multiple of k.
    split_every : int
        Fan-in of the tree reductions.
    return_info : bool
        Also return a dict: ``candidates``, ``rounds``, ``phi`` per round,
        ``weights`` (of the candidates), ``candidate_indices`` (global rows).

    Returns
    -------
    centers : ndarray (n_clusters, d) float64, in centres' units
    info : dict, only with ``return_info``
    """
    X = as_rows(X)
    k = int(n_clusters)
    rng = check_random_state(random_state)
    with one_blas_thread():  # the chunks' tasks run in parallel already
        points, weights, info = _candidates(X, k, rng, int(n_rounds), float(oversampling), int(split_every),
                                            pixel_scale(X.dtype))
    t0 = time.perf_counter()
    centers, chosen = weighted_kmeans_plusplus(points, weights, k, rng)  # every BLAS thread: one task here
    logger.info("k-means|| weighted k-means++ on %d candidates: %.2fs", len(points), time.perf_counter() - t0)
    if not return_info:
        return centers
    return centers, {**info, "weights": weights, "chosen": chosen}


def _candidates(X, k, rng, n_rounds, oversampling, split_every, scale):
    """The sampling rounds: candidates (m, d) float64 in centres' units, their weights (m,) int64, info."""
    n, d = X.shape
    seed = int(rng.randint(0, 2**32, dtype=np.int64)) << 32 | int(rng.randint(0, 2**32, dtype=np.int64))
    blocks = _blocks(X)
    offsets = _offsets(X)[:-1]
    ell = oversampling * k

    t0 = time.perf_counter()
    first = int(rng.randint(n))
    first_row = to_numpy(X[first].compute()).reshape(1, d)
    cand_rows = [first_row]
    cand_ids = [np.array([first], dtype=np.int64)]
    c0 = delayed(first_row)
    pairs = [delayed(_start, nout=2)(b, c0, scale) for b in blocks]
    states = dask.persist(*[p[0] for p in pairs])
    phi_part = dask.compute(_tree([p[1] for p in pairs], split_every, merge_exact))[0]
    phi = exact_float(phi_part)
    phis = [phi]
    m = 1
    logger.info("k-means|| start: 1 candidate, phi %.6g (%.2fs)", phi, time.perf_counter() - t0)

    r = 0
    while phi > 0 and (r < n_rounds or (m < k and r < n_rounds + _MAX_EXTRA_ROUNDS)):
        t1 = time.perf_counter()
        r += 1
        factor = ell / phi
        draws = dask.compute(*[delayed(_draw, nout=2)(b, s, int(o), seed, r, factor)
                               for b, s, o in zip(blocks, states, offsets)])
        ids = np.concatenate([dr[0] for dr in draws]) if draws else np.zeros(0, np.int64)
        if ids.size:
            rows = np.concatenate([dr[1].reshape(len(dr[0]), d) for dr in draws], axis=0)
            cand = delayed(rows)
            drawn = delayed(ids)
            pairs = [delayed(_update, nout=2)(b, s, cand, m, drawn, int(o), scale)
                     for b, s, o in zip(blocks, states, offsets)]
            states = dask.persist(*[p[0] for p in pairs])
            phi = exact_float(dask.compute(_tree([p[1] for p in pairs], split_every, merge_exact))[0])
            cand_rows.append(rows)
            cand_ids.append(ids)
            m += ids.size
        phis.append(phi)
        logger.info("k-means|| round %d: %d new candidates (%d in all), phi %.6g (%.2fs)",
                    r, ids.size, m, phi, time.perf_counter() - t1)

    counts = [delayed(_counts)(s, m) for s in states]
    weights = np.asarray(dask.compute(delayed(_host)(_tree(counts, split_every)))[0], dtype=np.int64)
    points = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, d) for c in cand_rows], axis=0) * scale
    info = {"candidates": m, "rounds": r, "phi": phis, "candidate_indices": np.concatenate(cand_ids)}
    return points, weights, info


__all__ = ["kmeans_parallel", "weighted_kmeans_plusplus", "row_uniforms", "exact_sum", "merge_exact",
           "exact_float", "DEFAULT_ROUNDS", "DEFAULT_OVERSAMPLING"]
