"""Mini-batch states on disk: a fit's checkpoint, a saved :class:`~daskmeans.MiniBatchKMeans`.

A state (:meth:`daskmeans.MiniBatchKMeans.get_state`) is what continues a
mini-batch fit exactly: the step, the centres and their counts, the convergence
monitors, the generator's key (the batches are drawn from it alone, so no
random generator state is kept) and the history. It is written to one ``.npz``
file atomically (a temporary sibling renamed over the old file) with a
fingerprint of the settings that shape the result, like the full-batch
checkpoints of :mod:`daskmeans.checkpoint`, whose helpers it uses.

:class:`RunCheckpoint` is the command line's (``daskmeans run --mini-batch``):
it saves at most every :data:`INTERVAL` seconds (a step takes milliseconds),
and always after the last step.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
import zipfile
from pathlib import Path

import numpy as np

from . import checkpoint
from .atomic import atomic_file
from .errors import InputError

logger = logging.getLogger("daskmeans")

#: The format written; full-batch checkpoints (format 1) are refused by name, and they refuse these.
FORMAT = "minibatch-1"
#: Seconds between two saves of a run's checkpoint.
INTERVAL = 10.0
_HISTORY = ("step", "batch_inertia", "ewa_inertia", "reassigned", "seconds")
_INTS = ("step", "since_reassign", "no_improvement", "key", "batch_size", "init_size", "n_init", "n_samples",
         "n_features")


def fingerprint(settings) -> dict:
    """The result-shaping settings of a mini-batch run: the full-batch ones and ``batch_size``."""
    return checkpoint.fingerprint(settings, mini_batch=True, batch_size=settings.batch_size)


def save(path, state: dict, *, fingerprint: dict | None = None, model: dict | None = None) -> Path:
    """Write ``state`` to ``path`` atomically; ``model``: a saved model's parameters (JSON-able)."""
    path = Path(path)
    history = state.get("history") or []
    arrays = {key: np.asarray(state[key], dtype=np.float64) for key in ("centers", "counts", "init")}
    for key in _HISTORY:
        arrays["h_" + key] = np.asarray([np.nan if h.get(key) is None else h[key] for h in history], dtype=np.float64)
    meta = {key: state[key] for key in _INTS}
    meta.update(format=FORMAT, key=str(int(state["key"])), converged=bool(state["converged"]),
                ewa=state["ewa"], ewa_min=state["ewa_min"], fingerprint=fingerprint or {}, model=model)
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(buf.getbuffer())
    return path


def _read(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile, AttributeError) as e:
        raise ValueError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"format {got!r}, expected {FORMAT!r} (a mini-batch state)")
    state = dict(meta)
    state.update({key: data.get(key) for key in ("centers", "counts", "init")})
    hist = [data.get("h_" + key) for key in _HISTORY]
    if any(h is None or h.ndim != 1 or len(h) != len(hist[0]) for h in hist):
        raise ValueError("its history is damaged")
    state["history"] = [{"step": int(s), "batch_inertia": float(b), "ewa_inertia": None if math.isnan(e) else float(e),
                         "reassigned": int(r), "seconds": float(t)} for s, b, e, r, t in zip(*hist)]
    try:
        state["key"] = int(meta.get("key"))
    except (TypeError, ValueError):
        raise ValueError(f"key {meta.get('key')!r} is not a whole number") from None
    return state


def check_state(state: dict) -> dict:
    """``state`` with every field checked (types, shapes, finite values); ``InputError`` names the first bad one."""
    if not isinstance(state, dict):
        raise InputError(f"the resume state is a {type(state).__name__}, not a dict; pass what on_iteration received "
                         "or minibatch_checkpoint.load returned")
    try:
        return _checked(state)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"the resume state is damaged ({e}); fit afresh") from None


def _checked(state: dict) -> dict:
    out = dict(state)
    for key in _INTS:
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{key} {v!r} is not a whole number >= 0")
        out[key] = int(v)
    c = np.asarray(state["centers"], dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != out["n_features"] or not np.all(np.isfinite(c)):
        raise ValueError(f"centers of shape {c.shape} are not finite ({c.shape[0]}, {out['n_features']}) centres")
    for key, shape in (("init", c.shape), ("counts", (c.shape[0],))):
        a = np.asarray(state[key], dtype=np.float64)
        if a.shape != shape or not np.all(np.isfinite(a)):
            raise ValueError(f"{key} is not a finite array of shape {shape}")
        out[key] = a
    if np.any(out["counts"] < 0):
        raise ValueError("counts holds negative values")
    for key in ("ewa", "ewa_min"):
        v = state[key]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"{key} {v!r} is not a finite number")
    if not isinstance(state["history"], list) or len(state["history"]) > out["step"]:
        raise ValueError("its history is longer than its steps")
    out.update(centers=c, converged=bool(state["converged"]))
    return out


