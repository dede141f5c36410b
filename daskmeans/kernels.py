"""Pure per-block k-means kernels. No dask here.

Every function takes one block of rows (NumPy, CuPy or any array-API array) plus
small NumPy inputs (centres, targets) and returns arrays of the block's namespace.
The orchestration in :mod:`daskmeans.kmeans` maps them across chunks and
tree-reduces their partial results with :func:`combine`.

Units: ``block`` holds raw values (uint8 pixels 0..255 at rest); ``scale``
converts them to the centres' units (1/255 for pixels, so centres live in
[0, 1]). Distances and inertia are returned in the centres' units.

Exact labels: every distance product has the same shape, (:data:`TILE`, d) by
(d, k), and every row has a fixed place in it: row ``g`` (its global index in the
data) sits at position ``g % TILE`` of its tile, whichever block it came in and
whichever other rows are measured with it (rows sharing a place go to successive
tiles; the rest of a tile is padding, computed and ignored). BLAS chooses its
kernel by shape (one row alone would take a matrix-vector path with another
summation order) and rounds some rows differently by their place in the product
(measured: 44 of 2,560 products of a 256 x 3,072 x 10 sgemm changed in their last
bit when the rows moved by 7 places); both are now fixed, and a product's element
never depends on the other rows' values. Labels are therefore bit-identical
across chunkings, schedulers, worker counts and between Lloyd and Hamerly (one
BLAS thread, as the kernels run); the tests check it with constructed near-ties.

Exact sums: small-integer rows (uint8 pixels) are summed per cluster in int64 on
NumPy blocks (:mod:`daskmeans.cpu_kernels`); elsewhere with a float32 one-hot
product per tile (255 * TILE < 2**24, so every partial sum is an exactly
representable integer) accumulated in float64 (exact below 2**53). Integer sums
do not depend on their order, so the centres are bit-identical too.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from . import cpu_kernels
from .backend import namespace, to_numpy

#: Most rows whose uint8 values a float32 sum holds exactly (255 * 65,536 < 2**24).
MAX_EXACT_ROWS = 65536
#: Rows per distance product. Every product has exactly this many rows (see module doc).
TILE = 256
assert TILE <= MAX_EXACT_ROWS  # the one-hot sums of a tile stay exact in float32

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
    if metric == "cosine":  # 1 - cos: the scale cancels
        nx = xp.sqrt(xp.vecdot(x, x))
        nc = xp.sqrt(xp.vecdot(c, c))
        return 1 - (x @ xp.matrix_transpose(c)) / (nx[:, None] * nc[None, :])
    raise ValueError(f"metric={metric!r} is not one of 'l2', 'l1', 'cosine'")


def distances(block, centers, scale: float = 1.0, metric: str = "l2"):
    """Distances from each row to each centre.

    Parameters
    ----------
    block : array (n, d) or (n, ...) of raw values
    centers : array-like (k, d), in the centres' units (``raw * scale``)
    scale : float
    metric : {"l2", "l1", "cosine"}
        "l2" gives squared Euclidean distances (computed with one matrix
        product); "l1" gives Manhattan distances (the original notebook's
        assignment rule); "cosine" gives ``1 - cos`` (spherical k-means).

    Returns
    -------
    array (n, k) of the work dtype (float32 for uint8 data), in centres' units.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    wd = work_dtype(xp, block.dtype)
    return _dist_w(xp, xp.astype(block, wd), _centers_raw(xp, centers, wd, scale), scale, metric)


def _is_small_int(xp, dtype) -> bool:
    return _dtype_name(xp, dtype) in _SMALL_INTS


def _numba_sums(xp, block) -> bool:
    """Integer sums by the compiled loop: NumPy blocks of small integers."""
    return cpu_kernels.AVAILABLE and isinstance(block, np.ndarray) and _is_small_int(xp, block.dtype)


def positions(n: int, offset=0) -> np.ndarray:
    """Tile position of each of ``n`` rows: its global row index modulo :data:`TILE`.

    ``offset``: the global index of the first row (an int), or every row's global
    index (an int array of length ``n``, for rows gathered from several chunks).
    """
    if isinstance(offset, (int, np.integer)):
        return (np.arange(n, dtype=np.int64) + int(offset)) % TILE
    return np.asarray(offset, dtype=np.int64) % TILE


