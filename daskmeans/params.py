"""Every parameter of daskmeans, declared once.

One :class:`Param` per parameter holds its type, range or choices, default,
help text, command-line flag, ``dask.config`` key and whether it belongs to the
:class:`~daskmeans.KMeans` estimator. Everything else derives from this table:

* the estimator's ``_parameter_constraints``: :func:`sklearn_constraints`;
* the command line (``daskmeans run``): :func:`add_arguments`;
* the checks of :class:`daskmeans.run.Settings` and of job specs: :func:`check`
  and :func:`coerce`;
* the configurable defaults: :func:`default` reads ``dask.config``, so
  ``DASK_DASKMEANS__KMEANS__MAX_ITER=7`` changes the default of ``max_iter``.

Messages name the value, the bound and the fix, in the words of where the
value came from::

    >>> check("max_iter", 0)
    InputError: max_iter=0 must be an integer >= 1; pass max_iter=1 or more
    >>> check("max_iter", 0, source="cli")
    InputError: --max-iter 0: must be >= 1; pass --max-iter 1 or more

Typical use in an estimator::

    class KMeans(BaseEstimator):
        _parameter_constraints = params.sklearn_constraints(params.ESTIMATOR)

        def fit(self, X):
            max_iter = params.check("max_iter", self.max_iter)
            split_every = self.split_every or params.default("split_every")
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import dask.config
import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from . import config  # noqa: F401  (registers daskmeans.yaml with dask.config before default() reads it)
from .errors import InputError

#: Where a value came from; decides how a message names it.
SOURCES = ("python", "cli", "spec", "config")

_UNSET = object()


@dataclass(frozen=True)
class Param:
    """The declaration of one parameter.

    Attributes
    ----------
    name : str
        The Python name (the estimator's keyword, ``check``'s key).
    kind : {"int", "float", "str", "bool"}
        The type of a value.
    default :
        The estimator's default (and the command line's, unless ``cli_default``).
    help : str
        One sentence for ``--help`` and the docs.
    low, high : number or None
        Inclusive bounds of an int or float.
    choices : tuple of str or None
        The allowed strings (for an int or float: strings allowed besides
        numbers, such as ``n_init="auto"``).
    nullable : bool
        Whether ``None`` is allowed (meaning: decided later, e.g. from the config).
    cli_default :
        The command line's default when it differs from the estimator's.
    flag : str or None
        The command-line flag (``None``: not on the command line).
    field : str or None
        The name in :class:`~daskmeans.run.Settings` and job specs (default: ``name``).
    config_key : str or None
        The key under ``daskmeans.`` in ``dask.config`` that holds the default.
    estimator : bool
        A keyword of :class:`~daskmeans.KMeans`.
    what : str
        A few words for messages ("the number of clusters").
    metavar : str or None
        For ``--help``.
    action : str or None
        argparse action for flags without a value (``store_true``/``store_false``).
    """

    name: str
    kind: str
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    cli_default: object = _UNSET
    flag: str | None = None
    field: str | None = None
    config_key: str | None = None
    estimator: bool = False
    what: str = ""
    metavar: str | None = None
    action: str | None = None

    @property
    def setting(self) -> str:
        """The name in :class:`~daskmeans.run.Settings` and (hyphenated) in job specs."""
        return self.field or self.name

    @property
    def env_var(self) -> str | None:
        """The environment variable that sets ``config_key`` (dask's convention)."""
        if not self.config_key:
            return None
        return "DASK_DASKMEANS__" + "__".join(p.upper().replace("-", "_") for p in self.config_key.split("."))


def _p(**kw) -> Param:
    return Param(**kw)


_DECLARED = [
    # -- the estimator's parameters (KMeans keywords) --------------------------------------
    _p(name="n_clusters", kind="int", default=8, cli_default=10, low=1, flag="-k", field="k", estimator=True,
       what="the number of clusters", metavar="K",
       help="number of clusters"),  # the command line's 10: CIFAR-10's number of classes
    _p(name="init", kind="str", default="k-means++", choices=("k-means++", "k-means||", "random", "uniform"),
       flag="--init", config_key="kmeans.init", estimator=True,
       metavar="{k-means++,k-means||,random,uniform}|FILE.npy|RUN_FOLDER",
       help="initial centres: k-means++ (greedy, two small passes per centre), k-means|| (Bahmani et al.: "
            "5 sampling passes whatever k, for large k or data spread over a cluster), random (k rows of the "
            "data drawn at random, as scikit-learn), uniform (uniform in [0, 1], as the original notebook), a "
            ".npy file of (k, 3072) centres in [0, 1], or the folder of an earlier run: a warm start that keeps "
            "its cluster ids (an array, a callable or a fitted model for the estimator)"),
    _p(name="n_init", kind="int", default="auto", low=1, choices=("auto",), flag="--n-init", estimator=True,
       metavar="N|auto", what="the number of restarts",
       help="restarts; the lowest inertia wins. auto: 10 for --init random (scikit-learn's rule), else 1"),
    _p(name="max_iter", kind="int", default=300, low=1, flag="--max-iter", config_key="kmeans.max-iter",
       estimator=True, metavar="M", help="at most this many iterations"),
    _p(name="tol", kind="float", default=1e-4, low=0, flag="--tol", config_key="kmeans.tol", estimator=True,
       metavar="T", help="stop when the total squared centre shift <= T * mean pixel variance "
                         "(0: until no label changes)"),
    _p(name="metric", kind="str", default="l2", choices=("l2", "l1", "cosine"), flag="--metric",
       config_key="kmeans.metric", estimator=True,
       help="l2 (squared Euclidean, the usual k-means), l1 (the original notebook's Manhattan assignment, mean "
            "update) or cosine (spherical k-means: unit centres, rows scored by cosine similarity)"),
    _p(name="algorithm", kind="str", default="auto", choices=("auto", "lloyd", "hamerly", "elkan", "full"),
       flag="--algorithm", config_key="kmeans.algorithm", estimator=True,
       help="hamerly: Lloyd's results from fewer distances (per-row bounds); "
            "auto: hamerly for l2 on uint8 NumPy chunks, lloyd otherwise; "
            "elkan: scikit-learn's name for a bounds algorithm, the same as auto; full: lloyd (dask-ml's and "
            "older scikit-learn's name)"),
    _p(name="random_state", kind="int", default=None, nullable=True, cli_default=0, low=0, high=2**32 - 1,
       flag="--seed", field="seed", estimator=True, what="the random seed", metavar="SEED",
       help="random seed: same seed, same result"),
    _p(name="chunk_size", kind="int", default=None, nullable=True, low=1, flag="--chunk-size",
       config_key="chunk-size", estimator=True, what="rows per chunk", metavar="ROWS",
       help="rows per chunk of NumPy input and of stores (dask arrays keep theirs)"),
    _p(name="persist", kind="bool", default=True, flag="--no-persist", action="store_false", estimator=True,
       help="keep the data in memory (or on the workers) during the fit; --no-persist reads chunks "
            "from the store in every iteration instead"),
    _p(name="split_every", kind="int", default=None, nullable=True, low=2, config_key="kmeans.split-every",
       estimator=True, what="the fan-in of the tree reduction",
       help="reduce at most this many partial results per task in the tree reduction"),
    _p(name="oversampling_factor", kind="float", default=2.0, low=0.1, estimator=True,
       what="k-means||'s oversampling factor",
       help="init='k-means||': about oversampling_factor * k rows join the candidates per round (dask-ml's name)"),
    _p(name="init_max_iter", kind="int", default=None, nullable=True, low=1, estimator=True,
       what="k-means||'s number of rounds",
       help="init='k-means||': sampling rounds (passes over the data); None: 5 (dask-ml's name)"),
    _p(name="copy_x", kind="bool", default=True, estimator=True,
       help="accepted for scikit-learn compatibility: daskmeans never writes to X, whatever its value"),
    _p(name="verbose", kind="int", default=0, low=0, estimator=True,
       help="0: log at the level of the 'daskmeans' logger; 1 or more: also one line per iteration"),
    # -- MiniBatchKMeans's own parameters (scikit-learn's) ------------------------------------
    _p(name="batch_size", kind="int", default=1024, cli_default=None, low=1, flag="--batch-size",
       what="rows per mini-batch", metavar="N",
       help="--mini-batch: rows drawn per step (default 1024, scikit-learn's)"),
    _p(name="compute_labels", kind="bool", default=True,
       help="MiniBatchKMeans: label every row and compute the inertia after the fit (one more pass)"),
    _p(name="max_no_improvement", kind="int", default=10, nullable=True, low=0,
       what="steps without improvement",
       help="MiniBatchKMeans: stop after this many steps without a lower smoothed batch inertia (None: never)"),
    _p(name="init_size", kind="int", default=None, nullable=True, low=1, what="rows for the initialisation",
       help="MiniBatchKMeans: rows drawn to initialise on (None: 3 * batch_size, at least 3 * n_clusters)"),
    _p(name="reassignment_ratio", kind="float", default=0.01, low=0, what="the reassignment ratio",
       help="MiniBatchKMeans: centres that saw fewer than this fraction of the busiest one's rows move to "
            "random rows of the batch"),
    # -- the run's own parameters (command line, run.Settings, job specs) -------------------
    _p(name="data", kind="str", default=None, nullable=True, flag="--data", metavar="PATH",
       help="cifar-10-python.tar.gz, its extracted folder, an image-folder tree or tarball "
            "(split/class/*.jpg), an ingested .zarr store, or 'keras'. "
            "Default: $DASKMEANS_DATA, the cache, keras's cache, else download"),
    _p(name="split", kind="str", default="train", choices=("train", "test", "all"), flag="--split",
       help="which images to cluster (train: 50,000)"),
    _p(name="subset", kind="int", default=None, nullable=True, low=1, flag="--subset", metavar="N",
       what="the number of images", help="a seeded random subset of N images (e.g. 2000)"),
    _p(name="eval_split", kind="str", default=None, nullable=True, choices=("train", "test", "all"),
       flag="--eval-split", metavar="train|test|all",
       help="also assign this split to the trained centres and score it with the training mapping (e.g. test)"),
    _p(name="compare", kind="str", default=None, nullable=True, choices=("sklearn",), flag="--compare",
       metavar="sklearn", help="also run sklearn.cluster.KMeans on the same data and initial centres"),
    _p(name="mini_batch", kind="bool", default=False, flag="--mini-batch", action="store_true",
       help="MiniBatchKMeans (scikit-learn's mini-batch k-means: --batch-size rows per step, drawn the same "
            "whatever the chunking) instead of full-batch k-means; --max-iter then counts passes' worth of "
            "steps (default 100) and --tol defaults to 0"),
    # -- features (daskmeans.features): fitted on the training split, applied to every split ----
    _p(name="features", kind="str", default="raw", choices=("raw", "pca", "patches"), flag="--features",
       help="what k-means clusters: raw pixels, pca (whitened principal components, --pca-dim) or patches "
            "(Coates-Lee-Ng single-layer features: a patch dictionary learned by k-means, pooled over a "
            "3 x 3 grid, averaged with the mirror image, standardised, whitened PCA to 30 dimensions, unit rows, "
            "5 steps of averaging over the 50 nearest training rows); no labels are used"),
    _p(name="pca_dim", kind="int", default=100, low=1, high=3072, flag="--pca-dim", metavar="D",
       what="the number of components", help="--features pca: components kept (whitened)"),
    _p(name="patch_size", kind="int", default=6, low=2, high=32, flag="--patch-size", metavar="P",
       what="the patch side", help="--features patches: side of the square patches, in pixels"),
    _p(name="patch_stride", kind="int", default=2, low=1, high=32, flag="--patch-stride", metavar="S",
       what="the step between patches", help="--features patches: step between encoded patch positions"),
    _p(name="dictionary_size", kind="int", default=400, low=2, flag="--dictionary-size", metavar="K",
       what="the number of dictionary centres", help="--features patches: centres of the patch dictionary"),
    _p(name="patch_samples", kind="int", default=200_000, low=2, flag="--patch-samples", metavar="N",
       what="the number of patches", help="--features patches: random training patches the whitening and the "
                                           "dictionary learn from"),
    _p(name="patch_pool", kind="int", default=3, low=1, high=16, flag="--patch-pool", metavar="G",
       what="the pooling grid", help="--features patches: encodings summed over a G x G grid of image cells "
                                     "(2: quadrants)"),
    _p(name="reduce_dim", kind="int", default=30, low=0, flag="--reduce-dim", metavar="D",
       what="the number of whitened components",
       help="--features patches: whitened principal components kept of the pooled features (0: all of them); "
            "at most the number of images - 1"),
    _p(name="patch_flip", kind="bool", default=True, flag="--no-patch-flip", action="store_false",
       help="--features patches: do not average each image's pooled features with its horizontal mirror's"),
    _p(name="unit_rows", kind="bool", default=True, flag="--no-unit-rows", action="store_false",
       help="--features patches: keep the reduced rows' lengths (default: scaled to unit length, so k-means "
            "on them is spherical k-means)"),
    _p(name="neighbours", kind="int", default=None, nullable=True, low=0, flag="--neighbours", metavar="M",
       what="the number of neighbours",
       help="--features patches: replace each reduced row by the mean of its M nearest training rows "
            "(default 50 with --reduce-dim > 0, else 0; 0: off; at most the number of training images)"),
    _p(name="neighbour_steps", kind="int", default=5, low=1, flag="--neighbour-steps", metavar="T",
       what="the number of averaging steps",
       help="--features patches: with --neighbours, T steps of averaging over the training rows' "
            "nearest-neighbour graph (a diffusion; 1: one mean over the neighbours)"),
    _p(name="cluster", kind="str", default=None, nullable=True, flag="--cluster", metavar="NAME",
       help="a profile of cluster.yaml ($DASKMEANS_CLUSTER_CONFIG, else ./cluster.yaml): threads, local, "
            "address, local-cuda, jobqueue or kubernetes; see README, Running on a Dask cluster"),
    _p(name="scheduler", kind="str", default=None, nullable=True, flag="--scheduler",
       metavar="threads|local|tcp://HOST:PORT",
       help="threads (no cluster), local (a LocalCluster on 127.0.0.1, started and closed by the run) "
            "or the address of an existing scheduler (never closed by the run). "
            "Default: $DASK_SCHEDULER_ADDRESS if set, else threads"),
    _p(name="n_workers", kind="int", default=None, nullable=True, low=1, flag="--n-workers", metavar="N",
       what="the number of workers", help="workers of --scheduler local (or of a --cluster profile)"),
    _p(name="backend", kind="str", default="auto", choices=("auto", "numpy", "cupy"), flag="--backend",
       help="array backend of the chunks (auto: CuPy where a GPU exists)"),
    _p(name="out", kind="str", default=None, nullable=True, flag="--out", metavar="DIR",
       help="output folder (default: a new runs/<timestamp>/)"),
    _p(name="overwrite", kind="bool", default=False, flag="--overwrite", action="store_true",
       help="replace --out if it holds an earlier daskmeans run (never any other folder)"),
    _p(name="checkpoint", kind="str", default=None, nullable=True, flag="--checkpoint", metavar="FILE",
       help="checkpoint written after every iteration (default: .<out>.checkpoint.npz next to --out; "
            "'none' turns it off); removed once the outputs are in place"),
    _p(name="resume", kind="bool", default=False, flag="--resume", action="store_true",
       help="continue an interrupted run from its checkpoint (same settings and --out); "
            "same result as an uninterrupted run; starts over when there is no checkpoint"),
]

#: name -> :class:`Param`, in declaration order.
PARAMS: dict[str, Param] = {p.name: p for p in _DECLARED}
#: The keywords of :class:`daskmeans.KMeans`, in declaration order.
ESTIMATOR: tuple[str, ...] = tuple(p.name for p in _DECLARED if p.estimator)
#: The keywords of :class:`daskmeans.MiniBatchKMeans` (scikit-learn's, and ``chunk_size``), in its order.
MINIBATCH: tuple[str, ...] = ("n_clusters", "init", "max_iter", "batch_size", "verbose", "compute_labels",
                              "random_state", "tol", "max_no_improvement", "init_size", "n_init",
                              "reassignment_ratio", "chunk_size")
#: Settings/job-spec field name -> parameter name (``k`` -> ``n_clusters``, ``seed`` -> ``random_state``).
BY_FIELD: dict[str, str] = {p.setting: p.name for p in _DECLARED}

METRICS: tuple[str, ...] = PARAMS["metric"].choices
ALGORITHMS: tuple[str, ...] = PARAMS["algorithm"].choices
SPLITS: tuple[str, ...] = PARAMS["split"].choices
INIT_METHODS: tuple[str, ...] = PARAMS["init"].choices


def get(name: str) -> Param:
    """The declaration of ``name`` (a parameter name or a Settings field such as ``k``)."""
    try:
        return PARAMS[BY_FIELD.get(name, name)]
    except KeyError:
        raise KeyError(f"no parameter {name!r}; known: {', '.join(PARAMS)}") from None


# -- messages -------------------------------------------------------------------------------


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _label(p: Param, value, source: str) -> str:
    """How a message names the value: ``max_iter=0``, ``--max-iter 0``, ``max-iter 'x'``, the config key."""
    if source == "cli" and p.flag:
        return f"{p.flag} {_show(value)}:"
    if source == "spec":
        return f"{p.setting.replace('_', '-')} {value!r}"
    if source == "config":
        env = p.env_var
        where = f"${env}" if env and env in os.environ else "a dask config file or cluster.yaml"
        return f"config daskmeans.{p.config_key}={value!r} (set by {where})"
    return f"{p.name}={value!r}"


def _fix(p: Param, source: str, wanted: str) -> str:
    if source == "config":
        return f"set it to {wanted} or unset it"
    if source == "spec":
        return f"write {p.setting.replace('_', '-')}: {wanted}"
    if source == "cli" and p.flag:
        return f"pass {p.flag} {wanted}"
    return f"pass {p.name}={wanted}"


def _bound(p: Param) -> tuple[str, str]:
    """(``">= 1"``, the fix's wanted value ``"1 or more"``)."""
    lo, hi = p.low, p.high
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}", f"a value from {lo} to {hi}"
    if lo is not None:
        return f">= {lo}", f"{lo} or more"
    return f"<= {hi}", f"{hi} or less"


