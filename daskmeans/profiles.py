"""Cluster profiles: named ways to get Dask workers, read from ``cluster.yaml``.

``cluster.yaml`` is an ordinary dask config file. Its profiles live under
``daskmeans.cluster.profiles.<name>``, each with a ``kind``:

==============  =====================================================  ===============
kind            what the run gets                                      needs
==============  =====================================================  ===============
``threads``     dask's threaded (or ``sync``) scheduler, no Client     nothing
``local``       a LocalCluster of worker processes, on 127.0.0.1       nothing
``address``     an existing scheduler, by address or scheduler file    nothing
``local-cuda``  dask-cuda's LocalCUDACluster, one worker per GPU       ``[cuda]``
``jobqueue``    dask-jobqueue (SLURM, PBS, SGE, LSF, ...) batch jobs   ``[jobqueue]``
``kubernetes``  dask-kubernetes' operator KubeCluster                  ``[kubernetes]``
==============  =====================================================  ===============

Where the file comes from: ``$DASKMEANS_CLUSTER_CONFIG`` (one or more paths,
``os.pathsep``-separated), else ``./cluster.yaml`` when it exists. It is merged
above the packaged defaults and the user's dask config files and below
``DASK_*`` environment variables, so ``DASK_DASKMEANS__CLUSTER__PROFILES__LOCAL__N_WORKERS=4``
overrides it as dask users expect. A ``./cluster.yaml`` merely found in the
current folder may hold nothing but ``daskmeans.cluster.profiles`` (other dask
settings can run code, e.g. ``distributed.worker.preload``); a file named by
``$DASKMEANS_CLUSTER_CONFIG`` may hold any dask or daskmeans setting. No profile
may set a ``preload``.

Security: clusters that daskmeans starts listen on 127.0.0.1 only (scheduler and
dashboard) unless the profile says otherwise; ``address`` and ``jobqueue``
profiles take dask's certificate-based TLS (``tls: {ca-file, cert, key}``) and a
``tls://`` address without it is refused. A run closes only what it started.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

import dask
import dask.config
from distributed import LocalCluster
from distributed.security import Security

from . import config
from .connect import LOOPBACK, check_scheduler, connect_timeout, dashboard_link, distributed_client
from .errors import ClusterUnreachable, InputError

logger = logging.getLogger("daskmeans")

ENV_VAR = "DASKMEANS_CLUSTER_CONFIG"
KINDS = ("threads", "local", "address", "local-cuda", "jobqueue", "kubernetes")

#: kind -> (module imported only when used, pip extra, distribution name)
OPTIONAL = {
    "local-cuda": ("dask_cuda", "cuda", "dask-cuda"),
    "jobqueue": ("dask_jobqueue", "jobqueue", "dask-jobqueue"),
    "kubernetes": ("dask_kubernetes.operator", "kubernetes", "dask-kubernetes"),
}

#: jobqueue ``system`` -> dask_jobqueue class
JOBQUEUE_SYSTEMS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "oar": "OARCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
}

_COMMON = {"kind", "description"}
_KEYS = {
    "threads": {"scheduler", "num-workers"},
    "local": {"n-workers", "threads-per-worker", "processes", "memory-limit", "host", "dashboard-address", "options"},
    "address": {"address", "scheduler-file", "connect-timeout", "tls"},
    "local-cuda": {"n-workers", "cuda-visible-devices", "threads-per-worker", "memory-limit", "device-memory-limit",
                   "rmm-pool-size", "protocol", "host", "dashboard-address", "options"},
    "jobqueue": {"system", "cores", "memory", "processes", "queue", "account", "walltime", "job-extra-directives",
                 "job-script-prologue", "interface", "n-workers", "adapt", "scheduler-options", "protocol", "tls",
                 "local-directory", "log-directory", "options"},
    "kubernetes": {"name", "image", "namespace", "n-workers", "resources", "env", "options"},
}
_TLS_KEYS = ("ca-file", "cert", "key")


# -- reading cluster.yaml ---------------------------------------------------------------


def config_files() -> list[Path]:
    """The cluster config files to read: ``$DASKMEANS_CLUSTER_CONFIG``, else ``./cluster.yaml``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    local = Path("cluster.yaml")
    return [local] if local.is_file() else []


