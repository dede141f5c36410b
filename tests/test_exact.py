"""Exact by construction: labels do not depend on chunking, scheduler, workers or algorithm.

The data are built to be adversarial: pairs of centres 1e-4 apart (in [0, 1]
pixel units) make many rows equidistant to float32 precision, so any change in
the arithmetic that decides a label (a different BLAS path for a different
number of rows, a different position in a product) flips some of them. The
reference is the same kernel on the whole data as one block; the near-ties are
shown to be real by a float64 computation that disagrees with float32 on some
rows.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from daskmeans import KMeans, kernels

D = 3072  # CIFAR's row length: the BLAS kernels of the real problem


def _near_ties(n=517, k=6, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, size=(k // 2, D))
    step = rng.normal(size=(k // 2, D))
    step *= 1e-4 / np.linalg.norm(step, axis=1, keepdims=True)
    centers = np.concatenate([base, base + step])  # pairs 1e-4 apart
    X = rng.integers(0, 256, size=(n, D), dtype=np.uint8)
    return X, centers


def _chunkings(n):
    return {
        "one block": (n,),
        "1-row chunks": (1,) * n,
        "odd sizes": (1, 2, 3, 7, 251, n - 264),
        "with empty": (0, n // 2, 0, n - n // 2),
    }


def test_the_near_ties_are_real():
    X, C = _near_ties()
    f64 = ((X[:, None, :] / 255.0 - C[None]) ** 2).sum(-1).argmin(1)
    lab, _ = kernels.assign(X, C, 1 / 255)
    assert (np.asarray(lab) != f64).sum() >= 3  # float32 decides differently on some rows


@pytest.mark.parametrize("name", list(_chunkings(517)))
def test_assign_is_independent_of_the_block(name):
    X, C = _near_ties()
    ref_lab, ref_d = (np.asarray(v) for v in kernels.assign(X, C, 1 / 255))
    sizes = _chunkings(len(X))[name]
    bounds = np.cumsum((0,) + sizes)
    parts = [kernels.assign(X[a:b], C, 1 / 255, "l2", int(a)) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_array_equal(np.concatenate([np.asarray(p[0]) for p in parts]), ref_lab)
    np.testing.assert_array_equal(np.concatenate([np.asarray(p[1]) for p in parts]), ref_d)  # to the last bit
    # gathered subsets (Hamerly's measured rows, merged chunks) carry their global rows
    rows = np.flatnonzero(np.arange(len(X)) % 3 == 1)
    lab, dist = (np.asarray(v) for v in kernels.assign(X[rows], C, 1 / 255, "l2", rows))
    np.testing.assert_array_equal(lab, ref_lab[rows])
    np.testing.assert_array_equal(dist, ref_d[rows])


def _fit(X, C, chunks, algorithm, **kw):
    Xd = da.from_array(X, chunks=(chunks, D))
    km = KMeans(len(C), init=C, tol=0, max_iter=8, algorithm=algorithm, **kw).fit(Xd)
    return km, np.asarray(km.labels_.compute())


def _assert_same(a, b):
    (ka, la), (kb, lb) = a, b
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(ka.cluster_centers_, kb.cluster_centers_)
    assert ka.n_iter_ == kb.n_iter_
    assert [h["changed"] for h in ka.history_] == [h["changed"] for h in kb.history_]


@pytest.fixture(scope="module")
def reference():
    X, C = _near_ties()
    return X, C, _fit(X, C, (len(X),), "lloyd")


@pytest.mark.parametrize("merge", [True, False], ids=["small chunks merged", "every chunk alone"])
@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
@pytest.mark.parametrize("name", ["1-row chunks", "odd sizes", "with empty"])
def test_fit_is_independent_of_chunking_and_algorithm(reference, name, algorithm, merge, monkeypatch):
    import daskmeans.algorithms.base as base

    if not merge:  # each chunk through the kernel on its own, however small
        monkeypatch.setattr(base, "MERGE_BELOW", 0)
    X, C, ref = reference
    with dask.config.set(num_workers=3):
        got = _fit(X, C, _chunkings(len(X))[name], algorithm)
    _assert_same(got, ref)


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_fit_on_worker_processes_equals_threads(reference, algorithm):
    from distributed import Client, LocalCluster

    X, C, ref = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        got = _fit(X, C, (1, 2, 3, 7, 251, len(X) - 264), algorithm)
    _assert_same(got, ref)

