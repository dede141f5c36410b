"""Pictures and a self-contained HTML page for a finished run.

:func:`write_extras` is called by :func:`daskmeans.run.run` after
``report.json``, ``centroids.npy`` and ``labels.npy`` are written; it adds, next
to them:

``centroids.png``
    The k centres as 32x32 images, each titled with its majority class and purity.
``samples.png``, ``nearest.png``, ``farthest.png``
    One row per cluster: random members, the members nearest to the centre and
    the members farthest from it. A green frame marks an image of the cluster's
    majority class, a red one any other class.
``clusters/cluster-NN.png``
    One picture per cluster: its centre, and the three rows above with class names.
``contingency.png`` (and ``contingency-<split>.png`` for ``--eval-split``)
    The cluster x class table as a heatmap (colour = share of the cluster).
``convergence.png``
    Inertia and labels changed per iteration.
``report.html``
    One offline page: settings, metrics next to the published baseline,
    the per-cluster table and every figure, images embedded as base64.

The examples are gathered without bringing the data to the client: a per-block
kernel (:func:`examples_block`) keeps, for every cluster, the ``m`` nearest,
the ``m`` farthest and ``m`` random members of its block (rows included), the
partial results are merged in a tree (:func:`merge_examples`), and only those
few rows per cluster reach the client.

The pure parts (:func:`select_top`, :func:`image_grid`, the ``fig_*`` functions,
:func:`html_page`) work on small NumPy arrays and are tested on synthetic data.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger("daskmeans")

#: The published k-means-on-raw-pixels result for CIFAR-10 (k = 10): Chang et al.,
#: "Deep Adaptive Image Clustering" (DAC), ICCV 2017, Table 2 (NMI 0.0871, ARI 0.0487,
#: ACC 0.2289), the figures repeated across the deep-clustering literature.
BASELINE = {
    "method": "k-means on raw pixels (published)",
    "reference": "Chang et al., Deep Adaptive Image Clustering (DAC), ICCV 2017, Table 2; "
    "repeated across the deep-clustering literature",
    "k": 10,
    "data": "official CIFAR-10 (train + test, 60,000 images)",
    "matched_accuracy": 0.229,
    "nmi": 0.087,
    "ari": 0.049,
}

#: Metrics shown in the headline table: (key, label).
HEADLINE = (
    ("matched_accuracy", "matched accuracy"),
    ("purity", "purity"),
    ("nmi", "NMI"),
    ("ari", "ARI"),
    ("homogeneity", "homogeneity"),
    ("completeness", "completeness"),
    ("v_measure", "V-measure"),
)

KINDS = ("random", "nearest", "farthest")
_KIND_TITLE = {"random": "random members", "nearest": "nearest to the centre", "farthest": "farthest from the centre"}
_GREEN = (46, 160, 67)
_RED = (214, 39, 40)
_GREY = (170, 170, 170)


# --------------------------------------------------------------------------- #
# Baseline and caveats
# --------------------------------------------------------------------------- #
def data_caveat(report: dict) -> str:
    """One sentence on how the run's data relates to the data of the published baseline."""
    data = report.get("data") or {}
    source = str(data.get("source", "?"))
    kind = _source_kind(data)
    if kind == "official" or source.endswith("cifar-10-python.tar.gz") or source == "keras":
        text = f"This run read the official CIFAR-10 batches ({source}), the data the baseline used."
    else:
        text = (
            f"This run read {source}, an image-file copy of CIFAR-10: the JPEG copy is close to, "
            "not bit-identical with, the official batches the baseline used (labels and class balance are "
            "exact, pixels went through JPEG compression), so its figures are comparable, not equal."
        )
    if report.get("k") != BASELINE["k"]:
        text += f" The baseline is for k = {BASELINE['k']}; this run has k = {report.get('k')}."
    split = data.get("split")
    if split and split != "all":
        text += f" The baseline clustered train + test together; this run clustered the {split} split"
        text += f" ({report.get('n_samples')} images)."
    return text


def _source_kind(data: dict) -> str | None:
    store = data.get("store")
    if not store:
        return None
    try:
        from .data.store import read_attrs

        return (read_attrs(Path(store)) or {}).get("source_kind")
    except Exception:  # the store may be gone: the caveat falls back to the source name
        return None


