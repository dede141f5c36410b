"""scikit-learn's own k-means tests (sklearn/cluster/tests/test_k_means.py, 1.9.1), run on daskmeans.KMeans.

Every test of that file that applies to a dense k-means estimator, under the
same name (``test_<sklearn name>``), with ``KMeans``, ``k_means`` and
``kmeans_plusplus`` swapped for daskmeans's; the data containers are
scikit-learn's (dense, CSR matrix, CSR array) plus a chunked dask array.
Left out: MiniBatchKMeans-only tests and tests of Cython-private helpers
(``_euclidean_*_wrapper``, ``_inertia_*``, ``_is_same_clustering``); the
private helpers that test public behaviour (``_relocate_empty_clusters_*``,
``_init_centroids``, ``_inertia_*``) are ported through the public estimator.
A few tests at the end compare with scikit-learn itself (same seed, same draws).
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances, pairwise_distances_argmin
from sklearn.metrics.cluster import v_measure_score
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils._testing import assert_allclose, assert_array_equal, create_memmap_backed_data
from sklearn.utils.extmath import row_norms
from sklearn.utils.fixes import CSR_CONTAINERS
from threadpoolctl import threadpool_limits

import daskmeans.estimator
from daskmeans import InputError, KMeans, k_means, kmeans_plusplus

# non centered, sparse centers to check the
centers = np.array(
    [
        [0.0, 5.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 4.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 5.0, 1.0],
    ]
)
n_samples = 100
n_clusters, n_features = centers.shape
X, true_labels = make_blobs(n_samples=n_samples, centers=centers, cluster_std=1.0, random_state=42)
X_as_any_csr = [container(X) for container in CSR_CONTAINERS]


def dask_array(X, dtype=None):
    """A chunked dask array (three row chunks): daskmeans's own container."""
    X = np.asarray(X, dtype=dtype)
    return da.from_array(X, chunks=(max(1, -(-X.shape[0] // 3)),) + (-1,) * (X.ndim - 1))


data_containers = [np.array] + CSR_CONTAINERS + [dask_array]
data_containers_ids = ["dense", "sparse_matrix", "sparse_array", "dask"][: len(CSR_CONTAINERS) + 1] + ["dask"]


def _np(a):
    """Labels as NumPy (dask input gives dask labels)."""
    return np.asarray(a.compute() if isinstance(a, da.Array) else a)


@pytest.fixture(params=[42])
def global_random_seed(request):
    """scikit-learn's fixture (its default seed, 42)."""
    return request.param


@pytest.fixture(params=[np.float64, np.float32], ids=["float64", "float32"])
def global_dtype(request):
    return request.param


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("algo", ["lloyd", "elkan"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_results(array_constr, algo, dtype):
    # Checks that KMeans works as intended on toy dataset by comparing with
    # expected results computed by hand.
    X = array_constr([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=dtype)
    sample_weight = [3, 1, 1, 3]
    init_centers = np.array([[0, 0], [1, 1]], dtype=dtype)

    expected_labels = [0, 0, 1, 1]
    expected_inertia = 0.375
    expected_centers = np.array([[0.125, 0], [0.875, 1]], dtype=dtype)
    expected_n_iter = 2

    kmeans = KMeans(n_clusters=2, n_init=1, init=init_centers, algorithm=algo)
    kmeans.fit(X, sample_weight=sample_weight)

    assert_array_equal(_np(kmeans.labels_), expected_labels)
    assert_allclose(kmeans.inertia_, expected_inertia)
    assert_allclose(kmeans.cluster_centers_, expected_centers)
    assert kmeans.n_iter_ == expected_n_iter


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("algo", ["lloyd", "elkan"])
def test_kmeans_relocated_clusters(array_constr, algo):
    # check that empty clusters are relocated as expected
    X = array_constr([[0, 0], [0.5, 0], [0.5, 1], [1, 1]])

    # second center too far from others points will be empty at first iter
    init_centers = np.array([[0.5, 0.5], [3, 3]])

    kmeans = KMeans(n_clusters=2, n_init=1, init=init_centers, algorithm=algo)
    kmeans.fit(X)

    expected_n_iter = 3
    expected_inertia = 0.25
    assert_allclose(kmeans.inertia_, expected_inertia)
    assert kmeans.n_iter_ == expected_n_iter

    # There are two acceptable ways of relocating clusters in this example, the output
    # depends on how the argpartition strategy breaks ties. We accept both outputs.
    try:
        expected_labels = [0, 0, 1, 1]
        expected_centers = [[0.25, 0], [0.75, 1]]
        assert_array_equal(_np(kmeans.labels_), expected_labels)
        assert_allclose(kmeans.cluster_centers_, expected_centers)
    except AssertionError:
        expected_labels = [1, 1, 0, 0]
        expected_centers = [[0.75, 1.0], [0.25, 0.0]]
        assert_array_equal(_np(kmeans.labels_), expected_labels)
        assert_allclose(kmeans.cluster_centers_, expected_centers)


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
def test_relocate_empty_clusters(array_constr):
    # scikit-learn tests its _relocate_empty_clusters_(dense/sparse) helpers; here the
    # same case through one iteration of the estimator.
    # Synthetic dataset with 3 obvious clusters of different sizes
    X = np.array([-10.0, -9.5, -9, -8.5, -8, -1, 1, 9, 9.5, 10]).reshape(-1, 1)
    X = array_constr(X)

    # centers all initialized to the first point of X: every point goes to the first
    # centre, the 2 others are empty and take the 2 points farthest from it (10, 9.5);
    # the first centre is the mean of the other 8 points (-36 / 8).
    init = np.array([-10.0, -10, -10]).reshape(-1, 1)
    km = KMeans(n_clusters=3, init=init, n_init=1, max_iter=1).fit(X)
    assert_allclose(km.cluster_centers_, [[-36 / 8], [10], [9.5]])
    # labels_ are those of the final centres: 9 is nearer 9.5 than -4.5 (sklearn's weights [8, 1, 1] are the step's)
    assert_array_equal(np.bincount(_np(km.labels_), minlength=3), [7, 1, 2])


@pytest.mark.parametrize("distribution", ["normal", "blobs"])
@pytest.mark.parametrize("array_constr", [np.array, dask_array], ids=["dense", "dask"])  # sparse: densified
@pytest.mark.parametrize("tol", [1e-2, 1e-8, 1e-100, 0])
def test_kmeans_elkan_results(distribution, array_constr, tol, global_random_seed):
    # Check that results are identical between lloyd and elkan algorithms
    rnd = np.random.RandomState(global_random_seed)
    if distribution == "normal":
        X = rnd.normal(size=(5000, 10))
    else:
        X, _ = make_blobs(random_state=rnd)
    X[X < 0] = 0
    X = array_constr(X)

    km_lloyd = KMeans(n_clusters=5, random_state=global_random_seed, n_init=1, tol=tol)
    km_elkan = KMeans(algorithm="elkan", n_clusters=5, random_state=global_random_seed, n_init=1, tol=tol)

    km_lloyd.fit(X)
    km_elkan.fit(X)
    assert_allclose(km_elkan.cluster_centers_, km_lloyd.cluster_centers_)
    assert_array_equal(_np(km_elkan.labels_), _np(km_lloyd.labels_))
    assert km_elkan.n_iter_ == km_lloyd.n_iter_
    assert km_elkan.inertia_ == pytest.approx(km_lloyd.inertia_, rel=1e-6)


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_kmeans_convergence(algorithm, global_random_seed):
    # Check that KMeans stops when convergence is reached when tol=0. (#16075)
    rnd = np.random.RandomState(global_random_seed)
    X = rnd.normal(size=(5000, 10))
    max_iter = 300

    km = KMeans(
        algorithm=algorithm, n_clusters=5, random_state=global_random_seed, n_init=1, tol=0, max_iter=max_iter,
    ).fit(X)

    assert km.n_iter_ < max_iter
    assert km.converged_


def _check_fitted_model(km):
    # check that the number of clusters centers and distinct labels match
    # the expectation
    centers = km.cluster_centers_
    assert centers.shape == (n_clusters, n_features)

    labels = _np(km.labels_)
    assert np.unique(labels).shape[0] == n_clusters

    # check that the labels assignment are perfect (up to a permutation)
    assert_allclose(v_measure_score(true_labels, labels), 1.0)
    assert km.inertia_ > 0.0


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)], ids=data_containers_ids)
@pytest.mark.parametrize(
    "init",
    ["random", "k-means++", centers.copy(), lambda X, k, random_state: centers.copy()],
    ids=["random", "k-means++", "ndarray", "callable"],
)
def test_all_init(input_data, init):
    # Check KMeans with all possible init.
    n_init = 10 if isinstance(init, str) else 1
    km = KMeans(init=init, n_clusters=n_clusters, random_state=42, n_init=n_init).fit(input_data)
    _check_fitted_model(km)


@pytest.mark.parametrize(
    "init, expected_n_init",
    [
        ("k-means++", 1),
        ("random", "default"),
        (lambda X, n_clusters, random_state: random_state.uniform(size=(n_clusters, X.shape[1])), "default"),
        ("array-like", 1),
    ],
)
def test_kmeans_init_auto_with_initial_centroids(init, expected_n_init):
    """Check that `n_init="auto"` chooses the right number of initializations.
    Non-regression test for #26657:
    https://github.com/scikit-learn/scikit-learn/pull/26657
    """
    n_sample, n_features, n_clusters = 100, 10, 5
    X = np.random.randn(n_sample, n_features)
    if init == "array-like":
        init = np.random.randn(n_clusters, n_features)
    if expected_n_init == "default":
        expected_n_init = 10

    kmeans = KMeans(n_clusters=n_clusters, init=init, n_init="auto").fit(X)
    assert kmeans._n_init == expected_n_init


def test_fortran_aligned_data(global_random_seed):
    # Check that KMeans works with fortran-aligned data.
    X_fortran = np.asfortranarray(X)
    centers_fortran = np.asfortranarray(centers)

    km_c = KMeans(n_clusters=n_clusters, init=centers, n_init=1, random_state=global_random_seed).fit(X)
    km_f = KMeans(n_clusters=n_clusters, init=centers_fortran, n_init=1, random_state=global_random_seed).fit(
        X_fortran
    )
    assert_allclose(km_c.cluster_centers_, km_f.cluster_centers_)
    assert_array_equal(km_c.labels_, km_f.labels_)


@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
@pytest.mark.parametrize("tol", [1e-2, 0])
def test_kmeans_verbose(algorithm, tol, capsys):
    # Check verbose mode of KMeans for better coverage.
    X = np.random.RandomState(0).normal(size=(5000, 10))

    KMeans(
        algorithm=algorithm, n_clusters=n_clusters, random_state=42, init="random", n_init=1, tol=tol, verbose=1,
    ).fit(X)

    captured = capsys.readouterr()

    assert re.search(r"Initialization complete", captured.out)
    assert re.search(r"Iteration [0-9]+, inertia", captured.out)

    if tol == 0:
        assert re.search(r"strict convergence", captured.out)
    else:
        assert re.search(r"center shift .* within tolerance", captured.out)


def test_warning_n_init_precomputed_centers():
    # Check that a warning is raised when n_init > 1 and an array is passed for
    # the init parameter.
    with pytest.warns(RuntimeWarning, match="Explicit initial center position passed: performing only one init"):
        KMeans(init=centers, n_clusters=n_clusters, n_init=10).fit(X)


def test_kmeans_copyx():
    # Check that copy_x=False returns nearly equal X after de-centering.
    my_X = X.copy()
    km = KMeans(copy_x=False, n_clusters=n_clusters, random_state=42)
    km.fit(my_X)
    _check_fitted_model(km)

    # check that my_X is de-centered (daskmeans never writes to X: it is X, bit for bit)
    assert_allclose(my_X, X)
    assert_array_equal(my_X, X)


def test_score_max_iter(global_random_seed):
    # Check that fitting KMeans with more iterations gives better score
    X = np.random.RandomState(global_random_seed).randn(100, 10)

    km1 = KMeans(n_init=1, random_state=global_random_seed, max_iter=1)
    s1 = km1.fit(X).score(X)
    km2 = KMeans(n_init=1, random_state=global_random_seed, max_iter=10)
    s2 = km2.fit(X).score(X)
    assert s2 > s1


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
@pytest.mark.parametrize("max_iter", [2, 100])
def test_kmeans_predict(algorithm, array_constr, max_iter, global_dtype, global_random_seed):
    # Check the predict method and the equivalence between fit.predict and
    # fit_predict.
    X, _ = make_blobs(n_samples=200, n_features=10, centers=10, random_state=global_random_seed)
    X = array_constr(X, dtype=global_dtype)

    km = KMeans(n_clusters=10, init="random", n_init=10, max_iter=max_iter, random_state=global_random_seed)
    km.set_params(algorithm=algorithm)
    km.fit(X)
    labels = _np(km.labels_)

    # re-predict labels for training set using predict
    pred = km.predict(X)
    assert_array_equal(_np(pred), labels)

    # re-predict labels for training set using fit_predict
    pred = km.fit_predict(X)
    assert_array_equal(_np(pred), labels)

    # predict centroid labels
    pred = km.predict(km.cluster_centers_)
    assert_array_equal(pred, np.arange(10))


@pytest.mark.parametrize("X_csr", X_as_any_csr)
def test_dense_sparse(X_csr, global_random_seed):
    # Check that the results are the same for dense and sparse input.
    sample_weight = np.random.RandomState(global_random_seed).random_sample((n_samples,))
    km_dense = KMeans(n_clusters=n_clusters, random_state=global_random_seed, n_init=1)
    km_dense.fit(X, sample_weight=sample_weight)
    km_sparse = KMeans(n_clusters=n_clusters, random_state=global_random_seed, n_init=1)
    km_sparse.fit(X_csr, sample_weight=sample_weight)

    assert_array_equal(km_dense.labels_, km_sparse.labels_)
    assert_allclose(km_dense.cluster_centers_, km_sparse.cluster_centers_)


@pytest.mark.parametrize("X_csr", X_as_any_csr)
@pytest.mark.parametrize("init", ["random", "k-means++", centers], ids=["random", "k-means++", "ndarray"])
def test_predict_dense_sparse(init, X_csr):
    # check that models trained on sparse input also works for dense input at
    # predict time and vice versa.
    n_init = 10 if isinstance(init, str) else 1
    km = KMeans(n_clusters=n_clusters, init=init, n_init=n_init, random_state=0)

    km.fit(X_csr)
    assert_array_equal(km.predict(X), km.labels_)

    km.fit(X)
    assert_array_equal(km.predict(X_csr), km.labels_)


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("init", ["k-means++", "ndarray"])
def test_integer_input(array_constr, dtype, init, global_random_seed):
    # Check that KMeans works with integer input.
    X_dense = np.array([[0, 0], [10, 10], [12, 9], [-1, 1], [2, 0], [8, 10]])
    X = array_constr(X_dense, dtype=dtype)

    n_init = 1 if init == "ndarray" else 10
    init = X_dense[:2] if init == "ndarray" else init

    km = KMeans(n_clusters=2, init=init, n_init=n_init, random_state=global_random_seed)
    km.fit(X)

    # Internally integer input should be converted to float64
    assert km.cluster_centers_.dtype == np.float64

    expected_labels = [0, 1, 1, 0, 0, 1]
    assert_allclose(v_measure_score(_np(km.labels_), expected_labels), 1.0)


def test_transform(global_random_seed):
    # Check the transform method
    km = KMeans(n_clusters=n_clusters, random_state=global_random_seed).fit(X)

    # Transorfming cluster_centers_ should return the pairwise distances
    # between centers
    Xt = km.transform(km.cluster_centers_)
    assert_allclose(Xt, pairwise_distances(km.cluster_centers_))
    # In particular, diagonal must be 0
    assert_array_equal(Xt.diagonal(), np.zeros(n_clusters))

    # Transforming X should return the pairwise distances between X and the
    # centers
    Xt = km.transform(X)
    assert_allclose(Xt, pairwise_distances(X, km.cluster_centers_))


def test_fit_transform(global_random_seed):
    # Check equivalence between fit.transform and fit_transform
    X1 = KMeans(random_state=global_random_seed, n_init=1).fit(X).transform(X)
    X2 = KMeans(random_state=global_random_seed, n_init=1).fit_transform(X)
    assert_allclose(X1, X2)


def test_n_init(global_random_seed):
    # Check that increasing the number of init increases the quality
    previous_inertia = np.inf
    for n_init in [1, 5, 10]:
        # set max_iter=1 to avoid finding the global minimum and get the same
        # inertia each time
        km = KMeans(
            n_clusters=n_clusters, init="random", n_init=n_init, random_state=global_random_seed, max_iter=1,
        ).fit(X)
        assert km.inertia_ <= previous_inertia


def test_k_means_function(global_random_seed):
    # test calling the k_means function directly
    cluster_centers, labels, inertia = k_means(
        X, n_clusters=n_clusters, sample_weight=None, random_state=global_random_seed
    )

    assert cluster_centers.shape == (n_clusters, n_features)
    assert np.unique(labels).shape[0] == n_clusters

    # check that the labels assignment are perfect (up to a permutation)
    assert_allclose(v_measure_score(true_labels, labels), 1.0)
    assert inertia > 0.0

    # daskmeans: NumPy labels for NumPy input, and return_n_iter as scikit-learn's
    assert isinstance(labels, np.ndarray)
    *_, n_iter = k_means(X, n_clusters=n_clusters, random_state=global_random_seed, return_n_iter=True)
    assert n_iter == KMeans(n_clusters, random_state=global_random_seed).fit(X).n_iter_


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)], ids=data_containers_ids)
def test_float_precision(input_data, global_random_seed):
    # Check that the results are the same for single and double precision.
    km = KMeans(n_init=1, random_state=global_random_seed)

    inertia = {}
    Xt = {}
    centers = {}
    labels = {}

    for dtype in [np.float64, np.float32]:
        X = input_data.astype(dtype, copy=False) if not isinstance(input_data, da.Array) else input_data.astype(dtype)
        km.fit(X)

        inertia[dtype] = km.inertia_
        Xt[dtype] = _np(km.transform(X))
        centers[dtype] = km.cluster_centers_
        labels[dtype] = _np(km.labels_)

        # dtype of cluster centers has to be the dtype of the input data
        assert km.cluster_centers_.dtype == dtype

    # compare arrays with low precision since the difference between 32 and
    # 64 bit comes from an accumulation of rounding errors.
    rtol = 1e-4
    assert_allclose(inertia[np.float32], inertia[np.float64], rtol=rtol)
    assert_allclose(Xt[np.float32], Xt[np.float64], atol=Xt[np.float64].max() * rtol)
    assert_allclose(centers[np.float32], centers[np.float64], atol=centers[np.float64].max() * rtol)
    assert_array_equal(labels[np.float32], labels[np.float64])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
def test_centers_not_mutated(dtype):
    # Check that KMeans won't mutate the user provided init centers silently
    # even if input data and init centers have the same type.
    X_new_type = X.astype(dtype, copy=False)
    centers_new_type = centers.astype(dtype, copy=False)
    before = centers_new_type.copy()

    km = KMeans(init=centers_new_type, n_clusters=n_clusters, n_init=1)
    km.fit(X_new_type)

    assert not np.may_share_memory(km.cluster_centers_, centers_new_type)
    assert_array_equal(centers_new_type, before)


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)], ids=data_containers_ids)
def test_kmeans_init_fitted_centers(input_data):
    # Check that starting fitting from a local optimum shouldn't change the
    # solution
    km1 = KMeans(n_clusters=n_clusters).fit(input_data)
    km2 = KMeans(n_clusters=n_clusters, init=km1.cluster_centers_, n_init=1).fit(input_data)

    assert_allclose(km1.cluster_centers_, km2.cluster_centers_)


