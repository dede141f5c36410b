"""``daskmeans job validate|run|render``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from ..run import format_summary
from .render import TARGETS, render
from .runs import run_job
from .spec import JobSpec, load_spec


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
