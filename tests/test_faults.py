"""Surviving faults: a killed client, a killed worker, a vanished scheduler.

Every fault is real: ``dask scheduler`` / ``dask worker`` processes and the
``daskmeans`` command in subprocesses, on 127.0.0.1, killed with SIGKILL by pid.
Each run must end with exactly the centres and labels of an undisturbed run.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from daskmeans import checkpoint
from daskmeans.cli import main
from helpers_dask import (  # noqa: F401  (dask_procs: a fixture)
    DaskProcesses, cli_env, dask_procs, freeze, kill, start_cli, thaw, two_workers, wait_for, wait_for_text,
)

#: One small, deterministic job: 1,000 images in 4 chunks, uniform init (an empty cluster
#: relocated), strict convergence after 33 iterations.
ARGS = ["--subset", "1000", "--chunk-size", "250", "-k", "8", "--init", "uniform", "--seed", "5", "--tol", "0"]


@pytest.fixture(scope="module")
def reference(cifar_store, tmp_path_factory):
    """The undisturbed run (threads scheduler, in this process)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    with pytest.MonkeyPatch.context() as mp:  # figures are not what this file tests
        mp.setattr("daskmeans.report.write_extras", lambda *a, **k: None)
        assert main(["run", "--data", str(cifar_store), *ARGS, "--scheduler", "threads", "--out", str(out), "-q"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_iter"] >= 8, "the reference run must be long enough to be interrupted"
    return {"centroids": np.load(out / "centroids.npy"), "labels": np.load(out / "labels.npy"), "report": report}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers, shared by the tests that do not kill the scheduler."""
    yield from two_workers(tmp_path_factory.mktemp("cluster"))


def assert_same(out, reference):
    np.testing.assert_array_equal(np.load(out / "centroids.npy"), reference["centroids"])
    np.testing.assert_array_equal(np.load(out / "labels.npy"), reference["labels"])


def _checkpointed(ckpt, n, proc):
    """Wait until the run's checkpoint holds iteration ``n`` or later."""

    def done():
        state = checkpoint.load(ckpt)
        return state is not None and state["iteration"] >= n

    wait_for(done, 120, f"a checkpoint of iteration {n}", proc)


@pytest.mark.data
@pytest.mark.distributed
def test_client_killed_mid_run_then_resumed(cluster, reference, cifar_store, tmp_path):
    out = tmp_path / "out"
    ckpt = checkpoint.default_path(out)
    env = cli_env(cifar_store.parent.parent)
    cmd = ["run", "--data", cifar_store, *ARGS, "--scheduler", cluster.address, "--out", out]
    proc = start_cli(cmd, tmp_path / "first.err", env)
    _checkpointed(ckpt, 4, proc)
    freeze(proc)  # SIGSTOP: it cannot finish behind our back
    assert checkpoint.load(ckpt)["iteration"] < reference["report"]["n_iter"], "the run was already done"
    kill(proc)  # SIGKILL: no cleanup, no handler

    assert not out.exists(), "a killed run must not leave its output folder"
    state = checkpoint.load(ckpt)
    assert state is not None and 4 <= state["iteration"] < reference["report"]["n_iter"]
    killed_at = state["iteration"]

    t0 = time.monotonic()
    proc = start_cli(cmd + ["--resume"], tmp_path / "second.err", env)
    assert proc.wait(timeout=180) == 0, (tmp_path / "second.err").read_text()
    err = (tmp_path / "second.err").read_text()
    assert f"resuming from {ckpt} after iteration {killed_at}" in err
    assert f"Iteration {killed_at}, " not in err and f"Iteration {killed_at + 1}, " in err  # continued, not restarted
    assert_same(out, reference)
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"] == killed_at
    ref_hist = reference["report"]["history"]
    assert [h["changed"] for h in report["history"]] == [h["changed"] for h in ref_hist]
    # float32 distances: the last bits of the inertia depend on BLAS threading
    assert [h["inertia"] for h in report["history"]] == pytest.approx([h["inertia"] for h in ref_hist], rel=1e-6)
    assert not ckpt.exists(), "the checkpoint is removed once the outputs are in place"
    print(f"\n[resume] killed after iteration {killed_at}, resumed run took {time.monotonic() - t0:.1f} s")


@pytest.mark.data
@pytest.mark.distributed
def test_worker_killed_mid_run_same_result(cluster, reference, cifar_store, tmp_path):
    """The data comes from the on-disk store, so lost pieces are recomputed from the graph."""
    victim = cluster.start_worker("victim")
    out = tmp_path / "out"
    proc = start_cli(["run", "--data", cifar_store, *ARGS, "--scheduler", cluster.address, "--out", out],
                     tmp_path / "run.err", cli_env(cifar_store.parent.parent))
    wait_for_text(tmp_path / "run.err", r"Iteration 3, ", timeout=120, proc=proc)
    freeze(proc)  # the client waits while its worker dies: the kill is mid-run, whatever the timing
    assert "Converged at" not in (tmp_path / "run.err").read_text()
    kill(victim)
    assert victim.returncode == -9
    thaw(proc)
    assert proc.wait(timeout=180) == 0, (tmp_path / "run.err").read_text()
    wait_for(lambda: "name: victim" in cluster.scheduler_log() and "Remove worker" in cluster.scheduler_log(),
             10, "the scheduler noticing the dead worker")
    assert_same(out, reference)


@pytest.mark.data
@pytest.mark.distributed
def test_scheduler_vanished_ends_with_status_3_checkpoint_intact(dask_procs, reference, cifar_store, tmp_path):
    dask_procs.start_scheduler()
    dask_procs.start_worker("w1")
    out = tmp_path / "out"
    ckpt = checkpoint.default_path(out)
    env = cli_env(cifar_store.parent.parent, DASK_DASKMEANS__SCHEDULER__CONNECT_TIMEOUT=3)
    proc = start_cli(["run", "--data", cifar_store, *ARGS, "--scheduler", dask_procs.address, "--out", out],
                     tmp_path / "run.err", env)
    _checkpointed(ckpt, 3, proc)
    freeze(proc)
    kill(dask_procs.scheduler)
    t0 = time.monotonic()
    thaw(proc)
    code = proc.wait(timeout=120)
    seconds = time.monotonic() - t0
    err = (tmp_path / "run.err").read_text()
    assert code == 3, err
    assert seconds < 3 + 20, f"took {seconds:.1f} s to notice"
    last = err.strip().splitlines()[-1]
    assert last.startswith("daskmeans: error: the Dask scheduler at tcp://127.0.0.1:") and "vanished" in last
    assert f"the checkpoint {ckpt}" in last and "rerun with --resume" in last
    assert "Traceback" not in err and not out.exists()
    state = checkpoint.load(ckpt)
    assert state is not None and state["iteration"] >= 3
    print(f"\n[vanish] exit 3 after {seconds:.1f} s; checkpoint at iteration {state['iteration']}")

    # ... and the run goes on elsewhere (here: threads) to the same result.
    assert main(["run", "--data", str(cifar_store), *ARGS, "--scheduler", "threads", "--out", str(out),
                 "--resume", "-q"]) == 0
    assert_same(out, reference)
    assert json.loads((out / "report.json").read_text())["resumed_from"] == state["iteration"]


# -- the resume contract, iteration by iteration (in this process, no real data needed) ------


def _blobs(n=600, d=48, k=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.integers(30, 220, size=(k, d))
    X = centres[rng.integers(0, k, n)] + rng.normal(0, 25, size=(n, d))
    return np.clip(X, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("k, seed, init, metric, tol, max_iter", [
    (7, 3, "k-means++", "l2", 0.0, 50),   # strict convergence (no label changed)
    (12, 0, "uniform", "l2", 1e-2, 50),    # tolerance convergence (then a final assignment); 6 empty clusters relocated
    (7, 2, "uniform", "l1", 1e-2, 50),     # the notebook's L1 assignment, tolerance convergence, an empty cluster
    (7, 3, "k-means++", "l2", 0.0, 4),    # stopped by max-iter
])
def test_resume_from_every_checkpoint_gives_the_uninterrupted_result(k, seed, init, metric, tol, max_iter, tmp_path):
    """A checkpoint of iteration i (saved to disk, loaded back) continues to exactly the same end."""
    import dask
    import dask.array as da

    from daskmeans import KMeans

    X = da.from_array(_blobs(), chunks=(150, -1))
    kw = dict(init=init, metric=metric, tol=tol, max_iter=max_iter)
    files = []

    def save(state):
        files.append(checkpoint.save(tmp_path / f"it{state['iteration']}.npz", state, fingerprint={"t": 1}, rng=rng))

    with dask.config.set(scheduler="threads"):
        rng = np.random.RandomState(seed)
        full = KMeans(k, random_state=rng, **kw).fit(X, on_iteration=save)
        rng_after_init = rng.get_state(legacy=True)
        labels = full.labels_.compute()
        assert len(files) == full.n_iter_ >= 3
        assert full.converged_ == (max_iter == 50)
        for f in files:
            state = checkpoint.load(f, fingerprint={"t": 1})
            assert state["rng_state"][2] == rng_after_init[2]
            np.testing.assert_array_equal(state["rng_state"][1], rng_after_init[1])
            again = KMeans(k, random_state=np.random.RandomState(seed), **kw).fit(X, resume=state)
            np.testing.assert_array_equal(again.cluster_centers_, full.cluster_centers_, err_msg=f.name)
            np.testing.assert_array_equal(again.labels_.compute(), labels, err_msg=f.name)
            assert again.n_iter_ == full.n_iter_ and again.converged_ == full.converged_
            assert again.inertia_ == pytest.approx(full.inertia_, rel=1e-12)
            assert [h["changed"] for h in again.history_] == [h["changed"] for h in full.history_]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    import os

    path = tmp_path / "c.npz"
    state = {"iteration": 1, "centers": np.ones((2, 3)), "centers_prev": np.zeros((2, 3)), "init": np.zeros((2, 3)),
             "history": [{"iteration": 1, "inertia": 2.0}], "converged": False, "strict": False}
    checkpoint.save(path, state)
    assert checkpoint.load(path)["iteration"] == 1

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # dies between writing the new file and renaming it
    with pytest.raises(OSError):
        checkpoint.save(path, {**state, "iteration": 2})
    monkeypatch.undo()
    assert checkpoint.load(path)["iteration"] == 1  # the previous checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    from daskmeans.errors import InputError

    path = tmp_path / "c.npz"
    state = {"iteration": 4, "centers": np.ones((2, 3)), "centers_prev": np.zeros((2, 3)), "init": np.zeros((2, 3)),
             "history": [], "converged": False}
    checkpoint.save(path, state, fingerprint={"k": 2, "seed": 0})
    with pytest.raises(InputError, match=r"other settings \(k 2 \(checkpoint\) vs 3\)"):
        checkpoint.load(path, fingerprint={"k": 3, "seed": 0})
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="unreadable"):
        checkpoint.load(path)