def _error(p: Param, value, source: str, problem: str, wanted: str) -> InputError:
    what = f"{p.what} " if p.what and source == "cli" else ""
    return InputError(f"{_label(p, value, source)} {what}{problem}; {_fix(p, source, wanted)}")


_TYPE_WORDS = {"int": ("an integer", "a whole number"), "float": ("a number", "a number"),
               "bool": ("true or false", "true or false"), "str": ("a string", "a single value")}


# -- checking -------------------------------------------------------------------------------


def coerce(name: str, value, source: str = "python"):
    """``value`` converted to the parameter's type, without checking its range.

    ``source`` ``"spec"`` and ``"config"`` accept what YAML and environment
    variables produce: ``"1e-4"`` for a float, ``100.0`` for an int.
    """
    p = get(name)
    if value is None:
        if p.nullable:
            return None
        raise InputError(f"{_label(p, value, source)} must not be empty; {_fix(p, source, _example(p))}")
    if p.kind in ("int", "float") and p.choices and isinstance(value, str) and value in p.choices:
        return value  # a named value beside the numbers (n_init="auto")
    loose = source in ("spec", "config")
    word = _TYPE_WORDS[p.kind][1 if loose else 0]
    if p.kind in ("int", "float") and p.choices:
        word += " or " + " or ".join(p.choices)
    bad = _error(p, value, source, f"must be {word}", _example(p))
    if p.kind == "bool":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise bad
    if p.kind == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, numbers.Integral):
            return int(value)
        if loose and isinstance(value, float) and value.is_integer():
            return int(value)
        if loose and isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if p.kind == "float":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, numbers.Real):
            return float(value)
        if loose and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if isinstance(value, (dict, list, tuple, set)) and p.name != "init":
        raise bad
    return value if not isinstance(value, (int, float)) or p.name == "init" else str(value)


