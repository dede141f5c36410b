"""Connecting to a Dask scheduler: addresses, the bounded connect, the Client's lifetime.

The bottom of the cluster layer: :mod:`daskmeans.profiles` (named ways to get
workers) and :mod:`daskmeans.cluster` (which one a run uses) both build on it,
and it imports neither.

A connection is bounded end to end by ``daskmeans.scheduler.connect-timeout``:
before a :class:`distributed.Client` is made, :func:`probe` opens the TCP (or
TLS) connection itself and waits, within the same deadline, for the greeting a
Dask scheduler sends first. A listener that accepts and never answers, or a
server that speaks another protocol (HTTP), ends with
:class:`~daskmeans.errors.ClusterUnreachable` (exit status 3) instead of a hang
or a huge allocation inside the Client.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import ssl
import struct
import time

import dask
import distributed
from distributed.security import Security

from . import config
from .errors import ClusterUnreachable, InputError

logger = logging.getLogger("daskmeans")

LOOPBACK = "127.0.0.1"
#: ``--scheduler`` values that mean "no cluster" or "start one here".
LOCAL_SPECS = ("threads", "sync", "synchronous", "local")
_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?$")
#: A scheduler's greeting (its handshake) is a few hundred bytes; anything claiming more is not one.
_MAX_GREETING = 1 << 20


def is_address(spec: str) -> bool:
    return "://" in spec


def check_scheduler(spec: str | None, what: str = "--scheduler") -> None:
    """Validate a ``--scheduler`` value before any work starts (``None``: decided later)."""
    if spec is None or spec in LOCAL_SPECS:
        return
    if is_address(spec):
        if not _ADDRESS.match(spec):
            raise InputError(
                f"{what} {spec!r} is not a scheduler address; use tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)"
            )
        return
    raise InputError(f"{what} {spec!r} is not one of threads, local or tcp://HOST:PORT")


def connect_timeout(value=None) -> float:
    """``value`` or ``daskmeans.scheduler.connect-timeout``, checked (a bad setting is exit 2)."""
    raw = value if value is not None else config.get("scheduler.connect-timeout", 10)
    try:
        timeout = float(raw)
    except (TypeError, ValueError):
        timeout = float("nan")
    if not (timeout > 0 and timeout < 86400):
        if value is not None:
            raise InputError(f"connect-timeout {raw!r} is not a number of seconds; set it to e.g. 10")
        env = "DASK_DASKMEANS__SCHEDULER__CONNECT_TIMEOUT"
        where = f"${env}" if env in os.environ else "a dask config file"
        raise InputError(f"config daskmeans.scheduler.connect-timeout={raw!r} (set by {where}) is not a number "
                         f"of seconds; set it to e.g. 10 or unset it")
    return timeout


def dashboard_link(client) -> str | None:
    """The Client's dashboard address, or None when the cluster has none."""
    try:
        return client.dashboard_link
    except Exception:  # distributed raises various errors when no dashboard is configured
        return None


def _host_port(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host:
        host, port = hostport, "8786"
    return host.strip("[]"), int(port)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer")
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("closed by the other side")
        buf += chunk
    return buf


def probe(address: str, timeout: float, security: Security | None = None) -> None:
    """Check, within ``timeout`` seconds, that a Dask scheduler answers at ``address`` (tcp:// or tls://).

    Raises :class:`ClusterUnreachable` when nothing listens, nothing answers in
    time, or what answers is not a Dask scheduler.
    """
    if not address.startswith(("tcp://", "tls://")):
        return  # other transports (inproc, ucx) have no socket to probe here
    deadline = time.monotonic() + timeout
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = raw
            if address.startswith("tls://"):
                ctx = (security.get_connection_args("client").get("ssl_context") if security else None) \
                    or ssl.create_default_context()
                sock = ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False)
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.do_handshake()
            (size,) = struct.unpack("<Q", _recv_exact(sock, 8, deadline))
            if not 0 < size <= _MAX_GREETING:
                raise _NotDask(f"it announced a {size}-byte message")
            _recv_exact(sock, size, deadline)
    except _NotDask as e:
        raise ClusterUnreachable(
            f"{address} answered, but not as a Dask scheduler ({e}); check the address and port"
        ) from None
    except (OSError, ssl.SSLError, TimeoutError, ValueError) as e:
        why = "no answer" if isinstance(e, (TimeoutError, socket.timeout)) else type(e).__name__
        raise ClusterUnreachable(
            f"could not reach the Dask scheduler at {address} within {timeout:g} s ({why}); "
            f"check the address, or start one with `dask scheduler` (or use --scheduler local)"
        ) from None


class _NotDask(Exception):
    pass


def connect_client(target, timeout: float | None = None, *, name: str | None = None, **kwargs) -> distributed.Client:
    """A :class:`distributed.Client` for ``target`` (an address or a cluster object), or :class:`ClusterUnreachable`."""
    timeout = connect_timeout(timeout)
    name = name or str(target)
    if isinstance(target, str):
        probe(target, timeout, kwargs.get("security"))
    try:
        return distributed.Client(target, timeout=timeout, set_as_default=True, **kwargs)
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
def quiet_tracebacks():
    """For the block: distributed's log records become one line each (no tracebacks)."""
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
    with dask.config.set(scheduler="dask.distributed"), quiet_tracebacks():
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


def config_security(address: str) -> Security:
    """For a bare ``tls://`` address: dask's own TLS settings, or a refusal."""
    tls = dask.config.get("distributed.comm.tls", {}) or {}
    client = tls.get("client") or {}
    if not (tls.get("ca-file") and client.get("cert")):
        raise InputError(
            f"{address}: a tls:// scheduler needs certificates; define an address profile with "
            f"tls: {{ca-file, cert, key}} in cluster.yaml and use --cluster NAME (see README, Security)"
        )
    return Security(require_encryption=True)
