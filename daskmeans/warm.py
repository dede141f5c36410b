"""Warm starts: initial centres from a fitted model or from the folder of a finished run.

``KMeans(init=model)``, ``KMeans(init="runs/<previous>/")`` and
``daskmeans run --init runs/<previous>/`` start from those centres, in their
order: cluster ``j`` of the new fit continues cluster ``j`` of the old one
(a label is the index of its centre, and every step keeps the index).

The checks are the ones a continuation needs, each failing in one line: the
same number of clusters and of features, and the same kind of data (centres
learned on uint8 pixels live in [0, 1], those learned on numbers in X's units).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import params
from .errors import InputError


def is_source(init) -> bool:
    """Whether ``init`` is a warm-start source: a model (fitted or not: an unfitted one is refused
    later, with the reason), a path, or a string that is not one of the methods."""
    if isinstance(init, os.PathLike):
        return True
    if isinstance(init, str):
        return init not in params.INIT_METHODS
    return hasattr(init, "fit") and hasattr(init, "get_params")


def centres(init, k: int, d: int, pixels: bool, label: str | None = None) -> np.ndarray:
    """The initial centres ``(k, d)`` float64 (centres' units) of a warm-start source.

    Parameters
    ----------
    init : fitted model, path-like or str
        A fitted :class:`~daskmeans.KMeans` or :class:`~daskmeans.MiniBatchKMeans`
        (or any fitted estimator with ``cluster_centers_``, e.g. scikit-learn's),
        possibly wrapped in ``sklearn.frozen.FrozenEstimator``; or the folder of
        a finished ``daskmeans run`` (its ``centroids.npy``, ``report.json``).
    k, d : int
        The new fit's ``n_clusters`` and number of features.
    pixels : bool
        Whether the new data are uint8 pixels.
    label : str, optional
        How messages name the source (default ``init=...``; the command line: ``--init PATH``).
    """
    if isinstance(init, (str, os.PathLike)):
        return run_folder_centres(init, k, d, pixels, label or f"init={os.fspath(init)!r}")
    return model_centres(init, k, d, pixels)


def model_centres(model, k: int, d: int, pixels: bool) -> np.ndarray:
    """The centres of a fitted model, at full precision, checked against the new fit."""
    name = type(getattr(model, "estimator", model)).__name__
    if getattr(model, "cluster_centers_", None) is None:
        raise InputError(f"init is an unfitted {name}; fit it first (a clone of a fitted model is unfitted: wrap "
                         "it in sklearn.frozen.FrozenEstimator to keep its centres), or pass init='k-means++'")
    if callable(getattr(model, "_centers", None)):  # daskmeans: float64 centres, float data's centring undone
        offset = getattr(model, "_offset", None)
        c = np.asarray(model._centers(), dtype=np.float64) + (0.0 if offset is None else offset)
    else:
        c = np.asarray(model.cluster_centers_, dtype=np.float64)
    c = c.reshape(c.shape[0], -1)
    kk, dd = c.shape
    if kk != k:
        raise InputError(f"init is a {name} with n_clusters={kk}, but n_clusters={k}; pass n_clusters={kk} to "
                         "continue its clusters, or init='k-means++' to start afresh")
    if dd != d:
        raise InputError(f"init is a {name} fitted on {dd} features, but X has {d}; pass data of its {dd} "
                         "features, or init='k-means++' to start afresh")
    fitted_pixels = getattr(model, "_pixels", None)
    if fitted_pixels is not None and bool(fitted_pixels) != bool(pixels):
        fitted, given = ("uint8 pixels", "numbers") if fitted_pixels else ("numbers", "uint8 pixels")
        raise InputError(f"init is a {name} fitted on {fitted} but X holds {given}; its centres are in other units "
                         "(pixels are scaled to [0, 1]), so pass X of the kind it was fitted on")
    if not np.all(np.isfinite(c)):
        raise InputError(f"init is a {name} whose centres hold NaN or infinity; refit it, or pass init='k-means++'")
    return c


def run_folder_centres(path, k: int, d: int, pixels: bool, label: str) -> np.ndarray:
    """The centres a finished run wrote (``centroids.npy``), checked against the new fit."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise InputError(f"{label}: no such run folder; pass the folder of a finished daskmeans run "
                         "(with centroids.npy), or k-means++")
    f = folder / "centroids.npy"
    if not f.is_file():
        raise InputError(f"{label}: no centroids.npy in that folder (not a finished daskmeans run); pass the folder "
                         "of a finished run, or k-means++")
    try:
        c = np.load(f, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{label}: {f.name} is not a readable .npy array ({str(e).splitlines()[0] if str(e) else e}); "
                         "pass another run folder") from None
    if c.ndim != 2 or c.dtype.kind != "f" or not np.all(np.isfinite(c)):
        raise InputError(f"{label}: {f.name} is not a finite float (k, d) array (shape {c.shape}, dtype {c.dtype}); "
                         "pass the folder of a finished run")
    kind = _features_of(folder)
    kk, dd = c.shape
    if kk != k:
        raise InputError(f"{label}: the run has {kk} clusters, but n_clusters={k}; pass -k {kk} (n_clusters={kk}) "
                         "to continue its clusters, or init k-means++ to start afresh")
    if kind == "raw" and not pixels:
        raise InputError(f"{label}: the run clustered uint8 pixels (centres in [0, 1]) but X holds numbers; pass "
                         "the images it clustered, or init k-means++")
    if kind != "raw" and pixels:
        raise InputError(f"{label}: the run clustered {kind} features, not pixels; pass those features, or "
                         "init k-means++")
    if dd != d:
        raise InputError(f"{label}: the run's centres have {dd} features, but X has {d}; pass data of {dd} "
                         "features, or init k-means++ to start afresh")
    return c.astype(np.float64)


def _features_of(folder: Path) -> str:
    """What the run clustered (``report.json``'s ``features.kind``): "raw" pixels unless it says otherwise."""
    try:
        report = json.loads((folder / "report.json").read_text())
        kind = report.get("features", {}).get("kind", "raw")
    except (OSError, ValueError, AttributeError):
        return "raw"
    return str(kind) if kind else "raw"