def _example(p: Param) -> str:
    if p.choices and p.kind in ("int", "float"):
        return f"{_bound(p)[1]} or {' or '.join(p.choices)}"
    if p.choices:
        return f"one of {', '.join(p.choices)}"
    if p.low is not None or p.high is not None:
        return _bound(p)[1]
    return {"bool": "true or false", "int": "a whole number", "float": "a number"}.get(p.kind, "a value")


def check(name: str, value, source: str = "python"):
    """``value`` coerced and checked against the declaration of ``name``.

    Parameters
    ----------
    name : str
        A parameter name (``max_iter``) or Settings field (``k``, ``seed``).
    value :
        The value to check. ``None`` is accepted where the parameter is nullable.
    source : {"python", "cli", "spec", "config"}
        Where it came from; the message names it so (``max_iter=0``,
        ``--max-iter 0``, ``max-iter 0`` in a job spec, the config key or the
        environment variable).

    Returns
    -------
    The value as the parameter's type (``int``, ``float``, ``bool``, ``str``);
    for ``init`` an array is returned unchanged (its shape is checked where the
    data's is known).

    Raises
    ------
    InputError
        One line: the value, the bound and the fix.
    """
    p = get(name)
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    value = coerce(p.name, value, source)
    if value is None or (isinstance(value, str) and p.kind in ("int", "float")):
        return value  # None where nullable; a named value (n_init="auto") was checked by coerce
    if p.kind == "float" and not math.isfinite(value):
        raise _error(p, value, source, "must be a finite number", _example(p))
    if p.kind in ("int", "float"):
        if (p.low is not None and value < p.low) or (p.high is not None and value > p.high):
            bound, wanted = _bound(p)
            word = "" if source == "cli" else (_TYPE_WORDS[p.kind][0] + " " if p.kind == "int" else "")
            raise _error(p, value, source, f"must be {word}{bound}", wanted)
        return value
    if p.name == "init":
        return _check_init(p, value, source)
    if p.choices and value not in p.choices:
        label = _label(p, value, source).rstrip(":")
        others = f" (or {', '.join(p.choices[1:])})" if len(p.choices) > 1 else ""
        raise InputError(f"{label} is not one of {', '.join(p.choices)}; {_fix(p, source, p.choices[0])}{others}")
    return value


