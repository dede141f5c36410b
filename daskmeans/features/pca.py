"""Distributed PCA with whitening: the exact covariance route.

The covariance of 3072 pixels is a 3072 x 3072 matrix: each chunk contributes
its centred Gram matrix ``Xc^T Xc`` (float32 products over sub-blocks, summed in
float64), the per-chunk matrices are tree-reduced, and NumPy's ``eigh`` on the
client gives the components. Two passes over the data: the mean, then the Gram
matrices of the centred rows (centring first avoids the cancellation of
``sum x x^T - n mu mu^T``).
"""

from __future__ import annotations

import time

import dask.array as da
import numpy as np

from ..errors import InputError
from .base import Featurizer, as_flat, pixel_units

#: Rows per float32 product inside a chunk; partial Gram matrices are summed in float64.
SUB_ROWS = 2048


def _work(dtype):
    return np.float64 if np.dtype(dtype) == np.float64 else np.float32


def _gram_block(block, mean, scale, work):
    """``(1, d, d)`` float64: the Gram matrix of a block's centred rows."""
    d = block.shape[1]
    out = np.zeros((d, d), dtype=np.float64)
    mean = mean.astype(work)
    for s in range(0, block.shape[0], SUB_ROWS):
        x = block[s:s + SUB_ROWS].astype(work) * work(scale) - mean
        out += x.T @ x
    return out[None]


def _project_block(block, mean, components, factor, scale, work):
    x = block.astype(work) * work(scale) - mean.astype(work)
    return ((x @ components.astype(work).T) * factor.astype(work)).astype(np.float32)


class PCAFeaturizer(Featurizer):
    """PCA to ``dim`` components, whitened (unit variance per component) by default.

    Arrays: ``mean`` (d,), ``components`` (dim, d) (rows = principal axes, largest
    variance first, sign fixed so each axis's largest-magnitude entry is
    positive), ``explained_variance`` (dim,) with the ``n - 1`` denominator (as
    scikit-learn).
    """

    kind = "pca"

    @property
    def n_features(self) -> int:
        return int(self.arrays["components"].shape[0])

    @property
    def components_(self) -> np.ndarray:
        return self.arrays["components"]

    @property
    def explained_variance_(self) -> np.ndarray:
        return self.arrays["explained_variance"]

    @property
    def mean_(self) -> np.ndarray:
        return self.arrays["mean"]

    def _factor(self) -> np.ndarray:
        ev = self.arrays["explained_variance"]
        if not self.options.get("whiten", True):
            return np.ones_like(ev)
        return 1.0 / np.sqrt(ev + float(self.options.get("eps", 0.0)))

    def transform(self, X) -> da.Array:
        """``(n, dim)`` float32: centred rows projected on the axes (divided by their standard deviation)."""
        X = as_flat(X)
        d = self.arrays["mean"].shape[0]
        if X.shape[1] != d:
            raise InputError(f"X has {X.shape[1]} features, the PCA was fitted on {d}; pass images like the training ones")
        work = _work(X.dtype)
        return X.map_blocks(
            _project_block, mean=self.arrays["mean"], components=self.arrays["components"], factor=self._factor(),
            scale=pixel_units(X.dtype), work=work, dtype=np.float32, chunks=(X.chunks[0], (self.n_features,)),
        )


def fit_pca(X, dim: int = 100, *, whiten: bool = True, eps: float = 0.0, split_every: int = 8) -> PCAFeaturizer:
    """Fit PCA on ``X`` (images or flat rows; uint8 pixels are scaled to [0, 1]).

    Parameters
    ----------
    X : dask or NumPy array, (n, d) or (n, H, W, C)
    dim : int
        Components kept, ``1 <= dim <= min(n - 1, d)``.
    whiten : bool
        Divide each component by its standard deviation (the output has identity
        covariance on the training data).
    eps : float
        Added to the variances before whitening (regularises tiny components).
    split_every : int
        Fan-in of the tree reduction of the per-chunk Gram matrices.
    """
    t0 = time.perf_counter()
    X = as_flat(X)
    n, d = X.shape
    if not 1 <= dim <= min(n - 1, d):
        raise InputError(f"pca dim={dim} must be between 1 and min(n_samples - 1, n_features) = {min(n - 1, d)}; "
                         f"pass a smaller --pca-dim")
    scale = pixel_units(X.dtype)
    work = _work(X.dtype)
    mean = (X.astype(np.float64).sum(axis=0, split_every=split_every) * scale / n).compute()
    if n <= d:
        # fewer rows than features: the (n, d) rows are no larger than the covariance, and the
        # (n, n) Gram matrix of the rows has the same non-zero spectrum (axes = Xc^T u / sqrt(lambda))
        Xc = np.asarray(X.compute(), dtype=np.float64) * scale - mean
        lam, U = np.linalg.eigh(Xc @ Xc.T)
        order = np.argsort(lam)[::-1][:dim]
        lam = np.maximum(lam[order], 0.0)
        comps = (Xc.T @ U[:, order] / np.sqrt(np.where(lam > 0, lam, 1.0))).T
        ev = lam / (n - 1)
        total = float((Xc * Xc).sum() / (n - 1))
    else:
        grams = X.map_blocks(_gram_block, mean=mean, scale=scale, work=work, dtype=np.float64,
                             chunks=((1,) * X.numblocks[0], (d,), (d,)), new_axis=2)
        cov = grams.sum(axis=0, split_every=split_every).compute() / (n - 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:dim]
        ev, comps = evals[order], evecs[:, order].T
        total = float(np.trace(cov))
    ev = np.maximum(ev, 0.0)
    comps = np.array(comps)
    # deterministic signs: the largest-magnitude entry of each axis is positive
    signs = np.sign(comps[np.arange(dim), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    if whiten and eps == 0 and ev[-1] <= 1e-12 * max(ev[0], 1e-300):
        raise InputError(f"pca dim={dim}: component {int(np.argmin(ev))} has (near) zero variance, whitening would "
                         f"divide by zero; pass a smaller --pca-dim")
    info = {"fit_seconds": time.perf_counter() - t0, "n_fit": int(n),
            "explained_variance_ratio": float(ev.sum() / total) if total > 0 else None}
    return PCAFeaturizer({"dim": int(dim), "whiten": bool(whiten), "eps": float(eps)},
                         {"mean": mean.astype(np.float64), "components": comps.astype(np.float64),
                          "explained_variance": ev.astype(np.float64)}, info)
