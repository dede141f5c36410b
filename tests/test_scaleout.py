"""Scale-out: work grouped by worker survives a killed worker and an added one, bit for bit."""

from __future__ import annotations

import os
import signal

import dask
import dask.array as da
import numpy as np
import pytest

from daskmeans import KMeans

pytestmark = pytest.mark.distributed


def _data(n=3000, d=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.integers(30, 220, size=(6, d))
    X = np.clip(centres[rng.integers(0, 6, n)] + rng.normal(0, 40, size=(n, d)), 0, 255).astype(np.uint8)
    init = rng.uniform(size=(6, d))
    return X, init


@pytest.fixture(scope="module")
def reference():
    X, init = _data()
    with dask.config.set(scheduler="threads"):
        km = KMeans(6, init=init, tol=0, max_iter=15, algorithm="lloyd").fit(da.from_array(X, chunks=(3000, 64)))
    return X, init, km


def _same(km, ref):
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(km.labels_.compute()), np.asarray(ref.labels_.compute()))
    assert km.n_iter_ == ref.n_iter_
    assert [h["changed"] for h in km.history_] == [h["changed"] for h in ref.history_]


@pytest.mark.parametrize("algorithm", [pytest.param("lloyd", marks=pytest.mark.slow), "hamerly"])  # lloyd: 1 min
def test_worker_killed_mid_run_with_1000_chunks(reference, algorithm):
    """SIGKILL one of two worker processes after iteration 3: its chunks are recomputed
    elsewhere, its groups' state rebuilt from the previous centres; same result."""
    from distributed import Client, LocalCluster

    X, init, ref = reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = sorted(pids.values())[0]
        killed = []

        def kill_once(state):
            if state["iteration"] == 3 and not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        Xd = da.from_array(X, chunks=(3, 64))  # 1,000 chunks
        km = KMeans(6, init=init, tol=0, max_iter=15, algorithm=algorithm).fit(Xd, on_iteration=kill_once)
        assert killed and km.n_iter_ > 3
        _same(km, ref)


def test_worker_added_mid_run_is_harmless(reference):
    from distributed import Client, LocalCluster

    X, init, ref = reference
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        added = []

        def add_one(state):
            if state["iteration"] == 2 and not added:
                cluster.scale(2)
                added.append(True)

        km = KMeans(6, init=init, tol=0, max_iter=15, algorithm="hamerly").fit(
            da.from_array(X, chunks=(100, 64)), on_iteration=add_one
        )
        assert added
        _same(km, ref)
