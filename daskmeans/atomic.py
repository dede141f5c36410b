"""Atomic files and staging folders: a reader sees nothing, or the whole thing.

Every writer in daskmeans (outputs, checkpoints, stores, downloads, job run
folders) writes under a hidden temporary name next to its destination and
renames it into place; :func:`sweep_stale` removes what a killed process left.
The temporary names carry the writer's pid, so a sweep never touches the
staging of a process that is still running.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
from pathlib import Path

#: Marker between a destination's name and the writer's pid in temporary names.
TMP_MARK = ".tmp-"


def temporary_name(final: str | os.PathLike, hidden: bool = True) -> Path:
    """A unique sibling name for staging ``final``: ``.NAME.tmp-PID-RANDOM``."""
    final = Path(final)
    prefix = "." if hidden and not final.name.startswith(".") else ""
    return final.with_name(f"{prefix}{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "wb"):
    """Open a temporary sibling of ``final`` for writing; rename it over ``final`` on success.

    On an exception the temporary file is removed and ``final`` is untouched.
    Yields the open file object (its ``name`` is the temporary path).
    """
    final = Path(final)
    tmp = temporary_name(final)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary sibling path of ``final``; rename it to ``final`` on success.

    For writers that need a path rather than a file object (``np.savez``,
    a Zarr store, a folder). The caller creates the file or folder at the
    yielded path; on an exception it is removed and ``final`` is untouched.
    """
    final = Path(final)
    tmp = temporary_name(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # no C library to call: exchange() falls back
        return None


_LIBC = _libc()


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False, having changed nothing, where the system or filesystem
    cannot do it; the caller then falls back to two renames.
    """
    fn = getattr(_LIBC, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def remove(path: str | os.PathLike) -> None:
    """Remove a file, link or folder tree if it exists (never follows a link)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def staging_pid(name: str) -> int | None:
    """The writer's pid encoded in a temporary name, or None if ``name`` is not one."""
    if TMP_MARK not in name:
        return None
    rest = name.rsplit(TMP_MARK, 1)[1]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def sweep_stale(folder: str | os.PathLike, stem: str | None = None) -> list[Path]:
    """Remove temporary siblings in ``folder`` whose writer is no longer running.

    ``stem``: only those staging that destination name. Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        pid = staging_pid(entry.name)
        if pid is None or (stem is not None and entry.name.lstrip(".").rsplit(TMP_MARK, 1)[0] != stem):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            remove(entry)
            removed.append(entry)
    return removed
