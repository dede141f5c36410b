"""Figures of a clustering: matplotlib Figures for a notebook, PNG bytes for the run folder.

Each ``plot_*`` function returns a :class:`ReportFigure` (a matplotlib
``Figure`` that displays inline in Jupyter, even without pyplot); the
``fig_*`` function of the same name draws it and returns the PNG bytes that
``daskmeans run`` writes, so a notebook and the report show the same picture.

No pyplot anywhere: no global backend state, safe in threads and on servers.
Everything here takes small NumPy arrays (centres, a contingency table, the
gathered :class:`~daskmeans.report.examples.Examples`).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from .. import userdirs
from ..metrics import scores
from .examples import KINDS, Examples

userdirs.matplotlib_config()  # before matplotlib's import, which picks its folder once: HOME may be read-only
from matplotlib.figure import Figure  # noqa: E402

KIND_TITLE = {"random": "random members", "nearest": "nearest to the centre", "farthest": "farthest from the centre"}
_GREEN = (46, 160, 67)
_RED = (214, 39, 40)
_CIFAR_SHAPE = (32, 32, 3)


class ReportFigure(Figure):
    """A matplotlib Figure that renders itself as PNG in IPython/Jupyter (``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        return to_png(self)


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, at its own dpi."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _figure(width, height, dpi=100, layout="constrained") -> ReportFigure:
    return ReportFigure(figsize=(width, height), dpi=dpi, layout=layout)


# --------------------------------------------------------------------------- #
# Pixels
# --------------------------------------------------------------------------- #
def to_images(rows, shape=_CIFAR_SHAPE) -> np.ndarray:
    """Rows (n, d) -- uint8 pixels, or floats in [0, 1] -- as uint8 images (n, h, w, c)."""
    a = np.asarray(rows)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(np.asarray(a, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    return a.reshape((a.shape[0], *shape))


def image_grid(images, ncols: int, *, pad: int = 2, upscale: int = 1, borders=None, fill=255,
               nrows: int | None = None) -> np.ndarray:
    """Tile images (n, h, w, 3) uint8 into one (H, W, 3) uint8 mosaic, row by row.

    ``borders``: optional per-image RGB colour (or None) painted in the padding
    around the tile (needs ``pad >= 1``). ``upscale`` repeats pixels (crisp when
    shown at full size). Empty slots stay ``fill``.
    """
    imgs = np.asarray(images)
    if imgs.ndim == 3:
        imgs = imgs[..., None].repeat(3, axis=-1)
    n = imgs.shape[0]
    h, w = imgs.shape[1] * upscale, imgs.shape[2] * upscale
    ncols = max(1, int(ncols))
    nrows = max(1, math.ceil(n / ncols)) if nrows is None else nrows
    out = np.full((nrows * (h + 2 * pad), ncols * (w + 2 * pad), 3), fill, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        if r >= nrows:
            break
        y, x = r * (h + 2 * pad), c * (w + 2 * pad)
        if borders is not None and borders[i] is not None and pad:
            out[y: y + h + 2 * pad, x: x + w + 2 * pad] = borders[i]
        tile = imgs[i].repeat(upscale, axis=0).repeat(upscale, axis=1) if upscale > 1 else imgs[i]
        out[y + pad: y + pad + h, x + pad: x + pad + w] = tile
    return out


def thumbnail(image, upscale: int = 2) -> bytes:
    """A small PNG of one uint8 image (for the HTML table)."""
    img = np.asarray(image).repeat(upscale, axis=0).repeat(upscale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# Labels of clusters
# --------------------------------------------------------------------------- #
def _names(class_names, n: int) -> list[str]:
    return [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(n)]


def _mapping(table, majority, purity):
    """Majority class and purity per cluster: as given, or from a contingency ``table``."""
    if table is None:
        return majority, purity
    s = scores(np.asarray(table))
    return s["majority_class"], s["cluster_purity"]


def _cluster_label(j, class_names, majority, purity) -> str:
    if majority is None:
        return str(j)
    if majority[j] is None or majority[j] < 0:
        return f"{j}: (empty)"
    p = purity[j] if purity is not None else None
    name = class_names[majority[j]] if class_names is not None else str(majority[j])
    return f"{j}: {name}" + (f" {p:.0%}" if p is not None else "")


def _frames(cls, majority_j):
    return [None if majority_j is None or majority_j < 0 else (_GREEN if c == majority_j else _RED) for c in cls]


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)


# --------------------------------------------------------------------------- #
# Figures
# --------------------------------------------------------------------------- #
def plot_centers(km_or_centers, class_names=None, majority=None, purity=None, *, table=None,
                 shape=_CIFAR_SHAPE, ncols: int = 10) -> ReportFigure:
    """The k centres as images, each titled ``j: majority-class purity``.

    ``km_or_centers``: a fitted :class:`~daskmeans.KMeans` or centres ``(k, d)``
    (floats in [0, 1] or uint8). ``table``: a cluster x class contingency table
    to take the majority class and purity from (else ``majority``/``purity``,
    else plain cluster numbers).
    """
    imgs = to_images(getattr(km_or_centers, "cluster_centers_", km_or_centers), shape)
    majority, purity = _mapping(table, majority, purity)
    k = len(imgs)
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    fig = _figure(1.3 * ncols + 0.2, 1.45 * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.set_axis_off()
        if i < k:
            ax.imshow(imgs[i], interpolation="nearest")
            ax.set_title(_cluster_label(i, class_names, majority, purity), fontsize=8)
    fig.suptitle("cluster centres" + (" (majority class, purity)" if majority is not None else ""), fontsize=10)
    return fig


def _example_tiles(ex: Examples, kind: str, majority, shape):
    """Tiles (k*m images, blanks for missing members) and their frame colours, row by row."""
    tiles, frames = [], []
    blank = np.full(shape, 255, np.uint8)
    for j in range(ex.k):
        pos = ex.pick(kind, j)
        imgs = to_images(ex.rows[pos], shape) if len(pos) else np.zeros((0, *shape), np.uint8)
        fr = _frames(ex.cls[pos], majority[j] if majority is not None else None)
        for i in range(ex.m):
            tiles.append(imgs[i] if i < len(pos) else blank)
            frames.append(fr[i] if i < len(pos) else None)
    return np.stack(tiles), frames


def plot_examples(ex: Examples, kind: str = "nearest", class_names=None, majority=None, purity=None, *,
                  table=None, shape=_CIFAR_SHAPE, sizes=None) -> ReportFigure:
    """One row per cluster of its members of one kind (``random``, ``nearest`` or ``farthest``).

    ``ex``: from :func:`~daskmeans.report.gather_examples`. With a majority class
    (given, or from ``table``) a green frame marks a member of it, red another class.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    majority, purity = _mapping(table, majority, purity)
    if sizes is None and table is not None:
        sizes = np.asarray(table).sum(axis=1)
    tiles, frames = _example_tiles(ex, kind, majority, shape)
    up, pad = 2, 3
    grid = image_grid(tiles, ex.m, pad=pad, upscale=up, borders=frames, nrows=ex.k)
    th = shape[0] * up + 2 * pad
    labels = [_cluster_label(j, class_names, majority, purity) for j in range(ex.k)]
    if sizes is not None:
        labels = [f"{lab} (n={sizes[j]})" for j, lab in enumerate(labels)]
    # One grid pixel = one output pixel: a fixed layout, the left margin sized for the labels.
    dpi = 100
    left = 0.25 + 0.065 * max(len(lab) for lab in labels)
    top, bottom = 0.5, 0.05
    gw, gh = grid.shape[1] / dpi, grid.shape[0] / dpi
    fig = _figure(left + gw + 0.15, top + gh + bottom, dpi=dpi, layout=None)
    W, H = fig.get_size_inches()
    ax = fig.add_axes((left / W, bottom / H, gw / W, gh / H))
    ax.imshow(grid, interpolation="nearest")
    _bare(ax)
    ax.set_yticks([j * th + th / 2 for j in range(ex.k)])
    ax.set_yticklabels(labels, fontsize=8)
    legend = "\n(green frame: the majority class, red: another class)" if majority is not None else ""
    ax.set_title(f"{KIND_TITLE[kind]} of each cluster{legend}", fontsize=9)
    return fig


def _cluster_canvas(ex: Examples, j: int, center, class_names, maj, shape, metric):
    """The mosaic of one cluster (centre, then a row per kind), its captions ``(x, y, text, rgb)``,
    and the caption and tile heights in pixels."""
    m, up, pad, cap = ex.m, 3, 3, 30
    tile = shape[0] * up + 2 * pad
    cw = tile + 6  # cell width: tile and a gap
    canvas = np.full((3 * (cap + tile), (m + 1) * cw, 3), 255, np.uint8)
    texts = []
    cimg = to_images(np.asarray(center)[None], shape)[0]
    dname = {"l2": "d²", "cosine": "1-cos"}.get(metric, "d₁")
    names = [str(c) for c in class_names] if class_names is not None else None
    for r, kind in enumerate(KINDS):
        y0 = r * (cap + tile) + cap
        if r == 0:
            canvas[y0: y0 + tile, 0:tile] = image_grid(cimg[None], 1, pad=pad, upscale=up, borders=[(60, 60, 60)])
            texts.append((tile / 2, y0 - 4, "centre", (0, 0, 0)))
        pos = ex.pick(kind, j)
        imgs = to_images(ex.rows[pos], shape) if len(pos) else None
        for i in range(min(m, len(pos))):
            cl = int(ex.cls[pos[i]])
            colour = _GREEN if cl == maj else _RED
            x0 = (i + 1) * cw
            canvas[y0: y0 + tile, x0: x0 + tile] = image_grid(imgs[i][None], 1, pad=pad, upscale=up, borders=[colour])
            name = names[cl] if names is not None and 0 <= cl < len(names) else str(cl)
            dist = ex.dist[pos[i]]
            label = name if kind == "random" else f"{name}\n{dname} {dist:.3f}" if metric == "cosine" \
                else f"{name}\n{dname} {dist:.1f}"
            texts.append((x0 + tile / 2, y0 - 4, label, colour))
    return canvas, texts, cap, tile


def plot_cluster(ex: Examples, j: int, center, class_names=None, majority=None, purity=None, *, table=None,
                 shape=_CIFAR_SHAPE, size=None, metric="l2") -> ReportFigure:
    """One cluster: its centre, then random, nearest and farthest members with their classes.

    Drawn as one mosaic (one image, text on top): fast even for many clusters.
    """
    majority, purity = _mapping(table, majority, purity)
    maj = majority[j] if majority is not None else None
    canvas, texts, cap, tile = _cluster_canvas(ex, j, center, class_names, maj, shape, metric)
    height, width = canvas.shape[:2]
    dpi = 100
    left, top = 0.3, 0.35
    fig = _figure(left + width / dpi + 0.1, top + height / dpi + 0.05, dpi=dpi, layout=None)
    W, H = fig.get_size_inches()
    ax = fig.add_axes((left / W, 0.05 / H, width / dpi / W, height / dpi / H))
    ax.imshow(canvas, interpolation="nearest")
    _bare(ax)
    ax.set_yticks([r * (cap + tile) + cap + tile / 2 for r in range(3)])
    ax.set_yticklabels(["random members", "nearest", "farthest"], fontsize=8, rotation=90, va="center")
    for x, y, text, rgb in texts:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7, color=np.array(rgb) / 255, linespacing=1.0)
    head = _cluster_label(j, class_names, majority, purity)
    ax.set_title(f"cluster {head}" + (f", {size} images" if size is not None else ""), fontsize=10)
    return fig


def plot_contingency(table, class_names=None, *, title="cluster x class counts") -> ReportFigure:
    """Heatmap of the (k, C) table: colour = share of the cluster, numbers = counts."""
    t = np.asarray(table, dtype=np.int64)
    k, C = t.shape
    names = _names(class_names, C)
    sizes = t.sum(axis=1)
    share = np.divide(t, np.maximum(sizes, 1)[:, None], dtype=np.float64)
    fig = _figure(1.6 + 0.62 * C, 1.4 + 0.36 * k)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=max(float(share.max()), 1e-9), aspect="auto")
    ax.set_xticks(range(C))
    ax.set_xticklabels(names[:C], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    maj = t.argmax(axis=1)
    ax.set_yticklabels([f"{j} ({names[maj[j]]})" if sizes[j] else f"{j} (empty)" for j in range(k)], fontsize=8)
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster (majority class)")
    if k * C <= 600:  # beyond that the numbers no longer fit their cells
        hi = share.max() or 1
        for i in range(k):
            for c in range(C):
                ax.text(c, i, str(t[i, c]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, c] > 0.6 * hi else "black")
    fig.colorbar(im, ax=ax, label="share of the cluster", shrink=0.8)
    ax.set_title(title, fontsize=10)
    return fig


def plot_convergence(km_or_history) -> ReportFigure:
    """Inertia and labels changed per iteration, from a fitted KMeans or its ``history_``."""
    history = getattr(km_or_history, "history_", km_or_history) or []
    it = [h["iteration"] for h in history]
    fig = _figure(8, 3.2)
    a1, a2 = fig.subplots(1, 2)
    a1.plot(it, [h["inertia"] for h in history], marker=".", color="tab:blue")
    a1.set_xlabel("iteration")
    a1.set_ylabel("inertia (before the update)")
    a1.set_title("inertia", fontsize=10)
    a1.grid(alpha=0.3)
    a2.plot(it, [h["changed"] for h in history], marker=".", color="tab:orange")
    a2.set_yscale("symlog", linthresh=1)
    a2.set_xlabel("iteration")
    a2.set_ylabel("labels changed")
    a2.set_title("labels changed", fontsize=10)
    a2.grid(alpha=0.3)
    if not history:
        for a in (a1, a2):
            a.text(0.5, 0.5, "no iterations recorded", ha="center", va="center", transform=a.transAxes)
    return fig


# --------------------------------------------------------------------------- #
# The same figures as PNG bytes (what the run folder and report.html hold)
# --------------------------------------------------------------------------- #
def fig_centroids(centers, class_names, majority, purity, *, shape=_CIFAR_SHAPE, ncols: int = 10) -> bytes:
    """PNG of :func:`plot_centers`."""
    return to_png(plot_centers(centers, class_names, majority, purity, shape=shape, ncols=ncols))


def fig_examples(ex: Examples, kind: str, class_names, majority, purity, *, shape=_CIFAR_SHAPE,
                 sizes=None) -> bytes:
    """PNG of :func:`plot_examples`."""
    return to_png(plot_examples(ex, kind, class_names, majority, purity, shape=shape, sizes=sizes))


def fig_cluster(ex: Examples, j: int, center, class_names, majority, purity, *, shape=_CIFAR_SHAPE,
                size=None, metric="l2") -> bytes:
    """PNG of :func:`plot_cluster`."""
    return to_png(plot_cluster(ex, j, center, class_names, majority, purity, shape=shape, size=size,
                               metric=metric))


def fig_contingency(table, class_names, *, title="cluster x class counts") -> bytes:
    """PNG of :func:`plot_contingency`."""
    return to_png(plot_contingency(table, class_names, title=title))


def fig_convergence(history) -> bytes:
    """PNG of :func:`plot_convergence`."""
    return to_png(plot_convergence(history))
