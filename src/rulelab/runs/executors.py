"""Where a run's work items are computed (in this process, in a local pool of forked
workers, or on a Dask cluster), and the one loop that hands each result to the writer.

The pitfalls, first. A process whose JAX backend has started must not fork, and one
accelerator is not shared between processes, so a pool is used only on a CPU backend
and only while this process's backend is unstarted. Results computed under different
backend facts (another platform, subnormals flushed or not) must never meet in one run:
every item runs through :func:`compute`, which returns the facts of the process that
ran it, and :func:`run_items` refuses a result whose facts differ from the run's. The
client is the only writer: items come back here and ``write`` stores them, so a killed
run loses at most the items in flight.

A driver gives ``fn(payload, facts)`` (a module-level function, so that it can travel to
a cluster worker) and ``payload(i)``, the self-contained input of item ``i``. Forked
workers inherit ``payload`` and build their item's input themselves; a cluster is sent
each payload.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, TextIO

from rulelab.core.errors import UsageError, first_line
from rulelab.core.processes import can_fork, kill_pool, process_pool
from rulelab.jaxrun import backend as backends
from rulelab.model.sweep_size import MAX_POINTS
from rulelab.runs.cluster import same_facts

Facts = dict[str, Any]
Work = Callable[[Any, Facts], Any]
"""``fn(payload, facts) -> result``: one item's work, run under the backend ``facts``."""


@dataclass(frozen=True)
class Options:
    """How to run (not what): backend (None: JAX's default), worker processes for
    references and CPU evaluation (None: every core), progress bars (to ``stream``),
    the on-disk compilation cache, and the most points one sweep may have."""

    backend: str | None = None
    workers: int | None = None
    progress: bool = True
    compile_cache: bool = True
    max_points: int = MAX_POINTS
    result_cache: bool = True
    """Serve unchanged groups, blame and timings from the cache of measured results
    (``rulelab.runs.result_cache``: checked, not trusted); False measures everything."""
    fast_tier: bool = True
    """Take provisional references from a case's validated fast tier where they settle
    the rounding and mpmath is worth sparing (``reference.tier``; the tables are those of
    mpmath alone); False: mpmath at every point."""
    scheduler: str | None = None
    """A dask.distributed scheduler (``tcp://host:port``, or ``local:N``) to send the
    references and tasks to; None: this machine's process pools."""
    stream: TextIO | None = field(default=None, compare=False)
    """Where progress goes; None: sys.stderr as it is when the sweep runs."""


class ExecutorError(UsageError):
    """A worker died or the cluster lost an item; what was written is kept."""


@dataclass(frozen=True)
class Target:
    """What every process that computes a run's items sets up first: the backend, the
    dtypes whose facts it records, and whether compiled programs are kept on disk."""

    backend: str | None
    dtypes: tuple[str, ...]
    compile_cache: bool = True


def compute(fn: Work, payload: Any, target: Target) -> tuple[Any, Facts]:
    """``fn(payload, facts)`` in this process, with the facts of this process's backend
    (started here on the first call); returns the result and the facts."""
    facts = _facts(target)
    return fn(payload, facts), facts


def _facts(target: Target) -> Facts:
    backends.use_compilation_cache(target.compile_cache)
    return backends.facts_here(target.backend, tuple(target.dtypes))


_INHERITED: tuple[Work, Callable[[int], Any], Target] | None = None
"""The run's work, set before the pool forks so that its workers inherit it."""


def _forked(i: int) -> tuple[int, Any, Facts]:
    assert _INHERITED is not None
    fn, payload, target = _INHERITED
    return (i, *compute(fn, payload(i), target))


def pool_size(workers: int | None, n_items: int, backend: str | None) -> int:
    """How many processes compute: several only on a CPU backend (one accelerator is
    not shared between processes) and only while this process's JAX is unstarted."""
    n = min(workers or os.cpu_count() or 1, n_items)
    if n <= 1 or not can_fork() or backends.started():
        return 1
    if backend == "cpu":
        return n
    if backend is None:
        ok, platform = backends.probe(None)
        return n if ok and platform == "cpu" else 1
    return 1


