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
import shutil
import uuid
from pathlib import Path

import numpy as np

from .errors import InputError


def default_out(root: str | os.PathLike = "runs") -> Path:
    """A new timestamped folder under ``root``: ``runs/20261128-061425``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / stamp
    out, n = base, 1
    while out.exists():
        n += 1
        out = Path(f"{base}-{n}")
    return out


class OutputDir:
    """Staging folder for one run's outputs; :meth:`commit` moves it into place.

    Creating it checks, before any long computation, that the destination can
    be written.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        self.final = Path(out).expanduser().absolute()
        if self.final.exists() and not self.final.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder; pass another --out")
        if self.final.is_dir() and any(self.final.iterdir()) and not overwrite:
            raise InputError(f"--out {out}: folder exists and is not empty; pass another --out or --overwrite")
        self.overwrite = overwrite
        parent = self.final.parent
        # the outermost folder this run creates: removed again if the run fails
        self._created = next((a for a in [parent, *parent.parents][::-1] if not a.exists()), None)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            _remove_dead_staging(parent, self.final.name)
            self.path = parent / f".{self.final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.path.mkdir()
        except OSError as e:
            raise InputError(
                f"--out {out}: cannot write there ({e.strerror or e}); pass a writable --out folder"
            ) from None

    def write_json(self, name: str, obj) -> Path:
        p = self.path / name
        with open(p, "w") as f:
            json.dump(_jsonable(obj), f, indent=2, allow_nan=False)
            f.write("\n")
        return p

    def write_npy(self, name: str, arr) -> Path:
        p = self.path / name
        np.save(p, arr)
        return p

    def commit(self) -> Path:
        """Rename the staging folder to its final name (replacing it with --overwrite)."""
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _remove_dead_staging(parent: Path, name: str) -> None:
    """Delete staging folders of ``name`` left by runs that were killed (their pid is gone)."""
    for p in parent.glob(f".{name}.tmp-*-*"):
        try:
            pid = int(p.name[len(f".{name}.tmp-"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _jsonable(obj):
    """NumPy scalars/arrays to Python; NaN/inf to None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
