"""Apply trained centres to other images: ``--eval-split`` and ``daskmeans predict``.

Both assign every image to its nearest centre with the same distributed kernel
as training (:func:`daskmeans.kmeans.predict_labels`), build the cluster x class
table with the distributed :func:`daskmeans.metrics.contingency`, and score it
with :func:`heldout_scores`: the clustering scores of the held-out table, and
the two accuracies that need a cluster -> class mapping computed with the
mapping learned on the *training* table (never refitted on the held-out
images).

``daskmeans predict RUN`` takes a run folder (``centroids.npy`` and
``report.json``) or a bare ``.npy`` file of centres.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from . import features as features_mod
from .backend import resolve as resolve_backend
from .backend import to_backend, to_numpy
from .cluster import check_where
from .cluster import scheduler as open_scheduler
from .data import load_cifar10
from .errors import InputError
from .kmeans import as_rows, one_blas_thread, predict_labels
from .metrics import contingency, majority_mapping, scores
from .outputs import OutputDir
from .params import METRICS, SPLITS
from .report import fig_contingency

logger = logging.getLogger("daskmeans")

N_FEATURES = 32 * 32 * 3


# --------------------------------------------------------------------------- #
# Scores with the training mapping
# --------------------------------------------------------------------------- #
def mapped_accuracy(table, mapping) -> float | None:
    """Share of the samples of ``table`` whose cluster maps to their class.

    ``mapping[i]`` is the class given to cluster ``i`` (-1: none, those samples
    count as wrong). None when the table is empty.
    """
    t = np.asarray(table, dtype=np.int64)
    n = int(t.sum())
    if n == 0:
        return None
    mapping = np.asarray(mapping, dtype=np.int64)
    if len(mapping) != t.shape[0]:
        raise ValueError(f"mapping has {len(mapping)} entries for {t.shape[0]} clusters")
    ok = (mapping >= 0) & (mapping < t.shape[1])
    rows = np.flatnonzero(ok)
    return float(t[rows, mapping[rows]].sum() / n)


def heldout_scores(table, train_table) -> dict:
    """Every score of :func:`~daskmeans.metrics.scores` on a held-out table, mappings from training.

    ``purity`` and ``matched_accuracy`` use the training split's majority class
    and Hungarian matching of each cluster (a cluster empty in training maps to
    nothing); the versions refitted on the held-out table itself are kept as
    ``purity_refit`` and ``matched_accuracy_refit`` (optimistic). NMI, ARI,
    homogeneity, completeness and V-measure need no mapping.
    """
    t = np.asarray(table, dtype=np.int64)
    tr = np.asarray(train_table, dtype=np.int64)
    if t.shape != tr.shape:
        raise ValueError(f"held-out table {t.shape} and training table {tr.shape} differ in shape")
    s = scores(t)
    train = scores(tr)
    s["purity_refit"] = s["purity"]
    s["matched_accuracy_refit"] = s["matched_accuracy"]
    s["train_majority_class"] = [int(c) for c in majority_mapping(tr)]
    s["train_matching"] = list(train["matching"])
    s["purity"] = mapped_accuracy(t, s["train_majority_class"])
    s["matched_accuracy"] = mapped_accuracy(t, s["train_matching"])
    return s


# --------------------------------------------------------------------------- #
# Applying centres to a dataset (distributed)
# --------------------------------------------------------------------------- #
def apply_centroids(ds, centers, *, metric: str = "l2", backend: str = "numpy", train_table=None,
                    featurizer=None) -> tuple[np.ndarray, dict]:
    """Assign every image of ``ds`` to its nearest centre and score the result.

    ``featurizer``: the training run's :class:`~daskmeans.features.Featurizer`
    (``centers`` then live in its feature space); its transform runs chunk by chunk.

    Runs on the current dask scheduler, block by block; only the labels (4
    bytes per image) and the small table come to the client.

    Returns
    -------
    labels : numpy.ndarray (n,) int32
    result : dict with ``split``, ``n_samples``, ``contingency``, ``metrics``
        (:func:`heldout_scores` when ``train_table`` is given, else
        :func:`~daskmeans.metrics.scores`), ``seconds``.
    """
    t0 = time.perf_counter()
    centers = np.asarray(centers)
    X = ds.flat() if featurizer is None else featurizer.transform(ds.images)
    X = as_rows(to_backend(X, backend))
    with one_blas_thread():  # the labels' products on one BLAS thread, as in the fit (kernels' doc)
        pred = predict_labels(X, centers, metric).persist()
    classes = to_backend(ds.labels, backend)
    table = contingency(pred, classes, centers.shape[0], len(ds.class_names))
    labels = np.asarray(to_numpy(pred.compute()), dtype=np.int32)
    metrics = heldout_scores(table, train_table) if train_table is not None else scores(table)
    result = {
        "split": ds.split,
        "n_samples": ds.n_samples,
        "data": ds.describe(),
        "contingency": table,
        "metrics": metrics,
        "mapping": "train" if train_table is not None else "own",
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "assigned %d %s images to %d centres in %.1f s", ds.n_samples, ds.split, centers.shape[0], result["seconds"]
    )
    return labels, result


# --------------------------------------------------------------------------- #
# Reading a saved run
# --------------------------------------------------------------------------- #
def check_centroids(arr, where: str, n_features: int | None = None) -> np.ndarray:
    """Validate centres read from ``where``: (k, 3072) or (k, 32, 32, 3) (or ``(k, n_features)`` of
    a features run), finite, numeric."""
    if n_features is not None and n_features != N_FEATURES:
        if arr.ndim != 2 or arr.shape[1] != n_features or not np.issubdtype(arr.dtype, np.floating):
            raise InputError(f"{where}: shape {arr.shape}, expected (k, {n_features}) for this run's features; "
                             f"the folder mixes two runs, run again")
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{where}: contains NaN or infinite values; pass the centroids.npy of a finished run")
        return arr.astype(np.float32)
    if not isinstance(arr, np.ndarray) or arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise InputError(f"{where}: dtype {getattr(arr, 'dtype', type(arr).__name__)} is not numeric; "
                         f"pass centres saved by daskmeans run (float32, shape (k, {N_FEATURES}))")
    if arr.ndim < 2 or arr.shape[0] < 1 or math.prod(arr.shape[1:]) != N_FEATURES:
        raise InputError(f"{where}: shape {arr.shape}, expected (k, {N_FEATURES}) or (k, 32, 32, 3) for CIFAR-10 "
                         f"images; pass the centroids.npy of a daskmeans run")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{where}: contains NaN or infinite values; pass the centroids.npy of a finished run")
    return arr.reshape(arr.shape[0], N_FEATURES).astype(np.float32)


def load_run(run) -> dict:
    """Centres (and, from a run folder, its report) from a run folder or a ``.npy`` file.

    Returns a dict: ``centers`` (k, 3072) float32 (or (k, n_features) for a
    features run), ``report`` (dict or None), ``path``, ``featurizer`` (the run's
    ``featurizer.npz``, or None for raw pixels).
    """
    p = Path(run).expanduser()
    if p.is_dir():
        cfile = p / "centroids.npy"
        if not cfile.is_file():
            hint = "; it looks like an unfinished run (staging folder)" if p.name.startswith(".") else ""
            raise InputError(f"{run}: no centroids.npy in this folder{hint}; pass the folder of a finished "
                             f"`daskmeans run` (it holds centroids.npy and report.json) or a .npy file of centres")
    elif p.is_file():
        cfile = p
    else:
        raise InputError(f"{run}: no such folder or file; pass a run folder (with centroids.npy) or a .npy file of centres")
    try:
        arr = np.load(cfile, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(f"{cfile}: not a readable .npy array ({msg}); pass a centroids.npy written by daskmeans run") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{cfile}: an .npz archive, not one array; pass the centroids.npy of a run")
    report = None
    featurizer = None
    rfile = cfile.parent / "report.json" if p.is_dir() else None
    if rfile is not None and rfile.is_file():
        try:
            report = json.loads(rfile.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{rfile}: not readable JSON ({type(e).__name__}); restore it or pass centroids.npy alone") from None
        if not isinstance(report, dict):
            raise InputError(f"{rfile}: not a daskmeans report; pass centroids.npy alone")
    kind = ((report or {}).get("features") or {}).get("kind", "raw")
    if kind != "raw":
        ffile = cfile.parent / "featurizer.npz"
        if not ffile.is_file():
            raise InputError(f"{run}: a --features {kind} run without its featurizer.npz; restore it or run again")
        featurizer = features_mod.load(ffile)
    centers = check_centroids(arr, str(cfile), featurizer.n_features if featurizer is not None else None)
    if report is not None:
        k = report.get("k")
        if k is not None and k != centers.shape[0]:
            raise InputError(f"{run}: report.json says k={k} but centroids.npy has {centers.shape[0]} centres; "
                             f"the folder mixes two runs, run again or pass centroids.npy alone")
    elif p.is_dir():
        logger.warning("%s: no report.json, so no training mapping: held-out purity and matched accuracy "
                       "use the predicted split's own mapping", run)
    return {"centers": centers, "report": report, "path": p, "featurizer": featurizer}


def _train_table(report, k: int):
    if not report or report.get("contingency") is None:
        return None
    t = np.asarray(report["contingency"], dtype=np.int64)
    return t if t.ndim == 2 and t.shape[0] == k else None


def _data_of(report):
    """The run's own data source, where it can still be found from here."""
    if not report:
        return None
    data = (report.get("settings") or {}).get("data")
    if data == "keras" or (data and Path(data).expanduser().exists()):
        return data
    store = (report.get("data") or {}).get("store")
    if store and Path(store).exists():
        return store
    if data:
        raise InputError(f"the run's data {data} is not found from here; pass --data PATH")
    return None


