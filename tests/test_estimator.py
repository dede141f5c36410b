"""daskmeans.KMeans as a scikit-learn estimator, against scikit-learn's KMeans as the reference.

Same initial centres -> same labels and centres; the reproductions of reported failures
(NaN, no features, far-from-origin float32 and int64 data, complex, sparse,
unfitted use) give scikit-learn's answer or a clear error.
"""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
import textwrap
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone, is_clusterer
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.validation import check_is_fitted

from daskmeans import KMeans
from daskmeans.errors import InputError


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(600, n_features=5, centers=4, random_state=2, cluster_std=1.5)
    return X, y


def _sk(X, k, init, **kw):
    return SKKMeans(k, init=init, n_init=1, algorithm="lloyd", **kw).fit(X)


# -- a scikit-learn citizen -------------------------------------------------------------------


def test_estimator_api():
    km = KMeans(3)
    assert is_clusterer(km)
    assert get_tags(km).input_tags.sparse is True  # densified, as scikit-learn takes CSR
    assert get_tags(km).transformer_tags.preserves_dtype == ["float64", "float32"]
    assert clone(km).get_params() == km.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        km.set_params(bogus=1)
    with pytest.raises(NotFittedError):
        check_is_fitted(km)
    X = np.random.RandomState(0).uniform(size=(20, 2))
    for method in ("predict", "transform", "score"):
        with pytest.raises(NotFittedError, match="not fitted"):
            getattr(km, method)(X)
        with pytest.raises(InputError):  # the command line's one-line error too
            getattr(km, method)(X)
    km.fit(X)
    check_is_fitted(km)
    assert km.n_features_in_ == 2
    np.testing.assert_array_equal(km.get_feature_names_out(), ["kmeans0", "kmeans1", "kmeans2"])


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_clusters=0), "n_clusters=0 must be an integer >= 1; pass n_clusters=1 or more"),
        (dict(random_state="x"), "random_state='x' must be"),
        (dict(tol=-1.0), "tol=-1.0 must be"),
        (dict(metric="hamming"), "metric='hamming' is not one of l2, l1, cosine"),
        (dict(algorithm="kd-tree"), "algorithm='kd-tree' is not one of auto, lloyd, hamerly, elkan, full"),
        (dict(chunk_size=0), "chunk_size=0 must be"),
    ],
)
def test_bad_parameters_name_value_and_fix(params, match):
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.random.RandomState(0).uniform(size=(20, 2))
    with pytest.raises(InvalidParameterError, match=match) as info:
        KMeans(**params).fit(X)
    assert isinstance(info.value, InputError) and "; pass " in str(info.value)
    assert "\n" not in str(info.value)


def test_grid_search_and_pipeline(blobs):
    X, _ = blobs
    pipe = Pipeline([("scale", StandardScaler()), ("km", KMeans(random_state=0, chunk_size=200))])
    search = GridSearchCV(pipe, {"km__n_clusters": [2, 4]}, cv=2).fit(X)
    assert search.best_params_ == {"km__n_clusters": 4}  # score = -inertia: more clusters, better
    labels = search.best_estimator_.predict(X)
    assert labels.shape == (600,) and set(labels) == {0, 1, 2, 3}
    # as a transformer: distances to the 4 centres feed the next step
    D = Pipeline([("km", KMeans(4, random_state=0)), ("scale", StandardScaler())]).fit_transform(X)
    assert D.shape == (600, 4)


