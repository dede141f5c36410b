"""Hostile and mistaken input: nothing lost, nothing run, nothing hung.

Every case asserts the exit status, exactly one line on stderr starting
``daskmeans: error:``, that no user file was touched, and that nothing was
written under the output name. The data layer's cases (unpickler, archive
bounds, non-regular files, cache verification) live in tests/test_bad_data.py.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask
import numpy as np
import pytest
from helpers_dask import run_cli
import yaml

from daskmeans import checkpoint, jobs, profiles
from daskmeans.errors import EXIT_INPUT, EXIT_UNREACHABLE, InputError
from daskmeans.outputs import MARKER
from daskmeans.run import Settings

DASKMEANS = [sys.executable, "-m", "daskmeans.cli"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A 6-image folder tree (train/cat, train/dog) and a cache for its store."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    data = root / "data"
    for cls in ("cat", "dog"):
        (data / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * i + (cls == "dog") * 100, np.uint8)).save(
                data / "train" / cls / f"{i}.png")
    (data / "README.txt").write_text("my notes about this data\n")
    return data


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, tree):
    monkeypatch.setenv("DASKMEANS_CACHE", str(tree.parent / "cache"))
    monkeypatch.delenv("DASKMEANS_DATA", raising=False)
    monkeypatch.delenv(profiles.ENV_VAR, raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setattr(profiles, "_loaded", None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("daskmeans.report.write_extras", lambda *a, **k: None)  # no figures: faster
    saved = copy.deepcopy(dask.config.config)  # cluster.yaml files are merged into it
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)
    profiles._loaded = None


def one_error_line(err: str, needle: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("daskmeans: error:"), err
    assert needle in lines[0], err
    return lines[0]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_args(tree, out, *extra):
    return ["run", "--data", tree, "-k", "2", "--out", out, "-q", *extra]


# -- --overwrite: only an earlier run, atomically -----------------------------------------------------


def test_overwrite_refuses_a_foreign_folder(tree, tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "notes.txt").write_text("hi")
    code, _, err = run_cli(capsys, *run_args(tree, out, "--overwrite"))
    assert code == EXIT_INPUT
    one_error_line(err, "not a daskmeans run folder")
    assert (out / "notes.txt").read_text() == "hi" and [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".x")] == []  # no staging left


@pytest.mark.parametrize("where", ["cwd", "data", "data-parent", "data-child-of-out"])
def test_overwrite_never_replaces_the_working_folder_or_the_data(where, tree, tmp_path, capsys, monkeypatch):
    before = snapshot(tree)
    if where == "cwd":
        (tmp_path / "mine.txt").write_text("keep")
        out = "."
    elif where == "data":
        out = tree
    elif where == "data-parent":
        out = tree.parent
    else:
        monkeypatch.chdir(tree.parent.parent)
        out = tree.parent
    # even a folder that looks like a run is refused
    code, _, err = run_cli(capsys, *run_args(tree, out, "--overwrite"))
    assert code == EXIT_INPUT
    one_error_line(err, "a run must never replace")
    assert snapshot(tree) == before
    if where == "cwd":
        assert (tmp_path / "mine.txt").read_text() == "keep"


def test_overwrite_replaces_an_earlier_run_in_one_step(tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *run_args(tree, out))[0] == 0
    assert (out / MARKER).is_file()
    first = json.loads((out / "report.json").read_text())
    (out / "stale.npy").write_bytes(b"old")
    code, _, err = run_cli(capsys, *run_args(tree, out, "--overwrite", "--seed", "1"))
    assert code == 0, err
    second = json.loads((out / "report.json").read_text())
    assert second["settings"]["seed"] == 1 and first["settings"]["seed"] == 0
    assert not (out / "stale.npy").exists()  # the old run is gone as a whole
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing hidden left


def test_overwrite_without_the_flag_keeps_the_run(tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, *run_args(tree, out))[0] == 0
    before = snapshot(out)
    code, _, err = run_cli(capsys, *run_args(tree, out))
    assert code == EXIT_INPUT
    one_error_line(err, "pass another --out or --overwrite")
    assert snapshot(out) == before


def test_out_that_is_a_symlink_is_refused(tree, tmp_path, capsys):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "f.txt").write_text("x")
    (tmp_path / "link").symlink_to(target)
    code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "link", "--overwrite"))
    assert code == EXIT_INPUT
    one_error_line(err, "--out")
    assert (target / "f.txt").read_text() == "x"


# -- --checkpoint ----------------------------------------------------------------------------------------


def test_checkpoint_pointing_at_a_user_file_is_refused(tree, tmp_path, capsys):
    victim = tmp_path / "thesis.tex"
    victim.write_text("years of work")
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, *run_args(tree, out, "--checkpoint", victim))
    assert code == EXIT_INPUT
    one_error_line(err, "is not a daskmeans checkpoint")
    assert victim.read_text() == "years of work" and not out.exists()


def test_checkpoint_pointing_at_a_folder_is_refused(tree, tmp_path, capsys):
    folder = tmp_path / "ckdir"
    folder.mkdir()
    for extra in ([], ["--resume"]):
        code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--checkpoint", folder, *extra))
        assert code == EXIT_INPUT, err
        one_error_line(err, "is a folder")
    assert folder.is_dir() and not (tmp_path / "o").exists()


def _valid_checkpoint(tree, tmp_path, k=2, d=3072) -> tuple[Path, dict, dict]:
    s = Settings(data=str(tree), k=k, out=str(tmp_path / "o"), checkpoint=str(tmp_path / "c.npz"), resume=True)
    s.validate()
    state = {"iteration": 1, "centers": np.full((k, d), 0.5), "centers_prev": np.full((k, d), 0.5),
             "init": np.full((k, d), 0.5), "history": [{"iteration": 1}], "converged": False, "strict": False}
    fp = checkpoint.fingerprint(s)
    return checkpoint.save(tmp_path / "c.npz", state, fingerprint=fp), state, fp


def _corrupt(path: Path, state: dict, fp: dict, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "flipped-bit":
        i = raw.index(b"centers.npy") + 200  # inside the first array's data
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:])
    elif how == "bad-zip":
        path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        bad = dict(state)
        if how == "wrong-shape":
            bad.update(centers=np.zeros((2, 5)), centers_prev=np.zeros((2, 5)), init=np.zeros((2, 5)))
        elif how == "nan-centres":
            bad["centers"] = np.full_like(state["centers"], np.nan)
        elif how == "iteration-1e9":
            bad["iteration"] = 10**9
        checkpoint.save(path, bad, fingerprint=fp)
        if how == "iteration-abc":
            with np.load(path) as z:
                arrays = {k: z[k] for k in z.files}
            meta = json.loads(bytes(arrays["meta"]).decode())
            meta["iteration"] = "abc"
            arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
            np.savez(path, **arrays)


CORRUPTIONS = ["truncated", "flipped-bit", "bad-zip", "empty", "wrong-shape", "iteration-abc", "nan-centres",
               "iteration-1e9"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupted_checkpoint_is_one_line_exit_2(how, tree, tmp_path, capsys):
    path, state, fp = _valid_checkpoint(tree, tmp_path)
    _corrupt(path, state, fp, how)
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, *run_args(tree, out, "--checkpoint", path, "--resume"))
    assert code == EXIT_INPUT, err
    one_error_line(err, f"checkpoint {path}")
    assert path.exists() and not out.exists()  # the evidence is kept; nothing written


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_corrupted_checkpoint_load_raises_input_error(how, tree, tmp_path):
    path, state, fp = _valid_checkpoint(tree, tmp_path)
    _corrupt(path, state, fp, how)
    if how == "wrong-shape":  # consistent in itself: refused against the data (above)
        pytest.skip("shape is checked against the data, not the file")
    with pytest.raises(InputError) as e:
        checkpoint.load(path, fingerprint=fp)
    assert "\n" not in str(e.value)


def test_a_valid_checkpoint_still_resumes(tree, tmp_path, capsys):
    path, _, _ = _valid_checkpoint(tree, tmp_path)
    assert checkpoint.load(path)["iteration"] == 1
    code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--checkpoint", path, "--resume"))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "report.json").read_text())["resumed_from"] == 1


# -- --init files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values, needle", [
    (np.full((2, 3072), 0.5 + 0.5j), "dtype complex128 is not real numbers"),
    (np.full((2, 3072), 255.0), "outside [0, 1]"),
    (np.full((2, 3072), -1e30), "outside [0, 1]"),
    (np.array([["a"] * 3072] * 2), "dtype <U1 is not real numbers"),
    (np.full((2, 3072), np.inf), "NaN or infinite"),
])
def test_bad_init_files(values, needle, tree, tmp_path, capsys):
    p = tmp_path / "init.npy"
    np.save(p, values)
    before = p.read_bytes()
    code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--init", p))
    assert code == EXIT_INPUT
    one_error_line(err, needle)
    assert p.read_bytes() == before and not (tmp_path / "o").exists()


# -- config values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, value, needle", [
    ("scheduler.connect-timeout", "abc", "config daskmeans.scheduler.connect-timeout='abc' (set by"),
    ("scheduler.connect-timeout", -1, "is not a number of seconds"),
    ("kmeans.split-every", "abc", "config daskmeans.kmeans.split-every='abc'"),
    ("kmeans.max-iter", 0, "config daskmeans.kmeans.max-iter=0"),
    ("kmeans.metric", "hamming", "config daskmeans.kmeans.metric='hamming'"),
    ("chunk-size", "lots", "config daskmeans.chunk-size='lots'"),
])
def test_bad_config_values_exit_2(key, value, needle, tree, tmp_path, capsys):
    with dask.config.set({f"daskmeans.{key}": value}):
        code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o"))
    assert code == EXIT_INPUT
    one_error_line(err, needle)
    assert not (tmp_path / "o").exists()


def test_bad_config_from_the_environment_names_the_variable(tree, tmp_path):
    env = {**os.environ, "DASK_DASKMEANS__KMEANS__SPLIT_EVERY": "abc"}
    r = subprocess.run(DASKMEANS + run_args(str(tree), str(tmp_path / "o")), capture_output=True, text=True,
                       env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == EXIT_INPUT
    one_error_line(r.stderr, "$DASK_DASKMEANS__KMEANS__SPLIT_EVERY")


# -- ./cluster.yaml: profiles only ------------------------------------------------------------------------


@pytest.mark.parametrize("content, needle", [
    ({"distributed": {"worker": {"preload": ["SCRIPT"]}}}, "not distributed"),
    ({"distributed": {"scheduler": {"preload": ["SCRIPT"]}}}, "not distributed"),
    ({"daskmeans": {"download": {"url": "file:///tmp/forged.tar.gz", "md5": ""}}}, "not daskmeans.download"),
    ({"daskmeans": {"cluster": {"profiles": {"local": {"kind": "local", "options": {"preload": ["SCRIPT"]}}}}}},
     "would run code"),
])
def test_cluster_yaml_in_the_working_folder_describes_profiles_only(content, needle, tree, tmp_path, capsys):
    flag = tmp_path / "pwned"
    script = tmp_path / "evil.py"
    script.write_text(f"open({str(flag)!r}, 'w').write('ran')\n")
    text = yaml.safe_dump(content).replace("SCRIPT", str(script))
    (tmp_path / "cluster.yaml").write_text(text)
    code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--cluster", "local"))
    assert code == EXIT_INPUT
    one_error_line(err, needle)
    assert not flag.exists() and not (tmp_path / "o").exists()


def test_cluster_yaml_named_by_the_user_may_hold_dask_settings(tmp_path, monkeypatch):
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump({"daskmeans": {"chunk-size": 1234, "cluster": {"profiles": {"m": {"kind": "threads"}}}}}))
    monkeypatch.setenv(profiles.ENV_VAR, str(p))
    assert profiles.get_profile("m") == {"kind": "threads"}
    assert dask.config.get("daskmeans.chunk-size") == 1234


# -- bounded connect ------------------------------------------------------------------------------------


class _Server:
    """A listener on 127.0.0.1 that accepts and never answers, or answers like an HTTP server."""

    def __init__(self, mode: str):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.mode = mode
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.mode == "http-now":
                c.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            elif self.mode == "http":
                c.settimeout(5)
                try:
                    c.recv(1024)
                    c.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("mode", ["silent", "http", "http-now"])
def test_connect_timeout_is_enforced_end_to_end(mode, tree, tmp_path, capsys):
    server = _Server(mode)
    try:
        t0 = time.monotonic()
        with dask.config.set({"daskmeans.scheduler.connect-timeout": 2}):
            code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--scheduler",
                                                     f"tcp://127.0.0.1:{server.port}"))
        elapsed = time.monotonic() - t0
    finally:
        server.close()
    assert code == EXIT_UNREACHABLE
    one_error_line(err, f"127.0.0.1:{server.port}")
    assert elapsed < 30 and not (tmp_path / "o").exists()


# -- signals clean up the staging folders ---------------------------------------------------------------


def _terminal_signals():
    """In the child: SIGINT handled as at a terminal. A shell starting pytest in the background (``cmd &``
    without job control) ignores SIGINT, and ignored signals stay ignored across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 130)])
