"""Scheduled batch jobs: a YAML job spec, one folder per run, a lock, renderers.

A job spec holds what to run (the options of ``daskmeans run``, hyphenated as
on the command line) and where the runs go::

    name: notebook-2000          # default: the file's name
    data: ../../shared/data/cifar10-images.tar.gz   # relative paths: to the spec's folder
    subset: 2000
    k: 10
    cluster: local               # a profile of cluster.yaml
    root: ../runs/jobs           # runs go to <root>/<name>/<run-id>/
    keep: 10                     # finished runs kept; older ones are pruned
    schedule: "0 2 * * *"        # for `daskmeans job render`

``daskmeans job run SPEC``:

* takes the job's lock (``<root>/<name>/.lock``, ``fcntl.flock``, non-blocking):
  a second run of the same job while one runs exits at once with status 75;
* writes into a hidden staging folder with a ``status.json`` (running, then
  succeeded or failed, with timings and the error) and a ``run.log``, renamed to
  ``<root>/<name>/<run-id>/`` only when complete;
* points ``<root>/<name>/latest`` at the newest successful run and prunes old runs;
* checkpoints every iteration to ``<root>/<name>/.checkpoint.npz``: a rerun after
  a crash or kill continues from it and ends with the same result.

``daskmeans job render SPEC --target cron|systemd|kubernetes|slurm`` prints the
crontab line, systemd service and timer, Kubernetes CronJob, or sbatch script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from . import __version__, config, params
from .errors import DaskmeansError, InputError, LockHeld

logger = logging.getLogger("daskmeans")

RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TARGETS = ("cron", "systemd", "kubernetes", "slurm")
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_KEEP = 10

#: Settings a spec may not set: a job decides them itself.
_NOT_IN_SPEC = {"out", "overwrite", "resume", "checkpoint"}
#: Keys of a spec that are not run options.
_JOB_KEYS = {"name", "description", "root", "keep", "schedule", "render"}
_RENDER_KEYS = {"kubernetes", "slurm", "systemd"}


# -- job specs ---------------------------------------------------------------------------


@dataclass
class JobSpec:
    """A validated job spec.

    Attributes
    ----------
    name : str
        The job's name: the folder under ``root`` and the lock's scope.
    path : Path
        The spec file (absolute).
    settings : daskmeans.run.Settings
        The run's settings, paths resolved against the spec's folder.
    root : Path
        Output root (absolute); runs go to ``root / name / run_id``.
    keep : int
        Finished runs to keep (the newest successful one is always kept).
    schedule : str
        Cron expression (5 fields or ``@daily``...), for the renderers.
    raw : dict
        The spec as written.
    """

    name: str
    path: Path
    settings: object
    root: Path
    keep: int = DEFAULT_KEEP
    schedule: str = DEFAULT_SCHEDULE
    description: str = ""
    render: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def job_dir(self) -> Path:
        return self.root / self.name

    @property
    def checkpoint(self) -> Path:
        return self.job_dir / ".checkpoint.npz"

    @property
    def lock_path(self) -> Path:
        return self.job_dir / ".lock"


def _settings_fields() -> dict:
    from .run import Settings

    return {f.name: f for f in fields(Settings) if f.name not in _NOT_IN_SPEC}


def _coerce(spec_path: Path, key: str, value):
    """A spec value as the Settings field wants it (YAML reads 1e-4 as a string)."""
    try:
        return params.coerce(key.replace("-", "_"), value, source="spec")
    except InputError as e:
        raise InputError(f"job spec {spec_path}: {e}") from None


def _resolve_path(base: Path, value: str) -> str:
    p = Path(os.path.expandvars(value)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def load_spec(path) -> JobSpec:
    """Read and validate a job spec; :class:`InputError` names the file, the key and the fix."""
    from .run import Settings

    path = Path(path).expanduser().absolute()
    raw = config.read_yaml_mapping(path, "job spec", "; pass the path of a job spec such as jobs/notebook-2000.yaml",
                                   "k: 10, subset: 2000, ...")
    sfields = _settings_fields()
    allowed = {k.replace("_", "-") for k in sfields} | _JOB_KEYS
    unknown = sorted(k for k in raw if str(k) not in allowed)
    if unknown:
        raise InputError(f"job spec {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    base = path.parent
    name = str(raw.get("name") or path.stem.split(".")[0])
    if not NAME.match(name):
        raise InputError(f"job spec {path}: name {name!r} may hold only letters, digits, '.', '_' and '-'")
    kwargs = {}
    for key, value in raw.items():
        attr = str(key).replace("-", "_")
        if attr in sfields:
            kwargs[attr] = _coerce(path, str(key), value)
    if kwargs.get("data") and kwargs["data"] != "keras":
        kwargs["data"] = _resolve_path(base, kwargs["data"])
        if not Path(kwargs["data"]).exists():
            raise InputError(f"job spec {path}: data {raw['data']} -> {kwargs['data']}: no such file or folder "
                             f"(relative paths are relative to the spec's folder {base})")
    if str(kwargs.get("init", "")).endswith(".npy"):
        kwargs["init"] = _resolve_path(base, kwargs["init"])
    root = raw.get("root")
    if not root or not isinstance(root, str):
        raise InputError(f"job spec {path}: root (the output root folder, e.g. root: ../runs/jobs) is required")
    keep = raw.get("keep", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"job spec {path}: keep {keep!r} must be a whole number >= 1 (finished runs to keep)")
    schedule = str(raw.get("schedule") or DEFAULT_SCHEDULE)
    _cron_fields(schedule, path)
    render = raw.get("render") or {}
    if not isinstance(render, dict) or set(render) - _RENDER_KEYS:
        raise InputError(f"job spec {path}: render must be a mapping with keys among {', '.join(sorted(_RENDER_KEYS))}")
    settings = Settings(**kwargs)
    try:
        settings.validate()
    except InputError as e:
        raise InputError(f"job spec {path}: {e}") from None
    return JobSpec(name=name, path=path, settings=settings, root=Path(_resolve_path(base, root)), keep=keep,
                   schedule=schedule, description=str(raw.get("description") or ""), render=render, raw=raw)


# -- the lock ---------------------------------------------------------------------------


class JobLock:
    """An exclusive, non-blocking ``flock`` on the job's lock file.

    The kernel drops it when the holder exits, however it exits (even SIGKILL),
    so a crashed run never blocks the next one.
    """

    def __init__(self, path: Path, job: str):
        self.path = Path(path)
        self.job = job
        self.fd = None

    def acquire(self) -> JobLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
                holder = f" (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"
            os.close(fd)
            raise LockHeld(
                f"job {self.job} is already running{holder}; not starting a second run "
                f"(lock {self.path}; exit status 75: try again later)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


# -- run folders ------------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
    from .outputs import _jsonable

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as f:
        json.dump(_jsonable(obj), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def runs(job_dir: Path) -> list[Path]:
    """Finished run folders of a job, oldest first."""
    if not job_dir.is_dir():
        return []
    return sorted((p for p in job_dir.iterdir() if p.is_dir() and not p.is_symlink() and RUN_ID.match(p.name)),
                  key=lambda p: _run_key(p.name))


def set_latest(job_dir: Path, run_id: str) -> None:
    """Point ``job_dir/latest`` at ``run_id`` (a relative symlink, replaced atomically)."""
    tmp = job_dir / f".latest.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(run_id, tmp)
    os.replace(tmp, job_dir / "latest")


def latest(job_dir: Path) -> Path | None:
    link = job_dir / "latest"
    return (job_dir / os.readlink(link)) if link.is_symlink() else None


def prune(job_dir: Path, keep: int) -> list[Path]:
    """Delete finished runs beyond the newest ``keep`` (never the ``latest`` one)."""
    cur = latest(job_dir)
    done = runs(job_dir)
    old = [p for p in done[: max(0, len(done) - keep)] if cur is None or p.name != cur.name]
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
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
            shutil.rmtree(tmp, ignore_errors=True)
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


def run_job(spec: JobSpec, *, fresh: bool = False) -> dict:
    """Run a job once; return its final ``status`` dict (with ``report`` on success).

    Raises :class:`~daskmeans.errors.LockHeld` if another run holds the lock,
    and re-raises the run's error after recording it in the run's ``status.json``.
    """
    from . import checkpoint as ckpt_mod
    from .errors import EXIT_FAILED
    from .outputs import OutputDir
    from .run import run

    job_dir = spec.job_dir
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"job {spec.name}: cannot create {job_dir} ({e.strerror or e}); fix root in {spec.path}") from None
    with JobLock(spec.lock_path, spec.name):
        recover_interrupted(job_dir)
        settings = spec.settings
        settings.checkpoint = str(spec.checkpoint)
        settings.resume = True
        if fresh:
            ckpt_mod.remove(spec.checkpoint)
        elif spec.checkpoint.exists():
            try:
                ckpt_mod.load(spec.checkpoint, fingerprint=ckpt_mod.fingerprint(settings))
            except InputError as e:  # the spec changed since: that checkpoint cannot be continued
                logger.warning("%s; starting over", e)
                ckpt_mod.remove(spec.checkpoint)
        run_id = new_run_id(job_dir)
        out = OutputDir(job_dir / run_id)
        status = {
            "job": spec.name,
            "run_id": run_id,
            "status": "running",
            "started": _now(),
            "finished": None,
            "seconds": None,
            "exit_code": None,
            "error": None,
            "resumed_from": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "spec": str(spec.path),
            "settings": asdict(settings),
            "daskmeans_version": __version__,
            "log": "run.log",
        }
        write_json_atomic(out.path / "status.json", status)
        t0 = time.perf_counter()
        try:
            with _run_log(out.path / "run.log"):
                logger.info("job %s run %s (spec %s)", spec.name, run_id, spec.path)
                report = run(settings, out_dir=out)
        except BaseException as e:
            code = (e.exit_code if isinstance(e, DaskmeansError)
                    else 130 if isinstance(e, KeyboardInterrupt) else EXIT_FAILED)
            status.update(status="failed", finished=_now(), seconds=time.perf_counter() - t0, exit_code=code,
                          error=f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__)
            with contextlib.suppress(OSError):
                with open(out.path / "run.log", "a") as f:
                    f.write(f"{_now()} ERROR daskmeans: {status['error']}\n")
                write_json_atomic(out.path / "status.json", status)
                out.commit()  # a failed run is complete too: its status and log are kept
            with contextlib.suppress(OSError):
                prune(job_dir, spec.keep)
            raise
        status.update(
            status="succeeded", finished=_now(), seconds=time.perf_counter() - t0, exit_code=0,
            resumed_from=report.get("resumed_from"),
            result={k: report.get(k) for k in ("n_samples", "k", "n_iter", "converged", "inertia", "purity")},
        )
        write_json_atomic(out.path / "status.json", status)
        final = out.commit()
        set_latest(job_dir, run_id)
        ckpt_mod.remove(spec.checkpoint)
        prune(job_dir, spec.keep)
        report["out"] = str(final)
        status["out"] = str(final)
        status["report"] = report
        return status


# -- renderers ---------------------------------------------------------------------------

_CRON_MACROS = {"@hourly": "hourly", "@daily": "daily", "@midnight": "daily", "@weekly": "weekly",
                "@monthly": "monthly", "@yearly": "yearly", "@annually": "yearly"}
_DOW = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")


def _cron_fields(expr: str, where) -> list[str] | None:
    """Validate a cron expression; its 5 fields, or None for an ``@macro``."""
    expr = expr.strip()
    if expr in _CRON_MACROS:
        return None
    parts = expr.split()
    if len(parts) != 5 or not all(all(_FIELD.match(x) for x in p.split(",")) for p in parts):
        raise InputError(f"job spec {where}: schedule {expr!r} is not a cron expression "
                         f"(5 fields: minute hour day month weekday, e.g. \"0 2 * * *\", or @daily)")
    return parts


def cron_to_oncalendar(expr: str) -> str:
    """A cron expression as systemd's ``OnCalendar=`` (numbers, lists, ranges and ``*/n`` steps)."""
    parts = _cron_fields(expr, "schedule")
    if parts is None:
        return _CRON_MACROS[expr.strip()]
    minute, hour, dom, month, dow = parts

    def conv(f: str, pad: bool, step_start: str) -> str:
        out = []
        for x in f.split(","):
            rng, _, step = x.partition("/")
            if rng == "*":
                out.append(f"{step_start}/{step}" if step else "*")
                continue
            a, _, b = rng.partition("-")
            fmt = (lambda v: f"{int(v):02d}") if pad else (lambda v: str(int(v)))
            s = fmt(a) + (f"..{fmt(b)}" if b else "")
            if step:
                if b:
                    raise InputError(f"schedule {expr!r}: a stepped range ({x}) has no systemd equivalent; "
                                     f"write OnCalendar= by hand")
                s += f"/{step}"
            out.append(s)
        return ",".join(out)

    days = ""
    if dow != "*":
        names = []
        for x in dow.split(","):
            if "/" in x:
                raise InputError(f"schedule {expr!r}: weekday steps have no systemd equivalent; write OnCalendar= by hand")
            a, _, b = x.partition("-")
            names.append(_DOW[int(a) % 8] + (f"..{_DOW[int(b) % 8]}" if b else ""))
        days = ",".join(names) + " "
    date = f"*-{conv(month, True, '01')}-{conv(dom, True, '01')}"
    return f"{days}{date} {conv(hour, True, '00')}:{conv(minute, True, '00')}:00"