def test_kmeans_warns_less_centers_than_unique_points(global_random_seed):
    # Check KMeans when the number of found clusters is smaller than expected
    X = np.asarray([[0, 0], [0, 1], [1, 0], [1, 0]])  # last point is duplicated
    km = KMeans(n_clusters=4, random_state=global_random_seed)

    # KMeans should warn that fewer labels than cluster centers have been used
    msg = (
        r"Number of distinct clusters \(3\) found smaller than "
        r"n_clusters \(4\). Possibly due to duplicate points in X."
    )
    with pytest.warns(ConvergenceWarning, match=msg):
        km.fit(X)
        # only three distinct points, so only three clusters
        # can have points assigned to them
        assert set(km.labels_) == set(range(3))


def _sort_centers(centers):
    return np.sort(centers, axis=0)


def test_weighted_vs_repeated(global_random_seed):
    # Check that a sample weight of N should yield the same result as an N-fold
    # repetition of the sample. Valid only if init is precomputed, otherwise
    # rng produces different results.
    sample_weight = np.random.RandomState(global_random_seed).randint(1, 5, size=n_samples)
    X_repeat = np.repeat(X, sample_weight, axis=0)

    km = KMeans(init=centers, n_init=1, n_clusters=n_clusters, random_state=global_random_seed)

    km_weighted = clone(km).fit(X, sample_weight=sample_weight)
    repeated_labels = np.repeat(km_weighted.labels_, sample_weight)
    km_repeated = clone(km).fit(X_repeat)

    assert_array_equal(km_repeated.labels_, repeated_labels)
    assert_allclose(km_weighted.inertia_, km_repeated.inertia_)
    assert_allclose(_sort_centers(km_weighted.cluster_centers_), _sort_centers(km_repeated.cluster_centers_))


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)], ids=data_containers_ids)
def test_unit_weights_vs_no_weights(input_data, global_random_seed):
    # Check that not passing sample weights should be equivalent to passing
    # sample weights all equal to one.
    sample_weight = np.ones(n_samples)

    km = KMeans(n_clusters=n_clusters, random_state=global_random_seed, n_init=1)
    km_none = clone(km).fit(input_data, sample_weight=None)
    km_ones = clone(km).fit(input_data, sample_weight=sample_weight)

    assert_array_equal(_np(km_none.labels_), _np(km_ones.labels_))
    assert_allclose(km_none.cluster_centers_, km_ones.cluster_centers_)


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)], ids=data_containers_ids)
def test_scaled_weights(input_data, global_random_seed):
    # Check that scaling all sample weights by a common factor
    # shouldn't change the result
    sample_weight = np.random.RandomState(global_random_seed).uniform(size=n_samples)

    km = KMeans(n_clusters=n_clusters, random_state=global_random_seed, n_init=1)
    km_orig = clone(km).fit(input_data, sample_weight=sample_weight)
    km_scaled = clone(km).fit(input_data, sample_weight=0.5 * sample_weight)

    assert_array_equal(_np(km_orig.labels_), _np(km_scaled.labels_))
    assert_allclose(km_orig.cluster_centers_, km_scaled.cluster_centers_)