def predict(run, *, data=None, split: str = "test", subset=None, seed: int = 0, chunk_size=None,
            scheduler: str | None = None, cluster: str | None = None, n_workers=None, backend: str = "auto",
            metric=None) -> dict:
    """Apply a saved run's centres to a split of a dataset.

    Returns a dict: ``labels`` (NumPy int32), and the report entries of
    :func:`apply_centroids` plus ``run``, ``k``, ``metric``, ``class_names``.
    """
    if split not in SPLITS:
        raise InputError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    if subset is not None and subset < 1:
        raise InputError(f"--subset {subset}: must be >= 1 (or leave it out for the whole split)")
    check_where(cluster, scheduler)
    saved = load_run(run)
    report = saved["report"]
    metric = metric or ((report or {}).get("settings") or {}).get("metric") or "l2"
    if metric not in METRICS:
        raise InputError(f"--metric {metric!r} is not one of {', '.join(METRICS)}")
    centers = saved["centers"]
    k = centers.shape[0]
    if data is None:
        data = _data_of(report)
    ds = load_cifar10(data, split=split, chunk_size=chunk_size, progress=logger.isEnabledFor(logging.INFO))
    if subset is not None:
        ds = ds.subset(subset, seed)
    train_table = _train_table(report, k)
    if train_table is not None and train_table.shape[1] != len(ds.class_names):
        raise InputError(f"{run}: trained on {train_table.shape[1]} classes, the data has {len(ds.class_names)}; "
                         f"pass --data with the same classes")
    be = resolve_backend(backend)
    with open_scheduler(scheduler, cluster=cluster, n_workers=n_workers):
        labels, result = apply_centroids(ds, centers, metric=metric, backend=be, train_table=train_table,
                                         featurizer=saved["featurizer"])
    result.update(
        run=str(saved["path"]), k=k, metric=metric, class_names=list(ds.class_names), labels=labels,
        train_split=((report or {}).get("data") or {}).get("split"),
    )
    return result


