"""The engine's table: daskmeans against the other k-means implementations, side by side in one process.

    python bench/bench_engine.py [--data ../shared/data/cifar10-images.tar.gz] [--json out.json]
        [--only peers,shapes,threads,local,small,smallfit,converge,chunks,rss] [--threads N]

Every row fits the same data from the same initial centres (k-means++ drawn once)
with ``tol=0``. Ratios are daskmeans / the other (below 1: daskmeans is faster).
The machine, the BLAS kernel that ran (threadpoolctl), the load average and the
versions are printed first. Run it twice, and once more with
``OPENBLAS_CORETYPE=Haswell`` to see the other OpenBLAS kernel.

Sections:
- peers: per-iteration cost of whole fits ((fit of 21 iterations - fit of 1) / 20,
  best of 2) of scikit-learn lloyd and elkan, oneDAL (scikit-learn-intelex) and
  faiss-cpu where installed, and daskmeans lloyd and auto, on the 50,000 training
  images, k = 10; the ratio is to the fastest peer;
- shapes: the same at k = 100 and 1,000 (50,000 images) and k = 400 on 1,000,000
  random 6 x 6 x 3 patches (d = 108), fits of 3 iterations minus 1;
- threads: daskmeans' own per-iteration history (iterations 2-20, most labels move,
  and 81-100) against scikit-learn's Lloyd kernel (``lloyd_iter_chunked_dense``, all
  cores, one BLAS thread as its fit runs it) timed per call;
- local: the same on a LocalCluster of 2 worker processes, plus the per-iteration
  overhead (a pass whose kernel does nothing, 10 chunks), direct passes and
  scheduled tasks;
- small: N = 2,000 on threads;
- smallfit: whole fits (k-means++ included) of 2,000 and 10,000 images from NumPy, seeds 0-1;
- converge: time to a converged fit from the library's defaults,
  ``KMeans(10, random_state=s)`` vs scikit-learn's ``KMeans(n_clusters=10, random_state=s)``
  (float32 [0, 1] input, its fast path), seeds 0-2, with the inertia ratio;
- chunks: 10, 100 and 1,000 chunks on the 2-worker LocalCluster;
- rss: peak RSS of README's main job (``daskmeans run``, pictures included), in a
  process of its own, after a first run has filled the compiled-kernel cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import sklearn
import threadpoolctl
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster._k_means_lloyd import lloyd_iter_chunked_dense
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import daskmeans  # noqa: E402
from daskmeans import KMeans, kmeans_plusplus  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402
from daskmeans.kmeans import pixel_scale  # noqa: E402
from daskmeans.placement import Placement  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-images.tar.gz"


def machine() -> dict:
    blas = [
        {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
        for i in threadpoolctl.threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "scikit-learn": sklearn.__version__,
        "daskmeans": daskmeans.__version__,
        "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


THREADS = None  # --threads: the same number of threads for both (None: all cores)


def sk_iterations(X32, centers, n_iter):
    """Seconds of each call of scikit-learn's Lloyd kernel (its own loop's work), on THREADS threads."""
    n = X32.shape[0]
    w = np.ones(n, dtype=np.float32)
    c = np.ascontiguousarray(centers, dtype=np.float32)
    c_new = np.zeros_like(c)
    wic = np.zeros(len(c), dtype=np.float32)
    labels = np.full(n, -1, dtype=np.int32)
    shift = np.zeros(len(c), dtype=np.float32)
    threads = THREADS or _openmp_effective_n_threads()
    secs = []
    with threadpoolctl.threadpool_limits(1, user_api="blas"):  # as KMeans.fit runs it (no oversubscription)
        for _ in range(n_iter):
            t0 = time.perf_counter()
            lloyd_iter_chunked_dense(X32, w, c, c_new, wic, labels, shift, threads)
            secs.append(time.perf_counter() - t0)
            c, c_new = c_new, c
    return secs


def dm_iterations(X, centers, max_iter, algorithm):
    km = KMeans(len(centers), init=centers, tol=0, max_iter=max_iter, algorithm=algorithm).fit(X)
    return [h["seconds"] for h in km.history_], km


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def row(table, case, dm, sk, note=""):
    table.append({"case": case, "daskmeans_s": dm, "sklearn_s": sk, "ratio": dm / sk if sk else None, "note": note})
    r = f"{dm / sk:.2f}x" if sk else ""
    print(f"| {case} | {dm:.4f} | {sk:.4f} | {r} | {note} |", flush=True)


def section_phases(table, X, X32, centers, label):
    sk = sk_iterations(X32, centers, 20)
    for algorithm in ("auto", "lloyd"):
        secs, km = dm_iterations(X, centers, 100, algorithm)
        name = km.algorithm_ if hasattr(km, "algorithm_") else algorithm
        row(table, f"{label}, {algorithm} ({name}), iterations 2-20", med(secs[1:20]), med(sk[1:20]))
        if len(secs) > 80:
            row(table, f"{label}, {algorithm} ({name}), iterations 81-100", med(secs[80:100]), med(sk[1:20]),
                "scikit-learn's Lloyd costs the same in every iteration")


def section_overhead(table, X):
    """An iteration whose kernel does nothing: what placement, messages and the tree cost."""

    def nothing(states, blocks, offsets, shared):
        return states, np.zeros((10, 3072))

    Xc = X.rechunk({0: X.shape[0] // 10}).persist()
    for direct in (True, False):
        how = "direct passes (a runner per worker)" if direct else "scheduled tasks"
        with dask.config.set({"daskmeans.direct-passes": direct}), Placement(Xc, persist=True) as p:
            p.run(nothing, {}, 1)
            secs = []
            for i in range(2, 52):
                t0 = time.perf_counter()
                p.run(nothing, {"centers": np.zeros((10, 3072), np.float32)}, i)
                secs.append(time.perf_counter() - t0)
        table.append({"case": f"per-iteration overhead, 10 chunks, 2 workers, {how}", "daskmeans_s": med(secs)})
        print(f"| per-iteration overhead (no-op kernel), 10 chunks, {how} | {med(secs):.4f} | | | |", flush=True)


def section_chunks(table, X, centers):
    base = None
    for n_chunks in (10, 100, 1000):
        Xc = X.rechunk({0: -(-X.shape[0] // n_chunks)}).persist()
        secs, _ = dm_iterations(Xc, centers, 12, "lloyd")
        m = med(secs[1:])
        base = base or m
        table.append({"case": f"{n_chunks} chunks, 2 workers, lloyd", "daskmeans_s": m, "vs_10_chunks": m / base})
        print(f"| {n_chunks} chunks, 2 workers, lloyd | {m:.4f} | | {m / base:.2f}x of 10 chunks | |", flush=True)


def section_converge(table, X, X32):
    if THREADS:  # scikit-learn's OpenMP loops on the same number of threads as dask's
        threadpoolctl.threadpool_limits(THREADS, user_api="openmp")
    for seed in (0, 1, 2):
        t0 = time.perf_counter()
        km = KMeans(10, random_state=seed).fit(X)
        dm = time.perf_counter() - t0
        t0 = time.perf_counter()
        sk = SKKMeans(n_clusters=10, random_state=seed).fit(X32)
        sks = time.perf_counter() - t0
        note = (f"inertia ratio {km.inertia_ / sk.inertia_:.5f}; iterations {km.n_iter_} vs {sk.n_iter_}; "
                f"algorithm {getattr(km, 'algorithm_', '?')}")
        row(table, f"converged fit from defaults, seed {seed}", dm, sks, note)
        t0 = time.perf_counter()
        el = SKKMeans(n_clusters=10, random_state=seed, algorithm="elkan").fit(X32)
        els = time.perf_counter() - t0
        row(table, f"same, against scikit-learn's elkan, seed {seed}", dm, els,
            f"inertia ratio {km.inertia_ / el.inertia_:.5f}; iterations {km.n_iter_} vs {el.n_iter_}")


def section_small_fit(table, X):
    """Whole fits, k-means++ included, on the first 2,000 and 10,000 images (NumPy in)."""
    for n in (2000, 10000):
        Xn = X[:n].compute()
        X32 = Xn.astype(np.float32) / np.float32(255)
        KMeans(10, random_state=0).fit(Xn[:500])  # warm: compiled kernels loaded before the clock
        for seed in (0, 1):
            t0 = time.perf_counter()
            km = KMeans(10, random_state=seed).fit(Xn)
            dm = time.perf_counter() - t0
            t0 = time.perf_counter()
            sk = SKKMeans(n_clusters=10, random_state=seed).fit(X32)
            row(table, f"whole fit from the defaults, {n:,} images, seed {seed}", dm, time.perf_counter() - t0,
                f"iterations {km.n_iter_} vs {sk.n_iter_}")


# -- the peers: whole fits from the same centres, per-iteration cost by difference ------------


def _peer_fitters():
    """name -> fit(X32, centres32, n_iter): every k-means peer installed here (float32, all cores)."""
    fitters = {
        "scikit-learn lloyd": lambda X, C, it: SKKMeans(len(C), init=C, n_init=1, max_iter=it, tol=0,
                                                        algorithm="lloyd").fit(X),
        "scikit-learn elkan": lambda X, C, it: SKKMeans(len(C), init=C, n_init=1, max_iter=it, tol=0,
                                                        algorithm="elkan").fit(X),
    }
    try:
        from sklearnex.cluster import KMeans as OneDAL

        fitters["oneDAL (scikit-learn-intelex)"] = lambda X, C, it: OneDAL(len(C), init=C, n_init=1, max_iter=it,
                                                                           tol=0).fit(X)
    except ImportError:
        print("# scikit-learn-intelex is not installed: no oneDAL row", flush=True)
    try:
        import faiss

        def faiss_fit(X, C, it):
            km = faiss.Kmeans(X.shape[1], len(C), niter=it, max_points_per_centroid=X.shape[0], seed=0)
            km.train(X, init_centroids=C)

        fitters["faiss-cpu (all points)"] = faiss_fit
    except ImportError:
        print("# faiss-cpu is not installed: no faiss row", flush=True)
    return fitters


def per_iteration(fit, lo, hi, repeat=2):
    """Seconds per iteration as (fit of ``hi`` iterations - fit of ``lo``) / (hi - lo), best of ``repeat``:
    what an iteration costs, without the set-up, conversion and final pass of a fit."""
    fit(lo)  # warm: threads, compiled code, caches
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fit(lo)
        t1 = time.perf_counter()
        fit(hi)
        t2 = time.perf_counter()
        best = min(best, ((t2 - t1) - (t1 - t0)) / (hi - lo))
    return best


def section_peers(table, X, centers, label, lo=1, hi=21):
    """daskmeans (lloyd, auto) against every peer, the same data and initial centres, tol 0."""
    X32 = np.ascontiguousarray(X.compute().astype(np.float32) * np.float32(pixel_scale(X.dtype)))
    C32 = np.ascontiguousarray(centers, dtype=np.float32)
    peers = {name: per_iteration(lambda it, f=f: f(X32, C32, it), lo, hi) for name, f in _peer_fitters().items()}
    fastest = min(peers, key=peers.get)
    for name, secs in peers.items():
        table.append({"case": f"{label}: {name}", "seconds": secs, "section": "peers"})
        print(f"| {label} | {name} | {secs:.4f} | {secs / peers[fastest]:.2f}x |", flush=True)
    for algorithm in ("lloyd", "auto"):
        secs = per_iteration(lambda it: KMeans(len(C32), init=centers, tol=0, max_iter=it,
                                               algorithm=algorithm).fit(X), lo, hi)
        table.append({"case": f"{label}: daskmeans {algorithm}", "seconds": secs, "fastest_peer": fastest,
                      "ratio": secs / peers[fastest], "section": "peers"})
        print(f"| {label} | **daskmeans {algorithm}** | {secs:.4f} | **{secs / peers[fastest]:.2f}x** "
              f"(fastest: {fastest}) |", flush=True)


def patches(images, n_rows, size=6, seed=0):
    """``n_rows`` random size x size x 3 patches of CIFAR images (uint8, d = 3 size^2)."""
    rng = np.random.default_rng(seed)
    imgs = images.reshape(-1, 32, 32, 3)
    i = rng.integers(0, imgs.shape[0], n_rows)
    y = rng.integers(0, 32 - size + 1, n_rows)
    x = rng.integers(0, 32 - size + 1, n_rows)
    out = np.empty((n_rows, size, size, 3), dtype=np.uint8)
    for dy in range(size):
        for dx in range(size):
            out[:, dy, dx, :] = imgs[i, y + dy, x + dx, :]
    return out.reshape(n_rows, -1)


def section_shapes(table, X):
    """Other shapes: k = 100 and 1,000 on the 50,000 images; k = 400 on 1,000,000 6 x 6 x 3 patches."""
    for k in (100, 1000):
        c = kmeans_plusplus(X, k, random_state=0)[0] if k <= 100 else X[:k].compute() / 255.0
        section_peers(table, X, c, f"50,000 images, k = {k}", 1, 3)
    P = patches(X.compute(), 1_000_000)
    Xp = da.from_array(P, chunks=(50_000, -1)).persist()
    c = P[np.random.default_rng(1).choice(len(P), 400, replace=False)] / 255.0
    section_peers(table, Xp, c, "1,000,000 patches 6x6x3, k = 400", 1, 3)


#: Runs a command and prints its peak resident memory (KiB), measured in a process of its own.
_RSS_CHILD = """import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], capture_output=True).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def section_rss(table):
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-rss-{os.getpid()}"
    cmd = [sys.executable, "-m", "daskmeans", "run", "--data", str(DATA), "--out", str(out), "-q"]
    # once to fill the compiled-kernel cache (a first run compiles them: LLVM's memory counts then),
    # then measured in a second child of its own: ru_maxrss of children is the largest child's
    subprocess.run([sys.executable, "-m", "daskmeans", "run", "--data", str(DATA), "--out", str(out) + "-warm",
                    "-q"], capture_output=True)
    proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, *cmd], capture_output=True, text=True)
    mb = float(proc.stdout.split()[-1]) / 1024 if proc.returncode == 0 else float("nan")
    table.append({"case": "peak RSS of the main job (kernels cached)", "rss_mb": mb, "ok": proc.returncode == 0})
    print(f"| peak RSS, main job (`daskmeans run`, pictures, kernels cached) | {mb:.0f} MB | | | exit "
          f"{proc.returncode} |", flush=True)
    if proc.returncode:
        print(proc.stderr[-2000:])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--only", default="peers,shapes,threads,local,small,smallfit,converge,chunks,rss")
    ap.add_argument("--json")
    ap.add_argument("--threads", type=int, help="threads for both (dask num_workers, scikit-learn n_threads); "
                    "1 compares kernels without OpenMP spin-waits on a loaded machine")
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    if a.threads:
        dask.config.set(num_workers=a.threads)
        threadpoolctl.threadpool_limits(1, user_api="blas")
    only = set(a.only.split(","))
    info = machine()
    info["threads"] = a.threads or os.cpu_count()
    info["load_average"] = os.getloadavg()
    print(json.dumps(info, indent=1))
    table: list = []
    print("| case | daskmeans s/iter | scikit-learn s/iter | ratio | note |\n|---|---|---|---|---|")
    ds = load_cifar10(a.data, split="train", chunk_size=5000, progress=False)
    X = ds.flat().persist()
    X32 = (X.compute().astype(np.float32) / np.float32(255))
    centers = kmeans_plusplus(X, 10, random_state=0)[0]
    if "rss" in only:
        section_rss(table)
    if "peers" in only:
        print("| data | method | s/iter | vs fastest peer |\n|---|---|---|---|", flush=True)
        section_peers(table, X, centers, "50,000 images, k = 10")
    if "shapes" in only:
        section_shapes(table, X)
    if "threads" in only:
        section_phases(table, X, X32, centers, "50,000 images, threads")
    if "small" in only:
        Xs, X32s = X[:2000].rechunk({0: 2000}).persist(), X32[:2000]
        cs = kmeans_plusplus(Xs, 10, random_state=0)[0]
        sk = sk_iterations(X32s, cs, 20)
        secs, _ = dm_iterations(Xs, cs, 20, "auto")
        row(table, "2,000 images, threads, auto, iterations 2-20", med(secs[1:]), med(sk[1:]))
    if "converge" in only:
        section_converge(table, X, X32)
    if "smallfit" in only:
        section_small_fit(table, X)
    if only & {"local", "chunks"}:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cl, \
                Client(cl):
            Xl = X.persist()
            if "local" in only:
                section_phases(table, Xl, X32, centers, "50,000 images, LocalCluster 2 processes")
                section_overhead(table, Xl)
            if "chunks" in only:
                section_chunks(table, Xl, centers)
    if a.json:
        Path(a.json).write_text(json.dumps({"machine": info, "table": table}, indent=1))


if __name__ == "__main__":
    main()
