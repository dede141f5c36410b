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
