"""The ``daskmeans`` command: a thin layer over the library.

Every failure ends with one line ``daskmeans: error: ...`` and a documented exit
status (see :mod:`daskmeans.errors`), never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from . import __version__, doctor, jobs, params, predict, sweep
from .data import ingest
from .errors import EXIT_FAILED, EXIT_INPUT, DaskmeansError
from .run import Settings, format_summary, run

logger = logging.getLogger("daskmeans")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with the fix."""

    def error(self, message):
        sys.stderr.write(f"daskmeans: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_INPUT)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """The options of ``daskmeans run``, grouped for ``--help``; declared in :mod:`daskmeans.params`."""
    groups = {
        "data": ("data", "split", "subset", "chunk_size"),
        "k-means": ("n_clusters", "init", "n_init", "random_state", "max_iter", "tol", "metric", "algorithm",
                    "mini_batch", "batch_size"),
        "features": ("features", "pca_dim", "patch_size", "patch_stride", "dictionary_size", "patch_samples",
                     "patch_pool", "reduce_dim", "patch_flip", "unit_rows", "neighbours",
                     "neighbour_steps"),
        "evaluation": ("eval_split", "compare"),
        "where it runs": ("cluster", "scheduler", "n_workers", "backend", "persist"),
        "output": ("out", "overwrite", "checkpoint", "resume"),
    }
    for title, names in groups.items():
        params.add_arguments(p.add_argument_group(title), names)


def _settings_from(args):
    fields = Settings.__dataclass_fields__
    return Settings(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_run(args) -> int:
    report = run(_settings_from(args))
    if args.json:
        print(json.dumps({k: report.get(k) for k in ("out", "n_samples", "k", "n_iter", "converged", "inertia", "purity", "metrics", "cluster_sizes", "eval", "compare")}, default=str))
    else:
        print(format_summary(report))
    return 0


def cmd_ingest(args) -> int:
    path = ingest(args.data, progress=not args.quiet, to=args.to)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    common.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of the table")
    common.add_argument("--debug", action="store_true", help="show tracebacks")

    parser = _Parser(prog="daskmeans", description="k-means clustering of CIFAR-10 on Dask (NumPy or CuPy chunks)")
    parser.add_argument("--version", action="version", version=f"daskmeans {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", parents=[common], help="cluster CIFAR-10 and evaluate against the labels",
                       description="Cluster CIFAR-10 with k-means and judge the clusters against the true labels.")
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("ingest", parents=[common], help="convert a data source into the cached Zarr store")
    p.add_argument("--data", metavar="PATH", help="as for run")
    p.add_argument("--to", metavar="URL", help="write the store here instead of the cache: s3://bucket/cifar10.zarr, "
                   "gs://..., or a folder (fsspec options: config daskmeans.storage-options)")
    p.set_defaults(func=cmd_ingest)

    predict.add_parser(sub, common)
    sweep.add_parser(sub, common)
    jobs.add_parser(sub, common)
    doctor.add_parser(sub, common)
    return parser


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that every ``finally`` and abort path runs."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    # SIGTERM (kill, systemd, a batch system's time limit) cleans up like Ctrl-C: staging folders go.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return int(args.func(args) or 0)
    except DaskmeansError as e:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"daskmeans: error: {e}\n")
        return e.exit_code
    except (KeyboardInterrupt, Terminated) as e:
        what = "interrupted" if isinstance(e, KeyboardInterrupt) else "terminated"
        sys.stderr.write(f"daskmeans: {what}; nothing was written under the final output name\n")
        return 130 if isinstance(e, KeyboardInterrupt) else 128 + signal.SIGTERM
    except Exception as e:  # a failure of the run itself, not of the input
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        sys.stderr.write(f"daskmeans: error: the run failed: {type(e).__name__}: {msg} (rerun with --debug for the traceback)\n")
        return EXIT_FAILED
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
