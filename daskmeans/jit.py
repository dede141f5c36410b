"""Compiling the numba kernels where any user can run them.

``numba.njit(cache=True)`` raises ``RuntimeError: cannot cache function ...: no
locator available`` at import when neither the package folder (a read-only
install) nor the user's cache folder (an unwritable ``HOME``: services,
containers, Dask workers under a service account) can be written. daskmeans
never lets that stop an import. The compiled code is cached in the first of
these that can be written, chosen once per process:

1. numba's own choice: ``NUMBA_CACHE_DIR`` when set, else ``__pycache__`` beside
   the package, else numba's per-user cache folder;
2. ``numba/`` inside daskmeans's cache folder (:func:`daskmeans.config.cache_dir`:
   ``daskmeans.cache-dir``, ``$DASKMEANS_CACHE``, ``$XDG_CACHE_HOME/daskmeans``,
   ``~/.cache/daskmeans``);
3. ``daskmeans-numba-<uid>`` in the system's temporary folder (created mode 0700,
   used only when this user owns it); 2 and 3 are :func:`daskmeans.userdirs.fallback_dirs`;
4. no cache: the kernels are compiled in memory at first use (a few seconds per
   process), and one INFO line on the ``daskmeans`` logger says so.

:data:`CACHE` records the outcome (``doctor`` prints it).
"""

from __future__ import annotations

import logging
import os

from .userdirs import fallback_dirs, writable_dir

logger = logging.getLogger("daskmeans")

try:  # a declared dependency; without it the array-API code path runs instead
    import numba
except ImportError:  # pragma: no cover - only where numba is missing
    numba = None

AVAILABLE = numba is not None

#: Where compiled kernels are cached: ``{"where": "numba" | "daskmeans-cache" |
#: "temp" | "none", "path": str | None}`` (filled by the first decorated kernel).
CACHE: dict = {}


def _compile_cached(decorator, fn, cache_dir: str | None):
    """``decorator(fn)`` with numba's cache folder set to ``cache_dir`` while the
    dispatcher picks its cache locator (None: numba's own configuration)."""
    if cache_dir is None:
        return decorator(fn)
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = cache_dir  # read when the locator is made, i.e. now
    try:
        return decorator(fn)
    finally:
        numba.config.CACHE_DIR = saved


def _cache_path(dispatcher) -> str | None:
    """The folder numba's cache locator picked for ``dispatcher``."""
    return getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)


def njit(**options):
    """``numba.njit(cache=True, **options)`` that never fails for want of a writable cache."""

    def wrap(fn):
        cached = numba.njit(cache=True, **options)
        if CACHE.get("where") == "none":
            return numba.njit(cache=False, **options)(fn)
        if CACHE:  # the choice made for the first kernel, unless that folder has gone since
            try:
                return _compile_cached(cached, fn, CACHE["path"] if CACHE["where"] != "numba" else None)
            except RuntimeError as e:
                if "cannot cache" not in str(e):
                    raise
        try:
            out = cached(fn)
            CACHE.update(where="numba", path=_cache_path(out))
            return out
        except RuntimeError as e:
            if "cannot cache" not in str(e):
                raise
        for where, path, private in fallback_dirs("numba"):
            if writable_dir(path, private):
                try:
                    out = _compile_cached(cached, fn, str(path))
                except RuntimeError as e:
                    if "cannot cache" not in str(e):
                        raise
                    continue
                CACHE.update(where=where, path=str(path))
                return out
        CACHE.update(where="none", path=None)
        logger.info("daskmeans: no writable folder for compiled kernels (package, NUMBA_CACHE_DIR, "
                    "daskmeans cache, temp); compiling in memory at first use. Set NUMBA_CACHE_DIR "
                    "or DASKMEANS_CACHE to a writable folder to keep them between runs")
        return numba.njit(cache=False, **options)(fn)

    return wrap


#: Vector instruction sets that change how the compiled sums are vectorised (hence their last bits).
SIMD = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "neon", "sve", "sve2", "altivec", "vsx")


def target() -> dict:
    """What this process compiles the kernels for: the CPU name, the triple and its features
    (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` override the host's), and which of :data:`SIMD`."""
    import llvmlite.binding as ll  # numba's own dependency: there whenever numba is

    name = numba.config.CPU_NAME or ll.get_host_cpu_name()
    if numba.config.CPU_FEATURES is not None:
        features = sorted(f[1:] for f in numba.config.CPU_FEATURES.split(",") if f.startswith("+"))
    else:
        features = sorted(k for k, on in ll.get_host_cpu_features().items() if on)
    return {"name": name, "triple": ll.get_process_triple(), "features": features,
            "simd": [f for f in SIMD if f in features]}
