"""The main job: load CIFAR-10, cluster it, evaluate against the labels, write the run.

Used by ``daskmeans run`` and by scheduled jobs; a notebook can call
:func:`run` with the same settings.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import __version__, features, params, warm
from . import report as reporting
from .backend import resolve as resolve_backend
from .backend import to_backend, to_numpy
from .checkpoint import RunCheckpoint
from .minibatch import MiniBatchKMeans
from .minibatch_checkpoint import RunCheckpoint as MiniBatchRunCheckpoint
from .cluster import check_where, scheduler
from .connect import connect_timeout
from .data import load_cifar10
from .errors import ClusterUnreachable, InputError
from .estimator import KMeans
from .metrics import contingency, notebook_impurity, scores
from .outputs import OutputDir, default_out
from .predict import apply_centroids

logger = logging.getLogger("daskmeans")

SPLITS = params.SPLITS


@dataclass
class Settings:
    """Everything a run needs; the command line's options, one to one.

    Types, ranges and defaults are declared in :mod:`daskmeans.params`; ``None``
    for ``init``, ``max_iter``, ``tol``, ``metric`` and ``algorithm`` means "the
    configured default" (``daskmeans.kmeans.*``), filled in by :meth:`validate`.
    """

    data: str | None = None
    split: str = "train"
    subset: int | None = None
    k: int = 10
    init: str | None = None
    seed: int = 0
    max_iter: int | None = None
    tol: float | None = None
    metric: str | None = None
    algorithm: str | None = None
    chunk_size: int | None = None
    scheduler: str | None = None  # None: $DASK_SCHEDULER_ADDRESS if set, else threads
    cluster: str | None = None  # a profile of cluster.yaml (--cluster)
    resume: bool = False  # continue from the checkpoint (--resume)
    checkpoint: str | None = None  # default: next to --out; "none": off
    out: str | None = None
    overwrite: bool = False
    backend: str = "auto"
    persist: bool = True
    n_init: int | str = "auto"  # resolved to a number by validate() (params.n_init_for)
    n_workers: int | None = None
    eval_split: str | None = None
    compare: str | None = None
    mini_batch: bool = False
    batch_size: int | None = None  # --mini-batch only; filled in by validate() (1024)
    features: str = "raw"
    pca_dim: int = 100
    patch_size: int = 6
    patch_stride: int = 2
    dictionary_size: int = 400
    patch_samples: int = 200_000
    patch_pool: int = 3
    reduce_dim: int = 30
    patch_flip: bool = True
    unit_rows: bool = True
    neighbours: int | None = None  # --features patches: 50 with --reduce-dim > 0, else 0
    neighbour_steps: int = 5

    def validate(self) -> None:
        """Check every option before any data is read (values + fixes in messages).

        Fills in the configured defaults of the options left at ``None``.
        """
        self._mini_batch_defaults()
        for f in fields(self):
            if f.name == "batch_size" and not self.mini_batch:
                continue  # None: full-batch k-means has no batches
            p = params.get(f.name)
            value = getattr(self, f.name)
            if value is None and p.config_key:
                value = params.default(p.name)
            setattr(self, f.name, params.check(p.name, value, source="cli"))
        self.n_init = params.n_init_for(self.n_init, self.init, default=3 if self.mini_batch else 10)
        # bad configured values fail here, before any work
        params.check_config()
        connect_timeout()
        if self.algorithm == "hamerly" and self.metric != "l2":
            raise InputError("--algorithm hamerly needs --metric l2 (its bounds are Euclidean); use --algorithm lloyd")
        check_where(self.cluster, self.scheduler)
        if self.resume and not (self.out or self.checkpoint):
            raise InputError("--resume needs the --out of the interrupted run (or its --checkpoint FILE)")
        if self.compare and self.metric != "l2":
            raise InputError("--compare sklearn needs --metric l2 (scikit-learn's KMeans is Euclidean only)")
        if self.mini_batch and self.metric != "l2":
            raise InputError(f"--mini-batch needs --metric l2 (got {self.metric}); drop --metric or --mini-batch")
        if self.mini_batch and self.compare:
            raise InputError("--compare sklearn compares full-batch fits only; drop --compare or --mini-batch")
        if self.features != "raw":
            self._validate_features()

    def _mini_batch_defaults(self) -> None:
        """``--batch-size`` belongs to ``--mini-batch``, whose ``--max-iter`` and ``--tol`` default to
        scikit-learn's MiniBatchKMeans's (100, 0)."""
        if not self.mini_batch:
            if self.batch_size is not None:
                raise InputError(f"--batch-size {self.batch_size} needs --mini-batch (full-batch k-means uses every "
                                 "row in each iteration); add --mini-batch or drop --batch-size")
            return
        if self.batch_size is None:
            self.batch_size = params.PARAMS["batch_size"].default
        if self.max_iter is None:
            self.max_iter = 100
        if self.tol is None:
            self.tol = 0.0

    def _validate_features(self) -> None:
        what = f"--features {self.features}"
        if str(self.init).endswith(".npy"):
            raise InputError(f"{what}: --init {self.init} holds pixel centres, not {self.features} features; "
                             f"use --init k-means++ (or random)")
        if warm.is_source(self.init):
            raise InputError(f"{what}: --init {self.init} continues another run's centres, but this run fits its "
                             f"own {self.features} features (another space); use --init k-means++ (or random)")
        if self.compare:
            raise InputError(f"{what}: --compare sklearn compares raw-pixel fits only; leave out --compare")
        if self.algorithm == "hamerly":
            raise InputError(f"{what}: --algorithm hamerly needs raw uint8 pixels (exact sums); "
                             f"use --algorithm lloyd (or auto)")
        if self.features == "patches" and self.patch_samples < self.dictionary_size:
            raise InputError(f"--patch-samples {self.patch_samples} is fewer than --dictionary-size "
                             f"{self.dictionary_size}; pass --patch-samples {self.dictionary_size} or more")
        if self.features == "patches" and self.neighbours and not self.reduce_dim:
            raise InputError(f"--neighbours {self.neighbours} averages reduced rows, but --reduce-dim 0 keeps all the "
                             f"pooled features; pass --reduce-dim 30 or --neighbours 0")
        no_neighbours = self.neighbours == 0 or (self.neighbours is None and not self.reduce_dim)
        if self.features == "patches" and no_neighbours and self.neighbour_steps != params.get("neighbour_steps").default:
            raise InputError(f"--neighbour-steps {self.neighbour_steps} averages over neighbours, but there are none "
                             f"(--neighbours 0 or --reduce-dim 0); pass --neighbours 50 or drop --neighbour-steps")

    def feature_options(self) -> dict:
        """Options of :func:`daskmeans.features.fit` for ``features``."""
        if self.features == "pca":
            return {"dim": self.pca_dim}
        if self.features == "patches":
            return {"size": self.patch_size, "stride": self.patch_stride, "n_centers": self.dictionary_size,
                    "n_patches": self.patch_samples, "seed": self.seed, "pool": self.patch_pool,
                    "reduce_dim": self.reduce_dim, "flip": self.patch_flip, "unit_rows": self.unit_rows,
                    "neighbours": self.neighbours, "neighbour_steps": self.neighbour_steps}
        return {}

    def n_features(self) -> int:
        """Features per image that k-means sees."""
        return features.n_features(self.features, self.feature_options())


def load_init(path: str, k: int, d: int) -> np.ndarray:
    """Initial centres from a ``.npy`` file: (k, d) or (k, 32, 32, 3), real, finite, pixel scale [0, 1]."""
    p = Path(path).expanduser()
    try:
        arr = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"--init {path}: no such file; pass a .npy array of shape ({k}, {d})") from None
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"--init {path}: not a readable .npy array ({_first_line(e)}); save one with numpy.save") from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError(f"--init {path}: dtype {arr.dtype} is not real numbers (complex, text or objects); "
                         f"save float centres in [0, 1]")
    if arr.ndim < 2 or arr.shape[0] != k or int(np.prod(arr.shape[1:])) != d:
        raise InputError(f"--init {path}: shape {arr.shape}, expected ({k}, {d}) for -k {k}; "
                         f"save centres of that shape")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"--init {path}: contains NaN or infinite values; pass finite centres in [0, 1]")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise InputError(f"--init {path}: values from {lo:g} to {hi:g}, outside [0, 1] (the pixel scale); "
                         f"divide 0-255 centres by 255")
    return arr.reshape(k, d).astype(np.float64)


def _initial(settings: Settings, d: int):
    """``--init`` as the estimator takes it: a method's name, a .npy file's centres, or an earlier run's
    centres (a warm start: cluster ``j`` continues that run's cluster ``j``)."""
    if settings.init.endswith(".npy"):
        return load_init(settings.init, settings.k, d)
    if warm.is_source(settings.init):
        return warm.run_folder_centres(settings.init, settings.k, d, settings.features == "raw",
                                       f"--init {settings.init}")
    return settings.init


def _estimator(settings: Settings, init, backend: str, ckpt):
    """The estimator the settings ask for: :class:`MiniBatchKMeans` (``--mini-batch``) or :class:`KMeans`."""
    if settings.mini_batch:
        return MiniBatchKMeans(settings.k, init=init, n_init=settings.n_init, max_iter=settings.max_iter,
                               batch_size=settings.batch_size, tol=settings.tol, random_state=settings.seed)
    return KMeans(
        settings.k, init=init, n_init=settings.n_init, max_iter=settings.max_iter, tol=settings.tol,
        metric=settings.metric, algorithm=_algorithm(settings, backend),
        random_state=ckpt.rng,  # RandomState(seed), restored on --resume
        persist=settings.persist,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _algorithm(settings: Settings, backend: str) -> str:
    """``auto``: Hamerly's bounds (same results, fewer distances) for l2 on NumPy
    chunks; plain Lloyd for l1, and on CuPy where the bounds bring no gain."""
    if settings.algorithm != "auto":
        return settings.algorithm
    raw = settings.features == "raw"  # features are float32: no exact sums for the bounds
    return "hamerly" if raw and settings.metric == "l2" and backend == "numpy" else "lloyd"


def _protected(settings: Settings) -> tuple:
    """Paths a run's output folder must never contain or replace."""
    init = settings.init if str(settings.init).endswith(".npy") or warm.is_source(settings.init) else None
    return tuple(p for p in (settings.data if settings.data != "keras" else None, init, settings.checkpoint)
                 if p and str(p).lower() not in ("none", "off"))


def _open_data(settings: Settings):
    """The training split (subset applied) and the evaluation split (lazily opened, or None)."""
    progress = logger.isEnabledFor(logging.INFO)  # --quiet: no progress lines either
    ds = load_cifar10(settings.data, split=settings.split, chunk_size=settings.chunk_size, progress=progress)
    if settings.subset is not None:
        ds = ds.subset(settings.subset, settings.seed)
    eval_ds = None
    if settings.eval_split:  # opened now, so a missing split fails before the fit
        try:
            eval_ds = load_cifar10(settings.data, split=settings.eval_split, chunk_size=settings.chunk_size,
                                   progress=progress)
        except InputError as e:  # the data layer's fix names --split; here the option is --eval-split
            raise type(e)(str(e).replace("use --split", "use --eval-split")) from None
    if settings.k > ds.n_samples:
        raise InputError(f"-k {settings.k} is larger than the number of images ({ds.n_samples}); "
                         f"use -k {ds.n_samples} or fewer")
    return ds, eval_ds


def _fit(settings: Settings, X, backend: str, ckpt: RunCheckpoint, ds, eval_ds):
    """Cluster on the chosen scheduler; the fitted estimator and what is computed beside it."""
    d = settings.n_features()
    init = _initial(settings, d)
    ckpt.check_shape(settings.k, d)
    with scheduler(settings.scheduler, cluster=settings.cluster, n_workers=settings.n_workers) as sched:
        featurizer, X = _featurize(settings, ds)
        if settings.mini_batch and settings.persist:
            X = X.persist()  # steps then read only their batches' rows, from memory (or the workers')
        km = _estimator(settings, init, backend, ckpt)
        km.fit(to_backend(X, backend), on_iteration=ckpt.on_iteration, resume=ckpt.resume)
        table = contingency(km.labels_, to_backend(ds.labels, backend), settings.k, len(ds.class_names))
        labels = to_numpy(km.labels_.compute()).astype(np.int32)
        extra = {"scheduler": {k: v for k, v in sched.items() if k != "client"}, "eval": None, "compare": None,
                 "eval_labels": None, "featurizer": featurizer, "mean_images": None}
        if featurizer is not None:  # the pictures show each cluster's mean image: feature-space centres are no images
            extra["mean_images"] = features.cluster_mean_images(ds.flat(), km.labels_, settings.k)
        if eval_ds is not None:
            extra["eval_labels"], extra["eval"] = apply_centroids(
                eval_ds, km.cluster_centers_, metric=settings.metric, backend=backend, train_table=table,
                featurizer=featurizer)
        if settings.compare == "sklearn":
            extra["compare"] = reporting.compare_sklearn(X, km, ds.labels, len(ds.class_names), labels, settings)
    return km, table, labels, extra


def _featurize(settings: Settings, ds):
    """``(featurizer or None, rows k-means clusters)``: the flat pixels, or features fitted on ``ds``."""
    if settings.features == "raw":
        return None, ds.flat()
    t0 = time.perf_counter()
    logger.info("fitting %s features on %d images (%s)", settings.features, ds.n_samples,
                ", ".join(f"{k}={v}" for k, v in settings.feature_options().items()))
    featurizer, F = features.fit_transform(settings.features, ds.images, **settings.feature_options())
    F = F.persist()
    featurizer.info["features_seconds"] = time.perf_counter() - t0
    logger.info("%d %s features per image ready in %.1f s", F.shape[1], settings.features, time.perf_counter() - t0)
    return featurizer, F


class _MeanImages:
    """The fitted estimator as the pictures see it: each cluster's mean image as its centre."""

    def __init__(self, km, centers):
        self._km = km
        self.cluster_centers_ = centers
        self.metric = "l2"

    def __getattr__(self, name):
        return getattr(self._km, name)


def _report(settings: Settings, ds, X, backend: str, km, table, extra: dict, ckpt, t_start: float) -> dict:
    """The contents of ``report.json``."""
    metrics = scores(table)
    return {
        "daskmeans_version": __version__,
        "settings": asdict(settings),
        "backend": backend,
        "algorithm": "minibatch" if settings.mini_batch else km.algorithm,
        "scheduler": extra["scheduler"],
        "data": ds.describe(),
        "n_samples": ds.n_samples,
        "n_features": settings.n_features(),
        "features": extra["featurizer"].describe() if extra["featurizer"] is not None else {"kind": "raw"},
        "k": settings.k,
        "n_iter": km.n_iter_,
        "converged": km.converged_,
        "tol_scaled": km.tol_,
        "inertia": km.inertia_,
        "purity": metrics["purity"],
        "notebook_impurity": notebook_impurity(table),  # what the original notebook printed; not 1 - purity
        "metrics": metrics,
        "cluster_sizes": metrics["cluster_sizes"],
        "contingency": table,
        "class_names": list(ds.class_names),
        "history": _history(km, ds.n_samples) if settings.mini_batch else km.history_,
        "n_steps": getattr(km, "n_steps_", None),
        "resumed_from": ckpt.resumed_from,
        "fit_seconds": km.fit_seconds_,
        "seconds": time.perf_counter() - t_start,
        "python": platform.python_version(),
        "eval": extra["eval"],
        "compare": extra["compare"],
        "baseline": reporting.BASELINE,
    }


def _history(km, n: int, most: int = 1000) -> list:
    """A mini-batch fit's steps as the report's history (at most ``most`` of them, the last always):
    ``iteration`` is the step, ``inertia`` the smoothed batch inertia scaled to the ``n`` rows, ``changed``
    the centres relocated in that step."""
    steps = km.history_
    every = max(1, -(-len(steps) // most))
    keep = [h for i, h in enumerate(steps) if i % every == every - 1 or i == len(steps) - 1]
    return [{"iteration": h["step"], "inertia": (h["ewa_inertia"] if h["ewa_inertia"] is not None
                                                   else h["batch_inertia"]) * n,
             "batch_inertia": h["batch_inertia"], "changed": h["reassigned"], "seconds": h["seconds"]} for h in keep]


def run(settings: Settings, *, out_dir=None, on_iteration=None, resume=None) -> dict:
    """Run the whole job and write its folder. Returns the report dict.

    ``out_dir``: an :class:`~daskmeans.outputs.OutputDir` already prepared
    (jobs prepare their own); by default one is made from ``settings.out``.
    """
    settings.validate()
    t_start = time.perf_counter()
    own_out = out_dir is None
    ckpt = None
    if own_out:
        out_dir = OutputDir(settings.out or default_out(), overwrite=settings.overwrite, protect=_protected(settings))
    try:
        ds, eval_ds = _open_data(settings)
        X = ds.flat()
        backend = resolve_backend(settings.backend)
        logger.info(
            "%d images (%s split%s) from %s, chunks of %d rows, backend %s",
            ds.n_samples, ds.split, f", subset of {settings.subset}" if settings.subset else "",
            ds.source, X.chunks[0][0], backend,
        )
        ckpt = (MiniBatchRunCheckpoint if settings.mini_batch else RunCheckpoint)(
            settings, out_dir.final, on_iteration=on_iteration, resume=resume)
        km, table, labels, extra = _fit(settings, X, backend, ckpt, ds, eval_ds)
        report = _report(settings, ds, X, backend, km, table, extra, ckpt, t_start)
        out_dir.write_npy("centroids.npy", km.cluster_centers_.astype(np.float32))
        out_dir.write_npy("labels.npy", labels)
        pictured = km
        if extra["featurizer"] is not None:  # predict and --eval-split apply the training features
            extra["featurizer"].save(out_dir.path / "featurizer.npz")
            out_dir.write_npy("cluster-means.npy", extra["mean_images"].astype(np.float32))
            pictured = _MeanImages(km, extra["mean_images"])
        if extra["eval_labels"] is not None:
            out_dir.write_npy(f"labels-{settings.eval_split}.npy", extra["eval_labels"])
        out_dir.write_json("report.json", report)
        reporting.write_extras(out_dir.path, report, pictured, ds)  # pictures and report.html
        if own_out:
            report["out"] = str(out_dir.commit())
            ckpt.done()
        return report
    except BaseException as e:
        if own_out:
            out_dir.abort()
        if isinstance(e, ClusterUnreachable) and ckpt is not None:
            raise ckpt.explain(e) from None
        raise


def format_summary(report: dict) -> str:
    """The per-cluster table and the headline figures, as printed by ``daskmeans run``."""
    names = report["class_names"]
    table = np.asarray(report["contingency"])
    lines = [f"{'cluster':>7}  {'size':>7}  {'majority class':<14}  {'share':>6}"]
    for j, row in enumerate(table):
        size = int(row.sum())
        if size:
            c = int(row.argmax())
            lines.append(f"{j:>7}  {size:>7}  {names[c]:<14}  {row[c] / size:>6.1%}")
        else:
            lines.append(f"{j:>7}  {0:>7}  {'(empty)':<14}  {'-':>6}")
    m = report["metrics"]
    lines.append("")
    lines.append(
        f"purity {report['purity']:.4f}   NMI {m.get('nmi', float('nan')):.4f}   ARI {m.get('ari', float('nan')):.4f}   "
        f"iterations {report['n_iter']} ({'converged' if report['converged'] else 'max-iter reached'})   "
        f"inertia {report['inertia']:.6g}   time {report['seconds']:.1f} s"
    )
    lines.extend(reporting.summary_lines(report))
    if "out" in report:
        lines.append(f"wrote {report['out']}")
    return "\n".join(lines)
