"""Choosing k: fit several k on the same persisted data and compare them.

>>> from daskmeans.sweep import sweep                                  # doctest: +SKIP
>>> result = sweep(X, range(2, 31), labels=y, out="runs/sweep")        # doctest: +SKIP
>>> [(r["k"], r["silhouette"]) for r in result["rows"]]               # doctest: +SKIP

For every k: the inertia (the elbow), the silhouette on a seeded sample of rows
(the same rows for every k), and, when labels are given, purity, matched
accuracy, NMI and ARI from the cluster x class table. ``daskmeans sweep`` is the
same on CIFAR-10 from the command line and writes the folder of a run:
``sweep.json``, ``sweep.html`` and one PNG per measure against k.

The data are persisted once and every fit reuses them; each k still makes its
own passes over the chunks (the passes are not shared between k values yet).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import logging
import re
import time
from pathlib import Path

import dask.array as da
import numpy as np
from sklearn.metrics import silhouette_score

from . import __version__, params
from .backend import resolve as resolve_backend
from .backend import to_backend, to_numpy
from .cluster import scheduler
from .data import load_cifar10
from .errors import InputError
from .estimator import KMeans, fit_together
from .kmeans import as_rows, pixel_scale
from .metrics import contingency, scores
from .outputs import OutputDir, default_out
from .report.figures import ReportFigure, to_png
from .report.page import _CSS, data_uri, fmt_number

logger = logging.getLogger("daskmeans")

#: Rows of the seeded sample the silhouette is computed on (it costs O(sample^2)).
SILHOUETTE_SAMPLE = 2000
#: The scores per k that need labels, in the order of the table and the plot.
LABEL_SCORES = (("purity", "purity"), ("matched_accuracy", "matched accuracy"), ("nmi", "NMI"), ("ari", "ARI"))

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?::(-?\d+))?$")


# -- the k values -------------------------------------------------------------------------


def parse_ks(text, flag: str = "-k") -> list[int]:
    """k values from ``"2..30"``, ``"2..30:2"`` (inclusive range, step), ``"2,4,8"`` or a mix (``"2,5..9"``).

    Returns the sorted distinct values. Raises :class:`InputError` (one line,
    with the fix) for anything else, a k below 1, an empty or reversed range,
    or a step below 1.
    """
    if isinstance(text, (int, np.integer)) and not isinstance(text, bool):
        text = str(int(text))
    if not isinstance(text, str):
        ks = list(text)
        if not ks or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in ks):
            raise InputError(f"ks={text!r}: must be whole numbers, e.g. [2, 4, 8] or range(2, 31)")
        text = ",".join(str(int(k)) for k in ks)
    shown = f"{flag} {text}"
    fix = "write a list (2,4,8), a range (2..30) or a range with a step (2..30:2)"
    out: set[int] = set()
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise InputError(f"{shown}: empty; {fix}")
    for item in items:
        m = _RANGE.match(item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            step = int(m.group(3)) if m.group(3) is not None else 1
            if step < 1:
                raise InputError(f"{shown}: step {step} must be 1 or more; write e.g. {lo}..{hi}:2")
            if hi < lo:
                raise InputError(f"{shown}: the range {item} ends before it starts; write {hi}..{lo}")
            values = range(lo, hi + 1, step)
        elif re.fullmatch(r"-?\d+", item):
            values = [int(item)]
        else:
            raise InputError(f"{shown}: {item!r} is not a whole number or a range; {fix}")
        for k in values:
            if k < 1:
                raise InputError(f"{shown}: k={k} must be 1 or more (2 or more for a silhouette); {fix}")
            out.add(k)
    return sorted(out)


# -- the sweep ----------------------------------------------------------------------------


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    size = min(int(size), n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def _silhouette(Xs: np.ndarray, labels: np.ndarray, metric: str) -> float | None:
    """Silhouette of the sample; None where it is undefined (one cluster in the sample, or one row each)."""
    distinct = len(np.unique(labels))
    if distinct < 2 or distinct > len(labels) - 1:
        return None
    name = {"l1": "manhattan", "cosine": "cosine"}.get(metric, "euclidean")
    return float(silhouette_score(Xs, labels, metric=name))


def sweep(X, ks, labels=None, *, class_names=None, init="k-means++", random_state=0, max_iter=300, tol=1e-4,
          metric="l2", algorithm="auto", n_init=1, chunk_size=None, persist=True, silhouette_sample=SILHOUETTE_SAMPLE,
          out=None, overwrite=False, data=None) -> dict:
    """Fit :class:`~daskmeans.KMeans` for every k in ``ks`` and score each fit.

    Parameters
    ----------
    X : array (n, d) or images (n, h, w, c); NumPy, CuPy or dask
        uint8 pixels (centres in [0, 1]) or numbers. Persisted once (``persist``)
        and reused by every fit.
    ks : iterable of int, or str
        The k values (a string as :func:`parse_ks` reads it: ``"2..30"``).
    labels : array (n,) of int class indices, or None
        True classes: purity, matched accuracy, NMI and ARI per k.
    class_names : sequence of str, optional
        Names of the classes (the number of classes otherwise comes from ``labels``).
    init, random_state, max_iter, tol, metric, algorithm, n_init, chunk_size :
        As for :class:`~daskmeans.KMeans`; the same for every k (the same seed too).
    silhouette_sample : int
        Rows in the seeded sample (``default_rng(random_state)``) the
        silhouette is computed on, the same rows for every k.
    out : path or None
        Also write the sweep's folder there (atomically; ``overwrite``
        replaces an earlier daskmeans folder only).
    data : dict or None
        A description of the data for the report.

    Returns
    -------
    dict
        ``rows``: one dict per k with ``k``, ``inertia``, ``n_iter``,
        ``converged``, ``seconds`` (its labels and scores; the fit of all k,
        in shared passes, is ``fit_seconds``), ``silhouette`` and, with labels,
        ``purity``, ``matched_accuracy``, ``nmi``, ``ari``, ``cluster_sizes``;
        ``best``: the k of the highest silhouette (and of each label score);
        plus the settings. With ``out``: ``out``, the folder written.
    """
    ks = parse_ks(ks, flag="ks") if isinstance(ks, str) else parse_ks(list(ks), flag="ks")
    if isinstance(silhouette_sample, bool) or not isinstance(silhouette_sample, (int, np.integer)) \
            or silhouette_sample < 2:
        raise InputError(f"silhouette_sample={silhouette_sample!r} must be a whole number >= 2; pass e.g. "
                         f"silhouette_sample={SILHOUETTE_SAMPLE}")
    out_dir = OutputDir(out, overwrite=overwrite) if out is not None else None
    try:
        result = _sweep(X, ks, labels, class_names, init, random_state, max_iter, tol, metric, algorithm, n_init,
                        chunk_size, persist, silhouette_sample, data)
        if out_dir is not None:
            write(out_dir, result)
            result["out"] = str(out_dir.commit())
        return result
    except BaseException:
        if out_dir is not None:
            out_dir.abort()
        raise


def _sweep(X, ks, labels, class_names, init, random_state, max_iter, tol, metric, algorithm, n_init, chunk_size,
           persist, silhouette_sample, data) -> dict:
    t_start = time.perf_counter()
    Xd = as_rows(X, chunk_size)
    n = Xd.shape[0]
    if ks[-1] > n:
        raise InputError(f"k={ks[-1]} is larger than the number of rows ({n}); use k values up to {n}")
    if persist:
        Xd = Xd.persist()
    classes, n_classes = None, None
    if labels is not None:
        classes = labels if isinstance(labels, da.Array) else np.asarray(to_numpy(labels))
        if classes.shape[0] != n:
            raise InputError(f"labels has {classes.shape[0]} entries but X has {n} rows; pass one class per row")
        n_classes = len(class_names) if class_names is not None else int(to_numpy(da.asarray(classes).max().compute())) + 1
    rows_idx = _sample_rows(n, silhouette_sample, 0 if random_state is None else int(random_state))
    scale = pixel_scale(Xd.dtype)
    Xs = np.asarray(to_numpy(Xd[rows_idx].compute()), dtype=np.float64) * scale
    t0 = time.perf_counter()
    models = fit_together([KMeans(k, init=init, n_init=n_init, max_iter=max_iter, tol=tol, metric=metric,
                                  algorithm=algorithm, random_state=random_state, persist=persist) for k in ks], Xd)
    fit_seconds = time.perf_counter() - t0  # every k's runs in the same passes over the data
    logger.info("%d k values fitted in shared passes in %.1f s", len(ks), fit_seconds)
    rows = []
    for k, km in zip(ks, models):
        t0 = time.perf_counter()
        lab = km.labels_
        sample_labels = np.asarray(to_numpy(lab[rows_idx].compute() if isinstance(lab, da.Array) else lab[rows_idx]))
        row = {"k": k, "inertia": km.inertia_, "n_iter": km.n_iter_, "converged": km.converged_,
               "silhouette": _silhouette(Xs, sample_labels, metric)}
        if classes is not None:
            table = contingency(lab, classes, k, n_classes)
            s = scores(table)
            row.update({key: s[key] for key, _ in LABEL_SCORES})
            row["cluster_sizes"] = s["cluster_sizes"]
            row["empty_clusters"] = s["empty_clusters"]
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        logger.info("k=%d: inertia %.6g, silhouette %s, %d iterations, %.1f s", k, row["inertia"],
                    "-" if row["silhouette"] is None else f"{row['silhouette']:.4f}", row["n_iter"], row["seconds"])
    return {
        "daskmeans_version": __version__,
        "kind": "sweep",
        "ks": ks,
        "n_samples": n,
        "n_features": int(Xd.shape[1]),
        "settings": {"init": init, "random_state": random_state, "max_iter": max_iter, "tol": tol, "metric": metric,
                     "algorithm": algorithm, "n_init": n_init, "chunk_size": chunk_size, "persist": persist},
        "silhouette_sample": int(len(rows_idx)),
        "silhouette_rows": rows_idx,
        "class_names": list(class_names) if class_names is not None else None,
        "data": data,
        "rows": rows,
        "best": _best(rows, classes is not None),
        "shared_passes": True,  # one pass per iteration serves every k still iterating
        "fit_seconds": fit_seconds,
        "seconds": time.perf_counter() - t_start,
        "finished": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def _best(rows, with_labels: bool) -> dict:
    keys = ["silhouette"] + ([key for key, _ in LABEL_SCORES] if with_labels else [])
    best = {}
    for key in keys:
        scored = [(r[key], r["k"]) for r in rows if r.get(key) is not None]
        best[key] = max(scored, key=lambda t: (t[0], -t[1]))[1] if scored else None
    return best


# -- the report ---------------------------------------------------------------------------


def _axes(title, ylabel):
    fig = ReportFigure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_inertia(result) -> ReportFigure:
    """Inertia against k (the elbow)."""
    rows = result["rows"]
    fig, ax = _axes("inertia (the elbow)", "inertia (sum of squared distances)")
    ax.plot([r["k"] for r in rows], [r["inertia"] for r in rows], marker="o", color="tab:blue")
    return fig


def plot_silhouette(result) -> ReportFigure:
    """Silhouette of the seeded sample against k; the best k marked."""
    rows = [r for r in result["rows"] if r["silhouette"] is not None]
    fig, ax = _axes(f"silhouette ({result['silhouette_sample']:,} sampled rows)", "silhouette")
    ax.plot([r["k"] for r in rows], [r["silhouette"] for r in rows], marker="o", color="tab:green")
    best = result["best"].get("silhouette")
    if best is not None:
        ax.axvline(best, color="tab:green", ls="--", alpha=0.5, label=f"best k = {best}")
        ax.legend(fontsize=8)
    if not rows:
        ax.text(0.5, 0.5, "undefined for every k (k = 1 only?)", ha="center", va="center", transform=ax.transAxes)
    return fig


def plot_scores(result) -> ReportFigure:
    """Purity, matched accuracy, NMI and ARI against k."""
    rows = result["rows"]
    fig, ax = _axes("agreement with the true classes", "score")
    for key, label in LABEL_SCORES:
        ax.plot([r["k"] for r in rows], [np.nan if r.get(key) is None else r[key] for r in rows], marker=".",
                label=label)
    ax.legend(fontsize=8)
    return fig


def plot_time(result) -> ReportFigure:
    """Iterations per k: each k's share of the fit (the k values share every pass over the data)."""
    rows = result["rows"]
    fig, ax = _axes("iterations per k (passes shared by all k)", "Lloyd iterations")
    ax.plot([r["k"] for r in rows], [r["n_iter"] for r in rows], marker="o", color="tab:gray")
    return fig