def _check_init(p: Param, value, source: str):
    if not isinstance(value, str):
        if source in ("python",):
            return value  # an array of centres, a callable, a fitted model or a path: checked against the data
        raise _error(p, value, source, "must be k-means++, k-means||, random, uniform, a .npy file or a run folder",
                     _example(p))
    if value in p.choices or (source != "python" and value.endswith(".npy")):
        return value
    if os.path.isdir(os.path.expanduser(value)):
        return value  # a saved run folder: a warm start from its centres (daskmeans.warm)
    others = ("or an array of centres (or a callable, a fitted model or a run folder)" if source == "python"
              else "or a .npy file of centres (or a run folder)")
    label = _label(p, value, source).rstrip(":")
    raise InputError(f"{label} is not {', '.join(p.choices)} {others}; {_fix(p, source, 'k-means++')}")


def default(name: str, *, cli: bool = False):
    """The default of ``name``: its ``dask.config`` value where it has a key, else the declared one.

    ``cli=True``: the command line's default where it differs (``-k 10``,
    ``--seed 0``). A config value that fails :func:`check` raises
    :class:`InputError` naming the key and the environment variable.
    """
    p = get(name)
    if p.config_key:
        value = dask.config.get(f"daskmeans.{p.config_key}", None)
        if value is not None:
            return check(p.name, value, source="config")
    if cli and p.cli_default is not _UNSET:
        return p.cli_default
    return p.default