def test_signals_remove_the_hidden_staging_folder(sig, status, tree, tmp_path):
    server = _Server("silent")  # the run waits there, with its staging folder made
    env = {**os.environ, "DASK_DASKMEANS__SCHEDULER__CONNECT_TIMEOUT": "60"}
    out = tmp_path / "o"
    proc = subprocess.Popen(DASKMEANS + run_args(str(tree), str(out), "--scheduler",
                                                 f"tcp://127.0.0.1:{server.port}"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                            preexec_fn=_terminal_signals)
    try:
        deadline = time.monotonic() + 60
        while not server.conns:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.05)
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".o.tmp-")], "no staging folder to clean"
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    assert code == status, proc.stderr.read()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o")] == [] and not out.exists()


# -- messages --------------------------------------------------------------------------------------------


def test_missing_eval_split_suggests_eval_split(tree, tmp_path, capsys):
    code, _, err = run_cli(capsys, *run_args(tree, tmp_path / "o", "--eval-split", "test"))
    assert code == EXIT_INPUT
    line = one_error_line(err, "has no test split")
    assert "--eval-split train" in line and "use --split" not in line


def test_unknown_cluster_message_reads_well(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder without cluster.yaml
    monkeypatch.delenv("DASKMEANS_CLUSTER_CONFIG", raising=False)
    code, _, err = run_cli(capsys, "run", "--cluster", "nope", "-q")
    assert code == EXIT_INPUT
    one_error_line(err, "--cluster 'nope': no such profile (known: local, threads); no cluster.yaml in the "
                        "current folder; set $DASKMEANS_CLUSTER_CONFIG")


# -- job lock --------------------------------------------------------------------------------------------


def test_job_lock_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(InputError, match="cannot open its lock"):
        jobs.JobLock(tmp_path / ".lock", "j").acquire()
    assert victim.read_text() == "precious"
    missing = tmp_path / "created-by-link"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".lock").symlink_to(missing)
    with pytest.raises(InputError):
        jobs.JobLock(tmp_path / "sub" / ".lock", "j").acquire()
    assert not missing.exists()


