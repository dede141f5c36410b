"""Tests for daskmeans.metrics: scores vs scikit-learn, edge cases, distributed contingency."""

from __future__ import annotations

import itertools
import json
import math

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.metrics import (
    adjusted_rand_score,
    homogeneity_completeness_v_measure,
    normalized_mutual_info_score,
)

from daskmeans import metrics
from daskmeans.metrics import (
    contingency,
    contingency_block,
    majority_mapping,
    notebook_impurity,
    scores,
)

approx = lambda x: pytest.approx(x, abs=1e-9)  # noqa: E731

SCALARS = (
    "n_samples",
    "purity",
    "matched_accuracy",
    "nmi",
    "ari",
    "homogeneity",
    "completeness",
    "v_measure",
    "inverse_purity",
    "empty_clusters",
    "size_imbalance",
    "size_cv",
)
TABLE_SCORES = (
    "n_samples",
    "purity",
    "matched_accuracy",
    "nmi",
    "ari",
    "homogeneity",
    "completeness",
    "v_measure",
    "inverse_purity",
    "size_imbalance",
    "size_cv",
)


# --------------------------------------------------------------------------- #
# Independent references (written here, not taken from the module)
# --------------------------------------------------------------------------- #
def serial_table(clusters, classes, k, n_classes):
    """Serial count with np.add.at, ignoring negative labels."""
    clusters = np.asarray(clusters).ravel().astype(np.int64)
    classes = np.asarray(classes).ravel().astype(np.int64)
    keep = (clusters >= 0) & (classes >= 0)
    t = np.zeros((k, n_classes), dtype=np.int64)
    np.add.at(t, (clusters[keep], classes[keep]), 1)
    return t


def labels_from_table(t):
    """Expand a table back into (clusters, classes) label vectors."""
    t = np.asarray(t)
    i, j = np.nonzero(t)
    reps = t[i, j]
    return np.repeat(i, reps), np.repeat(j, reps)


def purity_direct(clusters, classes):
    """Purity by definition: each cluster votes for its most common class."""
    total = 0
    for c in np.unique(clusters):
        members = classes[clusters == c]
        total += np.bincount(members).max()
    return total / len(clusters)


def matched_accuracy_brute(t):
    """Best one-to-one cluster<->class assignment by brute force over permutations."""
    t = np.asarray(t)
    k, C = t.shape
    assert math.perm(max(k, C), min(k, C)) <= 50_000, "table too large for brute force"
    best = 0
    if k <= C:
        for perm in itertools.permutations(range(C), k):
            best = max(best, sum(t[i, perm[i]] for i in range(k)))
    else:
        for perm in itertools.permutations(range(k), C):
            best = max(best, sum(t[perm[j], j] for j in range(C)))
    return best / t.sum()


def check_against_references(t):
    """Compare every score of table t with sklearn / direct definitions."""
    t = np.asarray(t)
    s = scores(t)
    clusters, classes = labels_from_table(t)
    assert s["n_samples"] == len(clusters)
    assert s["nmi"] == approx(normalized_mutual_info_score(classes, clusters))
    assert s["ari"] == approx(adjusted_rand_score(classes, clusters))
    h, c, v = homogeneity_completeness_v_measure(classes, clusters)
    assert s["homogeneity"] == approx(h)
    assert s["completeness"] == approx(c)
    assert s["v_measure"] == approx(v)
    assert s["purity"] == approx(purity_direct(clusters, classes))
    assert s["inverse_purity"] == approx(purity_direct(classes, clusters))
    assert s["matched_accuracy"] == approx(matched_accuracy_brute(t))
    # The reported matching realises the matched accuracy, and is one-to-one.
    m = [(i, j) for i, j in enumerate(s["matching"]) if j >= 0]
    assert len({j for _, j in m}) == len(m)
    assert sum(t[i, j] for i, j in m) / t.sum() == approx(s["matched_accuracy"])
    json.dumps(s, allow_nan=False)  # JSON-able, no NaN
    return s


