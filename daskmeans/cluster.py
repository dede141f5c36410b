"""Where a run computes: dask's threaded scheduler, a cluster it starts, or an
existing scheduler it connects to (and never closes).

Which one, first match wins:

1. ``--cluster NAME``: a profile of ``cluster.yaml`` (see :mod:`daskmeans.profiles`);
2. ``--scheduler threads|sync|local|tcp://HOST:PORT``;
3. dask's ``scheduler-address`` setting (``$DASK_SCHEDULER_ADDRESS``);
4. the threaded scheduler.

While a run holds a distributed Client, dask's default scheduler is
``"dask.distributed"``: should the scheduler vanish, the Client gives up after
``daskmeans.scheduler.connect-timeout`` seconds and the run ends with
:class:`~daskmeans.errors.ClusterUnreachable` (exit status 3), instead of
quietly carrying on with local threads.
"""

from __future__ import annotations

import contextlib
import logging

import dask

from . import profiles
from .connect import check_scheduler, config_security, dashboard_link, distributed_client
from .errors import InputError

logger = logging.getLogger("daskmeans")


def check_where(cluster: str | None = None, scheduler: str | None = None) -> None:
    """Validate ``--cluster`` / ``--scheduler`` together (reads cluster.yaml)."""
    if cluster and scheduler:
        raise InputError(f"--cluster {cluster} and --scheduler {scheduler}: give one of them, not both")
    profiles.load_config()
    if cluster:
        profiles.get_profile(cluster)
        return
    check_scheduler(scheduler)
    spec = scheduler or env_address()
    if spec and spec.startswith("tls://"):
        config_security(spec)


def env_address() -> str | None:
    """dask's ``scheduler-address`` (``$DASK_SCHEDULER_ADDRESS``), if set."""
    addr = dask.config.get("scheduler-address", None)
    if addr:
        check_scheduler(str(addr), what="DASK_SCHEDULER_ADDRESS")
    return str(addr) if addr else None


@contextlib.contextmanager
def scheduler(spec: str | None = None, *, cluster: str | None = None, n_workers: int | None = None,
              threads_per_worker: int | None = None):
    """Context manager that makes the chosen scheduler run the enclosed computations.

    ``cluster`` names a profile of cluster.yaml; otherwise ``spec`` is
    ``threads``, ``sync``, ``local`` or an address; ``None`` means
    ``$DASK_SCHEDULER_ADDRESS`` if set, else threads.

    Yields a dict describing it: ``kind``, ``address``, ``dashboard`` (or None),
    ``client`` (a distributed Client or None), and ``profile`` for a profile.
    Closes only what it started.
    """
    check_where(cluster, spec)
    if cluster:
        with profiles.open_profile(cluster, n_workers=n_workers) as info:
            yield info
        return
    if spec is None:
        spec = env_address()
        if spec:
            logger.info("scheduler from DASK_SCHEDULER_ADDRESS: %s", spec)
        else:
            spec = "threads"
    if spec in ("threads", "sync", "synchronous"):
        with dask.config.set(scheduler="threads" if spec == "threads" else "sync"):
            yield {"kind": spec, "address": None, "dashboard": None, "client": None}
        return
    if spec == "local":
        prof = {"kind": "local", "n-workers": n_workers, "threads-per-worker": threads_per_worker}
        with profiles.open_profile("local", {k: v for k, v in prof.items() if v is not None}) as info:
            info.pop("profile", None)
            yield info
        return
    security = config_security(spec) if spec.startswith("tls://") else None
    with distributed_client(spec, security=security) as client:
        info = {"kind": "address", "address": spec, "dashboard": dashboard_link(client), "client": client}
        logger.info("connected to %s, dashboard %s", spec, info["dashboard"])
        yield info