def test_feature_names_in():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.RandomState(0).uniform(size=(30, 3)), columns=["a", "b", "c"])
    km = KMeans(2, random_state=0).fit(X)
    np.testing.assert_array_equal(km.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    with pytest.raises(ValueError, match="feature names"):
        km.predict(X[["a", "c", "b"]])


# -- input validation at the edge --------------------------------------------------------------


def _nan_X():
    X = np.random.RandomState(0).uniform(size=(10, 3))
    X[0, 0] = np.nan
    return X


@pytest.mark.parametrize(
    "make, match",
    [
        (_nan_X, "Input X contains NaN"),
        (lambda: np.where(np.eye(10, 3) > 0, np.inf, 1.0), "Input X contains infinity"),
        (lambda: da.from_array(_nan_X(), chunks=3), "Input X contains NaN or infinity"),
        (lambda: np.empty((12, 0)), r"0 feature\(s\) \(shape=\(12, 0\)\) while a minimum of 1 is required"),
        (lambda: da.zeros((12, 0), chunks=4), r"0 feature\(s\) \(shape=\(12, 0\)\)"),
        (lambda: np.empty((0, 3)), r"0 sample\(s\)"),
        (lambda: np.ones((6, 3), dtype=complex), "Complex data not supported; pass the real part"),
        (lambda: da.ones((6, 3), dtype=complex, chunks=2), "Complex data not supported"),
        (lambda: np.arange(6.0), "Expected 2D array, got 1D array.*Reshape your data"),
        (lambda: da.arange(6.0, chunks=3), "Expected 2D array, got 1D array.*reshape"),
        (lambda: np.array([["a", "b"], ["c", "d"]] * 3), "could not convert|dtype"),
        (lambda: np.ones((2, 3)), "n_samples=2 should be >= n_clusters=3"),
    ],
)
def test_bad_input_is_one_clear_error(make, match):
    with pytest.raises(InputError, match=match) as info:
        KMeans(3, random_state=0).fit(make())
    assert "\n" not in str(info.value)


def test_nan_in_predict_input():
    km = KMeans(2, random_state=0).fit(np.random.RandomState(1).uniform(size=(20, 3)))
    with pytest.raises(InputError, match="NaN"):
        km.predict(_nan_X())
    lazy = km.predict(da.from_array(_nan_X(), chunks=4))  # dask: found when computed, never a wrong label
    with pytest.raises(InputError, match="NaN"):
        lazy.compute()
    with pytest.raises(InputError, match="X has 2 features, but KMeans is expecting 3"):
        km.predict(np.ones((4, 2)))


def test_pixels_and_numbers_do_not_mix():
    X = np.random.RandomState(0).randint(0, 256, size=(40, 6)).astype(np.uint8)
    km = KMeans(2, random_state=0).fit(X)
    with pytest.raises(InputError, match="fitted on uint8 pixels but X holds numbers"):
        km.predict(X.astype(np.float32))
    kf = KMeans(2, random_state=0).fit(X.astype(np.float32))
    with pytest.raises(InputError, match="fitted on numbers but X holds uint8 pixels"):
        kf.predict(X)


def test_images_are_flattened():
    imgs = np.random.RandomState(0).randint(0, 256, size=(60, 4, 4, 3)).astype(np.uint8)
    a = KMeans(3, random_state=0).fit(imgs)
    b = KMeans(3, random_state=0).fit(imgs.reshape(60, -1))
    assert a.n_features_in_ == 48
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.predict(imgs), b.labels_)


# -- precision and dtypes, against scikit-learn -----------------------------------------------


def test_float32_far_from_the_origin_agrees_with_sklearn():
    """Blobs shifted by 1e4 as float32, started from scikit-learn's own solution."""
    X, _ = make_blobs(300, centers=3, random_state=0)
    X = (X + 1e4).astype(np.float32)
    ref = SKKMeans(3, n_init=1, random_state=0).fit(X)
    km = KMeans(3, init=ref.cluster_centers_, chunk_size=64).fit(X)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    assert km.converged_ and km.n_iter_ <= 2
    assert km.cluster_centers_.dtype == np.float32
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(km.predict(X), ref.labels_)


