"""Pictures and a self-contained HTML page for a finished run, and the same figures for a notebook.

Layout (the flow is one way: baseline/examples -> figures -> page -> write_extras):

``baseline``  the published raw-pixel k-means figures and the sentences that compare a run with them
``examples``  nearest / farthest / random members of each cluster: a per-block kernel, tree-merged
``figures``   ``plot_*`` -> matplotlib Figure (notebooks), ``fig_*`` -> the same figure as PNG bytes
``page``      report.html: tables and figures in one offline page
``compare``   ``--compare sklearn``: scikit-learn's KMeans from the same initial centres

:func:`write_extras` (here) is called by :func:`daskmeans.run.run` after
``report.json``, ``centroids.npy`` and ``labels.npy`` are written; it adds
``centroids.png``, ``samples.png``, ``nearest.png``, ``farthest.png``,
``clusters/cluster-NN.png``, ``contingency.png`` (and ``contingency-<split>.png``
for ``--eval-split``), ``convergence.png`` and ``report.html``.

In a notebook::

    from daskmeans import report
    report.plot_centers(km, ds.class_names, table=table)   # displays inline
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..metrics import contingency, notebook_impurity
from .baseline import BASELINE, HEADLINE, data_caveat, summary_lines
from .compare import compare_sklearn
from .examples import KINDS, Examples, examples_block, gather_examples, merge_examples, own_distances, priority, select_top
from .figures import (
    KIND_TITLE,
    ReportFigure,
    fig_centroids,
    fig_cluster,
    fig_contingency,
    fig_convergence,
    fig_examples,
    image_grid,
    plot_centers,
    plot_cluster,
    plot_contingency,
    plot_convergence,
    plot_examples,
    thumbnail,
    to_images,
    to_png,
)
from .page import cluster_table, data_uri, html_page, metrics_table

__all__ = [
    "BASELINE", "HEADLINE", "KINDS", "Examples", "ReportFigure", "cluster_table", "compare_sklearn",
    "contingency_of", "data_caveat", "data_uri", "examples_block", "fig_centroids", "fig_cluster",
    "fig_contingency", "fig_convergence", "fig_examples", "gather_examples", "html_page", "image_grid",
    "merge_examples", "metrics_table", "own_distances", "plot_centers", "plot_cluster", "plot_contingency",
    "plot_convergence", "plot_examples", "priority", "select_top", "summary_lines", "thumbnail", "to_images",
    "to_png", "write_extras",
]

logger = logging.getLogger("daskmeans")


def contingency_of(km, ds) -> np.ndarray:
    """The cluster x class table ``(k, n_classes)`` of a fitted KMeans on its dataset (distributed count)."""
    return contingency(km.labels_, ds.labels, km.n_clusters, len(ds.class_names))


@dataclass
class _Clusters:
    """What every figure of a run needs to know about its clusters."""

    names: list
    table: np.ndarray  # (k, C) counts
    majority: list
    purity: list | None
    sizes: list
    centers: np.ndarray  # (k, d) float64
    shape: tuple
    metric: str

    @property
    def shown(self) -> np.ndarray:
        """The centres as pictures show them: unit directions (cosine) scaled so their brightest value is 1."""
        if self.metric != "cosine":
            return self.centers
        top = self.centers.max(axis=1, keepdims=True)
        return self.centers / np.where(top > 0, top, 1.0)

    @classmethod
    def of(cls, report: dict, km, ds) -> _Clusters:
        metrics = report.get("metrics") or {}
        table = np.asarray(report["contingency"], dtype=np.int64)
        images = getattr(ds, "images", None)
        return cls(
            names=list(report.get("class_names") or ds.class_names),
            table=table,
            majority=metrics.get("majority_class") or [int(r.argmax()) if r.sum() else -1 for r in table],
            purity=metrics.get("cluster_purity"),
            sizes=[int(s) for s in table.sum(axis=1)],
            centers=np.asarray(km.cluster_centers_, dtype=np.float64),
            shape=tuple(images.shape[1:]) if images is not None else (32, 32, 3),
            metric=getattr(km, "metric", "l2"),
        )


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


class _Files:
    """The figures written so far: files on disk, sections for the page, names that failed."""

    def __init__(self, path: Path):
        self.path = path
        self.written: list[Path] = []
        self.failed: list[str] = []
        self.sections: list[tuple] = []  # (section, png, caption) for html_page

    def save(self, name: str, draw):
        """Draw and write one figure; a failure is logged and skipped, never fatal to the run."""
        try:
            png = draw()
        except Exception as e:  # the run's results are already written: a figure must not lose them
            self.failed.append(name)
            logger.warning("could not draw %s (%s: %s); the other outputs are unaffected", name,
                           type(e).__name__, _first_line(e))
            return None
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png)
        self.written.append(p)
        return png

    def section(self, title: str, name: str, draw, caption: str) -> None:
        png = self.save(name, draw)
        if png is not None:
            self.sections.append((title, png, caption))


def _summary_figures(files: _Files, report: dict, km, c: _Clusters, split: str) -> None:
    files.section("Convergence", "convergence.png", lambda: fig_convergence(report.get("history") or km.history_),
                  "Inertia (sum of squared distances to the centres used in the iteration) and number of images "
                  "that changed cluster, per iteration.")
    files.section("Cluster centres", "centroids.png",
                  lambda: fig_centroids(c.shown, c.names, c.majority, c.purity, shape=c.shape),
                  "Each centre shown as an image, titled with its majority class and the share of its images in "
                  "that class.")
    files.section("Cluster x class table", "contingency.png",
                  lambda: fig_contingency(c.table, c.names, title=f"cluster x class, {split} split"),
                  "Counts per cluster and true class; colour = share of the cluster.")
    ev = report.get("eval")
    if ev:
        files.section(f"Cluster x class table, held-out {ev['split']}", f"contingency-{ev['split']}.png",
                      lambda: fig_contingency(ev["contingency"], c.names,
                                              title=f"held-out {ev['split']} split, trained centres"),
                      "The held-out images assigned to the trained centres.")


def _examples(path: Path, report: dict, km, ds, c: _Clusters, m: int, files: _Files) -> Examples | None:
    """The members to show, gathered on the cluster; None (logged) when that fails."""
    try:
        labels_file = path / "labels.npy"
        labels = np.load(labels_file) if labels_file.is_file() else km.labels_
        t1 = time.perf_counter()
        seed = int((report.get("settings") or {}).get("seed", 0))
        ex = gather_examples(ds.flat(), labels, ds.labels, c.centers, m=m, seed=seed, metric=c.metric)
        logger.info("gathered %d example images from %d chunks in %.1f s", len(ex.index), ds.images.numblocks[0],
                    time.perf_counter() - t1)
        return ex
    except Exception as e:  # the pictures of members are optional: the rest of the report still holds
        files.failed.append("examples")
        logger.warning("could not gather example images (%s: %s); no member pictures", type(e).__name__,
                       _first_line(e))
        return None


def _member_figures(files: _Files, ex: Examples, c: _Clusters, max_cluster_pages: int) -> list:
    """samples/nearest/farthest.png and one picture per cluster; returns ``(j, png)`` for the page."""
    for kind, fname in (("random", "samples.png"), ("nearest", "nearest.png"), ("farthest", "farthest.png")):
        files.section(f"Members: {KIND_TITLE[kind]}", fname,
                      lambda kind=kind: fig_examples(ex, kind, c.names, c.majority, c.purity, shape=c.shape,
                                                     sizes=c.sizes),
                      f"{ex.m} {KIND_TITLE[kind]} per cluster; frame green = the cluster's majority class.")
    per_cluster = []
    k = len(c.centers)
    for j in range(min(k, max_cluster_pages)):
        png = files.save(f"clusters/cluster-{j:02d}.png", lambda j=j: fig_cluster(
            ex, j, c.shown[j], c.names, c.majority, c.purity, shape=c.shape, size=c.sizes[j], metric=c.metric))
        if png is not None:
            per_cluster.append((j, png))
    if k > max_cluster_pages:
        logger.info("per-cluster pictures written for the first %d of %d clusters", max_cluster_pages, k)
    return per_cluster


def write_extras(path, report: dict, km, ds, *, m: int = 8, max_cluster_pages: int = 100) -> list[Path]:
    """Write the figures (PNG) and ``report.html`` into the run folder ``path``.

    ``km``: the fitted :class:`~daskmeans.estimator.KMeans`; ``ds``: the
    :class:`~daskmeans.data.Dataset` it was fitted on. Cluster labels are read
    from ``path/labels.npy`` (written just before) when present, so this works
    after the run's cluster is closed. Returns the files written.
    """
    t0 = time.perf_counter()
    path = Path(path)
    c = _Clusters.of(report, km, ds)
    report.setdefault("notebook_impurity", notebook_impurity(c.table))
    files = _Files(path)
    logger.info("writing figures and report.html (%d clusters, %d examples each)", len(c.centers), m)
    _summary_figures(files, report, km, c, ds.split)
    ex = _examples(path, report, km, ds, c, m, files)
    per_cluster = _member_figures(files, ex, c, max_cluster_pages) if ex is not None else []
    thumbs = [thumbnail(img) for img in to_images(c.shown, c.shape)]
    page = html_page(report, files.sections, per_cluster=per_cluster, thumbs=thumbs)
    p = path / "report.html"
    p.write_text(page, encoding="utf-8")
    files.written.append(p)
    logger.info("wrote %d figures and report.html (%.0f kB) in %.1f s", len(files.written) - 1,
                p.stat().st_size / 1024, time.perf_counter() - t0)
    if files.failed:
        logger.warning("%d picture(s) could not be drawn: %s", len(files.failed), ", ".join(files.failed))
    return files.written