def summary_lines(report: dict) -> list[str]:
    """Extra lines for the terminal summary: held-out metrics, the comparison, the baseline."""
    m = report.get("metrics") or {}
    lines = []
    ev = report.get("eval")
    if ev:
        em = ev["metrics"]
        lines.append(
            f"held-out {ev['split']} ({ev['n_samples']} images, train mapping): matched accuracy "
            f"{_f(em.get('matched_accuracy'))}   purity {_f(em.get('purity'))}   NMI {_f(em.get('nmi'))}   "
            f"ARI {_f(em.get('ari'))}"
        )
    cmp_ = report.get("compare")
    if cmp_:
        sk = cmp_["sklearn"]
        lines.append(
            f"scikit-learn KMeans, same data and initial centres: {sk['n_iter']} iterations, {sk['seconds']:.1f} s "
            f"(daskmeans: {cmp_['daskmeans']['n_iter']}, {cmp_['daskmeans']['seconds']:.1f} s)   NMI {_f(sk['metrics']['nmi'])}   "
            f"ARI {_f(sk['metrics']['ari'])}   agreement ARI {cmp_['agreement_ari']:.4f} "
            f"({cmp_['same_labels']:.2%} same labels)"
        )
    b = BASELINE
    lines.append(
        f"matched accuracy {_f(m.get('matched_accuracy'))}   NMI {_f(m.get('nmi'))}   ARI {_f(m.get('ari'))}   "
        f"(published raw-pixel k-means, k=10: {b['matched_accuracy']:.3f} / {b['nmi']:.3f} / {b['ari']:.3f})"
    )
    out = report.get("out")
    if out and (Path(out) / "report.html").is_file():
        lines.append(f"pictures and report: {Path(out) / 'report.html'}")
    return lines