class _Tiles:
    """Rows of a block (or a selection of them) in fixed-shape tiles, each row at a fixed place.

    Every tile is a ``(TILE, d)`` work-dtype array, and a row always sits at
    position ``global index % TILE`` of its tile (``pos``), whatever block it came
    in and whichever other rows are selected: BLAS computes a row's products
    with arithmetic that depends on the product's shape and on the row's place in
    it, and both are fixed. Rows sharing a position go to successive tiles.
    Iterating yields ``(ids, p, x)``: indices into the selection, their
    positions in the tile ``x`` (host int arrays); other rows of ``x`` are
    padding (finite, computed and ignored).
    """

    def __init__(self, xp, block, wd, rows=None, pos=None):
        self.xp, self.block, self.wd = xp, block, wd
        self.rows = None if rows is None else np.asarray(to_numpy(rows), dtype=np.int64)
        n_all = block.shape[0]
        pos = positions(n_all) if pos is None else pos
        self.sel_pos = pos if self.rows is None else pos[self.rows]
        self.n = self.sel_pos.shape[0]
        self.copyto = getattr(xp, "copyto", None)
        self.buf = _tile_buffer(xp, block.shape[1], wd) if self.copyto is not None and self.n else None

    def _plan(self):
        """Selection indices of each tile: the r-th row at a position goes to tile r."""
        p = self.sel_pos
        order = np.argsort(p, kind="stable")
        ps = p[order]
        rank = np.arange(ps.shape[0]) - np.searchsorted(ps, ps, side="left")
        rounds = np.empty_like(rank)
        rounds[order] = rank
        by_round = np.argsort(rounds, kind="stable")
        cuts = np.searchsorted(rounds[by_round], np.arange(1, rounds.max() + 1)) if self.n else []
        return np.split(by_round, cuts) if self.n else []

    def __iter__(self):
        xp = self.xp
        for ids in self._plan():
            p = self.sel_pos[ids]
            src = ids if self.rows is None else self.rows[ids]
            contiguous = src[-1] - src[0] == len(src) - 1 and p[-1] - p[0] == len(p) - 1
            if self.buf is not None and contiguous:
                self.copyto(self.buf[int(p[0]) : int(p[-1]) + 1, :], self.block[int(src[0]) : int(src[-1]) + 1, :])
                yield ids, p, self.buf
                continue
            tile_map = np.full(TILE, src[0], dtype=np.int64)
            tile_map[p] = src
            raw = xp.take(self.block, xp.asarray(tile_map), axis=0)
            if self.buf is not None:
                self.copyto(self.buf, raw)
                yield ids, p, self.buf
            else:
                yield ids, p, xp.astype(raw, self.wd)


def _in_order(xp, ids_list, values_list):
    """Per-tile results back in selection order (tiles hold rows grouped by position)."""
    if not values_list:
        return None
    ids = np.concatenate(ids_list)
    vals = values_list[0] if len(values_list) == 1 else xp.concat(values_list)
    if ids.shape[0] and np.any(np.diff(ids) < 0):
        vals = xp.take(vals, xp.asarray(np.argsort(ids, kind="stable")), axis=0)
    return vals


_BUFFERS = threading.local()


def _tile_buffer(xp, d, wd):
    """One (TILE, d) work buffer per thread, namespace and dtype, reused across calls.

    A fresh buffer per call is a fresh ``mmap`` on dask workers (distributed's
    ``MALLOC_TRIM_THRESHOLD_`` also fixes glibc's mmap threshold): page faults
    that cost more than filling it. Its rows beyond a tile's own are stale rows
    of earlier tiles: finite values, computed and ignored.
    """
    cache = getattr(_BUFFERS, "cache", None)
    if cache is None:
        cache = _BUFFERS.cache = {}
    key = (getattr(xp, "__name__", str(xp)), d, str(wd))
    buf = cache.get(key)
    if buf is None:
        buf = cache[key] = xp.zeros((TILE, d), dtype=wd)
    return buf


#: Rows shorter than this are measured in BLAS tiles (a register-blocked loop loses to BLAS on
#: short rows: measured 1.5x slower at d = 108, k = 400); longer rows by :func:`cpu_kernels.nearest`.
FUSED_MIN_D = 128


def fused(xp, block, k: int, metric: str) -> bool:
    """Whether a block's distances go through the fused compiled pass (:func:`cpu_kernels.nearest`).

    Decided by the namespace, the metric, the row length and the dtype only (never by the
    block's size or place), so every row of a fit is measured by the same arithmetic.
    """
    return (metric in ("l2", "cosine") and cpu_kernels.AVAILABLE and isinstance(block, np.ndarray)
            and block.ndim == 2 and block.shape[1] >= FUSED_MIN_D
            and (block.dtype.kind in "biu" or block.dtype in (np.float32, np.float64)))


def fused_tile(k: int, d: int, itemsize: int) -> int:
    """Rows measured against each block of 4 centres in :func:`cpu_kernels.nearest`: 4 while all
    the centres stay in a core's cache (they are read again for every 4 rows), more (64) when
    they do not, so a block of centres is read once per 64 rows. Changes the time, not a value."""
    return 4 if k * d * itemsize <= 256 * 1024 else 64