def figures(result) -> list[tuple[str, str, ReportFigure, str]]:
    """``(section, file name, figure, caption)`` of every plot of the sweep."""
    out = [("Inertia", "inertia.png", plot_inertia(result),
            "Sum of squared distances to the nearest centre, per k: look for the elbow."),
           ("Silhouette", "silhouette.png", plot_silhouette(result),
            f"Mean silhouette of {result['silhouette_sample']:,} rows drawn once with the seed (the same rows for "
            "every k), labelled by each fit; higher is better.")]
    if any(r.get("purity") is not None for r in result["rows"]):
        out.append(("Agreement with the classes", "scores.png", plot_scores(result),
                    "Purity, matched accuracy (one-to-one Hungarian matching), NMI and ARI against the true classes."))
    out.append(("Time", "time.png", plot_time(result),
                f"Iterations per k: all k were fitted together in {result.get('fit_seconds', 0):.1f} s, every pass "
                "over the data serving each k still iterating; a k's share of that time follows its iterations."))
    return out


def html_page(result, pngs) -> str:
    """The sweep as one self-contained page; ``pngs``: ``(section, caption, png bytes)``, embedded as ``data:`` URIs."""
    esc = html.escape
    data = result.get("data") or {}
    title = f"daskmeans sweep: k = {', '.join(map(str, _short(result['ks'])))} on {result['n_samples']:,} rows"
    labelled = any(r.get("purity") is not None for r in result["rows"])
    head = ["k", "inertia", "silhouette"] + ([label for _, label in LABEL_SCORES] if labelled else []) + \
        ["iterations", "seconds"]
    body = []
    for r in result["rows"]:
        cells = [fmt_number(r["k"]), f"{r['inertia']:,.1f}", fmt_number(r["silhouette"])]
        if labelled:
            cells += [fmt_number(r.get(key)) for key, _ in LABEL_SCORES]
        cells += [f"{r['n_iter']}{'' if r['converged'] else ' (max)'}", f"{r['seconds']:.1f}"]
        body.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    best = ", ".join(f"{key}: k = {k}" for key, k in result["best"].items() if k is not None)
    settings = "".join(f'<tr><td class="l">{esc(str(k))}</td><td class="l">{esc(str(v))}</td></tr>'
                       for k, v in result["settings"].items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="muted">written {esc(result["finished"])} by daskmeans {esc(result["daskmeans_version"])}; '
        f"data {esc(str(data.get('source', '-')))} ({esc(str(data.get('split', '-')))})</p>",
        f'<div class="note">Best k by each measure: {esc(best or "-")}. Each k is a separate fit on the same '
        f"persisted data (its passes are not shared with the other k values yet).</div>",
        "<h2>Per k</h2>",
        "<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
        + "".join(body) + "</tbody></table>",
    ]
    for section, caption, png in pngs:
        parts += [f"<h2>{esc(section)}</h2>",
                  f'<figure><img src="{data_uri(png)}" alt="{esc(section)}"><figcaption>{esc(caption)}'
                  f"</figcaption></figure>"]
    parts += ["<h2>Settings</h2>", f"<table><tbody>{settings}</tbody></table>", "</body></html>"]
    return "\n".join(parts)