def test_kmeans_elkan_iter_attribute():
    # Regression test on bad n_iter_ value. Previous bug n_iter_ was one off
    # it's right value (#11340).
    km = KMeans(algorithm="elkan", max_iter=1).fit(X)
    assert km.n_iter_ == 1


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
def test_kmeans_empty_cluster_relocated(array_constr):
    # check that empty clusters are correctly relocated when using sample
    # weights (#13486)
    X = array_constr([[-1], [1]])
    sample_weight = [1.9, 0.1]
    init = np.array([[-1], [10]])

    km = KMeans(n_clusters=2, init=init, n_init=1)
    km.fit(X, sample_weight=sample_weight)

    assert len(set(_np(km.labels_))) == 2
    assert_allclose(km.cluster_centers_, [[-1], [1]])


def test_result_equal_in_diff_n_threads(global_random_seed):
    # Check that KMeans gives the same results in parallel mode than in sequential mode
    # (scikit-learn limits OpenMP; daskmeans's parallelism is dask's threads: both here).
    import dask

    rnd = np.random.RandomState(global_random_seed)
    X = rnd.normal(size=(50, 10))
    Xd = dask_array(X)

    with threadpool_limits(limits=1, user_api="openmp"), dask.config.set(scheduler="synchronous"):
        result_1 = KMeans(n_clusters=n_clusters, random_state=global_random_seed).fit(Xd).labels_.compute()
    with threadpool_limits(limits=2, user_api="openmp"), dask.config.set(scheduler="threads", num_workers=2):
        result_2 = KMeans(n_clusters=n_clusters, random_state=global_random_seed).fit(Xd).labels_.compute()
    assert_array_equal(result_1, result_2)


