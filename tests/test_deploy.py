"""Deployment conditions, with real processes: the package installed (not editable) by root,
run as ``nobody`` with a home folder it cannot write and only the output and cache folders
writable; a read-only working folder, a read-only cache, real scheduler and worker processes
for ``daskmeans doctor``; the container recipe and the Kubernetes render that names it.

The install is shared by the module: a wheel built from the working tree, installed by pip
into a virtual environment of a Python that ``nobody`` can run, the dependencies taken from
the test environment's own site-packages (linked into a world-readable folder when the
test environment's folder is private). Tests that switch users skip, naming the reason,
where the machine cannot (not root, no ``setpriv``/``runuser``, no such user).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from helpers_dask import DaskProcesses, kill, run_cli, wait_for_text
from PIL import Image

import daskmeans
from daskmeans import doctor, jit, userdirs
from daskmeans.jobs.render import DEFAULT_IMAGE, render

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(daskmeans.__file__).resolve().parent
#: Where the test environment keeps numpy, dask, numba...: the installed daskmeans's dependencies.
DEPS = Path(np.__file__).resolve().parents[1]
NEEDED = "numpy, numba, dask, distributed, sklearn, scipy, zarr, matplotlib, PIL, yaml, tqdm, threadpoolctl"
TIMEOUT = 180


# --------------------------------------------------------------------------- #
# The install and the user
# --------------------------------------------------------------------------- #
def build_wheel(pkg: Path, version: str, dest: Path) -> Path:
    """A wheel of the package folder as it is now (pure Python, ``daskmeans`` console script).

    Built by hand: the declared build backend (setuptools >= 77) need not be installed
    where the tests run, and pip installs a wheel without any build backend.
    """
    dist = f"daskmeans-{version}.dist-info"
    files = {f"daskmeans/{p.relative_to(pkg).as_posix()}": p.read_bytes() for p in sorted(pkg.rglob("*"))
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    files[f"{dist}/METADATA"] = f"Metadata-Version: 2.1\nName: daskmeans\nVersion: {version}\n".encode()
    files[f"{dist}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{dist}/entry_points.txt"] = b"[console_scripts]\ndaskmeans = daskmeans.cli:main\n"
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for name, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join([*record, f"{dist}/RECORD,,"]) + "\n").encode()
    out = dest / f"daskmeans-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out


def _switcher() -> tuple[list[str], int, int]:
    """The command prefix that runs a command as ``nobody``, its uid and gid; skips when impossible."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (the tests run as uid "
                    f"{os.geteuid() if hasattr(os, 'geteuid') else '?'})")
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this machine has no user 'nobody' to run as")
    if shutil.which("setpriv"):
        return [shutil.which("setpriv"), f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"], \
            pw.pw_uid, pw.pw_gid
    if shutil.which("runuser"):
        return [shutil.which("runuser"), "-u", "nobody", "--"], pw.pw_uid, pw.pw_gid
    pytest.skip("neither setpriv nor runuser (util-linux) is installed: cannot switch users")


def _as(prefix, cmd, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """``cmd`` as the user, with exactly ``env``. ``env -i`` comes first: setpriv's own exec still
    has root's capabilities (its path lookup passes folders the user cannot enter), env's does not."""
    envlist = [f"{k}={v}" for k, v in (env or {"PATH": "/usr/bin:/bin"}).items()]
    return subprocess.run([*prefix, "env", "-i", *envlist, *map(str, cmd)], capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def _python_for(prefix) -> str:
    """A Python of this version that the user can run (the test environment's may sit in a private folder)."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    candidates = [os.path.realpath(sys.executable), getattr(sys, "_base_executable", ""),
                  shutil.which(f"python{want}") or "", f"/usr/bin/python{want}", f"/usr/local/bin/python{want}"]
    for py in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
        r = _as(prefix, [py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], cwd="/")
        if r.returncode == 0 and r.stdout.strip() == want:
            return py
    pytest.skip(f"no Python {want} that 'nobody' may run (tried {', '.join(c for c in candidates if c)})")


def _link_tree(src: Path, dst: Path) -> bool:
    """``dst``: world-readable folders whose files are hard links to ``src``'s (same filesystem only)."""
    try:
        for folder, dirs, files in os.walk(src):
            rel = Path(folder).relative_to(src)
            (dst / rel).mkdir(mode=0o755, exist_ok=True)
            for f in files:
                os.link(Path(folder) / f, dst / rel / f, follow_symlinks=False)
        return True
    except OSError:
        return False


def _deps_for(prefix, py: str, world: Path) -> Path:
    """The dependencies' folder as the user can read it."""
    check = f"import sys; sys.path.insert(0, {{!r}}); import {NEEDED}"
    if _as(prefix, [py, "-c", check.format(str(DEPS))], cwd="/").returncode == 0:
        return DEPS
    linked = world / "deps"
    if _link_tree(DEPS, linked) and _as(prefix, [py, "-c", check.format(str(linked))], cwd="/").returncode == 0:
        return linked
    pytest.skip(f"'nobody' cannot read the test environment's packages in {DEPS}, nor a linked copy of them")


class Deployment:
    """A root-owned install and the folders of one user: a read-only home, a cache, an output folder."""

    def __init__(self, world: Path):
        self.prefix, self.uid, self.gid = _switcher()
        self.world = world
        py = _python_for(self.prefix)
        self.deps = _deps_for(self.prefix, py, world)
        self.venv = world / "venv"
        subprocess.run([py, "-m", "venv", "--without-pip", str(self.venv)], check=True, timeout=TIMEOUT)
        wheel = build_wheel(PKG, daskmeans.__version__, world)
        r = subprocess.run([sys.executable, "-m", "pip", "--python", str(self.venv / "bin" / "python"), "install",
                            "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True,
                           timeout=TIMEOUT)
        if r.returncode != 0:
            pytest.skip(f"pip cannot install into another interpreter's venv here (pip >= 22.3): {r.stderr[-300:]}")
        (self.site,) = self.venv.glob("lib/python*/site-packages")
        (self.site / "test-deps.pth").write_text(f"{self.deps}\n")
        self.exe = self.venv / "bin" / "daskmeans"
        self.home = self._folder("home", writable=False)
        self.cache = self._folder("cache")
        self.out = self._folder("out")
        self.tmp = self._folder("tmp")
        self.data = self._folder("data", writable=False)
        make_tree(self.data / "tree")
        tar_folder(self.data / "tree", self.data / "tiny.tar.gz")
        for p in [self.data, *self.data.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)

    def _folder(self, name: str, writable: bool = True) -> Path:
        p = self.world / name
        p.mkdir(mode=0o755)
        if writable:
            os.chown(p, self.uid, self.gid)
        return p

    def env(self, **extra) -> dict:
        """The user's whole environment: nothing leaks from the test's."""
        env = {"PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.home), "LANG": "C.UTF-8",
               "TMPDIR": str(self.tmp), "DASKMEANS_CACHE": str(self.cache)}
        env.update({k: str(v) for k, v in extra.items()})
        return {k: v for k, v in env.items() if v != "None"}

    def daskmeans(self, *args, cwd=None, **env) -> subprocess.CompletedProcess:
        """``daskmeans ARGS`` as the user, in ``cwd`` (default: its output folder)."""
        return _as(self.prefix, [self.exe, *args], env=self.env(**env), cwd=cwd or self.out)

    def popen(self, cmd, log: Path, cwd=None, **env) -> subprocess.Popen:
        envlist = [f"{k}={v}" for k, v in self.env(**env).items()]
        with open(log, "w") as f:
            return subprocess.Popen([*self.prefix, "env", "-i", *envlist, *map(str, cmd)], stdout=f,
                                    stderr=subprocess.STDOUT, cwd=cwd or self.tmp, start_new_session=True)

    def owned_by_user(self, folder: Path) -> list[Path]:
        return [p for p in [folder, *folder.rglob("*")] if os.lstat(p).st_uid == self.uid]


def make_tree(root: Path, n=4, seed=3) -> Path:
    """train/ and test/ of two well-separated colour classes (PNG), ``n`` images each."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for cls, base in (("cat", 60), ("dog", 190)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 8, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def tar_folder(src: Path, out: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(src, arcname="images")
    out.write_bytes(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def dep():
    """One install and one user's folders for the module (a world-readable temporary folder)."""
    world = Path(tempfile.mkdtemp(prefix="daskmeans-deploy-"))
    world.chmod(0o755)  # nobody must reach what is inside
    try:
        yield Deployment(world)
    finally:
        shutil.rmtree(world, ignore_errors=True)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The run's last stderr line, checked to be its only error line and no traceback."""
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("daskmeans: error: "), r.stderr
    assert [ln for ln in lines if "error" in ln.lower()] == [lines[-1]], r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def no_noise(stderr: str) -> None:
    """Nothing about caches that cannot be written: no numba error, no matplotlib warning."""
    for noise in ("Traceback", "cannot cache", "Matplotlib created a temporary", "is not a writable directory"):
        assert noise not in stderr, stderr


# --------------------------------------------------------------------------- #
# As nobody, from a read-only install
# --------------------------------------------------------------------------- #
def test_help_and_doctor_with_nothing_writable(dep):
    """HOME read-only, no cache setting, and the temporary folder's per-user names taken by
    another user: the import still works, kernels compile in memory, doctor names the problems."""
    planted = dep.world / "planted-tmp"
    planted.mkdir(mode=0o777)
    planted.chmod(0o1777)
    for name in ("numba", "matplotlib"):
        (planted / f"daskmeans-{name}-{dep.uid}").mkdir(mode=0o755)  # root's: never used by nobody
    r = dep.daskmeans("run", "--help", cwd=dep.data, DASKMEANS_CACHE=None, TMPDIR=planted)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: daskmeans run") and "Traceback" not in r.stderr and "cannot cache" not in r.stderr

    r = dep.daskmeans("doctor", "--json", cwd=dep.data, DASKMEANS_CACHE=None, TMPDIR=planted)
    assert r.returncode == 2, r.stderr
    facts = json.loads(r.stdout)
    assert facts["here"]["numba_cache"] == {"where": "none", "path": None}
    assert facts["here"]["user"] == f"nobody (uid {dep.uid})"
    errors = r.stderr.strip().splitlines()[-2:]
    assert errors[0] == (f"daskmeans: error: the cache folder {dep.home}/.cache/daskmeans cannot be written by nobody "
                         f"(uid {dep.uid}) and holds no ingested data: set DASKMEANS_CACHE to a writable folder "
                         f"(or make this one writable)")
    assert errors[1].startswith("daskmeans: error: runs/ (the default --out): nobody") and "--out" in errors[1]
    assert any("compiled kernels are not cached" in n for n in facts["notes"])
    assert not dep.owned_by_user(dep.home) and not dep.owned_by_user(dep.site)


def test_run_on_threads_then_local_cluster_then_predict(dep):
    out = dep.out / "threads"
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "--seed", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    no_noise(r.stderr)
    report = json.loads((out / "report.json").read_text())
    assert report["n_samples"] == 8 and report["purity"] == 1.0  # the two colours are found
    assert (out / "report.html").is_file() and (out / "centroids.png").is_file()
    assert (dep.cache / "numba").is_dir() and any((dep.cache / "numba").rglob("*.nbi"))  # kernels cached there
    assert (dep.cache / "matplotlib").is_dir()

    local = dep.out / "local"
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "--seed", "1", "--out", local,
                      "--scheduler", "local", "--n-workers", "1", "-q")
    assert r.returncode == 0, r.stderr
    no_noise(r.stderr)
    np.testing.assert_array_equal(np.load(local / "labels.npy"), np.load(out / "labels.npy"))
    np.testing.assert_array_equal(np.load(local / "centroids.npy"), np.load(out / "centroids.npy"))

    pred = dep.out / "predicted"
    r = dep.daskmeans("predict", out, "--split", "test", "--out", pred, "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads((pred / "report.json").read_text())["n_samples"] == 8
    assert np.load(pred / "labels.npy").shape == (8,)
    # nothing written outside the output, cache and temporary folders
    assert not dep.owned_by_user(dep.home) and not dep.owned_by_user(dep.site) and not dep.owned_by_user(dep.data)


def test_job_run_from_a_read_only_spec_folder(dep):
    specs = dep.world / "specs"
    specs.mkdir(mode=0o755)
    spec = specs / "tiny.yaml"
    spec.write_text(yaml.safe_dump({"name": "tiny", "data": str(dep.data / "tiny.tar.gz"), "k": 2, "seed": 0,
                                    "cluster": "threads", "root": str(dep.out / "jobs"), "keep": 2}))
    spec.chmod(0o644)
    r = dep.daskmeans("job", "run", spec, "-q", cwd=specs)
    assert r.returncode == 0, r.stderr
    latest = dep.out / "jobs" / "tiny" / "latest"
    status = json.loads((latest / "status.json").read_text())
    assert status["status"] == "succeeded" and status["exit_code"] == 0
    assert (latest / "labels.npy").is_file()


@pytest.mark.parametrize("case", ["unwritable out", "unreadable archive", "unlistable folder", "unreadable image"])
def test_permission_problems_end_in_one_line_with_the_fix(dep, case):
    bad = dep.world / "bad" / re.sub(r"\W", "-", case)
    bad.mkdir(parents=True, mode=0o755)
    out = dep.out / re.sub(r"\W", "-", case)
    data = dep.data / "tiny.tar.gz"
    if case == "unwritable out":
        out = bad / "out"  # root's folder, mode 0755
        fix = f"--out {out}: cannot write there (Permission denied); pass a writable --out folder"
    elif case == "unreadable archive":
        data = bad / "tiny.tar.gz"
        shutil.copy(dep.data / "tiny.tar.gz", data)
        data.chmod(0o600)
        fix = f"--data {data}: permission denied; nobody (uid {dep.uid}) needs read permission: chmod a+r {data}"
    else:
        data = bad / "tree"
        shutil.copytree(dep.data / "tree", data)
        for p in [data, *data.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        if case == "unlistable folder":
            (data / "train" / "dog").chmod(0o700)
            fix = (f"{data}/train/dog: cannot list folder (Permission denied); nobody (uid {dep.uid}) needs read "
                   f"permission and x (to list it): chmod a+rx {data}/train/dog")
        else:
            (data / "train" / "cat" / "2.png").chmod(0o600)
            fix = (f"{data}/train/cat/2.png: cannot read (Permission denied); nobody (uid {dep.uid}) needs read "
                   f"permission: chmod a+r {data}/train/cat/2.png")
    r = dep.daskmeans("run", "--data", data, "-k", "2", "--out", out, "-q")
    assert r.returncode == 2, r.stderr
    assert one_error_line(r).startswith(f"daskmeans: error: {fix}")
    assert not os.path.exists(out)


def test_read_only_working_folder(dep):
    ro = dep.world / "read-only-cwd"
    ro.mkdir(mode=0o555)
    out = dep.out / "from-ro-cwd"
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "--out", out, "-q", cwd=ro)
    assert r.returncode == 0, r.stderr
    assert (out / "labels.npy").is_file()
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "-q", cwd=ro)  # default --out: ./runs/...
    assert r.returncode == 2
    assert re.fullmatch(r"daskmeans: error: --out runs/[\d-]+: cannot write there \(Permission denied\); "
                        r"pass a writable --out folder", one_error_line(r))
    assert not any(ro.iterdir())


def _snapshot(folder: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in [folder, *folder.rglob("*")]}


def test_read_only_cache_that_holds_the_store(dep):
    cache = dep.world / "ro-cache"
    cache.mkdir(mode=0o755)
    os.chown(cache, dep.uid, dep.gid)
    first = dep.out / "fill-cache"
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "--out", first, "-q",
                      DASKMEANS_CACHE=cache)
    assert r.returncode == 0, r.stderr
    assert list((cache / "stores").glob("*.zarr"))
    for p in [cache, *cache.rglob("*")]:  # now root's, and read-only for nobody
        os.chown(p, 0, 0, follow_symlinks=False)
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    before = _snapshot(cache)
    again = dep.out / "from-ro-cache"
    r = dep.daskmeans("run", "--data", dep.data / "tiny.tar.gz", "-k", "2", "--out", again, "-q",
                      DASKMEANS_CACHE=cache)
    assert r.returncode == 0, r.stderr
    no_noise(r.stderr)
    np.testing.assert_array_equal(np.load(again / "labels.npy"), np.load(first / "labels.npy"))
    assert _snapshot(cache) == before  # nothing written there
    r = dep.daskmeans("doctor", "--out", dep.out / "x", DASKMEANS_CACHE=cache)
    assert r.returncode == 0, r.stderr  # a run works: the data is there
    assert f"{cache}: read-only, holds 1 store(s)" in r.stdout and "note: the cache" in r.stdout


def test_doctor_all_well_as_nobody(dep):
    r = dep.daskmeans("doctor", "--out", dep.out / "next")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr == "" and r.stdout.splitlines()[-1] == "ok: a run would work here"
    text = r.stdout
    for needle in (f"{daskmeans.__version__} as nobody (uid {dep.uid})", "numpy ", "numba ", "scikit-learn ",
                   "distributed ", f"{dep.cache}: writable", f"cached in {dep.cache}/numba",
                   f"{dep.cache}/matplotlib (daskmeans-cache)", "writable"):
        assert needle in text, (needle, text)
    assert re.search(r"^kernels +numba compiles for \S+ \(\S+\): ", text, re.M)
    assert re.search(r"^BLAS +\w+ [\d.]+ ", text, re.M) and re.search(r"^GPU +", text, re.M)
    assert len(text.splitlines()) <= 24  # one screen


# --------------------------------------------------------------------------- #
# doctor and a real cluster
# --------------------------------------------------------------------------- #
@pytest.mark.distributed
def test_doctor_checks_the_scheduler_and_each_worker(dep, tmp_path, capsys, monkeypatch):
    """A scheduler (root) and a worker running as nobody from the read-only install."""
    procs = DaskProcesses(tmp_path / "dask")
    worker = None
    try:
        address = procs.start_scheduler()
        log = tmp_path / "worker.log"
        worker = dep.popen([dep.venv / "bin" / "python", "-m", "distributed.cli.dask_worker", address, "--host",
                            "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard", "--local-directory",
                            dep.tmp / "worker"], log)
        wait_for_text(log, r"Registered to:", 60, worker)

        monkeypatch.setenv("DASKMEANS_CACHE", str(dep.cache))  # nobody's cache: the worker can read it
        code, out, err = run_cli(capsys, "doctor", "--scheduler", address, "--out", tmp_path / "o")
        assert code == 0, out + err
        assert f"{address}: reachable, 1 worker" in out
        assert re.search(rf"^  worker +tcp://127\.0\.0\.1:\d+: nobody \(uid {dep.uid}\) on \S+, same versions, ",
                         out, re.M), out

        private = tmp_path / "private-cache"  # root's, mode 0700: a worker as nobody cannot read it
        private.mkdir(mode=0o700)
        monkeypatch.setenv("DASKMEANS_CACHE", str(private))
        code, out, err = run_cli(capsys, "doctor", "--scheduler", address, "--out", tmp_path / "o")
        assert code == 2
        assert re.fullmatch(rf"daskmeans: error: worker tcp://127\.0\.0\.1:\d+ \(nobody \(uid {dep.uid}\) on \S+\) "
                            rf"cannot read the cache folder {re.escape(str(private))} that holds the ingested data: "
                            rf"put DASKMEANS_CACHE on a filesystem every worker can read \(or ingest --to a URL\)",
                            err.strip()), err
    finally:
        if worker is not None:
            kill(worker)
        procs.stop()


def test_doctor_unreachable_scheduler_is_exit_3(tmp_path, capsys, monkeypatch):
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    with dask.config.set({"daskmeans.scheduler.connect-timeout": 3}):
        code, out, err = run_cli(capsys, "doctor", "--scheduler", f"tcp://127.0.0.1:{port}", "--out", tmp_path / "o")
    assert code == 3
    assert f"tcp://127.0.0.1:{port}: NOT reachable" in out
    assert err.strip().splitlines() == [
        f"daskmeans: error: could not reach the Dask scheduler at tcp://127.0.0.1:{port} within 3 s "
        f"(ConnectionRefusedError); check the address, or start one with `dask scheduler` (or use --scheduler local)"]


def test_doctor_names_version_and_cpu_mismatches():
    here = doctor.local_facts()
    other = json.loads(json.dumps(here))
    other["versions"]["numpy"] = "1.26.4"
    other["versions"]["python"] = here["versions"]["python"].rsplit(".", 1)[0] + ".99"  # another patch release: fine
    other["cpu"] = {"name": "oldcpu", "triple": here["cpu"]["triple"], "features": ["sse2", "sse4.2"],
                    "simd": ["sse4.2"]}
    other["numba_cache"] = {"where": "none", "path": None}
    problems, notes = doctor.compare(here, {"tcp://127.0.0.1:1": other, "tcp://127.0.0.1:2": here,
                                            "tcp://127.0.0.1:3": ModuleNotFoundError("No module named 'daskmeans'")},
                                     None)
    assert problems == [
        f"worker tcp://127.0.0.1:1 runs numpy 1.26.4 (here {here['versions']['numpy']}): install the same versions "
        f"on every worker (the same image or lock file)",
        f"worker tcp://127.0.0.1:3 could not run daskmeans (ModuleNotFoundError: No module named 'daskmeans'); "
        f"install daskmeans {daskmeans.__version__} in the workers' environment (the same image or venv)"]
    lacks = " ".join(f for f in here["cpu"]["simd"] if f != "sse4.2")
    assert notes[0] == (f"worker tcp://127.0.0.1:1 has another CPU: oldcpu (here {here['cpu']['name']})"
                        f"{': lacks ' + lacks if lacks else ''}; it compiles kernels for its own CPU")
    assert notes[1].startswith("worker tcp://127.0.0.1:1 compiles kernels in memory")
    assert len(notes) == 2


# --------------------------------------------------------------------------- #
# The cache decisions, in this process
# --------------------------------------------------------------------------- #
def test_kernels_compile_without_any_cache_folder(monkeypatch, tmp_path, caplog):
    """A function numba cannot cache anywhere (no source file) still compiles, once logged."""
    monkeypatch.setattr(jit, "CACHE", {})
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(jit, "fallback_dirs", lambda name: iter([("daskmeans-cache", blocked / name, False)]))
    ns: dict = {}
    exec(compile("def twice(x):\n    return 2 * x\n", str(tmp_path / "gone.py"), "exec"), ns)
    with caplog.at_level("INFO", logger="daskmeans"):
        fn = jit.njit()(ns["twice"])
        again = jit.njit()(ns["twice"])
    assert fn(21) == 42 and again(2) == 4
    assert jit.CACHE == {"where": "none", "path": None}
    assert [r.getMessage() for r in caplog.records if "no writable folder" in r.getMessage()] != []
    assert len([r for r in caplog.records if "no writable folder" in r.getMessage()]) == 1


def test_matplotlib_folder_falls_back_to_the_cache(monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".config").write_text("a file where a folder should be")  # HOME/.config cannot be made
    monkeypatch.setattr(userdirs, "MATPLOTLIB", {})
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DASKMEANS_CACHE", str(tmp_path / "cache"))
    assert userdirs.matplotlib_config() == {"where": "daskmeans-cache", "path": str(tmp_path / "cache" / "matplotlib")}
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "cache" / "matplotlib")
    monkeypatch.setattr(userdirs, "MATPLOTLIB", {})
    monkeypatch.setenv("MPLCONFIGDIR", "/somewhere/chosen")
    assert userdirs.matplotlib_config() == {"where": "MPLCONFIGDIR", "path": "/somewhere/chosen"}


# --------------------------------------------------------------------------- #
# The container recipe and what names it
# --------------------------------------------------------------------------- #
def _dockerfile() -> dict:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instr: dict[str, list[str]] = {}
    for line in joined.splitlines():
        m = re.match(r"^([A-Z]+)\s+(.*)$", line.strip())
        if m:
            instr.setdefault(m.group(1), []).append(m.group(2))
    return {"text": text, **instr}


def test_dockerfile_runs_as_the_render_user_with_caches_on_the_volume():
    d = _dockerfile()
    final_user = d["USER"][-1]
    uid = final_user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    pod = list(yaml.safe_load_all(_render_kubernetes()))[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid) and pod["securityContext"]["runAsNonRoot"] is True
    (volume,) = d["VOLUME"]
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(d["ENV"])))
    for var in ("DASKMEANS_CACHE", "NUMBA_CACHE_DIR", "MPLCONFIGDIR"):
        assert env[var].startswith(volume + "/"), var
    assert d["WORKDIR"][-1] == volume  # runs/ lands on the volume too
    assert json.loads(d["ENTRYPOINT"][-1]) == ["daskmeans-entrypoint"]
    for src in re.findall(r"^COPY (?!--from)(\S+)", d["text"], re.M):
        assert (ROOT / src).exists(), src
    extras = re.search(r"ARG EXTRAS=(\S+)", d["text"]).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(extras) <= set(declared["project"]["optional-dependencies"])
    assert "dashboard" in extras  # what a worker's dashboard needs
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!daskmeans/" in ignored  # the context is the package, not .venv or the data