def _short(ks):
    """``[2, 3, 4, 5, 8]`` -> ``['2..5', '8']`` for titles."""
    out, i = [], 0
    while i < len(ks):
        j = i
        while j + 1 < len(ks) and ks[j + 1] == ks[j] + 1:
            j += 1
        out.append(f"{ks[i]}..{ks[j]}" if j - i >= 2 else ", ".join(map(str, ks[i : j + 1])))
        i = j + 1
    return out


def write(out_dir: OutputDir, result: dict) -> list[Path]:
    """Write ``sweep.json``, the PNGs and ``sweep.html`` into a staging folder (not yet committed)."""
    written = [out_dir.write_json("sweep.json", result)]
    pngs = []
    for section, name, fig, caption in figures(result):
        png = to_png(fig)
        (out_dir.path / name).write_bytes(png)
        written.append(out_dir.path / name)
        pngs.append((section, caption, png))
    page = out_dir.path / "sweep.html"
    page.write_text(html_page(result, pngs), encoding="utf-8")
    written.append(page)
    return written


# -- the command line ---------------------------------------------------------------------


def format_table(result) -> str:
    """The per-k table as ``daskmeans sweep`` prints it."""
    labelled = any(r.get("purity") is not None for r in result["rows"])
    head = f"{'k':>5}  {'inertia':>14}  {'silhouette':>10}"
    if labelled:
        head += "".join(f"  {label:>16}" for _, label in LABEL_SCORES)
    lines = [head]
    for r in result["rows"]:
        line = f"{r['k']:>5}  {r['inertia']:>14.6g}  {fmt_number(r['silhouette']):>10}"
        if labelled:
            line += "".join(f"  {fmt_number(r.get(key)):>16}" for key, _ in LABEL_SCORES)
        lines.append(line)
    best = ", ".join(f"{key} k={k}" for key, k in result["best"].items() if k is not None)
    lines += ["", f"best: {best}   time {result['seconds']:.1f} s"]
    if "out" in result:
        lines.append(f"wrote {result['out']}")
    return "\n".join(lines)


