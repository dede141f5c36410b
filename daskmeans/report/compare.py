"""``--compare sklearn``: scikit-learn's KMeans on the same data from the same initial centres."""

from __future__ import annotations

import logging
import time

import numpy as np
import sklearn
from sklearn.cluster import KMeans as SKKMeans

from ..backend import to_numpy
from ..kmeans import pixel_scale
from ..metrics import contingency, scores

logger = logging.getLogger("daskmeans")


def _gather(X, classes) -> tuple[np.ndarray, np.ndarray]:
    """X as float64 in centres' units and the classes, on the client (scikit-learn needs them in memory)."""
    n, d = X.shape
    logger.info("--compare sklearn: gathering %d x %d pixels on the client (%.0f MB as float64)", n, d,
                n * d * 8 / 1e6)
    scale = pixel_scale(X.dtype)
    Xs = np.asarray(to_numpy(X.compute()), dtype=np.float64)
    if scale != 1.0:
        Xs *= scale
    y = np.asarray(to_numpy(classes.compute() if hasattr(classes, "compute") else classes), dtype=np.int64)
    return Xs, y


def _note(settings) -> str:
    note = ("scikit-learn ran on the same images (float64 in [0, 1]) from daskmeans's initial centres, "
            f"n_init=1, algorithm='lloyd', max_iter={settings.max_iter}, tol={settings.tol}; times are of the Lloyd "
            "iterations only (daskmeans: sum of its per-iteration times; scikit-learn: fit from the given centres).")
    if getattr(settings, "n_init", 1) > 1:
        note += " With --n-init > 1, the initial centres are those of daskmeans's last restart."
    return note


def compare_sklearn(X, km, classes, n_classes: int, labels, settings) -> dict:
    """Run scikit-learn's KMeans on the same data and initial centres; compare.

    ``X``: the (n, d) dask array daskmeans was fitted on (gathered here onto the
    client: scikit-learn needs it in memory, as float64 in [0, 1]);
    ``labels``: daskmeans's labels (NumPy). Same ``init`` (``km.init_centers_``),
    ``n_init=1``, ``algorithm="lloyd"``, ``max_iter``, ``tol``.
    """
    Xs, y = _gather(X, classes)
    init = np.asarray(km.init_centers_, dtype=np.float64).reshape(km.n_clusters, X.shape[1])
    logger.info("--compare sklearn: fitting sklearn.cluster.KMeans(n_clusters=%d, algorithm='lloyd')", km.n_clusters)
    t0 = time.perf_counter()
    sk = SKKMeans(km.n_clusters, init=init, n_init=1, algorithm="lloyd", max_iter=settings.max_iter,
                  tol=settings.tol, random_state=settings.seed).fit(Xs)
    sk_seconds = time.perf_counter() - t0
    sk_labels = sk.labels_.astype(np.int64)
    ours = np.asarray(labels, dtype=np.int64)
    agreement = scores(contingency(ours, sk_labels, km.n_clusters, km.n_clusters))
    out = {
        "method": "sklearn",
        "sklearn_version": sklearn.__version__,
        "daskmeans": {
            "n_iter": int(km.n_iter_),
            "converged": bool(km.converged_),
            "inertia": float(km.inertia_),
            "seconds": float(sum(h["seconds"] for h in km.history_)),
            "fit_seconds": float(km.fit_seconds_),
            "metrics": scores(contingency(ours, y, km.n_clusters, n_classes)),
        },
        "sklearn": {
            "n_iter": int(sk.n_iter_),
            "converged": bool(sk.n_iter_ < settings.max_iter),  # scikit-learn does not say; n_iter < max_iter
            "inertia": float(sk.inertia_),
            "seconds": sk_seconds,
            "metrics": scores(contingency(sk_labels, y, km.n_clusters, n_classes)),
        },
        "agreement_ari": float(agreement["ari"]),
        "agreement_nmi": float(agreement["nmi"]),
        "same_labels": float(np.mean(ours == sk_labels)) if len(ours) else 1.0,
        "max_center_diff": float(np.max(np.abs(sk.cluster_centers_ - np.asarray(km.cluster_centers_, np.float64)))),
        "note": _note(settings),
    }
    logger.info(
        "--compare sklearn: %d iterations in %.1f s (daskmeans %d in %.1f s), agreement ARI %.6f",
        sk.n_iter_, sk_seconds, km.n_iter_, out["daskmeans"]["seconds"], out["agreement_ari"],
    )
    return out