def _command(spec: JobSpec, workdir: Path) -> list[str]:
    exe = Path(sys.executable).with_name("daskmeans")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "daskmeans.cli"]
    return base + ["job", "run", str(spec.path), "-q"]


def _k8s_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:52] or "job"


def render(spec: JobSpec, target: str, workdir=None) -> str:
    """The text that schedules ``spec`` on ``target`` (cron, systemd, kubernetes or slurm)."""
    workdir = Path(workdir or os.getcwd()).absolute()
    if target == "cron":
        return render_cron(spec, workdir)
    if target == "systemd":
        return render_systemd(spec, workdir)
    if target == "kubernetes":
        return render_kubernetes(spec)
    if target == "slurm":
        return render_slurm(spec, workdir)
    raise InputError(f"--target {target!r} is not one of {', '.join(TARGETS)}")


def render_cron(spec: JobSpec, workdir: Path) -> str:
    q = shlex.quote
    cmd = " ".join(q(c) for c in _command(spec, workdir))
    log = spec.job_dir / "cron.log"
    line = f"{spec.schedule} cd {q(str(workdir))} && mkdir -p {q(str(spec.job_dir))} && {cmd} >> {q(str(log))} 2>&1"
    line = line.replace("%", r"\%")  # cron turns a bare % into a newline
    return (
        f"# daskmeans job {spec.name}{': ' + spec.description if spec.description else ''}\n"
        f"# Install: crontab -e and paste the line below, or\n"
        f"#   (crontab -l 2>/dev/null; daskmeans job render {q(str(spec.path))} --target cron) | crontab -\n"
        f"# Exit status 75 = the previous run still holds the job's lock (this one did nothing);\n"
        f"# 3 = scheduler unreachable, 2 = bad spec or input, 1 = the run failed (README, Exit statuses).\n"
        f"{line}\n"
    )


