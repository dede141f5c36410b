"""Compiled loops for NumPy blocks (numba): per-cluster integer sums. No dask here.

Adding each uint8 row to its cluster's int64 sums is exact, so its order never
matters, and it costs one pass over the rows with no (k, n) one-hot temporary.
The array-API kernels call these for NumPy blocks of small integers and keep
their one-hot product for other backends (CuPy) and dtypes.
"""

from __future__ import annotations

import numpy as np

from .jit import AVAILABLE, njit

if AVAILABLE:
    _jit = njit(nogil=True, boundscheck=False)
    # Reassociation and contraction only (no nnan/ninf): LLVM may vectorise the dot products'
    # summation, an order fixed when the function is compiled, the same for every row.
    _fused = njit(nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})

    @_jit
    def add_rows(sums, counts, block, rows, labels):
        """``sums[labels[i]] += block[rows[i]]``, ``counts[labels[i]] += 1`` for every i (in place)."""
        d = block.shape[1]
        for i in range(rows.shape[0]):
            r = rows[i]
            lab = labels[i]
            counts[lab] += 1
            for j in range(d):
                sums[lab, j] += block[r, j]

    @_jit
    def move_rows(sums, counts, block, rows, old, new):
        """Move ``block[rows[i]]`` from cluster ``old[i]`` to ``new[i]`` where they differ (in place)."""
        d = block.shape[1]
        for i in range(rows.shape[0]):
            a = old[i]
            b = new[i]
            if a == b:
                continue
            r = rows[i]
            counts[a] -= 1
            counts[b] += 1
            for j in range(d):
                v = block[r, j]
                sums[b, j] += v
                sums[a, j] -= v

    @_jit
    def add_rows_sq(sums, counts, block, labels, sq):
        """Every row into its cluster's sums (``sums[labels[r]] += block[r]``) and its
        exact squared norm into ``sq[r]``, in one pass over the row (in place).

        ``sums`` may be int32 when ``255 * n < 2**31`` (half the memory traffic)."""
        n, d = block.shape
        for r in range(n):
            lab = labels[r]
            counts[lab] += 1
            s = sums[lab]
            b = block[r]
            acc = 0
            for j in range(d):
                v = b[j]
                s[j] += v
                acc += np.int64(v) * np.int64(v)
            sq[r] = acc

    @_jit
    def add_rows_weighted(sums, wsum, block, labels, w):
        """``sums[labels[r]] += w[r] * block[r]`` and ``wsum[labels[r]] += w[r]`` (float64, in place)."""
        n, d = block.shape
        for r in range(n):
            lab = labels[r]
            wr = w[r]
            wsum[lab] += wr
            s = sums[lab]
            b = block[r]
            for j in range(d):
                s[j] += wr * b[j]

    @_jit
    def add_unit_rows(sums, counts, block, labels, unit):
        """``sums[labels[r]] += rint(block[r] / ||block[r]|| * unit)`` (int64, in place): the unit
        rows in fixed point, each value rounded once (IEEE, no fast-math), so the sums are exact
        integers whatever their order. Zero rows add nothing but count."""
        n, d = block.shape
        for r in range(n):
            b = block[r]
            acc = 0.0
            for j in range(d):
                v = np.float64(b[j])
                acc += v * v
            lab = labels[r]
            counts[lab] += 1
            if acc == 0.0:
                continue
            nrm = np.sqrt(acc)
            s = sums[lab]
            for j in range(d):
                s[j] += np.int64(np.rint(np.float64(b[j]) / nrm * unit))

    @_jit
    def add_unit_rows_weighted(sums, wsum, block, labels, unit, w):
        """:func:`add_unit_rows` with each row times its weight ``w[r]`` (float64 sums and weights)."""
        n, d = block.shape
        for r in range(n):
            b = block[r]
            acc = 0.0
            for j in range(d):
                v = np.float64(b[j])
                acc += v * v
            lab = labels[r]
            wsum[lab] += w[r]
            if acc == 0.0:
                continue
            nrm = np.sqrt(acc)
            s = sums[lab]
            for j in range(d):
                s[j] += w[r] * np.rint(np.float64(b[j]) / nrm * unit)

    @_fused
    def rows_sq_any(block, sq):
        """``sq[r] = sum(block[r] ** 2)`` in float64 for any numeric rows (exact for small integers)."""
        n, d = block.shape
        for r in range(n):
            b = block[r]
            acc = 0.0
            for j in range(d):
                v = np.float64(b[j])
                acc += v * v
            sq[r] = acc

    @_jit
    def rows_sq(block, sq):
        """Exact squared norm of every small-integer row into ``sq`` (float64)."""
        n, d = block.shape
        for r in range(n):
            b = block[r]
            acc = 0
            for j in range(d):
                acc += np.int64(b[j]) * np.int64(b[j])
            sq[r] = acc


# -- the fused pass: nearest centres (and per-cluster sums) in one read of each row --------

#: Rows and centres per register block of :func:`nearest`.
ROWS, CENTRES = 4, 4

