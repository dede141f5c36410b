"""Job specs: a YAML file naming what to run (the options of ``daskmeans run``) and where runs go."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import config, params
from ..errors import InputError
from ..run import Settings
from .schedule import cron_fields

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_SCHEDULE = "0 2 * * *"
DEFAULT_KEEP = 10

#: Settings a spec may not set: a job decides them itself.
_NOT_IN_SPEC = {"out", "overwrite", "resume", "checkpoint"}
#: Keys of a spec that are not run options.
_JOB_KEYS = {"name", "description", "root", "keep", "schedule", "render"}
_RENDER_KEYS = {"kubernetes", "slurm", "systemd"}
#: Characters that would start a new line (or worse) in rendered crontabs, units and scripts.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class JobSpec:
    """A validated job spec.

    Attributes
    ----------
    name : str
        The job's name: the folder under ``root`` and the lock's scope.
    path : Path
        The spec file (absolute).
    settings : daskmeans.run.Settings
        The run's settings, paths resolved against the spec's folder.
    root : Path
        Output root (absolute); runs go to ``root / name / run_id``.
    keep : int
        Finished runs to keep (the newest successful one is always kept).
    schedule : str
        Cron expression (5 fields or ``@daily``...), for the renderers.
    raw : dict
        The spec as written.
    """

    name: str
    path: Path
    settings: object
    root: Path
    keep: int = DEFAULT_KEEP
    schedule: str = DEFAULT_SCHEDULE
    description: str = ""
    render: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    @property
    def job_dir(self) -> Path:
        return self.root / self.name

    @property
    def checkpoint(self) -> Path:
        return self.job_dir / ".checkpoint.npz"

    @property
    def lock_path(self) -> Path:
        return self.job_dir / ".lock"


def _settings_fields() -> dict:
    return {f.name: f for f in fields(Settings) if f.name not in _NOT_IN_SPEC}


def _coerce(spec_path: Path, key: str, value):
    """A spec value as the Settings field wants it (YAML reads 1e-4 as a string)."""
    try:
        return params.coerce(key.replace("-", "_"), value, source="spec")
    except InputError as e:
        raise InputError(f"job spec {spec_path}: {e}") from None


def _resolve_path(base: Path, value: str) -> str:
    p = Path(os.path.expandvars(value)).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _check_text(path: Path, raw: dict) -> None:
    """Refuse newlines and control characters anywhere in a spec (and its path): rendered into a
    crontab, a systemd unit or a batch script they would add lines of their own."""
    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(k, where)
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v, where)
        elif isinstance(value, str) and CONTROL_CHARS.search(value):
            shown = repr(str(path)) if CONTROL_CHARS.search(str(path)) else path
            raise InputError(f"job spec {shown}: {where or 'a key'} holds a newline or control character "
                             f"({value[:40]!r}); write it on one line")

    walk(str(path), "its file name")
    walk(raw, "")


def load_spec(path) -> JobSpec:
    """Read and validate a job spec; :class:`InputError` names the file, the key and the fix."""
    path = Path(path).expanduser().absolute()
    raw = config.read_yaml_mapping(path, "job spec", "; pass the path of a job spec such as jobs/notebook-2000.yaml",
                                   "k: 10, subset: 2000, ...")
    _check_text(path, raw)
    sfields = _settings_fields()
    allowed = {k.replace("_", "-") for k in sfields} | _JOB_KEYS
    unknown = sorted(k for k in raw if str(k) not in allowed)
    if unknown:
        raise InputError(f"job spec {path}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    base = path.parent
    name = str(raw.get("name") or path.stem.split(".")[0])
    if not NAME.match(name):
        raise InputError(f"job spec {path}: name {name!r} may hold only letters, digits, '.', '_' and '-'")
    kwargs = {}
    for key, value in raw.items():
        attr = str(key).replace("-", "_")
        if attr in sfields:
            kwargs[attr] = _coerce(path, str(key), value)
    if kwargs.get("data") and kwargs["data"] != "keras":
        kwargs["data"] = _resolve_path(base, kwargs["data"])
        if not Path(kwargs["data"]).exists():
            raise InputError(f"job spec {path}: data {raw['data']} -> {kwargs['data']}: no such file or folder "
                             f"(relative paths are relative to the spec's folder {base})")
    init = kwargs.get("init")
    if isinstance(init, str) and init not in params.INIT_METHODS:  # a .npy file or an earlier run's folder
        kwargs["init"] = _resolve_path(base, init)
    root = raw.get("root")
    if not root or not isinstance(root, str):
        raise InputError(f"job spec {path}: root (the output root folder, e.g. root: ../runs/jobs) is required")
    keep = raw.get("keep", DEFAULT_KEEP)
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise InputError(f"job spec {path}: keep {keep!r} must be a whole number >= 1 (finished runs to keep)")
    schedule = str(raw.get("schedule") or DEFAULT_SCHEDULE)
    cron_fields(schedule, path)
    render = raw.get("render") or {}
    if not isinstance(render, dict) or set(render) - _RENDER_KEYS:
        raise InputError(f"job spec {path}: render must be a mapping with keys among {', '.join(sorted(_RENDER_KEYS))}")
    settings = Settings(**kwargs)
    try:
        settings.validate()
    except InputError as e:
        raise InputError(f"job spec {path}: {e}") from None
    return JobSpec(name=name, path=path, settings=settings, root=Path(_resolve_path(base, root)), keep=keep,
                   schedule=schedule, description=str(raw.get("description") or ""), render=render, raw=raw)
