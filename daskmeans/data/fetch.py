"""Finding a CIFAR-10 source: an explicit path, known local places, or a verified download."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import config, userdirs
from ..atomic import sweep_stale, temporary_name
from ..errors import DataError
from .safety import special_kind

__all__ = [
    "ARCHIVE_BYTES",
    "ARCHIVE_MD5",
    "ARCHIVE_NAME",
    "HINT",
    "Progress",
    "download",
    "file_md5",
    "resolve_source",
    "search_places",
]

logger = logging.getLogger("daskmeans")

#: File name of the official archive, in the cache and in downloads.
ARCHIVE_NAME = "cifar-10-python.tar.gz"
#: md5 of the official archive, published with it. A constant, not a setting: whatever
#: URL it is downloaded from, and whatever the cache holds, must match it.
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
#: Size of the official archive in bytes; a download that sends more is cut off.
ARCHIVE_BYTES = 170_498_071

#: The fix offered whenever no usable source was found.
HINT = (
    "pass --data PATH (an official cifar-10-python.tar.gz, its extracted folder, "
    "or an image-folder tree/tarball) or set DASKMEANS_DATA"
)


class Progress:
    """A dependency-free progress line on stderr.

    Parameters
    ----------
    total : int or None
        Expected count (items or bytes); ``None`` when unknown.
    label : str
        What is progressing.
    enabled : bool
        ``False`` makes every method a no-op.
    unit : {"items", "bytes"}
        How counts are printed.
    """

    def __init__(self, total, label: str, enabled: bool = True, unit: str = "items"):
        self.total = total
        self.label = label
        self.enabled = enabled
        self.unit = unit
        self.done = 0
        self._last = 0.0
        self._start = time.monotonic()
        self._tty = enabled and sys.stderr.isatty()

    def _fmt(self, n) -> str:
        return f"{n / 2**20:.1f} MiB" if self.unit == "bytes" else f"{n:,}"

    def update(self, n: int) -> None:
        """Advance by ``n``; redraws at most ten times a second (only on a terminal)."""
        self.done += n
        if not self._tty:
            return  # logs and CI: only the final line, no carriage-return noise
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._draw("\r")

    def _draw(self, prefix: str, end: str = "") -> None:
        if self.total:
            pct = 100.0 * self.done / self.total
            text = f"daskmeans: {self.label} {self._fmt(self.done)}/{self._fmt(self.total)} ({pct:3.0f}%)"
        else:
            text = f"daskmeans: {self.label} {self._fmt(self.done)}"
        sys.stderr.write(f"{prefix}{text}{end}")
        sys.stderr.flush()

    def close(self) -> None:
        """Print the final state and the elapsed time."""
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._start
        self._draw("\r" if self._tty else "", end=f" in {elapsed:.1f} s\n")
        self.enabled = False

    def abort(self) -> None:
        """Stop drawing; end a partial line so that an error message starts on its own line."""
        if self.enabled and self._tty and self._last:
            sys.stderr.write("\n")
        self.enabled = False
        self._tty = False

    @contextlib.contextmanager
    def aborting(self):
        """Context manager: :meth:`abort` if the block raises (the bar stays open otherwise)."""
        try:
            yield self
        except BaseException:
            self.abort()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def search_places(cache_dir: Path) -> list[tuple[str, Path | None]]:
    """The local places searched, in order, when no source is given.

    Returns
    -------
    list of (description, path or None)
        ``None`` for ``$DASKMEANS_DATA`` when it is unset.
    """
    keras = Path.home() / ".keras" / "datasets"
    env = os.environ.get("DASKMEANS_DATA")
    return [
        ("$DASKMEANS_DATA", Path(env).expanduser() if env else None),
        ("cache", cache_dir / ARCHIVE_NAME),
        ("cache", cache_dir / "cifar-10-batches-py"),
        ("keras cache", keras / "cifar-10-batches-py"),
        ("keras cache", keras / "cifar-10-batches-py.tar.gz"),
    ]


def _check_path(data, label: str = "--data ") -> Path | str:
    if str(data) == "keras":
        return "keras"
    path = Path(os.fspath(data)).expanduser()
    try:
        mode = path.stat().st_mode  # follows links: what would be read
    except FileNotFoundError:
        raise DataError(f"{label}{data}: no such file or folder; {HINT}") from None
    except OSError as e:
        raise DataError(f"{label}{data}: cannot read ({e.strerror or e}); {HINT}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        # /dev/zero, a FIFO or a socket would hang or never end while being hashed.
        raise DataError(f"{label}{data}: {special_kind(mode)}, not a file or folder; {HINT}")
    if not os.access(path, os.R_OK) or (path.is_dir() and not os.access(path, os.X_OK)):
        raise DataError(f"{label}{data}: permission denied; {userdirs.read_fix(data, path.is_dir())}")
    return path.resolve()


def file_md5(path: Path) -> str:
    """Hex md5 of a regular file's content."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(path: Path, ours: bool) -> bool:
    """Whether ``path`` (a cached copy of the official archive) is the official archive.

    A copy in our cache that is not (forged, truncated, corrupted) is removed and
    refused; one in Keras's cache is skipped (not ours to remove).
    """
    try:
        ok = path.is_file() and file_md5(path) == ARCHIVE_MD5
    except OSError:
        ok = False
    if ok or not ours:
        if not ok:
            logger.warning("%s is not the official CIFAR-10 archive (md5 differs); skipped", path)
        return ok
    path.unlink(missing_ok=True)
    raise DataError(
        f"cache {path}: not the official CIFAR-10 archive (md5 differs from {ARCHIVE_MD5}: forged, "
        f"corrupted or cut short); removed it; run again to download the official archive, or {HINT}"
    )