def render_systemd(spec: JobSpec, workdir: Path) -> str:
    unit = f"daskmeans-{_k8s_name(spec.name)}"
    cmd = " ".join(_systemd_quote(c) for c in _command(spec, workdir))
    opts = spec.render.get("systemd") or {}
    return (
        f"# {unit}.service and {unit}.timer: copy each part into ~/.config/systemd/user/ (or /etc/systemd/system/),\n"
        f"# then: systemctl --user daemon-reload && systemctl --user enable --now {unit}.timer\n"
        f"# ---- {unit}.service ----\n"
        f"[Unit]\n"
        f"Description=daskmeans job {spec.name}{': ' + spec.description if spec.description else ''}\n"
        f"\n"
        f"[Service]\n"
        f"Type=oneshot\n"
        f"WorkingDirectory={workdir}\n"
        f"ExecStart={cmd}\n"
        f"# 75: another run of this job holds its lock; nothing was done, not a failure\n"
        f"SuccessExitStatus=75\n"
        f"Nice={int(opts.get('nice', 10))}\n"
        f"\n"
        f"# ---- {unit}.timer ----\n"
        f"[Unit]\n"
        f"Description=Schedule of daskmeans job {spec.name} (cron: {spec.schedule})\n"
        f"\n"
        f"[Timer]\n"
        f"OnCalendar={cron_to_oncalendar(spec.schedule)}\n"
        f"# run once at boot if the machine was off at the scheduled time\n"
        f"Persistent=true\n"
        f"Unit={unit}.service\n"
        f"\n"
        f"[Install]\n"
        f"WantedBy=timers.target\n"
    )