def read_files(paths, *, profiles_only: bool = False) -> dict:
    """Merge the YAML files ``paths`` (later wins), with messages that name the file.

    ``profiles_only``: refuse anything but ``daskmeans.cluster.profiles`` (for a
    file that was merely found in the current folder, not named by the user).
    """
    merged: dict = {}
    for p in paths:
        data = config.read_yaml_mapping(Path(p), "cluster config", f" (set by ${ENV_VAR}); fix the path or unset it",
                                        "daskmeans: cluster: profiles: ...")
        if profiles_only:
            _only_profiles(Path(p), data)
        merged = dask.config.merge(merged, data)
    return merged


def _only_profiles(path: Path, data: dict) -> None:
    """A cluster.yaml found in the current folder describes profiles, never other dask settings.

    Other settings can run code (``distributed.worker.preload``) or change what
    the run trusts; a folder one merely runs in must not set them.
    """
    others = [f"{k}" for k in data if k != "daskmeans"]
    dm = data.get("daskmeans") or {}
    if not isinstance(dm, dict):
        others.append("daskmeans")
    else:
        others += [f"daskmeans.{k}" for k in dm if k != "cluster"]
        cl = dm.get("cluster") or {}
        others += [f"daskmeans.cluster.{k}" for k in (cl if isinstance(cl, dict) else {"?": 0}) if k != "profiles"]
    if others:
        raise InputError(
            f"cluster config {path} (found in the current folder) may only hold daskmeans.cluster.profiles, "
            f"not {', '.join(sorted(others))}; put other settings in ~/.config/dask/, or name the file "
            f"with ${ENV_VAR} if you trust it"
        )


_loaded: tuple | None = None


def load_config(paths=None, *, force: bool = False) -> list[Path]:
    """Merge the cluster config file(s) into :data:`dask.config.config`.

    The files go above what dask already holds (defaults and the user's config
    files), then the ``DASK_*`` environment variables are applied again on top,
    so they keep their usual precedence. Idempotent for unchanged files.

    Returns the files read.
    """
    global _loaded
    implicit = paths is None and not os.environ.get(ENV_VAR)
    files = [Path(p) for p in (config_files() if paths is None else paths)]
    key = tuple((str(p.absolute()), _mtime(p)) for p in files), tuple(sorted(
        (k, v) for k, v in os.environ.items() if k.startswith("DASK_")))
    if not force and key == _loaded:
        return files
    data = read_files(files, profiles_only=implicit)
    if data:
        dask.config.update(dask.config.config, data, priority="new")
    dask.config.update(dask.config.config, dask.config.collect_env(), priority="new")
    _loaded = key
    if files:
        logger.debug("cluster config: %s", ", ".join(map(str, files)))
    return files


def _mtime(p: Path):
    try:
        return p.stat().st_mtime_ns
    except OSError:
        return None


def profiles() -> dict:
    """All profiles known after :func:`load_config`: ``{name: dict}``."""
    profs = config.get("cluster.profiles") or {}
    if not isinstance(profs, dict):
        raise InputError("daskmeans.cluster.profiles must be a mapping of profile names to settings")
    return profs


def get_profile(name: str) -> dict:
    """The validated profile ``name`` (keys normalised to hyphens), or :class:`InputError`."""
    load_config()
    profs = profiles()
    found = {_norm(k): v for k, v in profs.items()}
    prof = found.get(_norm(name))
    if prof is None:
        files = ", ".join(map(str, config_files()))
        where = (f"profiles read from {files}" if files else
                 f"no cluster.yaml in the current folder; set ${ENV_VAR} to yours or run from the project folder")
        known = ", ".join(sorted(profs)) or "none"
        raise InputError(f"--cluster {name!r}: no such profile (known: {known}); {where}")
    return validate_profile(name, prof)


def _norm(key: str) -> str:
    return str(key).replace("_", "-").lower()


