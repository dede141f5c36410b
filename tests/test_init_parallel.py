"""k-means|| (daskmeans.init_parallel) against direct computations and scikit-learn."""

from __future__ import annotations

import math
from fractions import Fraction

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from daskmeans import KMeans
from daskmeans.init_parallel import (
    exact_float,
    exact_sum,
    kmeans_parallel,
    merge_exact,
    row_uniforms,
    weighted_kmeans_plusplus,
)
from daskmeans.kmeans import init_centers


def _distinct_uint8(n, d, seed):
    X = np.random.default_rng(seed).integers(0, 256, size=(n, d), dtype=np.uint8)
    assert len(np.unique(X, axis=0)) == n
    return X


def _sq(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


# -- weighted k-means++ ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_weighted_kmeans_plusplus_same_draws_as_sklearn(seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 5))
    w = rng.integers(1, 9, size=60).astype(np.float64)
    ours_c, ours_i = weighted_kmeans_plusplus(X, w, 6, seed)
    sk_c, sk_i = sk_kmeans_plusplus(X, 6, sample_weight=w, random_state=seed)
    np.testing.assert_array_equal(ours_i, sk_i)
    np.testing.assert_array_equal(ours_c, X[sk_i])


def test_weighted_kmeans_plusplus_zero_weight_is_never_chosen():
    X = np.arange(10, dtype=np.float64).reshape(-1, 1)
    w = np.zeros(10)
    w[[2, 5, 9]] = [1, 3, 2]
    for seed in range(20):
        _, idx = weighted_kmeans_plusplus(X, w, 3, seed)
        assert sorted(idx) == [2, 5, 9]


def test_weighted_kmeans_plusplus_second_centre_follows_weight_times_squared_distance():
    # One trial per centre: the second centre is drawn with probability w_j d_j^2 / sum (direct formula).
    X = np.array([[0.0], [1.0], [3.0], [7.0]])
    w = np.array([4.0, 1.0, 2.0, 1.0])
    runs = 2000
    pairs = np.zeros((4, 4))
    for seed in range(runs):
        _, idx = weighted_kmeans_plusplus(X, w, 2, seed, n_local_trials=1)
        pairs[idx[0], idx[1]] += 1
    first_expected = w / w.sum()
    np.testing.assert_allclose(pairs.sum(1) / runs, first_expected, atol=0.04)
    for i in range(4):
        d2 = (X[:, 0] - X[i, 0]) ** 2
        expected = w * d2 / (w * d2).sum()
        np.testing.assert_allclose(pairs[i] / pairs[i].sum(), expected, atol=0.07)


# -- the building blocks -------------------------------------------------------------------


def test_row_uniforms_depend_on_the_global_row_only():
    whole = row_uniforms(12345, 3, 0, 500)
    assert np.all((whole >= 0) & (whole < 1))
    for start, n in [(0, 1), (37, 63), (499, 1), (100, 400)]:
        np.testing.assert_array_equal(row_uniforms(12345, 3, start, n), whole[start : start + n])
    assert not np.array_equal(row_uniforms(12345, 4, 0, 500), whole)  # another round, other draws
    assert not np.array_equal(row_uniforms(12346, 3, 0, 500), whole)  # another seed
    assert abs(whole.mean() - 0.5) < 0.05


def test_exact_sum_is_exact_and_order_free():
    rng = np.random.default_rng(0)
    v = rng.random(5000) * np.exp(rng.normal(size=5000) * 20)
    v[:10] = 0.0
    v[10] = 5e-324  # subnormal
    exact = sum((Fraction(float(x)) for x in v), Fraction(0))
    assert exact_float(exact_sum(v)) == float(exact) == math.fsum(v)
    parts = [exact_sum(v[i : i + 700]) for i in range(0, 5000, 700)]
    assert exact_float(merge_exact(*parts[::-1])) == float(exact)
    assert exact_float(exact_sum(np.zeros(3))) == 0.0


# -- the distributed algorithm --------------------------------------------------------------


def _nearest_counts(X, C, scale):
    d = _sq(np.asarray(X, np.float64) * scale, C)
    return np.bincount(d.argmin(1), minlength=len(C))  # ties: the lowest candidate number


def test_candidate_weights_equal_a_direct_count():
    X = _distinct_uint8(1500, 12, 0)  # small integers: every distance exact, ties resolved alike
    centers, info = kmeans_parallel(da.from_array(X, chunks=400), 8, 0, return_info=True)
    idx = info["candidate_indices"]
    assert len(np.unique(idx)) == len(idx) == info["candidates"]
    assert info["rounds"] == 5 and 8 < info["candidates"] < 1 + 5 * 16 * 2
    C = X[idx].astype(np.float64) * (1 / 255.0)  # centres' units, as kmeans_plusplus
    np.testing.assert_array_equal(info["weights"], _nearest_counts(X, C, 1 / 255.0))
    assert info["weights"].sum() == len(X)
    # the centres are candidates, in centres' units
    np.testing.assert_array_equal(centers, C[info["chosen"]])


def test_candidate_weights_float_data():
    X, _ = make_blobs(2000, n_features=6, centers=7, random_state=3)
    centers, info = kmeans_parallel(da.from_array(X, chunks=333), 7, 5, return_info=True)
    C = X[info["candidate_indices"]]
    np.testing.assert_array_equal(info["weights"], _nearest_counts(X, C, 1.0))


def test_phi_decreases_and_equals_the_direct_potential():
    X = _distinct_uint8(800, 10, 1)
    _, info = kmeans_parallel(da.from_array(X, chunks=150), 4, 2, return_info=True)
    assert all(b <= a for a, b in zip(info["phi"], info["phi"][1:]))
    C = X[info["candidate_indices"]].astype(np.float64) / 255.0
    direct = _sq(X.astype(np.float64) / 255.0, C).min(1).sum()
    assert info["phi"][-1] == pytest.approx(direct, rel=1e-6)


def _rechunk(X, sizes):
    return da.from_array(X, chunks=X.shape).rechunk((tuple(sizes), (X.shape[1],)))


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_same_seed_same_result_whatever_the_chunking_and_scheduler(dtype):
    n = 700
    X = _distinct_uint8(n, 16, 2)
    if dtype == "float32":
        X = (X.astype(np.float32) - 100.0) / 7.0
    results = []
    chunkings = [(n,), (300, 0, 250, 150), tuple([37] * 18 + [n - 37 * 18]), (1,) * 6 + (n - 6,)]
    for sizes, sched in zip(chunkings, ("sync", "threads", "threads", "sync")):
        with dask.config.set(scheduler=sched):
            c, info = kmeans_parallel(_rechunk(X, sizes), 6, 11, return_info=True)
        results.append((sizes, sched, c, info))
    _, _, c0, i0 = results[0]
    for sizes, sched, c, info in results[1:]:
        np.testing.assert_array_equal(info["candidate_indices"], i0["candidate_indices"], err_msg=f"{sizes} {sched}")
        np.testing.assert_array_equal(info["weights"], i0["weights"])
        np.testing.assert_array_equal(c, c0)
        if dtype == "uint8":  # exact integer distances and exact sums: bit for bit
            assert info["phi"] == i0["phi"]
        else:  # the float kernel's last bits may depend on a row's position in its block
            np.testing.assert_allclose(info["phi"], i0["phi"], rtol=1e-6)


def test_other_seed_other_candidates():
    X = _distinct_uint8(600, 8, 3)
    a = kmeans_parallel(da.from_array(X, chunks=200), 5, 0, return_info=True)[1]["candidate_indices"]
    b = kmeans_parallel(da.from_array(X, chunks=200), 5, 1, return_info=True)[1]["candidate_indices"]
    assert not np.array_equal(a, b)


def test_finds_the_blobs():
    X, y, true_centers = make_blobs(5000, n_features=8, centers=12, cluster_std=0.5, center_box=(-40, 40),
                                    random_state=0, return_centers=True)
    for seed in range(3):
        c = kmeans_parallel(da.from_array(X, chunks=700), 12, seed)
        labels = _sq(X, c).argmin(1)
        assert adjusted_rand_score(y, labels) == 1.0  # one initial centre in every blob
        # each initial centre is a point of its blob: within a few sigma of the true centre
        assert np.sort(_sq(c, true_centers).min(1))[-1] < (0.5 * 5) ** 2 * 8


def test_fewer_rows_than_candidates_and_duplicates():
    # 6 distinct points repeated: k = 6 must still get all six; tiny data stops when phi reaches 0
    base = np.array([[0, 0], [0, 9], [9, 0], [9, 9], [4, 4], [20, 20]], dtype=np.float64)
    X = np.repeat(base, 30, axis=0)
    c, info = kmeans_parallel(da.from_array(X, chunks=50), 6, 0, return_info=True)
    assert info["phi"][-1] == 0.0
    assert sorted(map(tuple, c)) == sorted(map(tuple, base))


def test_init_centers_branch_and_units():
    X = _distinct_uint8(500, 12, 4)
    Xd = da.from_array(X, chunks=100)
    c = init_centers(Xd, 5, "k-means||", 0)
    assert c.shape == (5, 12) and c.dtype == np.float64
    assert c.min() >= 0 and c.max() <= 1  # centres' units: pixels in [0, 1]
    rows = {tuple(r) for r in X}
    assert all(tuple(np.rint(r * 255).astype(np.uint8)) in rows for r in c)
    np.testing.assert_array_equal(c, kmeans_parallel(Xd, 5, 0))


def test_kmeans_fit_with_k_means_parallel_init():
    X, y = make_blobs(3000, n_features=5, centers=6, cluster_std=0.6, random_state=4)
    Xd = da.from_array(X.astype(np.float32), chunks=500)
    km = KMeans(6, init="k-means||", random_state=0, max_iter=50).fit(Xd)
    assert adjusted_rand_score(y, km.labels_.compute()) == 1.0
    # the estimator centres float data: the initial centres are rows of X in X's units
    init_rows = np.rint(km.init_centers_ * 1e4)
    assert all(np.any(np.all(np.abs(X.astype(np.float32) * 1e4 - r) < 2, axis=1)) for r in init_rows)
    # same seed, same fit, whatever the chunking
    km2 = KMeans(6, init="k-means||", random_state=0, max_iter=50).fit(Xd.rechunk(777))
    np.testing.assert_array_equal(km2.cluster_centers_, km.cluster_centers_)
    # NumPy input and pixels
    P = _distinct_uint8(800, 12, 5)
    kmp = KMeans(4, init="k-means||", random_state=1, n_init=2, chunk_size=300).fit(P)
    assert kmp.labels_.shape == (800,) and kmp.cluster_centers_.shape == (4, 12)
    assert np.isfinite(kmp.inertia_)


def test_bad_init_name_is_one_line():
    from daskmeans.errors import InputError

    with pytest.raises(InputError, match=r"init='k-means\|' is not k-means\+\+, k-means\|\|, random"):
        KMeans(3, init="k-means|").fit(np.zeros((10, 2)))


def test_estimator_passes_dask_ml_knobs_to_k_means_parallel():
    """dask-ml's names: oversampling_factor (l = factor * k) and init_max_iter (the rounds)."""
    from daskmeans import KMeans
    from daskmeans.init_parallel import kmeans_parallel

    X = np.random.default_rng(4).normal(size=(600, 5))
    km = KMeans(6, init="k-means||", oversampling_factor=3.0, init_max_iter=2, random_state=0, max_iter=1,
                chunk_size=100).fit(X)
    offset = X.mean(axis=0)  # float data are centred before the fit; the centres are shifted back
    ref = kmeans_parallel(da.from_array(X - offset, chunks=100), 6, np.random.RandomState(0), n_rounds=2,
                          oversampling=3.0)
    np.testing.assert_allclose(km.init_centers_, ref + offset, rtol=1e-10, atol=1e-10)
    other = kmeans_parallel(da.from_array(X - offset, chunks=100), 6, np.random.RandomState(0))
    assert not np.allclose(other, ref)  # the knobs change the draws