def resolve_source(data=None, progress: bool = True, cache_dir=None) -> Path | str:
    """Find the CIFAR-10 source to read.

    Parameters
    ----------
    data : path-like or str, optional
        An explicit source, or ``"keras"``. When ``None``: ``$DASKMEANS_DATA``, then
        ``cifar-10-python.tar.gz`` or ``cifar-10-batches-py/`` in the cache folder,
        then Keras's cache ``~/.keras/datasets/``, then a download of config
        ``daskmeans.download.url`` (md5-verified) into the cache folder.
    progress : bool
        Show a progress line while downloading.
    cache_dir : path-like, optional
        Cache folder; default :func:`daskmeans.config.cache_dir`.

    Returns
    -------
    pathlib.Path or "keras"
        An absolute path to an existing file or folder, or the string ``"keras"``.

    Raises
    ------
    DataError
        Missing/unreadable explicit path; or nothing found and the download failed.
    """
    if data is not None:
        return _check_path(data)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else config.cache_dir()
    places = search_places(cache)
    for label, path in places:
        if path is None:
            continue
        if label == "$DASKMEANS_DATA":
            return _check_path(os.environ["DASKMEANS_DATA"], label="DASKMEANS_DATA=")
        if path.exists():
            if path.name.endswith(".tar.gz") and not _verified(path, ours=label == "cache"):
                continue
            return _check_path(path, label=f"{label} ")
    searched = ", ".join(
        f"{label} {path}" if path is not None else f"{label} (unset)" for label, path in places
    )
    return download(cache, progress=progress, searched=searched)


def download(cache_dir: Path, progress: bool = True, searched: str | None = None) -> Path:
    """Download the official archive into ``cache_dir`` and verify its md5.

    The file is written to a temporary name and moved to
    ``<cache_dir>/cifar-10-python.tar.gz`` only once its md5 matches
    :data:`ARCHIVE_MD5` (whatever config ``daskmeans.download.url`` names, a
    mirror or a ``file://`` copy); on any failure the temporary file is removed.
    A transfer longer than the official archive is cut off.

    Parameters
    ----------
    cache_dir : pathlib.Path
        Destination folder (created if missing).
    progress : bool
        Show a progress line.
    searched : str, optional
        The local places already searched, quoted in the error when offline.

    Returns
    -------
    pathlib.Path
        The verified archive.

    Raises
    ------
    DataError
        When the server cannot be reached, the transfer fails, or the md5 differs.
    """
    url = config.get("download.url")
    expected = ARCHIVE_MD5
    timeout = float(config.get("download.timeout") or 60)
    cache_dir = Path(cache_dir)
    final = cache_dir / ARCHIVE_NAME
    tmp = temporary_name(final)
    md5 = hashlib.md5()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        sweep_stale(cache_dir, ARCHIVE_NAME)  # partial downloads of killed runs
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > ARCHIVE_BYTES:
                raise OSError(f"the server announces {total:,} bytes, the official archive has {ARCHIVE_BYTES:,}")
            with Progress(total, f"downloading {url}", progress, unit="bytes") as bar:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    md5.update(block)
                    bar.update(len(block))
                    if bar.done > ARCHIVE_BYTES:
                        raise OSError(f"more than the official archive's {ARCHIVE_BYTES:,} bytes")
            if total is not None and bar.done != total:
                raise OSError(f"connection closed after {bar.done} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        where = f"no CIFAR-10 data found (searched {searched}) and downloading" if searched else "downloading"
        raise DataError(
            f"{where} {url} failed ({' '.join(str(reason).split())}); {HINT}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)  # Ctrl-C: leave nothing half-written
        raise
    got = md5.hexdigest()
    if got != expected:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"downloaded {url} has md5 {got}, expected {expected} (corrupted or changed "
            f"download; nothing was kept); retry, or {HINT}"
        )
    os.replace(tmp, final)
    return final
