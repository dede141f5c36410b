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