def validate_profile(name: str, prof) -> dict:
    """Check a profile's kind and keys; return it with hyphenated keys."""
    if not isinstance(prof, dict):
        raise InputError(f"cluster profile {name!r}: expected a mapping with a kind, got {prof!r}")
    prof = {_norm(k): v for k, v in prof.items()}
    kind = prof.get("kind")
    if kind not in KINDS:
        raise InputError(f"cluster profile {name!r}: kind {kind!r} is not one of {', '.join(KINDS)}")
    allowed = _COMMON | _KEYS[kind]
    unknown = sorted(set(prof) - allowed)
    if unknown:
        raise InputError(
            f"cluster profile {name!r} (kind {kind}): unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    _refuse_preload(name, prof)
    if kind in OPTIONAL:
        _check_installed(kind, name)
    if kind == "threads":
        sched = prof.get("scheduler", "threads")
        if sched not in ("threads", "sync", "synchronous", "processes"):
            raise InputError(f"cluster profile {name!r}: scheduler {sched!r} is not threads, sync or processes")
    if kind == "address":
        has_addr, has_file = bool(prof.get("address")), bool(prof.get("scheduler-file"))
        if has_addr == has_file:
            raise InputError(f"cluster profile {name!r}: give exactly one of address (tcp://HOST:PORT) or scheduler-file")
        if has_addr:
            check_scheduler(str(prof["address"]), what=f"cluster profile {name!r}: address")
            _check_tls(name, str(prof["address"]), prof.get("tls"))
        elif prof.get("tls") is not None:
            _tls_files(name, prof["tls"])
    if kind == "jobqueue":
        system = str(prof.get("system", "")).lower()
        if system not in JOBQUEUE_SYSTEMS:
            raise InputError(
                f"cluster profile {name!r}: system {prof.get('system')!r} is not one of {', '.join(JOBQUEUE_SYSTEMS)}"
            )
        protocol = str(prof.get("protocol") or ("tls://" if prof.get("tls") else "tcp://"))
        _check_tls(name, protocol, prof.get("tls"))
    for key in ("n-workers", "threads-per-worker", "num-workers"):
        v = prof.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "n-workers" else 1)):
            raise InputError(f"cluster profile {name!r}: {key} {v!r} must be a whole number >= "
                             f"{0 if key == 'n-workers' else 1}")
    for key in ("options", "scheduler-options", "adapt", "resources", "env"):
        if prof.get(key) is not None and not isinstance(prof[key], dict):
            raise InputError(f"cluster profile {name!r}: {key} must be a mapping")
    return prof


def _refuse_preload(name: str, prof, where: str = "") -> None:
    """No profile makes the scheduler or workers import a module of its choosing (``preload``)."""
    if isinstance(prof, dict):
        for k, v in prof.items():
            if "preload" in str(k).lower():
                raise InputError(f"cluster profile {name!r}: {where}{k} would run code in the scheduler or workers; "
                                 f"remove it (install what the workers need instead)")
            _refuse_preload(name, v, f"{where}{k}.")


def _check_tls(name: str, address: str, tls) -> None:
    """Refuse ``tls://`` without certificates, and certificates with a plain address."""
    if address.startswith("tls://") and not tls:
        raise InputError(
            f"cluster profile {name!r}: {address} needs TLS settings: add tls: {{ca-file, cert, key}} "
            f"(dask's certificate-based security, PEM files); see README, Security"
        )
    if tls:
        _tls_files(name, tls)
        if not address.startswith("tls://"):
            raise InputError(
                f"cluster profile {name!r}: tls is set but {address} is not a tls:// address; use tls://HOST:PORT"
            )


def _tls_files(name: str, tls) -> dict:
    if not isinstance(tls, dict):
        raise InputError(f"cluster profile {name!r}: tls must be a mapping with ca-file, cert and key")
    tls = {_norm(k): v for k, v in tls.items()}
    missing = [k for k in _TLS_KEYS if not tls.get(k)]
    unknown = sorted(set(tls) - set(_TLS_KEYS))
    if missing or unknown:
        raise InputError(
            f"cluster profile {name!r}: tls needs exactly ca-file, cert and key (PEM files)"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )
    files = {k: Path(os.path.expandvars(str(tls[k]))).expanduser() for k in _TLS_KEYS}
    for k, p in files.items():
        if not p.is_file():
            raise InputError(f"cluster profile {name!r}: tls {k} {p}: no such file")
    mode = files["key"].stat().st_mode & 0o777
    if mode & 0o077:
        raise InputError(f"cluster profile {name!r}: tls key {files['key']} is readable by others (mode {mode:o}); "
                         f"run: chmod 600 {files['key']}")
    return files


def security_from(name: str, tls, *, roles=("client",)):
    """A :class:`distributed.security.Security` that requires encryption, from a profile's ``tls``.

    ``roles``: which of client/scheduler/worker use the one certificate and key
    (a cluster that daskmeans starts is all three).
    """
    files = _tls_files(name, tls)
    kwargs = {"tls_ca_file": str(files["ca-file"])}
    for role in roles:
        kwargs[f"tls_{role}_cert"] = str(files["cert"])
        kwargs[f"tls_{role}_key"] = str(files["key"])
    return Security(require_encryption=True, **kwargs)