def test_warning_elkan_1_cluster():
    # Check warning messages specific to KMeans
    with pytest.warns(RuntimeWarning, match="algorithm='elkan' doesn't make sense for a single cluster"):
        KMeans(n_clusters=1, algorithm="elkan").fit(X)


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("algo", ["lloyd", "elkan"])
def test_k_means_1_iteration(array_constr, algo, global_random_seed):
    # check the results after a single iteration (E-step M-step E-step) by
    # comparing against a pure python implementation.
    X = np.random.RandomState(global_random_seed).uniform(size=(100, 5))
    init_centers = X[:5]
    X = array_constr(X)

    def py_kmeans(X, init):
        new_centers = init.copy()
        labels = pairwise_distances_argmin(X, init)
        for label in range(init.shape[0]):
            new_centers[label] = X[labels == label].mean(axis=0)
        labels = pairwise_distances_argmin(X, new_centers)
        return labels, new_centers

    py_labels, py_centers = py_kmeans(_np(X) if isinstance(X, da.Array) else X, init_centers)

    cy_kmeans = KMeans(n_clusters=5, n_init=1, init=init_centers, algorithm=algo, max_iter=1).fit(X)
    cy_labels = _np(cy_kmeans.labels_)
    cy_centers = cy_kmeans.cluster_centers_

    assert_array_equal(py_labels, cy_labels)
    assert_allclose(py_centers, cy_centers)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inertia(dtype, global_random_seed):
    # scikit-learn tests its _inertia_(dense/sparse) helpers; here the same sums through
    # the estimator: inertia_ and score(X, sample_weight=...) are weighted sums of squared
    # distances to the nearest (assigned) centre.
    rng = np.random.RandomState(global_random_seed)
    X, _ = make_blobs(100, n_features=10, centers=5, random_state=global_random_seed)
    X = X.astype(dtype)
    sample_weight = rng.uniform(0.5, 2.0, size=100).astype(dtype)

    km = KMeans(5, n_init=1, random_state=global_random_seed).fit(X, sample_weight=sample_weight)
    c = km.cluster_centers_.astype(np.float64)
    labels = _np(km.labels_)
    distances = ((X.astype(np.float64) - c[labels]) ** 2).sum(axis=1)
    rtol = 1e-4 if dtype == np.float32 else 1e-6
    assert_allclose(km.inertia_, np.sum(distances * sample_weight), rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_with_sample_weight(dtype, global_random_seed):
    # The score half of scikit-learn's test_inertia: -sum(w * min squared distance).
    rng = np.random.RandomState(global_random_seed)
    X = rng.randn(100, 10).astype(dtype)
    w = rng.uniform(size=100).astype(dtype)
    km = KMeans(5, random_state=global_random_seed).fit(X)
    d2 = euclidean_distances(X.astype(np.float64), km.cluster_centers_.astype(np.float64), squared=True).min(axis=1)
    rtol = 1e-4 if dtype == np.float32 else 1e-6
    assert_allclose(km.score(X, sample_weight=w), -np.sum(w * d2), rtol=rtol)
    assert_allclose(km.score(X), -np.sum(d2), rtol=rtol)


def test_n_init_auto():
    est = KMeans(n_init="auto", init="k-means++")
    est.fit(X)
    assert est._n_init == 1

    est = KMeans(n_init="auto", init="random")
    est.fit(X)
    assert est._n_init == 10


def test_sample_weight_unchanged():
    # Check that sample_weight is not modified in place by KMeans (#17204)
    X = np.array([[1], [2], [4]])
    sample_weight = np.array([0.5, 0.2, 0.3])
    KMeans(n_clusters=2, random_state=0).fit(X, sample_weight=sample_weight)

    assert_array_equal(sample_weight, np.array([0.5, 0.2, 0.3]))


@pytest.mark.parametrize(
    "param, match",
    [
        ({"n_clusters": n_samples + 1}, r"n_samples.* should be >= n_clusters"),
        ({"init": X[:2]}, r"The shape of the initial centers .* does not match the number of clusters"),
        (
            {"init": lambda X_, k, random_state: X_[:2]},
            r"The shape of the initial centers .* does not match the number of clusters",
        ),
        ({"init": X[:8, :2]}, r"The shape of the initial centers .* does not match the number of features of the data"),
        (
            {"init": lambda X_, k, random_state: X_[:8, :2]},
            r"The shape of the initial centers .* does not match the number of features of the data",
        ),
    ],
)
def test_wrong_params(param, match):
    # Check that error are raised with clear error message when wrong values
    # are passed for the parameters
    # Set n_init=1 by default to avoid warning with precomputed init
    km = KMeans(n_init=1)
    with pytest.raises(ValueError, match=match) as info:
        km.set_params(**param).fit(X)
    assert isinstance(info.value, InputError) and "\n" not in str(info.value)  # daskmeans: one line, with the fix


@pytest.mark.parametrize(
    "param, match",
    [({"x_squared_norms": X[:2]}, r"The length of x_squared_norms .* should be equal to the length of n_samples")],
)
def test_kmeans_plusplus_wrong_params(param, match):
    with pytest.raises(ValueError, match=match):
        kmeans_plusplus(X, n_clusters, **param)


@pytest.mark.parametrize("input_data", [X] + X_as_any_csr + [dask_array(X)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kmeans_plusplus_output(input_data, dtype, global_random_seed):
    # Check for the correct number of seeds and all positive values
    data = input_data.astype(dtype)
    centers, indices = kmeans_plusplus(data, n_clusters, random_state=global_random_seed)

    # Check there are the correct number of indices and that all indices are
    # positive and within the number of samples
    assert indices.shape[0] == n_clusters
    assert (indices >= 0).all()
    assert (indices <= data.shape[0]).all()

    # Check for the correct number of seeds and that they are bound by the data
    assert centers.shape[0] == n_clusters
    dense = np.asarray(data.toarray() if sp.issparse(data) else _np(data))
    assert (centers.max(axis=0) <= dense.max(axis=0)).all()
    assert (centers.min(axis=0) >= dense.min(axis=0)).all()

    # Check that indices correspond to reported centers
    # Use X for comparison rather than data, test still works against centers
    # calculated with sparse data.
    assert_allclose(X[indices].astype(dtype), centers)
    assert centers.dtype == dtype  # X's own rows, in X's dtype


@pytest.mark.parametrize("x_squared_norms", [row_norms(X, squared=True), None])
def test_kmeans_plusplus_norms(x_squared_norms):
    # Check that defining x_squared_norms returns the same as default=None.
    centers, indices = kmeans_plusplus(X, n_clusters, x_squared_norms=x_squared_norms)

    assert_allclose(X[indices], centers)


def test_kmeans_plusplus_dataorder(global_random_seed):
    # Check that memory layout does not effect result
    centers_c, _ = kmeans_plusplus(X, n_clusters, random_state=global_random_seed)

    X_fortran = np.asfortranarray(X)

    centers_fortran, _ = kmeans_plusplus(X_fortran, n_clusters, random_state=global_random_seed)

    assert_allclose(centers_c, centers_fortran)


@pytest.mark.parametrize("kwargs", ({"init": np.str_("k-means++")}, {"init": [[0, 0], [1, 1]], "n_init": 1}))
def test_kmeans_with_array_like_or_np_scalar_init(kwargs):
    """Check that init works with numpy scalar strings.

    Non-regression test for #21964.
    """
    X = np.asarray([[0, 0], [0.5, 0], [0.5, 1], [1, 1]], dtype=np.float64)

    clustering = KMeans(n_clusters=2, **kwargs)
    # Does not raise
    clustering.fit(X)


def test_feature_names_out():
    """Check `feature_names_out` for `KMeans`."""
    class_name = KMeans.__name__.lower()
    kmeans = KMeans()
    kmeans.fit(X)
    n_clusters = kmeans.cluster_centers_.shape[0]

    names_out = kmeans.get_feature_names_out()
    assert_array_equal([f"{class_name}{i}" for i in range(n_clusters)], names_out)


@pytest.mark.parametrize("csr_container", CSR_CONTAINERS + [None])
def test_predict_does_not_change_cluster_centers(csr_container):
    """Check that predict does not change cluster centers.

    Non-regression test for gh-24253.
    """
    X, _ = make_blobs(n_samples=200, n_features=10, centers=10, random_state=0)
    if csr_container is not None:
        X = csr_container(X)

    kmeans = KMeans()
    y_pred1 = kmeans.fit_predict(X)
    # Make cluster_centers readonly
    kmeans.cluster_centers_ = create_memmap_backed_data(kmeans.cluster_centers_)
    kmeans.labels_ = create_memmap_backed_data(kmeans.labels_)

    y_pred2 = kmeans.predict(X)
    assert_array_equal(y_pred1, y_pred2)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_sample_weight_init(init, global_random_seed):
    """Check that sample weight is used during init (scikit-learn calls the private
    `_init_centroids`; here the initial centres of a fit, `init_centers_`)."""
    rng = np.random.RandomState(global_random_seed)
    X, _ = make_blobs(n_samples=200, n_features=10, centers=10, random_state=global_random_seed)

    def initial(sample_weight):
        km = KMeans(5, init=init, n_init=1, max_iter=1, random_state=global_random_seed)
        return km.fit(X, sample_weight=sample_weight).init_centers_

    clusters_weighted = initial(rng.uniform(size=X.shape[0]))
    clusters = initial(np.ones(X.shape[0]))
    with pytest.raises(AssertionError):
        assert_allclose(clusters_weighted, clusters)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_sample_weight_zero(init, global_random_seed):
    """Check that if sample weight is 0, this sample won't be chosen (scikit-learn calls
    the private `_init_centroids`; here the initial centres of a fit)."""
    rng = np.random.RandomState(global_random_seed)
    X, _ = make_blobs(n_samples=100, n_features=5, centers=5, random_state=global_random_seed)
    sample_weight = rng.uniform(size=X.shape[0])
    sample_weight[::2] = 0

    km = KMeans(10, init=init, n_init=1, max_iter=1, random_state=global_random_seed)
    clusters_weighted = km.fit(X, sample_weight=sample_weight).init_centers_
    # No center should be one of the 0 sample weight point
    # (i.e. be at a distance=0 from it)
    d = euclidean_distances(X[::2], clusters_weighted)
    assert not np.any(np.isclose(d, 0))


def test_kmeans_plusplus_sample_weight_zero(global_random_seed):
    # The public function's half of test_sample_weight_zero (same weights).
    rng = np.random.RandomState(global_random_seed)
    X, _ = make_blobs(n_samples=100, n_features=5, centers=5, random_state=global_random_seed)
    sample_weight = rng.uniform(size=X.shape[0])
    sample_weight[::2] = 0
    centers, indices = kmeans_plusplus(X, 10, sample_weight=sample_weight, random_state=global_random_seed)
    assert np.all(indices % 2 == 1)
    ref_centers, ref_indices = sk_kmeans_plusplus(X, 10, sample_weight=sample_weight, random_state=global_random_seed)
    assert_array_equal(indices, ref_indices)  # the same draws as scikit-learn's


@pytest.mark.parametrize("array_constr", data_containers, ids=data_containers_ids)
@pytest.mark.parametrize("algorithm", ["lloyd", "elkan"])
def test_relocating_with_duplicates(algorithm, array_constr):
    """Check that kmeans stops when there are more centers than non-duplicate samples

    Non-regression test for issue:
    https://github.com/scikit-learn/scikit-learn/issues/28055
    """
    X = np.array([[0, 0], [1, 1], [1, 1], [1, 0], [0, 1]])
    km = KMeans(n_clusters=5, init=X, algorithm=algorithm)

    msg = r"Number of distinct clusters \(4\) found smaller than n_clusters \(5\)"
    with pytest.warns(ConvergenceWarning, match=msg):
        km.fit(array_constr(X))

    assert km.n_iter_ == 1


# -- beyond the port: scikit-learn itself as the reference (same seed, same draws) -------------------------------


@pytest.mark.parametrize("init", ["random", "k-means++"])
def test_same_result_as_sklearn_for_a_seed(init, global_random_seed):
    Xb, _ = make_blobs(300, n_features=4, centers=6, random_state=global_random_seed)
    ours = KMeans(6, init=init, random_state=global_random_seed).fit(Xb)
    ref = SKKMeans(6, init=init, random_state=global_random_seed).fit(Xb)
    assert ours._n_init == ref._n_init
    assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-8)
    assert_array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    assert_allclose(ours.inertia_, ref.inertia_, rtol=1e-10)


def test_random_init_draws_rows_as_sklearn(global_random_seed):
    rng = np.random.RandomState(global_random_seed)
    seeds = rng.choice(n_samples, size=n_clusters, replace=False, p=np.ones(n_samples) / n_samples)
    for data in (X, dask_array(X)):
        km = KMeans(n_clusters, init="random", n_init=1, max_iter=1, random_state=global_random_seed).fit(data)
        assert_allclose(km.init_centers_, X[seeds], rtol=1e-12)  # init_centers_ went through the centring


def test_random_init_of_pixels_is_in_centres_units():
    P = np.random.RandomState(0).randint(0, 256, size=(50, 12)).astype(np.uint8)
    km = KMeans(4, init="random", n_init=1, max_iter=1, random_state=3).fit(P)
    seeds = np.random.RandomState(3).choice(50, size=4, replace=False, p=np.ones(50) / 50)
    assert_allclose(km.init_centers_, P[seeds] / 255.0)


def test_kmeans_plusplus_same_draws_as_sklearn(global_random_seed):
    ours = kmeans_plusplus(X, n_clusters, random_state=global_random_seed)
    ref = sk_kmeans_plusplus(X, n_clusters, random_state=global_random_seed)
    assert_array_equal(ours[1], ref[1])
    assert_array_equal(ours[0], ref[0])


def test_callable_init_sees_x_as_given():
    seen = {}

    def init(X_, k, random_state):
        seen["X"], seen["rs"] = X_, random_state
        return X_[:k] + 0.0

    Xd = dask_array(X)
    km = KMeans(n_clusters, init=init, max_iter=1).fit(Xd)
    assert seen["X"] is Xd and isinstance(seen["rs"], np.random.RandomState)
    assert km._n_init == 10  # scikit-learn's "auto" for a callable
    assert_allclose(km.init_centers_, X[:n_clusters])


def test_sparse_too_large_to_densify_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(daskmeans.estimator, "SPARSE_DENSE_LIMIT", 1000)
    with pytest.raises(InputError, match=r"dense copy would take .* GiB, more than daskmeans densifies") as info:
        KMeans(n_clusters).fit(X_as_any_csr[0])
    assert "\n" not in str(info.value)


def test_copy_x_is_a_parameter_and_x_is_never_written():
    X32 = X.astype(np.float32)
    before = X32.copy()
    km = KMeans(n_clusters, copy_x=False, random_state=0).fit(X32)
    assert km.get_params()["copy_x"] is False
    assert_array_equal(X32, before)
