"""Checkpoints: the state of a fit after every Lloyd iteration, written atomically.

One ``.npz`` file per run holds what :meth:`daskmeans.KMeans.fit` needs to
continue exactly (``resume=``): the iteration, the new centres and the centres
used for that iteration's assignment, the initial centres, the history, the
convergence flags, and the state of the random generator; plus a fingerprint
of the settings that shape the result, so a checkpoint is never continued by a
run that would compute something else.

The file is written to a temporary name in the same folder, flushed to disk,
then renamed over the old one (:func:`os.replace`): a process killed at any
moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np

from .errors import InputError

logger = logging.getLogger("daskmeans")

FORMAT = 1
#: Settings that change the result; a checkpoint only resumes a run with the same values.
FINGERPRINT_KEYS = ("data", "split", "subset", "k", "init", "n_init", "seed", "tol", "metric", "chunk_size", "backend")


def fingerprint(settings, **extra) -> dict:
    """The result-shaping settings of ``settings`` (a :class:`~daskmeans.run.Settings`), JSON-able."""
    fp = {}
    for key in FINGERPRINT_KEYS:
        v = getattr(settings, key, None)
        if key in ("data", "init") and isinstance(v, str) and (key == "data" or v.endswith(".npy")):
            p = Path(v).expanduser()
            v = str(p.resolve()) if p.exists() else v
        fp[key] = v
    fp.update(extra)
    return json.loads(json.dumps(fp, default=str))


def _rng_arrays(rng) -> tuple[dict, dict]:
    """A legacy ``RandomState``'s state as (arrays, json) parts; empty when ``rng`` is None."""
    if rng is None:
        return {}, {}
    name, keys, pos, has_gauss, gauss = rng.get_state(legacy=True)
    return {"rng_keys": np.asarray(keys, dtype=np.uint32)}, {
        "rng": {"bit_generator": str(name), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    }


def save(path, state: dict, *, fingerprint: dict | None = None, rng=None) -> Path:
    """Write ``state`` (as passed to ``on_iteration``) to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        The checkpoint file (``.npz``).
    state : dict
        ``iteration``, ``centers`` (k, d), ``centers_prev`` (k, d), ``init`` (k, d),
        ``history`` (list of dict), ``converged``, ``strict``.
    fingerprint : dict, optional
        See :func:`fingerprint`.
    rng : numpy.random.RandomState, optional
        The generator of the fit; its state is stored too.
    """
    path = Path(path)
    arrays = {
        "centers": np.asarray(state["centers"], dtype=np.float64),
        "centers_prev": np.asarray(state["centers_prev"], dtype=np.float64),
        "init": np.asarray(state["init"], dtype=np.float64),
    }
    rng_arrays, rng_meta = _rng_arrays(rng)
    arrays.update(rng_arrays)
    meta = {
        "format": FORMAT,
        "iteration": int(state["iteration"]),
        "converged": bool(state.get("converged", False)),
        "strict": bool(state.get("strict", False)),
        "history": state.get("history", []),
        "fingerprint": fingerprint or {},
        **rng_meta,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def load(path, *, fingerprint: dict | None = None) -> dict | None:
    """The state saved at ``path``, ready for ``KMeans.fit(resume=...)``; None if there is none.

    Adds ``rng_state`` (a legacy ``RandomState`` state tuple, or None) and
    ``fingerprint``. Raises :class:`InputError` for an unreadable file or one
    written by a run with other settings (``fingerprint`` given).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise InputError(f"checkpoint {path}: unreadable ({e}); delete it to start the run over") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT}; delete it to start over")
    if fingerprint is not None:
        diff = mismatch(meta.get("fingerprint", {}), fingerprint)
        if diff:
            raise InputError(
                f"checkpoint {path} was written by a run with other settings ({diff}); "
                f"rerun with the same settings, or delete it (or pass another --checkpoint) to start over"
            )
    rng_state = None
    if "rng_keys" in data and "rng" in meta:
        r = meta["rng"]
        rng_state = (r["bit_generator"], data["rng_keys"], r["pos"], r["has_gauss"], r["cached_gaussian"])
    return {
        "iteration": int(meta["iteration"]),
        "centers": data["centers"],
        "centers_prev": data["centers_prev"],
        "init": data["init"],
        "history": meta.get("history", []),
        "converged": bool(meta.get("converged")),
        "strict": bool(meta.get("strict")),
        "rng_state": rng_state,
        "fingerprint": meta.get("fingerprint", {}),
    }


def mismatch(saved: dict, wanted: dict) -> str:
    """``"k 5 (checkpoint) vs 10"`` for the settings that differ; empty if none."""
    keys = sorted(set(saved) | set(wanted))
    parts = [f"{k} {saved.get(k)!r} (checkpoint) vs {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k)]
    return ", ".join(parts)


def remove(path) -> None:
    """Delete the checkpoint (after the run's outputs are safely in place)."""
    with _suppress():
        Path(path).unlink()


def default_path(out) -> Path:
    """The checkpoint of the run writing ``out``: ``<parent>/.<name>.checkpoint.npz``."""
    out = Path(out).expanduser().absolute()
    return out.parent / f".{out.name}.checkpoint.npz"


class Checkpointer:
    """An ``on_iteration`` callback that saves every state, then calls ``then``."""

    def __init__(self, path, *, fingerprint: dict | None = None, rng=None, then=None):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.rng = rng
        self.then = then
        self.last_iteration = None

    def __call__(self, state: dict) -> None:
        save(self.path, state, fingerprint=self.fingerprint, rng=self.rng)
        self.last_iteration = int(state["iteration"])
        if self.then is not None:
            self.then(state)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)


class RunCheckpoint:
    """Checkpointing of one :func:`daskmeans.run.run`: where, what to resume, the RNG.

    Parameters
    ----------
    settings : Settings
        ``checkpoint`` (a path; ``None``: next to ``out_final``; ``"none"``: off),
        ``resume``, ``seed``, ``n_init`` and the fingerprinted settings.
    out_final : path-like
        The run's final output folder.
    on_iteration, resume :
        As given to :func:`~daskmeans.run.run`; an explicit ``resume`` state wins
        over the file.

    Attributes
    ----------
    rng : numpy.random.RandomState
        The fit's generator, restored from the checkpoint when resuming.
    on_iteration : callable or None
        Saves a checkpoint after every iteration, then calls the caller's callback.
    resume : dict or None
        The state to continue from.
    resumed_from : int or None
        Its iteration.
    """

    def __init__(self, settings, out_final, *, on_iteration=None, resume=None):
        self.rng = np.random.RandomState(settings.seed)
        path = settings.checkpoint
        if isinstance(path, str) and path.lower() in ("", "none", "off"):
            path = None
        elif path is None:
            path = default_path(out_final)
        self.path = Path(path).expanduser().absolute() if path else None
        self.fingerprint = fingerprint(settings)
        self.resume = resume
        self.resumed_from = int(resume["iteration"]) if resume is not None else None
        restarts = settings.n_init > 1 and not str(settings.init).endswith(".npy")
        if self.path is not None and restarts:
            logger.warning(
                "--n-init %d: a checkpoint cannot continue restarts exactly, so this run writes none%s",
                settings.n_init, " and starts over" if settings.resume else "",
            )
            self.path = None
        elif settings.resume and self.path is None:
            raise InputError("--resume needs a checkpoint; drop --checkpoint none")
        if self.path is not None and resume is None:
            if settings.resume:
                state = load(self.path, fingerprint=self.fingerprint)
                if state is None:
                    logger.info("no checkpoint at %s: starting from the beginning", self.path)
                else:
                    if state["rng_state"] is not None:
                        self.rng.set_state(state["rng_state"])
                    self.resume = state
                    self.resumed_from = state["iteration"]
                    logger.info("resuming from %s after iteration %d%s", self.path, state["iteration"],
                                " (converged)" if state["converged"] else "")
            elif self.path.exists():
                logger.warning("replacing the checkpoint %s of an earlier, unfinished run "
                               "(pass --resume to continue it instead)", self.path)
        if self.path is not None:
            logger.info("checkpoint after every iteration: %s", self.path)
            self.on_iteration = Checkpointer(self.path, fingerprint=self.fingerprint, rng=self.rng, then=on_iteration)
        else:
            self.on_iteration = on_iteration

    def explain(self, error):
        """``error`` (a :class:`~daskmeans.errors.DaskmeansError`) with where the checkpoint stands."""
        if self.path is None or not self.path.exists():
            return error
        it = getattr(self.on_iteration, "last_iteration", None) or self.resumed_from
        note = (f"; the checkpoint {self.path}" + (f" (iteration {it})" if it else "")
                + " is intact: rerun with --resume (a job: run it again)")
        return type(error)(f"{error}{note}")

    def done(self) -> None:
        """The run's outputs are in place: the checkpoint is no longer needed."""
        if self.path is not None:
            remove(self.path)
