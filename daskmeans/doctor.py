"""``daskmeans doctor``: what a deployment needs to know, on one screen.

Run it as the user, in the folder and with the environment a job will have (a
systemd unit, a container, a batch job): it prints the versions, the instruction
set the numba kernels are compiled for, BLAS, the GPU, where compiled kernels and
matplotlib's files go, whether the cache and output folders can be written, and,
with ``--scheduler ADDRESS`` (or ``$DASK_SCHEDULER_ADDRESS``), whether the
scheduler answers and what every worker runs: versions, CPU, kernel cache, and
whether it can read the cache folder that holds the ingested data.

Exit status 0 only when a run would work; otherwise each problem is one line
``daskmeans: error: ...`` naming the fix, with status 2 (3 when the scheduler
cannot be reached). Differences that do not stop a run (workers on other CPUs,
kernels compiled in memory) are printed as notes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import socket
import sys
import warnings
from pathlib import Path

import dask
from distributed.versions import VersionMismatchWarning
from threadpoolctl import threadpool_info

from . import __version__, config, connect, jit, userdirs
from . import cpu_kernels  # noqa: F401  (declares the kernels: jit.CACHE then holds the cache decision)
from .errors import EXIT_INPUT, EXIT_OK, EXIT_UNREACHABLE, ClusterUnreachable

#: Distributions whose versions must agree between the client and every worker.
PACKAGES = ("dask", "distributed", "numpy", "numba", "scikit-learn", "zarr")
#: The vector instruction sets worth naming (the rest of the CPU's features are compared, not shown).
SIMD = jit.SIMD


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    """``{"python": "3.11.2", "daskmeans": ..., "dask": ..., ...}``."""
    return {"python": platform.python_version(), "daskmeans": __version__, **{d: _version(d) for d in PACKAGES}}


def cpu() -> dict:
    """The CPU numba compiles the kernels for: ``{"name", "triple", "features", "simd"}``."""
    if not jit.AVAILABLE:
        return {"name": None, "triple": None, "features": [], "simd": []}
    return jit.target()


def blas() -> list[str]:
    """The BLAS libraries loaded in this process (threadpoolctl), e.g. ``openblas 0.3.27 (pthreads, 4 threads, Haswell)``."""
    out = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        detail = [x for x in (lib.get("threading_layer"), f"{lib.get('num_threads')} threads",
                              lib.get("architecture")) if x]
        where = Path(lib.get("filepath") or "").parent.name  # numpy.libs, scipy.libs: whose copy
        out.append(f"{lib.get('internal_api')} {lib.get('version') or '?'} ({', '.join(detail)}) in {where}")
    return out


def gpu() -> str:
    """What CuPy sees, in words."""
    try:
        import cupy  # optional dependency (the gpu extra)
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        why = "not installed" if isinstance(e, ImportError) else f"does not load ({type(e).__name__})"
        return f"none: CuPy {why} (pip install 'daskmeans[gpu]' for CUDA); runs use NumPy"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
        names = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode(errors="replace") for i in range(n)]
    except Exception as e:
        return f"none: CuPy {cupy.__version__} sees no CUDA device ({type(e).__name__}); runs use NumPy"
    if not n:
        return f"none: CuPy {cupy.__version__} sees no CUDA device; runs use NumPy"
    return f"CuPy {cupy.__version__}, {n} device{'s' * (n > 1)}: {', '.join(names)}; --backend auto uses it"


def _nearest_existing(path: Path) -> Path:
    for p in [path, *path.parents]:
        if os.path.exists(p):  # never raises (Path.exists does for a folder this user cannot enter)
            return p
    return Path("/")


def writable(path: Path) -> bool:
    """Could this user create or write files at ``path`` (nothing is created to find out)."""
    p = _nearest_existing(Path(path).absolute())
    return os.path.isdir(p) and os.access(p, os.W_OK | os.X_OK)


def local_facts(cache: str | None = None) -> dict:
    """What this process (the client, or a worker via ``client.run``) runs with.

    ``cache``: a folder whose readability to report (a worker's view of the client's cache).
    """
    facts = {"host": socket.gethostname(), "user": userdirs.who(), "python": sys.executable, "versions": versions(),
             "cpu": cpu(), "numba_cache": dict(jit.CACHE)}
    if cache is not None:
        facts["cache_readable"] = os.path.isdir(cache) and os.access(cache, os.R_OK | os.X_OK)
    return facts


def _cache_setting() -> tuple[Path | None, str | None]:
    """``(local cache folder, URL)``: where runs keep ingested stores."""
    raw = config.get("cache-dir") or os.environ.get("DASKMEANS_CACHE")
    if raw and "://" in str(raw) and not str(raw).startswith("file://"):
        return None, str(raw)
    try:
        return config.cache_dir(), None
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None, None


class Report:
    """Lines to print, problems (stop a run) and notes (do not)."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.facts: dict = {}
        self.exit = EXIT_OK

    def add(self, label: str, text: str) -> None:
        self.lines.append((label, text))

    def problem(self, text: str, code: int = EXIT_INPUT) -> None:
        self.problems.append(text)
        if self.exit == EXIT_OK or code == EXIT_UNREACHABLE:
            self.exit = code