def _f(x, digits=4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


# --------------------------------------------------------------------------- #
# Nearest / farthest / random members: per-block kernel and tree reduction
# --------------------------------------------------------------------------- #
def select_top(keys, index, clusters, k: int, m: int) -> np.ndarray:
    """Positions of the ``m`` smallest ``(key, index)`` pairs of each cluster.

    Pure NumPy. Ties on ``key`` go to the lower ``index``, so the choice does not
    depend on how the rows were split into blocks. Rows with a cluster outside
    ``[0, k)`` are ignored. Returns positions grouped by cluster, each group in
    increasing ``(key, index)`` order.
    """
    keys = np.asarray(keys, dtype=np.float64)
    index = np.asarray(index, dtype=np.int64)
    clusters = np.asarray(clusters, dtype=np.int64)
    order = np.lexsort((index, keys, clusters))
    cs = clusters[order]
    ids = np.arange(k)
    lo = np.searchsorted(cs, ids, "left")
    hi = np.minimum(lo + m, np.searchsorted(cs, ids, "right"))
    if not len(order):
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([order[a:b] for a, b in zip(lo, hi)] + [np.zeros(0, np.int64)]).astype(np.int64)


def priority(index, seed: int) -> np.ndarray:
    """A pseudo-random number in [0, 1) per global row index (splitmix64 of index and seed).

    A function of the row only, so "m random members" are the same rows however
    the data is chunked or scheduled.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def own_distances(block, labels, centers, scale: float, metric: str = "l2") -> np.ndarray:
    """Distance of each row to its own cluster's centre, in float64 (NumPy result).

    ``block`` holds raw rows (NumPy or CuPy), ``centers`` (k, d) are in centres'
    units (``raw * scale``). Squared Euclidean for ``l2``, Manhattan for ``l1``,
    computed directly (no ``|x|^2 - 2xc + |c|^2`` rounding), 2,048 rows at a time.
    """
    from .backend import namespace, to_numpy

    xp = namespace(block)
    n = block.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    block = xp.reshape(block, (n, -1)) if block.ndim != 2 else block
    c = xp.asarray(np.asarray(to_numpy(centers), dtype=np.float64))
    lab = xp.asarray(np.asarray(to_numpy(labels), dtype=np.int64))
    out = []
    for s in range(0, n, 2048):
        e = min(s + 2048, n)
        diff = xp.astype(block[s:e, ...], xp.float64) * scale - xp.take(c, lab[s:e], axis=0)
        d = xp.sum(diff * diff, axis=1) if metric == "l2" else xp.sum(xp.abs(diff), axis=1)
        out.append(to_numpy(d))
    return np.concatenate(out)


def _candidates(part: dict, k: int, m: int, seed: int) -> np.ndarray:
    """Positions (sorted, unique) of the rows any cluster still needs: nearest, farthest, random."""
    idx, cl, dist = part["index"], part["cluster"], part["dist"]
    pos = [
        select_top(dist, idx, cl, k, m),
        select_top(-dist, idx, cl, k, m),
        select_top(priority(idx, seed), idx, cl, k, m),
    ]
    return np.unique(np.concatenate(pos))


def _take(part: dict, pos) -> dict:
    return {key: np.asarray(v)[pos] for key, v in part.items()}


def examples_block(block, labels, classes, centers, offset: int, k: int, m: int, seed: int,
                   scale: float, metric: str = "l2") -> dict:
    """Per-block kernel: the candidate rows (nearest, farthest, random per cluster) of one block.

    Returns a dict of NumPy arrays: ``index`` (global row), ``cluster``,
    ``cls`` (true class), ``dist`` (to the own centre), ``rows`` (raw pixels),
    at most ``3 m k`` rows.
    """
    from .backend import namespace, to_numpy

    n = block.shape[0]
    lab = np.asarray(to_numpy(labels), dtype=np.int64)
    cls = np.asarray(to_numpy(classes), dtype=np.int64)
    dist = own_distances(block, lab, centers, scale, metric)
    part = {"index": np.arange(n, dtype=np.int64) + int(offset), "cluster": lab, "cls": cls, "dist": dist}
    pos = _candidates(part, k, m, seed)
    out = _take(part, pos)
    xp = namespace(block)
    flat = xp.reshape(block, (n, -1)) if block.ndim != 2 else block
    out["rows"] = np.asarray(to_numpy(xp.take(flat, xp.asarray(pos), axis=0)))
    return out


def merge_examples(k: int, m: int, seed: int, *parts) -> dict:
    """Merge :func:`examples_block` results, keeping what the whole would keep."""
    whole = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return _take(whole, _candidates(whole, k, m, seed))


@dataclass
class Examples:
    """The chosen members of every cluster (few rows; lives on the client)."""

    index: np.ndarray  # (r,) global row in the dataset
    cluster: np.ndarray  # (r,)
    cls: np.ndarray  # (r,) true class
    dist: np.ndarray  # (r,) distance to the own centre (squared for l2)
    rows: np.ndarray  # (r, d) raw pixels
    k: int
    m: int
    seed: int

    def pick(self, kind: str, j: int) -> np.ndarray:
        """Positions of cluster ``j``'s members of one kind: nearest first, farthest first, or random order."""
        keys = {"nearest": self.dist, "farthest": -self.dist, "random": priority(self.index, self.seed)}[kind]
        sel = np.flatnonzero(self.cluster == j)
        pos = select_top(keys[sel], self.index[sel], np.zeros(len(sel)), 1, self.m)
        return sel[pos]


def gather_examples(X, labels, classes, centers, *, m: int = 8, seed: int = 0, metric: str = "l2",
                    split_every: int = 8) -> Examples:
    """For every cluster, its ``m`` nearest, ``m`` farthest and ``m`` random members.

    Distributed: :func:`examples_block` runs on every row block of ``X`` (a dask
    array ``(n, d)`` or images ``(n, h, w, c)``), partial results are merged
    ``split_every`` at a time, and one ``compute`` brings at most ``3 m k`` rows
    to the client. ``labels`` (cluster of each row) and ``classes`` may be
    dask or NumPy arrays; they are chunked like ``X``.
    """
    import dask
    import dask.array as da
    from dask import delayed

    from .kmeans import as_rows, pixel_scale

    X = as_rows(X)
    rows = (X.chunks[0],)
    labels = (labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels), chunks=rows)).rechunk(rows)
    classes = (classes if isinstance(classes, da.Array) else da.from_array(np.asarray(classes), chunks=rows)).rechunk(rows)
    centers = np.asarray(centers, dtype=np.float64)
    k = centers.shape[0]
    scale = pixel_scale(X.dtype)
    offsets = np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(np.int64)
    parts = [
        delayed(examples_block)(b, lb, cb, centers, int(off), k, m, seed, scale, metric)
        for b, lb, cb, off in zip(
            X.to_delayed(optimize_graph=True).ravel(),
            labels.to_delayed(optimize_graph=True).ravel(),
            classes.to_delayed(optimize_graph=True).ravel(),
            offsets[:-1],
        )
    ]
    split_every = max(2, int(split_every))
    while len(parts) > 1:
        parts = [delayed(merge_examples)(k, m, seed, *parts[i: i + split_every]) for i in range(0, len(parts), split_every)]
    res = dask.compute(parts[0])[0]
    return Examples(res["index"], res["cluster"], res["cls"], res["dist"], res["rows"], k, m, seed)


# --------------------------------------------------------------------------- #
# Image grids and figures (pure: arrays in, PNG bytes out)
# --------------------------------------------------------------------------- #
def to_images(rows, shape=(32, 32, 3)) -> np.ndarray:
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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def _figure(width, height, dpi=100):
    from matplotlib.figure import Figure  # no pyplot: no global backend, thread-safe

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _cluster_label(j, class_names, majority, purity) -> str:
    if majority is None or majority[j] is None or majority[j] < 0:
        return f"{j}: (empty)"
    p = purity[j] if purity is not None else None
    return f"{j}: {class_names[majority[j]]}" + (f" {p:.0%}" if p is not None else "")


def fig_centroids(centers, class_names, majority, purity, *, shape=(32, 32, 3), ncols: int = 10) -> bytes:
    """The k centres as images, each titled ``j: majority-class purity``."""
    imgs = to_images(centers, shape)
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
    fig.suptitle("cluster centres (majority class, purity)", fontsize=10)
    return _png(fig)


def _frames(cls, majority_j):
    return [None if majority_j is None or majority_j < 0 else (_GREEN if c == majority_j else _RED) for c in cls]


