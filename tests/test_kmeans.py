"""Distributed k-means against scikit-learn and serial NumPy references."""

from __future__ import annotations

import logging

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import kmeans_plusplus as sk_kmeans_plusplus
from sklearn.datasets import make_blobs

from daskmeans import KMeans, kernels
from daskmeans.errors import InputError
from daskmeans.kmeans import as_rows, kmeans_plusplus

# chunkings of 3,000 rows: one chunk, even, uneven, with empty chunks
CHUNKINGS = [(3000,), (500,) * 6, (1, 999, 1234, 766), (0, 1500, 0, 1500)]


@pytest.fixture(scope="module")
def pixels():
    """uint8 'images' of 6 blobs in 20 features, and the same in [0, 1] float64."""
    Xf, y = make_blobs(3000, n_features=20, centers=6, random_state=1, cluster_std=2.0)
    X = np.clip((Xf - Xf.min()) / (Xf.max() - Xf.min()) * 255, 0, 255).astype(np.uint8)
    return X, X / 255.0, y


def chunked(X, chunks):
    return da.from_array(X, chunks=(chunks, X.shape[1]))


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("seed", [0, 3, 11])
def test_kmeans_plusplus_draws_like_sklearn(pixels, chunks, seed):
    X, Xs, _ = pixels
    ref_centers, ref_idx = sk_kmeans_plusplus(Xs, 6, random_state=seed)
    centers, idx = kmeans_plusplus(chunked(X, chunks), 6, seed)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(centers, ref_centers, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_lloyd_matches_sklearn_with_same_init(pixels, chunks, scheduler):
    X, Xs, _ = pixels
    init = np.random.default_rng(5).uniform(size=(6, 20)) * 0.5 + 0.25
    ref = SKKMeans(6, init=init, n_init=1, tol=1e-4, algorithm="lloyd").fit(Xs)
    with dask.config.set(scheduler=scheduler):
        km = KMeans(6, init=init, tol=1e-4).fit(chunked(X, chunks))
    assert isinstance(km.labels_, da.Array)
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-6)
    assert km.n_iter_ == ref.n_iter_
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


def test_centres_bit_identical_whatever_the_chunking(pixels):
    X, _, _ = pixels
    runs = [KMeans(6, random_state=7, tol=0).fit(chunked(X, c)) for c in CHUNKINGS]
    for km in runs[1:]:
        np.testing.assert_array_equal(km.cluster_centers_, runs[0].cluster_centers_)
        np.testing.assert_array_equal(km.labels_.compute(), runs[0].labels_.compute())
        assert km.n_iter_ == runs[0].n_iter_


def test_centres_are_the_exact_means(pixels):
    """Centres = mean of their members' pixels / 255, computed here in float64 from scratch."""
    X, _, _ = pixels
    km = KMeans(6, random_state=0, tol=0).fit(chunked(X, (700,) * 4 + (200,)))
    labels = km.labels_.compute()
    for j in range(6):
        ref = X[labels == j].astype(np.float64).mean(axis=0) / 255
        np.testing.assert_allclose(km.cluster_centers_[j], ref.astype(np.float32), rtol=0, atol=0)


def test_numpy_input_gives_numpy_labels_and_matches_sklearn(pixels):
    X, Xs, _ = pixels
    init = sk_kmeans_plusplus(Xs, 6, random_state=2)[0]
    km = KMeans(6, init=init, chunk_size=400).fit(X)
    ref = SKKMeans(6, init=init, n_init=1).fit(Xs)
    assert isinstance(km.labels_, np.ndarray)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_array_equal(km.predict(X), ref.predict(Xs))


def test_float64_input_matches_sklearn():
    X, _ = make_blobs(2000, n_features=5, centers=4, random_state=3)
    ref = SKKMeans(4, n_init=1, random_state=1).fit(X)
    km = KMeans(4, random_state=1, chunk_size=300).fit(X)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, rtol=1e-12)
    assert km.cluster_centers_.dtype == np.float64
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-10)


def test_image_shaped_input_is_flattened(pixels):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(300, 4, 4, 3), dtype=np.uint8)
    km = KMeans(3, random_state=0).fit(da.from_array(imgs, chunks=(100, 4, 4, 3)))
    ref = SKKMeans(3, init=km.init_centers_, n_init=1).fit(imgs.reshape(300, -1) / 255.0)
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)
    assert km.cluster_centers_.shape == (3, 48)