def check_here(rep: Report, out: str | None) -> None:
    """The local half: versions, kernels, BLAS, GPU, folders."""
    facts = local_facts()
    rep.facts["here"] = facts
    v = facts["versions"]
    rep.add("daskmeans", f"{v['daskmeans']} as {facts['user']} on {facts['host']}, "
                         f"Python {v['python']} ({facts['python']})")
    rep.add("versions", ", ".join(f"{k} {v[k]}" for k in PACKAGES))
    c = facts["cpu"]
    rep.add("kernels", f"numba compiles for {c['name']} ({c['triple']}): {' '.join(c['simd']) or 'no vector extensions'}"
            if c["name"] else "numba is not installed: the array-API kernels run instead (slower)")
    rep.add("BLAS", "; ".join(blas()) or "none loaded")
    rep.add("GPU", gpu())
    _check_folders(rep, facts, out)


def _check_folders(rep: Report, facts: dict, out: str | None) -> None:
    cache, url = _cache_setting()
    rep.facts["cache"] = url or (str(cache) if cache else None)
    if url:
        rep.add("cache", f"stores in {url} (not checked here); downloads and file hashes in the local cache")
    elif cache is None:
        rep.add("cache", "none: no home folder to put it in")
        rep.problem("no cache folder (HOME is unset and has no passwd entry): set DASKMEANS_CACHE to a writable folder")
    elif writable(cache):
        rep.add("cache", f"{cache}: writable")
    else:
        try:
            stores = sorted(p.name for p in (cache / "stores").glob("*.zarr"))
        except OSError:
            stores = []
        if stores:
            rep.add("cache", f"{cache}: read-only, holds {len(stores)} store(s): runs on that data work, "
                             f"new data cannot be ingested")
            rep.notes.append(f"the cache {cache} is read-only: only data already ingested there can be used")
        else:
            rep.add("cache", f"{cache}: NOT writable, holds no store")
            rep.problem(f"the cache folder {cache} cannot be written by {facts['user']} and holds no ingested data: "
                        f"set DASKMEANS_CACHE to a writable folder (or make this one writable)")
    nc = facts["numba_cache"]
    if nc.get("where") == "none":
        rep.add("  kernels", "compiled in memory in every process (no writable folder)")
        rep.notes.append("compiled kernels are not cached (a few seconds per process): set NUMBA_CACHE_DIR or "
                         "DASKMEANS_CACHE to a writable folder")
    elif nc:
        rep.add("  kernels", f"cached in {nc.get('path') or 'numba default'} ({nc.get('where')})")
    mpl = userdirs.matplotlib_config()
    rep.add("  matplotlib", f"{mpl.get('path') or 'a new temporary folder per process'} ({mpl.get('where')})")
    target = Path(out).expanduser().parent if out else Path("runs")
    shown = f"--out {out}" if out else "runs/ (the default --out)"
    if writable(target):
        rep.add("output", f"{shown} in {_nearest_existing(target.absolute())}: writable")
    else:
        rep.add("output", f"{shown}: NOT writable")
        rep.problem(f"{shown}: {facts['user']} cannot write in {_nearest_existing(target.absolute())}; "
                    f"pass a writable --out folder (or run in a writable working folder)")


def worker_facts(cache: str | None) -> dict:
    """Run on each worker by ``client.run``: its :func:`local_facts`."""
    return local_facts(cache)