def _systemd_quote(s: str) -> str:
    return f'"{s}"' if re.search(r"\s", s) else s


def render_slurm(spec: JobSpec, workdir: Path) -> str:
    opts = spec.render.get("slurm") or {}
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# daskmeans job {spec.name} as a SLURM batch job: sbatch this file.",
        f"# Recurring: `scrontab -e` with `#SCRON -t {opts.get('time', '02:00:00')}` and "
        f"`{spec.schedule} sbatch <this file>`.",
        f"#SBATCH --job-name=daskmeans-{spec.name}",
        f"#SBATCH --output={spec.job_dir}/slurm-%j.out",
        "#SBATCH --dependency=singleton",  # one job of this name at a time, queued instead of overlapping
        f"#SBATCH --time={opts.get('time', '02:00:00')}",
        f"#SBATCH --cpus-per-task={int(opts.get('cpus-per-task', 4))}",
        f"#SBATCH --mem={opts.get('mem', '16G')}",
    ]
    for key in ("partition", "account", "qos"):
        if opts.get(key):
            lines.append(f"#SBATCH --{key}={opts[key]}")
    for extra in opts.get("extra", []) or []:
        lines.append(f"#SBATCH {extra}")
    lines += [
        "# Exit status 75: another run of this job holds its lock; 3: scheduler unreachable;",
        "# 2: bad spec or input; 1: the run failed (README, Exit statuses).",
        "set -euo pipefail",
        f"mkdir -p {q(str(spec.job_dir))}",
        f"cd {q(str(workdir))}",
        "exec " + " ".join(q(c) for c in _command(spec, workdir)),
    ]
    return "\n".join(lines) + "\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the files of a ConfigMap) as readable ``|`` blocks."""


_Dumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)


def render_kubernetes(spec: JobSpec) -> str:
    """A ConfigMap holding the spec and a CronJob (concurrencyPolicy: Forbid) running it."""
    from . import profiles

    opts = spec.render.get("kubernetes") or {}
    name = _k8s_name(spec.name)
    mount = str(opts.get("mount", "/var/lib/daskmeans"))
    claim = str(opts.get("volume-claim", "daskmeans-data"))
    image = str(opts.get("image", "ghcr.io/example/daskmeans:latest"))
    # Inside the pod: data and runs on the volume, the spec and cluster profile from the ConfigMap.
    pod_spec = dict(spec.raw)
    pod_spec["name"] = spec.name
    if spec.settings.data and spec.settings.data != "keras":
        pod_spec["data"] = f"{mount}/data/{Path(spec.settings.data).name}"
    pod_spec["root"] = f"{mount}/runs"
    pod_spec.pop("render", None)
    files = {"job.yaml": yaml.safe_dump(pod_spec, sort_keys=False)}
    env = []
    if spec.settings.cluster:
        prof = profiles.get_profile(spec.settings.cluster)
        files["cluster.yaml"] = yaml.safe_dump(
            {"daskmeans": {"cluster": {"profiles": {spec.settings.cluster: prof}}}}, sort_keys=False)
        env.append({"name": "DASKMEANS_CLUSTER_CONFIG", "value": "/etc/daskmeans/cluster.yaml"})
    env.append({"name": "DASKMEANS_CACHE", "value": f"{mount}/cache"})
    container = {
        "name": "daskmeans",
        "image": image,
        "command": ["daskmeans", "job", "run", "/etc/daskmeans/job.yaml", "-q"],
        "env": env,
        "volumeMounts": [
            {"name": "spec", "mountPath": "/etc/daskmeans", "readOnly": True},
            {"name": "data", "mountPath": mount},
        ],
        "resources": opts.get("resources") or {"requests": {"cpu": "2", "memory": "8Gi"},
                                                 "limits": {"cpu": "2", "memory": "8Gi"}},
    }
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"daskmeans-job-{name}"}, "data": files}
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"daskmeans-{name}", "labels": {"app": "daskmeans", "daskmeans/job": name}},
        "spec": {
            "schedule": spec.schedule,
            "concurrencyPolicy": "Forbid",  # never two runs at once (the job's lock says the same)
            "startingDeadlineSeconds": int(opts.get("starting-deadline-seconds", 3600)),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": int(opts.get("backoff-limit", 0)),
                "template": {
                    "metadata": {"labels": {"app": "daskmeans", "daskmeans/job": name}},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000},
                        "containers": [container],
                        "volumes": [
                            {"name": "spec", "configMap": {"name": f"daskmeans-job-{name}"}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                        ],
                    },
                },
            }},
        },
    }
    if opts.get("namespace"):
        configmap["metadata"]["namespace"] = cronjob["metadata"]["namespace"] = str(opts["namespace"])
    head = (
        f"# daskmeans job {spec.name} on Kubernetes: kubectl apply -f <this file>\n"
        f"# The spec runs from the ConfigMap; data ({mount}/data/), the cache and the runs ({mount}/runs/)\n"
        f"# live on the PersistentVolumeClaim {claim}. concurrencyPolicy: Forbid skips a run while one is going.\n"
    )
    return head + yaml.dump_all([configmap, cronjob], Dumper=_Dumper, sort_keys=False)


