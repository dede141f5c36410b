"""Cluster-quality scores from one cluster x class contingency table.

Cluster quality is judged against the true labels through a single small
``(k, n_classes)`` table of counts (rows = clusters, columns = classes).  The
table is built on the workers by a distributed groupby-count
(:func:`contingency`): every row block of labels is reduced to its own table by
the backend-agnostic kernel :func:`contingency_block` (NumPy, CuPy or any
array-API namespace), the partial tables are summed in a tree, and only the
final ``(k, n_classes)`` int64 table reaches the client.  Every score is then a
small function of that table (:func:`scores`), computed here with our own
formulas; scikit-learn is only the independent reference in the tests.

Conventions (they follow scikit-learn 1.9, whose functions see *labels*, so an
empty cluster -- a row of zeros -- or an absent class -- a column of zeros --
does not exist for them, and does not change any score here either):

* ``nmi`` (arithmetic normalisation): 1.0 when both labelings have exactly one
  label (or no samples at all); otherwise 0.0 when the mutual information is
  0 -- in particular when exactly one side has a single label (zero entropy).
* ``homogeneity`` = MI / H(classes), 1.0 when H(classes) = 0;
  ``completeness`` = MI / H(clusters), 1.0 when H(clusters) = 0;
  ``v_measure`` = harmonic mean, 0.0 when both are 0.  No samples: 1.0, 1.0, 1.0.
* ``ari`` = 1.0 when the two labelings put exactly the same pairs of samples
  together (e.g. both trivial: one cluster and one class, or every sample alone
  on both sides, or no samples at all).
* Logarithms are natural; MI terms below float64 epsilon are set to 0 and MI is
  clipped at 0, as in scikit-learn.
* With no samples (N = 0) the ratios ``purity``, ``matched_accuracy`` and
  ``inverse_purity`` are undefined and reported as ``None`` (JSON ``null``);
  ``size_imbalance`` and ``size_cv`` are ``None`` when no cluster is non-empty.
"""

from __future__ import annotations

import math
import operator

import dask.array as da
import numpy as np
from array_api_compat import device as _device
from scipy.optimize import linear_sum_assignment

from .backend import namespace, to_numpy

__all__ = [
    "contingency_block",
    "contingency",
    "scores",
    "majority_mapping",
    "notebook_impurity",
]

#: Rows per step of the one-hot counting fallback (array-API namespaces without bincount).
_ONEHOT_MAX_ROWS = 65_536
#: Cap on the elements of one one-hot step (rows x k*n_classes), to bound memory further.
_ONEHOT_MAX_ELEMENTS = 1 << 22


def _bincount(xp):
    """The namespace's own ``bincount`` (NumPy, CuPy), or None where the array API has none."""
    return getattr(xp, "bincount", None)


def _check_size(value, name: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _as_label_vector(x, xp, name: str):
    """Accept shape (n,) or (n, 1) integer labels; return shape (n,)."""
    if x.ndim == 2 and x.shape[1] == 1:
        x = xp.reshape(x, (-1,))
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or of shape (n, 1)), got shape {tuple(x.shape)}")
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{name} must hold integer labels, got dtype {x.dtype}")
    return x


