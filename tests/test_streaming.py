"""Out of core: a group streams its chunks from their source, a bounded number in memory at once."""

from __future__ import annotations

import threading
import weakref

import dask
import dask.array as da
import numpy as np
import pytest

from daskmeans import KMeans, placement


def _data(n=3000, d=192, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, d), dtype=np.uint8)


def _source(X, rows=100):
    """``X`` as a dask array that is not in memory: each pass computes its chunks again."""
    return da.from_array(X, chunks=(rows, -1)).map_blocks(np.copy)


@pytest.fixture
def live_chunks(monkeypatch):
    """Counts the chunks read from their source that are still alive (weak references)."""
    lock = threading.Lock()
    state = {"live": 0, "peak": 0, "loads": 0}

    def gone():
        with lock:
            state["live"] -= 1

    real = placement._load

    def load(source):
        block = real(source)
        if isinstance(source, da.Array):
            block = np.array(block)  # a fresh array, so its life is the group's alone
            with lock:
                state["live"] += 1
                state["loads"] += 1
                state["peak"] = max(state["peak"], state["live"])
            weakref.finalize(block, gone)
        return block

    monkeypatch.setattr(placement, "_load", load)
    return state


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_streamed_fit_equals_the_in_memory_fit_and_holds_few_chunks(live_chunks, algorithm):
    X = _data()
    init = X[:5].astype(np.float64) / 255
    with dask.config.set(num_workers=1):  # one group: all 30 chunks pass through one task
        ref = KMeans(5, init=init, max_iter=6, tol=0, algorithm=algorithm).fit(X)
        Xd = _source(X)
        got = KMeans(5, init=init, max_iter=6, tol=0, algorithm=algorithm, persist=False).fit(Xd)
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(np.asarray(got.labels_), np.asarray(ref.labels_))
    assert got.n_iter_ == ref.n_iter_
    assert [h["changed"] for h in got.history_] == [h["changed"] for h in ref.history_]
    assert live_chunks["loads"] >= 30 * 6  # every pass read every chunk again
    # the chunk being measured, the one read ahead, and one the reader may be starting
    assert live_chunks["peak"] <= placement.READ_AHEAD + 2, live_chunks


def test_streamed_restarts_share_passes_and_equal_runs_alone(live_chunks):
    X = _data(n=1200, seed=1)
    Xd = _source(X)
    with dask.config.set(num_workers=1):
        many = KMeans(4, n_init=3, random_state=0, max_iter=5, tol=0, persist=False, algorithm="lloyd").fit(Xd)
        alone = KMeans(4, n_init=3, random_state=0, max_iter=5, tol=0, algorithm="lloyd").fit(X)
    np.testing.assert_array_equal(many.cluster_centers_, alone.cluster_centers_)
    assert many.inertia_ == alone.inertia_
    assert live_chunks["peak"] <= placement.READ_AHEAD + 2


@pytest.mark.distributed
@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_direct_passes_on_worker_processes_equal_scheduled_tasks(monkeypatch, algorithm):
    """One runner per worker, called without the scheduler, gives what scheduled tasks give
    (and what threads give), and is what a cluster fit uses."""
    from distributed import Client, LocalCluster

    X = _data(n=2000, seed=2)
    init = X[:6].astype(np.float64) / 255
    ref = KMeans(6, init=init, max_iter=8, tol=0, algorithm=algorithm).fit(X)
    direct = []
    real = placement.Placement._run_direct

    def spy(self, *args):
        direct.append(1)
        return real(self, *args)

    monkeypatch.setattr(placement.Placement, "_run_direct", spy)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        Xd = da.from_array(X, chunks=(250, -1))
        fits = {}
        for on in (True, False):
            with dask.config.set({"daskmeans.direct-passes": on}):
                n0 = len(direct)
                fits[on] = KMeans(6, init=init, max_iter=8, tol=0, algorithm=algorithm).fit(Xd)
                assert (len(direct) - n0 >= 8) if on else (len(direct) == n0)
        for km in fits.values():
            np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
            np.testing.assert_array_equal(np.asarray(km.labels_.compute()), np.asarray(ref.labels_))
            assert [h["changed"] for h in km.history_] == [h["changed"] for h in ref.history_]


def test_workers_of_different_instruction_sets_are_named(caplog):
    same = {"name": "znver4", "simd": ["avx2", "avx512f"]}
    with caplog.at_level("WARNING", logger="daskmeans"):
        placement._warn_mixed_targets({"tcp://a": same, "tcp://b": dict(same)})
        assert not caplog.records
        placement._warn_mixed_targets({"tcp://a": same, "tcp://b": {"name": "haswell", "simd": ["avx2"]}})
    (rec,) = caplog.records
    assert "haswell (avx2) on tcp://b" in rec.getMessage() and "znver4 (avx2 avx512f) on tcp://a" in rec.getMessage()