# --------------------------------------------------------------------------- #
# Scores vs sklearn on random labelings
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k,C", [(2, 5), (3, 6), (4, 4), (5, 5), (6, 3), (5, 2), (1, 3), (3, 1)])
def test_scores_match_sklearn_random(seed, k, C):
    rng = np.random.default_rng(seed * 100 + k * 10 + C)
    n = int(rng.integers(20, 200))
    # Partially informative labels: classes correlate with clusters.
    clusters = rng.integers(0, k, n)
    noise = rng.random(n) < 0.5
    classes = np.where(noise, rng.integers(0, C, n), clusters % C)
    t = serial_table(clusters, classes, k, C)
    check_against_references(t)


@pytest.mark.parametrize("seed", range(4))
def test_scores_match_sklearn_sparse_tables(seed):
    """Tables with many zero cells, absent classes and empty clusters."""
    rng = np.random.default_rng(1000 + seed)
    k, C = int(rng.integers(2, 7)), int(rng.integers(2, 7))
    t = rng.integers(0, 5, (k, C)) * (rng.random((k, C)) < 0.4)
    if t.sum() == 0:
        t[0, 0] = 3
    check_against_references(t)


# --------------------------------------------------------------------------- #
# Hand-computed cases
# --------------------------------------------------------------------------- #
def test_hand_computed_two_by_two():
    # rows = clusters, cols = classes;  N = 6, cluster sizes a = (4, 2), class sizes b = (3, 3)
    t = np.array([[3, 1], [0, 2]])
    s = check_against_references(t)
    # purity: (max(3,1) + max(0,2)) / 6 = (3 + 2) / 6 = 5/6
    assert s["purity"] == approx(5 / 6)
    # inverse purity: (max(3,0) + max(1,2)) / 6 = 5/6
    assert s["inverse_purity"] == approx(5 / 6)
    # Hungarian: cluster0->class0 (3) + cluster1->class1 (2) = 5 -> 5/6
    assert s["matched_accuracy"] == approx(5 / 6)
    assert s["matching"] == [0, 1]
    # ARI: S = C(3,2)+C(2,2) = 3+1 = 4; A = C(4,2)+C(2,2) = 7; B = C(3,2)+C(3,2) = 6; P = C(6,2) = 15
    # ARI = (S - A*B/P) / ((A+B)/2 - A*B/P) = (4 - 2.8) / (6.5 - 2.8) = 1.2 / 3.7 = 12/37
    assert s["ari"] == approx(12 / 37)
    # MI = 3/6 ln(6*3/(4*3)) + 1/6 ln(6*1/(4*3)) + 2/6 ln(6*2/(2*3))
    #    = 1/2 ln(3/2) - 1/6 ln 2 + 1/3 ln 2 = 1/2 ln 3 - 1/3 ln 2
    mi = 0.5 * math.log(3) - math.log(2) / 3
    h_classes = math.log(2)  # (3, 3)
    h_clusters = math.log(3) - 2 / 3 * math.log(2)  # -(2/3 ln 2/3 + 1/3 ln 1/3)
    assert s["homogeneity"] == approx(mi / h_classes)  # = 1/2 log2(3) - 1/3 ~ 0.45915
    assert s["homogeneity"] == approx(0.5 * math.log2(3) - 1 / 3)
    assert s["completeness"] == approx(mi / h_clusters)
    hom, com = mi / h_classes, mi / h_clusters
    assert s["v_measure"] == approx(2 * hom * com / (hom + com))
    assert s["nmi"] == approx(mi / ((h_classes + h_clusters) / 2))
    assert s["cluster_sizes"] == [4, 2]
    assert s["cluster_purity"] == [approx(3 / 4), approx(1.0)]
    assert s["majority_class"] == [0, 1]
    assert s["empty_clusters"] == 0
    assert s["size_imbalance"] == approx(2.0)  # 4 / 2
    # sizes (4, 2): mean 3, population std 1 -> cv = 1/3
    assert s["size_cv"] == approx(1 / 3)


def test_hand_computed_perfect_permuted():
    # cluster 0 is exactly class 1, cluster 1 exactly class 0: a perfect (relabelled) clustering
    t = np.array([[0, 5], [4, 0]])
    s = check_against_references(t)
    for key in ("purity", "matched_accuracy", "nmi", "ari", "homogeneity", "completeness",
                "v_measure", "inverse_purity"):
        assert s[key] == approx(1.0), key
    assert s["matching"] == [1, 0]
    assert s["majority_class"] == [1, 0]
    assert s["size_imbalance"] == approx(5 / 4)


