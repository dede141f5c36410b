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

import contextlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_file
from .errors import InputError

logger = logging.getLogger("daskmeans")

FORMAT = 1
#: Settings that change the result; a checkpoint only resumes a run with the same values.
#: Checkpoints claiming more iterations than this are damaged (max_iter is far below).
_MAX_ITERATION = 10**7
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
    if getattr(settings, "features", "raw") not in (None, "raw"):  # features change what k-means sees
        fp.update(features=settings.features, feature_options=settings.feature_options())
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
        ``history`` (list of dict), ``converged``, ``strict``; or, for restarts
        sharing passes, ``iteration`` and ``runs``: a list of such states.
    fingerprint : dict, optional
        See :func:`fingerprint`.
    rng : numpy.random.RandomState, optional
        The generator of the fit; its state is stored too.
    """
    path = Path(path)
    runs = state.get("runs")
    one = state if runs is None else runs[0]
    arrays = {key: np.asarray(one[key] if runs is None else np.stack([r[key] for r in runs]), dtype=np.float64)
              for key in ("centers", "centers_prev", "init")}
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
    if runs is not None:  # restarts sharing passes: (runs, k, d) arrays, each run's own progress
        meta.update(converged=all(r.get("converged", False) for r in runs), history=[],
                    runs=[{"iteration": int(r["iteration"]), "converged": bool(r.get("converged", False)),
                           "strict": bool(r.get("strict", False)), "history": r.get("history", [])} for r in runs])
    arrays["meta"] = np.frombuffer(json.dumps(meta, default=float).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        f.write(buf.getbuffer())
    _fsync_dir(path.parent)
    return path


class _Corrupt(Exception):
    pass


def _read(path: Path) -> tuple[dict, dict]:
    """The arrays and the metadata of a checkpoint file; :class:`_Corrupt` for anything else."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise _Corrupt("not an .npz archive")
            data = {k: z[k] for k in z.files}
        meta = json.loads(bytes(data.pop("meta")).decode())
    except _Corrupt:
        raise
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile, AttributeError) as e:
        raise _Corrupt(_first_line(e)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else None
        raise _Corrupt(f"format {got!r}, expected {FORMAT}")
    return data, meta


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check_progress(it, history) -> None:
    if isinstance(it, bool) or not isinstance(it, int) or not isinstance(history, list):
        raise _Corrupt(f"iteration {it!r} is not a whole number")
    if not (1 <= it <= _MAX_ITERATION and it == len(history)):
        raise _Corrupt(f"iteration {it} does not match its history of {len(history)} iterations")


def _validated(data: dict, meta: dict, fingerprint: dict | None) -> dict:
    """The state, every field checked: :class:`_Corrupt` names the first that is wrong."""
    runs = meta.get("runs")
    if runs is not None and (not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs)):
        raise _Corrupt("its list of runs is damaged")
    ndim = 2 if runs is None else 3
    for key in ("centers", "centers_prev", "init"):
        arr = data.get(key)
        if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype.kind != "f" \
                or arr.shape != data["centers"].shape:
            raise _Corrupt(f"{key} is not a {ndim}-D float array like the centres")
        if not np.all(np.isfinite(arr)):
            raise _Corrupt(f"{key} holds NaN or infinite values")
    if runs is not None and data["centers"].shape[0] != len(runs):
        raise _Corrupt(f"centres for {data['centers'].shape[0]} runs but progress for {len(runs)}")
    k = (fingerprint or {}).get("k")
    if k is not None and data["centers"].shape[-2] != k:
        raise _Corrupt(f"{data['centers'].shape[-2]} centres, expected {k}")
    it, history = meta.get("iteration"), meta.get("history", [])
    if runs is None:
        _check_progress(it, history)
    else:
        for r in runs:
            _check_progress(r.get("iteration"), r.get("history"))
        if it != max(r["iteration"] for r in runs):
            raise _Corrupt(f"iteration {it!r} is not the furthest run's")
    rng_state = None
    if "rng_keys" in data and "rng" in meta:
        r, keys = meta["rng"], data["rng_keys"]
        if keys.shape != (624,) or keys.dtype != np.uint32 or not isinstance(r, dict) \
                or not isinstance(r.get("pos"), int) or not 0 <= r["pos"] <= 624:
            raise _Corrupt("the random generator's state is damaged")
        rng_state = (str(r.get("bit_generator")), keys, r["pos"], int(r.get("has_gauss", 0)),
                     float(r.get("cached_gaussian", 0.0)))
    common = {"iteration": it, "converged": bool(meta.get("converged")), "rng_state": rng_state,
              "fingerprint": meta.get("fingerprint", {})}
    if runs is not None:
        return {**common, "runs": [
            {"iteration": r["iteration"], "centers": data["centers"][j], "centers_prev": data["centers_prev"][j],
             "init": data["init"][j], "history": r["history"], "converged": bool(r.get("converged")),
             "strict": bool(r.get("strict"))} for j, r in enumerate(runs)]}
    return {**common, "centers": data["centers"], "centers_prev": data["centers_prev"], "init": data["init"],
            "history": history, "strict": bool(meta.get("strict"))}