# --------------------------------------------------------------------------- #
# Contingency table
# --------------------------------------------------------------------------- #
def contingency_block(clusters, classes, k: int, n_classes: int):
    """Count (cluster, class) pairs in one block of labels.

    Pure, backend-agnostic per-block kernel: it uses only array-API functions of
    the namespace of ``clusters`` (NumPy, CuPy, array_api_strict, ...), plus the
    native ``bincount`` of NumPy / CuPy when available, for speed.  Other
    namespaces count with a one-hot equality and a sum, over at most 65,536 rows
    (and at most 2**22 one-hot elements) at a time to bound memory.

    Parameters
    ----------
    clusters : array of shape (n,) or (n, 1), integer dtype
        Cluster index of each sample, in ``[0, k)``.  Negative values (e.g. -1 =
        unassigned) are ignored.
    classes : array of shape (n,) or (n, 1), integer dtype
        True class of each sample, in ``[0, n_classes)``, same namespace as
        ``clusters`` (any integer dtype, e.g. uint8).  Negative values are ignored.
    k : int
        Number of clusters (rows of the table).
    n_classes : int
        Number of classes (columns of the table).

    Returns
    -------
    table : array of shape (k, n_classes), int64
        ``table[i, j]`` = number of samples with cluster ``i`` and class ``j``,
        both labels non-negative.  Same namespace (and device) as ``clusters``.

    Raises
    ------
    ValueError
        On shapes that do not match, or a label ``>= k`` / ``>= n_classes``.
    TypeError
        On non-integer labels.
    """
    k = _check_size(k, "k")
    n_classes = _check_size(n_classes, "n_classes")
    xp = namespace(clusters)
    clusters = _as_label_vector(clusters, xp, "clusters")
    classes = _as_label_vector(classes, xp, "classes")
    if clusters.shape[0] != classes.shape[0]:
        raise ValueError(
            f"clusters and classes differ in length: {clusters.shape[0]} != {classes.shape[0]}"
        )
    n_cells = k * n_classes
    n = clusters.shape[0]
    if n == 0:
        return xp.zeros((k, n_classes), dtype=xp.int64, device=_device(clusters))

    # int64 first: classes may be uint8, and uint8 * n_classes would overflow.
    c = xp.astype(clusters, xp.int64)
    y = xp.astype(classes, xp.int64)
    valid = (c >= 0) & (y >= 0)
    if bool(xp.any(valid & ((c >= k) | (y >= n_classes)))):
        raise ValueError(
            f"label out of range: cluster ids must be < k={k} and class ids < n_classes={n_classes}"
        )
    flat = xp.where(valid, c * n_classes + y, xp.asarray(-1, dtype=xp.int64, device=_device(c)))

    bincount = _bincount(xp)
    if bincount is not None:
        counts = bincount(flat[valid], minlength=n_cells)
        counts = xp.astype(counts, xp.int64)
        return xp.reshape(counts, (k, n_classes))

    # Generic array-API path: one-hot equality + sum, blockwise.
    cells = xp.arange(n_cells, dtype=xp.int64, device=_device(c))
    rows = max(1, min(_ONEHOT_MAX_ROWS, _ONEHOT_MAX_ELEMENTS // n_cells))
    counts = xp.zeros((n_cells,), dtype=xp.int64, device=_device(c))
    for start in range(0, n, rows):
        part = flat[start : min(start + rows, n)]
        onehot = part[:, None] == cells[None, :]  # invalid rows (-1) match nothing
        counts = counts + xp.sum(xp.astype(onehot, xp.int64), axis=0)
    return xp.reshape(counts, (k, n_classes))


def _block_table(clusters, classes, k, n_classes):
    """map_blocks kernel: one block's table, with a leading length-1 axis."""
    table = contingency_block(clusters, classes, k, n_classes)
    return table[None, :, :]


def _dask_labels(x, name: str):
    if x.ndim == 2 and x.shape[1] == 1:
        x = x.reshape(-1)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or of shape (n, 1)), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {x.dtype}")
    if any(math.isnan(c) for c in x.chunks[0]):
        raise ValueError(
            f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first"
        )
    assert isinstance(x, da.Array)
    return x


def contingency(clusters, classes, k: int, n_classes: int, split_every: int = 8) -> np.ndarray:
    """Distributed groupby-count of (cluster, class) pairs.

    :func:`contingency_block` is mapped over aligned row blocks of the two label
    arrays (``classes`` is rechunked to the chunks of ``clusters`` when they
    differ), the per-block ``(k, n_classes)`` tables are summed in a tree of
    ``split_every`` partials per task, and the result is computed with one
    ``compute`` call (on the current scheduler: a distributed client, threads,
    or synchronous).  Only the small table travels to the client, where it is
    converted to NumPy (``cupy.asnumpy`` for CuPy blocks).

    Parameters
    ----------
    clusters : dask.array.Array or array of shape (n,) or (n, 1), integer dtype
        Cluster index of each sample in ``[0, k)``; negative values are ignored.
        Blocks may be NumPy or CuPy.  A NumPy/CuPy array is accepted too.
    classes : dask.array.Array or array of shape (n,) or (n, 1), integer dtype
        True class of each sample in ``[0, n_classes)``; negative values are
        ignored.  May be chunked differently from ``clusters``.
    k : int
        Number of clusters.
    n_classes : int
        Number of classes.
    split_every : int, default 8
        Number of partial tables summed per task of the reduction tree (>= 2).

    Returns
    -------
    table : numpy.ndarray of shape (k, n_classes), int64
        Counts; rows = clusters, columns = classes.

    Raises
    ------
    ValueError
        Lengths that differ, unknown chunk sizes, labels out of range.
    TypeError
        Non-integer labels.
    """
    k = _check_size(k, "k")
    n_classes = _check_size(n_classes, "n_classes")
    split_every = operator.index(split_every)
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")

    if not isinstance(clusters, da.Array) and not isinstance(classes, da.Array):
        return to_numpy(contingency_block(clusters, classes, k, n_classes)).astype(
            np.int64, copy=False
        )
    return _dask_contingency(da.asarray(clusters), da.asarray(classes), k, n_classes, split_every)


def _dask_contingency(clusters, classes, k: int, n_classes: int, split_every: int) -> np.ndarray:
    """:func:`contingency` on two dask label arrays: per-block tables summed in a tree, one compute."""
    clusters = _dask_labels(clusters, "clusters")
    classes = _dask_labels(classes, "classes")
    if clusters.shape[0] != classes.shape[0]:
        raise ValueError(
            f"clusters and classes differ in length: {clusters.shape[0]} != {classes.shape[0]}"
        )
    if classes.chunks != clusters.chunks:
        classes = classes.rechunk(clusters.chunks)
    nblocks = clusters.numblocks[0]
    meta = np.empty_like(clusters._meta, shape=(0, 0, 0), dtype=np.int64)
    partial = da.map_blocks(
        _block_table,
        clusters,
        classes,
        k,
        n_classes,
        new_axis=[1, 2],
        chunks=((1,) * nblocks, (k,), (n_classes,)),
        dtype=np.int64,
        meta=meta,
        token="contingency-block",
    )
    table = partial.sum(axis=0, dtype=np.int64, split_every=split_every)
    result = table.compute()
    return to_numpy(result).astype(np.int64, copy=False).reshape(k, n_classes)


# --------------------------------------------------------------------------- #
# Scores
# --------------------------------------------------------------------------- #
def _as_table(table) -> np.ndarray:
    """Validate a contingency table: 2-D, non-negative integer counts -> int64 NumPy."""
    t = np.asarray(to_numpy(table))
    if t.ndim != 2:
        raise ValueError(f"contingency table must be 2-D (clusters x classes), got shape {t.shape}")
    if t.dtype == bool or not (np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise TypeError(f"contingency table must hold counts, got dtype {t.dtype}")
    if np.issubdtype(t.dtype, np.floating):
        if not np.all(np.isfinite(t)) or np.any(t != np.round(t)):
            raise ValueError("contingency table must hold whole counts")
    if np.any(t < 0):
        raise ValueError("contingency table must hold non-negative counts")
    return t.astype(np.int64, copy=False)


def _entropy(counts: np.ndarray, n: int) -> float:
    """Natural-log entropy of a labeling from its label counts (zeros ignored)."""
    nz = counts[counts > 0]
    if nz.size <= 1:
        return 0.0
    p = nz / n
    return float(-np.sum(p * (np.log(nz) - math.log(n))))


def _mutual_info(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> float:
    """Mutual information (nats) of the two labelings summarised by table ``t``."""
    if np.count_nonzero(rows) <= 1 or np.count_nonzero(cols) <= 1:
        return 0.0  # one side has zero entropy, and MI <= min(H(X), H(Y))
    i, j = np.nonzero(t)
    nij = t[i, j].astype(np.float64)
    outer = rows[i].astype(np.float64) * cols[j].astype(np.float64)
    terms = (nij / n) * (np.log(nij) - np.log(outer) + math.log(n))
    terms = np.where(np.abs(terms) < np.finfo(np.float64).eps, 0.0, terms)
    return float(max(np.sum(terms), 0.0))


def _comb2(x) -> int:
    """sum over x of C(x, 2), in exact Python integers."""
    return sum(int(v) * (int(v) - 1) // 2 for v in np.asarray(x).ravel() if v > 1)


def _ari(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> float:
    """Adjusted Rand index from pair counts, in exact integer arithmetic.

    With S = sum C(n_ij, 2), A = sum C(a_i, 2), B = sum C(b_j, 2), P = C(N, 2):
    ARI = (S - A B / P) / ((A + B) / 2 - A B / P)
        = (2 S P - 2 A B) / ((A + B) P - 2 A B)    (all integers).
    1.0 when S = A = B (the two labelings put the same pairs together).
    """
    s, a, b = _comb2(t), _comb2(rows), _comb2(cols)
    if s == a == b:
        return 1.0
    p = n * (n - 1) // 2
    num = 2 * s * p - 2 * a * b
    den = (a + b) * p - 2 * a * b
    return num / den  # int / int: correctly rounded float


def _hungarian(t: np.ndarray) -> tuple[int, np.ndarray]:
    """Best one-to-one cluster -> class assignment on the non-empty clusters.

    Returns (matched count, matching array of shape (k,), -1 = unmatched/empty).
    """
    k = t.shape[0]
    matching = np.full(k, -1, dtype=np.int64)
    nonempty = np.flatnonzero(t.sum(axis=1) > 0)
    if nonempty.size == 0 or t.shape[1] == 0:
        return 0, matching
    sub = t[nonempty]
    r, c = linear_sum_assignment(sub, maximize=True)
    matching[nonempty[r]] = c
    return int(sub[r, c].sum()), matching


def majority_mapping(table) -> np.ndarray:
    """Majority class of each cluster.

    Parameters
    ----------
    table : array-like of shape (k, n_classes), non-negative integer counts
        Contingency table, rows = clusters, columns = classes.

    Returns
    -------
    mapping : numpy.ndarray of shape (k,), int64
        ``mapping[i]`` = the class with the most samples in cluster ``i`` (the
        lowest class index on ties), or -1 for an empty cluster.  Use it to map
        held-out cluster predictions to classes: ``mapping[pred]``.
    """
    t = _as_table(table)
    if t.shape[1] == 0:
        return np.full(t.shape[0], -1, dtype=np.int64)
    mapping = np.argmax(t, axis=1).astype(np.int64)
    mapping[t.sum(axis=1) == 0] = -1
    return mapping


def notebook_impurity(table) -> float:
    """The "impurity" that the original notebook computed -- NOT 1 - purity.

    The notebook summed, over clusters, the per-cluster impurity
    ``1 - max_j n_ij / n_i`` (the fraction of a cluster outside its majority
    class).  It is kept only for comparison with the notebook's numbers.

    It is not ``1 - purity``: ``1 - purity = sum_i (n_i / N) (1 - max_j n_ij / n_i)``
    is the *size-weighted average* of the per-cluster impurities, a fraction of
    samples in [0, 1).  The notebook's *unweighted sum* gives a 10-sample cluster
    the same weight as a 10,000-sample one, and grows with k (it ranges over
    [0, k (1 - 1/n_classes)]), so it is neither a fraction of samples nor
    comparable across k.  The two agree only when k = 1, or when every
    cluster is pure (both 0).

    Parameters
    ----------
    table : array-like of shape (k, n_classes), non-negative integer counts
        Contingency table, rows = clusters, columns = classes.

    Returns
    -------
    impurity : float
        ``sum_i (1 - max_j n_ij / n_i)`` over the non-empty clusters (an empty
        cluster, where the notebook would have divided by zero, contributes 0).
    """
    t = _as_table(table)
    sizes = t.sum(axis=1)
    nonempty = sizes > 0
    if not np.any(nonempty):
        return 0.0
    return float(np.sum(1.0 - t[nonempty].max(axis=1) / sizes[nonempty]))


def scores(table) -> dict:
    """Every cluster-quality score, from one contingency table.

    Parameters
    ----------
    table : array-like of shape (k, n_classes), non-negative integer counts
        Contingency table, rows = clusters, columns = classes (e.g. from
        :func:`contingency`).  Empty clusters (rows of zeros) and absent classes
        (columns of zeros) leave every score unchanged.

    Returns
    -------
    dict
        Plain Python values (JSON-able):

        ``n_samples`` : int
            N, the sum of the table.
        ``purity`` : float or None
            ``sum_i max_j n_ij / N``.
        ``matched_accuracy`` : float or None
            Best one-to-one cluster -> class assignment (Hungarian method,
            ``scipy.optimize.linear_sum_assignment``, rectangular when
            k != n_classes), matched count / N.
        ``nmi`` : float
            Normalised mutual information, arithmetic normalisation
            ``MI / ((H(clusters) + H(classes)) / 2)`` (scikit-learn's default).
        ``ari`` : float
            Adjusted Rand index.
        ``homogeneity``, ``completeness``, ``v_measure`` : float
            ``MI / H(classes)``, ``MI / H(clusters)`` and their harmonic mean.
        ``inverse_purity`` : float or None
            ``sum_j max_i n_ij / N`` (purity of classes w.r.t. clusters).
        ``cluster_sizes`` : list of int, length k
            Number of images in each cluster.
        ``cluster_purity`` : list of float or None, length k
            ``max_j n_ij / n_i``; None for an empty cluster.
        ``majority_class`` : list of int, length k
            See :func:`majority_mapping`; -1 for an empty cluster.
        ``empty_clusters`` : int
            Number of clusters of size 0.
        ``size_imbalance`` : float or None
            Largest / smallest size among the non-empty clusters.
        ``size_cv`` : float or None
            Coefficient of variation (population std / mean) of the sizes of
            the non-empty clusters (empty ones are counted by ``empty_clusters``).
        ``matching`` : list of int, length k
            The Hungarian assignment cluster -> class; -1 for a cluster left
            unmatched (k > n_classes) or empty.

        Degenerate cases follow scikit-learn 1.9; see the module docstring.
    """
    t = _as_table(table)
    n = int(t.sum())
    rows = t.sum(axis=1)  # cluster sizes
    cols = t.sum(axis=0)  # class sizes
    info = _information_scores(t, rows, cols, n)
    matched, matching = _hungarian(t)
    if n:
        purity = float(t.max(axis=1).sum() / n) if t.shape[1] else 0.0
        inverse_purity = float(t.max(axis=0).sum() / n) if t.shape[0] else 0.0
        matched_accuracy = matched / n
    else:
        purity = inverse_purity = matched_accuracy = None
    return {
        "n_samples": n,
        "purity": purity,
        "matched_accuracy": matched_accuracy,
        "nmi": info["nmi"],
        "ari": float(_ari(t, rows, cols, n)),
        "homogeneity": info["homogeneity"],
        "completeness": info["completeness"],
        "v_measure": info["v_measure"],
        "inverse_purity": inverse_purity,
        **_size_scores(t, rows),
        "matching": [int(c) for c in matching],
    }


def _information_scores(t: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int) -> dict:
    """NMI, homogeneity, completeness, V-measure (labels_true = classes, labels_pred = clusters)."""
    h_classes = _entropy(cols, n)
    h_clusters = _entropy(rows, n)
    mi = _mutual_info(t, rows, cols, n) if n else 0.0
    if n == 0 or np.count_nonzero(rows) == np.count_nonzero(cols) == 1:
        nmi = 1.0
    elif mi == 0.0:
        nmi = 0.0
    else:
        nmi = mi / ((h_classes + h_clusters) / 2.0)
    if n == 0:
        homogeneity = completeness = v_measure = 1.0
    else:
        homogeneity = mi / h_classes if h_classes else 1.0
        completeness = mi / h_clusters if h_clusters else 1.0
        if homogeneity + completeness == 0.0:
            v_measure = 0.0
        else:
            v_measure = 2.0 * homogeneity * completeness / (homogeneity + completeness)
    return {"nmi": float(nmi), "homogeneity": float(homogeneity), "completeness": float(completeness),
            "v_measure": float(v_measure)}


def _size_scores(t: np.ndarray, rows: np.ndarray) -> dict:
    """Per-cluster sizes, purity and majority class, and how unbalanced the sizes are."""
    k = t.shape[0]
    nonempty = rows > 0
    if t.shape[1]:
        cluster_purity = [float(t[i].max() / rows[i]) if nonempty[i] else None for i in range(k)]
    else:
        cluster_purity = [None] * k
    sizes_ne = rows[nonempty].astype(np.float64)
    if sizes_ne.size:
        size_imbalance = float(sizes_ne.max() / sizes_ne.min())
        size_cv = float(sizes_ne.std() / sizes_ne.mean())
    else:
        size_imbalance = size_cv = None
    return {
        "cluster_sizes": [int(s) for s in rows],
        "cluster_purity": cluster_purity,
        "majority_class": [int(c) for c in majority_mapping(t)],
        "empty_clusters": int(k - np.count_nonzero(rows)),
        "size_imbalance": size_imbalance,
        "size_cv": size_cv,
    }
