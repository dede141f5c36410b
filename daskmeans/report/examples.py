"""The nearest, farthest and random members of every cluster, without bringing the data to the client.

A per-block kernel (:func:`examples_block`) keeps, for every cluster, the ``m``
nearest, the ``m`` farthest and ``m`` random members of its block (rows
included); the partial results are merged in a tree (:func:`merge_examples`,
through :func:`daskmeans.graph.tree_reduce`), and only those few rows per
cluster reach the client. Every choice is a function of the global row index,
so the result does not depend on the chunking or the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from dask import delayed

from .. import graph
from ..backend import namespace, to_numpy
from ..kmeans import as_rows, pixel_scale

#: The three kinds of members shown per cluster.
KINDS = ("random", "nearest", "farthest")

#: Rows per step of :func:`own_distances`: its float64 temporaries are 4 x 8 x _DIST_ROWS x d bytes
#: per thread (25 MB for 3,072 pixels; 2,048 rows made the report the run's memory peak).
_DIST_ROWS = 256


def select_top(keys, index, clusters, k: int, m: int) -> np.ndarray:
    """Positions of the ``m`` smallest ``(key, index)`` pairs of each cluster.

    Pure NumPy. Ties on ``key`` go to the lower ``index``, so the choice does not
    depend on how the rows were split into blocks. Rows with a cluster outside
    ``[0, k)`` are ignored. Returns positions grouped by cluster, each group in
    increasing ``(key, index)`` order.
    """
    keys = np.asarray(keys, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    order = np.lexsort((index, keys, clusters))
    cs = clusters[order]
    ids = np.arange(k)
    lo = np.searchsorted(cs, ids, "left")
    hi = np.minimum(lo + m, np.searchsorted(cs, ids, "right"))
    if not len(order):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([order[a:b] for a, b in zip(lo, hi)] + [np.zeros(0, np.int64)]).astype(np.int64)


def priority(index, seed: int) -> np.ndarray:
    """A pseudo-random number in [0, 1) per global row index (splitmix64 of index and seed).

    A function of the row only, so "m random members" are the same rows however
    the data is chunked or scheduled.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def own_distances(block, labels, centers, scale: float, metric: str = "l2") -> np.ndarray:
    """Distance of each row to its own cluster's centre, in float64 (NumPy result).

    ``block`` holds raw rows (NumPy or CuPy), ``centers`` (k, d) are in centres'
    units (``raw * scale``). Squared Euclidean for ``l2``, Manhattan for ``l1``, ``1 - cos`` for ``cosine``,
    computed directly: the ``|x|^2 - 2xc + |c|^2`` expansion would lose the
    small distances of the nearest members to cancellation.
    """
    xp = namespace(block)
    n = block.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    block = xp.reshape(block, (n, -1)) if block.ndim != 2 else block
    c = xp.asarray(np.asarray(to_numpy(centers), dtype=np.float64))
    lab = xp.asarray(np.asarray(to_numpy(labels), dtype=np.int64))
    out = []
    for s in range(0, n, _DIST_ROWS):
        e = min(s + _DIST_ROWS, n)
        x = xp.astype(block[s:e, ...], xp.float64)
        if metric == "cosine":  # 1 - cos (direction only)
            own = xp.take(c, lab[s:e], axis=0)
            d = 1 - xp.vecdot(x, own) / (xp.sqrt(xp.vecdot(x, x)) * xp.sqrt(xp.vecdot(own, own)))
            out.append(to_numpy(d))
            continue
        diff = x * scale - xp.take(c, lab[s:e], axis=0)
        d = xp.sum(diff * diff, axis=1) if metric == "l2" else xp.sum(xp.abs(diff), axis=1)
        out.append(to_numpy(d))
    return np.concatenate(out)


def _candidates(part: dict, k: int, m: int, seed: int) -> np.ndarray:
    """Positions (sorted, unique) of the rows any cluster still needs: nearest, farthest, random."""
    idx, cl, dist = part["index"], part["cluster"], part["dist"]
    pos = [
        select_top(dist, idx, cl, k, m),
        select_top(-dist, idx, cl, k, m),
        select_top(priority(idx, seed), idx, cl, k, m),
    ]
    return np.unique(np.concatenate(pos))


