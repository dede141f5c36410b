"""Out of core: k-means on a million 32x32x3 images that are never all in memory.

    python bench/bench_scale.py [--n 1000000] [--max-iter 3] [--dir /tmp/daskmeans-scale]

Builds (once) a Zarr store of N uint8 images made from the real CIFAR-10 training
images (random picks, flips and shifts, so they compress like real photos), then
fits daskmeans with ``persist=False``: every iteration streams the chunks from disk.
Prints the data size, seconds per iteration, and the peak resident memory of the
process (which must stay far below the data size), next to what scikit-learn would
need just to hold the data as float32.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--max-iter", type=int, default=3)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--dir", default="/tmp/daskmeans-scale")
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                   "cifar10-images.tar.gz"))
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    if not os.path.exists(os.path.join(a.dir, "done")):
        build(a.dir, a.n, a.data)
        # measure in a fresh process: ru_maxrss is a lifetime peak (kept across exec, too)
        import subprocess

        sys.exit(subprocess.call([sys.executable] + sys.argv))
    before = rss_mib()
    X = da.from_zarr(os.path.join(a.dir, "images.zarr"), chunks=(a.chunk_size, 32, 32, 3))
    X = X.reshape(X.shape[0], -1)
    t0 = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        km = KMeans(a.k, init="uniform", random_state=0, max_iter=a.max_iter, tol=0, persist=False).fit(X)
    secs = [h["seconds"] for h in km.history_]
    gib = X.nbytes / 2**30
    print(f"{a.n:,} images ({gib:.1f} GiB as uint8, {gib * 4:.1f} GiB as float32), k={a.k}, "
          f"chunks of {a.chunk_size} rows, {os.cpu_count()} cores")
    print(f"  fit {time.perf_counter() - t0:.0f} s, {km.n_iter_} iterations, "
          f"{np.median(secs):.1f} s per iteration (streamed from disk every time)")
    print(f"  peak resident memory {rss_mib():.0f} MiB (before the fit {before:.0f} MiB); "
          f"scikit-learn would need {gib * 4 * 1024:.0f} MiB for float32 X alone")


if __name__ == "__main__":
    main()