def fig_examples(ex: Examples, kind: str, class_names, majority, purity, *, shape=(32, 32, 3),
                 sizes=None) -> bytes:
    """One row per cluster of its members of one kind (random, nearest or farthest)."""
    k, m = ex.k, ex.m
    tiles, frames = [], []
    blank = np.full(shape, 255, np.uint8)
    for j in range(k):
        pos = ex.pick(kind, j)
        imgs = to_images(ex.rows[pos], shape) if len(pos) else np.zeros((0, *shape), np.uint8)
        maj = majority[j] if majority is not None else None
        fr = _frames(ex.cls[pos], maj)
        for i in range(m):
            tiles.append(imgs[i] if i < len(pos) else blank)
            frames.append(fr[i] if i < len(pos) else None)
    up, pad = 2, 3
    grid = image_grid(np.stack(tiles), m, pad=pad, upscale=up, borders=frames, nrows=k)
    th = shape[0] * up + 2 * pad
    labels = [_cluster_label(j, class_names, majority, purity) for j in range(k)]
    if sizes is not None:
        labels = [f"{lab} (n={sizes[j]})" for j, lab in enumerate(labels)]
    # Fixed layout, one grid pixel = one output pixel: left margin sized for the labels.
    from matplotlib.figure import Figure

    dpi = 100
    left = 0.25 + 0.065 * max(len(lab) for lab in labels)
    top, bottom = 0.5, 0.05
    gw, gh = grid.shape[1] / dpi, grid.shape[0] / dpi
    fig = Figure(figsize=(left + gw + 0.15, top + gh + bottom), dpi=dpi)
    W, H = fig.get_size_inches()
    ax = fig.add_axes((left / W, bottom / H, gw / W, gh / H))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([j * th + th / 2 for j in range(k)])
    ax.set_yticklabels(labels, fontsize=8)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_title(f"{_KIND_TITLE[kind]} of each cluster\n(green frame: the majority class, red: another class)",
                 fontsize=9)
    return _png(fig)


def fig_cluster(ex: Examples, j: int, center, class_names, majority, purity, *, shape=(32, 32, 3),
                size=None, metric="l2") -> bytes:
    """One cluster: its centre, then random, nearest and farthest members with their classes.

    Drawn as one mosaic (one image, text on top): fast even for many clusters.
    """
    from matplotlib.figure import Figure

    m, up, pad, cap = ex.m, 3, 3, 30
    tile = shape[0] * up + 2 * pad
    cw = tile + 6  # cell width: tile and a gap
    maj = majority[j] if majority is not None else None
    width = (m + 1) * cw
    height = 3 * (cap + tile)
    canvas = np.full((height, width, 3), 255, np.uint8)
    texts = []  # (x, y, text, rgb)
    cimg = to_images(np.asarray(center)[None], shape)[0]
    dname = "d²" if metric == "l2" else "d₁"
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
            name = class_names[cl] if 0 <= cl < len(class_names) else str(cl)
            label = name if kind == "random" else f"{name}\n{dname} {ex.dist[pos[i]]:.1f}"
            texts.append((x0 + tile / 2, y0 - 4, label, colour))
    dpi = 100
    left, top = 0.3, 0.35
    fig = Figure(figsize=(left + width / dpi + 0.1, top + height / dpi + 0.05), dpi=dpi)
    W, H = fig.get_size_inches()
    ax = fig.add_axes((left / W, 0.05 / H, width / dpi / W, height / dpi / H))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([r * (cap + tile) + cap + tile / 2 for r in range(3)])
    ax.set_yticklabels(["random members", "nearest", "farthest"], fontsize=8, rotation=90, va="center")
    ax.tick_params(length=0)
    for sp in ax.spines.values():
        sp.set_visible(False)
    for x, y, text, rgb in texts:
        ax.text(x, y, text, ha="center", va="bottom", fontsize=7, color=np.array(rgb) / 255, linespacing=1.0)
    head = _cluster_label(j, class_names, majority, purity)
    ax.set_title(f"cluster {head}" + (f", {size} images" if size is not None else ""), fontsize=10)
    return _png(fig)


def fig_contingency(table, class_names, *, title="cluster x class counts") -> bytes:
    """Heatmap of the (k, C) table: colour = share of the cluster, numbers = counts."""
    t = np.asarray(table, dtype=np.int64)
    k, C = t.shape
    sizes = t.sum(axis=1)
    share = np.divide(t, np.maximum(sizes, 1)[:, None], dtype=np.float64)
    fig = _figure(1.6 + 0.62 * C, 1.4 + 0.36 * k)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=max(float(share.max()), 1e-9), aspect="auto")
    ax.set_xticks(range(C))
    ax.set_xticklabels(class_names[:C], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k))
    maj = t.argmax(axis=1)
    ax.set_yticklabels([f"{j} ({class_names[maj[j]]})" if sizes[j] else f"{j} (empty)" for j in range(k)],
                       fontsize=8)
    ax.set_xlabel("true class")
    ax.set_ylabel("cluster (majority class)")
    if k * C <= 600:
        hi = share.max() or 1
        for i in range(k):
            for c in range(C):
                ax.text(c, i, str(t[i, c]), ha="center", va="center", fontsize=7,
                        color="white" if share[i, c] > 0.6 * hi else "black")
    fig.colorbar(im, ax=ax, label="share of the cluster", shrink=0.8)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def fig_convergence(history) -> bytes:
    """Inertia and labels changed per iteration."""
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
    return _png(fig)


def thumbnail(image, upscale: int = 2) -> bytes:
    """A small PNG of one uint8 image (for the HTML table)."""
    from PIL import Image

    img = np.asarray(image).repeat(upscale, axis=0).repeat(upscale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# HTML
# --------------------------------------------------------------------------- #
_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;max-width:1150px;color:#222;
padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;vertical-align:middle}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em;margin:.8em 0;font-size:.92em}
.muted{color:#666;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
img.thumb{image-rendering:pixelated;width:48px;height:48px;vertical-align:middle}
details{margin:.4em 0}summary{cursor:pointer;font-weight:600}
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x, digits=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}f}" if math.isfinite(x) else "-"
    return _esc(x)


def _table(header, rows, left=1) -> str:
    """An HTML table of pre-escaped cells; ``left``: the first n columns, or a set of columns, left-aligned.

    ``header`` None: no header row.
    """
    is_left = (lambda i: i < left) if isinstance(left, int) else (lambda i: i in left)
    head = ""
    if header is not None:
        h = "".join(f'<th class="l">{c}</th>' if is_left(i) else f"<th>{c}</th>" for i, c in enumerate(header))
        head = f"<thead><tr>{h}</tr></thead>"
    body = "".join(
        "<tr>" + "".join(f'<td class="l">{c}</td>' if is_left(i) else f"<td>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _figure_html(png: bytes, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}" alt="{_esc(alt)}">{cap}</figure>'


def metrics_table(report: dict) -> str:
    """Headline metrics: this run (train), held-out split, scikit-learn, published baseline."""
    cols = [("this run" + (f" ({report.get('data', {}).get('split', '')})" if report.get("data") else ""),
             report.get("metrics") or {})]
    ev = report.get("eval")
    if ev:
        cols.append((f"held-out {ev['split']} (train mapping)", ev["metrics"]))
    cmp_ = report.get("compare")
    if cmp_:
        cols.append(("scikit-learn, same init", cmp_["sklearn"]["metrics"]))
    header = ["metric"] + [_esc(c[0]) for c in cols] + ["published baseline (k=10)"]
    rows = []
    for key, label in HEADLINE:
        rows.append([_esc(label)] + [_num(c[1].get(key)) for c in cols] + [_num(BASELINE.get(key), 3)])
    return _table(header, rows)


def _settings_table(report: dict) -> str:
    s = report.get("settings") or {}
    rows = [[_esc(k), _esc("-" if v is None else v)] for k, v in s.items()]
    return _table(["setting", "value"], rows, left=2)


def _run_table(report: dict) -> str:
    sched = report.get("scheduler") or {}
    items = [
        ("images", _num(report.get("n_samples"))),
        ("features", _num(report.get("n_features"))),
        ("k", _num(report.get("k"))),
        ("iterations", f"{report.get('n_iter')} ({'converged' if report.get('converged') else 'max-iter reached'})"),
        ("inertia", _num(report.get("inertia"), 2)),
        ("fit time", f"{report.get('fit_seconds', 0):.1f} s"),
        ("total time", f"{report.get('seconds', 0):.1f} s"),
        ("backend", _esc(report.get("backend", "-"))),
        ("scheduler", _esc(sched.get("kind", "-"))),
        ("dashboard", _esc(sched.get("dashboard") or "-")),
        ("data", _esc((report.get("data") or {}).get("source", "-"))),
        ("empty clusters", _num((report.get("metrics") or {}).get("empty_clusters"))),
        ("size imbalance (largest / smallest)", _num((report.get("metrics") or {}).get("size_imbalance"), 2)),
        ("original notebook's impurity (sum over clusters, not 1 - purity)", _num(report.get("notebook_impurity"))),
        ("daskmeans", _esc(report.get("daskmeans_version", "-"))),
    ]
    return _table(None, [[_esc(a), b] for a, b in items], left=1)


def cluster_table(report: dict, thumbs=None) -> str:
    """Per-cluster rows: centre, size, majority class, purity, matched class, top classes, held-out figures."""
    names = report["class_names"]
    t = np.asarray(report["contingency"], dtype=np.int64)
    m = report.get("metrics") or {}
    matching = m.get("matching") or [-1] * len(t)
    ev = report.get("eval")
    et = np.asarray(ev["contingency"], dtype=np.int64) if ev else None
    header = ["cluster"] + (["centre"] if thumbs else []) + ["size", "majority class", "purity", "matched class",
                                                             "top classes"]
    if ev:
        header += [f"{_esc(ev['split'])} size", f"{_esc(ev['split'])} share of the majority class"]
    rows = []
    for j, row in enumerate(t):
        size = int(row.sum())
        top = np.argsort(-row, kind="stable")[:3]
        tops = ", ".join(f"{_esc(names[c])} {row[c] / size:.0%}" for c in top if row[c]) if size else "-"
        maj = _esc(names[int(row.argmax())]) if size else "(empty)"
        r = [str(j)]
        if thumbs:
            r.append(f'<img class="thumb" src="{data_uri(thumbs[j])}" alt="centre {j}">')
        r += [_num(size), maj, f"{row.max() / size:.1%}" if size else "-",
              _esc(names[matching[j]]) if matching[j] >= 0 else "-", tops]
        if ev:
            es = int(et[j].sum())
            r += [_num(es), f"{et[j, int(row.argmax())] / es:.1%}" if es and size else "-"]
        rows.append(r)
    first = 2 if thumbs else 1
    return _table(header, rows, left={0, first + 1, first + 3, first + 4})


def _compare_html(cmp_: dict) -> str:
    dk, sk = cmp_["daskmeans"], cmp_["sklearn"]
    rows = [
        ["iterations", _num(dk["n_iter"]), _num(sk["n_iter"])],
        ["converged", _num(dk["converged"]), _num(sk["converged"])],
        ["inertia", _num(dk["inertia"], 2), _num(sk["inertia"], 2)],
        ["time (Lloyd iterations)", f"{dk['seconds']:.2f} s", f"{sk['seconds']:.2f} s"],
    ]
    for key, label in HEADLINE:
        rows.append([_esc(label), _num(dk["metrics"].get(key)), _num(sk["metrics"].get(key))])
    agree = (
        f"<p>Agreement of the two labelings: ARI <b>{cmp_['agreement_ari']:.6f}</b>, "
        f"{cmp_['same_labels']:.4%} of the images get the same cluster; largest centre difference "
        f"{cmp_['max_center_diff']:.2e} (pixel scale [0, 1]).</p>"
    )
    return (
        _table(["", "daskmeans", f"scikit-learn {_esc(cmp_.get('sklearn_version', ''))}"], rows)
        + agree
        + f'<p class="muted">{_esc(cmp_.get("note", ""))}</p>'
    )


def html_page(report: dict, figures: list, *, per_cluster: list | None = None, thumbs=None) -> str:
    """The whole report as one self-contained HTML string.

    ``figures``: list of ``(section title, png bytes, caption)``; ``per_cluster``:
    list of ``(cluster id, png bytes)``; ``thumbs``: per-cluster centre PNGs for
    the table. Every image is embedded as a ``data:`` URI; nothing is fetched.
    """
    data = report.get("data") or {}
    title = f"daskmeans: k = {report.get('k')} on {report.get('n_samples')} CIFAR-10 images ({data.get('split', '?')})"
    when = report.get("finished") or _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">written {_esc(when)} by daskmeans {_esc(report.get("daskmeans_version", ""))}; '
        f"data {_esc(data.get('source', '-'))}</p>",
        "<h2>Metrics</h2>",
        metrics_table(report),
        f'<div class="note"><b>Baseline:</b> {_esc(BASELINE["method"])}, matched accuracy '
        f'{BASELINE["matched_accuracy"]}, NMI {BASELINE["nmi"]}, ARI {BASELINE["ari"]} '
        f'({_esc(BASELINE["reference"])}; {_esc(BASELINE["data"])}). {_esc(data_caveat(report))}</div>',
        '<p class="muted">Purity: share of images in their cluster\'s majority class (several clusters may share a '
        "class). Matched accuracy: share of images in the class matched to their cluster one-to-one (Hungarian "
        "method). NMI, ARI, homogeneity, completeness, V-measure: standard definitions (scikit-learn's). "
        "Held-out columns assign the held-out images to the trained centres and map clusters to classes with the "
        "mapping learned on the training images (majority class for purity, Hungarian matching for matched "
        "accuracy).</p>",
    ]
    ev = report.get("eval")
    if ev:
        em = ev["metrics"]
        parts.append(
            f'<p class="muted">Held-out {_esc(ev["split"])}, with a mapping refitted on the held-out images '
            f"themselves (optimistic): purity {_num(em.get('purity_refit'))}, matched accuracy "
            f"{_num(em.get('matched_accuracy_refit'))}.</p>"
        )
    parts += ["<h2>Run</h2>", _run_table(report), "<h2>Per cluster</h2>", cluster_table(report, thumbs)]
    cmp_ = report.get("compare")
    if cmp_:
        parts += ["<h2>daskmeans vs scikit-learn</h2>", _compare_html(cmp_)]
    for section, png, caption in figures:
        parts += [f"<h2>{_esc(section)}</h2>", _figure_html(png, section, caption)]
    if per_cluster:
        parts.append("<h2>Each cluster</h2>")
        for j, png in per_cluster:
            parts.append(_figure_html(png, f"cluster {j}"))
    parts += ["<h2>Settings</h2>", _settings_table(report), "</body></html>"]
    return "\n".join(parts)


# --------------------------------------------------------------------------- #
# The entry point called by run()
# --------------------------------------------------------------------------- #
def write_extras(path, report: dict, km, ds, *, m: int = 8, max_cluster_pages: int = 100) -> list[Path]:
    """Write the figures (PNG) and ``report.html`` into the run folder ``path``.

    ``km``: the fitted :class:`~daskmeans.estimator.KMeans`; ``ds``: the
    :class:`~daskmeans.data.Dataset` it was fitted on. Cluster labels are read
    from ``path/labels.npy`` (written just before) when present, so this works
    after the run's cluster is closed. Returns the files written.
    """
    from .metrics import notebook_impurity

    t0 = time.perf_counter()
    path = Path(path)
    names = list(report.get("class_names") or ds.class_names)
    metrics = report.get("metrics") or {}
    table = np.asarray(report["contingency"], dtype=np.int64)
    majority = metrics.get("majority_class") or [int(r.argmax()) if r.sum() else -1 for r in table]
    purity = metrics.get("cluster_purity")
    sizes = [int(s) for s in table.sum(axis=1)]
    centers = np.asarray(km.cluster_centers_, dtype=np.float64)
    shape = tuple(ds.images.shape[1:]) if getattr(ds, "images", None) is not None else (32, 32, 3)
    report.setdefault("notebook_impurity", notebook_impurity(table))
    metric = getattr(km, "metric", "l2")
    written = []

    failed = []

    def save(name, draw):
        """Draw and write one figure; a failure is logged and skipped, never fatal to the run."""
        try:
            png = draw()
        except Exception as e:  # the run's results are already written: a figure must not lose them
            failed.append(name)
            logger.warning("could not draw %s (%s: %s); the other outputs are unaffected", name,
                           type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        p = path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png)
        written.append(p)
        return png

    def add(section, png, caption):
        if png is not None:
            figures.append((section, png, caption))

    logger.info("writing figures and report.html (%d clusters, %d examples each)", len(centers), m)
    figures = []
    add("Convergence", save("convergence.png", lambda: fig_convergence(report.get("history") or km.history_)),
        "Inertia (sum of squared distances to the centres used in the iteration) and number of images that "
        "changed cluster, per iteration.")
    add("Cluster centres", save("centroids.png", lambda: fig_centroids(centers, names, majority, purity, shape=shape)),
        "Each centre shown as an image, titled with its majority class and the share of its images in that class.")
    add("Cluster x class table",
        save("contingency.png", lambda: fig_contingency(table, names, title=f"cluster x class, {ds.split} split")),
        "Counts per cluster and true class; colour = share of the cluster.")
    ev = report.get("eval")
    if ev:
        add(f"Cluster x class table, held-out {ev['split']}",
            save(f"contingency-{ev['split']}.png", lambda: fig_contingency(
                ev["contingency"], names, title=f"held-out {ev['split']} split, trained centres")),
            "The held-out images assigned to the trained centres.")

    def examples():
        labels_file = path / "labels.npy"
        labels = np.load(labels_file) if labels_file.is_file() else km.labels_
        t1 = time.perf_counter()
        seed = int((report.get("settings") or {}).get("seed", 0))
        ex = gather_examples(ds.flat(), labels, ds.labels, centers, m=m, seed=seed, metric=metric)
        logger.info("gathered %d example images from %d chunks in %.1f s", len(ex.index), ds.images.numblocks[0],
                    time.perf_counter() - t1)
        return ex

    ex = None
    try:
        ex = examples()
    except Exception as e:
        failed.append("examples")
        logger.warning("could not gather example images (%s: %s); no member pictures", type(e).__name__,
                       str(e).splitlines()[0] if str(e) else "")
    per_cluster = []
    if ex is not None:
        for kind, fname in (("random", "samples.png"), ("nearest", "nearest.png"), ("farthest", "farthest.png")):
            add(f"Members: {_KIND_TITLE[kind]}",
                save(fname, lambda kind=kind: fig_examples(ex, kind, names, majority, purity, shape=shape, sizes=sizes)),
                f"{m} {_KIND_TITLE[kind]} per cluster; frame green = the cluster's majority class.")
        for j in range(min(len(centers), max_cluster_pages)):
            png = save(f"clusters/cluster-{j:02d}.png", lambda j=j: fig_cluster(
                ex, j, centers[j], names, majority, purity, shape=shape, size=sizes[j], metric=metric))
            if png is not None:
                per_cluster.append((j, png))
        if len(centers) > max_cluster_pages:
            logger.info("per-cluster pictures written for the first %d of %d clusters", max_cluster_pages, len(centers))
    thumbs = [thumbnail(img) for img in to_images(centers, shape)]
    page = html_page(report, figures, per_cluster=per_cluster, thumbs=thumbs)
    p = path / "report.html"
    p.write_text(page, encoding="utf-8")
    written.append(p)
    logger.info("wrote %d figures and report.html (%.0f kB) in %.1f s", len(written) - 1, p.stat().st_size / 1024,
                time.perf_counter() - t0)
    if failed:
        logger.warning("%d picture(s) could not be drawn: %s", len(failed), ", ".join(failed))
    return written


# --------------------------------------------------------------------------- #
# --compare sklearn
# --------------------------------------------------------------------------- #
def compare_sklearn(X, km, classes, n_classes: int, labels, settings) -> dict:
    """Run scikit-learn's KMeans on the same data and initial centres; compare.

    ``X``: the (n, d) dask array daskmeans was fitted on (gathered here onto the
    client: scikit-learn needs it in memory, as float64 in [0, 1]);
    ``labels``: daskmeans's labels (NumPy). Same ``init`` (``km.init_centers_``),
    ``n_init=1``, ``algorithm="lloyd"``, ``max_iter``, ``tol``.
    """
    import sklearn
    from sklearn.cluster import KMeans as SKKMeans

    from .backend import to_numpy
    from .kmeans import pixel_scale
    from .metrics import contingency, scores

    n, d = X.shape
    logger.info("--compare sklearn: gathering %d x %d pixels on the client (%.0f MB as float64)", n, d,
                n * d * 8 / 1e6)
    scale = pixel_scale(X.dtype)
    Xs = np.asarray(to_numpy(X.compute()), dtype=np.float64)
    if scale != 1.0:
        Xs *= scale
    y = np.asarray(to_numpy(classes.compute() if hasattr(classes, "compute") else classes), dtype=np.int64)
    init = np.asarray(km.init_centers_, dtype=np.float64).reshape(km.n_clusters, d)
    note = ("scikit-learn ran on the same images (float64 in [0, 1]) from daskmeans's initial centres, "
            f"n_init=1, algorithm='lloyd', max_iter={settings.max_iter}, tol={settings.tol}; times are of the Lloyd "
            "iterations only (daskmeans: sum of its per-iteration times; scikit-learn: fit from the given centres).")
    if getattr(settings, "n_init", 1) > 1:
        note += " With --n-init > 1, the initial centres are those of daskmeans's last restart."
    logger.info("--compare sklearn: fitting sklearn.cluster.KMeans(n_clusters=%d, algorithm='lloyd')", km.n_clusters)
    t0 = time.perf_counter()
    sk = SKKMeans(km.n_clusters, init=init, n_init=1, algorithm="lloyd", max_iter=settings.max_iter,
                  tol=settings.tol, random_state=settings.seed).fit(Xs)
    sk_seconds = time.perf_counter() - t0
    sk_labels = sk.labels_.astype(np.int64)
    ours = np.asarray(labels, dtype=np.int64)
    sk_metrics = scores(contingency(sk_labels, y, km.n_clusters, n_classes))
    agreement = scores(contingency(ours, sk_labels, km.n_clusters, km.n_clusters))
    sk_converged = bool(sk.n_iter_ < settings.max_iter)  # scikit-learn does not say; n_iter < max_iter
    out = {
        "method": "sklearn",
        "sklearn_version": sklearn.__version__,
        "daskmeans": {
            "n_iter": int(km.n_iter_),
            "converged": bool(km.converged_),
            "inertia": float(km.inertia_),
            "seconds": float(sum(h["seconds"] for h in km.history_)),
            "fit_seconds": float(km.fit_seconds_),
            "metrics": scores(contingency(ours, y, km.n_clusters, n_classes)),
        },
        "sklearn": {
            "n_iter": int(sk.n_iter_),
            "converged": sk_converged,
            "inertia": float(sk.inertia_),
            "seconds": sk_seconds,
            "metrics": sk_metrics,
        },
        "agreement_ari": float(agreement["ari"]),
        "agreement_nmi": float(agreement["nmi"]),
        "same_labels": float(np.mean(ours == sk_labels)) if len(ours) else 1.0,
        "max_center_diff": float(np.max(np.abs(sk.cluster_centers_ - np.asarray(km.cluster_centers_, np.float64)))),
        "note": note,
    }
    logger.info(
        "--compare sklearn: %d iterations in %.1f s (daskmeans %d in %.1f s), agreement ARI %.6f",
        sk.n_iter_, sk_seconds, km.n_iter_, out["daskmeans"]["seconds"], out["agreement_ari"],
    )
    return out
