"""Raw pixels vs PCA vs Coates-Lee-Ng patch features for k-means on CIFAR-10.

For each pipeline: fit the features on the training split (no labels), cluster
them with daskmeans.KMeans (k = 10), score the clusters against the labels
(purity, matched accuracy, NMI, ARI from one contingency table), then apply the
training features and centres to the test split and score it with the
training cluster -> class mapping. Prints one table; times are wall-clock
seconds on this machine (shared with other jobs: read them as rough).

    python bench/bench_features.py --data ../shared/data/cifar10-images.tar.gz
    python bench/bench_features.py --pipelines patches --kmeans-seeds 0,1,2
    python bench/bench_features.py --pipelines patches --dictionary-size 256 --pool 2 --reduce-dim 0
    python bench/bench_features.py --pipelines patches --kmeans-seeds 0,1,2,3,4 --no-flip --neighbours 0

With several k-means seeds a last line per pipeline gives the medians over them.
The load average before and after is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

import dask

from daskmeans import KMeans, features, load_cifar10
from daskmeans.kmeans import predict_labels
from daskmeans.metrics import contingency, scores
from daskmeans.predict import heldout_scores


def one(kind: str, opts: dict, train, test, k: int, seeds) -> list[dict]:
    """One row per k-means seed; the features are fitted once."""
    t0 = time.perf_counter()
    feat, F = features.fit_transform(kind, train.images, **opts)
    if kind != "raw":
        F = F.persist()
        dask.compute(F.sum())  # features finished before the k-means clock starts
    t_feat = time.perf_counter() - t0
    Ft = feat.transform(test.images)
    if kind != "raw":
        Ft = Ft.persist()
    t_test_feat = time.perf_counter() - t0 - t_feat
    return [_cluster(kind, opts, feat, F, Ft, train, test, k, seed, t_feat, t_test_feat) for seed in seeds]


def _cluster(kind, opts, feat, F, Ft, train, test, k, seed, t_feat, t_test_feat) -> dict:
    t0 = time.perf_counter()
    km = KMeans(k, random_state=seed, n_init=1, algorithm="auto" if kind == "raw" else "lloyd").fit(F)
    t_km = time.perf_counter() - t0
    table = contingency(km.labels_, train.labels, k, len(train.class_names))
    s = scores(table)
    t1 = time.perf_counter()
    pred = predict_labels(Ft, km.cluster_centers_, "l2")
    ht = heldout_scores(contingency(pred, test.labels, k, len(test.class_names)), table)
    t_test = time.perf_counter() - t1 + t_test_feat
    return {"pipeline": kind, "options": opts, "seed": seed, "n_features": int(F.shape[1]), "purity": s["purity"],
            "matched_accuracy": s["matched_accuracy"], "nmi": s["nmi"], "ari": s["ari"],
            "test_purity": ht["purity"], "test_matched_accuracy": ht["matched_accuracy"], "test_nmi": ht["nmi"],
            "test_ari": ht["ari"], "features_seconds": t_feat, "kmeans_seconds": t_km,
            "total_seconds": t_feat + t_km, "test_seconds": t_test, "inertia": km.inertia_, "n_iter": km.n_iter_, "info": feat.info}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/cifar10-images.tar.gz")
    ap.add_argument("--pipelines", default="raw,pca,patches")
    ap.add_argument("--subset", type=int, help="a seeded subset of the training split (default: all 50,000)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="seeds the subset and the features' patches and dictionary")
    ap.add_argument("--kmeans-seeds", default=None, metavar="S,S,...",
                    help="k-means seeds, one row each on the same features (default: --seed)")
    ap.add_argument("--pca-dim", type=int, default=features.DEFAULTS["pca"]["dim"])
    ap.add_argument("--patch-size", type=int, default=features.DEFAULTS["patches"]["size"])
    ap.add_argument("--patch-stride", type=int, default=features.DEFAULTS["patches"]["stride"])
    ap.add_argument("--dictionary-size", type=int, default=features.DEFAULTS["patches"]["n_centers"])
    ap.add_argument("--patch-samples", type=int, default=features.DEFAULTS["patches"]["n_patches"])
    ap.add_argument("--pool", type=int, default=features.DEFAULTS["patches"]["pool"], help="pooling grid side")
    ap.add_argument("--reduce-dim", type=int, default=features.DEFAULTS["patches"]["reduce_dim"],
                    help="whitened principal components of the patch features (0: keep them all)")
    ap.add_argument("--no-flip", dest="flip", action="store_false",
                    help="patches: do not average each image's features with its mirror's")
    ap.add_argument("--no-unit-rows", dest="unit_rows", action="store_false",
                    help="patches: keep the reduced rows' lengths")
    ap.add_argument("--neighbours", type=int, default=features.DEFAULTS["patches"]["neighbours"],
                    help="patches: average each reduced row over its M nearest training rows (0: off)")
    ap.add_argument("--neighbour-steps", type=int, default=features.DEFAULTS["patches"]["neighbour_steps"],
                    help="patches: averaging steps over the training rows' neighbour graph")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="daskmeans's progress lines on stderr")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s")

    train = load_cifar10(args.data, split="train", progress=False)
    if args.subset:
        train = train.subset(args.subset, args.seed)
    test = load_cifar10(args.data, split="test", progress=False)
    opts = {"raw": {}, "pca": {"dim": args.pca_dim},
            "patches": {"size": args.patch_size, "stride": args.patch_stride, "n_centers": args.dictionary_size,
                        "n_patches": args.patch_samples, "seed": args.seed, "pool": args.pool,
                        "reduce_dim": args.reduce_dim, "flip": args.flip, "unit_rows": args.unit_rows,
                        "neighbours": args.neighbours, "neighbour_steps": args.neighbour_steps}}
    seeds = [int(s) for s in args.kmeans_seeds.split(",")] if args.kmeans_seeds else [args.seed]
    load_before = os.getloadavg()
    rows = []
    for kind in args.pipelines.split(","):
        for r in one(kind, opts[kind], train, test, args.k, seeds):
            rows.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "info"}, default=float), flush=True)

    print(f"\n{train.n_samples} training images, k = {args.k}, feature seed {args.seed}; test: {test.n_samples} images, "
          f"training mapping; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")
    head = (f"{'pipeline':<28} {'seed':>4} {'dims':>5} {'purity':>7} {'acc':>7} {'NMI':>7} {'ARI':>7} | "
            f"{'test pur':>8} {'test acc':>8} {'test NMI':>8} {'test ARI':>8} | {'feat s':>7} {'k-means s':>9} "
            f"{'total s':>8}")
    print(head)
    print("-" * len(head))
    for r in rows + _medians(rows):
        name = r["pipeline"] + ("" if not r["options"] else " " + ",".join(
            f"{k}={v}" for k, v in r["options"].items() if k not in ("seed", "n_patches")))
        print(f"{name[:28]:<28} {str(r['seed']):>4} {r['n_features']:>5} {r['purity']:>7.4f} {r['matched_accuracy']:>7.4f} "
              f"{r['nmi']:>7.4f} {r['ari']:>7.4f} | {r['test_purity']:>8.4f} {r['test_matched_accuracy']:>8.4f} "
              f"{r['test_nmi']:>8.4f} {r['test_ari']:>8.4f} | {r['features_seconds']:>7.1f} "
              f"{r['kmeans_seconds']:>9.1f} {r['total_seconds']:>8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=float)


def _medians(rows: list[dict]) -> list[dict]:
    """One row per pipeline with several k-means seeds: the median of each figure over the seeds."""
    out = []
    for kind in dict.fromkeys(r["pipeline"] for r in rows):
        mine = [r for r in rows if r["pipeline"] == kind]
        if len(mine) > 1:
            med = {k: statistics.median(r[k] for r in mine) for k in mine[0]
                   if isinstance(mine[0][k], (int, float)) and k not in ("seed", "n_features")}
            out.append({**mine[0], **med, "seed": "med", "pipeline": kind})
    return out


if __name__ == "__main__":
    main()
