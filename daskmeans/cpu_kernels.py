"""Compiled loops for NumPy blocks (numba): per-cluster integer sums. No dask here.

Adding each uint8 row to its cluster's int64 sums is exact, so its order never
matters, and it costs one pass over the rows with no (k, n) one-hot temporary.
The array-API kernels call these for NumPy blocks of small integers and keep
their one-hot product for other backends (CuPy) and dtypes.
"""

from __future__ import annotations

import numpy as np

try:  # a declared dependency; without it the array-API code path runs instead
    import numba
except ImportError:  # pragma: no cover - only where numba is missing
    numba = None

AVAILABLE = numba is not None

if AVAILABLE:
    _jit = numba.njit(nogil=True, cache=True, boundscheck=False)

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
    def rows_sq(block, sq):
        """Exact squared norm of every small-integer row into ``sq`` (float64)."""
        n, d = block.shape
        for r in range(n):
            b = block[r]
            acc = 0
            for j in range(d):
                acc += np.int64(b[j]) * np.int64(b[j])
            sq[r] = acc