_OPTIONS = ("data", "split", "subset", "chunk_size", "init", "random_state", "max_iter", "tol", "metric", "algorithm",
            "cluster", "scheduler", "n_workers", "backend", "out", "overwrite")


def add_parser(subparsers, common) -> argparse.ArgumentParser:
    """Register ``daskmeans sweep`` (called by :func:`daskmeans.cli.build_parser`)."""
    p = subparsers.add_parser(
        "sweep", parents=[common], help="fit several k and compare them (elbow, silhouette, scores)",
        description="Fit k-means for several k on the same (persisted) images and write, per k, the inertia, "
                    "the silhouette of a seeded sample and the agreement with the true classes, with a plot of "
                    "each against k.")
    p.add_argument("-k", dest="ks", required=True, metavar="KS",
                   help="the k values: a list (2,4,8), a range (2..30) or a range with a step (2..30:2)")
    p.add_argument("--silhouette-sample", type=int, default=SILHOUETTE_SAMPLE, metavar="N",
                   help=f"rows of the seeded sample for the silhouette (default {SILHOUETTE_SAMPLE})")
    params.add_arguments(p, _OPTIONS)
    p.set_defaults(func=cmd_sweep)
    return p


def _checked(args) -> dict:
    """Every option checked (and configured defaults filled in) before any data is read."""
    values = {}
    for name in _OPTIONS:
        p = params.get(name)
        value = getattr(args, p.setting)
        if value is None and p.config_key:
            value = params.default(p.name)
        values[p.setting] = params.check(p.name, value, source="cli")
    if str(values["init"]).endswith(".npy"):
        raise InputError(f"--init {values['init']}: a sweep fits several k, so initial centres from a file do not "
                         f"fit; use --init k-means++, k-means|| or random")
    if values["algorithm"] == "hamerly" and values["metric"] != "l2":
        raise InputError("--algorithm hamerly needs --metric l2 (its bounds are Euclidean); use --algorithm lloyd")
    if args.silhouette_sample < 2:
        raise InputError(f"--silhouette-sample {args.silhouette_sample}: must be 2 or more; pass e.g. "
                         f"--silhouette-sample {SILHOUETTE_SAMPLE}")
    return values