def _take(part: dict, pos) -> dict:
    return {key: np.asarray(v)[pos] for key, v in part.items()}


def examples_block(block, labels, classes, centers, offset: int, k: int, m: int, seed: int,
                   scale: float, metric: str = "l2") -> dict:
    """Per-block kernel: the candidate rows (nearest, farthest, random per cluster) of one block.

    Returns a dict of NumPy arrays: ``index`` (global row), ``cluster``,
    ``cls`` (true class), ``dist`` (to the own centre), ``rows`` (raw pixels),
    at most ``3 m k`` rows.
    """
    n = block.shape[0]
    lab = np.asarray(to_numpy(labels), dtype=np.int64)
    cls = np.asarray(to_numpy(classes), dtype=np.int64)
    dist = own_distances(block, lab, centers, scale, metric)
    part = {"index": np.arange(n, dtype=np.int64) + int(offset), "cluster": lab, "cls": cls, "dist": dist}
    pos = _candidates(part, k, m, seed)
    out = _take(part, pos)
    xp = namespace(block)
    flat = xp.reshape(block, (n, -1)) if block.ndim != 2 else block
    out["rows"] = np.asarray(to_numpy(xp.take(flat, xp.asarray(pos), axis=0)))
    return out


def merge_examples(k: int, m: int, seed: int, *parts) -> dict:
    """Merge :func:`examples_block` results, keeping what the whole would keep."""
    whole = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return _take(whole, _candidates(whole, k, m, seed))


@dataclass
class Examples:
    """The chosen members of every cluster (few rows; lives on the client)."""

    index: np.ndarray  # (r,) global row in the dataset
    cluster: np.ndarray  # (r,)
    cls: np.ndarray  # (r,) true class
    dist: np.ndarray  # (r,) distance to the own centre (squared for l2)
    rows: np.ndarray  # (r, d) raw pixels
    k: int
    m: int
    seed: int

    def pick(self, kind: str, j: int) -> np.ndarray:
        """Positions of cluster ``j``'s members of one kind: nearest first, farthest first, or random order."""
        keys = {"nearest": self.dist, "farthest": -self.dist, "random": priority(self.index, self.seed)}[kind]
        sel = np.flatnonzero(self.cluster == j)
        pos = select_top(keys[sel], self.index[sel], np.zeros(len(sel)), 1, self.m)
        return sel[pos]


def _row_aligned(a, rows: tuple) -> da.Array:
    """``a`` (dask or NumPy, 1-D) as a dask array with the row chunks ``rows``."""
    a = a if isinstance(a, da.Array) else da.from_array(np.asarray(a), chunks=rows)
    return a.rechunk(rows)


def gather_examples(X, labels, classes, centers, *, m: int = 8, seed: int = 0, metric: str = "l2",
                    split_every: int = 8) -> Examples:
    """For every cluster, its ``m`` nearest, ``m`` farthest and ``m`` random members.

    Distributed: :func:`examples_block` runs on every row block of ``X`` (a dask
    array ``(n, d)`` or images ``(n, h, w, c)``), partial results are merged
    ``split_every`` at a time, and one ``compute`` brings at most ``3 m k`` rows
    to the client. ``labels`` (cluster of each row) and ``classes`` may be
    dask or NumPy arrays; they are chunked like ``X``.
    """
    X = as_rows(X)
    rows = (X.chunks[0],)
    centers = np.asarray(centers, dtype=np.float64)
    k = centers.shape[0]
    scale = pixel_scale(X.dtype)
    parts = [
        delayed(examples_block)(b, lb, cb, centers, int(off), k, m, seed, scale, metric)
        for b, lb, cb, off in zip(graph.blocks(X), graph.blocks(_row_aligned(labels, rows)),
                                  graph.blocks(_row_aligned(classes, rows)), graph.offsets(X)[:-1])
    ]
    res = graph.tree_reduce(parts, split_every, merge_examples, k, m, seed).compute()
    return Examples(res["index"], res["cluster"], res["cls"], res["dist"], res["rows"], k, m, seed)
