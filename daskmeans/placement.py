"""Where an iteration's work runs: chunks grouped by worker, one task per group.

A pass over the data (one Lloyd or Hamerly iteration) is one task per *group*:
a group is a run of chunks that one worker thread holds. The task runs the
kernel over each of its chunks, keeps their per-chunk state (labels, Hamerly's
bounds) in its own process (:data:`_REGISTRY`), and returns one summed partial;
the partials are summed in a tree of fan-in ``split_every``. So an iteration
costs O(worker threads) tasks and messages, not O(chunks), and only k x d sums
travel.

The same code runs on dask's threads (a thread pool in this process, groups =
threads) and on a distributed cluster (``Client.submit`` pinned to the worker
that holds the group's chunks, groups = that worker's threads). State is never
essential: a group whose state is missing (a worker died and the task moved, a
resumed run) rebuilds its previous labels from the previous centres, which
gives exactly what was lost because labels are a deterministic function of the
centres (see :mod:`daskmeans.kernels`). Each state records the iteration that
made it, so a task that runs twice never mistakes its own output for its input.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field

import dask
import dask.array as da
import numpy as np

from . import config, jit, kernels
from .graph import host

try:  # distributed is a dependency, but the threaded path must not need a cluster
    from distributed import default_client, futures_of, wait
except ImportError:  # pragma: no cover
    default_client = futures_of = wait = None

logger = logging.getLogger("daskmeans")

#: Per-group state in this process: (token, group) -> (iteration, [state per chunk]).
_REGISTRY: dict = {}
_LOCK = threading.Lock()


def _drop(token: str) -> int:
    """Forget every state of one run in this process (run on every worker at the end)."""
    with _LOCK:
        keys = [k for k in _REGISTRY if k[0] == token]
        for k in keys:
            del _REGISTRY[k]
    return len(keys)


def _load(source):
    """A chunk: an array already in memory, or a one-chunk dask array read now (out of core)."""
    if isinstance(source, da.Array):
        return source.compute(scheduler="sync")
    return source


#: Chunks read ahead of the one being measured when a group streams its chunks from their source.
READ_AHEAD = 1


def _streamed(sources):
    """The chunks of ``sources`` one at a time, the next :data:`READ_AHEAD` read while one is measured."""
    with concurrent.futures.ThreadPoolExecutor(1, "daskmeans-read") as reader:
        pending = [reader.submit(_load, s) for s in sources[: READ_AHEAD + 1]]
        for i in range(len(sources)):
            block = pending[i].result()
            pending[i] = None  # the reader's copy goes with it
            if i + READ_AHEAD + 1 < len(sources):
                pending.append(reader.submit(_load, sources[i + READ_AHEAD + 1]))
            yield block


def _chunk_state(states, i):
    """Chunk ``i``'s state as a one-chunk group's: a list of one, or per run ({run: list of one})."""
    if states is None:
        return None
    if isinstance(states, dict):
        return {r: _chunk_state(v, i) for r, v in states.items()}
    return states[i : i + 1]


def _append_state(acc, st):
    """Chunk states in order: :func:`_chunk_state`'s inverse."""
    if isinstance(st, dict):
        acc = {} if acc is None else acc
        for r, v in st.items():
            acc[r] = _append_state(acc.get(r), v)
        return acc
    return (acc or []) + (list(st) if st is not None else [None])


def run_group(token, gid, func, sources, offsets, iteration, shared, weights=None, reduce=None):
    """Run ``func`` over one group's chunks with its saved state; save the new state.

    ``func(states, blocks, offsets, shared) -> (states, partial)``; ``states`` is
    None when this process holds no state made by iteration ``iteration - 1``.
    ``iteration`` None: a pass that neither reads nor writes state. ``weights``:
    the group's sample weights (its rows in order), given to ``func`` as
    ``shared["weights"]``.

    Chunks in memory are measured together (small ones merged: see
    :func:`~daskmeans.algorithms.base.merged`). Chunks read from their source
    (not persisted: out of core) stream: ``func`` runs on one chunk at a time,
    with its state, while the next is read, and ``reduce`` (the pass's merge of
    partials) sums the chunks' results, so a group holds at most
    ``READ_AHEAD + 1`` chunks whatever its size. A row's label does not depend on
    its block, so both ways give the same result.
    """
    states = None
    if iteration is not None:
        with _LOCK:
            saved = _REGISTRY.get((token, gid))
        states = saved[1] if saved is not None and saved[0] == iteration - 1 else None
    if reduce is not None and len(sources) > 1 and any(isinstance(s, da.Array) for s in sources):
        new, parts, start = None, [], 0
        for i, block in enumerate(_streamed(sources)):
            sh = shared if weights is None else {**shared, "weights": weights[start : start + block.shape[0]]}
            start += block.shape[0]
            st, part = func(_chunk_state(states, i), [block], offsets[i : i + 1], sh)
            del block
            new = _append_state(new, st)
            parts.append(host(part))
        states, partial = (new if iteration is not None else None), reduce(*parts)
    else:
        if weights is not None:
            shared = {**shared, "weights": weights}
        blocks = [_load(s) for s in sources]
        states, partial = func(states, blocks, offsets, shared)
    if iteration is not None:
        with _LOCK:
            _REGISTRY[(token, gid)] = (iteration, states)
    return host(partial)