def load(path, *, fingerprint: dict | None = None) -> dict | None:
    """The state saved at ``path`` (None if there is no file); one-line ``InputError`` for a bad one,
    or for one written with other settings (``fingerprint`` given)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path}: is a folder; pass a file name (e.g. run.ckpt.npz)")
    if not path.exists():
        return None
    try:
        state = _read(path)
    except ValueError as e:
        raise InputError(f"checkpoint {path}: unreadable ({e}); delete it to start the run over") from None
    if fingerprint is not None:
        diff = checkpoint.mismatch(state.get("fingerprint") or {}, fingerprint)
        if diff:
            raise InputError(f"checkpoint {path} was written by a run with other settings ({diff}); rerun with the "
                             "same settings, or delete it (or pass another --checkpoint) to start over")
    try:
        return _checked(state)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"checkpoint {path}: damaged ({e}); delete it to start the run over") from None


def is_checkpoint(path) -> bool:
    """Is ``path`` a mini-batch state daskmeans wrote (so that a run may replace it)?"""
    try:
        _read(Path(path))
    except ValueError:
        return False
    return True


class RunCheckpoint:
    """Checkpointing of ``daskmeans run --mini-batch``: the interface of :class:`daskmeans.checkpoint.RunCheckpoint`.

    ``on_iteration`` saves the state at most every :data:`INTERVAL` seconds and
    after the fit's last step; ``resume`` is the saved state with ``--resume``.
    """

    def __init__(self, settings, out_final, *, on_iteration=None, resume=None):
        path = settings.checkpoint
        if isinstance(path, str) and path.lower() in ("", "none", "off"):
            path = None
        elif path is None:
            path = checkpoint.default_path(out_final)
        self.path = Path(path).expanduser().absolute() if path else None
        self.fingerprint = fingerprint(settings)
        self.resume = resume
        self.resumed_from = int(resume["step"]) if resume is not None else None
        self.rng = None
        self.last_step = None
        self._then = on_iteration
        self._saved_at = time.monotonic()
        if settings.resume and self.path is None:
            raise InputError("--resume needs a checkpoint; drop --checkpoint none")
        if self.path is not None and resume is None:
            self._open(settings.resume)
        self.on_iteration = self._save if self.path is not None else on_iteration

    def _open(self, resuming: bool) -> None:
        if resuming:
            state = load(self.path, fingerprint=self.fingerprint)
            if state is None:
                logger.info("no checkpoint at %s: starting from the beginning", self.path)
                return
            self.resume, self.resumed_from = state, state["step"]
            logger.info("resuming from %s after step %d%s", self.path, state["step"],
                        " (converged)" if state["converged"] else "")
        elif self.path.is_dir():
            raise InputError(f"--checkpoint {self.path}: is a folder; pass a file name (e.g. run.ckpt.npz)")
        elif self.path.exists() or self.path.is_symlink():
            if self.path.is_symlink() or not (is_checkpoint(self.path) or checkpoint.is_checkpoint(self.path)):
                raise InputError(f"--checkpoint {self.path}: exists and is not a daskmeans checkpoint, so the run "
                                 "will not overwrite it; pass another --checkpoint")
            logger.warning("replacing the checkpoint %s of an earlier, unfinished run (pass --resume to continue "
                           "it instead)", self.path)

    def _save(self, state: dict) -> None:
        last = state["converged"] or state["step"] >= (state.get("n_steps") or math.inf)
        if last or time.monotonic() - self._saved_at >= INTERVAL:
            save(self.path, state, fingerprint=self.fingerprint)
            self._saved_at = time.monotonic()
            self.last_step = int(state["step"])
        if self._then is not None:
            self._then(state)

    def check_shape(self, k: int, d: int) -> None:
        """Refuse a resume state whose centres are not (k, d): it belongs to other data."""
        if self.resume is not None and np.shape(self.resume["centers"]) != (k, d):
            raise InputError(f"checkpoint {self.path}: centres of shape {np.shape(self.resume['centers'])}, expected "
                             f"({k}, {d}) for this data; delete it to start the run over")

    def explain(self, error):
        """``error`` with where the checkpoint stands."""
        if self.path is None or not self.path.exists():
            return error
        step = self.last_step or self.resumed_from
        note = (f"; the checkpoint {self.path}" + (f" (step {step})" if step else "")
                + " is intact: rerun with --resume (a job: run it again)")
        return type(error)(f"{error}{note}")

    def done(self) -> None:
        """The run's outputs are in place: the checkpoint is no longer needed."""
        if self.path is not None:
            checkpoint.remove(self.path)
