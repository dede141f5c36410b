"""Lloyd's algorithm: every row measured against every centre in every step."""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..backend import namespace
from .base import Algorithm, StepResult, with_weights


def lloyd_group(states, blocks, offsets, shared):
    """Per group: each chunk's state is its labels (to count changed rows) and the sum of
    its rows' squared values (the inertia comes from it and the exact per-cluster sums)."""
    c, prev, scale, metric = shared["centers"], shared["prev"], shared["scale"], shared["metric"]
    new, total = [], None
    for i, (block, offset, w) in enumerate(with_weights(blocks, offsets, shared.get("weights"))):
        old, sq = states[i] if states is not None else (None, None)
        if old is None and prev is not None:  # lost or resumed: the labels prev gave
            old = kernels.assign(block, prev, scale, metric, offset)[0]
        if sq is None and w is None and kernels.fused(namespace(block), block, len(c), metric):
            sq = kernels.sum_sq(block)
        labels, part = kernels.lloyd_step(block, c, old, scale=scale, metric=metric, offset=offset, weights=w,
                                          sq_total=sq)
        new.append((labels, sq))
        total = part if total is None else kernels.combine(total, part)
    return new, total


class Lloyd(Algorithm):
    """Lloyd steps over a :class:`~daskmeans.placement.Placement` (any metric, any dtype, any weights)."""

    name = "lloyd"

    def __init__(self, placement, *, scale: float, metric: str):
        self.placement, self.scale, self.metric = placement, scale, metric

    def prepare(self, centers, prev, iteration: int):
        """The group function and its shared arguments for one step (see :meth:`step`)."""
        return lloyd_group, {"centers": centers, "prev": prev, "scale": self.scale, "metric": self.metric}

    def finish(self, partial) -> StepResult:
        """The step's result from the groups' summed ``partial``."""
        sums, counts, inertia, changed = partial
        weighted = self.placement.weights is not None  # counts are total weights
        return StepResult(
            np.array(sums, dtype=np.float64), np.array(counts, dtype=np.float64 if weighted else np.int64),
            float(inertia), int(changed)
        )

    def invalidate(self) -> None:
        """Nothing to do: every step measures every row."""