def check_config() -> dict:
    """Every configurable default, checked: ``{name: value}`` (exit 2 on a bad one)."""
    return {p.name: default(p.name) for p in _DECLARED if p.config_key}


# -- derived forms ----------------------------------------------------------------------------


def sklearn_constraints(names=ESTIMATOR) -> dict:
    """``{name: [constraints]}`` for an estimator's ``_parameter_constraints``.

    Built from :mod:`sklearn.utils._param_validation` (``Interval``,
    ``StrOptions``, ``"boolean"``, ``"random_state"``...), so
    ``sklearn.base.BaseEstimator._validate_params`` checks the same ranges as
    :func:`check`.
    """
    out = {}
    for name in names:
        p = get(name)
        if p.name == "random_state":
            cons = ["random_state"]
        elif p.name == "verbose":
            cons = ["verbose"]
        elif p.kind == "bool":
            cons = ["boolean"]
        elif p.kind in ("int", "float"):
            typ = numbers.Integral if p.kind == "int" else numbers.Real
            closed = {(True, True): "both", (True, False): "left", (False, True): "right"}.get(
                (p.low is not None, p.high is not None), "neither")
            cons = [Interval(typ, p.low, p.high, closed=closed)]
            if p.choices:
                cons.append(StrOptions(set(p.choices)))
        elif p.choices:
            cons = [StrOptions(set(p.choices))]
        else:
            cons = [str]
        if p.name == "init":  # besides arrays and callables: a fitted model or a run folder (warm starts)
            cons += ["array-like", callable, str, os.PathLike, HasMethods(["fit"])]
        if p.nullable and None not in cons:
            cons.append(None)
        out[p.name] = cons
    return out