def format_predict(res: dict) -> str:
    """The terminal summary of ``daskmeans predict``."""
    names = res["class_names"]
    t = np.asarray(res["contingency"])
    m = res["metrics"]
    train_maj = m.get("train_majority_class")
    head = f"{'cluster':>7}  {'size':>7}  {'majority class':<14}  {'share':>6}"
    if train_maj:
        head += f"  {'train class':<12}  {'share':>6}"
    lines = [head]
    for j, row in enumerate(t):
        size = int(row.sum())
        line = (f"{j:>7}  {size:>7}  {names[int(row.argmax())]:<14}  {row.max() / size:>6.1%}" if size
                else f"{j:>7}  {0:>7}  {'(empty)':<14}  {'-':>6}")
        if train_maj:
            c = train_maj[j]
            line += (f"  {names[c]:<12}  {row[c] / size:>6.1%}" if c >= 0 and size
                     else f"  {names[c] if c >= 0 else '-':<12}  {'-':>6}")
        lines.append(line)
    mapping = "train mapping" if res.get("mapping") == "train" else "own mapping"
    lines += ["", f"{res['split']} split, {res['n_samples']} images, {mapping}: matched accuracy "
              f"{_f(m.get('matched_accuracy'))}   purity {_f(m.get('purity'))}   NMI {_f(m.get('nmi'))}   "
              f"ARI {_f(m.get('ari'))}   time {res['seconds']:.1f} s"]
    if res.get("out"):
        lines.append(f"wrote {res['out']}")
    return "\n".join(lines)


