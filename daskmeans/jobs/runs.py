"""Run folders of a job: ``<root>/<name>/<run-id>/``, the ``latest`` link, retention, one run."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import socket
import time
from dataclasses import asdict
from pathlib import Path

from .. import __version__, checkpoint, minibatch_checkpoint
from .. import run as run_mod
from ..atomic import atomic_file, atomic_path, remove
from ..errors import EXIT_FAILED, DaskmeansError, InputError
from ..outputs import OutputDir, jsonable
from .lock import JobLock, now

logger = logging.getLogger("daskmeans")

RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


def _run_key(name: str) -> tuple[str, int]:
    base, _, n = name.partition("-")
    return base, int(n or 1)


def new_run_id(job_dir: Path) -> str:
    """``20261128T062414Z`` (UTC); ``-2``, ``-3``... after the runs of the same second, so ids only grow."""
    base = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    taken = [_run_key(p.name)[1] for p in runs(job_dir) if p.name.split("-")[0] == base]
    taken += [_run_key(m.group(1))[1] for p in job_dir.glob(f".{base}*.tmp-*")
              if (m := re.match(r"^\.(\d{8}T\d{6}Z(?:-\d+)?)\.tmp-", p.name))]
    n = max(taken, default=0) + 1
    return base if n == 1 else f"{base}-{n}"


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path``: a reader sees the old file or the new one."""
    with atomic_file(path, "w") as f:
        json.dump(jsonable(obj), f, indent=2)
        f.write("\n")


def runs(job_dir: Path) -> list[Path]:
    """Finished run folders of a job, oldest first."""
    if not job_dir.is_dir():
        return []
    return sorted((p for p in job_dir.iterdir() if p.is_dir() and not p.is_symlink() and RUN_ID.match(p.name)),
                  key=lambda p: _run_key(p.name))


def set_latest(job_dir: Path, run_id: str) -> None:
    """Point ``job_dir/latest`` at ``run_id`` (a relative symlink, replaced atomically)."""
    with atomic_path(job_dir / "latest") as tmp:
        os.symlink(run_id, tmp)


def latest(job_dir: Path) -> Path | None:
    link = job_dir / "latest"
    return (job_dir / os.readlink(link)) if link.is_symlink() else None


def prune(job_dir: Path, keep: int) -> list[Path]:
    """Delete finished runs beyond the newest ``keep`` (never the ``latest`` one)."""
    cur = latest(job_dir)
    done = runs(job_dir)
    old = [p for p in done[: max(0, len(done) - keep)] if cur is None or p.name != cur.name]
    for p in old:
        remove(p)
        logger.info("pruned old run %s (keep: %d)", p.name, keep)
    return old