if AVAILABLE:
    @_fused
    def _keep(p, j, best, sec, lab):
        """Update a row's best and second-best value (and the best's centre) with centre ``j``'s ``p``."""
        if p < best:
            return p, best, j
        if p < sec:
            return best, p, lab
        return best, sec, lab

    @_fused
    def _keep4(cc, j, k, a0, a1, a2, a3, best, sec, lab):
        """:func:`_keep` for centres ``j .. j+3`` (those below ``k``) and their products ``a0 .. a3``."""
        best, sec, lab = _keep(cc[j] - 2.0 * np.float64(a0), j, best, sec, lab)
        if j + 1 < k:
            best, sec, lab = _keep(cc[j + 1] - 2.0 * np.float64(a1), j + 1, best, sec, lab)
        if j + 2 < k:
            best, sec, lab = _keep(cc[j + 2] - 2.0 * np.float64(a2), j + 2, best, sec, lab)
        if j + 3 < k:
            best, sec, lab = _keep(cc[j + 3] - 2.0 * np.float64(a3), j + 3, best, sec, lab)
        return best, sec, lab

    @_fused
    def _emit(i, n, best, sec, lab, x, labels, first, second, sums, counts, sq):
        """Row ``i``'s results (nothing past ``n``: a group's padding), and the optional outputs."""
        if i >= n:
            return
        labels[i] = lab
        first[i] = best
        if second.shape[0] > 0:
            second[i] = sec
        if sq.shape[0] > 0:
            acc = 0.0
            for f in range(x.shape[0]):
                v = np.float64(x[f])
                acc += v * v
            sq[i] = acc
        if sums.shape[0] > 0:
            counts[lab] += 1
            srow = sums[lab]
            for f in range(x.shape[0]):
                srow[f] += x[f]

    @_fused
    def nearest(block, rows, c, cc, labels, first, second, sums, counts, sq, tile):
        """For each selected row ``x = block[rows[i]]``: the centre ``j`` with the least
        ``cc[j] - 2 x.c[j]`` (ties: the lower ``j``) into ``labels[i]``, that value into
        ``first[i]`` and the second least (any other centre) into ``second[i]`` (float64).

        The products ``x.c[j]`` run in ``c``'s dtype (float32 for pixels, the rows converted
        in registers), :data:`ROWS` rows against :data:`CENTRES` centres at a time, over
        ``tile`` rows (a multiple of 4) for each block of centres, so that many centres
        stay in cache while the rows pass; a group that runs past the rows or the centres
        repeats its last one, so every product goes through the same instructions wherever
        its row and centre sit: a row's values do not depend on its block, its place, the
        tile or the other rows and centres. Optionally, in the same read of the row (empty
        arrays: skipped): ``sq[i] = sum(x * x)`` in float64 (exact for small integers) and
        ``sums[labels[i]] += x``, ``counts[labels[i]] += 1``.
        """
        n = rows.shape[0]
        k, d = c.shape
        zero = c[0, 0] - c[0, 0]
        last = n - 1
        best = np.empty(tile, dtype=np.float64)
        sec = np.empty(tile, dtype=np.float64)
        lab = np.zeros(tile, dtype=np.int64)
        for t0 in range(0, n, tile):
            best[:] = np.inf
            sec[:] = np.inf
            lab[:] = 0
            for j in range(0, k, 4):
                c0 = c[j]
                c1 = c[min(j + 1, k - 1)]
                c2 = c[min(j + 2, k - 1)]
                c3 = c[min(j + 3, k - 1)]
                for g in range(0, min(tile, n - t0), 4):
                    x0 = block[rows[t0 + g]]
                    x1 = block[rows[min(t0 + g + 1, last)]]
                    x2 = block[rows[min(t0 + g + 2, last)]]
                    x3 = block[rows[min(t0 + g + 3, last)]]
                    a00 = a01 = a02 = a03 = zero
                    a10 = a11 = a12 = a13 = zero
                    a20 = a21 = a22 = a23 = zero
                    a30 = a31 = a32 = a33 = zero
                    for f in range(d):
                        y0 = x0[f] + zero
                        y1 = x1[f] + zero
                        y2 = x2[f] + zero
                        y3 = x3[f] + zero
                        v = c0[f]
                        a00 += y0 * v
                        a10 += y1 * v
                        a20 += y2 * v
                        a30 += y3 * v
                        v = c1[f]
                        a01 += y0 * v
                        a11 += y1 * v
                        a21 += y2 * v
                        a31 += y3 * v
                        v = c2[f]
                        a02 += y0 * v
                        a12 += y1 * v
                        a22 += y2 * v
                        a32 += y3 * v
                        v = c3[f]
                        a03 += y0 * v
                        a13 += y1 * v
                        a23 += y2 * v
                        a33 += y3 * v
                    best[g], sec[g], lab[g] = _keep4(cc, j, k, a00, a01, a02, a03, best[g], sec[g], lab[g])
                    best[g + 1], sec[g + 1], lab[g + 1] = _keep4(cc, j, k, a10, a11, a12, a13, best[g + 1],
                                                                 sec[g + 1], lab[g + 1])
                    best[g + 2], sec[g + 2], lab[g + 2] = _keep4(cc, j, k, a20, a21, a22, a23, best[g + 2],
                                                                 sec[g + 2], lab[g + 2])
                    best[g + 3], sec[g + 3], lab[g + 3] = _keep4(cc, j, k, a30, a31, a32, a33, best[g + 3],
                                                                 sec[g + 3], lab[g + 3])
            for g in range(min(tile, n - t0)):
                _emit(t0 + g, n, best[g], sec[g], lab[g], block[rows[t0 + g]], labels, first, second, sums, counts, sq)
