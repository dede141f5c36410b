"""Output folders that appear complete or not at all.

A run writes into a hidden staging folder next to its destination and renames
it into place at the end, so a crashed or interrupted run never leaves a
half-written ``report.json``/``centroids.npy``/``labels.npy`` under the final
name.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import exchange, remove, sweep_stale, temporary_name
from .errors import InputError

#: Written into every run folder daskmeans makes: only a folder holding it may be replaced (--overwrite).
MARKER = ".daskmeans-run"
#: What the runs of daskmeans versions without the marker wrote; such a folder may be replaced too.
_LEGACY_OUTPUTS = ("report.json", "report.html", "centroids.npy", "status.json", "run.log")
_LEGACY_SUFFIXES = (".npy", ".png", ".json", ".html", ".log")


def default_out(root: str | os.PathLike = "runs") -> Path:
    """A new timestamped folder under ``root``: ``runs/20261128-061425``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    out, n = base, 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


def is_run_folder(path: Path) -> bool:
    """Did daskmeans write ``path``? (its marker, or the outputs of an older version and nothing else)"""
    if (path / MARKER).is_file():
        return True
    try:
        entries = list(path.iterdir())
        report = json.loads((path / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(report, dict) and "daskmeans_version" in report
            and all(e.is_file() and not e.is_symlink() and e.suffix in _LEGACY_SUFFIXES for e in entries))


def _within(a: Path, b: Path) -> bool:
    """``a`` is ``b`` or one of its parents."""
    return a == b or a in b.parents


def check_replaceable(final: Path, shown, overwrite: bool, protect=()) -> None:
    """Refuse an output folder whose replacement would lose anything but an earlier run.

    ``protect``: paths (the data, the initial centres) that must survive the run.
    """
    real = Path(os.path.realpath(final))
    for p in [Path.cwd(), *[Path(x).expanduser() for x in protect if x]]:
        if _within(real, Path(os.path.realpath(p))):
            what = "the current folder" if p == Path.cwd() else f"{p}"
            raise InputError(f"--out {shown}: holds {what}, which a run must never replace; pass another --out")
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise InputError(f"--out {shown}: exists and is not a folder; pass another --out")
    if not final.is_dir() or not any(final.iterdir()):
        return
    if not overwrite:
        raise InputError(f"--out {shown}: folder exists and is not empty; pass another --out or --overwrite")
    if not is_run_folder(final):
        raise InputError(f"--out {shown}: not a daskmeans run folder (no {MARKER}), so --overwrite will not "
                         f"replace it; pass another --out")


class OutputDir:
    """Staging folder for one run's outputs; :meth:`commit` moves it into place.

    Creating it checks, before any long computation, that the destination can
    be written and, with ``overwrite``, that it holds nothing but an earlier run.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False, protect=()):
        self.final = Path(out).expanduser().absolute()
        self.shown = out
        self.protect = tuple(protect)
        check_replaceable(self.final, out, overwrite, self.protect)
        self.overwrite = overwrite
        parent = self.final.parent
        # the outermost folder this run creates: removed again if the run fails
        self._created = next((a for a in [parent, *parent.parents][::-1] if not a.exists()), None)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(parent, self.final.name)
            self.path = temporary_name(self.final)
            self.path.mkdir()
            (self.path / MARKER).write_text(json.dumps({"daskmeans_version": __version__, "pid": os.getpid()}) + "\n")
        except OSError as e:
            raise InputError(
                f"--out {out}: cannot write there ({e.strerror or e}); pass a writable --out folder"
            ) from None

    def write_json(self, name: str, obj) -> Path:
        p = self.path / name
        with open(p, "w") as f:
            json.dump(jsonable(obj), f, indent=2, allow_nan=False)
            f.write("\n")
        return p

    def write_npy(self, name: str, arr) -> Path:
        p = self.path / name
        np.save(p, arr)
        return p

    def commit(self) -> Path:
        """Put the staging folder under its final name, replacing an earlier run in one step.

        With an earlier run there, the two folders are swapped atomically
        (``renameat2(RENAME_EXCHANGE)``) and the old one is removed; where the
        filesystem cannot swap, the old run is first renamed to a hidden name
        that :func:`~daskmeans.atomic.sweep_stale` removes, so a crash never
        leaves a mix of both.
        """
        check_replaceable(self.final, self.shown, self.overwrite, self.protect)  # nothing changed meanwhile
        if self.final.is_dir():
            if not exchange(self.path, self.final):
                old = temporary_name(self.final)
                os.rename(self.final, old)
                os.rename(self.path, self.final)
                self.path = old
            remove(self.path)  # now the earlier run
        else:
            os.rename(self.path, self.final)
        return self.final

    def abort(self) -> None:
        remove(self.path)
        if self._created is not None:
            # only folders left empty: never anything another run wrote meanwhile
            for folder in [self.path.parent, *self.path.parent.parents]:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == self._created:
                    break

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()
        return False


def jsonable(obj):
    """``obj`` as strict JSON can hold it: NumPy scalars and arrays to Python, NaN/inf to None, paths to str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
