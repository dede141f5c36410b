"""Scheduled batch jobs: specs, run folders, the lock, retention, resuming, renderers."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from daskmeans import checkpoint, jobs
from daskmeans.cli import main
from daskmeans.errors import EXIT_INPUT, EXIT_LOCKED, LockHeld
from helpers_dask import DaskProcesses, cli_env, freeze, kill, start_cli, thaw, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_figures(monkeypatch):
    """Figures and HTML are another module's business: skip them in in-process runs here."""
    monkeypatch.setattr("daskmeans.report.write_extras", lambda *a, **k: None)


def write_spec(folder: Path, name="j", file=None, **values) -> Path:
    spec = {"name": name, "root": "runs", "keep": 3, **values}
    p = folder / (file or f"{name}.yaml")
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.fixture
def fake_data(tmp_path) -> Path:
    """A file that exists: enough for validating and rendering (nothing reads it)."""
    p = tmp_path / "data.tar.gz"
    p.write_bytes(b"")
    return p


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- specs ----------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize("name, subset, init, metric", [
    ("notebook-2000", 2000, "uniform", "l1"),
    ("full-50000", None, "k-means++", "l2"),
])
def test_shipped_specs_validate(name, subset, init, metric, real_data, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = jobs.load_spec(ROOT / "jobs" / f"{name}.yaml")
    s = spec.settings
    assert spec.name == name and s.subset == subset and s.k == 10 and s.init == init and s.metric == metric
    assert Path(s.data).resolve() == real_data.resolve() and s.seed == 0 and s.tol == 1e-4 and spec.keep >= 1
    assert spec.root == ROOT / "runs" / "jobs"
    code, out, err = run_cli(capsys, "job", "validate", ROOT / "jobs" / f"{name}.yaml")
    assert code == 0 and out.startswith(f"ok: job {name}: train split") and err == ""


@pytest.mark.parametrize("values, needle", [
    ({"k": 0}, "-k 0: the number of clusters must be >= 1"),
    ({"kk": 3}, "unknown key(s) kk; allowed:"),
    ({"k": "ten"}, "k 'ten' must be a whole number"),
    ({"tol": "1e-4x"}, "tol '1e-4x' must be a number"),
    ({"root": None}, "root (the output root folder"),
    ({"keep": 0}, "keep 0 must be a whole number >= 1"),
    ({"schedule": "every day"}, "schedule 'every day' is not a cron expression"),
    ({"data": "nope.tar.gz"}, "nope.tar.gz: no such file or folder (relative paths are relative to the spec's folder"),
    ({"cluster": "nope"}, "--cluster 'nope': no such profile"),
    ({"out": "x"}, "unknown key(s) out"),
    ({"name": "../evil"}, "name '../evil' may hold only"),
])
def test_bad_specs_one_line_status_2(values, needle, tmp_path, fake_data, capsys):
    p = write_spec(tmp_path, **{"data": str(fake_data), **values})
    for action in (["validate"], ["run"], ["render", "--target", "cron"]):
        code, out, err = run_cli(capsys, "job", *action, p)
        assert code == EXIT_INPUT, (action, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"daskmeans: error: job spec {p}") and needle in lines[0], err
    assert not (tmp_path / "runs").exists()


def test_yaml_numbers_and_relative_paths(tmp_path, fake_data):
    (tmp_path / "sub").mkdir()
    p = write_spec(tmp_path / "sub", data="../data.tar.gz", tol="1e-3", root="../out", subset=100.0)
    spec = jobs.load_spec(p)
    assert spec.settings.tol == 1e-3 and spec.settings.subset == 100
    assert spec.settings.data == str(fake_data) and spec.root == tmp_path / "out"
    assert spec.job_dir == tmp_path / "out" / "j"


# -- running jobs -----------------------------------------------------------------------------


@pytest.mark.data
def test_job_run_folder_status_log_latest(cifar_store, tmp_path, capsys, no_figures):
    p = write_spec(tmp_path, data=str(cifar_store), subset=300, k=3, seed=1, **{"max-iter": 5})
    code, out, err = run_cli(capsys, "job", "run", p)
    assert code == 0, err
    job_dir = tmp_path / "runs" / "j"
    (run_dir,) = jobs.runs(job_dir)
    assert re.fullmatch(r"\d{8}T\d{6}Z", run_dir.name)
    assert (job_dir / "latest").is_symlink() and os.readlink(job_dir / "latest") == run_dir.name
    assert {"report.json", "centroids.npy", "labels.npy", "status.json", "run.log"} <= {f.name for f in run_dir.iterdir()}
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "succeeded" and status["exit_code"] == 0 and status["error"] is None
    assert status["job"] == "j" and status["run_id"] == run_dir.name and status["seconds"] > 0
    assert status["started"] <= status["finished"] and status["result"]["k"] == 3
    log = (run_dir / "run.log").read_text()
    assert "Iteration 1, inertia" in log and f"job j run {run_dir.name}" in log
    assert f"job j run {run_dir.name} succeeded" in out and "purity" in out
    assert "Iteration 1," in err  # progress on the terminal too (no -q)
    # nothing else is left: no staging folder, no checkpoint
    assert sorted(f.name for f in job_dir.iterdir()) == sorted([run_dir.name, "latest", ".lock"])


@pytest.mark.data
def test_retention_failed_runs_and_latest(cifar_store, tmp_path, capsys, no_figures):
    bad_init = tmp_path / "bad.npy"
    np.save(bad_init, np.zeros((3, 7)))
    good = write_spec(tmp_path, data=str(cifar_store), subset=100, k=2, keep=2, **{"max-iter": 2})
    bad = write_spec(tmp_path, file="bad.yaml", data=str(cifar_store), subset=100, k=3, keep=2, init=str(bad_init),
                     **{"max-iter": 2})
    job_dir = tmp_path / "runs" / "j"
    assert main(["job", "run", str(good), "-q"]) == 0
    first = os.readlink(job_dir / "latest")
    # a run that fails once started: status failed with the error and its exit status, still a complete folder
    code, _, err = run_cli(capsys, "job", "run", bad, "-q")
    assert code == EXIT_INPUT and "shape (3, 7), expected (3, 3072)" in err
    failed = [r for r in jobs.runs(job_dir) if json.loads((r / "status.json").read_text())["status"] == "failed"]
    assert len(failed) == 1
    st = json.loads((failed[0] / "status.json").read_text())
    assert st["exit_code"] == EXIT_INPUT and "shape (3, 7)" in st["error"] and st["finished"]
    assert "ERROR" in (failed[0] / "run.log").read_text()
    assert os.readlink(job_dir / "latest") == first  # latest: the newest *successful* run
    for _ in range(2):
        assert main(["job", "run", str(good), "-q"]) == 0
    names = [r.name for r in jobs.runs(job_dir)]
    assert len(names) == 2 and first not in names and failed[0].name not in names  # pruned beyond keep=2
    assert os.readlink(job_dir / "latest") == names[-1]


def test_lock_is_exclusive_and_says_who_holds_it(tmp_path):
    with jobs.JobLock(tmp_path / ".lock", "j"):
        with pytest.raises(LockHeld, match=rf"job j is already running \(pid {os.getpid()} on .*; exit status 75"):
            jobs.JobLock(tmp_path / ".lock", "j").acquire()
    jobs.JobLock(tmp_path / ".lock", "j").acquire().release()  # free again


@pytest.mark.data
@pytest.mark.distributed
def test_overlap_refused_then_killed_run_resumed_by_rerun(cifar_store, tmp_path, capsys, no_figures):
    """Real processes: a job on a real cluster, a second run refused at once, a SIGKILLed run continued by a rerun."""
    procs = DaskProcesses(tmp_path / "dask")
    try:
        procs.start_scheduler()
        procs.start_worker("w1", nthreads=2)
        _overlap_kill_resume(procs.address, cifar_store, tmp_path, capsys)
    finally:
        procs.stop()


def _overlap_kill_resume(address, cifar_store, tmp_path, capsys):
    p = write_spec(tmp_path, data=str(cifar_store), subset=1000, k=8, init="uniform", seed=5, tol=0,
                   scheduler=address, **{"chunk-size": 250})
    job_dir = tmp_path / "runs" / "j"
    env = cli_env(cifar_store.parent.parent)

    first = start_cli(["job", "run", p], tmp_path / "first.err", env)
    staging = wait_for(lambda: list(job_dir.glob(".*.tmp-*/status.json")), 60, "the running run's status", first)
    freeze(first)  # still running, whatever the timing, while the second one tries
    assert json.loads(staging[0].read_text())["status"] == "running"
    t0 = time.monotonic()
    second = start_cli(["job", "run", p], tmp_path / "second.err", env)
    assert second.wait(timeout=60) == EXIT_LOCKED
    refused_in = time.monotonic() - t0
    thaw(first)
    err = (tmp_path / "second.err").read_text()
    assert err.strip().splitlines()[-1].startswith(f"daskmeans: error: job j is already running (pid {first.pid}")
    assert first.wait(timeout=180) == 0, (tmp_path / "first.err").read_text()
    (reference,) = jobs.runs(job_dir)
    print(f"\n[overlap] second run refused with status 75 in {refused_in:.1f} s")

    # a run killed mid-fit ...
    third = start_cli(["job", "run", p], tmp_path / "third.err", env)

    def checkpointed():
        state = checkpoint.load(job_dir / ".checkpoint.npz")
        return state is not None and state["iteration"] >= 4

    wait_for(checkpointed, 120, "the job's checkpoint", third)
    freeze(third)
    killed_at = checkpoint.load(job_dir / ".checkpoint.npz")["iteration"]
    kill(third)
    assert [r.name for r in jobs.runs(job_dir)] == [reference.name]  # nothing new visible
    # ... is continued by the next run of the job, to the same result
    code, out, err = run_cli(capsys, "job", "run", p)
    assert code == 0, err
    assert f"resumed after iteration {killed_at}" in out
    interrupted, resumed = jobs.runs(job_dir)[1:]
    st = json.loads((interrupted / "status.json").read_text())
    assert st["status"] == "failed" and st["error"].startswith(f"interrupted: the run (pid {third.pid})")
    st = json.loads((resumed / "status.json").read_text())
    assert st["status"] == "succeeded" and st["resumed_from"] == killed_at
    assert os.readlink(job_dir / "latest") == resumed.name
    for f in ("centroids.npy", "labels.npy"):
        np.testing.assert_array_equal(np.load(resumed / f), np.load(reference / f))
    assert not (job_dir / ".checkpoint.npz").exists()


def test_changed_spec_discards_the_old_checkpoint(tmp_path, fake_data, monkeypatch):
    """A checkpoint from before the spec changed is not continued (it would compute something else)."""
    p = write_spec(tmp_path, data=str(fake_data), k=3)
    spec = jobs.load_spec(p)
    state = {"iteration": 2, "centers": np.zeros((2, 3)), "centers_prev": np.zeros((2, 3)), "init": np.zeros((2, 3)),
             "history": [], "converged": False}
    spec.job_dir.mkdir(parents=True)
    checkpoint.save(spec.checkpoint, state, fingerprint={"k": 2})
    seen = {}

    def fake_run(settings, out_dir=None, **kw):
        seen["checkpoint_exists"] = spec.checkpoint.exists()
        raise RuntimeError("stop here")

    monkeypatch.setattr("daskmeans.run.run", fake_run)
    with pytest.raises(RuntimeError):
        jobs.run_job(spec)
    assert seen == {"checkpoint_exists": False}


# -- renderers: text ------------------------------------------------------------------------------


@pytest.fixture
def spec(tmp_path, fake_data):
    return jobs.load_spec(write_spec(tmp_path, name="nightly", data=str(fake_data), k=4, schedule="15 3 * * 1-5",
                                     description="test job"))


def test_render_cron(spec, tmp_path):
    text = jobs.render(spec, "cron", workdir=tmp_path)
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("15 3 * * 1-5 cd ")
    assert f" job run {spec.path} -q >> {spec.job_dir}/cron.log 2>&1" in line
    assert f"mkdir -p {spec.job_dir}" in line
    assert "75" in text  # the lock status is explained


def test_render_systemd(spec, tmp_path):
    text = jobs.render(spec, "systemd", workdir=tmp_path)
    service, timer = text.split("# ---- daskmeans-nightly.timer ----")
    assert "[Service]\nType=oneshot\n" in service and f"WorkingDirectory={tmp_path}\n" in service
    assert re.search(rf"^ExecStart=\S+ .*job run {re.escape(str(spec.path))} -q$", service, re.M)
    assert "SuccessExitStatus=75" in service
    assert "[Timer]\nOnCalendar=Mon..Fri *-*-* 03:15:00\n" in timer and "Persistent=true" in timer
    assert "Unit=daskmeans-nightly.service" in timer and "WantedBy=timers.target" in timer


@pytest.mark.parametrize("cron, oncalendar", [
    ("0 2 * * *", "*-*-* 02:00:00"),
    ("*/15 * * * *", "*-*-* *:00/15:00"),
    ("30 3 1,15 * *", "*-*-01,15 03:30:00"),
    ("30 3 * * 0", "Sun *-*-* 03:30:00"),  # day of month and weekday both: refused (tests/test_bad_inputs.py)
    ("0 0 * 6-8 *", "*-06..08-* 00:00:00"),
    ("@daily", "daily"),
])
def test_cron_to_systemd_calendar(cron, oncalendar):
    assert jobs.cron_to_oncalendar(cron) == oncalendar


def test_render_kubernetes_cronjob(spec):
    text = jobs.render(spec, "kubernetes")
    assert "concurrencyPolicy: Forbid" in text
    configmap, cronjob = list(yaml.safe_load_all(text))
    assert cronjob["kind"] == "CronJob" and cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["schedule"] == "15 3 * * 1-5" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["command"] == ["daskmeans", "job", "run", "/etc/daskmeans/job.yaml", "-q"]
    inside = yaml.safe_load(configmap["data"]["job.yaml"])
    assert inside["root"] == "/var/lib/daskmeans/runs" and inside["data"] == "/var/lib/daskmeans/data/data.tar.gz"
    assert inside["k"] == 4 and inside["name"] == "nightly"


def test_render_slurm(spec, tmp_path):
    text = jobs.render(spec, "slurm", workdir=tmp_path)
    assert text.startswith("#!/bin/bash\n")
    assert "#SBATCH --job-name=daskmeans-nightly\n" in text
    assert "#SBATCH --dependency=singleton\n" in text  # never two at once
    assert f"#SBATCH --output={spec.job_dir}/slurm-%j.out\n" in text
    assert re.search(r"^#SBATCH --time=\d\d:\d\d:\d\d$", text, re.M)
    assert re.search(rf"^exec \S+ .*job run {re.escape(str(spec.path))} -q$", text, re.M)
    assert f"cd {tmp_path}\n" in text


def test_render_cli_prints_text(tmp_path, fake_data, capsys):
    p = write_spec(tmp_path, data=str(fake_data))
    code, out, err = run_cli(capsys, "job", "render", p, "--target", "slurm")
    assert code == 0 and out.startswith("#!/bin/bash") and err == ""
    with pytest.raises(SystemExit) as e:
        main(["job", "render", str(p), "--target", "windows"])
    assert e.value.code == EXIT_INPUT and "invalid choice: 'windows'" in capsys.readouterr().err