def compare(here: dict, workers: dict, cache: str | None) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` from the client's facts and each worker's (or the exception it raised)."""
    problems, notes = [], []
    for addr, w in workers.items():
        if isinstance(w, BaseException):
            problems.append(f"worker {addr} could not run daskmeans ({type(w).__name__}: {str(w).splitlines()[0] if str(w) else ''}); "
                            f"install daskmeans {__version__} in the workers' environment (the same image or venv)")
            continue
        diff = [f"{k} {w['versions'].get(k)} (here {v})" for k, v in here["versions"].items()
                if _release(k, w["versions"].get(k)) != _release(k, v)]
        if diff:
            problems.append(f"worker {addr} runs {', '.join(diff)}: install the same versions on every worker "
                            f"(the same image or lock file)")
        if w["cpu"]["features"] != here["cpu"]["features"]:
            lacks = [f for f in here["cpu"]["simd"] if f not in w["cpu"]["simd"]]
            extra = [f for f in w["cpu"]["simd"] if f not in here["cpu"]["simd"]]
            what = "; ".join(x for x in (f"lacks {' '.join(lacks)}" if lacks else "",
                                         f"adds {' '.join(extra)}" if extra else "") if x)
            notes.append(f"worker {addr} has another CPU: {w['cpu']['name']} (here {here['cpu']['name']})"
                         f"{': ' + what if what else ''}; it compiles kernels for its own CPU")
        if w["numba_cache"].get("where") == "none":
            notes.append(f"worker {addr} compiles kernels in memory (no writable cache folder): set NUMBA_CACHE_DIR "
                         f"in the workers' environment")
        if cache and w.get("cache_readable") is False:
            problems.append(f"worker {addr} ({w['user']} on {w['host']}) cannot read the cache folder {cache} that holds "
                            f"the ingested data: put DASKMEANS_CACHE on a filesystem every worker can read "
                            f"(or ingest --to a URL)")
    return problems, notes


def _release(name: str, version) -> str:
    """What must agree: Python's minor release (3.11), every other package's exact version."""
    return ".".join(str(version).split(".")[:2]) if name == "python" else str(version)


def _same_versions(a: dict, b: dict) -> bool:
    return all(_release(k, a.get(k)) == _release(k, v) for k, v in b.items())


def _worker_line(addr: str, w, here: dict) -> str:
    if isinstance(w, BaseException):
        return f"{addr}: ERROR {type(w).__name__}"
    same = "same versions" if _same_versions(w["versions"], here["versions"]) else "DIFFERENT versions"
    nc = w["numba_cache"]
    return (f"{addr}: {w['user']} on {w['host']}, {same}, {w['cpu']['name']} ({' '.join(w['cpu']['simd'])}), "
            f"kernels {'in memory' if nc.get('where') == 'none' else 'cached'}"
            f"{'' if w.get('cache_readable', True) else ', cannot read the cache'}")


def check_scheduler(rep: Report, address: str) -> None:
    """Connect, count the workers, ask each for its facts, compare."""
    connect.check_scheduler(address)
    security = connect.config_security(address) if address.startswith("tls://") else None
    cache = rep.facts.get("cache")
    cache = cache if cache and "://" not in cache else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VersionMismatchWarning)  # compared below, one line each
            with connect.distributed_client(address, security=security) as client:
                n = len(client.scheduler_info().get("workers", {}))
                found = client.run(worker_facts, cache, on_error="return") if n else {}
    except ClusterUnreachable as e:
        rep.add("scheduler", f"{address}: NOT reachable")
        rep.problem(str(e), EXIT_UNREACHABLE)
        return
    rep.add("scheduler", f"{address}: reachable, {n} worker{'s' * (n != 1)}")
    if not n:
        rep.problem(f"the scheduler at {address} has no workers: start some with `dask worker {address}`")
    here = rep.facts["here"]
    rep.facts["workers"] = {a: (w if isinstance(w, dict) else repr(w)) for a, w in found.items()}
    for addr in sorted(found):
        rep.add("  worker", _worker_line(addr, found[addr], here))
    problems, notes = compare(here, found, cache)
    for p in problems:
        rep.problem(p)
    rep.notes.extend(notes)


def doctor(out: str | None = None, scheduler: str | None = None) -> Report:
    """Everything :func:`cmd_doctor` prints, as a :class:`Report`."""
    rep = Report()
    check_here(rep, out)
    address = scheduler or dask_address()
    if address and address not in connect.LOCAL_SPECS:
        check_scheduler(rep, address)
    else:
        rep.add("scheduler", f"none given: runs compute in their own process "
                             f"(--scheduler {scheduler or 'threads'}); pass --scheduler tcp://HOST:PORT to check a cluster")
    return rep


def dask_address() -> str | None:
    """``$DASK_SCHEDULER_ADDRESS`` (dask's ``scheduler-address`` setting), as a run would use it."""
    return dask.config.get("scheduler-address", None)


def cmd_doctor(args) -> int:
    rep = doctor(out=args.out, scheduler=args.scheduler)
    if args.json:
        print(json.dumps({**rep.facts, "problems": rep.problems, "notes": rep.notes, "ok": not rep.problems},
                         indent=1, default=str))
    else:
        width = max(len(label) for label, _ in rep.lines)
        for label, text in rep.lines:
            print(f"{label:<{width}}  {text}")
        for note in rep.notes:
            print(f"note: {note}")
        print("ok: a run would work here" if not rep.problems else
              f"NOT ready: {len(rep.problems)} problem{'s' * (len(rep.problems) > 1)} (below, on stderr)")
    for p in rep.problems:
        sys.stderr.write(f"daskmeans: error: {p}\n")
    return rep.exit


def add_parser(subparsers, common) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "doctor", parents=[common], help="check that a run would work here (versions, CPU, folders, cluster)",
        description="Print what a deployment needs to know on one screen; exit status 0 only when a run would work.")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="also check this scheduler and its workers (default: $DASK_SCHEDULER_ADDRESS)")
    p.add_argument("--out", metavar="DIR", help="the --out a run will use (default: runs/<timestamp> here)")
    p.set_defaults(func=cmd_doctor)
    return p