def _missing(kind: str, name: str, why: str) -> InputError:
    _, extra, dist = OPTIONAL[kind]
    return InputError(
        f"cluster profile {name!r} (kind {kind}) needs {dist}, which is not installed ({why}); "
        f"install it with: pip install 'daskmeans[{extra}]'"
    )


def _check_installed(kind: str, name: str) -> None:
    """Fail early, without importing it, when the optional package of ``kind`` is absent."""
    top = OPTIONAL[kind][0].split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise _missing(kind, name, f"no module named {top!r}")


def import_backend(kind: str, name: str):
    """Import the optional package of ``kind``, or say which extra installs it."""
    try:
        return importlib.import_module(OPTIONAL[kind][0])
    except ImportError as e:
        raise _missing(kind, name, str(e)) from None


# -- starting / connecting ----------------------------------------------------------------


def _kwargs(d: dict | None) -> dict:
    return {str(k).replace("-", "_"): v for k, v in (d or {}).items()}


@contextlib.contextmanager
def open_profile(name: str, prof: dict | None = None, *, n_workers: int | None = None):
    """Start (or connect to) profile ``name``; yield ``{kind, profile, address, dashboard, client}``.

    On exit, closes the client and any cluster this call started; an existing
    scheduler (``address``) is left running.
    """
    prof = validate_profile(name, prof) if prof is not None else get_profile(name)
    kind = prof["kind"]
    info = {"kind": kind, "profile": name, "address": None, "dashboard": None, "client": None}
    if kind == "threads":
        sched = prof.get("scheduler", "threads")
        sched = "sync" if sched == "synchronous" else sched
        opts = {"scheduler": sched}
        if prof.get("num-workers"):
            opts["num_workers"] = int(prof["num-workers"])
        with dask.config.set(opts):
            yield info
        return
    if kind == "address":
        with _connect_address(name, prof, info) as info:
            yield info
        return

    cluster = _start_cluster(name, prof, n_workers)
    try:
        security = getattr(cluster, "security", None)
        with distributed_client(cluster, address=cluster.scheduler_address, security=security) as client:
            info.update(address=cluster.scheduler_address, dashboard=dashboard_link(client), client=client)
            logger.info("started %s cluster %r at %s, dashboard %s", kind, name, info["address"], info["dashboard"])
            yield info
    finally:
        _close(cluster)


def _close(cluster) -> None:
    try:
        cluster.close()
    except Exception as e:  # closing must not hide the run's own error
        logger.warning("closing the cluster failed: %s", e)


def _is_loopback(host) -> bool:
    """A host name, address or network interface (``lo``) that only this machine reaches."""
    h = str(host).strip("[]")
    return h in ("localhost", "::1", "lo") or h.startswith("127.")


def _warn_if_open(name: str, where, tls) -> None:
    """Anyone who reaches a Dask scheduler can run code on it: say so when one listens beyond loopback in clear."""
    if where and not _is_loopback(where) and not tls:
        logger.warning("cluster profile %r listens on %s without TLS: anyone who can reach it can run code "
                       "as you; add tls: {ca-file, cert, key} or keep host 127.0.0.1", name, where)


def _start_local(name: str, prof: dict, nw):
    kw = {
        # A Dask scheduler runs the code it is sent: loopback unless the profile says otherwise.
        "host": prof.get("host") or LOOPBACK,
        "dashboard_address": prof.get("dashboard-address", f"{LOOPBACK}:0"),
        "processes": bool(prof.get("processes", True)),
    }
    if nw is not None:
        kw["n_workers"] = int(nw)
    if prof.get("threads-per-worker") is not None:
        kw["threads_per_worker"] = int(prof["threads-per-worker"])
    if prof.get("memory-limit") is not None:
        kw["memory_limit"] = prof["memory-limit"]
    kw.update(_kwargs(prof.get("options")))
    _warn_if_open(name, kw["host"], None)
    return LocalCluster(**kw)


