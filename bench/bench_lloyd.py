"""Per-iteration time and peak memory: daskmeans vs scikit-learn, side by side, one process.

    python bench/bench_lloyd.py --data ../shared/data/cifar10-images.tar.gz [--subset N] [--max-iter 10]

Both fit the same data (CIFAR-10 train, 3072 features) from the same initial centres
(k-means++ drawn once), with tol=0 and the same max_iter, so they do the same
iterations. Reported:

- seconds per Lloyd iteration (daskmeans: median of its per-iteration history;
  scikit-learn: fit time / n_iter_, which includes no initialisation here), both
  measured in runs without tracemalloc;
- peak memory allocated during each fit (tracemalloc traces NumPy's allocations),
  counting the input each needs: uint8 dask chunks for daskmeans, float32 [0, 1]
  for scikit-learn (its documented fast path);
- agreement of the two labelings (ARI) and the ratio of the figures;
- the same fit with ``algorithm="hamerly"`` (mean seconds per iteration: its
  savings grow as fewer labels change), and whether its centres equal Lloyd's.

The machine is shared and noisy: read the ratios, run twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc

import dask
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from daskmeans import KMeans, kmeans_plusplus  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402


def peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    _, top = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return out, secs, top


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "cifar10-images.tar.gz"))
    ap.add_argument("--subset", type=int)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--max-iter", type=int, default=30)
    ap.add_argument("--chunk-size", type=int)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    ds = load_cifar10(a.data, split="train", chunk_size=a.chunk_size, progress=False)
    if a.subset:
        ds = ds.subset(a.subset, 0)
    X = ds.flat().persist()  # uint8, in memory: what daskmeans keeps during a fit
    init, _ = kmeans_plusplus(X, a.k, random_state=0)

    def ours():
        return KMeans(a.k, init=init, max_iter=a.max_iter, tol=0, persist=False).fit(X)

    def theirs():
        from sklearn.cluster import KMeans as SK

        Xs = X.compute().astype(np.float32) / np.float32(255)  # scikit-learn needs floats in memory
        return SK(a.k, init=init.astype(np.float32), n_init=1, max_iter=a.max_iter, tol=0, algorithm="lloyd").fit(Xs)

    with dask.config.set(scheduler="threads"):
        km, _, mem_ours = peak(ours)
        mem_ours += X.nbytes  # the persisted uint8 chunks it works from (allocated before tracing)
        sk, sk_secs, mem_sk = peak(theirs)
    from sklearn.metrics import adjusted_rand_score

    with dask.config.set(scheduler="threads"):
        km = ours()  # timed again without tracemalloc, which slows every allocation
        kh = KMeans(a.k, init=init, max_iter=a.max_iter, tol=0, persist=False, algorithm="hamerly").fit(X)
    same = bool(np.array_equal(kh.cluster_centers_, km.cluster_centers_))
    per_ours = float(np.median([h["seconds"] for h in km.history_]))
    per_ham = float(np.mean([h["seconds"] for h in kh.history_]))
    per_lloyd_mean = float(np.mean([h["seconds"] for h in km.history_]))
    per_iter = ", ".join(f"{h['seconds']:.3f}" for h in km.history_)
    # time scikit-learn's fit alone (the float conversion above is outside its fit)
    from sklearn.cluster import KMeans as SK

    Xs = X.compute().astype(np.float32) / np.float32(255)
    t0 = time.perf_counter()
    sk = SK(a.k, init=init.astype(np.float32), n_init=1, max_iter=a.max_iter, tol=0, algorithm="lloyd").fit(Xs)
    per_sk = (time.perf_counter() - t0) / sk.n_iter_
    res = {
        "n_samples": int(X.shape[0]),
        "k": a.k,
        "iterations": [km.n_iter_, int(sk.n_iter_)],
        "daskmeans_s_per_iter": per_ours,
        "sklearn_s_per_iter": per_sk,
        "speed_ratio_sklearn_over_daskmeans": per_sk / per_ours,
        "daskmeans_hamerly_s_per_iter_mean": per_ham,
        "daskmeans_lloyd_s_per_iter_mean": per_lloyd_mean,
        "speed_ratio_sklearn_over_hamerly": per_sk / per_ham,
        "hamerly_same_centres_as_lloyd": same,
        "daskmeans_peak_MiB": mem_ours / 2**20,
        "sklearn_peak_MiB": mem_sk / 2**20,
        "memory_ratio_daskmeans_over_sklearn": mem_ours / mem_sk,
        "labels_ari": float(adjusted_rand_score(sk.labels_, km.labels_.compute())),
        "max_centre_diff": float(np.abs(km.cluster_centers_ - sk.cluster_centers_).max()),
        "cores": os.cpu_count(),
    }
    if a.json:
        print(json.dumps(res, indent=1))
    else:
        print(f"{res['n_samples']} images, k={a.k}, {km.n_iter_} iterations each, {os.cpu_count()} cores")
        print(f"  seconds per iteration: daskmeans {per_ours:.3f}   scikit-learn {per_sk:.3f}   "
              f"(daskmeans is {per_sk / per_ours:.2f}x scikit-learn's speed)")
        print(f"  daskmeans iterations (s): {per_iter}")
        print(f"  with algorithm='hamerly': {per_ham:.3f} s per iteration on average (Lloyd {per_lloyd_mean:.3f}; "
              f"{per_sk / per_ham:.2f}x scikit-learn's speed), same centres as Lloyd: {same}")
        print(f"  peak memory in fit:    daskmeans {mem_ours / 2**20:.0f} MiB   scikit-learn {mem_sk / 2**20:.0f} MiB   "
              f"(ratio {mem_ours / mem_sk:.2f})")
        print(f"  agreement: ARI {res['labels_ari']:.4f}, max centre difference {res['max_centre_diff']:.2e}")


if __name__ == "__main__":
    main()