# -- command line ----------------------------------------------------------------------------


def _describe(spec: JobSpec) -> str:
    s = spec.settings
    where = f"cluster {s.cluster}" if s.cluster else f"scheduler {s.scheduler or 'threads/$DASK_SCHEDULER_ADDRESS'}"
    return (f"job {spec.name}: {s.split} split{f', subset {s.subset}' if s.subset else ''}, k={s.k}, init {s.init}, "
            f"seed {s.seed}, max-iter {s.max_iter}, tol {s.tol:g}, metric {s.metric}, {where}; "
            f"runs -> {spec.job_dir}/<run-id>/ (keep {spec.keep}); schedule {spec.schedule!r}")


def cmd_validate(args) -> int:
    spec = load_spec(args.spec)
    if args.json:
        print(json.dumps({"ok": True, "job": spec.name, "job_dir": str(spec.job_dir),
                          "settings": asdict(spec.settings)}, default=str))
    else:
        print(f"ok: {_describe(spec)}")
    return 0


def cmd_run(args) -> int:
    from .run import format_summary

    spec = load_spec(args.spec)
    status = run_job(spec, fresh=args.fresh)
    if args.json:
        print(json.dumps({k: v for k, v in status.items() if k not in ("report", "settings")}, default=str))
    else:
        print(format_summary(status["report"]))
        extra = f", resumed after iteration {status['resumed_from']}" if status.get("resumed_from") else ""
        print(f"job {spec.name} run {status['run_id']} succeeded in {status['seconds']:.1f} s{extra}; "
              f"latest -> {status['run_id']}")
    return 0


def cmd_render(args) -> int:
    spec = load_spec(args.spec)
    sys.stdout.write(render(spec, args.target, args.workdir))
    return 0


def add_parser(subparsers, common: argparse.ArgumentParser) -> None:
    """``daskmeans job validate|run|render`` (called by :func:`daskmeans.cli.build_parser`)."""
    job = subparsers.add_parser(
        "job", help="scheduled batch jobs: validate, run or render a job spec (jobs/*.yaml)",
        description="Run a job spec (YAML) with its own run folders, lock, retention and checkpoint; "
                    "or print what schedules it (cron, systemd, Kubernetes, SLURM).",
    )
    sub = job.add_subparsers(dest="job_command", metavar="ACTION", parser_class=type(job))
    sub.required = True

    p = sub.add_parser("validate", parents=[common], help="check a job spec and say what it would run")
    p.add_argument("spec", metavar="FILE", help="job spec (YAML)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", parents=[common], help="run a job once (refuses with status 75 if it is running)",
                       description="Run a job once into <root>/<name>/<run-id>/. A rerun after a crash continues "
                                   "from the job's checkpoint. Exit: 0 ok, 1 run failed, 2 bad spec/input, "
                                   "3 scheduler unreachable, 75 another run holds the lock.")
    p.add_argument("spec", metavar="FILE", help="job spec (YAML)")
    p.add_argument("--fresh", action="store_true", help="ignore the checkpoint of an interrupted run; start over")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("render", parents=[common], help="print a crontab line, systemd units, a Kubernetes CronJob "
                       "or an sbatch script for a job")
    p.add_argument("spec", metavar="FILE", help="job spec (YAML)")
    p.add_argument("--target", required=True, choices=TARGETS, help="what to print")
    p.add_argument("--workdir", metavar="DIR", help="folder the job runs in (default: the current one; "
                   "cluster.yaml is read from there)")
    p.set_defaults(func=cmd_render)
