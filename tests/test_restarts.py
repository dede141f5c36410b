"""Restarts (and several k) sharing every pass over the data: identical to separate runs.

References: :func:`daskmeans.kmeans.lloyd` run alone from the same initial
centres, and scikit-learn's rule for ``n_init`` (the lowest inertia wins, the
initial centres drawn one run after the other from one generator).
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
from sklearn.utils import check_random_state

from daskmeans import KMeans
from daskmeans import checkpoint
from daskmeans.kmeans import as_rows, kmeans_plusplus, lloyd, lloyd_many


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (6, 48))
    rows = base[rng.integers(0, 6, 2400)] + rng.integers(-150, 150, (2400, 48))  # overlapping: many iterations
    return np.clip(rows, 0, 255).astype(np.uint8)


def _same(a, b):
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.inertia == b.inertia
    assert (a.n_iter, a.converged, a.strict) == (b.n_iter, b.converged, b.strict)
    assert [h["inertia"] for h in a.history] == [h["inertia"] for h in b.history]
    assert [h["changed"] for h in a.history] == [h["changed"] for h in b.history]


@pytest.mark.parametrize("algorithm", ["lloyd", "hamerly"])
def test_shared_passes_equal_separate_runs(pixels, algorithm):
    X = as_rows(pixels, 300).persist()
    inits = [kmeans_plusplus(X, 7, seed)[0] for seed in range(4)]
    with dask.config.set(num_workers=3):
        many = lloyd_many(X, inits, max_iter=40, tol=1e-6, algorithm=algorithm)
        alone = [lloyd(X, c0, max_iter=40, tol=1e-6, algorithm=algorithm) for c0 in inits]
    assert len({r.n_iter for r in many}) > 1  # the runs stop at different iterations
    for a, b in zip(many, alone):
        _same(a, b)


def test_runs_of_different_k_share_passes(pixels):
    X = as_rows(pixels, 500).persist()
    inits = [kmeans_plusplus(X, k, 1)[0] for k in (2, 5, 9)]
    many = lloyd_many(X, inits, max_iter=30, tol=0.0, algorithm="hamerly")
    for c0, got in zip(inits, many):
        _same(got, lloyd(X, c0, max_iter=30, tol=0.0, algorithm="hamerly"))


def test_one_task_per_group_whatever_the_number_of_runs(pixels, monkeypatch):
    import daskmeans.placement as pmod

    X = as_rows(pixels, 200).persist()
    inits = [kmeans_plusplus(X, 5, s)[0] for s in range(5)]
    calls = []
    real = pmod.run_group

    def spy(token, gid, func, sources, offsets, iteration, shared, weights=None, reduce=None):
        calls.append(iteration)
        return real(token, gid, func, sources, offsets, iteration, shared, weights, reduce)

    monkeypatch.setattr(pmod, "run_group", spy)
    with dask.config.set(num_workers=2):
        many = lloyd_many(X, inits, max_iter=8, tol=0.0, algorithm="lloyd")
    per_iteration = {i: calls.count(i) for i in set(calls) if i is not None}
    assert per_iteration == {i: 2 for i in range(1, max(r.n_iter for r in many) + 1)}


def test_n_init_keeps_the_best_of_the_separate_runs(pixels):
    R, k, seed = 4, 9, 11
    km = KMeans(k, n_init=R, random_state=seed, chunk_size=400).fit(pixels)
    rng = check_random_state(seed)  # scikit-learn's rule: the runs' centres drawn one after the other
    X = as_rows(pixels, 400)
    inits = [kmeans_plusplus(X, k, rng)[0] for _ in range(R)]
    alone = [KMeans(k, init=c0, n_init=1, chunk_size=400).fit(pixels) for c0 in inits]  # centres in [0, 1]
    assert len({round(a.inertia_, 6) for a in alone}) > 1  # the restarts differ
    best = min(range(R), key=lambda r: alone[r].inertia_)
    np.testing.assert_array_equal(km.cluster_centers_, alone[best].cluster_centers_)
    np.testing.assert_array_equal(km.labels_, alone[best].labels_)
    assert km.inertia_ == alone[best].inertia_ and km.n_iter_ == alone[best].n_iter_
    np.testing.assert_allclose(km.init_centers_, inits[best])


@pytest.mark.parametrize("where", ["first", "middle"])
def test_restarts_resume_from_a_checkpoint_exactly(pixels, tmp_path, where):
    R, k = 3, 6
    states = []
    full = KMeans(k, n_init=R, random_state=3, chunk_size=400, tol=0).fit(
        pixels, on_iteration=lambda st: states.append(st))
    assert all("runs" in st and len(st["runs"]) == R for st in states)
    assert len(states) >= 3
    stop_after = 1 if where == "first" else len(states) // 2
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, states[stop_after - 1], fingerprint={"k": k})
    state = checkpoint.load(path, fingerprint={"k": k})
    assert [r["iteration"] for r in state["runs"]] == [r["iteration"] for r in states[stop_after - 1]["runs"]]
    resumed = KMeans(k, n_init=R, random_state=999, chunk_size=400, tol=0).fit(pixels, resume=state)
    np.testing.assert_array_equal(resumed.cluster_centers_, full.cluster_centers_)
    np.testing.assert_array_equal(resumed.labels_, full.labels_)
    assert resumed.inertia_ == full.inertia_ and resumed.n_iter_ == full.n_iter_


def test_resume_with_another_number_of_runs_is_refused(pixels):
    states = []
    KMeans(4, n_init=2, random_state=0, max_iter=2, chunk_size=400).fit(pixels, on_iteration=states.append)
    with pytest.raises(ValueError, match="2 run.*n_init=3"):
        KMeans(4, n_init=3, random_state=0, chunk_size=400).fit(pixels, resume=states[-1])


def test_restarts_on_worker_processes_equal_threads(pixels):
    from distributed import Client, LocalCluster

    X = pixels[:900]  # pixels: exact sums, so bit-identical whichever process adds them
    ref = KMeans(5, n_init=3, random_state=2, chunk_size=100).fit(X)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        got = KMeans(5, n_init=3, random_state=2, chunk_size=100).fit(X)
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(got.labels_, ref.labels_)
    assert got.inertia_ == ref.inertia_


def test_fit_together_equals_separate_fits(pixels):
    """Several k (and restarts) in shared passes: each model as its own fit leaves it."""
    from daskmeans.estimator import fit_together

    models = fit_together([KMeans(k, n_init=2, random_state=7, chunk_size=300) for k in (3, 5, 8)], pixels)
    for m in models:
        alone = KMeans(m.n_clusters, n_init=2, random_state=7, chunk_size=300).fit(pixels)
        np.testing.assert_array_equal(m.cluster_centers_, alone.cluster_centers_)
        np.testing.assert_array_equal(m.labels_, alone.labels_)
        assert (m.inertia_, m.n_iter_) == (alone.inertia_, alone.n_iter_)


def test_fit_together_refuses_models_that_differ_beyond_k(pixels):
    from daskmeans.estimator import fit_together

    with pytest.raises(ValueError, match="differ only in n_clusters"):
        fit_together([KMeans(3, random_state=0), KMeans(4, random_state=1)], pixels)
    with pytest.raises(ValueError, match="needs daskmeans.KMeans models, got str") as e:
        fit_together([KMeans(3), "KMeans(4)"], pixels)
    assert "\n" not in str(e.value)


@pytest.mark.data
def test_cli_restarts_interrupted_then_resumed(cifar_store, tmp_path, monkeypatch):
    """`daskmeans run --n-init 3`: a run that dies after iteration 3 leaves a checkpoint of the
    three restarts; `--resume` ends with exactly the uninterrupted run's centres and labels."""
    from daskmeans.cli import main

    monkeypatch.setattr("daskmeans.report.write_extras", lambda *a, **k: None)  # pictures are not tested here
    args = ["run", "--data", str(cifar_store), "--subset", "600", "--chunk-size", "200", "-k", "6", "--n-init", "3",
            "--seed", "2", "--tol", "0", "--scheduler", "threads", "-q"]
    ref = tmp_path / "ref"
    assert main(args + ["--out", str(ref), "--checkpoint", "none"]) == 0

    real = checkpoint.Checkpointer.__call__

    def dies_after_3(self, state):
        real(self, state)
        if state["iteration"] == 3:
            raise RuntimeError("simulated crash")

    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        mp.setattr(checkpoint.Checkpointer, "__call__", dies_after_3)
        assert main(args + ["--out", str(out)]) != 0
    state = checkpoint.load(checkpoint.default_path(out))
    assert state["iteration"] == 3 and len(state["runs"]) == 3
    assert main(args + ["--out", str(out), "--resume"]) == 0
    np.testing.assert_array_equal(np.load(out / "centroids.npy"), np.load(ref / "centroids.npy"))
    np.testing.assert_array_equal(np.load(out / "labels.npy"), np.load(ref / "labels.npy"))
    assert not checkpoint.default_path(out).exists()


