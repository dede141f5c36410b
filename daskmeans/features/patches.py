"""Single-layer unsupervised patch features (Coates, Lee and Ng, AISTATS 2011).

1. Random ``p x p`` patches of the training images (seeded: the same patches
   whatever the chunking), each normalised for brightness and contrast
   (``(x - mean(x)) / sqrt(var(x) + 10)`` on the 0-255 scale, ``var`` with ``n - 1``).
2. ZCA whitening fitted on them: ``W = V diag(1 / sqrt(D + 0.1)) V^T`` from the
   eigen-decomposition ``C = V D V^T`` of their covariance.
3. A dictionary of ``K`` centres learned by :class:`daskmeans.KMeans` on the
   whitened patches (float32, Lloyd).
4. Every patch position of every image (stride ``s``) is normalised, whitened and
   encoded with the "triangle" activation ``f_k = max(0, mean(z) - z_k)``, ``z_k``
   the Euclidean distance to centre ``k``.
5. The activations are sum-pooled over a ``g x g`` grid of cells of the position
   grid (``pool=2``: the four quadrants of Coates et al.; ``pool=3`` (default):
   nine cells, row-major): ``g^2 K`` features per image.
6. Each feature is standardised with the training mean and ``sqrt(var + 0.01)``.
7. ``reduce_dim=D`` (default 30; 0 keeps the ``g^2 K`` standardised features): the
   standardised features are projected on their top ``D`` principal axes and
   whitened (:func:`~daskmeans.features.pca.fit_pca` on the training features).
   The pooled features are thousands of strongly correlated columns; k-means on
   a few whitened directions clusters CIFAR-10 better (see docs, Features).
8. ``unit_rows=True`` (default): each row is scaled to unit length, so that
   Euclidean k-means on them is spherical k-means on the reduced features.
9. ``neighbours=m`` (default 50 with ``reduce_dim``, else 0; 0: off) and
   ``neighbour_steps=t`` (default 5): a diffusion over the training rows'
   ``m``-nearest-neighbour graph. Each training row ``i`` has ``m`` nearest
   training rows ``N(i)`` (Euclidean, float32 products; a training row is its own
   nearest); ``H_0`` = the rows of step 8 and ``H_s(i)`` = the mean of ``H_{s-1}``
   over ``N(i)``, scaled to unit length with ``unit_rows``. The features are
   ``H_t``. The featurizer keeps the training rows (``neighbour_rows``) and their
   ``H_{t-1}`` (``neighbour_values``, both ``n x D`` float32), so any image, a test
   image included, gets the same last step: the mean of ``H_{t-1}`` over its ``m``
   nearest training rows.

``flip=True`` (default) averages the pooled activations of each image and of
its horizontal mirror (step 5, before the standardisation): an image and its
mirror average the same two encodings, so they get the same features (to rounding).

Steps 4-9 run chunk by chunk (``map_blocks`` over the image chunks; the
dictionary, the whitening and the neighbour rows travel as NumPy arrays). No
labels are used.
"""

from __future__ import annotations

import logging
import time

import dask
import dask.array as da
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import InputError
from ..estimator import KMeans
from .base import IMAGE_SHAPE, Featurizer, as_images, pixel_units
from .pca import fit_pca

logger = logging.getLogger("daskmeans")

#: Constants of Coates et al. (pixel scale 0-255).
NORM_EPS = 10.0
ZCA_EPS = 0.1
STD_EPS = 0.01
#: Training rows each reduced row is averaged over, by default (``neighbours=None``).
NEIGHBOURS = 50
#: Averaging steps over the training rows' neighbour graph, by default.
NEIGHBOUR_STEPS = 5
#: Scores (float32) one step of the neighbour search holds: 128 MB, whatever the number of training rows.
NEIGHBOUR_SCORES = 2 ** 25
#: Images encoded per NumPy step inside a chunk (bounds the memory of a task).
SUB_IMAGES = 128


# -- pure NumPy steps (no dask) ---------------------------------------------------------------