def test_int64_timestamps_give_two_clusters():
    """int64 values 1.7e9 + [0, 1, 2, 10, 11, 12], k = 2: inertia 4 as scikit-learn."""
    X = (1_700_000_000 + np.array([0, 1, 2, 10, 11, 12], dtype=np.int64)).reshape(-1, 1)
    ref = SKKMeans(2, n_init=1, random_state=0).fit(X)
    km = KMeans(2, random_state=0).fit(X)
    assert ref.inertia_ == 4.0 and km.inertia_ == pytest.approx(4.0, abs=1e-9)
    assert km.cluster_centers_.dtype == np.float64
    np.testing.assert_array_equal(np.sort(km.cluster_centers_.ravel()), [1_700_000_001.0, 1_700_000_011.0])
    assert len(set(km.labels_[:3])) == 1 and len(set(km.labels_[3:])) == 1 and km.labels_[0] != km.labels_[3]
    np.testing.assert_array_equal(km.predict(X), km.labels_)


@pytest.mark.parametrize("dtype, centres", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int32, np.float64), (np.int64, np.float64),
    (np.int8, np.float64), (bool, np.float64), (np.float16, np.float64),
])
def test_dtype_rules_as_sklearn(dtype, centres):
    X, _ = make_blobs(200, n_features=3, centers=3, random_state=0)
    X = (X * 3).astype(dtype)
    init = X[[0, 50, 100]].astype(np.float64)
    km = KMeans(3, init=init).fit(X)
    ref = _sk(X, 3, init)
    assert km.cluster_centers_.dtype == centres == ref.cluster_centers_.dtype
    assert km.transform(X).dtype == centres
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-5, atol=1e-5)


def test_uint8_pixels_keep_their_scale():
    """uint8 stays the exact pixel path: centres in [0, 1], as scikit-learn on X / 255."""
    X = np.random.RandomState(3).randint(0, 256, size=(500, 12)).astype(np.uint8)
    init = X[:4] / 255.0
    km = KMeans(4, init=init, chunk_size=120).fit(X)
    ref = _sk(X / 255.0, 4, init)
    assert km.cluster_centers_.dtype == np.float32 and km.algorithm_ == "hamerly"
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-6)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    np.testing.assert_allclose(km.transform(X), ref.transform(X / 255.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunks", [(600,), (100,) * 6, (1, 299, 0, 300)])
def test_same_init_same_result_as_sklearn(blobs, chunks):
    X, _ = blobs
    X = X + 500.0  # off the origin: the centring matters
    init = X[[0, 1, 2, 3]]
    ref = _sk(X, 4, init)
    km = KMeans(4, init=init).fit(da.from_array(X, chunks=(chunks, 5)))
    assert isinstance(km.labels_, da.Array)
    assert tuple(c for c in km.labels_.chunks[0] if c) == tuple(c for c in chunks if c)
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12, atol=1e-9)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)
    assert km.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(km.init_centers_, init)


def test_kmeans_plusplus_on_centred_data_draws_like_sklearn(blobs):
    X, _ = blobs
    km = KMeans(4, random_state=5, chunk_size=150).fit(X + 1e3)
    ref = SKKMeans(4, n_init=1, random_state=5, algorithm="lloyd").fit(X + 1e3)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-10)


def test_algorithm_auto_resolves():
    X = np.random.RandomState(0).randint(0, 256, size=(50, 4)).astype(np.uint8)
    assert KMeans(2, random_state=0).fit(X).algorithm_ == "hamerly"
    long_rows = np.random.RandomState(0).randint(0, 256, size=(50, 3072)).astype(np.uint8)
    assert KMeans(2, random_state=0).fit(long_rows).algorithm_ == "hamerly"
    assert KMeans(2, random_state=0, metric="l1").fit(long_rows).algorithm_ == "lloyd"
    assert KMeans(2, random_state=0).fit(X.astype(np.float32)).algorithm_ == "lloyd"
    with pytest.raises(InputError, match="algorithm='hamerly' needs uint8 data"):
        KMeans(2, algorithm="hamerly").fit(X.astype(np.int64))