def test_max_iter_stops_and_labels_match_final_centres(pixels):
    X, Xs, _ = pixels
    init = np.full((6, 20), 0.5) + np.linspace(-0.2, 0.2, 6)[:, None]
    km = KMeans(6, init=init, max_iter=1, tol=0).fit(chunked(X, (1000,) * 3))
    assert km.n_iter_ == 1 and not km.converged_
    d = ((Xs[:, None, :] - km.cluster_centers_[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(km.labels_.compute(), d.argmin(1))
    assert km.inertia_ == pytest.approx(d.min(1).sum(), rel=1e-5)


def test_history_records_every_iteration(pixels):
    X, _, _ = pixels
    km = KMeans(6, random_state=4, tol=0).fit(chunked(X, (1000,) * 3))
    h = km.history_
    assert [e["iteration"] for e in h] == list(range(1, km.n_iter_ + 1))
    assert h[0]["changed"] == 3000 and h[-1]["changed"] == 0 and km.converged_
    assert all(a["inertia"] >= b["inertia"] - 1e-6 for a, b in zip(h, h[1:]))  # Lloyd never increases it


def test_empty_cluster_relocated_like_sklearn(pixels, caplog):
    X, Xs, _ = pixels
    init = sk_kmeans_plusplus(Xs, 5, random_state=0)[0]
    init = np.vstack([init, np.full((1, 20), 5.0)])  # far from every point: empty at once
    ref = SKKMeans(6, init=init, n_init=1, algorithm="lloyd").fit(Xs)
    with caplog.at_level(logging.INFO, logger="daskmeans"):
        km = KMeans(6, init=init).fit(chunked(X, (1000,) * 3))
    assert "empty cluster" in caplog.text
    assert km.history_[0]["empty"] == 1
    assert np.bincount(km.labels_.compute(), minlength=6).min() > 0
    np.testing.assert_array_equal(km.labels_.compute(), ref.labels_)
    np.testing.assert_allclose(km.cluster_centers_, ref.cluster_centers_, atol=1e-6)


def _notebook_l1(X, centers, iters):
    """The original notebook's variant, serially: L1 assignment, mean update."""
    for _ in range(iters):
        d = np.abs(X[:, None, :] - centers[None]).sum(-1)
        lab = d.argmin(1)
        centers = np.stack([X[lab == j].mean(0) if (lab == j).any() else centers[j] for j in range(len(centers))])
    return centers, np.abs(X[:, None, :] - centers[None]).sum(-1).argmin(1)


def test_l1_metric_is_the_notebook_variant(pixels):
    X, Xs, _ = pixels
    init = sk_kmeans_plusplus(Xs, 6, random_state=9)[0]
    km = KMeans(6, init=init, metric="l1", max_iter=5, tol=0).fit(chunked(X, (800,) * 3 + (600,)))
    ref_c, ref_l = _notebook_l1(Xs, init, km.n_iter_)
    np.testing.assert_allclose(km.cluster_centers_, ref_c, atol=1e-6)
    np.testing.assert_array_equal(km.labels_.compute(), ref_l)


def test_uniform_init_is_uniform_in_unit_cube_and_seeded(pixels):
    X, _, _ = pixels
    a = KMeans(6, init="uniform", random_state=3, max_iter=1).fit(X)
    b = KMeans(6, init="uniform", random_state=3, max_iter=1).fit(X)
    np.testing.assert_array_equal(a.init_centers_, np.random.RandomState(3).uniform(size=(6, 20)))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_n_init_keeps_the_lowest_inertia(pixels):
    X, _, _ = pixels
    single = [KMeans(6, init="uniform", random_state=s, max_iter=20).fit(X).inertia_ for s in range(1)]
    multi = KMeans(6, init="uniform", n_init=3, random_state=0, max_iter=20).fit(X)
    assert multi.inertia_ <= single[0] + 1e-9


def test_predict_is_lazy_and_nearest(pixels):
    X, Xs, _ = pixels
    km = KMeans(6, random_state=0).fit(X)
    lab = km.predict(chunked(X, (1000,) * 3))
    assert isinstance(lab, da.Array) and lab.chunks == ((1000,) * 3,)
    d = ((Xs[:, None, :] - km.cluster_centers_[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(lab.compute(), d.argmin(1))


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(n_clusters=0), "n_clusters=0 must be"),
        (dict(n_clusters=4000), "n_samples=3000 should be >= n_clusters=4000"),
        (dict(n_clusters=3, max_iter=0), "max_iter=0"),
        (dict(n_clusters=3, tol=-1.0), "tol=-1.0"),
        (dict(n_clusters=3, metric="hamming"), "metric='hamming'"),
        (dict(n_clusters=3, init=np.zeros((2, 20))), r"The shape of the initial centers \(2, 20\) does not match the number of clusters 3: init has shape \(2, 20\), expected \(3, 20\)"),
        (dict(n_clusters=2, init=np.full((2, 20), np.nan)), "NaN"),
        (dict(n_clusters=2, init="kmeans"), "init='kmeans'"),
    ],
)
def test_bad_parameters_say_what_and_how(pixels, params, match):
    with pytest.raises(InputError, match=match):
        KMeans(**params).fit(pixels[0])


def test_predict_before_fit_is_an_error():
    with pytest.raises(InputError, match="not fitted"):
        KMeans(2).predict(np.zeros((3, 2)))


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_tasks_per_iteration_follow_the_threads_not_the_chunks(pixels, monkeypatch, algorithm):
    """Every iteration runs one task per group of chunks (one group per thread),
    the same number in every iteration and for 6 or 60 chunks: nothing grows."""
    import daskmeans.placement as pmod

    X, _, _ = pixels
    init = np.full((6, 20), 0.5) + np.linspace(-0.2, 0.2, 6)[:, None]
    counts = {}
    real = pmod.run_group

    def spy(token, gid, func, sources, offsets, iteration, shared, weights=None, reduce=None):
        counts[iteration] = counts.get(iteration, 0) + 1
        return real(token, gid, func, sources, offsets, iteration, shared, weights, reduce)

    monkeypatch.setattr(pmod, "run_group", spy)
    per_chunking = []
    for rows in (500, 50):
        counts.clear()
        with dask.config.set(num_workers=2):
            km = KMeans(6, init=init, tol=0, max_iter=6, algorithm=algorithm).fit(chunked(X, rows))
        assert km.n_iter_ >= 4
        # one stateful pass per iteration (and stateless ones: relocation, final inertia)
        assert {i for i in counts if i is not None} == set(range(1, km.n_iter_ + 1))
        per_chunking.append({v for i, v in counts.items() if i is not None})
        assert counts.get(None, 0) % 2 == 0  # stateless passes: one task per group too
    assert per_chunking == [{2}, {2}], per_chunking


def test_as_rows_validates_shape():
    with pytest.raises(InputError, match="shape"):
        as_rows(np.zeros(5))


@pytest.mark.data
@pytest.mark.distributed
def test_distributed_fit_equals_threads_without_large_graph_warnings(cifar_store, recwarn):
    """On a distributed Client, real images read from the store: the same centres and
    labels as threads, and no "large graph" warning (data and labels stay on the
    workers, centres travel as one small key per iteration)."""
    from distributed import Client, LocalCluster

    from daskmeans.data import load_cifar10

    X = load_cifar10(str(cifar_store), chunk_size=1000, progress=False).flat()[:6000]
    ref = KMeans(10, random_state=2, max_iter=8).fit(X)
    # in-process workers: inproc:// transport, no sockets
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster):
        km = KMeans(10, random_state=2, max_iter=8).fit(X)
        labels = km.labels_.compute()
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(labels, ref.labels_.compute())
    assert not [w for w in recwarn.list if "large graph" in str(w.message).lower()]


# -- Hamerly's bounds: the same results as Lloyd, with fewer distances -------------------


def _same_fit(a, b):
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(a.labels_ if isinstance(a.labels_, np.ndarray) else a.labels_.compute()),
                                  np.asarray(b.labels_ if isinstance(b.labels_, np.ndarray) else b.labels_.compute()))
    assert a.n_iter_ == b.n_iter_ and a.converged_ == b.converged_
    assert [h["changed"] for h in a.history_] == [h["changed"] for h in b.history_]
    # Lloyd sums float32 per-row distances, Hamerly uses exact per-cluster sums: close, not equal
    assert b.inertia_ == pytest.approx(a.inertia_, rel=1e-5)
    for ha, hb in zip(a.history_, b.history_):
        assert hb["inertia"] == pytest.approx(ha["inertia"], rel=1e-5)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@pytest.mark.parametrize("seed", [0, 5])
def test_hamerly_equals_lloyd(pixels, chunks, seed):
    X, _, _ = pixels
    lloyd = KMeans(6, random_state=seed, tol=0).fit(chunked(X, chunks))
    hamerly = KMeans(6, random_state=seed, tol=0, algorithm="hamerly").fit(chunked(X, chunks))
    _same_fit(lloyd, hamerly)
    labels = hamerly.labels_.compute()
    exact = ((X / 255.0 - hamerly.cluster_centers_.astype(np.float64)[labels]) ** 2).sum()
    assert abs(hamerly.inertia_ - exact) <= abs(lloyd.inertia_ - exact) + 1e-9  # the exact sums help
    computed = [h["computed"] for h in hamerly.history_]
    assert computed[0] == 3000 and min(computed) < 3000  # the bounds do skip rows


@pytest.mark.data
def test_hamerly_equals_lloyd_on_real_images(cifar_store):
    from daskmeans.data import load_cifar10

    X = load_cifar10(str(cifar_store), chunk_size=1500, progress=False).flat()[:6000]
    lloyd = KMeans(10, random_state=1, tol=0, max_iter=80).fit(X)
    hamerly = KMeans(10, random_state=1, tol=0, max_iter=80, algorithm="hamerly").fit(X)
    _same_fit(lloyd, hamerly)
    assert sum(h["computed"] for h in hamerly.history_) < 0.6 * 6000 * hamerly.n_iter_


def test_hamerly_relocation_k1_and_float_refused(pixels):
    X, Xs, _ = pixels
    init = sk_kmeans_plusplus(Xs, 5, random_state=0)[0]
    init = np.vstack([init, np.full((1, 20), 5.0)])  # an empty cluster at once
    _same_fit(KMeans(6, init=init).fit(chunked(X, (1000,) * 3)),
              KMeans(6, init=init, algorithm="hamerly").fit(chunked(X, (1000,) * 3)))
    _same_fit(KMeans(1, random_state=0).fit(X), KMeans(1, random_state=0, algorithm="hamerly").fit(X))
    F, _ = make_blobs(2000, n_features=5, centers=4, random_state=3)
    with pytest.raises(InputError, match="needs uint8 data"):  # float sums would drift from Lloyd's
        KMeans(4, algorithm="hamerly").fit(F)


def test_hamerly_resumes_exactly(pixels):
    X, _, _ = pixels
    states = []
    full = KMeans(6, random_state=3, tol=0, algorithm="hamerly").fit(chunked(X, (700,) * 4 + (200,)),
                                                                    on_iteration=lambda s: states.append(dict(s)))
    middle = states[len(states) // 2]
    resumed = KMeans(6, random_state=3, tol=0, algorithm="hamerly").fit(chunked(X, (700,) * 4 + (200,)),
                                                                       resume=middle)
    _same_fit(full, resumed)


def test_hamerly_kernel_on_a_strict_namespace(pixels):
    xs = pytest.importorskip("array_api_strict")
    from daskmeans.backend import to_numpy

    X, _, _ = pixels
    C = np.random.default_rng(0).uniform(size=(4, 20))
    ref_state, ref_part = kernels.hamerly_step(X[:500], C, None, scale=1 / 255)
    st, part = kernels.hamerly_step(xs.asarray(X[:500]), C, None, scale=1 / 255)
    for a, b in zip(ref_state + ref_part, st + part):
        np.testing.assert_array_equal(np.asarray(a), to_numpy(b))
    moved = C + 0.01
    shifts = np.sqrt(((moved - C) ** 2).sum(1)) * 255 * (1 + 1e-9)
    hs = np.full(4, 0.0)
    ref = kernels.hamerly_step(X[:500], moved, ref_state, shifts, hs, scale=1 / 255)
    got = kernels.hamerly_step(xs.asarray(X[:500]), moved, st, shifts, hs, scale=1 / 255)
    np.testing.assert_array_equal(np.asarray(ref[0][0]), to_numpy(got[0][0]))
    np.testing.assert_array_equal(np.asarray(ref[1][0]), to_numpy(got[1][0]))
    lab, _ = kernels.assign(X[:500], moved, 1 / 255)
    np.testing.assert_array_equal(np.asarray(ref[0][0]), lab)  # the labels Lloyd gives


def test_hamerly_needs_l2(pixels):
    with pytest.raises(InputError, match="needs metric='l2'"):
        KMeans(3, metric="l1", algorithm="hamerly").fit(pixels[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_kmeans_plusplus_eager_equals_dask_tasks(dtype, monkeypatch):
    """Small in-memory data runs k-means++'s kernels directly; the dask-task path (any size,
    any scheduler) makes the same calls on the same blocks: the same rows, bit for bit."""
    import daskmeans.kmeans as km_mod

    rng = np.random.default_rng(8)
    X = rng.integers(0, 256, (900, 24)).astype(dtype)
    w = rng.uniform(0.5, 2.0, 900)
    Xd = da.from_array(X, chunks=200).persist()
    eager = km_mod.kmeans_plusplus(Xd, 7, 3, sample_weight=w)
    monkeypatch.setattr(km_mod, "EAGER_INIT_BYTES", 0)
    lazy = km_mod.kmeans_plusplus(Xd, 7, 3, sample_weight=w)
    np.testing.assert_array_equal(eager[1], lazy[1])
    np.testing.assert_array_equal(eager[0], lazy[0])