def cmd_sweep(args) -> int:
    ks = parse_ks(args.ks)
    v = _checked(args)
    backend = resolve_backend(v["backend"])
    out_dir = OutputDir(v["out"] or default_out(), overwrite=v["overwrite"],
                        protect=tuple(x for x in (v["data"],) if x and x != "keras"))
    try:
        ds = load_cifar10(v["data"], split=v["split"], chunk_size=v["chunk_size"],
                          progress=logger.isEnabledFor(logging.INFO))
        if v["subset"] is not None:
            ds = ds.subset(v["subset"], v["seed"])
        if ks[-1] > ds.n_samples:
            raise InputError(f"-k {args.ks}: k={ks[-1]} is larger than the number of images ({ds.n_samples}); "
                             f"use k values up to {ds.n_samples}")
        logger.info("sweep over k = %s on %d images (%s split)", ", ".join(_short(ks)), ds.n_samples, ds.split)
        with scheduler(v["scheduler"], cluster=v["cluster"], n_workers=v["n_workers"]):
            result = _sweep(to_backend(ds.flat(), backend), ks, ds.labels, ds.class_names, v["init"], v["seed"],
                            v["max_iter"], v["tol"], v["metric"], v["algorithm"], 1, None, True,
                            args.silhouette_sample, {**ds.describe(), "indices": None})
        result["settings"].update({"data": v["data"], "split": v["split"], "subset": v["subset"],
                                   "backend": backend})
        write(out_dir, result)
        result["out"] = str(out_dir.commit())
    except BaseException:
        out_dir.abort()
        raise
    if args.json:
        print(json.dumps({k: result[k] for k in ("out", "ks", "n_samples", "best", "rows")}, default=str))
    else:
        print(format_table(result))
    return 0


__all__ = ["sweep", "parse_ks", "write", "figures", "html_page", "format_table", "SILHOUETTE_SAMPLE"]
