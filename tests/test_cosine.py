"""Spherical k-means (``metric="cosine"``) against a serial NumPy reference."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from daskmeans import KMeans
from daskmeans.errors import InputError


def spherical_reference(X, C0, n_iter):
    """Plain float64 spherical k-means: rows and centres scaled to norm 1, each row to the centre of
    largest cosine, each centre the normalised sum of its unit rows (an empty one stays)."""
    U = X.astype(np.float64)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    C = C0 / np.linalg.norm(C0, axis=1, keepdims=True)
    for _ in range(n_iter):
        lab = (U @ C.T).argmax(1)
        for j in range(len(C)):
            s = U[lab == j].sum(0)
            if np.linalg.norm(s) > 0:
                C[j] = s / np.linalg.norm(s)
    lab = (U @ C.T).argmax(1)
    return C, lab, float((1 - (U * C[lab]).sum(1)).sum())


def _blobs(n=600, d=160, k=4, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    dirs = rng.uniform(0, 255, size=(k, d))
    X = dirs[rng.integers(0, k, n)] * rng.uniform(0.3, 1.0, (n, 1)) + rng.normal(0, 25, (n, d))
    X = np.clip(X, 1, 255)
    return X.astype(dtype), rng


@pytest.mark.parametrize("d", [160, 40])  # the fused pass and the BLAS tiles
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_matches_the_serial_reference(d, dtype):
    X, rng = _blobs(d=d, dtype=dtype)
    C0 = X[rng.choice(len(X), 4, replace=False)].astype(np.float64)
    scale = 1 / 255 if dtype == np.uint8 else 1.0
    km = KMeans(4, init=C0 * scale, metric="cosine", max_iter=10, tol=0).fit(X)
    C, lab, inertia = spherical_reference(X, C0, km.n_iter_)
    np.testing.assert_array_equal(np.asarray(km.labels_), lab)
    np.testing.assert_allclose(km.cluster_centers_, C, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-12)
    assert km.inertia_ == pytest.approx(inertia, rel=1e-5)
    np.testing.assert_array_equal(km.predict(X[:50]), lab[:50])
    D = km.transform(X[:50])
    np.testing.assert_allclose(D, 1 - (X[:50] / np.linalg.norm(X[:50].astype(float), axis=1, keepdims=True)) @ C.T,
                               atol=1e-5)
    assert km.score(X) == pytest.approx(-inertia, rel=1e-5)


def test_identical_across_chunkings_and_threads():
    X, _ = _blobs(n=900, d=192, seed=1)
    ref = KMeans(5, metric="cosine", random_state=0, max_iter=12, tol=0).fit(da.from_array(X, chunks=(900, -1)))
    for chunks in ((1,) * 900, (7,) * 128 + (4,), (450, 0, 450)):
        with dask.config.set(num_workers=3):
            km = KMeans(5, metric="cosine", random_state=0, max_iter=12, tol=0).fit(da.from_array(X, chunks=(chunks, -1)))
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)  # exact: integer sums
        np.testing.assert_array_equal(km.labels_.compute(), ref.labels_.compute())


def test_rows_of_zeros_are_refused_in_one_line():
    X, _ = _blobs(n=100)
    X[17] = 0
    with pytest.raises(InputError, match=r"1 row\(s\) of zeros \(the first is row 17\).*metric='l2'"):
        KMeans(3, metric="cosine", random_state=0).fit(X)


def test_hamerly_is_refused_and_auto_is_lloyd():
    X, _ = _blobs(n=200)
    with pytest.raises(InputError, match="metric='l2'"):
        KMeans(3, metric="cosine", algorithm="hamerly").fit(X)
    km = KMeans(3, metric="cosine", random_state=0).fit(X)
    assert km.algorithm_ == "lloyd"


def test_float_data_are_not_centred():
    """Directions must not move: a mean offset would change every cosine."""
    X, rng = _blobs(n=300, d=30, dtype=np.float64)
    X = X + 1000.0  # all rows nearly parallel to (1, ..., 1) after no centring
    C0 = X[:3].copy()
    km = KMeans(3, init=C0, metric="cosine", max_iter=5, tol=0).fit(X)
    C, lab, _ = spherical_reference(X, C0, km.n_iter_)
    np.testing.assert_allclose(km.cluster_centers_, C, atol=1e-6)


@pytest.mark.data
def test_command_line_cosine_run(cifar_store, tmp_path):
    """`daskmeans run --metric cosine` on real images: unit centres, a report, the pictures."""
    import json

    from daskmeans.cli import main

    out = tmp_path / "out"
    code = main(["run", "--data", str(cifar_store), "--subset", "400", "-k", "4", "--metric", "cosine",
                 "--seed", "0", "--chunk-size", "150", "--out", str(out), "-q"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_samples"] == 400 and report["k"] == 4
    centres = np.load(out / "centroids.npy").astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-6)
    assert (out / "report.html").exists()
