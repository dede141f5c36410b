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
import re

import dask

from . import config
from .errors import ClusterUnreachable, InputError

logger = logging.getLogger("daskmeans")

_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?$")
LOCAL_SPECS = ("threads", "sync", "synchronous", "local")


def is_address(spec: str) -> bool:
    return "://" in spec


def check_scheduler(spec: str | None, what: str = "--scheduler") -> None:
    """Validate ``--scheduler`` before any work starts (``None``: decided later)."""
    if spec is None or spec in LOCAL_SPECS:
        return
    if is_address(spec):
        if not _ADDRESS.match(spec):
            raise InputError(
                f"{what} {spec!r} is not a scheduler address; use tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)"
            )
        return
    raise InputError(
        f"{what} {spec!r} is not one of threads, local or tcp://HOST:PORT"
    )


def check_where(cluster: str | None = None, scheduler: str | None = None) -> None:
    """Validate ``--cluster`` / ``--scheduler`` together (reads cluster.yaml)."""
    from . import profiles

    if cluster and scheduler:
        raise InputError(f"--cluster {cluster} and --scheduler {scheduler}: give one of them, not both")
    profiles.load_config()
    if cluster:
        profiles.get_profile(cluster)
        return
    check_scheduler(scheduler)
    spec = scheduler or _env_address()
    if spec and spec.startswith("tls://"):
        _config_security(spec)


def _env_address() -> str | None:
    """dask's ``scheduler-address`` (``$DASK_SCHEDULER_ADDRESS``), if set."""
    addr = dask.config.get("scheduler-address", None)
    if addr:
        check_scheduler(str(addr), what="DASK_SCHEDULER_ADDRESS")
    return str(addr) if addr else None


def _config_security(address: str):
    """For a bare ``tls://`` address: dask's own TLS settings, or a refusal."""
    tls = dask.config.get("distributed.comm.tls", {}) or {}
    client = tls.get("client") or {}
    if not (tls.get("ca-file") and client.get("cert")):
        raise InputError(
            f"{address}: a tls:// scheduler needs certificates; define an address profile with "
            f"tls: {{ca-file, cert, key}} in cluster.yaml and use --cluster NAME (see README, Security)"
        )
    from distributed.security import Security

    return Security(require_encryption=True)


def connect_client(address, timeout: float | None = None, *, name: str | None = None, **kwargs):
    """A :class:`distributed.Client` for ``address`` (or a cluster object), or :class:`ClusterUnreachable`."""
    from distributed import Client

    timeout = float(timeout if timeout is not None else config.get("scheduler.connect-timeout", 10))
    name = name or str(address)
    try:
        return Client(address, timeout=timeout, set_as_default=True, **kwargs)
    except (OSError, TimeoutError) as e:
        raise ClusterUnreachable(
            f"could not reach the Dask scheduler at {name} within {timeout:g} s ({type(e).__name__}); "
            f"check the address, or start one with `dask scheduler` (or use --scheduler local)"
        ) from None


def _lost(client, exc: BaseException) -> bool:
    """Did ``exc`` come from the scheduler going away under ``client``?"""
    if getattr(client, "status", "running") != "running":
        return True
    text = str(exc)
    return "scheduler-connection-lost" in text or "no Client active" in text


class _OneLine(logging.Filter):
    """distributed's own log records without tracebacks: one line each, on the terminal too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            msg = record.getMessage().strip()
            record.msg = f"{msg + ': ' if msg else ''}{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def _quiet_tracebacks():
    import distributed  # noqa: F401  (configures its loggers' handlers on import)

    names = ["distributed"] + [n for n in list(logging.Logger.manager.loggerDict) if n.startswith("distributed.")]
    handlers = {h for n in names for h in getattr(logging.getLogger(n), "handlers", [])}
    flt = _OneLine()
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)


@contextlib.contextmanager
def distributed_client(target, *, address: str | None = None, security=None, timeout: float | None = None):
    """Connect a Client to ``target`` (an address or a cluster object) for the enclosed block.

    Closes the Client (never the cluster) on exit; turns a scheduler lost
    mid-block into :class:`ClusterUnreachable`.
    """
    address = address or str(target)
    kwargs = {"security": security} if security is not None else {}
    # Pinned for the block: if the Client closes under us, computations raise
    # instead of silently falling back to the local threaded scheduler.
    with dask.config.set(scheduler="dask.distributed"), _quiet_tracebacks():
        client = connect_client(target, timeout=timeout, name=address, **kwargs)
        try:
            yield client
        except Exception as e:
            if _lost(client, e):
                raise ClusterUnreachable(
                    f"the Dask scheduler at {address} vanished mid-run ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else 'connection lost'})"
                ) from None
            raise
        finally:
            try:
                client.close()
            except Exception as e:  # a dead scheduler must not hide the real error
                logger.debug("closing the client: %s", e)


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
    from . import profiles

    check_where(cluster, spec)
    if cluster:
        with profiles.open_profile(cluster, n_workers=n_workers) as info:
            yield info
        return
    if spec is None:
        spec = _env_address()
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
    security = _config_security(spec) if spec.startswith("tls://") else None
    with distributed_client(spec, security=security) as client:
        info = {"kind": "address", "address": spec, "dashboard": profiles._dashboard_link(client), "client": client}
        logger.info("connected to %s, dashboard %s", spec, info["dashboard"])
        yield info
