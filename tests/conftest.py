"""Shared fixtures."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import dask
import pytest

#: The real CIFAR-10 images (an image-folder tarball), next to the repository.
REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-images.tar.gz"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path of ``../shared/data/cifar10-images.tar.gz``; skips the test if it is absent."""
    if not REAL_DATA.is_file():
        pytest.skip(f"real CIFAR-10 data not found at {REAL_DATA} (see ../shared/data/README.md)")
    return REAL_DATA


@pytest.fixture(scope="session")
def cifar_store(real_data, tmp_path_factory) -> Path:
    """Store path of the real data, ingested once per session into a temporary cache.

    The ingest time is printed (``pytest -s`` shows it).
    """
    from daskmeans.data import ingest

    cache = tmp_path_factory.mktemp("cifar-cache")
    t0 = time.perf_counter()
    store = ingest(real_data, cache_dir=cache, progress=False)
    print(f"\n[cifar_store] ingested {real_data.name} in {time.perf_counter() - t0:.1f} s -> {store}")
    return store


@pytest.fixture(autouse=True)
def _dask_config_restored():
    """Each test starts from the same dask config: settings a test merges (a cluster.yaml
    it reads, for instance) must not leak into the next one."""
    from daskmeans import profiles  # noqa: PLC0415 - imported late: conftest loads before the package's config

    saved = copy.deepcopy(dask.config.config)
    yield
    dask.config.config.clear()
    dask.config.config.update(saved)
    profiles._loaded = None  # its cache of what was merged into the config just restored


@pytest.fixture(autouse=True)
def _daskmeans_logger_restored():
    """The command line installs its handler on the 'daskmeans' logger when a test calls
    it in-process; the next test starts from the logger as it was."""
    logger = logging.getLogger("daskmeans")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate
