"""`daskmeans run` end to end: the report contract, reproducibility, bad input."""

from __future__ import annotations

import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_dask import run_cli

from daskmeans.cli import main

DASKMEANS = [sys.executable, "-m", "daskmeans.cli"]


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def subset_run(cifar_store, tmp_path_factory):
    """One 1,000-image run on the real data, shared by the contract tests."""
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["run", "--data", str(cifar_store), "--subset", "1000", "-k", "10", "--seed", "3",
                 "--chunk-size", "300", "--out", str(out), "-q"])
    assert code == 0
    return out


@pytest.mark.data
def test_run_writes_the_report_contract(subset_run, cifar_store):
    from daskmeans.data import load_cifar10

    report = json.loads((subset_run / "report.json").read_text())
    for key in ("n_samples", "k", "n_iter", "converged", "inertia", "purity", "cluster_sizes",
                "contingency", "class_names", "history"):
        assert key in report, key
    assert report["n_samples"] == 1000 and report["k"] == 10
    assert len(report["history"]) == report["n_iter"]
    for entry in report["history"]:
        assert {"inertia", "shift", "changed", "seconds"} <= set(entry)

    centroids = np.load(subset_run / "centroids.npy")
    labels = np.load(subset_run / "labels.npy")
    assert centroids.shape == (10, 3072) and centroids.dtype == np.float32
    assert 0 <= centroids.min() and centroids.max() <= 1
    assert labels.shape == (1000,)

    # Independent check: the images the subset took, read here, and serial NumPy.
    idx = np.asarray(report["data"]["indices"])
    assert len(idx) == 1000 and np.all(np.diff(idx) > 0)
    ds = load_cifar10(str(cifar_store), split="train")
    images = ds.images.compute()[idx].reshape(1000, -1).astype(np.float64) / 255
    classes = ds.labels.compute()[idx]
    d = ((images[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))  # labels match the final centres
    for j in range(10):  # centres are the means of their members
        np.testing.assert_allclose(centroids[j], images[labels == j].mean(0), atol=1e-6)
    table = np.zeros((10, 10), dtype=int)
    np.add.at(table, (labels, classes), 1)
    np.testing.assert_array_equal(np.asarray(report["contingency"]), table)
    assert report["purity"] == pytest.approx(table.max(axis=1).sum() / 1000, abs=1e-12)
    sizes = table.sum(axis=1)
    impurity = sum(1 - r.max() / n for r, n in zip(table, sizes) if n)  # what the notebook summed
    assert report["notebook_impurity"] == pytest.approx(impurity, abs=1e-12)
    assert report["cluster_sizes"] == np.bincount(labels, minlength=10).tolist()
    assert report["inertia"] == pytest.approx(d.min(1).sum(), rel=1e-5)
    assert report["class_names"][0] == "airplane" and report["class_names"][9] == "truck"


@pytest.mark.data
def test_same_seed_same_result_whatever_the_chunking(subset_run, cifar_store, tmp_path):
    out = tmp_path / "again"
    assert main(["run", "--data", str(cifar_store), "--subset", "1000", "--seed", "3",
                 "--chunk-size", "1000", "--out", str(out), "-q"]) == 0
    np.testing.assert_array_equal(np.load(out / "centroids.npy"), np.load(subset_run / "centroids.npy"))
    np.testing.assert_array_equal(np.load(out / "labels.npy"), np.load(subset_run / "labels.npy"))


@pytest.mark.data
def test_terminal_shows_progress_and_table(cifar_store, tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--data", cifar_store, "--subset", "300", "-k", "3",
                             "--max-iter", "3", "--out", tmp_path / "o")
    assert code == 0
    assert "Iteration 1, inertia" in err  # one line per iteration as it happens
    assert "majority class" in out and "purity" in out and str(tmp_path / "o") in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(path: Path, timeout=30.0):
    t0 = time.time()
    while not path.exists():
        if time.time() - t0 > timeout:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.1)


@pytest.mark.data
@pytest.mark.distributed
def test_same_labels_on_threads_local_and_a_real_cluster(subset_run, cifar_store, tmp_path):
    """A real `dask scheduler` and `dask worker` on 127.0.0.1, stopped by pid."""
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    port = _free_port()
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(sched_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        _wait_for(sched_file)
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1",
                                       "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        ref = np.load(subset_run / "labels.npy")
        for sched in (f"tcp://127.0.0.1:{port}", "local"):
            out = tmp_path / sched.replace(":", "_").replace("/", "")
            r = subprocess.run(DASKMEANS + ["run", "--data", str(cifar_store), "--subset", "1000", "--seed", "3",
                                            "--chunk-size", "300", "--scheduler", sched, "--n-workers", "2",
                                            "--out", str(out), "-q"],
                               capture_output=True, text=True, timeout=240)
            assert r.returncode == 0, r.stderr
            np.testing.assert_array_equal(np.load(out / "labels.npy"), ref)
            np.testing.assert_array_equal(np.load(out / "centroids.npy"), np.load(subset_run / "centroids.npy"))
            rep = json.loads((out / "report.json").read_text())
            if sched != "local":
                assert rep["scheduler"]["address"] == sched
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)


# -- bad input: one line, exit status 2, no traceback, nothing written -----------------


def _tiny_tree_tar(tmp_path: Path) -> Path:
    from PIL import Image

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for cls in ("cat", "dog"):
            for i in range(3):
                img = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(img, format="PNG")
                info = tarfile.TarInfo(f"train/{cls}/{i}.png")
                info.size = len(img.getvalue())
                tf.addfile(info, io.BytesIO(img.getvalue()))
    p = tmp_path / "tiny.tar.gz"
    p.write_bytes(buf.getvalue())
    return p


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/daskmeans-pwned",))


