"""The ``daskmeans`` command: a thin layer over the library.

Every failure ends with one line ``daskmeans: error: ...`` and a documented exit
status (see :mod:`daskmeans.errors`), never a traceback (``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .errors import EXIT_FAILED, EXIT_INPUT, DaskmeansError

logger = logging.getLogger("daskmeans")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line with the fix."""

    def error(self, message):
        sys.stderr.write(f"daskmeans: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(EXIT_INPUT)


def add_run_options(p: argparse.ArgumentParser, *, defaults: bool = True) -> None:
    """The options of ``daskmeans run`` (also used by job specs)."""
    from . import config

    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", help="cifar-10-python.tar.gz, its extracted folder, an image-folder "
                   "tree or tarball (split/class/*.jpg), an ingested .zarr store, or 'keras'. "
                   "Default: $DASKMEANS_DATA, the cache, keras's cache, else download")
    g.add_argument("--split", default="train", choices=["train", "test", "all"], help="default: train (50,000 images)")
    g.add_argument("--subset", type=int, metavar="N", help="a seeded random subset of N images (e.g. 2000)")
    g.add_argument("--chunk-size", type=int, metavar="ROWS", help=f"rows per chunk (default {config.get('chunk-size')})")
    g = p.add_argument_group("k-means")
    g.add_argument("-k", type=int, default=10, help="number of clusters (default 10)")
    g.add_argument("--init", default="k-means++", metavar="k-means++|random|FILE.npy",
                   help="initial centres (default k-means++; random = uniform in [0, 1], as the original notebook)")
    g.add_argument("--n-init", type=int, default=1, metavar="N", help="restarts; the lowest inertia wins (default 1)")
    g.add_argument("--seed", type=int, default=0, help="random seed: same seed, same result (default 0)")
    g.add_argument("--max-iter", type=int, default=300, metavar="M", help="default 300")
    g.add_argument("--tol", type=float, default=1e-4, metavar="T",
                   help="stop when the total squared centre shift <= T * mean pixel variance (default 1e-4)")
    g.add_argument("--metric", default="l2", choices=["l2", "l1"],
                   help="l2 (default) or l1 (the original notebook's Manhattan assignment, mean update)")
    g.add_argument("--algorithm", default="auto", choices=["auto", "lloyd", "hamerly"],
                   help="hamerly: Lloyd's results from fewer distances (per-row bounds); "
                   "auto (default): hamerly for l2 on CPU, lloyd otherwise")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-split", choices=["train", "test", "all"], metavar="train|test|all",
                   help="also assign this split to the trained centres and score it with the training mapping "
                   "(e.g. test)")
    g.add_argument("--compare", choices=["sklearn"], metavar="sklearn",
                   help="also run sklearn.cluster.KMeans on the same data and initial centres; both in the report")
    g = p.add_argument_group("where it runs")
    g.add_argument("--cluster", metavar="NAME",
                   help="a profile of cluster.yaml ($DASKMEANS_CLUSTER_CONFIG, else ./cluster.yaml): threads, local, "
                   "address, local-cuda, jobqueue or kubernetes; see README, Running on a Dask cluster")
    g.add_argument("--scheduler", metavar="threads|local|tcp://HOST:PORT",
                   help="threads (no cluster), local (a LocalCluster on 127.0.0.1, started and closed by the run) "
                   "or the address of an existing scheduler (never closed by the run). "
                   "Default: $DASK_SCHEDULER_ADDRESS if set, else threads")
    g.add_argument("--n-workers", type=int, metavar="N", help="workers of --scheduler local")
    g.add_argument("--backend", default="auto", choices=["auto", "numpy", "cupy"],
                   help="array backend of the chunks (default auto: CuPy where a GPU exists)")
    g.add_argument("--no-persist", dest="persist", action="store_false",
                   help="read chunks from the store in every iteration instead of keeping them in memory")
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="output folder (default: a new runs/<timestamp>/)")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--checkpoint", metavar="FILE",
                   help="checkpoint written after every iteration (default: .<out>.checkpoint.npz next to --out; "
                   "'none' turns it off); removed once the outputs are in place")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its checkpoint (same settings and --out); "
                   "same result as an uninterrupted run; starts over when there is no checkpoint")


def _settings_from(args):
    from .run import Settings

    fields = Settings.__dataclass_fields__
    return Settings(**{k: v for k, v in vars(args).items() if k in fields})


def cmd_run(args) -> int:
    from .run import format_summary, run

    report = run(_settings_from(args))
    if args.json:
        print(json.dumps({k: report.get(k) for k in ("out", "n_samples", "k", "n_iter", "converged", "inertia", "purity", "metrics", "cluster_sizes", "eval", "compare")}, default=str))
    else:
        print(format_summary(report))
    return 0


def cmd_ingest(args) -> int:
    from .data import ingest

    path = ingest(args.data, progress=not args.quiet)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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
    p.set_defaults(func=cmd_ingest)

    for modname in ("daskmeans.predict", "daskmeans.jobs"):
        try:
            mod = __import__(modname, fromlist=["add_parser"])
        except ImportError:
            continue
        mod.add_parser(sub, common)
    return parser


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return int(args.func(args) or 0)
    except DaskmeansError as e:
        if getattr(args, "debug", False):
            raise
        sys.stderr.write(f"daskmeans: error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("daskmeans: interrupted; nothing was written under the final output name\n")
        return 130
    except Exception as e:  # a failure of the run itself, not of the input
        if getattr(args, "debug", False):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        sys.stderr.write(f"daskmeans: error: the run failed: {type(e).__name__}: {msg} (rerun with --debug for the traceback)\n")
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
