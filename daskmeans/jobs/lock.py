"""The job's lock: one run of a job at a time, on one machine or a shared filesystem."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import stat
from pathlib import Path

from ..errors import InputError, LockHeld


def now() -> str:
    """The current UTC time, ISO 8601 to the second (for status files and the lock)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class JobLock:
    """An exclusive, non-blocking ``flock`` on the job's lock file.

    The kernel drops it when the holder exits, however it exits (even SIGKILL),
    so a crashed run never blocks the next one. The file is opened without
    following a symbolic link and only a regular file with one name, owned by
    this user, is written: a ``.lock`` planted in a shared runs folder cannot
    make a run truncate (or create) another file.
    """

    def __init__(self, path: Path, job: str):
        self.path = Path(path)
        self.job = job
        self.fd = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as e:
            raise InputError(f"job {self.job}: cannot open its lock {self.path} ({e.strerror or e}); "
                             f"remove it if it is a link or not a file") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            os.close(fd)
            raise InputError(f"job {self.job}: its lock {self.path} is not a plain file of yours "
                             f"(a link or another user's file); remove it and run the job again")
        return fd

    def acquire(self) -> JobLock:
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
                holder = f" (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"
            os.close(fd)
            raise LockHeld(
                f"job {self.job} is already running{holder}; not starting a second run "
                f"(lock {self.path}; exit status 75: try again later)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}).encode()
        os.ftruncate(fd, 0)  # ours: a regular file with one name, opened without following links
        os.pwrite(fd, info, 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
