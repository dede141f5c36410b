"""What every algorithm's step returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..backend import namespace


@dataclass
class StepResult:
    """One pass over the data with fixed centres.

    sums : (k, d) float64, raw units: per-cluster sums of the rows (exact for pixels;
        weighted by the sample weights when there are any)
    counts : (k,) int64, or float64 total weights with sample weights
    inertia : float, centres' units, for the centres of this step
    changed : int, rows whose label differs from the previous step (all rows on the first)
    computed : int or None, rows whose distances were measured (None: all)
    """

    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    changed: int
    computed: int | None = None


class Algorithm:
    """What every algorithm shares: ``step`` is ``prepare``, one pass, ``finish``."""

    placement = None

    def step(self, centers, prev, iteration: int) -> StepResult:
        """One pass over the data with ``centers``; see :mod:`daskmeans.algorithms`."""
        func, shared = self.prepare(centers, prev, iteration)
        return self.finish(self.placement.run(func, shared, iteration))


#: A group whose chunks average fewer rows than this is measured as one block.
MERGE_BELOW = 4 * kernels.TILE


def merged(blocks: list, offsets: list) -> list:
    """A group's chunks as the kernel should see them: ``[(block, offset), ...]``.

    Small chunks are concatenated: each chunk costs a call and a partly filled
    tile, and a group of many small chunks (1,000 chunks of 50 rows) would spend
    most of its time there. A row's label does not depend on its block (see
    :mod:`daskmeans.kernels`: its tile place comes from its global index, which
    the merged block carries as ``offset`` = every row's global index), so this
    changes the time, never a result. The decision depends only on the chunk
    sizes, so a group's state keeps one layout from iteration to iteration.
    """
    if len(blocks) <= 1 or sum(b.shape[0] for b in blocks) >= MERGE_BELOW * len(blocks):
        return list(zip(blocks, offsets))
    xp = namespace(blocks[0])
    rows = np.concatenate([np.arange(o, o + b.shape[0], dtype=np.int64) for b, o in zip(blocks, offsets)])
    return [(xp.concat(list(blocks), axis=0), rows)]  # rows of 2-D chunks


def with_weights(blocks: list, offsets: list, weights) -> list:
    """:func:`merged`, each item with its rows' sample weights: ``[(block, offset, w or None), ...]``.

    ``weights`` are the group's (its chunks' rows in order, as :func:`merged` keeps them) or None.
    """
    pairs = merged(blocks, offsets)
    if weights is None:
        return [(b, o, None) for b, o in pairs]
    out, start = [], 0
    for b, o in pairs:
        out.append((b, o, weights[start : start + b.shape[0]]))
        start += b.shape[0]
    return out


def many_group(states, blocks, offsets, shared):
    """Several runs' group functions over one group's chunks, in one task: a pass shared by runs.

    ``shared["parts"]``: ``{run id: (group function, its shared arguments)}``; each
    run keeps its own per-chunk state (``states`` maps run id -> state) and makes
    exactly the kernel calls it makes alone, so sharing a pass changes no result.
    Returns the runs' partials as a tuple in the order of their sorted ids.
    """
    weights = shared.get("weights")
    states = states or {}
    pairs = merged(blocks, offsets)  # once for all runs (each run's own call then finds nothing to merge)
    blocks, offsets = [b for b, _ in pairs], [o for _, o in pairs]
    new, parts = {}, []
    for rid in sorted(shared["parts"]):
        func, sh = shared["parts"][rid]
        if weights is not None:
            sh = {**sh, "weights": weights}
        new[rid], part = func(states.get(rid), blocks, offsets, sh)
        parts.append(part)
    return new, tuple(parts)