def test_hand_computed_three_clusters_two_classes():
    # k = 3 > C = 2; N = 10; sizes (4, 3, 3); classes (5, 5)
    t = np.array([[4, 0], [1, 2], [0, 3]])
    s = check_against_references(t)
    # purity = (4 + 2 + 3) / 10 = 0.9 ; inverse purity = (max(4,1,0) + max(0,2,3)) / 10 = 0.7
    assert s["purity"] == approx(0.9)
    assert s["inverse_purity"] == approx(0.7)
    # Hungarian (only 2 classes): cluster0->class0 (4) + cluster2->class1 (3) = 7 -> 0.7
    assert s["matched_accuracy"] == approx(0.7)
    assert s["matching"] == [0, -1, 1]
    # ARI: S = C(4,2)+C(2,2)+C(3,2) = 6+1+3 = 10; A = 6+3+3 = 12; B = 10+10 = 20; P = 45
    # ARI = (10 - 240/45) / (16 - 240/45) = (14/3) / (32/3) = 7/16
    assert s["ari"] == approx(7 / 16)


def test_hand_computed_single_cluster():
    # k = 1: all 5 samples in one cluster, classes (2, 3)
    t = np.array([[2, 3]])
    s = check_against_references(t)
    assert s["purity"] == approx(3 / 5)
    assert s["matched_accuracy"] == approx(3 / 5)
    assert s["inverse_purity"] == approx(1.0)  # each class lies entirely in the one cluster
    # one cluster -> MI = 0: NMI 0, homogeneity 0, completeness 1 (H(clusters) = 0), V = 0
    assert s["nmi"] == 0.0
    assert s["homogeneity"] == 0.0
    assert s["completeness"] == 1.0
    assert s["v_measure"] == 0.0
    # ARI: S = 1 + 3 = 4, A = C(5,2) = 10, B = 1 + 3 = 4, P = 10 -> (4 - 4) / (7 - 4) = 0
    assert s["ari"] == approx(0.0)
    assert s["size_imbalance"] == 1.0 and s["size_cv"] == 0.0


def test_single_cluster_single_class():
    # both labelings trivial: sklearn's convention is perfect agreement everywhere
    s = check_against_references(np.array([[7]]))
    for key in ("purity", "matched_accuracy", "nmi", "ari", "homogeneity", "completeness",
                "v_measure", "inverse_purity"):
        assert s[key] == 1.0, key


def test_one_class_many_clusters():
    # one class split over 3 clusters: NMI 0, homogeneity 1 (H(classes) = 0), completeness 0
    s = check_against_references(np.array([[2], [3], [1]]))
    assert s["nmi"] == 0.0
    assert s["homogeneity"] == 1.0
    assert s["completeness"] == 0.0
    assert s["v_measure"] == 0.0
    assert s["purity"] == 1.0
    assert s["matched_accuracy"] == approx(3 / 6)  # only one cluster can take the class
    assert s["matching"] == [-1, 0, -1]


@pytest.mark.parametrize("C", [1, 3, 8])
def test_each_point_its_own_cluster(C):
    # k = N: every sample alone in its cluster
    rng = np.random.default_rng(C)
    n = 8
    classes = rng.integers(0, C, n) if C < n else np.arange(n)
    t = serial_table(np.arange(n), classes, n, C)
    s = check_against_references(t)
    assert s["purity"] == 1.0
    assert s["homogeneity"] == approx(1.0)
    assert s["size_imbalance"] == 1.0 and s["size_cv"] == 0.0
    if C == n:  # both labelings put every sample alone: identical partitions
        assert s["ari"] == 1.0 and s["nmi"] == approx(1.0)


def test_class_absent_from_a_cluster():
    # class 2 never appears in cluster 0, class 0 never in cluster 1
    t = np.array([[5, 2, 0], [0, 4, 3], [1, 1, 6]])
    s = check_against_references(t)
    assert s["majority_class"] == [0, 1, 2]
    assert s["matching"] == [0, 1, 2]
    assert s["matched_accuracy"] == approx((5 + 4 + 6) / 22)


