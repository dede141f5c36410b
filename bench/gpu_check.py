"""GPU check: the same daskmeans code on CuPy chunks, against NumPy chunks and scikit-learn.

Run on a machine with CuPy and a CUDA device::

    python bench/gpu_check.py --data ../shared/data/cifar10-images.tar.gz --out gpu.json

Prints (and writes as JSON):
- kernel agreement on one block (labels, exact sums, counts) between NumPy and CuPy;
- Hamerly's bounds on CuPy chunks: the same centres and labels as Lloyd there;
- a full fit on the train split with the same initial centres on NumPy chunks,
  CuPy chunks and scikit-learn: per-iteration time (median), agreement of the
  labelings (ARI), largest centre difference, purity from the distributed
  contingency table computed on the GPU.
``--backend numpy`` runs everything on NumPy (to try the script without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import dask
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from daskmeans import KMeans, kernels, kmeans_plusplus  # noqa: E402
from daskmeans.backend import to_backend, to_numpy  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402
from daskmeans.metrics import contingency, scores  # noqa: E402


def log(*a):
    print(*a, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--subset", type=int)
    ap.add_argument("--chunk-size", type=int, default=10000)
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    ap.add_argument("--sklearn", action="store_true", help="also time scikit-learn")
    ap.add_argument("--out")
    a = ap.parse_args()
    res = {"python": platform.python_version(), "CUPY_TF32": os.environ.get("CUPY_TF32")}
    if a.backend == "cupy":
        import cupy

        xp_asarray = cupy.asarray
        dev = cupy.cuda.runtime.getDeviceProperties(0)
        res["device"] = dev["name"].decode() if isinstance(dev["name"], bytes) else str(dev["name"])
        res["cupy"] = cupy.__version__
    else:
        xp_asarray = np.asarray
    log("setup", res)

    # 1. one block, both backends
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(20000, 3072), dtype=np.uint8)
    C = rng.uniform(size=(10, 3072))
    lab_n, (s_n, c_n, i_n, _) = kernels.lloyd_step(block, C, None, scale=1 / 255)
    lab_g, (s_g, c_g, i_g, _) = kernels.lloyd_step(xp_asarray(block), C, None, scale=1 / 255)
    res["kernel_labels_equal"] = bool(np.array_equal(lab_n, to_numpy(lab_g)))
    res["kernel_sums_equal"] = bool(np.array_equal(s_n, to_numpy(s_g)))
    res["kernel_counts_equal"] = bool(np.array_equal(c_n, to_numpy(c_g)))
    res["kernel_inertia_rel_diff"] = float(abs(float(i_n) - float(to_numpy(i_g))) / float(i_n))
    gb = xp_asarray(block)
    res["kernel_moments_equal"] = all(
        np.array_equal(to_numpy(u), to_numpy(v)) for u, v in zip(kernels.moments(block), kernels.moments(gb))
    )
    fn, fg = kernels.farthest(block, C, 0, 5, scale=1 / 255), kernels.farthest(gb, C, 0, 5, scale=1 / 255)
    res["kernel_farthest_equal"] = bool(np.array_equal(fn[1], to_numpy(fg[1])))
    cn, _ = kernels.closest_sq_dist(block, C[:1], scale=1 / 255)
    cg, _ = kernels.closest_sq_dist(gb, C[:1], scale=1 / 255)
    res["kernel_closest_max_rel_diff"] = float(np.max(np.abs(cn - to_numpy(cg)) / cn))
    res["kernel_distance_max_abs_diff"] = float(
        np.max(np.abs(kernels.distances(block, C, 1 / 255) - to_numpy(kernels.distances(gb, C, 1 / 255))))
    )
    log("kernel", {k: v for k, v in res.items() if k.startswith("kernel")})

    # 2. a fit on the real data
    t0 = time.perf_counter()
    ds = load_cifar10(a.data, split="train", chunk_size=a.chunk_size, progress=False)
    if a.subset:
        ds = ds.subset(a.subset, 0)
    X = ds.flat().persist()
    res["load_seconds"] = time.perf_counter() - t0
    res["n_samples"] = int(X.shape[0])
    t = time.perf_counter()
    init, idx_n = kmeans_plusplus(X, 10, random_state=0)
    res["kmeanspp_numpy_s"] = time.perf_counter() - t
    if a.backend != "numpy":
        t = time.perf_counter()
        _, idx_g = kmeans_plusplus(to_backend(X, a.backend).persist(), 10, random_state=0)
        res["kmeanspp_gpu_s"] = time.perf_counter() - t
        res["kmeanspp_same_indices"] = bool(np.array_equal(idx_n, idx_g))
    fits = {}
    for name, backend in (("numpy", "numpy"), (a.backend, a.backend)) if a.backend != "numpy" else (("numpy", "numpy"),):
        Xb = to_backend(X, backend).persist()
        km = KMeans(10, init=init, max_iter=a.max_iter, tol=0).fit(Xb)
        table = contingency(km.labels_, to_backend(ds.labels, backend), 10, 10)
        secs = [h["seconds"] for h in km.history_]
        fits[name] = km
        res[f"{name}_iter_median_s"] = float(np.median(secs[1:] or secs))
        res[f"{name}_n_iter"] = km.n_iter_
        res[f"{name}_purity"] = scores(table)["purity"]
        res[f"{name}_inertia"] = km.inertia_
        log(name, {k: v for k, v in res.items() if k.startswith(name)})
    if a.backend != "numpy":
        # Hamerly's bounds on the GPU must give Lloyd's exact result there too
        Xb = to_backend(X, a.backend).persist()
        t = time.perf_counter()
        kh = KMeans(10, init=init, max_iter=a.max_iter, tol=0, algorithm="hamerly").fit(Xb)
        res["gpu_hamerly_s"] = time.perf_counter() - t
        res["gpu_hamerly_same_centres_as_lloyd"] = bool(np.array_equal(kh.cluster_centers_, fits[a.backend].cluster_centers_))
        res["gpu_hamerly_same_labels_as_lloyd"] = bool(
            np.array_equal(to_numpy(kh.labels_.compute()), to_numpy(fits[a.backend].labels_.compute()))
        )
        log("hamerly", {k: v for k, v in res.items() if "hamerly" in k})
        from sklearn.metrics import adjusted_rand_score

        g, n = fits[a.backend], fits["numpy"]
        res["gpu_vs_cpu_ari"] = adjusted_rand_score(to_numpy(n.labels_.compute()), to_numpy(g.labels_.compute()))
        res["gpu_vs_cpu_max_centre_diff"] = float(np.abs(g.cluster_centers_ - n.cluster_centers_).max())
        res["gpu_vs_cpu_centres_bit_identical"] = bool(np.array_equal(g.cluster_centers_, n.cluster_centers_))
        res["speedup_per_iter_gpu_vs_cpu"] = res["numpy_iter_median_s"] / res[f"{a.backend}_iter_median_s"]
    if a.sklearn:
        from sklearn.cluster import KMeans as SK

        Xs = to_numpy(X.compute()).astype(np.float32) / 255
        t = time.perf_counter()
        sk = SK(10, init=init.astype(np.float32), n_init=1, max_iter=a.max_iter, tol=0, algorithm="lloyd").fit(Xs)
        res["sklearn_iter_mean_s"] = (time.perf_counter() - t) / sk.n_iter_
        res["sklearn_n_iter"] = int(sk.n_iter_)
        log("sklearn", res["sklearn_iter_mean_s"], sk.n_iter_)
    log(json.dumps(res, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    with dask.config.set(scheduler="threads"):
        main()
