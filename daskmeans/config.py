"""daskmeans settings through :mod:`dask.config` (key ``daskmeans``).

The packaged ``daskmeans.yaml`` holds every default with a comment; it is merged
below the user's dask config files and ``DASK_*`` environment variables, so
``DASK_DASKMEANS__CHUNK_SIZE=2000`` works as dask users expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.config
import yaml

from .errors import InputError

_fn = Path(__file__).with_name("daskmeans.yaml")
with open(_fn) as f:
    _defaults = yaml.safe_load(f)

dask.config.update_defaults(_defaults)


def get(key: str, default=None):
    """``dask.config.get("daskmeans." + key)``."""
    return dask.config.get(f"daskmeans.{key}", default=default)


def cache_dir() -> Path:
    """The cache folder: config ``daskmeans.cache-dir``, ``$DASKMEANS_CACHE``,
    ``$XDG_CACHE_HOME/daskmeans`` or ``~/.cache/daskmeans`` (first set wins)."""
    configured = get("cache-dir")
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("DASKMEANS_CACHE"):
        return Path(os.environ["DASKMEANS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "daskmeans"


def read_yaml_mapping(path, what: str, missing_fix: str, example: str) -> dict:
    """A YAML file that must hold a mapping, read safely; :class:`InputError` names
    ``what`` and the file on any problem (job specs, cluster.yaml)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(f"{what} {path}: no such file{missing_fix}") from None
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{what} {path}: not readable YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{what} {path}: expected a mapping at the top ({example})")
    return data
