"""Features that cluster better than raw pixels: ``raw``, ``pca`` and ``patches``.

>>> from daskmeans import features, load_cifar10
>>> ds = load_cifar10(split="train")                                   # doctest: +SKIP
>>> feat, F = features.fit_transform("patches", ds.images, seed=0)     # doctest: +SKIP
>>> KMeans(10, algorithm="lloyd").fit(F)                               # doctest: +SKIP
>>> feat.transform(load_cifar10(split="test").images)                  # doctest: +SKIP

A :class:`Featurizer` is fitted on the training split only (no labels), holds
NumPy arrays and JSON-able options (it pickles, and :meth:`Featurizer.save` writes
one ``.npz`` that loads without pickle) and transforms any split chunk by chunk:
dask array in, dask array ``(n, n_features)`` out.

- ``raw``: the flat uint8 pixels, unchanged (k-means keeps its exact pixel path)
- ``pca``: :func:`~daskmeans.features.pca.fit_pca`: exact covariance, whitened components (float32)
- ``patches``: :func:`~daskmeans.features.patches.fit_patches`: Coates, Lee and Ng (2011) (float32,
  mirror-averaged, standardised, whitened PCA to ``reduce_dim`` dimensions, unit rows, then
  ``neighbour_steps`` steps of averaging over the ``neighbours`` nearest training rows)
"""

from __future__ import annotations

import logging

from ..errors import InputError
from .base import KINDS, Featurizer, as_flat, as_images, cluster_mean_images
from .base import load as _load
from .pca import PCAFeaturizer, fit_pca
from .patches import PatchFeaturizer, fit_patches

logger = logging.getLogger("daskmeans")

_REGISTRY = {"raw": Featurizer, "pca": PCAFeaturizer, "patches": PatchFeaturizer}

#: Options of :func:`fit` per kind (and their defaults).
DEFAULTS = {
    "raw": {},
    "pca": {"dim": 100, "whiten": True, "eps": 0.0},
    "patches": {"size": 6, "stride": 2, "n_centers": 400, "n_patches": 200_000, "seed": 0, "max_iter": 50,
                "pool": 3, "reduce_dim": 30, "flip": True, "unit_rows": True,
                "neighbours": None, "neighbour_steps": 5},
}


def n_features(kind: str, opts: dict | None = None, n_input: int = 32 * 32 * 3) -> int:
    """Features per image that ``fit(kind, X, **opts)`` gives (``n_input``: pixels per image, for ``raw``).

    ``opts``: options of :func:`fit` or a fitted featurizer's ``options`` (keys other than fit's are ignored).
    """
    o = _options(kind, {k: v for k, v in (opts or {}).items() if k in DEFAULTS.get(kind, ())})
    if kind == "pca":
        return int(o["dim"])
    if kind == "patches":
        return int(o["reduce_dim"]) or int(o["pool"]) ** 2 * int(o["n_centers"])
    return int(n_input)


def _options(kind: str, opts: dict) -> dict:
    if kind not in KINDS:
        raise InputError(f"features {kind!r} is not one of {', '.join(KINDS)}; pass --features raw (or pca, patches)")
    unknown = set(opts) - set(DEFAULTS[kind]) - {"persist"}
    if unknown:
        raise InputError(f"features {kind!r} take no option {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(DEFAULTS[kind]) or 'none'}")
    return {**DEFAULTS[kind], **opts}


def fit(kind: str, X, **opts) -> Featurizer:
    """A featurizer of ``kind`` fitted on the training images ``X`` (no labels).

    ``X``: images ``(n, H, W, C)`` or flat rows ``(n, 3072)``, dask or NumPy,
    uint8 pixels or floats in [0, 1]. ``opts``: see :data:`DEFAULTS`.
    """
    return fit_transform(kind, X, **opts)[0]


def fit_transform(kind: str, X, **opts) -> tuple[Featurizer, object]:
    """``(featurizer, features of X)``; the training features are computed once (persisted for ``patches``)."""
    opts = _options(kind, opts)
    if kind == "raw":
        feat = Featurizer()
        return feat, feat.transform(X)
    if kind == "pca":
        opts.pop("persist", None)
        feat = fit_pca(X, **opts)
        logger.info("PCA to %d components (%.1f%% of the variance) in %.1f s", feat.n_features,
                    100 * feat.info["explained_variance_ratio"], feat.info["fit_seconds"])
        return feat, feat.transform(X)
    return fit_patches(X, return_features=True, **opts)


def load(path) -> Featurizer:
    """A featurizer written by :meth:`Featurizer.save` (``featurizer.npz`` of a run)."""
    return _load(path, _REGISTRY)


__all__ = ["DEFAULTS", "KINDS", "Featurizer", "PCAFeaturizer", "PatchFeaturizer", "as_flat", "as_images",
           "cluster_mean_images", "fit", "n_features",
           "fit_pca", "fit_patches", "fit_transform", "load"]
