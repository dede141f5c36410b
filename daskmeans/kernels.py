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


# -- Hamerly's bounds: Lloyd's labels with most distances skipped ---------------------


def _dot_error(xp, wd, d: int) -> float:
    """Relative error bound of a length-``d`` dot product in ``wd`` (Higham's gamma_d),
    with 10% slack for the additions around it."""
    u = 2.0**-24 if wd == xp.float32 else 2.0**-53
    return 1.1 * d * u / (1 - d * u)


def hamerly_step(block, centers, state=None, shifts=None, half_sep=None, *, scale: float = 1.0, full: bool = False):
    """One Lloyd iteration with Hamerly's bounds (squared L2 only).

    Each row keeps an upper bound on its distance to its centre and a lower bound
    on its distance to every other centre (per-chunk state on the workers). A row
    whose bounds prove its centre is still the nearest, by a margin larger than
    the worst-case float32 rounding of the distances Lloyd would compute
    (Higham's gamma_d), keeps its label without any distance being computed, so
    the labels are exactly those of :func:`lloyd_step`. Only rows that changed
    cluster move the per-cluster sums, which stay exact.

    Parameters
    ----------
    block : array (n, d) of raw values
    centers : array-like (k, d), centres' units: the centres used this iteration
    state : tuple or None
        ``(labels, upper, lower, sqnorms)`` from the previous call on this block
        (``upper``/``lower``/``sqnorms`` may be None: then every row is computed).
    shifts : array-like (k,) float64
        How far each centre moved since ``state`` was made, raw units.
    half_sep : array-like (k,) float64
        Half the distance from each centre to its nearest other centre, raw units.
    full : bool
        Compute every row and return whole sums (first iteration, or after the
        client moved a row between clusters to fill an empty one).

    Returns
    -------
    state : tuple (labels int32, upper float64, lower float64, sqnorms float64:
        exact squared norms of the raw rows)
    partial : tuple (sums (k, d) float64, counts (k,) int64, sq (k,) float64,
        changed () int64, computed () int64). With ``full`` these are the
        block's totals (sums of raw rows, counts, sums of squared row norms);
        otherwise the changes since ``state``.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    n, d = block.shape
    k = len(centers)
    wd = work_dtype(xp, block.dtype)
    c = _centers_raw(xp, centers, wd, scale)
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    c64 = xp.astype(c, xp.float64)
    cmax = xp.sqrt(xp.max(xp.vecdot(c64, c64)))
    eps = _dot_error(xp, wd, d)
    old = None if state is None else state[0]
    have_bounds = state is not None and state[1] is not None and not full

    if have_bounds:
        _, upper, lower, norms = state
        sh = xp.asarray(shifts, dtype=xp.float64)
        a = xp.astype(old, xp.int64)
        upper = upper + xp.take(sh, a)
        # every other centre may have come closer by at most the largest other shift
        order = xp.argsort(-sh, stable=True)
        top1 = order[0]
        top2 = sh[order[1]] if k > 1 else xp.asarray(0.0, dtype=xp.float64)
        lower = lower - xp.where(a == top1, top2, sh[top1])
        hs = xp.take(xp.asarray(half_sep, dtype=xp.float64), a)
        two_e = 2 * eps * (xp.sqrt(norms) * (1 + 1e-12) + cmax) ** 2
        sure = ((upper < hs) & (4 * hs * (hs - upper) > two_e)) | (
            (lower > upper) & (lower * lower - upper * upper > two_e)
        )
        rows = xp.nonzero(~sure)[0]
    else:
        rows = None  # all
        upper = lower = norms = None

    # distances for the rows that need them, exactly as lloyd_step computes them
    m = n if rows is None else rows.shape[0]
    new_lab, up_c, lo_c, nrm_c = [], [], [], []
    sums = xp.zeros((k, d), dtype=xp.float64)
    counts = xp.zeros((k,), dtype=xp.int64)
    sq = xp.zeros((k,), dtype=xp.float64)
    changed = xp.asarray(0, dtype=xp.int64)
    ids = xp.arange(k, dtype=xp.int32)
    small_int = _dtype_name(xp, block.dtype) in _SMALL_INTS
    for s, e in _sub_blocks(m, xp):
        if e <= s:
            continue
        raw = block[s:e, :] if rows is None else xp.take(block, rows[s:e], axis=0)
        x = xp.astype(raw, wd)
        part = cc[None, :] - 2 * (x @ ct)
        lab = xp.astype(xp.argmin(part, axis=1), xp.int32)
        xx = xp.vecdot(x, x)
        first = xp.min(part, axis=1)
        if k > 1:
            second = xp.min(xp.where(lab[:, None] == ids[None, :], xp.asarray(xp.inf, dtype=wd), part), axis=1)
        else:
            second = xp.full(first.shape, xp.inf, dtype=wd)
        if have_bounds:  # the same rows as before: their squared norms are kept
            exact_sq = xp.take(norms, rows[s:e])
        else:
            r64 = xp.astype(raw, xp.float64)
            exact_sq = xp.vecdot(r64, r64)  # exact for integer pixels
        nrm = xp.sqrt(exact_sq) * (1 + 1e-12)
        err = eps * (nrm + cmax) ** 2  # bounds |what Lloyd computes - the exact squared distance|
        x64n = xp.astype(xx, xp.float64)  # Lloyd's own ||x||^2
        up_c.append(xp.sqrt(xp.clip(x64n + xp.astype(first, xp.float64) + err, min=0.0)))
        lo_c.append(xp.sqrt(xp.clip(x64n + xp.astype(second, xp.float64) - err, min=0.0)))
        nrm_c.append(exact_sq)
        new_lab.append(lab)
        xs = x if small_int else xp.astype(x, xp.float64)
        member = xp.astype(ids[:, None] == lab[None, :], xs.dtype)
        if have_bounds:
            # only rows that changed cluster move the sums: +1 into the new, -1 out of the old
            o = xp.take(old, rows[s:e])
            moved = xp.astype(o != lab, xs.dtype)
            was = xp.astype(ids[:, None] == o[None, :], xs.dtype)
            delta = (member - was) * moved[None, :]
            sums = sums + xp.astype(delta @ xs, xp.float64)
            counts = counts + xp.astype(xp.sum(delta, axis=1), xp.int64)
            sq = sq + xp.astype(delta, xp.float64) @ exact_sq
            changed = changed + xp.sum(xp.astype(o != lab, xp.int64))
        else:
            sums = sums + xp.astype(member @ xs, xp.float64)
            counts = counts + xp.sum(xp.astype(ids[:, None] == lab[None, :], xp.int64), axis=1)
            sq = sq + xp.astype(member, xp.float64) @ exact_sq
            if old is not None:
                changed = changed + xp.sum(xp.astype(old[s:e] != lab, xp.int64))
    if old is None:
        changed = xp.asarray(n, dtype=xp.int64)

    def _cat(parts, dtype):
        if not parts:
            return xp.zeros((0,), dtype=dtype)
        return parts[0] if len(parts) == 1 else xp.concat(parts)

    lab_c = _cat(new_lab, xp.int32)
    up_c, lo_c, nrm_c = (_cat(p, xp.float64) for p in (up_c, lo_c, nrm_c))
    if rows is None:
        labels, upper, lower, norms = lab_c, up_c, lo_c, nrm_c
    elif m:
        # row i of the block is row pos[i] of the recomputed ones (where it was recomputed)
        need = ~sure
        pos = xp.clip(xp.cumulative_sum(xp.astype(need, xp.int64)) - 1, min=0)
        labels = xp.where(need, xp.take(lab_c, pos), old)
        upper = xp.where(need, xp.take(up_c, pos), upper)
        lower = xp.where(need, xp.take(lo_c, pos), lower)
        norms = xp.where(need, xp.take(nrm_c, pos), norms)
    else:
        labels = old
    computed = xp.asarray(m, dtype=xp.int64)
    return (labels, upper, lower, norms), (sums, counts, sq, changed, computed)