def test_absent_class_column_does_not_change_scores():
    t = np.array([[5, 2], [1, 4]])
    wide = np.array([[5, 0, 2], [1, 0, 4]])  # class 1 absent entirely
    a, b = scores(t), scores(wide)
    for key in TABLE_SCORES:
        assert b[key] == approx(a[key]), key
    assert b["matching"] == [0, 2]


def test_empty_cluster_row():
    t = np.array([[5, 2, 0], [1, 6, 1], [0, 1, 7]])
    with_empty = np.insert(t, 1, 0, axis=0)  # cluster 1 is empty
    a, b = scores(t), check_against_references(with_empty)
    for key in TABLE_SCORES:
        assert b[key] == approx(a[key]), key
    assert b["empty_clusters"] == 1 and a["empty_clusters"] == 0
    assert b["cluster_sizes"] == [7, 0, 8, 8]
    assert b["cluster_purity"][1] is None
    assert b["cluster_purity"][0] == approx(5 / 7)
    assert b["majority_class"] == [0, -1, 1, 2]
    assert b["matching"][1] == -1
    assert [m for i, m in enumerate(b["matching"]) if i != 1] == a["matching"]
    assert list(majority_mapping(with_empty)) == [0, -1, 1, 2]
    assert majority_mapping(with_empty).dtype == np.int64


def test_empty_table_conventions():
    s = scores(np.zeros((3, 2), dtype=np.int64))
    assert s["n_samples"] == 0
    # sklearn: empty labelings agree perfectly
    assert normalized_mutual_info_score([], []) == 1.0 and adjusted_rand_score([], []) == 1.0
    for key in ("nmi", "ari", "homogeneity", "completeness", "v_measure"):
        assert s[key] == 1.0, key
    for key in ("purity", "matched_accuracy", "inverse_purity", "size_imbalance", "size_cv"):
        assert s[key] is None, key
    assert s["empty_clusters"] == 3
    assert s["majority_class"] == [-1, -1, -1] and s["matching"] == [-1, -1, -1]
    json.dumps(s, allow_nan=False)