def _bad_sources(tmp_path: Path) -> dict:
    good = _tiny_tree_tar(tmp_path)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    wrong = tmp_path / "wrong.tar.gz"
    with tarfile.open(wrong, "w:gz") as tf:
        data = b"hello"
        info = tarfile.TarInfo("notes/readme.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    crafted = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(crafted, "w:gz") as tf:
        for name in ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return {"missing": tmp_path / "nope.tar.gz", "truncated": truncated, "wrong": wrong, "crafted": crafted}


@pytest.mark.parametrize("case, needle", [
    ("missing", "nope.tar.gz"),
    ("truncated", "truncated.tar.gz"),
    ("wrong", "wrong.tar.gz"),
    ("crafted", "refusing to unpickle"),
])
def test_bad_data_sources(case, needle, tmp_path, capsys, cache_env):
    if os.path.exists("/tmp/daskmeans-pwned"):
        os.remove("/tmp/daskmeans-pwned")
    src = _bad_sources(tmp_path)[case]
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "run", "--data", src, "--out", out)
    assert code == 2
    lines = err.strip().splitlines()  # progress lines may come first; one error line, last
    errors = [ln for ln in lines if "error" in ln.lower()]
    assert errors == [lines[-1]] and lines[-1].startswith("daskmeans: error:") and needle in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())
    assert not os.path.exists("/tmp/daskmeans-pwned")


@pytest.fixture
def tiny(tmp_path):
    return _tiny_tree_tar(tmp_path)


def _bad_init(tmp_path, what):
    p = tmp_path / f"init-{what}.npy"
    np.save(p, np.zeros((3, 7)) if what == "shape" else np.full((2, 3072), np.nan))
    return p


@pytest.mark.parametrize("args, needle", [
    (["-k", "0"], "-k 0"),
    (["-k", "7"], "-k 7 is larger than the number of images (6)"),
    (["--subset", "10"], "--subset 10 is larger than"),
    (["--max-iter", "0"], "--max-iter 0"),
    (["--tol", "-1"], "--tol -1"),
    (["--init", "SHAPE"], "shape (3, 7), expected (2, 3072)"),
    (["--init", "NAN"], "NaN"),
    (["--init", "missing.npy"], "no such file"),
    (["-k", "abc"], "invalid int value"),
    (["--scheduler", "carrier-pigeon"], "--scheduler 'carrier-pigeon'"),
])
def test_bad_options(args, needle, tiny, tmp_path, capsys, cache_env):
    args = [str(_bad_init(tmp_path, "shape")) if a == "SHAPE" else str(_bad_init(tmp_path, "nan")) if a == "NAN" else a
            for a in args]
    if "-k" not in args:
        args += ["-k", "2"]
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "run", "--data", tiny, "--out", out, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("daskmeans: error:") and needle in lines[-1], err
    assert "Traceback" not in err
    assert not out.exists()


def test_unwritable_output(tiny, tmp_path, capsys, cache_env):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "run", "--data", tiny, "-k", "2", "--out", blocker / "sub")
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1


def test_failed_run_leaves_no_new_folders(tmp_path, capsys, cache_env):
    out = tmp_path / "new" / "deeper" / "out"
    code, _, err = run_cli(capsys, "run", "--data", tmp_path / "missing.tar.gz", "--out", out)
    assert code == 2 and "missing.tar.gz" in err
    assert not (tmp_path / "new").exists()


def test_existing_output_not_clobbered(tiny, tmp_path, capsys, cache_env):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code, _, err = run_cli(capsys, "run", "--data", tiny, "-k", "2", "--out", out)
    assert code == 2 and "--overwrite" in err
    assert (out / "keep.txt").read_text() == "precious"


def test_unreachable_scheduler_is_bounded(tiny, tmp_path, cache_env):
    port = _free_port()  # nothing listens there
    t0 = time.time()
    r = subprocess.run(DASKMEANS + ["run", "--data", str(tiny), "-k", "2", "--scheduler", f"tcp://127.0.0.1:{port}",
                                    "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "DASK_DASKMEANS__SCHEDULER__CONNECT_TIMEOUT": "3"})
    assert r.returncode == 3, r.stderr
    assert time.time() - t0 < 60
    assert r.stderr.strip().splitlines()[-1].startswith("daskmeans: error: could not reach the Dask scheduler")
    assert "Traceback" not in r.stderr and not (tmp_path / "out").exists()


def test_tiny_run_end_to_end_as_a_subprocess(tiny, tmp_path, cache_env):
    """The installed entry point, start to finish, on a 6-image tree."""
    out = tmp_path / "out"
    r = subprocess.run(DASKMEANS + ["run", "--data", str(tiny), "-k", "2", "--out", str(out), "--json", "-q"],
                       capture_output=True, text=True, timeout=120, env={**os.environ})
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["n_samples"] == 6 and summary["k"] == 2
    assert {"centroids.npy", "labels.npy", "report.json"} <= {p.name for p in out.iterdir()}


def test_staging_left_by_a_killed_run_is_removed(tiny, tmp_path, capsys, cache_env):
    """A run killed with SIGKILL leaves its hidden staging folder; the next run there deletes it."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead_pid = victim.pid
    victim.kill()
    victim.wait()
    stale = tmp_path / f".out.tmp-{dead_pid}-deadbeef"
    stale.mkdir()
    (stale / "report.json").write_text("{half")
    alive = tmp_path / f".out.tmp-{os.getppid()}-cafebabe"  # a live process's staging stays
    alive.mkdir()
    code, _, err = run_cli(capsys, "run", "--data", tiny, "-k", "2", "--out", tmp_path / "out", "-q")
    assert code == 0, err
    assert not stale.exists() and alive.exists() and (tmp_path / "out" / "report.json").exists()
