"""Mini-batch k-means: daskmeans's MiniBatchKMeans beside scikit-learn's, and beside full-batch daskmeans.

    python bench/bench_minibatch.py [--data ../shared/data/cifar10-images.tar.gz] [--subset 0] [-k 10]
                                    [--batch-size 1024] [--seeds 5] [--threads 2] [--scale N] [--quick]
                                    [--json out.json]

1. The CIFAR-10 training images (``--subset 0``: all 50,000), side by side with
   ``sklearn.cluster.MiniBatchKMeans`` with the same ``batch_size`` and seed
   policy (``random_state`` = 0, 1, ... for both; each draws its own batches
   from it), every other parameter at its default:

   - inertia: each fit's ``inertia_`` (every image under the final centres,
     pixels in [0, 1] for both: scikit-learn gets the images as float32 / 255,
     its fast path); the ratio of the medians over the seeds;
   - time per step: two fits of each without early stopping
     (``max_no_improvement=None``, ``compute_labels=False``), ``max_iter`` 2 and
     6; (time difference) / (step difference), so the initialisation and the
     reading of X cancel out; the ratio daskmeans / scikit-learn.

   daskmeans reads uint8 chunks persisted on dask's threads; both use ``--threads``.

2. ``--scale N`` (N images, e.g. 1000000): out of core. The Zarr store of
   ``bench_scale.py`` (N uint8 images made from the real ones, built once under
   /tmp/daskmeans-scale-N), never persisted, each fit in a fresh process:
   full-batch daskmeans (k-means++, ``tol=1e-4``) and MiniBatchKMeans (the
   same ``batch_size``, defaults otherwise). Prints each one's fit time
   (MiniBatchKMeans: without its final labelling pass, reported apart), its
   inertia over the N images, the time the full-batch fit took to reach the
   mini-batch inertia (from its per-iteration history), the ratios, and the
   peak resident memory of each process.

``--quick``: 5,000 images, 2 seeds, the scale section on 20,000 images: checks
that the script works (seconds), measures nothing worth quoting. The machine,
its load and the BLAS are printed first; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import threadpoolctl
from sklearn.cluster import MiniBatchKMeans as SKMiniBatchKMeans

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from daskmeans import KMeans, MiniBatchKMeans, batches  # noqa: E402
from daskmeans.data import load_cifar10  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-images.tar.gz"


def timed(f):
    t0 = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t0


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- 1. beside scikit-learn ---------------------------------------------------------------------------


def per_step(make, X, batch_size: int) -> float:
    """Seconds per step: two fits without early stopping (about 100 and 300 steps), the difference of their
    times over the difference of their steps."""
    m1 = max(1, -(-100 * batch_size // X.shape[0]))
    runs = []
    for m in (m1, 3 * m1):
        est = make(max_iter=m, max_no_improvement=None, compute_labels=False)
        _, t = timed(lambda est=est: est.fit(X))
        runs.append((t, est.n_steps_))
    (t1, s1), (t2, s2) = runs
    return (t2 - t1) / (s2 - s1)


def beside_sklearn(a, X, X32) -> dict:
    n = X.shape[0]
    kw = dict(n_clusters=a.k, batch_size=a.batch_size)
    MiniBatchKMeans(**kw, random_state=0, max_iter=1).fit(X)  # warm-up: compiled kernels loaded
    rows = []
    for seed in range(a.seeds):  # alternated, so a change of load favours neither side
        ours, t_ours = timed(lambda: MiniBatchKMeans(**kw, random_state=seed).fit(X))
        theirs, t_theirs = timed(lambda: SKMiniBatchKMeans(**kw, random_state=seed).fit(X32))
        rows.append({"seed": seed, "daskmeans": {"inertia": ours.inertia_, "steps": ours.n_steps_, "fit_s": t_ours},
                     "sklearn": {"inertia": float(theirs.inertia_), "steps": int(theirs.n_steps_), "fit_s": t_theirs}})
        print(f"| {seed} | {ours.inertia_:.6g} | {theirs.inertia_:.6g} | {ours.inertia_ / theirs.inertia_:.4f} | "
              f"{ours.n_steps_} / {theirs.n_steps_} | {t_ours:.2f} / {t_theirs:.2f} |", flush=True)
    step_ours = per_step(lambda **p: MiniBatchKMeans(**kw, random_state=0, **p), X, a.batch_size)
    step_theirs = per_step(lambda **p: SKMiniBatchKMeans(**kw, random_state=0, **p), X32, a.batch_size)
    med = {side: float(np.median([r[side]["inertia"] for r in rows])) for side in ("daskmeans", "sklearn")}
    out = {"n": n, "seeds": rows, "median_inertia": med, "inertia_ratio": med["daskmeans"] / med["sklearn"],
           "step_s": {"daskmeans": step_ours, "sklearn": step_theirs}, "step_ratio": step_ours / step_theirs}
    print(f"\n{n:,} images, k={a.k}, batch_size={a.batch_size}: median inertia ratio (daskmeans / scikit-learn) "
          f"{out['inertia_ratio']:.4f}; time per step {step_ours * 1e3:.2f} ms / {step_theirs * 1e3:.2f} ms = "
          f"{out['step_ratio']:.2f}x", flush=True)
    return out


# -- 2. out of core, full batch vs mini-batch -----------------------------------------------------------


def scale_case(a) -> None:
    """One fit on the store, in this (fresh) process: prints one JSON line."""
    X = da.from_zarr(os.path.join(a.dir, "images.zarr"), chunks=(a.chunk_size, 32, 32, 3))
    X = X.reshape(X.shape[0], -1)
    with dask.config.set(scheduler="threads", num_workers=a.threads):
        if a.case == "full":
            km, t = timed(lambda: KMeans(a.k, random_state=0, tol=1e-4, persist=False).fit(X))
            elapsed = np.cumsum([h["seconds"] for h in km.history_])
            hist = [(float(s), h["inertia"]) for s, h in zip(elapsed, km.history_)]
            out = {"fit_s": t, "inertia": km.inertia_, "n_iter": km.n_iter_, "history": hist}
        else:
            mb = MiniBatchKMeans(a.k, batch_size=a.batch_size, random_state=0, compute_labels=False)
            _, t = timed(lambda: mb.fit(X))
            # the labelling pass compute_labels=True would make, timed apart
            (_, score), t_score = timed(lambda: batches.labels_inertia(batches.Rows(X), mb._centers_fit, "l2", a.k))
            out = {"fit_s": t, "inertia": score, "labels_s": t_score, "n_steps": mb.n_steps_, "n_iter": mb.n_iter_}
    print(json.dumps({"case": a.case, "n": int(X.shape[0]), "rss_mib": rss_mib(), **out}), flush=True)


def time_to(history, inertia) -> float | None:
    """Seconds the full-batch fit took until its iteration inertia was <= ``inertia`` (None: never)."""
    for seconds, value in history:
        if value <= inertia:
            return seconds
    return None


def at_scale(a) -> dict:
    import bench_scale  # the store of the out-of-core benchmark (built once, reused)

    a.dir = f"/tmp/daskmeans-scale-{a.scale}"
    os.makedirs(a.dir, exist_ok=True)
    if not os.path.exists(os.path.join(a.dir, "done")):
        bench_scale.build(a.dir, a.scale, a.data)
    res = {}
    for c in ("full", "minibatch"):  # each in a fresh process: ru_maxrss is a lifetime peak
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--case", c], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{c} failed: {out.stderr.strip().splitlines()[-1:]}")
        res[c] = json.loads(out.stdout.strip().splitlines()[-1])
    full, mb = res["full"], res["minibatch"]
    reach = time_to(full["history"], mb["inertia"])
    res.update(inertia_ratio=mb["inertia"] / full["inertia"], time_ratio=mb["fit_s"] / full["fit_s"],
               full_s_to_minibatch_inertia=reach)
    print(f"\n{a.scale:,} images out of core (chunks of {a.chunk_size} rows), k={a.k}, batch_size={a.batch_size}")
    print("| fit | seconds | inertia | passes | peak RSS MiB |\n|---|---|---|---|---|")
    print(f"| full-batch (k-means++, tol 1e-4) | {full['fit_s']:.1f} | {full['inertia']:.6g} | {full['n_iter']} | "
          f"{full['rss_mib']:.0f} |")
    print(f"| MiniBatchKMeans | {mb['fit_s']:.1f} (+{mb['labels_s']:.1f} labelling) | {mb['inertia']:.6g} | "
          f"{mb['n_iter']} ({mb['n_steps']} steps) | {mb['rss_mib']:.0f} |")
    print(f"inertia ratio {res['inertia_ratio']:.4f}; time ratio {res['time_ratio']:.3f}; the full-batch fit reached "
          f"the mini-batch inertia after {'never' if reach is None else f'{reach:.1f} s'}", flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--subset", type=int, default=0, help="first N training images (0: all 50,000)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scale", type=int, default=0, help="also N images out of core (e.g. 1000000; 0: skip)")
    ap.add_argument("--chunk-size", type=int, default=16384)
    ap.add_argument("--quick", action="store_true", help="5,000 images, 2 seeds, scale 20,000: a check that it runs")
    ap.add_argument("--json")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.subset, a.seeds, a.scale, a.chunk_size = a.subset or 5000, 2, a.scale or 20000, 4096
    if a.case:
        a.dir = a.dir or f"/tmp/daskmeans-scale-{a.scale}"
        return scale_case(a)
    dask.config.set(num_workers=a.threads)
    threadpoolctl.threadpool_limits(a.threads, user_api="openmp")
    print(json.dumps({"blas": [(i["internal_api"], i.get("architecture"), i["num_threads"])
                               for i in threadpoolctl.threadpool_info()], "load_average": os.getloadavg(),
                      "cores": os.cpu_count(), "threads": a.threads, "k": a.k, "batch_size": a.batch_size}))
    ds = load_cifar10(a.data, split="train", chunk_size=5000, progress=False)
    X = ds.flat()
    if a.subset:
        X = X[: a.subset]
    X = X.persist()
    X32 = X.compute().astype(np.float32) / np.float32(255)
    print("| seed | inertia daskmeans | inertia scikit-learn | ratio | steps | fit s |\n|---|---|---|---|---|---|")
    result = {"sklearn": beside_sklearn(a, X, X32)}
    del X32
    if a.scale:
        result["scale"] = at_scale(a)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
