"""Small graph-building helpers shared by every distributed pass (no math here).

A pass maps a pure kernel over the row blocks of a dask array, then sums (or
merges) the per-block partials in a tree with fan-in ``split_every`` so that
no single task receives every partial.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from dask import delayed

from . import kernels
from .backend import to_numpy


def blocks(X: da.Array) -> list:
    """The row blocks of a 2-D dask array as a list of Delayed objects."""
    return list(X.to_delayed(optimize_graph=True).ravel())


def offsets(X: da.Array) -> np.ndarray:
    """Global index of each block's first row, plus the total: ``(n_blocks + 1,)`` int64."""
    return np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)


def tree_reduce(parts, split_every: int, func=kernels.combine, *args):
    """Reduce Delayed partials ``split_every`` at a time with ``func(*args, *group)``."""
    split_every = max(2, int(split_every))
    while len(parts) > 1:
        parts = [
            delayed(func, pure=False)(*args, *parts[i : i + split_every])
            for i in range(0, len(parts), split_every)
        ]
    return parts[0]


def host(x):
    """Bring a (tuple of) small result array(s) to NumPy on the client side."""
    if isinstance(x, tuple):
        return tuple(host(v) for v in x)
    return to_numpy(x)
