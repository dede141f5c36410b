"""sample_weight in the engine: weighted k-means++ draws, weighted Lloyd steps, relocation.

References: scikit-learn's KMeans / kmeans_plusplus (same seeds, same initial
centres), repeated rows (integer weights), and a serial NumPy weighted Lloyd.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs

from daskmeans import KMeans
from daskmeans.errors import InputError
from daskmeans.kmeans import as_rows, kmeans_plusplus, lloyd


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(700, n_features=6, centers=5, cluster_std=2.0, random_state=0)
    w = np.random.default_rng(1).uniform(0.1, 5.0, len(X))
    return X, w


def _serial_weighted_lloyd(X, w, C, n_iter):
    """A plain NumPy weighted Lloyd (no empty clusters in these data)."""
    for _ in range(n_iter):
        lab = ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)
        C = np.stack([np.average(X[lab == j], axis=0, weights=w[lab == j]) for j in range(len(C))])
    return C, ((X[:, None, :] - C[None]) ** 2).sum(-1).argmin(1)  # the final centres' labels


@pytest.mark.parametrize("chunks", [700, 64, 9])
def test_weighted_lloyd_equals_serial_numpy(blobs, chunks):
    X, w = blobs
    C0 = X[[3, 100, 200, 300, 400]]
    with dask.config.set(num_workers=3):
        got = lloyd(as_rows(X, chunks), C0, max_iter=7, tol=0.0, sample_weight=w)
    ref_c, ref_lab = _serial_weighted_lloyd(X, w, C0, got.n_iter)
    np.testing.assert_allclose(got.centers, ref_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(got.labels), ref_lab)
    inertia = (w * ((X - ref_c[ref_lab]) ** 2).sum(1)).sum()
    assert got.inertia == pytest.approx(inertia, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_estimator_matches_sklearn_with_weights(blobs, dtype):
    X, w = blobs
    X = X.astype(dtype)
    sk = SKKMeans(5, n_init=1, random_state=4, algorithm="lloyd").fit(X, sample_weight=w)
    km = KMeans(5, n_init=1, random_state=4, chunk_size=100).fit(X, sample_weight=w)
    assert km.algorithm_ == "lloyd"
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_, rtol=tol, atol=tol)
    assert km.inertia_ == pytest.approx(sk.inertia_, rel=tol)
    assert km.n_iter_ == sk.n_iter_


def test_integer_weights_equal_repeated_rows(blobs):
    X, _ = blobs
    rep = np.random.default_rng(2).integers(1, 4, len(X))
    C0 = X[:5]
    a = KMeans(5, init=C0, n_init=1, chunk_size=80).fit(X, sample_weight=rep)
    b = KMeans(5, init=C0, n_init=1, chunk_size=80).fit(np.repeat(X, rep, axis=0))
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert a.inertia_ == pytest.approx(b.inertia_, rel=1e-12)
    np.testing.assert_array_equal(np.repeat(a.labels_, rep), b.labels_)


def test_pixels_with_weights_match_sklearn():
    rng = np.random.default_rng(3)
    P = rng.integers(0, 256, (400, 48), dtype=np.uint8)
    w = rng.uniform(0.5, 2.0, 400)
    km = KMeans(6, n_init=1, random_state=0, chunk_size=64, tol=0).fit(P, sample_weight=w)
    sk = SKKMeans(6, init=km.init_centers_ * 255, n_init=1, algorithm="lloyd", tol=0).fit(
        P.astype(np.float64), sample_weight=w)
    np.testing.assert_array_equal(km.labels_, sk.labels_)
    np.testing.assert_allclose(km.cluster_centers_, sk.cluster_centers_ / 255, atol=1e-6)
    assert km.inertia_ == pytest.approx(sk.inertia_ / 255**2, rel=1e-6)  # float32 distances


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_kmeans_plusplus_draws_as_sklearn(blobs, seed):
    X, w = blobs
    _, ref = sk_kmeans_plusplus(X, 6, sample_weight=w, random_state=seed)
    _, got = kmeans_plusplus(as_rows(X, 50), 6, seed, sample_weight=w)
    np.testing.assert_array_equal(got, ref)


def test_weights_move_the_centres(blobs):
    """A heavy row pulls its centre: the weighted mean, not the plain one."""
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    km = KMeans(2, init=np.array([[0.0], [10.0]]), n_init=1).fit(X, sample_weight=[3.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.sort(km.cluster_centers_.ravel()), [0.25, 10.5])
    assert km.inertia_ == pytest.approx(3 * 0.25**2 + 0.75**2 + 2 * 0.5**2)


def test_empty_cluster_relocated_with_weights():
    """scikit-learn's case #13486: the relocated row carries its weight."""
    X = np.array([[-1.0], [1.0]])
    km = KMeans(2, init=np.array([[-1.0], [10.0]]), n_init=1).fit(X, sample_weight=[1.9, 0.1])
    assert len(set(km.labels_.tolist())) == 2
    np.testing.assert_allclose(km.cluster_centers_, [[-1.0], [1.0]])


def test_zero_weights_with_unequal_positive_ones(blobs):
    X, w = blobs
    w = w.copy()
    w[::3] = 0
    keep = w > 0
    a = KMeans(5, n_init=1, random_state=0, chunk_size=64).fit(X, sample_weight=w)
    b = KMeans(5, n_init=1, random_state=0, chunk_size=64).fit(X[keep], sample_weight=w[keep])
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_[keep], b.labels_)
    assert a.labels_.shape == (len(X),)


def test_hamerly_refuses_unequal_weights_in_one_line(blobs):
    P = np.random.default_rng(0).integers(0, 256, (100, 12), dtype=np.uint8)
    with pytest.raises(InputError, match="hamerly.*sample_weight.*lloyd") as e:
        KMeans(3, algorithm="hamerly").fit(P, sample_weight=np.linspace(1, 2, 100))
    assert "\n" not in str(e.value)


def test_weighted_fit_on_worker_processes_equals_threads(blobs):
    from distributed import Client, LocalCluster

    X, w = blobs
    C0 = X[:5]
    ref = lloyd(as_rows(X, 64), C0, max_iter=20, tol=0.0, sample_weight=w)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        got = lloyd(as_rows(X, 64), C0, max_iter=20, tol=0.0, sample_weight=w)
        labels = np.asarray(got.labels)
    np.testing.assert_allclose(got.centers, ref.centers, rtol=1e-12)
    np.testing.assert_array_equal(labels, np.asarray(ref.labels))
    assert got.n_iter == ref.n_iter
