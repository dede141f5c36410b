"""What every algorithm's step returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepResult:
    """One pass over the data with fixed centres.

    sums : (k, d) float64, raw units: per-cluster sums of the rows (exact for pixels)
    counts : (k,) int64
    inertia : float, centres' units, for the centres of this step
    changed : int, rows whose label differs from the previous step (all rows on the first)
    computed : int or None, rows whose distances were measured (None: all)
    """

    sums: np.ndarray
    counts: np.ndarray
    inertia: float
    changed: int
    computed: int | None = None
