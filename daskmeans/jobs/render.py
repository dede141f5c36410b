"""What schedules a job elsewhere: a crontab line, systemd units, a Kubernetes CronJob, an sbatch script.

Every value comes from a validated spec (no newlines or control characters,
see :mod:`.spec`) and is quoted for its target: shell words for cron and
SLURM, systemd's quoting with ``%`` and ``$`` escaped, YAML for Kubernetes.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import yaml

from .. import __version__, profiles
from ..errors import InputError
from .schedule import cron_to_oncalendar
from .spec import CONTROL_CHARS, JobSpec

TARGETS = ("cron", "systemd", "kubernetes", "slurm")
#: The image the repository's Dockerfile builds (``docker build -t daskmeans:<version> .``);
#: ``render.kubernetes.image`` names another (the same one pushed to your registry).
DEFAULT_IMAGE = f"daskmeans:{__version__}"


def _command(spec: JobSpec) -> list[str]:
    exe = Path(sys.executable).with_name("daskmeans")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "daskmeans.cli"]
    return base + ["job", "run", str(spec.path), "-q"]


def _k8s_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:52] or "job"


def render(spec: JobSpec, target: str, workdir=None) -> str:
    """The text that schedules ``spec`` on ``target`` (cron, systemd, kubernetes or slurm)."""
    workdir = Path(workdir or os.getcwd()).absolute()
    if CONTROL_CHARS.search(str(workdir)):
        raise InputError(f"--workdir {str(workdir)!r} holds a newline or control character; use another folder")
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
    cmd = " ".join(q(c) for c in _command(spec))
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
    # systemd expands %-specifiers everywhere and $VARIABLES in ExecStart: both are escaped
    cmd = " ".join(_specifiers(_systemd_quote(c)).replace("$", "$$") for c in _command(spec))
    opts = spec.render.get("systemd") or {}
    description = f"daskmeans job {spec.name}{': ' + spec.description if spec.description else ''}"
    account = _systemd_account(spec, opts)
    where, ctl = ("/etc/systemd/system/ (a system service: User= needs one)", "systemctl") if account else \
        ("~/.config/systemd/user/ (or /etc/systemd/system/)", "systemctl --user")
    return (
        f"# {unit}.service and {unit}.timer: copy each part into {where},\n"
        f"# then: {ctl} daemon-reload && {ctl} enable --now {unit}.timer\n"
        f"# ---- {unit}.service ----\n"
        f"[Unit]\n"
        f"Description={_specifiers(description)}\n"
        f"\n"
        f"[Service]\n"
        f"Type=oneshot\n"
        f"WorkingDirectory={_specifiers(_systemd_quote(str(workdir)))}\n"
        f"ExecStart={cmd}\n"
        f"# 75: another run of this job holds its lock; nothing was done, not a failure\n"
        f"SuccessExitStatus=75\n"
        f"Nice={_int_option(spec, 'systemd', opts, 'nice', 10)}\n"
        f"{account}"
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


def _systemd_account(spec: JobSpec, opts: dict) -> str:
    """``render.systemd.user`` (and ``group``): a system service under that account, which needs no
    writable home: systemd makes ``/var/cache/daskmeans`` for it and every cache goes there."""
    lines = []
    for key in ("user", "group"):
        value = opts.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", value):
            raise InputError(f"job spec {spec.path}: render.systemd.{key} {value!r} is not a user or group name "
                             f"(letters, digits, _ . -; e.g. daskmeans)")
        lines.append(f"{key.capitalize()}={value}")
    if not lines:
        return ""
    return (
        "\n".join(lines) + "\n"
        "# the account's home need not exist or be writable: systemd makes %C/daskmeans (/var/cache/daskmeans)\n"
        "# for it, and the data cache, compiled kernels and matplotlib's files all go there\n"
        "CacheDirectory=daskmeans\n"
        "Environment=DASKMEANS_CACHE=%C/daskmeans NUMBA_CACHE_DIR=%C/daskmeans/numba "
        "MPLCONFIGDIR=%C/daskmeans/matplotlib\n"
    )


def _systemd_quote(s: str) -> str:
    """A word of a systemd command line: double-quoted with C escapes where it needs quoting."""
    if re.search(r"[\s\"'\\;]", s) or not s:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _specifiers(s: str) -> str:
    """``%`` starts a systemd specifier (``%h``, ``%n``...); a literal one is written ``%%``."""
    return s.replace("%", "%%")


def _int_option(spec: JobSpec, target: str, opts: dict, key: str, default: int) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"job spec {spec.path}: render.{target}.{key} {value!r} must be a whole number")
    return value


def render_slurm(spec: JobSpec, workdir: Path) -> str:
    opts = spec.render.get("slurm") or {}
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# daskmeans job {spec.name} as a SLURM batch job: sbatch this file.",
        f"# Recurring: `scrontab -e` with `#SCRON -t {opts.get('time', '02:00:00')}` and "
        f"`{spec.schedule} sbatch <this file>`.",
        f"#SBATCH --job-name=daskmeans-{spec.name}",
        f"#SBATCH --output={str(spec.job_dir).replace('%', '%%')}/slurm-%j.out",  # %j: the job id
        "#SBATCH --dependency=singleton",  # one job of this name at a time, queued instead of overlapping
        f"#SBATCH --time={opts.get('time', '02:00:00')}",
        f"#SBATCH --cpus-per-task={_int_option(spec, 'slurm', opts, 'cpus-per-task', 4)}",
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
        "exec " + " ".join(q(c) for c in _command(spec)),
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
    opts = spec.render.get("kubernetes") or {}
    name = _k8s_name(spec.name)
    mount = str(opts.get("mount", "/var/lib/daskmeans"))
    claim = str(opts.get("volume-claim", "daskmeans-data"))
    files, env = _pod_files(spec, mount)
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"daskmeans-job-{name}"}, "data": files}
    image = str(opts.get("image") or DEFAULT_IMAGE)
    cronjob = _cronjob(spec, opts, name, _container(image, opts, env, mount), claim)
    if opts.get("namespace"):
        configmap["metadata"]["namespace"] = cronjob["metadata"]["namespace"] = str(opts["namespace"])
    head = (
        f"# daskmeans job {spec.name} on Kubernetes: kubectl apply -f <this file>\n"
        f"# The spec runs from the ConfigMap; data ({mount}/data/), the cache and the runs ({mount}/runs/)\n"
        f"# live on the PersistentVolumeClaim {claim}. concurrencyPolicy: Forbid skips a run while one is going.\n"
        f"# Image {image}: the repository's Dockerfile (docker build -t {DEFAULT_IMAGE} .), user 1000,\n"
        f"# the package read-only, caches on the volume; push it where the cluster pulls from.\n"
    )
    return head + yaml.dump_all([configmap, cronjob], Dumper=_Dumper, sort_keys=False)


def _pod_files(spec: JobSpec, mount: str) -> tuple[dict, list]:
    """The ConfigMap's files (the spec as the pod sees it, its cluster profile) and the pod's environment."""
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
    # every per-user folder on the volume: the image's user has no writable home
    env.append({"name": "DASKMEANS_CACHE", "value": f"{mount}/cache"})
    env.append({"name": "NUMBA_CACHE_DIR", "value": f"{mount}/cache/numba"})
    env.append({"name": "MPLCONFIGDIR", "value": f"{mount}/cache/matplotlib"})
    return files, env


def _container(image: str, opts: dict, env: list, mount: str) -> dict:
    return {
        "name": "daskmeans",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["daskmeans", "job", "run", "/etc/daskmeans/job.yaml", "-q"],
        "workingDir": mount,
        "env": env,
        # daskmeans writes only to the volume and /tmp (an emptyDir): the image itself stays read-only
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [
            {"name": "spec", "mountPath": "/etc/daskmeans", "readOnly": True},
            {"name": "data", "mountPath": mount},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "resources": opts.get("resources") or {"requests": {"cpu": "2", "memory": "8Gi"},
                                                 "limits": {"cpu": "2", "memory": "8Gi"}},
    }


def _cronjob(spec: JobSpec, opts: dict, name: str, container: dict, claim: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": f"daskmeans-{name}", "labels": {"app": "daskmeans", "daskmeans/job": name}},
        "spec": {
            "schedule": spec.schedule,
            "concurrencyPolicy": "Forbid",  # never two runs at once (the job's lock says the same)
            "startingDeadlineSeconds": _int_option(spec, "kubernetes", opts, "starting-deadline-seconds", 3600),
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"spec": {
                "backoffLimit": _int_option(spec, "kubernetes", opts, "backoff-limit", 0),
                "template": {
                    "metadata": {"labels": {"app": "daskmeans", "daskmeans/job": name}},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
                        "containers": [container],
                        "volumes": [
                            {"name": "spec", "configMap": {"name": f"daskmeans-job-{name}"}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                            {"name": "tmp", "emptyDir": {}},
                        ],
                    },
                },
            }},
        },
    }
