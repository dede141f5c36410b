"""Warm starts: ``init=`` a fitted model or a run folder continues its centres, and cluster j stays cluster j."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.frozen import FrozenEstimator
from sklearn.utils._testing import assert_allclose, assert_array_equal

from daskmeans import InputError, KMeans, MiniBatchKMeans

TRUE = np.array([[0.0, 0.0, 0.0, 0.0], [8.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0], [0.0, 0.0, 8.0, 0.0]])


def _blobs(n, seed, shift=0.0):
    X, y = make_blobs(n, centers=TRUE + shift, cluster_std=1.0, random_state=seed)
    return X, y


def _lloyd(X, c, iters=300):
    """Serial NumPy Lloyd from ``c`` (the tests' independent reference; no empty clusters here)."""
    c = c.astype(np.float64).copy()
    for _ in range(iters):
        lab = ((X[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([X[lab == j].mean(0) for j in range(len(c))])
        if np.array_equal(new, c):
            break
        c = new
    return c, lab


def _nearest(a, b):
    """For each centre of ``a``, the index of the nearest centre of ``b``."""
    return ((a[:, None] - b[None]) ** 2).sum(-1).argmin(1)


@pytest.fixture(scope="module")
def old():
    X1, _ = _blobs(400, 0)
    return X1, KMeans(4, random_state=5).fit(X1)


def test_a_fitted_kmeans_continues_on_grown_data_and_keeps_cluster_ids(old):
    X1, km1 = old
    X2 = np.vstack([X1, _blobs(600, 1, shift=0.5)[0]])  # more rows, the groups drifted
    km2 = KMeans(4, init=km1, tol=0).fit(da.from_array(X2, chunks=(250, -1)))
    assert_allclose(km2.init_centers_, km1.cluster_centers_)
    assert_array_equal(_nearest(km1.cluster_centers_, km2.cluster_centers_), np.arange(4))
    ref, ref_labels = _lloyd(X2, km1.cluster_centers_)
    assert_allclose(km2.cluster_centers_, ref, rtol=1e-9, atol=1e-9)
    assert_array_equal(km2.labels_.compute(), ref_labels)
    assert_array_equal(km2.predict(X1), km1.labels_)  # the old rows keep their clusters


def test_on_the_same_data_a_warm_start_stays_put(old):
    X1, km1 = old
    km2 = KMeans(4, init=km1).fit(X1)
    assert km2.n_iter_ <= 2
    assert_allclose(km2.cluster_centers_, km1.cluster_centers_)
    assert_array_equal(km2.labels_, km1.labels_)


def test_warm_starts_between_kmeans_and_minibatch(old):
    X1, km1 = old
    mb = MiniBatchKMeans(4, init=km1, batch_size=64, random_state=0).fit(X1)
    assert_array_equal(mb.init_centers_, km1._centers_fit + km1._offset)  # full precision, no float32 detour
    assert_array_equal(_nearest(km1.cluster_centers_, mb.cluster_centers_), np.arange(4))
    back = KMeans(4, init=mb).fit(X1)
    assert_allclose(back.init_centers_, mb._centers_fit, rtol=1e-12, atol=1e-14)  # KMeans centres float data
    assert_array_equal(back.labels_, km1.labels_)


def test_frozen_model_survives_clone(old):
    X1, km1 = old
    X2 = np.vstack([X1, _blobs(300, 2, shift=0.3)[0]])
    direct = KMeans(4, init=km1).fit(X2)
    cloned = clone(KMeans(4, init=FrozenEstimator(km1))).fit(X2)
    assert_array_equal(cloned.cluster_centers_, direct.cluster_centers_)
    with pytest.raises(InputError, match=r"^init is an unfitted KMeans; .*FrozenEstimator") as e:
        clone(KMeans(4, init=km1)).fit(X2)  # clone() refits nothing: its init is a fresh, unfitted KMeans
    assert "\n" not in str(e.value)


def test_an_emptied_cluster_keeps_its_id_and_jumps(old):
    """Cluster 3's group is gone and a new group appeared far away: the emptied id is relocated
    (scikit-learn's rule: the farthest row) and takes the new group; the other ids stay."""
    X1, km1 = old
    gone = _nearest(TRUE[3:], km1.cluster_centers_)[0]
    X2, y2 = make_blobs(500, centers=np.vstack([TRUE[:3], [[40.0, 40.0, 40.0, 40.0]]]), cluster_std=1.0,
                        random_state=3)
    km2 = KMeans(4, init=km1).fit(X2)
    kept = [j for j in range(4) if j != gone]
    assert_array_equal(_nearest(km1.cluster_centers_[kept], km2.cluster_centers_), kept)
    assert np.abs(km2.cluster_centers_[gone] - 40.0).max() < 1.0
    assert set(km2.labels_[y2 == 3]) == {gone}


def test_pixel_models_continue_pixels_only():
    rng = np.random.RandomState(0)
    pixels = rng.randint(0, 255, size=(300, 48)).astype(np.uint8)
    km = KMeans(3, random_state=0).fit(pixels)
    again = KMeans(3, init=km).fit(pixels)
    assert_allclose(again.init_centers_, km._centers_fit)
    with pytest.raises(InputError, match=r"^init is a KMeans fitted on uint8 pixels but X holds numbers") as e:
        KMeans(3, init=km).fit(pixels.astype(np.float64))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("make, needle", [
    (lambda km, tmp: KMeans(5, init=km), "init is a KMeans with n_clusters=4, but n_clusters=5; pass n_clusters=4"),
    (lambda km, tmp: MiniBatchKMeans(5, init=km), "init is a KMeans with n_clusters=4, but n_clusters=5"),
    (lambda km, tmp: KMeans(4, init=KMeans(4)), "init is an unfitted KMeans; fit it first"),
    (lambda km, tmp: KMeans(4, init=str(tmp / "nope")), "init='"),
    (lambda km, tmp: KMeans(4, init=str(tmp)), "no centroids.npy in that folder"),
    (lambda km, tmp: KMeans(4, init=tmp), "no centroids.npy in that folder"),
])
def test_bad_warm_starts_one_line(make, needle, old, tmp_path):
    X1, km1 = old
    with pytest.raises(InputError) as e:
        make(km1, tmp_path).fit(X1)
    assert needle in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_feature_count_mismatch_one_line(old):
    X1, km1 = old
    with pytest.raises(InputError, match=r"^init is a KMeans fitted on 4 features, but X has 3; ") as e:
        KMeans(4, init=km1).fit(X1[:, :3])
    assert "\n" not in str(e.value)


def _run_folder(tmp_path, centres, k, kind="raw"):
    folder = tmp_path / "previous"
    folder.mkdir()
    np.save(folder / "centroids.npy", centres.astype(np.float32))
    (folder / "report.json").write_text(json.dumps({"k": k, "features": {"kind": kind}}))
    return folder


def test_a_run_folder_continues_its_centres(tmp_path):
    rng = np.random.RandomState(1)
    pixels = np.clip(rng.randint(0, 4, 400)[:, None] * 60 + rng.randint(0, 30, size=(400, 48)), 0, 255)
    pixels = pixels.astype(np.uint8)
    first = KMeans(4, random_state=0).fit(pixels)
    folder = _run_folder(tmp_path, first.cluster_centers_, 4)
    for est in (KMeans(4, init=str(folder)), KMeans(4, init=folder), MiniBatchKMeans(4, init=folder, random_state=0)):
        est.fit(pixels)
        assert_array_equal(est.init_centers_, np.load(folder / "centroids.npy").astype(np.float64))
        assert_array_equal(_nearest(first.cluster_centers_, est.cluster_centers_), np.arange(4))
    with pytest.raises(InputError, match=r"the run clustered uint8 pixels .* but X holds numbers"):
        KMeans(4, init=folder).fit(pixels.astype(np.float32))
    (tmp_path / "f").mkdir()
    features = _run_folder(tmp_path / "f", np.zeros((4, 48)), 4, kind="pca")
    with pytest.raises(InputError, match=r"the run clustered pca features, not pixels"):
        KMeans(4, init=features).fit(pixels)
