"""Array backends: the namespace comes from the data, never from flags.

NumPy and CuPy blocks (and any array-API namespace, e.g. ``array_api_strict`` in
the tests) go through the same kernels: each kernel starts with
``xp = namespace(block)`` and then uses only ``xp.*``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

try:  # array-api-compat gives NumPy/CuPy a standard-conforming namespace
    from array_api_compat import array_namespace as _array_namespace
except ImportError:  # pragma: no cover - it is a dependency, but stay usable without it
    _array_namespace = None


def namespace(*arrays):
    """The array-API namespace of ``arrays`` (NumPy, CuPy, array-api-strict, ...)."""
    arrays = [a for a in arrays if a is not None and not isinstance(a, (int, float))]
    if _array_namespace is not None:
        return _array_namespace(*arrays)
    mod = type(arrays[0]).__module__.split(".")[0]
    if mod == "cupy":  # pragma: no cover - GPU only
        import cupy  # optional dependency (the gpu extra)

        return cupy
    return np


def to_numpy(x) -> np.ndarray:
    """Copy ``x`` to host memory as a NumPy array (no-op for NumPy)."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":  # pragma: no cover - GPU only
        return x.get()
    if hasattr(x, "__dlpack__"):
        try:
            return np.from_dlpack(x)
        except (TypeError, RuntimeError, BufferError):
            pass
    return np.asarray(x)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy  # optional dependency (the gpu extra)
    except Exception:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def resolve(backend: str) -> str:
    """Turn ``auto|numpy|cupy`` into ``numpy`` or ``cupy`` (auto: CuPy where a GPU exists)."""
    if backend == "auto":
        return "cupy" if cupy_available() else "numpy"
    if backend == "numpy":
        return "numpy"
    if backend == "cupy":
        if not cupy_available():
            raise InputError(
                "--backend cupy: CuPy with a CUDA device is not available here; "
                "install it with pip install 'daskmeans[gpu]' or use --backend numpy"
            )
        return "cupy"
    raise InputError(f"--backend {backend!r} is not one of auto, numpy, cupy")


def to_backend(darr, backend: str):
    """Move the blocks of a dask array to ``backend`` ('numpy' or 'cupy'), lazily."""
    if backend == "numpy":
        return darr
    import cupy  # pragma: no cover - optional dependency (the gpu extra), GPU only

    return darr.map_blocks(cupy.asarray, meta=cupy.empty((0,) * darr.ndim, dtype=darr.dtype))
