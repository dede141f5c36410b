"""Per-user folders that daskmeans's libraries write, for users whose ``HOME`` is not writable.

Services, containers, batch jobs and Dask workers often run under an account whose
home folder does not exist or cannot be written. Two libraries daskmeans uses keep
per-user files there: numba its compiled kernels (see :mod:`daskmeans.jit`) and
matplotlib its configuration and font list (``~/.config/matplotlib``; without it
matplotlib warns and rebuilds the font list in a new temporary folder in every
process). Both then use the first folder of :func:`fallback_dirs` that can be written:

1. ``<name>/`` inside daskmeans's cache folder (:func:`daskmeans.config.cache_dir`);
2. ``daskmeans-<name>-<uid>`` in the system's temporary folder, created mode 0700
   and used only when it is a real folder owned by this user.

A folder set explicitly (``NUMBA_CACHE_DIR``, ``MPLCONFIGDIR``) is always left alone.
"""

from __future__ import annotations

import os
import pwd
import stat
import tempfile
from pathlib import Path

from . import config

#: What :func:`matplotlib_config` chose: ``{"where": "MPLCONFIGDIR" | "matplotlib" |
#: "daskmeans-cache" | "temp" | "none", "path": str | None}``.
MATPLOTLIB: dict = {}


def writable_dir(path: Path, private: bool = False) -> bool:
    """Create ``path`` if needed; True when this process can write there (and, with
    ``private``, the folder is a real folder owned by this user, not a link)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if private:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
                return False
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True)
        probe.close()
        return True
    except OSError:
        return False


def fallback_dirs(name: str):
    """``(where, folder, private)`` for a library's per-user files, in order of preference."""
    try:
        yield "daskmeans-cache", config.cache_dir() / name, False
    except (OSError, RuntimeError, KeyError):  # no home folder at all
        pass
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    yield "temp", Path(tempfile.gettempdir()) / f"daskmeans-{name}-{uid}", True


def _matplotlib_default() -> Path | None:
    """matplotlib's own configuration folder when ``MPLCONFIGDIR`` is unset (Linux and macOS)."""
    try:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        return (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "matplotlib"
    except (OSError, RuntimeError, KeyError):
        return None


def matplotlib_config() -> dict:
    """Point ``MPLCONFIGDIR`` at a writable folder when matplotlib's own cannot be written.

    Must run before matplotlib is imported (it picks its folder once, at import);
    :mod:`daskmeans.report.figures` calls it. Returns :data:`MATPLOTLIB`.
    """
    if MATPLOTLIB:
        return MATPLOTLIB
    if os.environ.get("MPLCONFIGDIR"):
        MATPLOTLIB.update(where="MPLCONFIGDIR", path=os.environ["MPLCONFIGDIR"])
        return MATPLOTLIB
    default = _matplotlib_default()
    if default is not None and writable_dir(default):
        MATPLOTLIB.update(where="matplotlib", path=str(default))
        return MATPLOTLIB
    for where, path, private in fallback_dirs("matplotlib"):
        if writable_dir(path, private):
            os.environ["MPLCONFIGDIR"] = str(path)
            MATPLOTLIB.update(where=where, path=str(path))
            return MATPLOTLIB
    MATPLOTLIB.update(where="none", path=None)  # matplotlib makes a temporary folder and says so
    return MATPLOTLIB


def who() -> str:
    """The user this process runs as, for messages: ``nobody (uid 65534)``."""
    if not hasattr(os, "getuid"):
        return "this user"
    uid = os.getuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # a uid without a passwd entry: containers run with --user 1234
        return f"uid {uid}"


def read_fix(path, folder: bool = False) -> str:
    """The end of a message for a file or folder this user may not read: who needs what."""
    mode = "a+rx" if folder else "a+r"
    return f"{who()} needs read permission{' and x (to list it)' if folder else ''}: chmod {mode} {path}, " \
           f"or run as a user who can read it"