#: Up to this many bytes of centres (times the groups) travel inside the task messages.
INLINE_BYTES = 8 * 2**20


def _nbytes(obj) -> int:
    """Bytes of the arrays in (nested dicts, tuples and lists of) shared arguments."""
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(v) for v in obj)
    return getattr(obj, "nbytes", 64)


def _identity(x):
    return x


def current_client():
    """The distributed Client that dask computes with now, or None (threads)."""
    if default_client is None:
        return None
    try:
        client = default_client()
    except ValueError:
        return None
    if dask.config.get("scheduler", None) not in (None, "dask.distributed", "distributed"):
        return None  # a Client exists, but the user asked dask for another scheduler
    return client


def _warn_mixed_targets(targets: dict) -> None:
    """The compiled pass rounds by the instruction set it was compiled for: say so when workers differ."""
    seen = {}
    for w, t in targets.items():
        if t is not None:
            seen.setdefault((t["name"], tuple(t["simd"])), []).append(w)
    if len(seen) > 1:
        kinds = "; ".join(f"{name} ({' '.join(simd) or 'no SIMD'}) on {', '.join(sorted(ws))}"
                          for (name, simd), ws in sorted(seen.items()))
        logger.warning("workers compile the kernels for different instruction sets: %s. Labels of rows within "
                       "float32 rounding of two centres may differ from one of these machines to the other; run "
                       "the fit on one kind (`daskmeans doctor --scheduler ...` lists them)", kinds)


def _key(source):
    """A persisted chunk (a Future) by its key, for a runner that finds it in its worker's memory."""
    return ("key", source.key) if hasattr(source, "key") and not isinstance(source, da.Array) else source


class Runner:
    """A dask actor, one per worker and fit: runs that worker's groups of a pass in its process.

    The same :func:`run_group` as a scheduled task, with the same per-group state
    (:data:`_REGISTRY`, this process's), on chunks it finds in its worker's memory;
    so the result of a pass does not depend on the way it was run, and a pass that
    fails here (a worker lost, a chunk moved) is run again as scheduled tasks,
    which rebuild whatever was lost.
    """

    def __init__(self, token, nthreads):
        from distributed import get_worker  # an actor is made on its worker

        self.token, self.worker = token, get_worker()
        self.pool = concurrent.futures.ThreadPoolExecutor(max(1, int(nthreads)), "daskmeans-runner")
        self.target = jit.target() if jit.AVAILABLE else None

    def _value(self, source):
        if isinstance(source, tuple) and len(source) == 2 and source[0] == "key":
            return self.worker.data[source[1]]  # KeyError when the chunk is not here: the caller falls back
        return source

    def run(self, groups, func, shared, iteration, reduce):
        """``groups``: ``[(gid, sources, offsets, weights), ...]``; the sum of their partials."""

        def one(group):
            gid, sources, offsets, weights = group
            return run_group(self.token, gid, func, [self._value(s) for s in sources], offsets, iteration, shared,
                             self._value(weights), reduce)

        return reduce(*self.pool.map(one, groups))

    def compiled_for(self):
        """What this worker compiles the kernels for (:func:`daskmeans.jit.target`)."""
        return self.target

    def close(self):
        self.pool.shutdown(wait=False)
        return True


@dataclass
class Group:
    gid: int
    chunks: list  # chunk indices, in order
    sources: list  # per chunk: an array, a Future, or a one-chunk dask array
    offsets: list  # global index of each chunk's first row
    worker: str | None = None
    rows: int = 0
    weights: object = None  # the group's sample weights (NumPy, or a Future holding them), or None


def _split(chunks, sizes, parts: int):
    """Cut a list of chunk indices into at most ``parts`` runs of about equal rows."""
    parts = max(1, min(parts, len(chunks)))
    total = sum(sizes[c] for c in chunks)
    runs, cur, acc = [], [], 0
    for c in chunks:
        cur.append(c)
        acc += sizes[c]
        if len(runs) < parts - 1 and acc >= total * (len(runs) + 1) / parts:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