def test_job_lock_never_truncates_a_hard_linked_file(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.link(victim, tmp_path / ".lock")
    with pytest.raises(InputError, match="not a plain file of yours"):
        jobs.JobLock(tmp_path / ".lock", "j").acquire()
    assert victim.read_text() == "precious"


# -- job rendering -----------------------------------------------------------------------------------------


def _spec(tmp_path, tree, **values) -> Path:
    p = tmp_path / "j.yaml"
    p.write_text(yaml.safe_dump({"data": str(tree), "k": 2, "root": str(tmp_path / "runs"), **values}))
    return p


@pytest.mark.parametrize("values, needle", [
    ({"description": "nightly\n* * * * * touch /tmp/pwned"}, "description holds a newline or control character"),
    ({"description": "x\n[Service]\nExecStartPre=/bin/sh -c 'touch /tmp/pwned'"}, "holds a newline"),
    ({"description": "bell\x07"}, "holds a newline or control character"),
    ({"render": {"slurm": {"mem": "4G\n#SBATCH --wrap=evil"}}}, "render.slurm.mem holds a newline"),
    ({"render": {"slurm": {"extra": ["--exclusive\nrm -rf ~"]}}}, "render.slurm.extra holds a newline"),
    ({"schedule": "0 2 1 * 1"}, "restricts both the day of month and the weekday"),
    ({"schedule": "0 25 * * *"}, "hour '25' is outside 0-23"),
    ({"render": {"systemd": {"nice": "ten"}}}, "render.systemd.nice 'ten' must be a whole number"),
])
@pytest.mark.parametrize("action", [["validate"], ["render", "--target", "cron"], ["render", "--target", "systemd"],
                                    ["render", "--target", "slurm"], ["render", "--target", "kubernetes"]])
def test_job_specs_cannot_inject_lines(values, needle, action, tree, tmp_path, capsys):
    if "nice" in str(values) and action[-1] != "systemd":
        pytest.skip("a systemd option")
    code, out, err = run_cli(capsys, "job", *action, _spec(tmp_path, tree, **values))
    assert code == EXIT_INPUT
    one_error_line(err, needle)
    assert out == "" and not (tmp_path / "runs").exists()


def test_systemd_escapes_percent_and_dollar(tree, tmp_path, capsys):
    work = tmp_path / "50% $HOME"
    work.mkdir()
    code, out, err = run_cli(capsys, "job", "render", _spec(tmp_path, tree, description="100% done"),
                             "--target", "systemd", "--workdir", work)
    assert code == 0, err
    assert "Description=daskmeans job j: 100%% done\n" in out
    assert 'WorkingDirectory="' + str(work).replace("%", "%%") + '"\n' in out
    exec_line = next(line for line in out.splitlines() if line.startswith("ExecStart="))
    assert "%" not in exec_line.replace("%%", "")


def test_cron_line_stays_one_line(tree, tmp_path, capsys):
    code, out, err = run_cli(capsys, "job", "render", _spec(tmp_path, tree, description="100% done"),
                             "--target", "cron")
    assert code == 0, err
    live = [line for line in out.splitlines() if line and not line.startswith("#")]
    assert len(live) == 1 and "%" not in live[0].replace(r"\%", "")


# -- TLS and binding -------------------------------------------------------------------------------------


def test_private_key_readable_by_others_is_refused(tmp_path, capsys):
    tls = {}
    for k, name in (("ca-file", "ca.pem"), ("cert", "c.pem"), ("key", "c.key")):
        (tmp_path / name).write_text("x")
        tls[k] = str(tmp_path / name)
    os.chmod(tmp_path / "c.key", 0o640)
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump({"daskmeans": {"cluster": {"profiles": {
        "s": {"kind": "address", "address": "tls://127.0.0.1:8786", "tls": tls}}}}}))
    code, _, err = run_cli(capsys, "run", "--cluster", "s", "-q")
    assert code == EXIT_INPUT
    one_error_line(err, "is readable by others (mode 640); run: chmod 600")


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("192.168.1.5", True), ("127.0.0.1", False),
                                          ("localhost", False)])
def test_warning_when_a_profile_listens_beyond_loopback_without_tls(host, warned, monkeypatch, caplog):
    started = {}
    monkeypatch.setattr(profiles, "LocalCluster", lambda **kw: started.update(kw) or "cluster")
    prof = profiles.validate_profile("wide", {"kind": "local", "host": host, "n-workers": 1})
    with caplog.at_level("WARNING", logger="daskmeans"):
        assert profiles._start_cluster("wide", prof, None) == "cluster"
    assert started["host"] == host
    assert ("without TLS" in caplog.text) == warned