def _render_kubernetes(**options) -> str:
    return _render("kubernetes", **options)


def test_kubernetes_render_names_the_image_the_recipe_builds():
    text = _render_kubernetes()
    cron = list(yaml.safe_load_all(text))[1]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    tag = f"daskmeans:{daskmeans.__version__}"
    assert c["image"] == tag == DEFAULT_IMAGE
    assert f"docker build -t {tag} ." in _dockerfile()["text"]  # the recipe's own build line
    assert f"docker build -t {tag} ." in (ROOT / "docs" / "cluster.md").read_text()  # the guide's build line
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["NUMBA_CACHE_DIR"].startswith(c["volumeMounts"][1]["mountPath"])
    assert env["MPLCONFIGDIR"].startswith(c["volumeMounts"][1]["mountPath"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    other = list(yaml.safe_load_all(_render_kubernetes(kubernetes={"image": "registry.local/dm:1"})))[1]
    assert other["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/dm:1"
    shipped = yaml.safe_load((ROOT / "jobs" / "full-50000.yaml").read_text())
    assert not shipped["render"]["kubernetes"].get("image")  # the shipped job takes the default


@pytest.mark.parametrize("args, runs", [
    ([], "daskmeans doctor"),
    (["run", "--data", "x"], "daskmeans run --data x"),
    (["dask-worker", "tcp://s:8786"], "dask-worker tcp://s:8786"),
    (["dask", "worker", "tcp://s:8786"], "dask worker tcp://s:8786"),
    (["python", "-c", "1"], "python -c 1"),
])
def test_entrypoint_runs_daskmeans_or_dask(args, runs, tmp_path):
    """The image's entry point, with stand-ins for the commands it may start."""
    for name in ("daskmeans", "dask", "dask-worker", "python"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\necho {name} "$@"\n')
        stub.chmod(0o755)
    r = subprocess.run(["sh", str(ROOT / "docker" / "entrypoint.sh"), *args], capture_output=True, text=True,
                       env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == runs, r



def _render(target: str, **options) -> str:
    from daskmeans.jobs.spec import load_spec

    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "d.tar.gz").write_bytes(b"")
        spec = {"name": "n", "data": "d.tar.gz", "root": "runs", "schedule": "0 2 * * *", "render": options}
        (folder / "n.yaml").write_text(yaml.safe_dump(spec))
        return render(load_spec(folder / "n.yaml"), target)
    finally:
        shutil.rmtree(folder)


def test_systemd_render_for_a_service_account():
    text = _render("systemd", systemd={"user": "daskmeans", "group": "daskmeans"})
    service = text.split("# ---- daskmeans-n.timer ----")[0]
    for line in ("User=daskmeans", "Group=daskmeans", "CacheDirectory=daskmeans",
                 "Environment=DASKMEANS_CACHE=%C/daskmeans NUMBA_CACHE_DIR=%C/daskmeans/numba "
                 "MPLCONFIGDIR=%C/daskmeans/matplotlib"):
        assert f"\n{line}\n" in service, line
    assert "into /etc/systemd/system/" in text and "systemctl --user" not in text
    plain = _render("systemd")
    assert "User=" not in plain and "CacheDirectory" not in plain and "systemctl --user" in plain
    with pytest.raises(daskmeans.InputError, match=r"render\.systemd\.user 'ops team' is not a user or group name"):
        _render("systemd", systemd={"user": "ops team"})