@dataclass
class Placement:
    """Chunks of ``X`` grouped for per-group tasks; see the module doc.

    Parameters
    ----------
    X : dask array (n, d), chunked by rows
    persist : bool
        Keep the chunks in memory (this process or the workers) during the
        fit; False reads each chunk from its source in every pass.
    split_every : int
        Fan-in of the tree that sums the groups' partials.
    weights : ndarray (n,) float64 or None
        Sample weights: each group gets its rows' (once, as a task on its worker).
    """

    X: da.Array
    persist: bool = True
    split_every: int = 8
    weights: object = None
    client: object = None
    groups: list = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self):
        self.client = current_client() if self.client is None else self.client
        self._runners, self._runner_futs = None, {}
        # experimental, off by default (daskmeans.yaml says why); never with sample weights
        self._use_runners = bool(config.get("direct-passes", False)) and self.weights is None
        sizes = list(self.X.chunks[0])
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        chunks = [i for i in range(len(sizes))]
        if self.client is None:
            self._pool = None
            sources = self._local_sources()
            runs = [(None, run) for run in _split(chunks, sizes, _local_threads())]
        else:
            sources, runs = self._distributed_runs(chunks, sizes)
        for gid, (worker, run) in enumerate(runs):
            self.groups.append(
                Group(gid, run, [sources[c] for c in run], [int(offsets[c]) for c in run], worker,
                      sum(sizes[c] for c in run))
            )
        if self.weights is not None:
            self._place_weights(np.asarray(self.weights, dtype=np.float64), offsets)

    def _place_weights(self, w, offsets):
        """Each group's weights: NumPy here; on a cluster a task on the group's worker (its
        value rides in the task, so a lost copy is recomputed)."""
        for g in self.groups:
            wg = np.concatenate([w[offsets[c] : offsets[c + 1]] for c in g.chunks])
            if self.client is not None:
                wg = self.client.submit(_identity, wg, workers=[g.worker] if g.worker else None,
                                        allow_other_workers=True, pure=False,
                                        key=f"daskmeans-weights-{self.token[:8]}-{g.gid}")
            g.weights = wg

    # -- building the groups ------------------------------------------------------------

    def _local_sources(self):
        blocks = self.X.to_delayed(optimize_graph=True).ravel()
        if self.persist:  # in memory once, here (already computed if X was persisted)
            return list(dask.compute(*blocks, scheduler="threads"))
        return [self.X.blocks[i] for i in range(len(blocks))]

    def _distributed_runs(self, chunks, sizes):
        client = self.client
        nthreads = client.nthreads()
        workers = sorted(nthreads)
        if self.persist:
            X = client.persist(self.X)
            self.X = X
            by_key = {f.key: f for f in futures_of(X)}
            sources = [by_key[key] for key in _flat_keys(X)]
            wait(sources)  # where the chunks are, not where they may go
            holder = _holders(client, sources, workers)
            if _unbalanced(holder, sizes, nthreads):
                # an iteration waits for its busiest worker: even out the rows once per fit
                try:
                    client.rebalance(sources)
                except Exception as e:  # noqa: BLE001 - an older or restricted scheduler: keep the placement
                    logger.info("could not rebalance the chunks (%s); groups follow them as they are", e)
                holder = _holders(client, sources, workers)
        else:
            sources = [self.X.blocks[i] for i in chunks]
            holder = {}
            for w, run in zip(workers, _split(chunks, sizes, len(workers))):
                holder[w] = run
        runs = []
        for w in sorted(holder):
            for run in _split(holder[w], sizes, nthreads.get(w, 1)):
                runs.append((w, run))
        return sources, runs

    # -- running a pass -----------------------------------------------------------------

    def run(self, func, shared: dict, iteration: int | None, reduce=kernels.combine):
        """One task per group: ``func`` over its chunks; returns the reduced partial (NumPy).

        ``iteration``: the step this pass makes state for (see :func:`run_group`);
        None for a stateless pass. ``reduce(*partials)`` merges the groups' results.
        """
        if self.client is None:
            return self._run_local(func, shared, iteration, reduce)
        return self._run_distributed(func, shared, iteration, reduce)

    def _run_local(self, func, shared, iteration, reduce):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max(1, len(self.groups)), "daskmeans")
        futs = [
            self._pool.submit(run_group, self.token, g.gid, func, g.sources, g.offsets, iteration, shared, g.weights,
                              reduce)
            for g in self.groups
        ]
        return reduce(*[f.result() for f in futs])

    def _run_distributed(self, func, shared, iteration, reduce):
        if self._runners is None and self._use_runners:
            self._start_runners()
        if self._runners:
            try:
                return self._run_direct(func, shared, iteration, reduce)
            except Exception as e:  # noqa: BLE001 - a worker lost, data moved: the scheduler takes over
                logger.info("direct passes stopped (%s: %s); the fit goes on through scheduled tasks",
                            type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                self._stop_runners()
                self._use_runners = False
        return self._run_tasks(func, shared, iteration, reduce)

    # -- direct passes: one runner per worker, called without the scheduler ---------------

    def _start_runners(self):
        """One :class:`Runner` actor per worker that holds groups."""
        self._runners = {}
        try:
            nthreads = self.client.nthreads()
            futs = {w: self.client.submit(Runner, self.token, nthreads.get(w, 1), workers=[w],
                                          allow_other_workers=False, actor=True, pure=False,
                                          key=f"daskmeans-runner-{self.token[:8]}-{i}")
                    for i, w in enumerate(sorted({g.worker for g in self.groups}))}
            self._runner_futs = futs
            self._runners = {w: f.result() for w, f in futs.items()}
            _warn_mixed_targets({w: r.compiled_for().result() for w, r in self._runners.items()})
        except Exception as e:  # noqa: BLE001 - no actors here (an old or restricted cluster): tasks
            logger.info("no direct passes on this cluster (%s); scheduled tasks instead", type(e).__name__)
            self._stop_runners()
            self._use_runners = False

    def _stop_runners(self):
        for runner in (self._runners or {}).values():
            try:
                runner.close().result()
            except Exception:  # noqa: BLE001 - its worker is gone, and its threads with it
                pass
        self._runners, self._runner_futs = {}, {}

    def _run_direct(self, func, shared, iteration, reduce):
        """Each runner measures its worker's groups (their chunks already there) and sums them;
        the client sums the runners' partials. Two messages per worker, no scheduler."""
        calls = []
        for w, runner in self._runners.items():
            mine = [(g.gid, [_key(s) for s in g.sources], g.offsets, _key(g.weights))
                    for g in self.groups if g.worker == w]
            calls.append(runner.run(mine, func, shared, iteration, reduce))
        return reduce(*[c.result() for c in calls])

    def _run_tasks(self, func, shared, iteration, reduce):
        client = self.client
        tag = f"{self.token[:8]}-{iteration}-{uuid.uuid4().hex[:6]}"
        if len(self.groups) * _nbytes(shared) <= INLINE_BYTES:
            # few groups: the centres ride in each task's message (no extra stage)
            shared_f = shared
        else:
            # The centres travel once, as a task that holds them: workers fetch them
            # from each other, and a lost copy is recomputed from the task (scattered
            # data would have no lineage; a broadcast fails when a worker dies mid-way).
            shared_f = client.submit(_identity, shared, pure=False, key=f"daskmeans-shared-{tag}")
        futs = [
            client.submit(
                run_group, self.token, g.gid, func, g.sources, g.offsets, iteration, shared_f, g.weights, reduce,
                workers=[g.worker] if g.worker else None, allow_other_workers=True, pure=False,
                key=f"daskmeans-group-{tag}-{g.gid}",
            )
            for g in self.groups
        ]
        split = max(2, int(self.split_every))
        level = 0
        keep = [shared_f, *futs]  # held until the root is computed: every level's inputs stay wanted
        while len(futs) > split:  # a tree on the workers down to at most split_every partials
            futs = [
                client.submit(reduce, *futs[i : i + split], pure=False, key=f"daskmeans-sum-{tag}-{level}-{i}")
                for i in range(0, len(futs), split)
            ]
            keep.extend(futs)
            level += 1
        result = reduce(*client.gather(futs))  # the root of the tree, here
        del keep
        return result

    def close(self):
        """Forget this run's per-group state everywhere; stop the local threads."""
        self._stop_runners()
        if self.client is not None:
            try:
                self.client.run(_drop, self.token)
            except Exception:  # noqa: BLE001 - a cluster already gone holds no state to drop
                pass
        _drop(self.token)
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _holders(client, sources, workers) -> dict:
    """worker -> the chunks (indices) it holds."""
    who = client.who_has(sources)
    holder = {}
    for c, f in enumerate(sources):
        hs = who.get(f.key) or who.get(str(f.key)) or ()
        holder.setdefault(sorted(hs)[0] if hs else workers[c % len(workers)], []).append(c)
    return holder


#: A worker with more than this share above its fair share of rows (by threads) triggers a rebalance.
IMBALANCE = 0.15


def _unbalanced(holder: dict, sizes, nthreads: dict) -> bool:
    total_rows = sum(sizes)
    total_threads = sum(nthreads.values()) or 1
    for w, threads in nthreads.items():
        fair = total_rows * threads / total_threads
        if sum(sizes[c] for c in holder.get(w, [])) > (1 + IMBALANCE) * fair:
            return True
    return False


def _flat_keys(X):
    keys = X.__dask_keys__()
    out = []

    def walk(k):
        if isinstance(k, list):
            for v in k:
                walk(v)
        else:
            out.append(k)

    walk(keys)
    return out


def _local_threads() -> int:
    n = dask.config.get("num_workers", None)
    return int(n) if n else (os.cpu_count() or 1)