def recover_interrupted(job_dir: Path) -> list[Path]:
    """Staging folders left by killed runs become ``failed`` run folders.

    Called with the job's lock held, so no staging folder here belongs to a live run.
    """
    found = []
    for tmp in sorted(job_dir.glob(".*.tmp-*")):
        m = re.match(r"^\.(\d{8}T\d{6}Z(?:-\d+)?)\.tmp-(\d+)-", tmp.name)
        if not m or not tmp.is_dir():
            continue
        rid, pid = m.group(1), m.group(2)
        status_file = tmp / "status.json"
        try:
            status = json.loads(status_file.read_text())
        except (OSError, ValueError):
            status = {"job": job_dir.name, "run_id": rid}
        finished = _dt.datetime.fromtimestamp(tmp.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
        status.update(status="failed", finished=finished, exit_code=None,
                      error=f"interrupted: the run (pid {pid}) ended before finishing; "
                            f"the next run continued from its checkpoint")
        with contextlib.suppress(OSError):
            write_json_atomic(status_file, status)
        final = job_dir / rid
        if final.exists():
            remove(tmp)
            continue
        os.rename(tmp, final)
        logger.warning("run %s of job %s was interrupted (pid %s); recorded as failed", rid, job_dir.name, pid)
        found.append(final)
    return found


@contextlib.contextmanager
def _run_log(path: Path):
    """Log the daskmeans (INFO) and distributed (WARNING) loggers to ``path`` for the block."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    dist = logging.getLogger("distributed")
    old_level = logger.level
    raised = []
    if logger.getEffectiveLevel() > logging.INFO:  # --quiet: keep the terminal quiet, the file complete
        for h in logger.handlers:
            if h.level < logger.getEffectiveLevel():
                raised.append((h, h.level))
                h.setLevel(logger.getEffectiveLevel())
        logger.setLevel(logging.INFO)
    handler.setLevel(logging.INFO)
    logger.addHandler(handler)
    dist_handler = logging.FileHandler(path)
    dist_handler.setFormatter(handler.formatter)
    dist_handler.setLevel(logging.WARNING)
    dist.addHandler(dist_handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        dist.removeHandler(dist_handler)
        handler.close()
        dist_handler.close()
        logger.setLevel(old_level)
        for h, lvl in raised:
            h.setLevel(lvl)


def _prepare_checkpoint(spec, fresh: bool) -> None:
    """The job's checkpoint is continued unless ``fresh``, or unless the spec changed since it was written."""
    settings = spec.settings
    settings.checkpoint = str(spec.checkpoint)
    settings.resume = True
    if fresh:
        checkpoint.remove(spec.checkpoint)
    elif spec.checkpoint.exists():
        kind = minibatch_checkpoint if settings.mini_batch else checkpoint  # the format the run writes
        try:
            kind.load(spec.checkpoint, fingerprint=kind.fingerprint(settings))
        except InputError as e:  # the spec changed since (or the file is damaged): it cannot be continued
            logger.warning("%s; starting over", e)
            checkpoint.remove(spec.checkpoint)


def _new_status(spec, run_id: str) -> dict:
    return {
        "job": spec.name, "run_id": run_id, "status": "running", "started": now(), "finished": None,
        "seconds": None, "exit_code": None, "error": None, "resumed_from": None, "pid": os.getpid(),
        "host": socket.gethostname(), "spec": str(spec.path), "settings": asdict(spec.settings),
        "daskmeans_version": __version__, "log": "run.log",
    }


def _record_failure(spec, out: OutputDir, status: dict, e: BaseException, t0: float) -> None:
    """A failed run is complete too: its status and log are kept under its run id."""
    code = (e.exit_code if isinstance(e, DaskmeansError)
            else 130 if isinstance(e, KeyboardInterrupt) else EXIT_FAILED)
    status.update(status="failed", finished=now(), seconds=time.perf_counter() - t0, exit_code=code,
                  error=f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__)
    with contextlib.suppress(OSError):
        with open(out.path / "run.log", "a") as f:
            f.write(f"{now()} ERROR daskmeans: {status['error']}\n")
        write_json_atomic(out.path / "status.json", status)
        out.commit()
    with contextlib.suppress(OSError):
        prune(spec.job_dir, spec.keep)


def run_job(spec, *, fresh: bool = False) -> dict:
    """Run a job once; return its final ``status`` dict (with ``report`` on success).

    Raises :class:`~daskmeans.errors.LockHeld` if another run holds the lock,
    and re-raises the run's error after recording it in the run's ``status.json``.
    """
    job_dir = spec.job_dir
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"job {spec.name}: cannot create {job_dir} ({e.strerror or e}); fix root in {spec.path}") from None
    with JobLock(spec.lock_path, spec.name):
        recover_interrupted(job_dir)
        _prepare_checkpoint(spec, fresh)
        run_id = new_run_id(job_dir)
        out = OutputDir(job_dir / run_id)
        status = _new_status(spec, run_id)
        write_json_atomic(out.path / "status.json", status)
        t0 = time.perf_counter()
        try:
            with _run_log(out.path / "run.log"):
                logger.info("job %s run %s (spec %s)", spec.name, run_id, spec.path)
                report = run_mod.run(spec.settings, out_dir=out)
        except BaseException as e:
            _record_failure(spec, out, status, e, t0)
            raise
        status.update(
            status="succeeded", finished=now(), seconds=time.perf_counter() - t0, exit_code=0,
            resumed_from=report.get("resumed_from"),
            result={k: report.get(k) for k in ("n_samples", "k", "n_iter", "converged", "inertia", "purity")},
        )
        write_json_atomic(out.path / "status.json", status)
        final = out.commit()
        set_latest(job_dir, run_id)
        checkpoint.remove(spec.checkpoint)
        prune(job_dir, spec.keep)
        report["out"] = str(final)
        status["out"] = str(final)
        status["report"] = report
        return status
