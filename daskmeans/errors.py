"""Errors that end a run with a one-line message and a documented exit status.

Library code raises these; the command line prints ``daskmeans: error: <message>``
and exits with ``exit_code``, never with a traceback.
"""

from __future__ import annotations

#: Exit statuses, documented in README.md ("Exit statuses").
EXIT_OK = 0
EXIT_FAILED = 1  # the run itself failed (a bug, a worker error, out of memory, ...)
EXIT_INPUT = 2  # bad input: options, data, job spec, output folder
EXIT_UNREACHABLE = 3  # the Dask scheduler could not be reached or vanished
EXIT_LOCKED = 75  # another run of the same job holds the lock (EX_TEMPFAIL: retry later)


class DaskmeansError(Exception):
    """Base class: a problem with a clear one-line explanation and fix."""

    exit_code = EXIT_FAILED


class InputError(DaskmeansError, ValueError):
    """Bad input from the user: an option, a data source, a file, a job spec."""

    exit_code = EXIT_INPUT


class DataError(InputError):
    """A data source that is missing, unreadable, corrupted, unsafe or of the wrong layout."""


class ClusterUnreachable(DaskmeansError, ConnectionError):
    """The Dask scheduler could not be reached (or vanished) within the timeout."""

    exit_code = EXIT_UNREACHABLE


class LockHeld(DaskmeansError):
    """Another run of the same job is in progress."""

    exit_code = EXIT_LOCKED