# -- transform, score, sample_weight ------------------------------------------------------------


def test_transform_and_score_match_sklearn(blobs):
    X, _ = blobs
    init = X[[0, 1, 2, 3]]
    ref = _sk(X, 4, init)
    km = KMeans(4, init=init, chunk_size=128).fit(X)
    np.testing.assert_allclose(km.transform(X), ref.transform(X), rtol=1e-10, atol=1e-10)
    assert km.score(X) == pytest.approx(ref.score(X), rel=1e-10)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-10)
    w = np.random.RandomState(0).uniform(size=len(X))
    assert km.score(X, sample_weight=w) == pytest.approx(ref.score(X, sample_weight=w), rel=1e-10)
    Xd = da.from_array(X, chunks=(100, 5))
    D = km.transform(Xd)
    assert isinstance(D, da.Array) and D.chunks == ((100,) * 6, (4,))  # lazy, X's row chunks
    np.testing.assert_allclose(D.compute(), ref.transform(X), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(KMeans(4, init=init).fit_transform(X), ref.transform(X), rtol=1e-10, atol=1e-10)
    assert isinstance(KMeans(4, init=init).fit_transform(Xd), da.Array)


def test_transform_l1_is_manhattan():
    X = np.random.RandomState(0).uniform(size=(40, 3))
    km = KMeans(3, metric="l1", random_state=0).fit(X)
    want = np.abs(X[:, None, :] - km.cluster_centers_[None]).sum(-1)
    np.testing.assert_allclose(km.transform(X), want, rtol=1e-12)
    np.testing.assert_array_equal(km.predict(X), want.argmin(1))


def test_equal_sample_weights_scale_the_inertia_only(blobs):
    X, _ = blobs
    init = X[[0, 1, 2, 3]]
    w = np.full(len(X), 2.5)
    ref = _sk(X, 4, init).fit(X, sample_weight=w)
    km = KMeans(4, init=init, chunk_size=200).fit(X, sample_weight=w)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


def test_zero_weights_leave_rows_out(blobs):
    X, _ = blobs
    init = X[[0, 1, 2, 3]]
    w = (np.arange(len(X)) % 3 != 0).astype(float)  # every third row weighs nothing
    ref = _sk(X, 4, init).fit(X, sample_weight=w)
    km = KMeans(4, init=init).fit(da.from_array(X, chunks=(150, 5)), sample_weight=da.from_array(w, chunks=150))
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)  # the left-out rows get labels too
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


@pytest.mark.parametrize("w, match", [
    (np.ones(61), r"sample_weight.shape == \(61,\), expected \(60,\)"),
    (np.ones((60, 2)), "sample_weight.shape"),
    (np.zeros(60), "at least one non-zero"),
    (-np.ones(60), "Negative values in sample_weight"),
    (np.r_[np.nan, np.ones(59)], "NaN"),
    (np.r_[np.zeros(58), 1.0, 1.0], "only 2 samples have a positive sample_weight"),
])
def test_bad_sample_weights(w, match):
    X = np.random.RandomState(0).uniform(size=(60, 2))
    with pytest.raises(InputError, match=match):
        KMeans(3, random_state=0).fit(X, sample_weight=w)


# -- warnings and verbosity -------------------------------------------------------------------


