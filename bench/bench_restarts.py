"""Restarts sharing passes: the cost of n_init = R as a multiple of one run.

    python bench/bench_restarts.py [--data ../shared/data/cifar10-images.tar.gz] [--subset 10000] [-R 10]
                                   [--algorithm auto] [--threads 2] [--json out.json]

From R k-means++ starts (drawn once, one after the other from one generator, as
``n_init`` does), in one process, side by side:

- daskmeans ``lloyd_many`` (the R runs share every pass over the chunks),
- the same R runs one after the other (``lloyd``), and the first run alone,
- scikit-learn's ``KMeans(n_init=R)`` and ``KMeans(n_init=1)`` (float32 [0, 1], its fast path),

all with ``tol=1e-4`` (scikit-learn's default). It checks that every shared run
equals its separate run (centres, inertia, iterations) and prints the iteration
counts: a run's cost is about proportional to its iterations, so the ratio
"R runs / one run" is bounded below by "sum of the R runs' iterations / the first
run's", whatever the sharing. The machine, the BLAS kernel (threadpoolctl) and
the load are printed first; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import dask
import numpy as np
import threadpoolctl
from sklearn.cluster import KMeans as SKKMeans
from sklearn.utils import check_random_state

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daskmeans.data import load_cifar10  # noqa: E402
from daskmeans.kmeans import kmeans_plusplus, lloyd, lloyd_many, tolerance  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-images.tar.gz"


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--subset", type=int, default=10000, help="first N training images (0: all 50,000)")
    ap.add_argument("-R", type=int, default=10, help="restarts")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--algorithm", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    dask.config.set(num_workers=a.threads)
    threadpoolctl.threadpool_limits(a.threads, user_api="openmp")
    info = {"blas": [(i["internal_api"], i.get("architecture"), i["num_threads"])
                     for i in threadpoolctl.threadpool_info()], "load_average": os.getloadavg(),
            "threads": a.threads, "R": a.R, "k": a.k, "subset": a.subset, "algorithm": a.algorithm}
    print(json.dumps(info))
    ds = load_cifar10(a.data, split="train", chunk_size=5000, progress=False)
    X = ds.flat()
    if a.subset:
        X = X[: a.subset]
    X = X.persist()
    X32 = X.compute().astype(np.float32) / np.float32(255)
    tol = tolerance(X, 1e-4, 1 / 255)
    rng = check_random_state(0)
    (inits, t_init) = timed(lambda: [kmeans_plusplus(X, a.k, rng)[0] for _ in range(a.R)])
    kw = dict(max_iter=300, tol=tol, algorithm=a.algorithm)
    lloyd(X, inits[0], **{**kw, "max_iter": 3})  # warm-up: compiled kernels loaded before any clock starts
    # alternated, so a change of load on the machine does not favour one side
    alone, t_alone = timed(lambda: [lloyd(X, c0, **kw) for c0 in inits])
    shared, t_shared = timed(lambda: lloyd_many(X, inits, **kw))
    one, t_one = timed(lambda: lloyd(X, inits[0], **kw))
    for s, o in zip(shared, alone):
        assert np.array_equal(s.centers, o.centers) and s.inertia == o.inertia and s.n_iter == o.n_iter
    _, t_sk_r = timed(lambda: SKKMeans(a.k, n_init=a.R, random_state=0).fit(X32))
    _, t_sk_1 = timed(lambda: SKKMeans(a.k, n_init=1, random_state=0).fit(X32))
    iters = [r.n_iter for r in shared]
    rows = {
        "k-means++ for R starts, s": t_init,
        f"daskmeans R={a.R} shared passes, s": t_shared,
        f"daskmeans R={a.R} one after the other, s": t_alone,
        "daskmeans first run alone, s": t_one,
        "shared / one run": t_shared / t_one,
        "one after the other / one run": t_alone / t_one,
        "sum of iterations / first run's": sum(iters) / iters[0],
        "shared / one after the other": t_shared / t_alone,
        f"scikit-learn n_init={a.R} / n_init=1 (incl. its k-means++)": t_sk_r / t_sk_1,
    }
    print(f"iterations per run: {iters}; best inertia {min(r.inertia for r in shared):.6g} "
          f"(run {int(np.argmin([r.inertia for r in shared])) + 1}); every shared run == its separate run")
    print("| measure | value |\n|---|---|")
    for key, v in rows.items():
        print(f"| {key} | {v:.3f} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"info": info, "iterations": iters, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