def test_damaged_restart_checkpoints_are_refused_in_one_line(pixels, tmp_path):
    import json

    states = []
    KMeans(4, n_init=2, random_state=0, max_iter=3, tol=0, chunk_size=400).fit(pixels, on_iteration=states.append)
    good = checkpoint.save(tmp_path / "good.npz", states[-1], fingerprint={"k": 4})
    with np.load(good) as z:
        data = {key: z[key] for key in z.files}
    meta = json.loads(bytes(data["meta"]).decode())
    damages = {
        "history shorter than the iteration": lambda d, m: m["runs"][0].update(history=m["runs"][0]["history"][:-1]),
        "a run's progress missing": lambda d, m: m["runs"].pop(),
        "2-D centres for restarts": lambda d, m: d.update(centers=d["centers"][0]),
        "NaN centres": lambda d, m: d["centers"].__setitem__((0, 0, 0), np.nan),
    }
    for name, damage in damages.items():
        d = {key: v.copy() for key, v in data.items()}
        m = json.loads(json.dumps(meta))
        damage(d, m)
        d["meta"] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)
        path = tmp_path / f"{len(name)}.npz"
        np.savez(path, **d)
        with pytest.raises(ValueError, match="damaged|unreadable") as e:
            checkpoint.load(path, fingerprint={"k": 4})
        assert "\n" not in str(e.value), name