def _help(p: Param) -> str:
    if p.action:
        return p.help
    shown = p.cli_default if p.cli_default is not _UNSET else p.default
    parts = []
    if shown is not None:
        parts.append(f"default {shown}")
    if p.config_key:
        parts.append(f"config daskmeans.{p.config_key}")
    return p.help + (f" ({'; '.join(parts)})" if parts else "")


def _number_or_choice(p: Param):
    """argparse's ``type`` for a number that also takes named values (``--n-init auto``)."""
    def parse(text: str):
        if text in p.choices:
            return text
        return int(text) if p.kind == "int" else float(text)

    parse.__name__ = p.kind  # argparse's message: "invalid int value: 'x'"
    return parse


def n_init_for(n_init, init, default: int = 10) -> int:
    """The number of runs ``n_init`` stands for with ``init`` (scikit-learn's rule for ``"auto"``).

    ``"auto"``: ``default`` (10; scikit-learn's MiniBatchKMeans: 3) for
    ``init="random"`` and for a callable, 1 for k-means++, k-means||, uniform (the
    original notebook's single run), an array or file of centres, a fitted model
    and a run folder. An int is itself.
    """
    if n_init != "auto":
        return int(n_init)
    if callable(init) or (isinstance(init, str) and init == "random"):
        return default
    return 1


def add_arguments(parser, names) -> None:
    """Add the flags of ``names`` to ``parser`` (an argparse parser or argument group).

    ``dest`` is the Settings field (``-k`` -> ``k``). Parameters with a config
    key default to ``None`` here and are resolved by :func:`default` when the
    settings are checked, so the config (and its environment variables) is read
    at run time, not when the parser is built.
    """
    for name in names:
        p = get(name)
        if not p.flag:
            raise ValueError(f"parameter {name!r} has no command-line flag")
        kw = {"dest": p.setting, "help": _help(p).replace("%", "%%")}
        if p.action:
            kw["action"] = p.action
        else:
            if p.kind in ("int", "float"):
                kw["type"] = _number_or_choice(p) if p.choices else {"int": int, "float": float}[p.kind]
            if p.choices and p.name != "init" and p.kind == "str":
                kw["choices"] = p.choices
            if p.metavar:
                kw["metavar"] = p.metavar
            if p.config_key:
                kw["default"] = None
            else:
                kw["default"] = p.cli_default if p.cli_default is not _UNSET else p.default
        parser.add_argument(p.flag, **kw)


def settings_defaults() -> dict:
    """``{field: default}`` of the run's settings as the command line has them (config keys: None)."""
    out = {}
    for p in _DECLARED:
        if not p.flag:
            continue
        if p.config_key:
            out[p.setting] = None
        else:
            out[p.setting] = p.cli_default if p.cli_default is not _UNSET else p.default
    return out


__all__ = ["Param", "PARAMS", "ESTIMATOR", "METRICS", "ALGORITHMS", "SPLITS", "INIT_METHODS", "get", "check",
           "coerce", "default", "check_config", "sklearn_constraints", "add_arguments", "settings_defaults",
           "n_init_for", "MINIBATCH"]
