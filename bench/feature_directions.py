"""Choosing the patch features' settings on a subset of the training images.

The settings of ``--features patches`` (mirror averaging, unit rows, the
dimension of the whitened PCA, the neighbour diffusion) were chosen with this
script on a seeded subset of the *training* split: labels score each choice,
the test images take no part. The patches, whitening and dictionary come from
the subset (daskmeans's own functions); the pooled features are encoded once
with and once without mirror averaging, then every combination of the options
below is clustered with scikit-learn's ``KMeans`` (k = 10, one run per seed) and
scored. Prints one row per combination: median and mean purity and NMI over the
seeds, and the load average.

    python bench/feature_directions.py --subset 25000 --seeds 0-8
    python bench/feature_directions.py --subset 10000 --dims 20,30,50 --neighbours 0 --steps 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time

import dask
import numpy as np
from sklearn.cluster import KMeans as SKKMeans
from sklearn.metrics import normalized_mutual_info_score

from daskmeans import KMeans, load_cifar10
from daskmeans.features.patches import _average, encode_images, fit_zca, nearest_rows, normalise, sample_patches, unit
from daskmeans.features.pca import fit_pca


def _ints(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(v) for v in text.split(",")]


def purity(labels, y, k=10) -> float:
    table = np.zeros((k, int(y.max()) + 1))
    np.add.at(table, (labels, y), 1)
    return float(table.max(axis=1).sum() / len(y))


def dictionary(images, n_centers, n_patches, seed=0, size=6):
    """ZCA and the k-means dictionary of ``n_patches`` random patches (as ``features.fit_patches`` learns them)."""
    P = normalise(sample_patches(dask.array.from_array(images, chunks=(5000, -1, -1, -1)), n_patches, size, seed))
    zm, zw = fit_zca(P)
    Pw = ((P - zm.astype(np.float32)) @ zw.astype(np.float32)).astype(np.float32)
    km = KMeans(n_centers, algorithm="lloyd", random_state=seed, max_iter=50, n_init=1).fit(Pw)
    return zm, zw, np.asarray(km.cluster_centers_, dtype=np.float32)


def reduced(F, dim):
    """Standardised (training mean, sqrt(var + 0.01)), then whitened PCA to ``dim`` (daskmeans's fit_pca)."""
    F = F.astype(np.float64)
    S = ((F - F.mean(0)) / np.sqrt(F.var(0) + 0.01)).astype(np.float32)
    return np.asarray(fit_pca(S, dim=dim, whiten=True).transform(S).compute(), dtype=np.float32)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifar10-images.tar.gz")
    ap.add_argument("--subset", type=int, default=25_000, help="training images (numpy.random.default_rng(0))")
    ap.add_argument("--seeds", default="0-4", help="k-means seeds: 0-8 or 0,1,2")
    ap.add_argument("--dictionary-size", type=int, default=400)
    ap.add_argument("--patch-samples", type=int, default=200_000)
    ap.add_argument("--flip", default="0,1", help="mirror averaging off/on")
    ap.add_argument("--unit-rows", default="1", help="unit rows off/on")
    ap.add_argument("--dims", default="30", help="whitened PCA dimensions")
    ap.add_argument("--neighbours", default="0,50", help="neighbours (0: off)")
    ap.add_argument("--steps", default="1,5", help="diffusion steps (with neighbours)")
    args = ap.parse_args(argv)
    seeds = _ints(args.seeds)
    load_before = os.getloadavg()[0]

    ds = load_cifar10(args.data, split="train", progress=False)
    images, y = dask.compute(ds.images, ds.labels)
    sel = np.sort(np.random.default_rng(0).choice(len(y), args.subset, replace=False))
    images, y = images[sel], np.asarray(y)[sel]
    t0 = time.perf_counter()
    zm, zw, C = dictionary(images, args.dictionary_size, args.patch_samples)
    print(f"dictionary of {args.dictionary_size} centres from {args.subset} images in {time.perf_counter() - t0:.0f} s",
          flush=True)
    encoded = {f: encode_images(images, zca_mean=zm, zca_w=zw, centers=C, size=6, stride=2, to255=1.0, pool=3,
                                flip=bool(f)) for f in _ints(args.flip)}
    head = f"{'flip':>4} {'unit':>4} {'dim':>4} {'m':>4} {'t':>3} | {'purity':>7} {'NMI':>7} | {'mean pur':>8} {'mean NMI':>8}"
    print(head + "\n" + "-" * len(head))
    for f, u, dim, m, t in itertools.product(_ints(args.flip), _ints(args.unit_rows), _ints(args.dims),
                                             _ints(args.neighbours), _ints(args.steps)):
        if (m == 0 and t != 1):
            continue
        G = reduced(encoded[f], dim)
        if u:
            G = unit(G)
        if m:
            idx = nearest_rows(G, G, m)
            for _ in range(t):
                G = _average(G, idx, bool(u))
        scores = [(purity(lab, y), normalized_mutual_info_score(y, lab))
                  for lab in (SKKMeans(10, n_init=1, random_state=s).fit(G).labels_ for s in seeds)]
        p, n = zip(*scores)
        print(f"{f:>4} {u:>4} {dim:>4} {m:>4} {t:>3} | {statistics.median(p):>7.4f} {statistics.median(n):>7.4f} | "
              f"{statistics.mean(p):>8.4f} {statistics.mean(n):>8.4f}", flush=True)
    print(f"{args.subset} training images, k-means seeds {args.seeds}; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
