"""Real ``dask scheduler`` / ``dask worker`` processes and ``daskmeans`` subprocesses for tests.

Everything listens on 127.0.0.1 and is stopped by process id (never by name).
Import what you need in a test module::

    from helpers_dask import DaskProcesses, dask_procs, start_cli, wait_for_text
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
DASK = str(BIN / "dask")
DASKMEANS = [sys.executable, "-m", "daskmeans.cli"]
LOOPBACK = "127.0.0.1"


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process {proc.pid} exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def wait_for_text(path: Path, pattern: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> re.Match:
    """Wait until the file ``path`` (a process's log) contains a match of ``pattern``."""
    rx = re.compile(pattern, re.M)

    def found():
        try:
            return rx.search(Path(path).read_text(errors="replace"))
        except FileNotFoundError:
            return None

    return wait_for(found, timeout, f"{pattern!r} in {path}", proc)


def kill(proc: subprocess.Popen, sig=signal.SIGKILL, timeout: float = 30) -> int:
    """Send ``sig`` to this one process (by pid) and reap it."""
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    return proc.wait(timeout=timeout)


def freeze(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGSTOP one process (by pid) and wait until it is stopped: it cannot finish behind a test's back."""
    import psutil

    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED, timeout, f"pid {proc.pid} to stop")


def thaw(proc: subprocess.Popen) -> None:
    """SIGCONT a process stopped by :func:`freeze`."""
    os.kill(proc.pid, signal.SIGCONT)


class DaskProcesses:
    """A scheduler and workers as separate processes, all on 127.0.0.1.

    Parameters
    ----------
    folder : Path
        Where the scheduler file, worker spill space and logs go.
    env : dict, optional
        Environment of the processes (default: this one's).
    """

    def __init__(self, folder: Path, env: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ if env is None else env)
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.address: str | None = None
        self.scheduler_file = self.folder / "scheduler.json"
        self._all: list[subprocess.Popen] = []

    def _popen(self, args, log: Path) -> subprocess.Popen:
        f = open(log, "w")
        try:
            p = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder,
                                 start_new_session=True)
        finally:
            f.close()
        self._all.append(p)
        return p

    def start_scheduler(self, *extra: str, timeout: float = 60) -> str:
        """``dask scheduler --host 127.0.0.1 --port 0 --scheduler-file F``; returns its address."""
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._popen(
            [DASK, "scheduler", "--host", LOOPBACK, "--port", "0", "--dashboard-address", f"{LOOPBACK}:0",
             "--scheduler-file", str(self.scheduler_file), *extra],
            self.folder / "scheduler.log",
        )

        def address():
            try:
                return json.loads(self.scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                return None

        self.address = wait_for(address, timeout, "the scheduler file", self.scheduler)
        return self.address

    def start_worker(self, name: str, *, nthreads: int = 1, wait: bool = True, timeout: float = 60) -> subprocess.Popen:
        """``dask worker ADDRESS --host 127.0.0.1 --no-nanny``: a kill takes it away for good."""
        log = self.folder / f"worker-{name}.log"
        p = self._popen(
            [DASK, "worker", self.address, "--host", LOOPBACK, "--name", name, "--nthreads", str(nthreads),
             "--no-nanny", "--no-dashboard", "--local-directory", str(self.folder / f"space-{name}")],
            log,
        )
        self.workers[name] = p
        if wait:
            self.wait_for_worker(name, timeout)
        return p

    def wait_for_worker(self, name: str, timeout: float = 60) -> None:
        wait_for_text(self.folder / f"worker-{name}.log", r"Registered to:", timeout, self.workers[name])

    def scheduler_log(self) -> str:
        return (self.folder / "scheduler.log").read_text(errors="replace")

    def stop(self) -> None:
        """SIGKILL every process this object started, by pid."""
        for p in reversed(self._all):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
        for p in self._all:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass


@pytest.fixture
def dask_procs(tmp_path):
    """A :class:`DaskProcesses` for one test, stopped afterwards."""
    procs = DaskProcesses(tmp_path / "dask")
    yield procs
    procs.stop()


def start_cli(args, log: Path, env: dict | None = None, cwd=None) -> subprocess.Popen:
    """``python -m daskmeans.cli ARGS`` in the background; stdout to ``log.out``, stderr to ``log``."""
    err = open(log, "w")
    out = open(Path(f"{log}.out"), "w")
    try:
        return subprocess.Popen(DASKMEANS + [str(a) for a in args], stdout=out, stderr=err,
                                env=dict(os.environ if env is None else env), cwd=cwd, start_new_session=True)
    finally:
        err.close()
        out.close()


def cli_env(cache: Path | None = None, **extra) -> dict:
    """This environment, with the test's cache and extra variables."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    if cache is not None:
        env["DASKMEANS_CACHE"] = str(cache)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(capsys, *argv):
    """Run ``daskmeans`` in this process: (exit status, stdout, stderr)."""
    from daskmeans.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def two_workers(folder: Path, env: dict | None = None):
    """A started scheduler and workers w1, w2 (a generator for fixtures: yields, then stops them)."""
    procs = DaskProcesses(folder, env=env)
    try:
        procs.start_scheduler()
        for name in ("w1", "w2"):
            procs.start_worker(name, wait=False)
        for name in ("w1", "w2"):
            procs.wait_for_worker(name)
        yield procs
    finally:
        procs.stop()
