"""Progress bars that show in a terminal and in a Jupyter notebook alike.

The engine calls :func:`bar` around a loop it knows the length of (ingest:
images decoded; k-means++: centres drawn; Lloyd: iterations)::

    with progress.bar(max_iter, "k-means", enabled=verbose > 0) as p:
        for it in range(max_iter):
            ...
            p.update(1, inertia=f"{inertia:.4g}", changed=changed)

``tqdm.auto`` draws it: a widget in Jupyter, a one-line bar on a terminal.
Where stderr is not a terminal (a pipe, a log file, pytest's capture) the bar
stays silent, since its carriage-return redraws would fill the log; the log
lines of ``daskmeans`` still say what happens. ``enabled=False`` (``verbose=0``)
draws nothing anywhere. Without tqdm, a plain line per second goes to stderr.
"""

from __future__ import annotations

import sys
import time

try:  # optional: tqdm is a dependency, but a plain fallback keeps the engine usable without it
    from tqdm.auto import tqdm as _tqdm
except ImportError:  # pragma: no cover - exercised by monkeypatching _tqdm in the tests
    _tqdm = None

__all__ = ["Progress", "bar"]


class Progress:
    """One progress bar: ``update(n=1, **postfix)``, ``close()``; a context manager."""

    def __init__(self, impl=None):
        self._impl = impl

    def update(self, n: int = 1, **postfix) -> None:
        """Advance by ``n`` steps; ``postfix`` (e.g. ``inertia=...``) is shown after the bar."""
        if self._impl is None:
            return
        if postfix:
            self._impl.set_postfix(postfix, refresh=False)
        self._impl.update(n)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Lines:
    """The fallback without tqdm: ``desc: n/total key=value`` at most once per ``every`` seconds."""

    def __init__(self, total, desc: str, file, every: float = 1.0):
        self.total, self.desc, self.file, self.every = total, desc, file, every
        self.n, self.postfix, self._last = 0, {}, float("-inf")

    def set_postfix(self, postfix: dict, refresh: bool = False) -> None:
        self.postfix = dict(postfix)

    def update(self, n: int) -> None:
        self.n += n
        if time.monotonic() - self._last >= self.every:
            self._write()

    def _write(self) -> None:
        self._last = time.monotonic()
        of = f"/{self.total}" if self.total is not None else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}{of}{extra}", file=self.file, flush=True)

    def close(self) -> None:
        self._write()


def bar(total: int | None, desc: str, enabled: bool = True, *, unit: str = "it", leave: bool = True,
        file=None) -> Progress:
    """A progress bar of ``total`` steps (None: unknown) titled ``desc``.

    Parameters
    ----------
    total : int or None
        Number of steps, for the percentage and the time left.
    desc : str
        Shown before the bar (``"ingest"``, ``"k-means++"``, ``"k-means"``).
    enabled : bool
        False draws nothing (``verbose=0``): the returned object ignores every call.
    unit : str
        Name of one step (``"img"``, ``"centre"``, ``"it"``).
    leave : bool
        Keep the finished bar on screen.
    file : file object, optional
        Where to draw (default ``sys.stderr``). A bar on a stream that is not a
        terminal stays silent, except in Jupyter, where it is a widget.

    Returns
    -------
    Progress
        ``update(n=1, **postfix)``, ``close()``, usable as a context manager.
    """
    if not enabled:
        return Progress()
    file = sys.stderr if file is None else file
    if _tqdm is None:
        return Progress(_Lines(total, desc, file))
    # disable=None: tqdm turns itself off on a stream that is not a terminal (but not in Jupyter)
    return Progress(_tqdm(total=total, desc=desc, unit=unit, leave=leave, file=file, disable=None,
                          dynamic_ncols=True))