def _here(fn: Work, payload: Callable[[int], Any], items: list[int], target: Target) -> Iterator[tuple[int, Any, Facts]]:
    for i in items:
        yield (i, *compute(fn, payload(i), target))


def _in_pool(ex: Any, items: list[int]) -> Iterator[tuple[int, Any, Facts]]:
    pending = {ex.submit(_forked, i) for i in items}
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            yield fut.result()


def _on_cluster(cluster: Any, fn: Work, payload: Callable[[int], Any], items: list[int], target: Target,
                describe: Callable[[int], str], resume_hint: str) -> Iterator[tuple[int, Any, Facts]]:
    from distributed import as_completed

    futures = {cluster.submit(compute, fn, payload(i), target): i for i in items}
    for fut in as_completed(futures):
        i = futures[fut]
        try:
            result, facts = fut.result()
        except Exception as exc:  # noqa: BLE001 - the cluster lost the item (a worker died too often)
            raise ExecutorError(f"the cluster failed on {describe(i)}: {first_line(exc)}; {resume_hint}") from None
        yield i, result, facts


def run_items(
    fn: Work,
    payload: Callable[[int], Any],
    items: list[int],
    target: Target,
    *,
    write: Callable[[int, Any], None],
    begin: Callable[[Facts, Mapping[str, Any] | None], Collection[int] | None] = lambda facts, cluster: None,
    workers: int | None = None,
    cluster: Any = None,
    describe: Callable[[int], str] = str,
    resume_hint: str = "",
) -> int:
    """Compute every item of ``items`` (in this process, a pool of forked workers, or on
    ``cluster``) and ``write(i, result)`` each here as it comes back. ``begin(facts,
    cluster_facts)`` is called once the run's backend facts are known, before any item
    runs; the items it returns need no computing (it served them). Returns the number of
    processes that computed."""
    global _INHERITED
    n, ex = 1, None
    if cluster is None:
        n = pool_size(workers, len(items), target.backend)
        if n > 1:
            _INHERITED = (fn, payload, target)
            ex = process_pool(n)
    try:
        cluster_facts = None
        if cluster is not None:
            per_worker = cluster.facts(target.backend, target.dtypes)
            facts, n = same_facts(per_worker), len(per_worker)
            cluster_facts = {"scheduler": cluster.address, "workers": per_worker}
        else:
            facts = ex.submit(_facts, target).result() if ex is not None else _facts(target)
        served = begin(facts, cluster_facts) or ()
        items = [i for i in items if i not in served]
        if cluster is not None:
            results = _on_cluster(cluster, fn, payload, items, target, describe, resume_hint)
        else:
            results = _in_pool(ex, items) if ex is not None else _here(fn, payload, items, target)
        for i, result, got in results:
            if got != facts:
                same_facts({"the run's workers": facts, "a worker whose backend differs": got})
            write(i, result)
    except BrokenProcessPool:
        kill_pool(ex)
        raise ExecutorError(
            f"a worker process died (a variant may have crashed the process); {resume_hint}, or with --workers 1 to run in one process"
        ) from None
    except BaseException:
        if ex is not None:
            kill_pool(ex)
        raise
    finally:
        _INHERITED = None
    if ex is not None:
        ex.shutdown(wait=True)
    return n


def progress_bar(total: int, desc: str, unit: str, options: Options, initial: int = 0) -> Any:
    """A progress bar on ``options.stream`` (stderr by default), silent without ``options.progress``."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=options.stream or sys.stderr, disable=not options.progress,
                dynamic_ncols=True, mininterval=0.5)


def check_scheduler(options: Options) -> None:
    """Fail before a run folder exists when ``options.scheduler`` cannot be used."""
    if options.scheduler:
        from rulelab.runs.cluster import check

        check(options.scheduler)


@contextlib.contextmanager
def cluster_for(options: Options, modules: Sequence[str], cases: Sequence[str]) -> Iterator[Any]:
    """The dask cluster of ``options.scheduler`` whose workers load ``modules`` and find
    ``cases`` (None without a scheduler: dask is not imported)."""
    if not options.scheduler:
        yield None
        return
    from rulelab.runs.cluster import connect

    with connect(options.scheduler, modules, cases) as cluster:
        yield cluster
