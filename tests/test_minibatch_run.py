"""`daskmeans run --mini-batch`, `--init RUN_FOLDER` (warm starts) and job specs with them."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers_dask import run_cli

from daskmeans import jobs
from daskmeans import minibatch_checkpoint as states
from daskmeans.data import load_cifar10


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)
    monkeypatch.setattr("daskmeans.report.write_extras", lambda *a, **k: None)  # pictures: another module's tests
    return tmp_path / "cache"


@pytest.fixture
def three(tmp_path) -> Path:
    """120 32x32 images in 3 classes of distinct brightness (an image-folder tarball)."""
    from PIL import Image

    rng = np.random.RandomState(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for ci, cls in enumerate(("cat", "dog", "ship")):
            for i in range(40):
                arr = np.clip(rng.normal(50 + 75 * ci, 25, size=(32, 32, 3)), 0, 255).astype(np.uint8)
                img = io.BytesIO()
                Image.fromarray(arr).save(img, format="PNG")
                info = tarfile.TarInfo(f"train/{cls}/{i}.png")
                info.size = len(img.getvalue())
                tf.addfile(info, io.BytesIO(img.getvalue()))
    p = tmp_path / "three.tar.gz"
    p.write_bytes(buf.getvalue())
    return p


MB = ["-k", "3", "--mini-batch", "--batch-size", "16", "--seed", "1", "-q"]


def _run(capsys, data, out, *args):
    code, stdout, err = run_cli(capsys, "run", "--data", data, "--out", out, *args)
    assert code == 0, err
    return json.loads((Path(out) / "report.json").read_text())


def _same_outputs(a: Path, b: Path):
    np.testing.assert_array_equal(np.load(a / "centroids.npy"), np.load(b / "centroids.npy"))
    np.testing.assert_array_equal(np.load(a / "labels.npy"), np.load(b / "labels.npy"))


def test_mini_batch_run_writes_its_report(three, tmp_path, capsys, cache_env):
    report = _run(capsys, three, tmp_path / "o", *MB)
    assert report["algorithm"] == "minibatch" and report["n_steps"] >= 2
    s = report["settings"]
    assert (s["mini_batch"], s["batch_size"], s["max_iter"], s["tol"]) == (True, 16, 100, 0.0)
    assert report["n_iter"] == -(-report["n_steps"] * 16 // 120)
    assert all({"iteration", "inertia", "changed", "seconds"} <= set(h) for h in report["history"])
    centroids = np.load(tmp_path / "o" / "centroids.npy")
    labels = np.load(tmp_path / "o" / "labels.npy")
    assert centroids.shape == (3, 3072) and centroids.dtype == np.float32 and 0 <= centroids.min() <= 1
    images = load_cifar10(str(three), split="train", progress=False).flat().compute().astype(np.float64) / 255
    d = ((images[:, None, :] - centroids[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d.argmin(1))  # every image's nearest final centre (serial NumPy)
    assert report["inertia"] == pytest.approx(d.min(1).sum(), rel=1e-5)
    assert report["purity"] == 1.0


def test_mini_batch_run_is_the_same_whatever_the_chunking(three, tmp_path, capsys, cache_env):
    _run(capsys, three, tmp_path / "a", *MB, "--chunk-size", "120")
    _run(capsys, three, tmp_path / "b", *MB, "--chunk-size", "7")
    _run(capsys, three, tmp_path / "c", *MB, "--chunk-size", "33", "--no-persist")  # read from the store per window
    _same_outputs(tmp_path / "a", tmp_path / "b")
    _same_outputs(tmp_path / "a", tmp_path / "c")


def test_mini_batch_run_interrupted_then_resumed(three, tmp_path, capsys, cache_env, monkeypatch):
    args = [*MB, "--batch-size", "8", "--max-iter", "4"]
    _run(capsys, three, tmp_path / "ref", *args, "--checkpoint", "none")
    monkeypatch.setattr(states, "INTERVAL", 0.0)  # save after every step
    real = states.RunCheckpoint._save

    def dies_after_5(self, state):
        real(self, state)
        if state["step"] == 5:
            raise RuntimeError("simulated crash")

    out = tmp_path / "out"
    with monkeypatch.context() as mp:
        mp.setattr(states.RunCheckpoint, "_save", dies_after_5)
        code, _, err = run_cli(capsys, "run", "--data", three, "--out", out, *args)
    assert code == 1 and "simulated crash" in err
    ckpt = out.parent / f".{out.name}.checkpoint.npz"
    assert states.load(ckpt)["step"] == 5
    report = _run(capsys, three, out, *args, "--resume")
    assert report["resumed_from"] == 5
    _same_outputs(out, tmp_path / "ref")
    assert not ckpt.exists()


def test_init_an_earlier_run_keeps_its_cluster_ids(three, tmp_path, capsys, cache_env):
    first = _run(capsys, three, tmp_path / "first", "-k", "3", "--seed", "4", "-q")
    again = _run(capsys, three, tmp_path / "again", "-k", "3", "--init", tmp_path / "first", "-q")
    mini = _run(capsys, three, tmp_path / "mini", *MB, "--init", tmp_path / "first")
    np.testing.assert_array_equal(np.load(tmp_path / "again" / "labels.npy"), np.load(tmp_path / "first" / "labels.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "mini" / "labels.npy"), np.load(tmp_path / "first" / "labels.npy"))
    assert again["n_iter"] <= 2 and first["n_iter"] >= again["n_iter"] and mini["purity"] == 1.0
    c0, c1 = np.load(tmp_path / "first" / "centroids.npy"), np.load(tmp_path / "mini" / "centroids.npy")
    assert (((c0[:, None] - c1[None]) ** 2).sum(-1).argmin(1) == np.arange(3)).all()


@pytest.mark.parametrize("args, needle", [
    (["-k", "3", "--batch-size", "8"], "--batch-size 8 needs --mini-batch"),
    (["-k", "3", "--mini-batch", "--metric", "l1"], "--mini-batch needs --metric l2"),
    (["-k", "3", "--mini-batch", "--batch-size", "0"], "--batch-size 0: rows per mini-batch must be >= 1"),
    (["-k", "3", "--mini-batch", "--compare", "sklearn"], "--compare sklearn compares full-batch fits only"),
    (["-k", "3", "--init", "EMPTY"], "--init EMPTY: no centroids.npy in that folder"),
    (["-k", "4", "--init", "PREVIOUS"], "the run has 3 clusters, but n_clusters=4; pass -k 3"),
    (["-k", "3", "--init", "PREVIOUS", "--features", "pca"], "--init PREVIOUS continues another run's centres"),
])
def test_bad_options_one_line(args, needle, three, tmp_path, capsys, cache_env):
    previous = tmp_path / "previous"
    previous.mkdir()
    np.save(previous / "centroids.npy", np.zeros((3, 3072), np.float32))
    (tmp_path / "empty").mkdir()
    names = {"EMPTY": str(tmp_path / "empty"), "PREVIOUS": str(previous)}
    args = [names.get(a, a) for a in args]
    needle = needle.replace("EMPTY", names["EMPTY"]).replace("PREVIOUS", names["PREVIOUS"])
    code, _, err = run_cli(capsys, "run", "--data", three, "--out", tmp_path / "out", *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("daskmeans: error:") and needle in lines[-1] and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_job_spec_with_mini_batch_and_an_earlier_run(three, tmp_path, capsys, cache_env):
    _run(capsys, three, tmp_path / "previous", "-k", "3", "-q")
    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    p = spec_dir / "nightly.yaml"
    p.write_text(yaml.safe_dump({"name": "nightly", "root": "runs", "data": str(three), "k": 3, "mini-batch": True,
                                 "batch-size": 16, "init": "../previous"}))
    spec = jobs.load_spec(p)
    assert spec.settings.mini_batch and spec.settings.batch_size == 16
    assert spec.settings.init == str((tmp_path / "previous").resolve())
    code, out, err = run_cli(capsys, "job", "run", p)
    assert code == 0, err
    (run_dir,) = jobs.runs(spec.job_dir)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["algorithm"] == "minibatch"
    np.testing.assert_array_equal(np.load(run_dir / "labels.npy"), np.load(tmp_path / "previous" / "labels.npy"))
    p.write_text(yaml.safe_dump({"name": "nightly", "root": "runs", "data": str(three), "k": 3, "batch-size": 16}))
    with pytest.raises(Exception, match=r"--batch-size 16 needs --mini-batch"):
        jobs.load_spec(p)


def test_a_job_continues_its_mini_batch_checkpoint(three, tmp_path, monkeypatch):
    """The job keeps a mini-batch checkpoint written with its spec's settings, and drops it once they change."""
    p = tmp_path / "j.yaml"
    p.write_text(yaml.safe_dump({"name": "j", "root": "runs", "data": str(three), "k": 3, "mini-batch": True}))
    spec = jobs.load_spec(p)
    spec.job_dir.mkdir(parents=True)
    state = {"step": 2, "centers": np.zeros((3, 4)), "counts": np.ones(3), "init": np.zeros((3, 4)),
             "since_reassign": 0, "ewa": 1.0, "ewa_min": 1.0, "no_improvement": 0, "converged": False, "key": 1,
             "batch_size": 1024, "init_size": 360, "n_init": 1, "n_samples": 120, "n_features": 4,
             "history": []}
    seen = {}

    def fake_run(settings, out_dir=None, **kw):
        seen["exists"] = spec.checkpoint.exists()
        raise RuntimeError("stop here")

    monkeypatch.setattr("daskmeans.run.run", fake_run)
    states.save(spec.checkpoint, state, fingerprint=states.fingerprint(spec.settings))
    with pytest.raises(RuntimeError):
        jobs.run_job(spec)
    assert seen == {"exists": True}
    spec.settings.batch_size = 512  # the spec changed since
    with pytest.raises(RuntimeError):
        jobs.run_job(spec)
    assert seen == {"exists": False}