def normalise(P: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Per-row brightness and contrast normalisation: ``(x - mean) / sqrt(var(ddof=1) + eps)``."""
    P = np.asarray(P, dtype=np.float32)
    m = P.mean(axis=1, keepdims=True)
    P = P - m
    var = (P * P).sum(axis=1, keepdims=True) / max(P.shape[1] - 1, 1)
    return P / np.sqrt(var + np.float32(eps))


def fit_zca(P: np.ndarray, eps: float = ZCA_EPS) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (d,), W (d, d))`` float64: ZCA whitening of the rows of ``P``; apply as ``(x - mean) @ W``."""
    P = np.asarray(P, dtype=np.float64)
    mean = P.mean(axis=0)
    C = np.cov(P, rowvar=False)
    D, V = np.linalg.eigh(C)
    W = (V * (1.0 / np.sqrt(np.maximum(D, 0.0) + eps))) @ V.T
    return mean, W


def patch_rows(images: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, int, int]:
    """All ``size x size`` patches at ``stride`` of ``images`` (b, H, W, C).

    Returns ``(rows (b * R * Cc, size*size*C), R, Cc)``: each row a patch in HWC
    order, image by image, positions row-major.
    """
    b, H, W, C = images.shape
    win = sliding_window_view(images, (size, size), axis=(1, 2))  # (b, H-p+1, W-p+1, C, p, p)
    win = win[:, ::stride, ::stride]
    R, Cc = win.shape[1], win.shape[2]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(b * R * Cc, size * size * C), R, Cc


def triangle(X: np.ndarray, centers: np.ndarray, centers_sq: np.ndarray | None = None) -> np.ndarray:
    """``max(0, mean_k(z) - z_k)`` with ``z_k = ||x - c_k||`` for every row of ``X``: (n, K)."""
    if centers_sq is None:
        centers_sq = (centers * centers).sum(axis=1)
    z = X @ centers.T  # in place from here: this (n, K) array is the largest of the encoding
    z *= -2
    z += (X * X).sum(axis=1, keepdims=True)
    z += centers_sq[None, :]
    np.maximum(z, 0, out=z)
    np.sqrt(z, out=z)
    np.subtract(z.mean(axis=1, keepdims=True), z, out=z)
    return np.maximum(z, 0, out=z)


def pool_edges(n: int, g: int) -> list[int]:
    """Boundaries of ``g`` cells over ``n`` positions: ``floor(i n / g + 1/2)``, i = 0..g
    (for ``g = 2`` the first half has ``ceil(n / 2)`` positions, as MATLAB's ``round(n / 2)``)."""
    return [(2 * i * n + g) // (2 * g) for i in range(g + 1)]


def grid_pool(F: np.ndarray, R: int, Cc: int, g: int) -> np.ndarray:
    """``(b, R*Cc, K)`` activations -> ``(b, g*g*K)``: sums over a ``g x g`` grid of cells
    of the R x Cc position grid, cells row-major (top-left first), ``K`` features each."""
    b, _, K = F.shape
    F = F.reshape(b, R, Cc, K)
    er, ec = pool_edges(R, g), pool_edges(Cc, g)
    return np.concatenate([F[:, er[i]:er[i + 1], ec[j]:ec[j + 1]].sum(axis=(1, 2))
                           for i in range(g) for j in range(g)], axis=1)


def quadrant_pool(F: np.ndarray, R: int, Cc: int) -> np.ndarray:
    """``(b, R*Cc, K)`` activations -> ``(b, 4K)``: sums over the top-left, top-right,
    bottom-left and bottom-right quadrants (:func:`grid_pool` with ``g = 2``)."""
    return grid_pool(F, R, Cc, 2)


def encode_images(images, *, zca_mean, zca_w, centers, size, stride, to255, norm_eps=NORM_EPS, pool=2,
                  flip=False, feat_mean=None, feat_scale=None, proj_mean=None, proj_w=None,
                  sub=SUB_IMAGES) -> np.ndarray:
    """Pooled triangle features ``(b, pool^2 K)`` float32 of a block of images (b, H, W, C).

    With ``flip`` each image's pooled features are the mean of its own and of its
    horizontal mirror's. With ``feat_mean``/``feat_scale`` they are standardised, ``(x - mean) * scale``;
    with ``proj_mean`` (d,) / ``proj_w`` (d, D) too, the standardised rows are then
    projected, ``(x - proj_mean) @ proj_w`` (float64 products): ``(b, D)``.
    """
    zm = np.asarray(zca_mean, dtype=np.float32)
    zw = np.asarray(zca_w, dtype=np.float32)
    c = np.asarray(centers, dtype=np.float32)
    c_sq = (c * c).sum(axis=1)
    out = np.empty((images.shape[0], pool * pool * c.shape[0]), dtype=np.float32)
    for s in range(0, images.shape[0], sub):
        block = np.asarray(images[s:s + sub], dtype=np.float32) * np.float32(to255)
        out[s:s + sub] = _pooled(block, zm, zw, c, c_sq, size, stride, norm_eps, pool)
        if flip:
            out[s:s + sub] += _pooled(block[:, :, ::-1], zm, zw, c, c_sq, size, stride, norm_eps, pool)
            out[s:s + sub] *= np.float32(0.5)
    if feat_mean is not None:
        out = (out - feat_mean.astype(np.float32)) * feat_scale.astype(np.float32)
    if proj_w is not None:
        out = _project(out, proj_mean, proj_w)
    return out


def _pooled(block, zm, zw, c, c_sq, size, stride, norm_eps, pool):
    """Sum-pooled triangle activations ``(b, pool^2 K)`` of images ``block`` (b, H, W, C) on the 0-255 scale."""
    rows, R, Cc = patch_rows(block, size, stride)
    x = normalise(rows, norm_eps)
    x = (x - zm) @ zw
    f = triangle(x, c, c_sq)
    return grid_pool(f.reshape(block.shape[0], R * Cc, -1), R, Cc, pool)


def unit(block) -> np.ndarray:
    """Rows scaled to unit Euclidean length (a zero row stays zero), float32."""
    block = np.asarray(block, dtype=np.float32)
    norm = np.sqrt((block.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    return (block / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def nearest_rows(block, rows, m: int, sub: int = 512) -> np.ndarray:
    """``(b, m)`` indices of the ``m`` nearest ``rows`` (N, D) to each row of ``block`` (Euclidean).

    Nearest by ``|r|^2 - 2 x.r`` in float32 (the set of the ``m`` smallest,
    :func:`numpy.argpartition`; their order is not defined); ``sub`` rows of
    ``block`` at a time, fewer where ``sub x N`` would pass :data:`NEIGHBOUR_SCORES`.
    """
    block = np.asarray(block, dtype=np.float32)
    rows = np.asarray(rows, dtype=np.float32)
    m = min(int(m), rows.shape[0])
    sub = max(1, min(int(sub), NEIGHBOUR_SCORES // max(rows.shape[0], 1)))
    rsq = (rows * rows).sum(axis=1)
    out = np.empty((block.shape[0], m), dtype=np.intp)
    for s in range(0, block.shape[0], sub):
        score = block[s:s + sub] @ rows.T
        score *= -2
        score += rsq[None, :]
        out[s:s + sub] = np.argpartition(score, m - 1, axis=1)[:, :m] if m < rows.shape[0] else np.arange(m)
    return out


def neighbour_mean(block, rows, m: int, unit_rows: bool = True, values=None, sub: int = 512) -> np.ndarray:
    """Each row of ``block`` replaced by the mean of ``values`` (default: ``rows``) over its ``m``
    nearest ``rows`` (:func:`nearest_rows`); with ``unit_rows`` scaled to unit length."""
    idx = nearest_rows(block, rows, m, sub)
    return _average(np.asarray(rows if values is None else values, dtype=np.float32), idx, unit_rows)


def _average(values, idx, unit_rows):
    out = values[idx].astype(np.float64).mean(axis=1).astype(np.float32)
    return unit(out) if unit_rows else out


def _project(block, mean, w):
    return ((np.asarray(block, dtype=np.float64) - mean) @ w).astype(np.float32)


def _standardise(block, mean, scale):
    return (block - mean) * scale


def _extract(block, local, r, c, size):
    """The patches of one chunk at (local image, row, column), HWC order: (m, size*size*C)."""
    if len(local) == 0:
        return np.empty((0, size * size * block.shape[3]), dtype=np.float32)
    rr = r[:, None, None] + np.arange(size)[None, :, None]
    cc = c[:, None, None] + np.arange(size)[None, None, :]
    return np.asarray(block[local[:, None, None], rr, cc], dtype=np.float32).reshape(len(local), -1)


def sample_patches(images: da.Array, n: int, size: int, seed: int) -> np.ndarray:
    """``n`` random ``size x size`` patches ``(n, size*size*C)`` float32 (image units).

    Positions are drawn with ``numpy.random.default_rng(seed)`` over the whole
    split (image index, row, column), so the patches do not depend on the
    chunking; each chunk extracts its own patches and only those reach the client.
    """
    N, H, W, C = images.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size=n)
    r = rng.integers(0, H - size + 1, size=n)
    c = rng.integers(0, W - size + 1, size=n)
    bounds = np.concatenate([[0], np.cumsum(images.chunks[0])])
    parts, where = [], []
    for b, block in enumerate(images.to_delayed().ravel()):
        sel = np.flatnonzero((idx >= bounds[b]) & (idx < bounds[b + 1]))
        if len(sel):
            parts.append(dask.delayed(_extract)(block, idx[sel] - bounds[b], r[sel], c[sel], size))
            where.append(sel)
    out = np.empty((n, size * size * C), dtype=np.float32)
    for sel, P in zip(where, dask.compute(*parts)):
        out[sel] = P
    return out


# -- the featurizer -----------------------------------------------------------------------------


class PatchFeaturizer(Featurizer):
    """Coates-Lee-Ng features: arrays ``zca_mean``, ``zca_w``, ``centers`` (K, p*p*C),
    ``feat_mean`` and ``feat_scale`` (g^2 K,) (standardisation; absent before it is
    fitted) and, with ``reduce_dim=D``, the whitened PCA of the standardised features:
    ``reduce_mean`` (g^2 K,), ``reduce_components`` (D, g^2 K) and ``reduce_variance`` (D,);
    with ``neighbours=m``, ``neighbour_rows`` (n_train, D): the training rows whose neighbours are
    averaged, and with ``neighbour_steps > 1`` ``neighbour_values`` (n_train, D): what is averaged.

    Options absent from a featurizer saved before they existed read as off
    (``flip=False``, ``unit_rows=False``, ``neighbours=0``)."""

    kind = "patches"

    @property
    def pooled_features(self) -> int:
        """Features per image after pooling, before the optional reduction: ``pool^2 K``."""
        return int(self.options.get("pool", 2)) ** 2 * int(self.arrays["centers"].shape[0])

    @property
    def n_features(self) -> int:
        if "reduce_components" in self.arrays:
            return int(self.arrays["reduce_components"].shape[0])
        return self.pooled_features

    def _projection(self):
        """``(mean (d,), W (d, D))`` float64 of the whitened reduction, ``(None, None)`` without one."""
        if "reduce_components" not in self.arrays:
            return None, None
        comps = self.arrays["reduce_components"].astype(np.float64)
        factor = 1.0 / np.sqrt(self.arrays["reduce_variance"].astype(np.float64))
        return self.arrays["reduce_mean"].astype(np.float64), comps.T * factor

    def encode(self, X, standardise: bool = True, reduce: bool = False) -> da.Array:
        """``(n, pool^2 K)`` float32 features of the images ``X``, chunk by chunk
        (``(n, D)`` with ``reduce=True`` and a fitted reduction)."""
        shape = tuple(self.options.get("image_shape") or IMAGE_SHAPE)
        X = as_images(X, shape)
        size, stride = self.options["size"], self.options["stride"]
        if tuple(X.shape[1:]) != shape:
            raise InputError(f"images of shape {tuple(X.shape[1:])}, the dictionary was learned on {shape}; "
                             f"pass images like the training ones")
        std = standardise and "feat_mean" in self.arrays
        pm, pw = self._projection() if (std and reduce) else (None, None)
        return X.map_blocks(
            encode_images, zca_mean=self.arrays["zca_mean"], zca_w=self.arrays["zca_w"],
            centers=self.arrays["centers"], size=size, stride=stride, to255=255.0 * pixel_units(X.dtype),
            pool=int(self.options.get("pool", 2)), flip=bool(self.options.get("flip", False)),
            feat_mean=self.arrays["feat_mean"] if std else None, feat_scale=self.arrays["feat_scale"] if std else None,
            proj_mean=pm, proj_w=pw, dtype=np.float32,
            chunks=(X.chunks[0], (pw.shape[1] if pw is not None else self.pooled_features,)), drop_axis=[2, 3],
        )

    def transform(self, X) -> da.Array:
        """``(n, n_features)`` float32: the standardised (and, if fitted, reduced, unit-length and
        neighbour-averaged) features of ``X``."""
        return self._finish(self.encode(X, standardise=True, reduce=True))

    def _finish(self, F: da.Array) -> da.Array:
        """Steps 8 and 9 on reduced rows ``F``: unit length, then the mean over the training neighbours."""
        unit_rows = bool(self.options.get("unit_rows", False))
        if unit_rows:
            F = F.map_blocks(unit, dtype=np.float32)
        if "neighbour_rows" in self.arrays:
            F = F.map_blocks(neighbour_mean, rows=self.arrays["neighbour_rows"],
                             m=int(self.options["neighbours"]), unit_rows=unit_rows,
                             values=self.arrays.get("neighbour_values"), dtype=np.float32)
        return F


def _fit_reduction(feat: PatchFeaturizer, Fs: da.Array, dim: int) -> tuple[da.Array, dict]:
    """Fit the whitened PCA of the standardised training features ``Fs`` into ``feat``;
    ``(Fs projected (n, dim), info)``."""
    red = fit_pca(Fs, dim=dim, whiten=True)
    feat.arrays.update(reduce_mean=red.mean_, reduce_components=red.components_,
                       reduce_variance=red.explained_variance_)
    info = {"reduce_seconds": red.info["fit_seconds"],
            "reduce_explained_variance_ratio": red.info["explained_variance_ratio"]}
    logger.info("whitened PCA of the %d features to %d (%.1f%% of their variance) in %.1f s",
                feat.pooled_features, dim, 100 * info["reduce_explained_variance_ratio"], info["reduce_seconds"])
    pm, pw = feat._projection()
    return Fs.map_blocks(_project, mean=pm, w=pw, dtype=np.float32, chunks=(Fs.chunks[0], (dim,))), info


def _check_grid(size: int, stride: int, pool: int, reduce_dim: int, n: int, side: int, n_centers: int) -> None:
    """Patch size, stride, pooling grid and reduction against ``n`` images of ``side`` pixels."""
    if not 1 <= size <= side:
        raise InputError(f"patch size {size} must be between 1 and {side}; pass --patch-size 6")
    if stride < 1:
        raise InputError(f"patch stride {stride} must be >= 1; pass --patch-stride 2")
    positions = (side - size) // max(stride, 1) + 1
    if pool < 1 or pool > positions:
        raise InputError(f"pooling grid {pool} must be between 1 and the {positions} patch positions per side; "
                         f"pass pool=3 (or 2)")
    if reduce_dim < 0 or reduce_dim > min(n - 1, pool * pool * n_centers):
        raise InputError(f"reduce_dim={reduce_dim} must be between 0 (off) and min(images - 1, pool^2 x centres) = "
                         f"{min(n - 1, pool * pool * n_centers)}; pass a smaller reduce_dim (--reduce-dim) or fit on more "
                         f"images")


def _check_neighbours(neighbours, steps, reduce_dim: int, n: int, pooled: int) -> int:
    """The number of neighbours to average over (``None``: the default), checked with ``steps``."""
    if neighbours is None:
        neighbours = min(NEIGHBOURS, n) if reduce_dim else 0
    if not isinstance(neighbours, (int, np.integer)) or isinstance(neighbours, bool) or neighbours < 0:
        raise InputError(f"neighbours={neighbours!r} must be a whole number >= 0 (0: off); pass neighbours=50")
    if neighbours and not reduce_dim:
        raise InputError(f"neighbours={neighbours} averages reduced rows, but reduce_dim=0 keeps all "
                         f"{pooled} features; pass reduce_dim=30 (--reduce-dim) or neighbours=0")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise InputError(f"neighbour_steps={steps!r} must be a whole number >= 1; pass neighbour_steps=5")
    if neighbours > n:
        raise InputError(f"neighbours={neighbours} is more than the {n} training images; pass neighbours={n} or fewer")
    return int(neighbours)


def _fit_neighbours(feat: PatchFeaturizer, Fs: da.Array, neighbours: int, neighbour_steps: int,
                    unit_rows: bool) -> tuple[da.Array, float]:
    """Step 9 on the reduced training rows ``Fs``: keep the rows (and ``H_{t-1}``) in ``feat``;
    ``(the training features H_t, seconds)``."""
    t_red = time.perf_counter()
    rows = np.ascontiguousarray((Fs.map_blocks(unit, dtype=np.float32) if unit_rows else Fs).compute(),
                                dtype=np.float32)
    feat.arrays["neighbour_rows"] = rows
    R = da.from_array(rows, chunks=(Fs.chunks[0], -1))
    idx = np.concatenate(dask.compute(*[dask.delayed(nearest_rows)(b, rows, int(neighbours))
                                        for b in R.to_delayed().ravel()]))
    H = rows
    for _ in range(neighbour_steps - 1):
        H = _average(H, idx, unit_rows)
    if neighbour_steps > 1:
        feat.arrays["neighbour_values"] = H
    Fs = da.from_array(_average(H, idx, unit_rows), chunks=(Fs.chunks[0], -1))  # in memory: n x D float32
    seconds = time.perf_counter() - t_red
    logger.info("%d steps of averaging over the %d nearest training rows in %.1f s", neighbour_steps,
                neighbours, seconds)
    return Fs, seconds


def fit_patches(X, *, size: int = 6, stride: int = 2, n_centers: int = 400, n_patches: int = 200_000,
                seed: int = 0, max_iter: int = 50, pool: int = 3, reduce_dim: int = 30, flip: bool = True,
                unit_rows: bool = True, neighbours: int | None = None,
                neighbour_steps: int = NEIGHBOUR_STEPS, persist: bool = True, return_features: bool = False):
    """Learn the whitening and the dictionary on ``X`` (training images), then the standardisation.

    Parameters
    ----------
    X : images (n, H, W, C) or flat rows (n, 3072), dask or NumPy; uint8 pixels or floats in [0, 1]
    size, stride : patch side and step between encoded positions
    n_centers : dictionary size K (pool^2 K pooled features)
    n_patches : random patches the whitening and the dictionary learn from
    seed : seeds the patch positions and the dictionary's k-means++
    max_iter : Lloyd iterations of the dictionary
    pool : side g of the pooling grid (2: quadrants, 3: nine cells)
    reduce_dim : whitened principal components kept of the standardised features (0: keep all g^2 K)
    flip : average each image's pooled activations with its horizontal mirror's
    unit_rows : scale the (reduced) rows to unit length (Euclidean k-means on them is spherical k-means)
    neighbours : replace each row by the mean of its ``neighbours`` nearest training rows (0: off; needs
        reduce_dim); default (None): :data:`NEIGHBOURS` with a reduction, 0 without one
    neighbour_steps : averaging steps over the training rows' neighbour graph (with neighbours)
    persist : keep the training features in memory (else they are recomputed when used)
    return_features : also return the training features (dask, (n, n_features)): standardised, reduced
    """
    t0 = time.perf_counter()
    X = as_images(X)
    N, H, W, C = X.shape
    _check_grid(size, stride, pool, reduce_dim, N, min(H, W), n_centers)
    neighbours = _check_neighbours(neighbours, neighbour_steps, reduce_dim, N, pool * pool * n_centers)
    if n_patches < n_centers:
        raise InputError(f"{n_patches} patches cannot make a dictionary of {n_centers} centres; "
                         f"pass --patch-samples {n_centers} or more")
    to255 = 255.0 * pixel_units(X.dtype)
    P = sample_patches(X, n_patches, size, seed) * np.float32(to255)
    P = normalise(P)
    zca_mean, zca_w = fit_zca(P)
    Pw = ((P - zca_mean.astype(np.float32)) @ zca_w.astype(np.float32)).astype(np.float32)
    t_sample = time.perf_counter()
    logger.info("%d patches %dx%d sampled and whitened in %.1f s; learning %d centres", n_patches, size, size,
                t_sample - t0, n_centers)
    km = KMeans(n_centers, algorithm="lloyd", random_state=seed, max_iter=max_iter, chunk_size=25_000, n_init=1)
    km.fit(Pw)
    t_dict = time.perf_counter()
    logger.info("dictionary of %d centres in %.1f s (%d iterations)", n_centers, t_dict - t_sample, km.n_iter_)
    options = {"size": int(size), "stride": int(stride), "n_centers": int(n_centers), "n_patches": int(n_patches),
               "seed": int(seed), "max_iter": int(max_iter), "pool": int(pool), "reduce_dim": int(reduce_dim),
               "flip": bool(flip), "unit_rows": bool(unit_rows), "neighbours": int(neighbours),
               "neighbour_steps": int(neighbour_steps), "image_shape": [int(H), int(W), int(C)]}
    feat = PatchFeaturizer(options, {"zca_mean": zca_mean, "zca_w": zca_w,
                                     "centers": np.asarray(km.cluster_centers_, dtype=np.float32)})
    F = feat.encode(X, standardise=False)
    if persist:
        F = F.persist()
    mean = F.astype(np.float64).mean(axis=0)
    var = F.astype(np.float64).var(axis=0)
    mean, var = dask.compute(mean, var)
    feat.arrays["feat_mean"] = mean.astype(np.float32)
    feat.arrays["feat_scale"] = (1.0 / np.sqrt(var + STD_EPS)).astype(np.float32)
    t_enc = time.perf_counter()
    logger.info("encoded %d images into %d features in %.1f s", N, feat.pooled_features, t_enc - t_dict)
    Fs = F.map_blocks(_standardise, mean=feat.arrays["feat_mean"], scale=feat.arrays["feat_scale"], dtype=np.float32)
    Fs, info = _fit_reduction(feat, Fs, reduce_dim) if reduce_dim else (Fs, {})
    if neighbours:
        Fs, info["neighbours_seconds"] = _fit_neighbours(feat, Fs, neighbours, neighbour_steps, unit_rows)
    elif unit_rows:
        Fs = Fs.map_blocks(unit, dtype=np.float32)
    t_end = time.perf_counter()
    feat.info = {"fit_seconds": t_end - t0, "sample_seconds": t_sample - t0, "dictionary_seconds": t_dict - t_sample,
                 "encode_seconds": t_enc - t_dict, "dictionary_iterations": int(km.n_iter_),
                 "dictionary_inertia": float(km.inertia_), "n_fit": int(N), **info}
    if return_features:
        return feat, Fs
    return feat
