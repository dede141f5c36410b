"""k-means|| against greedy k-means++ on the 50,000 CIFAR-10 training images.

    python bench/bench_init.py [--data ../shared/data/cifar10-images.tar.gz] [--ks 10,100,1000]
                               [--max-iter 10] [--seed 0] [--pp-cap 100] [--scheduler threads|local]
                               [--json out.json]

For each k: the time of each initialisation, the inertia of the initial centres
(the first iteration's inertia), then a Lloyd fit from them (the engine,
``daskmeans.kmeans.lloyd``, the same ``--max-iter`` and ``tol=0`` for both) and
its final inertia and time. Inertia is in centres' units (pixels in [0, 1]).

k-means++ costs two small computes per centre and grows with k. Where k exceeds
``--pp-cap`` (default 100), it is timed on the first ``--pp-cap`` centres only,
with the trial count of the full k (``2 + log k``), and the time is extrapolated
linearly to k (its per-centre cost does not depend on how many centres there
are); its inertia columns are then left empty (``--pp-cap 0``: no cap).

The data are persisted once and reused by every fit. The machine is shared and
noisy: read ratios, and run twice.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import dask
import numpy as np
from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import daskmeans  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402
from daskmeans.init_parallel import kmeans_parallel  # noqa: E402
from daskmeans.kmeans import kmeans_plusplus, lloyd  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-images.tar.gz"


def _fit(X, centers, max_iter):
    t0 = time.perf_counter()
    res = lloyd(X, centers, max_iter=max_iter, tol=0.0)
    return {"init_inertia": res.history[0]["inertia"], "inertia": res.inertia, "n_iter": res.n_iter,
            "fit_seconds": time.perf_counter() - t0}


def bench_k(X, k, seed, max_iter, pp_cap):
    """Both initialisations first (their times), then a fit from each."""
    rows, centers = {}, {}
    t0 = time.perf_counter()
    centers["k-means||"], info = kmeans_parallel(X, k, seed, return_info=True)
    rows["k-means||"] = {"init_seconds": time.perf_counter() - t0, "candidates": info["candidates"],
                         "rounds": info["rounds"]}
    print(f"  k={k} k-means|| init: {rows['k-means||']}", file=sys.stderr, flush=True)
    trials = 2 + int(np.log(k))
    if pp_cap and k > pp_cap:
        t0 = time.perf_counter()
        kmeans_plusplus(X, pp_cap, seed, n_local_trials=trials)
        t = time.perf_counter() - t0
        rows["k-means++"] = {"init_seconds": t * k / pp_cap, "extrapolated_from": pp_cap, "measured_seconds": t}
    else:
        t0 = time.perf_counter()
        centers["k-means++"], _ = kmeans_plusplus(X, k, seed)
        rows["k-means++"] = {"init_seconds": time.perf_counter() - t0}
    print(f"  k={k} k-means++ init: {rows['k-means++']}", file=sys.stderr, flush=True)
    for name, c in centers.items():
        rows[name].update(_fit(X, c, max_iter))
        print(f"  k={k} {name} fit: {rows[name]}", file=sys.stderr, flush=True)
    return rows


def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def table(results, max_iter) -> str:
    lines = [f"| k | init | init time (s) | initial inertia | inertia after {max_iter} Lloyd iterations | "
             "fit time (s) | init + fit (s) |",
             "|---|---|---|---|---|---|---|"]
    for k, rows in results.items():
        for name, r in rows.items():
            t = _f(r["init_seconds"], ".1f")
            if "extrapolated_from" in r:
                t = f"~{t} (first {r['extrapolated_from']} centres: {r['measured_seconds']:.1f} s, x {k}/" \
                    f"{r['extrapolated_from']})"
            total = r["init_seconds"] + r["fit_seconds"] if "fit_seconds" in r else None
            shown = name.replace("|", "\\|")  # a literal | in a markdown cell
            lines.append(f"| {k} | {shown} | {t} | {_f(r.get('init_inertia'), ',.0f')} | "
                         f"{_f(r.get('inertia'), ',.0f')} | {_f(r.get('fit_seconds'), '.1f')} | "
                         f"{_f(total, '.1f')} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--ks", default="10,100,1000")
    ap.add_argument("--max-iter", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pp-cap", type=int, default=100)
    ap.add_argument("--scheduler", default="threads", choices=("threads", "local"))
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    client = None
    if args.scheduler == "local":
        from distributed import Client, LocalCluster

        client = Client(LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None))
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    print(f"daskmeans {daskmeans.__version__}, Python {platform.python_version()}, dask {dask.__version__}, "
          f"{args.scheduler}, BLAS {blas}", flush=True)
    ds = load_cifar10(args.data, split="train", progress=False)
    X = ds.flat().persist()
    print(f"{X.shape[0]} images x {X.shape[1]} features, {X.npartitions} chunks", flush=True)
    results = {}
    for k in [int(x) for x in args.ks.split(",")]:
        results[k] = bench_k(X, k, args.seed, args.max_iter, args.pp_cap)
    print(table(results, args.max_iter))
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2) + "\n")
    if client is not None:
        client.close()


if __name__ == "__main__":
    main()