def test_scores_reject_bad_tables():
    with pytest.raises(ValueError):
        scores(np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        scores(np.array([[1, -1], [0, 2]]))
    with pytest.raises(ValueError):
        scores(np.array([[1.5, 1.0], [0.0, 2.0]]))
    # whole-number floats are fine
    assert scores(np.array([[3.0, 1.0], [0.0, 2.0]]))["ari"] == approx(12 / 37)


# --------------------------------------------------------------------------- #
# Invariance
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("seed", range(5))
def test_permutation_invariance(seed):
    rng = np.random.default_rng(seed)
    k, C = int(rng.integers(2, 8)), int(rng.integers(2, 8))
    t = rng.integers(0, 20, (k, C))
    t[rng.integers(0, k)] = 0  # sometimes an empty cluster
    base = scores(t)
    pr, pc = rng.permutation(k), rng.permutation(C)
    for table, rows in ((t[pr], pr), (t[:, pc], np.arange(k)), (t[pr][:, pc], pr)):
        s = scores(table)
        for key in SCALARS:
            assert s[key] == approx(base[key]), key
        assert s["cluster_sizes"] == [base["cluster_sizes"][r] for r in rows]
        assert s["cluster_purity"] == [base["cluster_purity"][r] for r in rows]


# --------------------------------------------------------------------------- #
# notebook_impurity
# --------------------------------------------------------------------------- #
def test_notebook_impurity_hand_computed():
    t = np.array([[3, 1], [0, 2], [1, 1]])
    # per-cluster impurity: 1 - 3/4 = 0.25, 1 - 2/2 = 0, 1 - 1/2 = 0.5 ; sum = 0.75
    assert notebook_impurity(t) == approx(0.75)
    # whereas 1 - purity = 1 - (3 + 2 + 1) / 8 = 0.25 (the size-weighted average)
    assert 1 - scores(t)["purity"] == approx(0.25)
    # an empty cluster contributes nothing
    assert notebook_impurity(np.insert(t, 0, 0, axis=0)) == approx(0.75)


def test_notebook_impurity_differs_from_one_minus_purity():
    t = np.array([[3, 1], [0, 2]])
    # notebook: (1 - 3/4) + (1 - 2/2) = 0.25 ; 1 - purity = 1 - 5/6 = 1/6
    assert notebook_impurity(t) == approx(0.25)
    assert 1 - scores(t)["purity"] == approx(1 / 6)
    assert notebook_impurity(t) != approx(1 - scores(t)["purity"])
    # random tables: it is the unweighted sum, 1 - purity the size-weighted mean
    rng = np.random.default_rng(0)
    t = rng.integers(1, 30, (10, 10))
    sizes = t.sum(axis=1)
    imp = 1 - t.max(axis=1) / sizes
    assert notebook_impurity(t) == approx(imp.sum())
    assert 1 - scores(t)["purity"] == approx(np.sum(sizes / sizes.sum() * imp))
    assert abs(notebook_impurity(t) - (1 - scores(t)["purity"])) > 0.1
    # they agree for k = 1
    assert notebook_impurity(np.array([[2, 3]])) == approx(1 - scores(np.array([[2, 3]]))["purity"])


# --------------------------------------------------------------------------- #
# contingency_block
# --------------------------------------------------------------------------- #
def _labels(n=1000, k=4, C=3, seed=0):
    rng = np.random.default_rng(seed)
    clusters = rng.integers(-1, k, n)  # -1 = unassigned
    classes = rng.integers(0, C, n).astype(np.uint8)
    classes[rng.random(n) < 0.05] = 0
    return clusters, classes


def test_contingency_block_numpy():
    clusters, classes = _labels()
    t = contingency_block(clusters, classes, 4, 3)
    assert isinstance(t, np.ndarray) and t.dtype == np.int64 and t.shape == (4, 3)
    np.testing.assert_array_equal(t, serial_table(clusters, classes, 4, 3))
    # negative classes ignored too, and (n, 1) labels accepted
    cls = classes.astype(np.int64)
    cls[:10] = -1
    np.testing.assert_array_equal(
        contingency_block(clusters, cls[:, None], 4, 3), serial_table(clusters, cls, 4, 3)
    )
    # empty block
    np.testing.assert_array_equal(
        contingency_block(np.zeros(0, np.int64), np.zeros(0, np.uint8), 4, 3), np.zeros((4, 3))
    )


def test_contingency_block_uint8_no_overflow():
    # uint8 classes times n_classes would overflow uint8 arithmetic
    clusters = np.array([30, 30, 29], dtype=np.uint8)
    classes = np.array([9, 9, 0], dtype=np.uint8)
    t = contingency_block(clusters, classes, 31, 10)
    assert t[30, 9] == 2 and t[29, 0] == 1 and t.sum() == 3


def test_contingency_block_array_api_strict(monkeypatch):
    xp = pytest.importorskip("array_api_strict")
    clusters, classes = _labels(n=500, k=5, C=4, seed=3)
    expected = serial_table(clusters, classes, 5, 4)
    t = contingency_block(xp.asarray(clusters), xp.asarray(classes), 5, 4)
    assert t.dtype == xp.int64 and t.shape == (5, 4)
    np.testing.assert_array_equal(np.asarray(xp.reshape(t, (-1,))).reshape(5, 4), expected)
    # several one-hot steps (tiny step to exercise the loop, incl. a ragged last step)
    monkeypatch.setattr(metrics, "_ONEHOT_MAX_ROWS", 37)
    t = contingency_block(xp.asarray(clusters), xp.asarray(classes), 5, 4)
    np.testing.assert_array_equal(np.asarray(t), expected)


def test_contingency_block_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        contingency_block(np.array([0, 4]), np.array([0, 1]), 4, 3)
    with pytest.raises(ValueError, match="out of range"):
        contingency_block(np.array([0, 1]), np.array([0, 3]), 4, 3)
    with pytest.raises(ValueError, match="length"):
        contingency_block(np.array([0, 1]), np.array([0]), 4, 3)
    with pytest.raises(TypeError):
        contingency_block(np.array([0.0, 1.0]), np.array([0, 1]), 4, 3)
    with pytest.raises(ValueError):
        contingency_block(np.array([0, 1]), np.array([0, 1]), 0, 3)


# --------------------------------------------------------------------------- #
# Distributed contingency
# --------------------------------------------------------------------------- #
N = 1000
CHUNKINGS = [
    (N,),  # one chunk
    (100,) * 10,  # many
    (0, 5, 7, 0, 88, 900),  # with empty chunks
    (1,) * 40 + (N - 40,),  # many tiny ones
]


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
@pytest.mark.parametrize("chunks", CHUNKINGS, ids=["one", "many", "empty", "tiny"])
def test_contingency_distributed_matches_serial(scheduler, chunks):
    clusters, classes = _labels(n=N, k=6, C=5, seed=7)
    expected = serial_table(clusters, classes, 6, 5)
    dc = da.from_array(clusters, chunks=(chunks,))
    for ychunks in ((chunks,), (333,), ((N,),)):  # same chunks, different, single
        dy = da.from_array(classes, chunks=ychunks)
        with dask.config.set(scheduler=scheduler):
            t = contingency(dc, dy, 6, 5, split_every=3)
        assert isinstance(t, np.ndarray) and t.dtype == np.int64
        np.testing.assert_array_equal(t, expected)


def test_contingency_one_compute_and_tree(monkeypatch):
    clusters, classes = _labels(n=N, k=3, C=4, seed=1)
    dc = da.from_array(clusters, chunks=10)  # 100 blocks
    dy = da.from_array(classes, chunks=10)
    calls = []
    original = da.Array.compute

    def counting_compute(self, **kwargs):
        calls.append(self.shape)
        return original(self, **kwargs)

    monkeypatch.setattr(da.Array, "compute", counting_compute)
    with dask.config.set(scheduler="sync"):
        t = contingency(dc, dy, 3, 4, split_every=4)
    assert calls == [(3, 4)]  # one compute, and only the small table comes back
    np.testing.assert_array_equal(t, serial_table(clusters, classes, 3, 4))


def test_contingency_numpy_and_column_labels():
    clusters, classes = _labels(n=300, k=4, C=3, seed=2)
    expected = serial_table(clusters, classes, 4, 3)
    np.testing.assert_array_equal(contingency(clusters, classes, 4, 3), expected)
    # a mix of dask and NumPy, classes of shape (n, 1) as CIFAR-10 label files have
    dc = da.from_array(clusters, chunks=64)
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(contingency(dc, classes[:, None], 4, 3), expected)
        np.testing.assert_array_equal(
            contingency(dc, da.from_array(classes[:, None], chunks=(50, 1)), 4, 3), expected
        )


def test_contingency_errors():
    dc = da.from_array(np.array([0, 1, 2]), chunks=2)
    with dask.config.set(scheduler="sync"):
        with pytest.raises(ValueError, match="length"):
            contingency(dc, da.from_array(np.array([0, 1])), 3, 2)
        with pytest.raises(TypeError):
            contingency(dc, da.from_array(np.array([0.0, 1.0, 1.0])), 3, 2)
        with pytest.raises(ValueError, match="out of range"):
            contingency(dc, da.from_array(np.array([0, 1, 2])), 3, 2)
        with pytest.raises(ValueError, match="unknown chunk"):
            x = da.from_array(np.array([0, 1, 2, 1]), chunks=2)
            contingency(x[x > 0], x[x > 0], 3, 3)


def test_contingency_then_scores_end_to_end():
    rng = np.random.default_rng(11)
    clusters = rng.integers(0, 10, 5000)
    classes = np.where(rng.random(5000) < 0.6, clusters, rng.integers(0, 10, 5000))
    with dask.config.set(scheduler="threads"):
        t = contingency(da.from_array(clusters, chunks=700), da.from_array(classes, chunks=512), 10, 10)
    s = scores(t)
    assert s["nmi"] == approx(normalized_mutual_info_score(classes, clusters))
    assert s["ari"] == approx(adjusted_rand_score(classes, clusters))
    assert s["n_samples"] == 5000


def test_contingency_on_distributed_client():
    distributed = pytest.importorskip("distributed")
    clusters, classes = _labels(n=N, k=4, C=3, seed=5)
    with distributed.Client(
        processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None
    ):
        t = contingency(
            da.from_array(clusters, chunks=(CHUNKINGS[2],)), da.from_array(classes, chunks=250), 4, 3
        )
    np.testing.assert_array_equal(t, serial_table(clusters, classes, 4, 3))