def load(path, *, fingerprint: dict | None = None) -> dict | None:
    """The state saved at ``path``, ready for ``KMeans.fit(resume=...)``; None if there is none.

    Adds ``rng_state`` (a legacy ``RandomState`` state tuple, or None) and
    ``fingerprint``. Raises :class:`InputError` (one line) for a file that is not
    a readable, consistent checkpoint, or one written by a run with other
    settings (``fingerprint`` given).
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path}: is a folder; pass a file name with --checkpoint (e.g. run.ckpt.npz)")
    if not path.exists():
        return None
    try:
        data, meta = _read(path)
    except _Corrupt as e:
        raise InputError(f"checkpoint {path}: unreadable ({e}); delete it to start the run over") from None
    if fingerprint is not None:
        diff = mismatch(meta.get("fingerprint", {}), fingerprint)
        if diff:
            raise InputError(
                f"checkpoint {path} was written by a run with other settings ({diff}); "
                f"rerun with the same settings, or delete it (or pass another --checkpoint) to start over"
            )
    try:
        return _validated(data, meta, fingerprint)
    except _Corrupt as e:
        raise InputError(f"checkpoint {path}: damaged ({e}); delete it to start the run over") from None


def is_checkpoint(path) -> bool:
    """Is ``path`` a file a daskmeans run wrote as its checkpoint (so it may be replaced)?"""
    try:
        _read(Path(path))
    except _Corrupt:
        return False
    return True


def mismatch(saved: dict, wanted: dict) -> str:
    """``"k 5 (checkpoint) vs 10"`` for the settings that differ; empty if none."""
    keys = sorted(set(saved) | set(wanted))
    parts = [f"{k} {saved.get(k)!r} (checkpoint) vs {wanted.get(k)!r}" for k in keys if saved.get(k) != wanted.get(k)]
    return ", ".join(parts)


def remove(path) -> None:
    """Delete the checkpoint (after the run's outputs are safely in place)."""
    with contextlib.suppress(OSError):
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
        if settings.resume and self.path is None:
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
            elif self.path.is_dir():
                raise InputError(f"--checkpoint {self.path}: is a folder; pass a file name (e.g. run.ckpt.npz)")
            elif self.path.exists() or self.path.is_symlink():
                if self.path.is_symlink() or not is_checkpoint(self.path):
                    raise InputError(f"--checkpoint {self.path}: exists and is not a daskmeans checkpoint, so "
                                     f"the run will not overwrite it; pass another --checkpoint")
                logger.warning("replacing the checkpoint %s of an earlier, unfinished run "
                               "(pass --resume to continue it instead)", self.path)
        if self.path is not None:
            logger.info("checkpoint after every iteration: %s", self.path)
            self.on_iteration = Checkpointer(self.path, fingerprint=self.fingerprint, rng=self.rng, then=on_iteration)
        else:
            self.on_iteration = on_iteration

    def check_shape(self, k: int, d: int) -> None:
        """Refuse a resume state whose centres are not (k, d): it belongs to other data."""
        if self.resume is None:
            return
        runs = self.resume.get("runs") or [self.resume]
        shape = next((np.shape(r["centers"]) for r in runs if np.shape(r["centers"]) != (k, d)), (k, d))
        if shape != (k, d):
            raise InputError(f"checkpoint {self.path}: centres of shape {shape}, expected ({k}, {d}) for this data; "
                             f"delete it to start the run over")

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