def test_fewer_distinct_points_than_clusters_warns():
    X = np.array([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    with pytest.warns(ConvergenceWarning, match=r"Number of distinct clusters \(2\) found smaller than n_clusters \(3\)"):
        km = KMeans(3, random_state=0).fit(X)
    assert len(set(km.labels_)) == 2


def test_explicit_init_with_n_init_warns():
    X = np.random.RandomState(0).uniform(size=(30, 2))
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        KMeans(2, init=X[:2], n_init=3).fit(X)


def test_verbose(capsys):
    X = np.random.RandomState(0).uniform(size=(60, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about either
        KMeans(3, random_state=0).fit(X)
    assert capsys.readouterr().out == ""
    KMeans(3, random_state=0, verbose=1).fit(X)
    out = capsys.readouterr().out
    assert "Iteration 1, inertia" in out and "Converged at iteration" in out


# -- checkpoint states stay in X's units ------------------------------------------------------


def test_checkpoint_states_of_float_data_are_in_x_units():
    X, _ = make_blobs(300, n_features=3, centers=3, random_state=0)
    X = X + 1e3
    states = []
    full = KMeans(3, random_state=0, tol=0).fit(X, on_iteration=lambda s: states.append(copy.deepcopy(s)))
    assert len(states) == full.n_iter_ >= 2
    np.testing.assert_allclose(states[-1]["centers"], full.cluster_centers_, rtol=1e-12)
    np.testing.assert_allclose(states[0]["init"], full.init_centers_, rtol=1e-12)
    again = KMeans(3, random_state=0, tol=0).fit(X, resume=states[0])
    np.testing.assert_array_equal(again.labels_, full.labels_)
    np.testing.assert_allclose(again.cluster_centers_, full.cluster_centers_, rtol=1e-12)
    assert again.n_iter_ == full.n_iter_


# -- pickling: loads and predicts in a process with no cluster ------------------------------------

_LOAD_AND_PREDICT = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import dask.array as da
    X = np.load(sys.argv[1])
    for path in sys.argv[2:]:
        km = pickle.load(open(path, "rb"))
        labels = km.labels_.compute() if isinstance(km.labels_, da.Array) else km.labels_
        np.testing.assert_array_equal(km.predict(X), labels)
        np.testing.assert_array_equal(km.predict(da.from_array(X, chunks=50)).compute(), labels)
        print("ok", type(km.labels_).__name__, km.transform(X[:2]).shape)
    """
)


@pytest.mark.distributed
def test_pickled_models_predict_in_a_fresh_process_without_a_cluster(tmp_path, blobs):
    """Fitted on NumPy (threads) and on a LocalCluster: both load and predict where no cluster exists."""
    from distributed import Client, LocalCluster

    X, _ = blobs
    local = KMeans(4, random_state=0, chunk_size=150).fit(X)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, Client(cluster):
        km = KMeans(4, random_state=0).fit(da.from_array(X, chunks=(150, 5)))
        blob = pickle.dumps(km)
        expected = km.labels_.compute()
    remote = pickle.loads(blob)  # the cluster is gone: the labels travelled as values
    assert isinstance(remote.labels_, da.Array) and remote.labels_.chunks == ((150,) * 4,)
    np.testing.assert_array_equal(remote.labels_.compute(), expected)
    np.testing.assert_array_equal(remote.labels_.compute(), local.labels_)  # same draws, same result
    np.testing.assert_allclose(remote.cluster_centers_, local.cluster_centers_, rtol=1e-12)

    np.save(tmp_path / "X.npy", X)
    (tmp_path / "local.pkl").write_bytes(pickle.dumps(local))
    (tmp_path / "remote.pkl").write_bytes(blob)
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_PREDICT, *(str(tmp_path / f) for f in ("X.npy", "local.pkl", "remote.pkl"))],
        capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["ok ndarray (2, 4)", "ok Array (2, 4)"]


@pytest.mark.parametrize("fit_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_dtype", [np.float32, np.float64])
def test_transform_dtype_follows_sklearn(fit_dtype, x_dtype):
    """float32 distances only when both the data and the fitted centres are float32."""
    X = np.random.RandomState(0).normal(size=(60, 3))
    km = KMeans(3, random_state=0, n_init=1).fit(X.astype(fit_dtype))
    ref = SKKMeans(3, random_state=0, n_init=1).fit(X.astype(fit_dtype))
    assert km.transform(X.astype(x_dtype)).dtype == ref.transform(X.astype(x_dtype)).dtype