def fused_centres(centers, dtype, scale):
    """Centres as :func:`cpu_kernels.nearest` takes them: raw units in the work dtype (C order),
    and their squared norms in float64."""
    c = np.ascontiguousarray(_centers_raw(np, centers, work_dtype(np, dtype), scale))
    c64 = c.astype(np.float64)
    return c, np.einsum("ij,ij->i", c64, c64)


_EMPTY = {np.dtype(t): np.zeros((0,) * nd, dtype=t) for t, nd in ((np.float64, 1), (np.int64, 1))}
_NO_SUMS = np.zeros((0, 0), dtype=np.int64)


def _rows_of(block):
    """The block as the compiled pass reads it: C order, booleans as bytes."""
    block = np.ascontiguousarray(block)
    return block.view(np.uint8) if block.dtype == np.bool_ else block


def nearest_fused(block, rows, centers, scale, *, second=False, sq=False, k_sums=None, cc=None):
    """:func:`cpu_kernels.nearest` over ``block[rows]`` (``rows`` None: every row).

    ``cc``: the values added to ``-2 x.c`` (default the centres' squared norms: squared L2
    up to ``||x||^2``; zeros for cosine). Returns ``(labels int32, first float64, second
    float64 or None, sq float64 or None, sums or None, counts int64 or None)``; ``sums`` (k, d) are integers (int32 below
    2**31, else int64) for small-integer rows, float64 otherwise.
    """
    block = _rows_of(block)
    n_all, d = block.shape
    rows = np.arange(n_all, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    n = rows.shape[0]
    c, norms = fused_centres(centers, block.dtype, scale)
    cc = norms if cc is None else np.asarray(cc, dtype=np.float64)  # cosine: zeros (largest x.c wins)
    labels = np.zeros(n, dtype=np.int32)
    first = np.empty(n, dtype=np.float64)
    sec = np.empty(n, dtype=np.float64) if second else _EMPTY[np.dtype(np.float64)]
    sqv = np.empty(n, dtype=np.float64) if sq else _EMPTY[np.dtype(np.float64)]
    sums, counts = _NO_SUMS, _EMPTY[np.dtype(np.int64)]
    if k_sums is not None:
        if block.dtype.kind in "biu" and block.itemsize == 1:
            sums = np.zeros((k_sums, d), dtype=np.int32 if 255 * n < 2**31 else np.int64)
        else:
            sums = np.zeros((k_sums, d), dtype=np.float64)
        counts = np.zeros(k_sums, dtype=np.int64)
    if n:
        cpu_kernels.nearest(block, rows, c, cc, labels, first, sec, sums, counts, sqv, fused_tile(*c.shape, c.itemsize))
    return (labels, first, sec if second else None, sqv if sq else None,
            sums if k_sums is not None else None, counts if k_sums is not None else None)


def sum_sq(block) -> float:
    """Sum of the squared raw values of a block (float64; exact for small integers)."""
    xp = namespace(block)
    block = _flat(block, xp)
    if isinstance(block, np.ndarray) and cpu_kernels.AVAILABLE and block.ndim == 2:
        sq = np.empty(block.shape[0], dtype=np.float64)
        if block.shape[0]:
            cpu_kernels.rows_sq_any(_rows_of(block), sq)
        return float(sq.sum())
    return float(to_numpy(xp.sum(_exact_sq(xp, block))))


def _scan_fused(block, centers, scale, k_sums, weights):
    """:func:`_scan` by the fused compiled pass (NumPy blocks, l2). Unweighted sums never come
    here (:func:`lloyd_step` takes them from the pass itself); weighted sums are added after it."""
    lab, first, _, sq, _, _ = nearest_fused(block, None, centers, scale, sq=True)
    md = np.maximum(sq + first, 0.0) * (scale * scale)
    sums = counts = None
    if k_sums is not None:
        d = block.shape[1]
        sums, counts = np.zeros((k_sums, d), dtype=np.float64), np.zeros((k_sums,), dtype=np.float64)
        w = np.ones(block.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
        cpu_kernels.add_rows_weighted(sums, counts, _rows_of(block), lab, w)
    return lab, md, sums, counts


# -- spherical k-means: cosine similarity, centres the normalised means ------------------------

#: Unit rows are summed in fixed point: each value times 2**UNIT_BITS, rounded to an integer,
#: so the per-cluster sums are exact integers whatever their order (int64 on NumPy chunks).
UNIT_BITS = 32


def unit_centres(centers, dtype, scale):
    """Centres as the cosine pass compares them: raw units, each scaled to norm 1, in the work dtype."""
    c = np.asarray(_centers_raw(np, np.asarray(to_numpy(centers)), work_dtype(np, dtype), scale), dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", c, c))
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(c / norms[:, None], dtype=work_dtype(np, dtype))


def _scan_cosine(block, centers, scale, k_sums, offset, weights):
    """:func:`_scan` for ``metric="cosine"``: the label is the centre of largest ``x . c``
    (unit centres), its distance ``1 - cos``, and the sums are those of the unit rows
    (:data:`UNIT_BITS` fixed point: exact). Zero rows have no direction: NaN distance."""
    xp = namespace(block)
    n, d = block.shape
    cu = unit_centres(centers, block.dtype, scale)
    if fused(xp, block, len(centers), "cosine"):
        lab, first, _, sq, _, _ = nearest_fused(block, None, cu, 1.0, sq=True, cc=np.zeros(len(cu)))
        dots = -0.5 * first
    else:
        wd = work_dtype(xp, block.dtype)
        c = xp.asarray(cu)
        ct, cc = xp.matrix_transpose(c), xp.zeros((c.shape[0],), dtype=wd)
        ids_l, labels, best = [], [], []
        for ids, p, x in _Tiles(xp, block, wd, pos=positions(n, offset)):
            part = xp.take(_part(xp, x, ct, cc), xp.asarray(p), axis=0)
            ids_l.append(ids)
            labels.append(xp.astype(xp.argmin(part, axis=1), xp.int32))
            best.append(xp.min(part, axis=1))
        lab = _in_order(xp, ids_l, labels) if labels else xp.zeros((0,), dtype=xp.int32)
        dots = -0.5 * xp.astype(_in_order(xp, ids_l, best), xp.float64) if best else xp.zeros((0,), dtype=xp.float64)
        sq = _exact_sq(xp, block)
    with np.errstate(divide="ignore", invalid="ignore"):
        md = 1.0 - dots / xp.sqrt(sq)
    sums = counts = None
    if k_sums is not None:
        sums, counts = unit_sums(block, lab, k_sums, weights)
    return lab, md, sums, counts


def unit_sums(block, labels, k: int, weights=None):
    """Per-cluster sums of the rows scaled to norm 1, in units of 2**-UNIT_BITS (exact integers:
    int64 on NumPy chunks; float64 below 2**53 elsewhere), and the counts (total weights
    with ``weights``: then the sums are weighted float64, not exact)."""
    xp = namespace(block)
    block = _flat(block, xp)
    n, d = block.shape
    if isinstance(block, np.ndarray) and cpu_kernels.AVAILABLE:
        lab = np.asarray(labels, dtype=np.int32)
        if weights is not None:
            sums, counts = np.zeros((k, d)), np.zeros(k)
            cpu_kernels.add_unit_rows_weighted(sums, counts, _rows_of(block), lab, float(2.0**UNIT_BITS),
                                               np.asarray(weights, dtype=np.float64))
            return sums, counts
        sums, counts = np.zeros((k, d), dtype=np.int64), np.zeros(k, dtype=np.int64)
        cpu_kernels.add_unit_rows(sums, counts, _rows_of(block), lab, float(2.0**UNIT_BITS))
        return sums, counts
    ids = xp.arange(k, dtype=xp.int32)
    member = xp.astype(ids[:, None] == labels[None, :], xp.float64)
    if weights is not None:
        member = member * xp.asarray(weights, dtype=xp.float64)[None, :]
    sums = xp.zeros((k, d), dtype=xp.float64)
    for st in range(0, n, TILE):
        x = xp.astype(block[st : min(st + TILE, n), :], xp.float64)
        nrm = xp.sqrt(xp.vecdot(x, x))
        q = xp.round(x / xp.where(nrm == 0, 1.0, nrm)[:, None] * 2.0**UNIT_BITS)
        sums = sums + member[:, st : st + x.shape[0]] @ q
    counts = xp.sum(member, axis=1)
    return sums, (counts if weights is not None else xp.astype(counts, xp.int64))


def _part(xp, x, ct, cc):
    """``||c||^2 - 2 x.c`` for a full tile: the quantity whose argmin is the label."""
    return cc[None, :] - 2 * (x @ ct)


def _scan(block, centers, scale, metric, k_sums=None, offset=0, weights=None):
    """One pass over a block in fixed-shape tiles: nearest centre, its distance and
    (optionally) exact per-cluster sums and counts. ``offset``: see :func:`positions`.
    ``weights`` (n,) float64 or None: the sums are then weighted (float64, not exact)
    and the counts are the clusters' total weights (float64)."""
    xp = namespace(block)
    block = _flat(block, xp)
    if metric == "cosine":
        return _scan_cosine(block, centers, scale, k_sums, offset, weights)
    if fused(xp, block, len(centers), metric):
        return _scan_fused(block, centers, scale, k_sums, weights)
    n, d = block.shape
    wd = work_dtype(xp, block.dtype)
    c = _centers_raw(xp, centers, wd, scale)
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    compiled = _numba_sums(xp, block) and metric == "l2"
    ids_l, labels, mind = [], [], []
    for ids, p, x in _Tiles(xp, block, wd, pos=positions(n, offset)):
        pi = xp.asarray(p)
        if metric == "l2":
            part = xp.take(_part(xp, x, ct, cc), pi, axis=0)
            lab = xp.argmin(part, axis=1)
            md = xp.min(part, axis=1)  # + ||x||^2 below: it only shifts the minimum
            if not compiled:
                xs = xp.take(x, pi, axis=0)
                md = xp.clip(xp.vecdot(xs, xs) + md, min=0.0) * (scale * scale)
        else:
            dist = xp.take(_dist_w(xp, x, c, scale, metric), pi, axis=0)
            lab, md = xp.argmin(dist, axis=1), xp.min(dist, axis=1)
        ids_l.append(ids)
        labels.append(xp.astype(lab, xp.int32))
        mind.append(md)
    if not labels:
        lab, md = xp.zeros((0,), dtype=xp.int32), xp.zeros((0,), dtype=wd)
    else:
        lab, md = _in_order(xp, ids_l, labels), _in_order(xp, ids_l, mind)
    sums = counts = None
    if compiled:  # exact squared norms from the same pass that sums the rows
        sq = np.empty(n, dtype=np.float64)
        if k_sums is None or weights is not None:
            cpu_kernels.rows_sq(block, sq)
        if k_sums is not None and weights is not None:
            sums, counts = np.zeros((k_sums, d), dtype=np.float64), np.zeros((k_sums,), dtype=np.float64)
            cpu_kernels.add_rows_weighted(sums, counts, block, lab, np.asarray(weights, dtype=np.float64))
        elif k_sums is not None:
            sums = np.zeros((k_sums, d), dtype=np.int32 if 255 * n < 2**31 else np.int64)
            counts = np.zeros((k_sums,), dtype=np.int64)
            cpu_kernels.add_rows_sq(sums, counts, block, lab, sq)
            sums = sums.astype(np.float64)
        md = np.maximum(sq + md, 0.0) * (scale * scale)
    elif k_sums is not None:
        sums, counts, _ = _cluster_sums(xp, block, xp.arange(n, dtype=xp.int64), lab, None,
                                        xp.zeros((n,), dtype=xp.float64), k_sums, weights)
    return lab, md, sums, counts


def assign(block, centers, scale: float = 1.0, metric: str = "l2", offset=0):
    """Nearest centre of each row and its distance.

    Returns
    -------
    labels : array (n,) int32
    mindist : array (n,) work dtype
    """
    labels, mind, _, _ = _scan(block, centers, scale, metric, offset=offset)
    return labels, mind


def lloyd_step(block, centers, old_labels=None, *, scale: float = 1.0, metric: str = "l2", offset=0, weights=None,
               sq_total=None):
    """One Lloyd iteration on one block: assignment, then partial sums.

    Parameters
    ----------
    block : array (n, d) of raw values
    centers : array-like (k, d) in centres' units
    old_labels : array (n,) int32 or None
        This block's labels from the previous iteration (per-chunk state kept
        on the workers); None on the first iteration (every label counts as
        changed).
    weights : array (n,) or None
        Sample weights: the sums are weighted, the counts are the clusters'
        total weights (float64) and the inertia is weighted.
    sq_total : float or None
        :func:`sum_sq` of the block, when the caller keeps it (fused pass, no
        weights): the inertia then comes from it and the exact per-cluster sums,
        ``sum ||x||^2 - 2 sum_j c_j . S_j + sum_j n_j ||c_j||^2``, and no row's
        squared norm is computed again.

    Returns
    -------
    labels : array (n,) int32
    partial : tuple (sums (k, d) float64 raw units, counts (k,) int64,
        inertia () float64 in centres' units, changed () int64)
    """
    xp = namespace(block)
    block = _flat(block, xp)
    if weights is None and metric == "l2" and fused(xp, block, len(centers), metric):
        labels, _, _, _, sums, counts = nearest_fused(block, None, centers, scale, k_sums=len(centers))
        c, cc = fused_centres(centers, block.dtype, scale)
        sums = sums.astype(np.float64)
        sq = sum_sq(block) if sq_total is None else float(sq_total)
        inertia = max(sq - 2 * float(np.einsum("ij,ij->", c.astype(np.float64), sums)) + float(counts @ cc), 0.0)
        changed = labels.shape[0] if old_labels is None else int(np.count_nonzero(labels != old_labels))
        return labels, (sums, counts, np.float64(inertia * scale * scale), np.int64(changed))
    if weights is not None:
        weights = xp.asarray(weights, dtype=xp.float64)
    labels, mind, sums, counts = _scan(block, centers, scale, metric, k_sums=len(centers), offset=offset,
                                       weights=weights)
    mind = xp.astype(mind, xp.float64)
    inertia = xp.sum(mind if weights is None else mind * weights)
    if old_labels is None:
        changed = xp.asarray(labels.shape[0], dtype=xp.int64)
    else:
        changed = xp.sum(xp.astype(labels != old_labels, xp.int64))
    return labels, (sums, counts, inertia, changed)


def assign_step(block, centers, *, scale: float = 1.0, metric: str = "l2", offset=0):
    """Final E-step / predict on one block: labels and partial inertia."""
    xp = namespace(block)
    labels, mind = assign(block, centers, scale, metric, offset)
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


def moments(block, unit: bool = False):
    """Exact per-feature count, sum and sum of squares of raw values (float64).

    Used for scikit-learn's tolerance: ``tol * mean(var(X, axis=0))``. ``unit``: of the
    rows scaled to norm 1 (spherical k-means; float64 sums, zero rows left out of nothing).
    """
    xp = namespace(block)
    block = _flat(block, xp)
    n, d = block.shape
    if unit:
        s1, s2 = xp.zeros((d,), dtype=xp.float64), xp.zeros((d,), dtype=xp.float64)
        for st in range(0, n, TILE):
            x = xp.astype(block[st : min(st + TILE, n), :], xp.float64)
            nrm = xp.sqrt(xp.vecdot(x, x))
            x = x / xp.where(nrm == 0, 1.0, nrm)[:, None]
            s1, s2 = s1 + xp.sum(x, axis=0), s2 + xp.sum(x * x, axis=0)
        return xp.asarray(n, dtype=xp.int64), s1, s2
    exact = _is_small_int(xp, block.dtype)  # integer sums: exact in any order
    acc = xp.int64 if exact else xp.float64
    s1, s2 = xp.zeros((d,), dtype=acc), xp.zeros((d,), dtype=acc)
    for st in range(0, n, TILE):  # a tile at a time: no (n, d) float64 copy of the block
        x = xp.astype(block[st : min(st + TILE, n), :], acc)
        s1 = s1 + xp.sum(x, axis=0)
        s2 = s2 + xp.sum(x * x, axis=0)
    return xp.asarray(n, dtype=xp.int64), xp.astype(s1, xp.float64), xp.astype(s2, xp.float64)


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
    labels, mind = assign(block, centers, scale, metric, offset)
    mind = xp.astype(mind, xp.float64)
    order = xp.argsort(-mind, stable=True)[:m]
    if isinstance(offset, (int, np.integer)):
        idx = xp.astype(order, xp.int64) + int(offset)
    else:  # every row's global index (rows of several chunks)
        idx = xp.take(xp.asarray(np.asarray(offset, dtype=np.int64)), order)
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


def _exact_sq(xp, block):
    """Squared norms of raw rows in float64, a tile at a time (exact for small integers)."""
    parts = []
    for st in range(0, block.shape[0], TILE):
        r64 = xp.astype(block[st : min(st + TILE, block.shape[0]), :], xp.float64)
        parts.append(xp.vecdot(r64, r64))
    if not parts:
        return xp.zeros((0,), dtype=xp.float64)
    return parts[0] if len(parts) == 1 else xp.concat(parts)


def _raw_sq_dist(block, centers, scale):
    """Squared distances ``(n, m)`` between raw rows and centres, in raw units.

    For small-integer rows and centres that are rows of the data (k-means++
    candidates), the float64 product sums integers below 2**53: every value is
    exact, whatever the summation order, so the potentials built from them are
    too. Other data use the work dtype.
    """
    xp = namespace(block)
    block = _flat(block, xp)
    c = np.asarray(centers, dtype=np.float64) / scale
    exact = _is_small_int(xp, block.dtype) and bool(np.all(np.abs(c - np.rint(c)) < 1e-6))
    wd = xp.float64 if exact else work_dtype(xp, block.dtype)
    c = xp.asarray(np.rint(c) if exact else c, dtype=wd)
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    parts = []
    for st in range(0, block.shape[0], TILE):
        x = xp.astype(block[st : min(st + TILE, block.shape[0]), :], wd)
        parts.append(xp.clip(xp.vecdot(x, x)[:, None] - 2 * (x @ ct) + cc[None, :], min=0.0))
    if not parts:
        return xp.zeros((0, c.shape[0]), dtype=wd)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def weigh(xp, values, weights):
    """``values`` (float64) times the rows' ``weights`` (None: unweighted)."""
    values = xp.astype(values, xp.float64)
    if weights is None:
        return values
    w = xp.asarray(weights, dtype=xp.float64)
    return values * (w if values.ndim == 1 else w[:, None])


def closest_sq_dist(block, center, *, scale: float = 1.0, weights=None):
    """Squared distance of each row to one centre (raw units: see :func:`_raw_sq_dist`), and their float64
    sum (weighted by ``weights`` when given: scikit-learn's potential ``closest @ sample_weight``)."""
    xp = namespace(block)
    d = _raw_sq_dist(block, center, scale)[:, 0]
    return d, xp.sum(weigh(xp, d, weights))


def locate(block, closest, targets, weights=None):
    """Rows whose running sum of ``closest`` (times ``weights`` when given) first reaches each target.

    ``np.searchsorted(np.cumsum(closest), targets)`` within one block (targets
    are already relative to the block's start), clipped to the block.

    Returns
    -------
    local : array (t,) int64 row positions; rows : array (t, d) raw values
    """
    xp = namespace(block)
    block = _flat(block, xp)
    cum = xp.cumulative_sum(weigh(xp, closest, weights))
    t = xp.asarray(targets, dtype=xp.float64)
    local = xp.searchsorted(cum, t)
    local = xp.clip(xp.astype(local, xp.int64), max=block.shape[0] - 1)
    return local, xp.take(block, local, axis=0)


def candidate_pots(block, closest, candidates, *, scale: float = 1.0, weights=None):
    """For each candidate centre: min(closest, distance to it) per row (raw units), and its sum
    (weighted by ``weights`` when given).

    Returns
    -------
    mins : array (n, m); pots : array (m,) float64
    """
    xp = namespace(block)
    d = _raw_sq_dist(block, candidates, scale)
    mins = xp.minimum(d, xp.astype(closest, d.dtype)[:, None])
    return mins, xp.sum(weigh(xp, mins, weights), axis=0)


def column(a, j: int):
    """``a[:, j]`` as a task (per-chunk state selection)."""
    return a[:, j]


# -- Hamerly's bounds: Lloyd's labels with most distances skipped ---------------------


def _dot_error(xp, wd, d: int) -> float:
    """Relative error bound of a length-``d`` dot product in ``wd`` (Higham's gamma_d),
    with 10% slack for the additions around it."""
    u = 2.0**-24 if wd == xp.float32 else 2.0**-53
    d = d + 2  # the squared norm of the centre and the final subtraction round too
    return 1.1 * d * u / (1 - d * u)


def hamerly_step(block, centers, state=None, shifts=None, half_sep=None, *, scale: float = 1.0, full: bool = False,
                 offset=0):
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
    c64 = xp.astype(c, xp.float64)
    cmax = xp.sqrt(xp.max(xp.vecdot(c64, c64)))
    eps = _dot_error(xp, wd, d)
    old = None if state is None else state[0]
    have_bounds = state is not None and state[1] is not None and not full
    if have_bounds:
        upper, lower, norms, sure = _moved_bounds(xp, state, shifts, half_sep, eps, cmax)
        rows = xp.nonzero(~sure)[0]
        sel = xp.astype(rows, xp.int64)
        exact_sq = xp.take(norms, sel)  # the same rows as before: their squared norms are kept
    else:
        rows, sure = None, None  # all
        sel = xp.arange(n, dtype=xp.int64)
        exact_sq = _exact_sq(xp, block)  # exact for integer pixels
    lab_c, first, second = _nearest_two(xp, block, rows, c, wd, positions(n, offset), (centers, scale))
    nrm = xp.sqrt(exact_sq) * (1 + 1e-12)
    err = eps * (nrm + cmax) ** 2  # bounds |what Lloyd computes - the exact value|
    up_c = xp.sqrt(xp.clip(exact_sq + first + err, min=0.0))
    lo_c = xp.sqrt(xp.clip(exact_sq + second - err, min=0.0))
    o = None if old is None else xp.take(old, sel)
    sums, counts, sq = _cluster_sums(xp, block, sel, lab_c, o if have_bounds else None, exact_sq, k)
    if old is None:
        changed = xp.asarray(n, dtype=xp.int64)
    else:
        changed = xp.sum(xp.astype(o != lab_c, xp.int64))
    if rows is None:
        new_state = (lab_c, up_c, lo_c, exact_sq)
    elif rows.shape[0]:
        # row i of the block is row pos[i] of the measured ones (where it was measured)
        need = ~sure
        pos = xp.clip(xp.cumulative_sum(xp.astype(need, xp.int64)) - 1, min=0)
        new_state = tuple(
            xp.where(need, xp.take(v, pos), w) for v, w in ((lab_c, old), (up_c, upper), (lo_c, lower), (exact_sq, norms))
        )
    else:
        new_state = (old, upper, lower, norms)
    computed = xp.asarray(sel.shape[0], dtype=xp.int64)
    return new_state, (sums, counts, sq, changed, computed)


def _moved_bounds(xp, state, shifts, half_sep, eps, cmax):
    """Bounds moved by the centres' shifts, and which rows they prove (with the rounding margin)."""
    old, upper, lower, norms = state
    sh = xp.asarray(shifts, dtype=xp.float64)
    k = sh.shape[0]
    a = xp.astype(old, xp.int64)
    upper = upper + xp.take(sh, a)
    # every other centre may have come closer by at most the largest other shift
    order = xp.argsort(-sh, stable=True)
    top1 = order[0]
    top2 = sh[order[1]] if k > 1 else xp.asarray(0.0, dtype=xp.float64)
    lower = lower - xp.where(a == top1, top2, sh[top1])
    hs = xp.take(xp.asarray(half_sep, dtype=xp.float64), a)
    two_e = 2 * eps * (xp.sqrt(norms) * (1 + 1e-12) + cmax) ** 2
    sure = ((upper < hs) & (4 * hs * (hs - upper) > two_e)) | ((lower > upper) & (lower * lower - upper * upper > two_e))
    return upper, lower, norms, sure


def _nearest_two(xp, block, rows, c, wd, pos, given=None):
    """Labels and the best and second-best ``||c||^2 - 2 x.c`` (float64) of the selected rows,
    by the same arithmetic as :func:`lloyd_step`'s (so the labels are Lloyd's): the fused pass,
    or the same tiles and places. ``given``: the centres as passed (centres' units) and the scale."""
    k = c.shape[0]
    if given is not None and fused(xp, block, k, "l2"):
        return nearest_fused(block, rows, given[0], given[1], second=True)[:3]
    ct, cc = xp.matrix_transpose(c), xp.vecdot(c, c)
    ids = xp.arange(k, dtype=xp.int32)
    sel, labs, firsts, seconds = [], [], [], []
    for tids, p, x in _Tiles(xp, block, wd, rows, pos):
        part = xp.take(_part(xp, x, ct, cc), xp.asarray(p), axis=0)
        lab = xp.astype(xp.argmin(part, axis=1), xp.int32)
        firsts.append(xp.min(part, axis=1))
        if k > 1:
            seconds.append(xp.min(xp.where(lab[:, None] == ids[None, :], xp.asarray(xp.inf, dtype=wd), part), axis=1))
        else:
            seconds.append(xp.full((len(tids),), xp.inf, dtype=wd))
        labs.append(lab)
        sel.append(tids)
    if not labs:
        z = xp.zeros((0,), dtype=xp.float64)
        return xp.zeros((0,), dtype=xp.int32), z, z
    return (_in_order(xp, sel, labs), xp.astype(_in_order(xp, sel, firsts), xp.float64),
            xp.astype(_in_order(xp, sel, seconds), xp.float64))


def _cluster_sums(xp, block, sel, new, old, exact_sq, k, weights=None):
    """Per-cluster (sums, counts, squared norms) of the measured rows ``sel``.

    With ``old`` None: the totals of the rows under their ``new`` labels;
    otherwise only the changes: +row into the new cluster, -row out of the old.
    ``weights`` (of the rows ``sel``; totals only): weighted sums and total
    weights as float64 counts.
    """
    d = block.shape[1]
    ids = xp.arange(k, dtype=xp.int32)
    member = xp.astype(ids[:, None] == new[None, :], xp.float64)
    if weights is not None:
        member = member * xp.asarray(weights, dtype=xp.float64)[None, :]
        sums = xp.zeros((k, d), dtype=xp.float64)
        for s in range(0, sel.shape[0], TILE):
            e = min(s + TILE, sel.shape[0])
            sums = sums + member[:, s:e] @ xp.astype(xp.take(block, sel[s:e], axis=0), xp.float64)
        return sums, xp.sum(member, axis=1), member @ exact_sq
    if old is not None:
        moved = xp.astype(old != new, xp.float64)
        member = (member - xp.astype(ids[:, None] == old[None, :], xp.float64)) * moved[None, :]
    counts = xp.astype(xp.sum(member, axis=1), xp.int64)
    sq = member @ exact_sq
    if _numba_sums(xp, block):
        sums = np.zeros((k, d), dtype=np.int64)
        cnt = np.zeros((k,), dtype=np.int64)
        if old is None:
            cpu_kernels.add_rows(sums, cnt, block, sel, new)
        else:
            cpu_kernels.move_rows(sums, cnt, block, sel, old, new)
        return sums.astype(np.float64), counts, sq
    sums = xp.zeros((k, d), dtype=xp.float64)
    small_int = _is_small_int(xp, block.dtype)
    for s in range(0, sel.shape[0], TILE):
        e = min(s + TILE, sel.shape[0])
        idx = sel[s:e]
        raw = xp.take(block, idx, axis=0)
        xs = xp.astype(raw, xp.float32 if small_int else xp.float64)  # exact: see module doc
        sums = sums + xp.astype(xp.astype(member[:, s:e], xs.dtype) @ xs, xp.float64)
    return sums, counts, sq


def cluster_totals(block, labels, k: int):
    """Per-cluster (sums (k, d) float64, counts (k,) int64, squared norms (k,) float64)
    of a block's raw rows under ``labels``; exact for small integers."""
    xp = namespace(block)
    block = _flat(block, xp)
    sel = xp.arange(block.shape[0], dtype=xp.int64)
    return _cluster_sums(xp, block, sel, labels, None, _exact_sq(xp, block), k)
