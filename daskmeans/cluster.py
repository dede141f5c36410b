"""Where a run computes: dask's threaded scheduler, a LocalCluster it starts, or an
existing scheduler it connects to (and never closes).
"""

from __future__ import annotations

import contextlib
import logging
import re

import dask

from . import config
from .errors import ClusterUnreachable, InputError

logger = logging.getLogger("daskmeans")

_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?$")


def is_address(spec: str) -> bool:
    return "://" in spec


def check_scheduler(spec: str) -> None:
    """Validate ``--scheduler`` before any work starts."""
    if spec in ("threads", "sync", "synchronous", "local"):
        return
    if is_address(spec):
        if not _ADDRESS.match(spec):
            raise InputError(
                f"--scheduler {spec!r} is not a scheduler address; use tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)"
            )
        return
    raise InputError(
        f"--scheduler {spec!r} is not one of threads, local or tcp://HOST:PORT"
    )


def connect_client(address: str, timeout: float | None = None, **kwargs):
    """A :class:`distributed.Client` for ``address``, or :class:`ClusterUnreachable`."""
    from distributed import Client

    timeout = float(timeout if timeout is not None else config.get("scheduler.connect-timeout", 10))
    try:
        return Client(address, timeout=timeout, set_as_default=True, **kwargs)
    except (OSError, TimeoutError) as e:
        raise ClusterUnreachable(
            f"could not reach the Dask scheduler at {address} within {timeout:g} s ({type(e).__name__}); "
            f"check the address, or start one with `dask scheduler` (or use --scheduler local)"
        ) from None


@contextlib.contextmanager
def scheduler(spec: str = "threads", *, n_workers: int | None = None, threads_per_worker: int | None = None):
    """Context manager that makes ``spec`` the scheduler of the enclosed computations.

    Yields a dict describing it: ``kind``, ``address``, ``dashboard`` (or None),
    ``client`` (a distributed Client or None). Closes only what it started.
    """
    check_scheduler(spec)
    if spec in ("threads", "sync", "synchronous"):
        with dask.config.set(scheduler="threads" if spec == "threads" else "sync"):
            yield {"kind": spec, "address": None, "dashboard": None, "client": None}
        return
    if spec == "local":
        from distributed import Client, LocalCluster

        # Listen on loopback only: a Dask scheduler runs the code it is sent.
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
        try:
            with Client(cluster, set_as_default=True) as client:
                info = {
                    "kind": "local",
                    "address": cluster.scheduler_address,
                    "dashboard": client.dashboard_link,
                    "client": client,
                }
                logger.info("LocalCluster %s, dashboard %s", cluster.scheduler_address, client.dashboard_link)
                yield info
        finally:
            cluster.close()
        return
    client = connect_client(spec)
    try:
        info = {"kind": "address", "address": spec, "dashboard": client.dashboard_link, "client": client}
        logger.info("connected to %s, dashboard %s", spec, client.dashboard_link)
        yield info
    finally:
        client.close()  # only the client: the cluster is not ours
