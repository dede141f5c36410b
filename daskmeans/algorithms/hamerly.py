"""Hamerly's bounds: Lloyd's labels and centres, with most distances skipped.

Each row keeps, on its worker, an upper bound on its distance to its centre and
a lower bound on its distance to every other centre (:class:`HamerlyState`).
After the centres move, the bounds move by the shifts; a row whose bounds prove
its centre is still the nearest, by more than the worst-case float32 rounding of
what Lloyd computes, keeps its label unmeasured. Measured rows go through the
same fixed-shape tiles as Lloyd's, so every label is Lloyd's exactly. Only rows
that changed cluster move the sums, which stay exact because they are integer
sums: hence small-integer data only (pixels).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import kernels
from .base import Algorithm, StepResult, merged


class HamerlyState(NamedTuple):
    """Per-chunk state: labels (int32), upper, lower bounds and exact squared norms
    (float64, raw units); the bounds are None until a full step made them."""

    labels: object
    upper: object = None
    lower: object = None
    norms: object = None


def _rebuilt(block, offset, prev, scale, k):
    """State lost (a worker died) or never made here (resume): the labels ``prev``
    gave, and that labelling's totals so the changes can be reported."""
    old = kernels.assign(block, prev, scale, "l2", offset)[0]
    return old, kernels.cluster_totals(block, old, k)


def hamerly_group(states, blocks, offsets, shared):
    c, prev, scale, full = shared["centers"], shared["prev"], shared["scale"], shared["full"]
    k = len(c)
    new, total = [], None
    for i, (block, offset) in enumerate(merged(blocks, offsets)):
        st = states[i] if states is not None else None
        if st is None and prev is not None and full:
            st = HamerlyState(_rebuilt(block, offset, prev, scale, k)[0])
        if st is None and not full:
            # the client expects changes since the last step: measure every row, then
            # report (new totals - the totals of the labels prev gave)
            old, (s0, n0, q0) = _rebuilt(block, offset, prev, scale, k)
            st, part = kernels.hamerly_step(block, c, HamerlyState(old), scale=scale, full=True, offset=offset)
            s1, n1, q1, changed, computed = part
            part = (s1 - s0, n1 - n0, q1 - q0, changed, computed)
        else:
            st, part = kernels.hamerly_step(
                block, c, st, shared["shifts"], shared["half_sep"], scale=scale, full=full, offset=offset
            )
        new.append(HamerlyState(*st))
        total = part if total is None else kernels.combine(total, part)
    return new, total


def nearest_other(raw: np.ndarray) -> np.ndarray:
    """Distance from each centre to its nearest other centre (inf for k = 1), never overstated."""
    k = raw.shape[0]
    if k == 1:
        return np.full(1, np.inf)
    sq = (raw * raw).sum(axis=1)
    norm = np.sqrt(sq)
    d2 = sq[:, None] + sq[None, :] - 2 * raw @ raw.T
    # minus the worst-case float64 rounding of that formula: a bound must never overstate
    gamma = 2 * raw.shape[1] * 2.0**-53
    d2 = np.maximum(d2 - gamma * (norm[:, None] + norm[None, :]) ** 2, 0.0)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(d2.min(axis=1))


class Hamerly(Algorithm):
    """Hamerly steps over a :class:`~daskmeans.placement.Placement` (l2, small-integer data).

    The client keeps the running per-cluster totals (sums, counts, squared norms)
    and adds the groups' changes; the inertia comes from those exact totals.
    """

    name = "hamerly"

    def __init__(self, placement, *, scale: float, metric: str = "l2"):
        if metric != "l2":
            raise ValueError("Hamerly's bounds are Euclidean: metric must be 'l2'")
        self.placement, self.scale = placement, scale
        self.full_next = True
        self.prev_raw = None
        self.S = self.N = self.Q = None

    def prepare(self, centers, prev, iteration: int):
        """The group function and its shared arguments for one step (see :meth:`step`)."""
        raw = np.asarray(centers, dtype=np.float64) / self.scale  # what the kernel sees, raw units
        shared = {"centers": centers, "prev": prev, "scale": self.scale, "full": self.full_next,
                  "shifts": None, "half_sep": None}
        if not self.full_next:
            shared["shifts"] = np.sqrt(((raw - self.prev_raw) ** 2).sum(axis=1)) * (1 + 1e-12)  # never understated
            shared["half_sep"] = 0.5 * nearest_other(raw)
        self._raw = raw
        return hamerly_group, shared

    def finish(self, partial) -> StepResult:
        """The step's result from the groups' summed ``partial``."""
        d_sums, d_counts, d_sq, changed, computed = partial
        raw = self._raw
        if self.full_next:
            self.S = np.array(d_sums, dtype=np.float64)
            self.N = np.array(d_counts, dtype=np.int64)
            self.Q = np.array(d_sq, dtype=np.float64)
        else:
            self.S += d_sums
            self.N += d_counts
            self.Q += d_sq
        # inertia from the exact per-cluster totals: sum ||x||^2 - 2 c.S + n ||c||^2
        per = self.Q - 2 * (raw * self.S).sum(axis=1) + self.N * (raw * raw).sum(axis=1)
        inertia = float(per.sum() * self.scale * self.scale)
        self.prev_raw, self.full_next = raw, False
        return StepResult(self.S.copy(), self.N.copy(), inertia, int(changed), int(computed))

    def invalidate(self) -> None:
        """A row moved on the client only: recount everything in the next step."""
        self.full_next = True