def _f(x):
    return "-" if x is None else f"{x:.4f}"


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #
def cmd_predict(args) -> int:
    out_dir = OutputDir(args.out, overwrite=args.overwrite) if args.out else None  # checked before the work
    try:
        res = predict(
            args.run, data=args.data, split=args.split, subset=args.subset, seed=args.seed,
            chunk_size=args.chunk_size, scheduler=args.scheduler, cluster=args.cluster, n_workers=args.n_workers,
            backend=args.backend, metric=args.metric,
        )
        labels = res.pop("labels")
        if out_dir is not None:
            out_dir.write_npy("labels.npy", labels)
            out_dir.write_json("report.json", res)
            (out_dir.path / "contingency.png").write_bytes(
                fig_contingency(res["contingency"], res["class_names"],
                                title=f"{res['split']} split assigned to {Path(res['run']).name}")
            )
            res["out"] = str(out_dir.commit())
    except BaseException:
        if out_dir is not None:
            out_dir.abort()
        raise
    if args.json:
        keys = ("out", "run", "split", "n_samples", "k", "mapping", "metrics")
        print(json.dumps({k: res.get(k) for k in keys}, default=str))
    else:
        print(format_predict(res))
    return 0


def add_parser(subparsers, common) -> argparse.ArgumentParser:
    """Register ``daskmeans predict`` (called by :func:`daskmeans.cli.build_parser`)."""
    p = subparsers.add_parser(
        "predict", parents=[common], help="apply a saved run's centres to a dataset and score them",
        description="Assign the images of a split to the centres of a finished run (distributed, like training) "
        "and report the metrics, with the cluster-to-class mapping learned on the run's training split.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder (with centroids.npy and report.json) or a .npy file of centres")
    p.add_argument("--data", metavar="PATH", help="data source as for run (default: the run's own data)")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: test")
    p.add_argument("--subset", type=int, metavar="N", help="a seeded random subset of N images")
    p.add_argument("--seed", type=int, default=0, help="seed of --subset (default 0)")
    p.add_argument("--chunk-size", type=int, metavar="ROWS", help="rows per chunk")
    p.add_argument("--metric", choices=METRICS, help="assignment distance (default: the run's)")
    p.add_argument("--scheduler", metavar="threads|local|tcp://HOST:PORT", help="as for run")
    p.add_argument("--cluster", metavar="NAME", help="a profile of cluster.yaml, as for run")
    p.add_argument("--n-workers", type=int, metavar="N", help="workers of --scheduler local")
    p.add_argument("--backend", default="auto", choices=["auto", "numpy", "cupy"], help="as for run")
    p.add_argument("--out", metavar="DIR", help="write labels.npy, report.json and contingency.png there")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_predict)
    return p
