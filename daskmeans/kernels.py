"""Pure per-block k-means kernels. No dask here.

Every function takes one block of rows (NumPy, CuPy or any array-API array) plus
small NumPy inputs (centres, targets) and returns arrays of the block's namespace.
The orchestration in :mod:`daskmeans.kmeans` maps them across chunks and
tree-reduces their partial results with :func:`combine`.

Units: ``block`` holds raw values (uint8 pixels 0..255 at rest); ``scale``
converts them to the centres' units (1/255 for pixels, so centres live in
[0, 1]). Distances and inertia are returned in the centres' units.

Exact sums: uint8 rows are summed per cluster with a float32 matrix product over
sub-blocks of at most :data:`MAX_EXACT_ROWS` rows (255 * 65,536 < 2**24, so every
partial sum is an exactly representable integer), then accumulated in float64
(exact below 2**53). The sums, hence the centres, are bit-identical whatever the
chunking, scheduler or worker count.
"""

from __future__ import annotations

import math

from .backend import namespace

#: Rows per sub-block: bounds temporary memory, and keeps float32 sums of uint8 exact.
MAX_EXACT_ROWS = 65536

_SMALL_INTS = ("uint8", "int8", "bool")


def _dtype_name(xp, dtype) -> str:
    for name in ("bool", "uint8", "int8", "uint16", "int16", "int32", "int64", "float32", "float64"):
        if dtype == getattr(xp, name):
            return name
    return str(dtype)


def work_dtype(xp, dtype):
    """float64 for float64 data, float32 otherwise (uint8 pixels, float32 features)."""
    return xp.float64 if dtype == xp.float64 else xp.float32


def _flat(block, xp):
    if block.ndim != 2:
        block = xp.reshape(block, (block.shape[0], math.prod(block.shape[1:])))
    return block


def _step_rows(xp) -> int:
    """Rows per sub-block: cache-sized on CPUs, large on GPUs (fewer kernel launches)."""
    return MAX_EXACT_ROWS if "cupy" in getattr(xp, "__name__", "") else 512


def _sub_blocks(n: int, xp=None):
    # Never more than MAX_EXACT_ROWS: that keeps float32 sums of uint8 exact.
    step = MAX_EXACT_ROWS if xp is None else min(_step_rows(xp), MAX_EXACT_ROWS)
    return [(s, min(s + step, n)) for s in range(0, n, step)] or [(0, 0)]


def _centers_raw(xp, centers, wd, scale):
    # Work in raw units (no pass over the data to rescale it): c_raw = c / scale.
    return xp.asarray(centers, dtype=wd) / scale


def _dist_w(xp, x, c, scale: float, metric: str):
    """Distances between work-dtype rows ``x`` (raw units) and raw centres ``c``."""
    if metric == "l2":
        xx = xp.vecdot(x, x)
        cc = xp.vecdot(c, c)
        d = xx[:, None] - 2 * (x @ xp.matrix_transpose(c)) + cc[None, :]
        d = xp.clip(d, min=0.0)  # rounding can make a zero distance slightly negative
        return d * (scale * scale)
    if metric == "l1":
        cols = [xp.sum(xp.abs(x - c[j : j + 1, :]), axis=1) for j in range(c.shape[0])]
        return xp.stack(cols, axis=1) * scale
    raise ValueError(f"metric={metric!r} is not one of 'l2', 'l1'")


