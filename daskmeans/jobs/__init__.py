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

The package, one concern per module, each importing only those above it:

* :mod:`.schedule`: cron expressions and their systemd equivalent;
* :mod:`.spec`: reading and validating a spec (:func:`load_spec`);
* :mod:`.lock`: the job's lock (:class:`JobLock`);
* :mod:`.runs`: run folders, ``latest``, retention, and one run (:func:`run_job`);
* :mod:`.render`: cron, systemd, Kubernetes and SLURM text (:func:`render`);
* :mod:`.cli`: the ``daskmeans job`` commands (:func:`add_parser`).
"""

from __future__ import annotations

from .cli import add_parser
from .lock import JobLock
from .render import TARGETS, render, render_cron, render_kubernetes, render_slurm, render_systemd
from .runs import RUN_ID, latest, new_run_id, prune, recover_interrupted, run_job, runs, set_latest, write_json_atomic
from .schedule import cron_fields, cron_to_oncalendar
from .spec import DEFAULT_KEEP, DEFAULT_SCHEDULE, NAME, JobSpec, load_spec

__all__ = [
    "DEFAULT_KEEP", "DEFAULT_SCHEDULE", "NAME", "RUN_ID", "TARGETS", "JobLock", "JobSpec", "add_parser",
    "cron_fields", "cron_to_oncalendar", "latest", "load_spec", "new_run_id", "prune", "recover_interrupted",
    "render", "render_cron", "render_kubernetes", "render_slurm", "render_systemd", "run_job", "runs",
    "set_latest", "write_json_atomic",
]
