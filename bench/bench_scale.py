"""Out of core: k-means on a million 32x32x3 images that are never all in memory.

    python bench/bench_scale.py [--n 1000000] [--max-iter 4] [--cases memory,threads,cluster]

Builds (once) a Zarr store of N uint8 images made from the real CIFAR-10 training
images (random picks, flips and shifts, so they compress like real photos), then
fits daskmeans from the same initial centres, each case in a fresh process:

- memory: the 50,000 real training images in memory (the linear-scaling baseline);
- threads: the N images with ``persist=False`` on dask's threads: every iteration
  streams the chunks from disk;
- cluster: the same on a LocalCluster of 2 worker processes (127.0.0.1).

Prints seconds per iteration, its ratio to linear scaling from the 50,000-image
run, and the peak resident memory of the process and of each worker (which must
stay far below the data size and not grow with N).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import dask
import dask.array as da
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from daskmeans import KMeans  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(path: str, n: int, data: str) -> None:
    import zarr

    base = load_cifar10(data, split="train", progress=False).images.compute()
    rng = np.random.default_rng(0)
    z = zarr.open_array(os.path.join(path, "images.zarr"), mode="w", shape=(n, 32, 32, 3),
                        chunks=(8192, 32, 32, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for s in range(0, n, 65536):
        e = min(s + 65536, n)
        imgs = base[rng.integers(0, len(base), e - s)]
        flip = rng.random(e - s) < 0.5
        imgs[flip] = imgs[flip, :, ::-1]
        imgs = np.roll(imgs, rng.integers(-2, 3), axis=1)
        z[s:e] = imgs
        print(f"\rwriting {e:,}/{n:,} images", end="", file=sys.stderr, flush=True)
    print(f"\nwrote {n:,} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    open(os.path.join(path, "done"), "w").close()


def _worker_rss():
    import resource as r

    return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024


def case(a):
    """One fit, in this (fresh) process: prints one JSON line."""
    import json

    before = rss_mib()
    if a.case == "memory":  # the 50,000 real training images, in memory: the linear-scaling baseline
        X = load_cifar10(a.data, split="train", chunk_size=a.chunk_size, progress=False).flat().persist()
        persist = True
    else:
        X = da.from_zarr(os.path.join(a.dir, "images.zarr"), chunks=(a.chunk_size, 32, 32, 3))
        X = X.reshape(X.shape[0], -1)
        persist = False
    init = X[: a.k].compute().astype(np.float64) / 255.0  # the same initial centres in every case
    workers = {}
    if a.case == "cluster":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)
        client = Client(cluster)
        ctx = dask.config.set(scheduler=client)
    else:
        client = None
        ctx = dask.config.set(scheduler="threads")
    t0 = time.perf_counter()
    with ctx:
        km = KMeans(a.k, init=init, max_iter=a.max_iter, tol=0, persist=persist).fit(X)
    total = time.perf_counter() - t0
    if client is not None:
        workers = client.run(_worker_rss)
        client.close()
        cluster.close()
    secs = [h["seconds"] for h in km.history_]
    print(json.dumps({"case": a.case, "n": int(X.shape[0]), "gib": X.nbytes / 2**30, "fit_s": total,
                      "iter_s": float(np.median(secs[1:] if len(secs) > 1 else secs)), "rss_mib": rss_mib(),
                      "rss_before_mib": before, "worker_rss_mib": sorted(workers.values())}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--max-iter", type=int, default=4)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--dir", default=None, help="where the store is built (default /tmp/daskmeans-scale-N)")
    ap.add_argument("--cases", default="memory,threads,cluster")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "cifar10-images.tar.gz"))
    a = ap.parse_args()
    a.dir = a.dir or f"/tmp/daskmeans-scale-{a.n}"
    if a.case:
        return case(a)
    import json
    import subprocess

    os.makedirs(a.dir, exist_ok=True)
    if not os.path.exists(os.path.join(a.dir, "done")):
        build(a.dir, a.n, a.data)
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores, k = {a.k}, {a.max_iter} iterations "
          f"(medians of 2-{a.max_iter}), chunks of {a.chunk_size} rows")
    print("| case | images | GiB (uint8) | s/iter | vs linear from 50,000 | peak RSS MiB (process) | workers' peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for c in a.cases.split(","):
        # each case in a fresh process: ru_maxrss is a lifetime peak
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--case", c, "--dir", a.dir],
                             capture_output=True, text=True)
        if out.returncode:
            print(f"| {c} | failed: {out.stderr.strip().splitlines()[-1:]} |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        if c == "memory":
            base = r["iter_s"] / r["n"]
        lin = f"{r['iter_s'] / (base * r['n']):.2f}x" if base else ""
        where = {"memory": "in memory, threads", "threads": "out of core, threads",
                 "cluster": "out of core, LocalCluster 2 processes"}[c]
        print(f"| {where} | {r['n']:,} | {r['gib']:.2f} | {r['iter_s']:.3f} | {lin} | {r['rss_mib']:.0f} | "
              f"{', '.join(f'{w:.0f}' for w in r['worker_rss_mib'])} |", flush=True)


if __name__ == "__main__":
    main()