def _start_local_cuda(name: str, prof: dict, nw):
    mod = import_backend("local-cuda", name)
    kw = {"host": prof.get("host") or LOOPBACK, "dashboard_address": prof.get("dashboard-address", f"{LOOPBACK}:0")}
    for key in ("cuda-visible-devices", "threads-per-worker", "memory-limit", "device-memory-limit",
                "rmm-pool-size", "protocol"):
        if prof.get(key) is not None:
            kw[key.replace("-", "_")] = prof[key]
    if nw is not None:
        kw["n_workers"] = int(nw)
    kw.update(_kwargs(prof.get("options")))
    _warn_if_open(name, kw["host"], None)
    return mod.LocalCUDACluster(**kw)


def _start_jobqueue(name: str, prof: dict, nw):
    mod = import_backend("jobqueue", name)
    cls = getattr(mod, JOBQUEUE_SYSTEMS[str(prof["system"]).lower()])
    kw = {}
    for key in ("cores", "memory", "processes", "queue", "account", "walltime", "job-extra-directives",
                "job-script-prologue", "interface", "local-directory", "log-directory"):
        if prof.get(key) is not None:
            kw[key.replace("-", "_")] = prof[key]
    sched_opts = _kwargs(prof.get("scheduler-options"))
    if not prof.get("interface") and not ({"host", "interface"} & set(sched_opts)):
        # Workers on the same host only; a profile that names an interface or host opens it wider.
        sched_opts["host"] = LOOPBACK
    sched_opts.setdefault("dashboard_address", f"{LOOPBACK}:0")
    kw["scheduler_options"] = sched_opts
    _warn_if_open(name, prof.get("interface") or sched_opts.get("interface") or sched_opts.get("host"), prof.get("tls"))
    if prof.get("tls"):
        kw["protocol"] = "tls://"
        kw["security"] = security_from(name, prof["tls"], roles=("client", "scheduler", "worker"))
    elif prof.get("protocol"):
        kw["protocol"] = prof["protocol"]
    kw.update(_kwargs(prof.get("options")))
    cluster = cls(**kw)
    try:
        if prof.get("adapt"):
            cluster.adapt(**_kwargs(prof["adapt"]))
        else:
            cluster.scale(int(nw if nw is not None else 1))
    except BaseException:
        _close(cluster)
        raise
    return cluster


def _start_kubernetes(name: str, prof: dict, nw):
    mod = import_backend("kubernetes", name)
    kw = {}
    for key in ("name", "image", "namespace", "resources", "env"):
        if prof.get(key) is not None:
            kw[key] = prof[key]
    if nw is not None:
        kw["n_workers"] = int(nw)
    kw.update(_kwargs(prof.get("options")))
    return mod.KubeCluster(**kw)


_STARTERS = {"local": _start_local, "local-cuda": _start_local_cuda, "jobqueue": _start_jobqueue,
             "kubernetes": _start_kubernetes}


def _start_cluster(name: str, prof: dict, n_workers: int | None):
    """The cluster object of a kind that daskmeans starts (and closes)."""
    kind = prof["kind"]
    nw = n_workers if n_workers is not None else prof.get("n-workers")
    if kind not in _STARTERS:
        raise InputError(f"cluster profile {name!r}: kind {kind!r} cannot be started")  # pragma: no cover
    return _STARTERS[kind](name, prof, nw)


@contextlib.contextmanager
def _connect_address(name: str, prof: dict, info: dict):
    timeout = connect_timeout(prof.get("connect-timeout"))
    address = prof.get("address")
    if not address:
        address = _address_from_file(name, Path(os.path.expandvars(str(prof["scheduler-file"]))).expanduser(), timeout)
        _check_tls(name, address, prof.get("tls"))
    security = security_from(name, prof["tls"]) if prof.get("tls") else None
    with distributed_client(address, address=address, security=security, timeout=timeout) as client:
        info.update(address=address, dashboard=dashboard_link(client), client=client)
        logger.info("connected to %s (profile %r), dashboard %s", address, name, info["dashboard"])
        yield info


def _address_from_file(name: str, path: Path, timeout: float) -> str:
    """The scheduler address in a scheduler file, waiting up to ``timeout`` for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return str(json.loads(path.read_text())["address"])
        except (OSError, ValueError, KeyError):
            if time.monotonic() >= deadline:
                raise ClusterUnreachable(
                    f"cluster profile {name!r}: no scheduler file with an address at {path} within {timeout:g} s; "
                    f"start one with `dask scheduler --scheduler-file {path}`"
                ) from None
            time.sleep(0.2)