def distances(block, centers, scale: float = 1.0, metric: str = "l2"):
    """Distances from each row to each centre.

    Parameters
    ----------
    block : array (n, d) or (n, ...) of raw values
    centers : array-like (k, d), in the centres' units (``raw * scale``)
    scale : float
    metric : {"l2", "l1"}
        "l2" gives squared Euclidean distances (computed with one matrix
        product); "l1" gives Manhattan distances (the original notebook's
        assignment rule).

    Returns
    -------
    array (n, k) of the work dtype (float32 for uint8 data), in centres' units.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    wd = work_dtype(xp, block.dtype)
    return _dist_w(xp, xp.astype(block, wd), _centers_raw(xp, centers, wd, scale), scale, metric)


def _scan(block, centers, scale, metric, k_sums=None):
    """One pass over a block in cache-sized sub-blocks: convert each once, then
    nearest centre, its distance and (optionally) exact per-cluster sums."""
    xp = namespace(block)
    block = _flat(block, xp)
    n, d = block.shape
    wd = work_dtype(xp, block.dtype)
    c = _centers_raw(xp, centers, wd, scale)
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    small_int = _dtype_name(xp, block.dtype) in _SMALL_INTS
    labels, mind = [], []
    sums = counts = None
    if k_sums is not None:
        sums = xp.zeros((k_sums, d), dtype=xp.float64)
        counts = xp.zeros((k_sums,), dtype=xp.int64)
        ids = xp.arange(k_sums, dtype=xp.int32)
    # One work buffer per block, refilled per sub-block: a fresh allocation per
    # sub-block costs more in page faults than the conversion itself (NumPy, CuPy).
    copyto = getattr(xp, "copyto", None)
    steps = _sub_blocks(n, xp)
    buf = xp.empty((steps[0][1] - steps[0][0], d), dtype=wd) if copyto is not None and n else None
    for s, e in steps:
        if e <= s:
            continue
        if buf is not None:
            x = buf[: e - s, :]
            copyto(x, block[s:e, :])
        else:
            x = xp.astype(block[s:e, :], wd)
        if metric == "l2":
            # argmin needs only ||c||^2 - 2 x.c; add ||x||^2 and scale the minimum only
            part = cc[None, :] - 2 * (x @ ct)
            lab = xp.argmin(part, axis=1)
            md = xp.clip(xp.vecdot(x, x) + xp.min(part, axis=1), min=0.0) * (scale * scale)
        else:
            dist = _dist_w(xp, x, c, scale, metric)
            lab, md = xp.argmin(dist, axis=1), xp.min(dist, axis=1)
        lab = xp.astype(lab, xp.int32)
        labels.append(lab)
        mind.append(md)
        if k_sums is not None:
            member = ids[:, None] == lab[None, :]  # (k, rows) one-hot
            counts = counts + xp.sum(xp.astype(member, xp.int64), axis=1)
            # float32 sums of small ints are exact (see module doc); others use float64
            xs = x if small_int else xp.astype(x, xp.float64)
            # A one-hot product, not per-cluster boolean gathers: those were faster in a
            # plain process but 2.5x slower on dask workers, whose MALLOC_TRIM_THRESHOLD_
            # turns every large temporary into fresh page faults.
            part = xp.astype(member, xs.dtype) @ xs
            sums = sums + xp.astype(part, xp.float64)
    if not labels:
        labels, mind = [xp.zeros((0,), dtype=xp.int32)], [xp.zeros((0,), dtype=wd)]
    lab = labels[0] if len(labels) == 1 else xp.concat(labels)
    md = mind[0] if len(mind) == 1 else xp.concat(mind)
    return lab, md, sums, counts


def assign(block, centers, scale: float = 1.0, metric: str = "l2"):
    """Nearest centre of each row and its distance.

    Returns
    -------
    labels : array (n,) int32
    mindist : array (n,) work dtype
    """
    labels, mind, _, _ = _scan(block, centers, scale, metric)
    return labels, mind


def lloyd_step(block, centers, old_labels=None, *, scale: float = 1.0, metric: str = "l2"):
    """One Lloyd iteration on one block: assignment, then partial sums.

    Parameters
    ----------
    block : array (n, d) of raw values
    centers : array-like (k, d) in centres' units
    old_labels : array (n,) int32 or None
        This block's labels from the previous iteration (per-chunk state kept
        on the workers); None on the first iteration (every label counts as
        changed).

    Returns
    -------
    labels : array (n,) int32
    partial : tuple (sums (k, d) float64 raw units, counts (k,) int64,
        inertia () float64 in centres' units, changed () int64)
    """
    xp = namespace(block)
    labels, mind, sums, counts = _scan(block, centers, scale, metric, k_sums=len(centers))
    inertia = xp.sum(xp.astype(mind, xp.float64))
    if old_labels is None:
        changed = xp.asarray(labels.shape[0], dtype=xp.int64)
    else:
        changed = xp.sum(xp.astype(labels != old_labels, xp.int64))
    return labels, (sums, counts, inertia, changed)


def assign_step(block, centers, *, scale: float = 1.0, metric: str = "l2"):
    """Final E-step / predict on one block: labels and partial inertia."""
    xp = namespace(block)
    labels, mind = assign(block, centers, scale, metric)
    return labels, xp.sum(xp.astype(mind, xp.float64))


def combine(*parts):
    """Sum partial results elementwise (tuples of arrays, or arrays)."""
    first = parts[0]
    if isinstance(first, tuple):
        return tuple(combine(*items) for items in zip(*parts))
    total = first
    for p in parts[1:]:
        total = total + p
    return total


def moments(block):
    """Exact per-feature count, sum and sum of squares of raw values (float64).

    Used for scikit-learn's tolerance: ``tol * mean(var(X, axis=0))``.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    x = xp.astype(block, xp.float64)
    return (
        xp.asarray(block.shape[0], dtype=xp.int64),
        xp.sum(x, axis=0),
        xp.sum(x * x, axis=0),
    )


def farthest(block, centers, offset: int, m: int, *, scale: float = 1.0, metric: str = "l2"):
    """The ``m`` rows of a block farthest from their nearest centre.

    Used to relocate empty clusters (as scikit-learn does). Ties go to the
    lower row index, so the choice does not depend on the chunking.

    Returns
    -------
    tuple (dist (m',) float64, index (m',) int64 global row, rows (m', d) raw,
    labels (m',) int32), sorted by decreasing distance.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    labels, mind = assign(block, centers, scale, metric)
    mind = xp.astype(mind, xp.float64)
    order = xp.argsort(-mind, stable=True)[:m]
    idx = xp.astype(order, xp.int64) + offset
    return mind[order], idx, xp.take(block, order, axis=0), labels[order]


def merge_farthest(m: int, *parts):
    """Merge :func:`farthest` results, keeping the ``m`` farthest (ties: lower index)."""
    xp = namespace(parts[0][0])
    dist = xp.concat([p[0] for p in parts])
    idx = xp.concat([p[1] for p in parts])
    rows = xp.concat([p[2] for p in parts], axis=0)
    labs = xp.concat([p[3] for p in parts])
    # Sort by index first, then stably by distance: ties keep index order.
    o1 = xp.argsort(idx, stable=True)
    dist, idx, rows, labs = dist[o1], idx[o1], xp.take(rows, o1, axis=0), labs[o1]
    o2 = xp.argsort(-dist, stable=True)[:m]
    return dist[o2], idx[o2], xp.take(rows, o2, axis=0), labs[o2]


# -- k-means++ ------------------------------------------------------------------


def closest_sq_dist(block, center, *, scale: float = 1.0):
    """Squared distance of each row to one centre, and their float64 sum."""
    xp = namespace(block)
    if block.shape[0] == 0:
        z = xp.zeros((0,), dtype=work_dtype(xp, block.dtype))
        return z, xp.asarray(0.0, dtype=xp.float64)
    d = xp.concat(
        [distances(block[s:e, ...], center, scale, "l2")[:, 0] for s, e in _sub_blocks(block.shape[0], xp)]
    )
    return d, xp.sum(xp.astype(d, xp.float64))


def locate(block, closest, targets):
    """Rows whose running sum of ``closest`` first reaches each target.

    ``np.searchsorted(np.cumsum(closest), targets)`` within one block (targets
    are already relative to the block's start), clipped to the block.

    Returns
    -------
    local : array (t,) int64 row positions; rows : array (t, d) raw values
    """
    xp = namespace(block)
    block = _flat(block, xp)
    cum = xp.cumulative_sum(xp.astype(closest, xp.float64))
    t = xp.asarray(targets, dtype=xp.float64)
    local = xp.searchsorted(cum, t)
    local = xp.clip(xp.astype(local, xp.int64), max=block.shape[0] - 1)
    return local, xp.take(block, local, axis=0)


def candidate_pots(block, closest, candidates, *, scale: float = 1.0):
    """For each candidate centre: min(closest, distance to it) per row, and its sum.

    Returns
    -------
    mins : array (n, m) work dtype; pots : array (m,) float64
    """
    xp = namespace(block)
    m = len(candidates)
    if block.shape[0] == 0:
        return xp.zeros((0, m), dtype=closest.dtype), xp.zeros((m,), dtype=xp.float64)
    parts = []
    for s, e in _sub_blocks(block.shape[0], xp):
        d = distances(block[s:e, ...], candidates, scale, "l2")
        parts.append(xp.minimum(d, closest[s:e, None]))
    mins = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return mins, xp.sum(xp.astype(mins, xp.float64), axis=0)


def column(a, j: int):
    """``a[:, j]`` as a task (per-chunk state selection)."""
    return a[:, j]
