"""The accuracy sweep: plan -> tasks -> store.

Phase 1 builds every sweep (one per case and dtype) and computes every reference the
plan needs in a process pool, *before* JAX starts its backend (the pool forks, and a
process whose backend runs must not fork). References are taken once per case,
derivative and argument over the union of all dtypes' points (as float64), so one
computation serves every dtype.

Each reference is also rounded once per dtype in that pool (exact integer arithmetic,
shared by every variant and transform compared against it).

Phase 2 evaluates the tasks (case x variant x transform x argument x dtype) on the
backend, one compiled program per case x dtype (``evaluate.evaluate_many``:
compilation, not evaluation, is what a sweep spends its time on), measures each task
against its reference and writes the task's part. On a CPU
backend the tasks are shared among forked worker processes (each starts its own
backend); on an accelerator they run in this process. float64 tasks run with
``jax_enable_x64`` on only for them, so the narrow dtypes' results never depend on
whether the plan has a float64 control. A variant that fails is recorded as an error
and the sweep goes on.

With a scheduler (``Options.scheduler``), the reference chunks and the groups go to a
dask.distributed cluster instead (``rulelab.runs.cluster``); what they compute comes back,
and this process alone writes the cache and the parts, as in a local run.

A run stopped at any point (Ctrl-C, SIGKILL) keeps every part it finished; ``resume``
runs only the rest and assembles the same tables as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rulelab import store
from rulelab.core.errors import UsageError, first_line
from rulelab.core.fingerprint import fingerprint
from rulelab.core.floats import round_double_double
from rulelab.core.processes import kill_pool, worker_init
from rulelab.core.provenance import git_commit, host, versions
from rulelab.jaxrun import backend as backends
from rulelab.jaxrun.evaluate import Outcome, evaluate_many
from rulelab.model.case import Case, get_case
from rulelab.model.contract import MAX_PRECISION, BrokenReference
from rulelab.model.inputs import Sweep, make_sweep
from rulelab.model.modules import load_modules, module_key
from rulelab.model.plan import Plan, plan_from_dict
from rulelab.model.sweep_size import MAX_POINTS, check_size
from rulelab.model.tasks import (
    Task,
    execution_order,
    plan_tasks,
    reference_keys,
    task_groups,
)
from rulelab.reference.compute import reference_pool, references_many
from rulelab.scoring.metrics import FlushReference, flush_reference
from rulelab.scoring.rows import task_rows
from rulelab.store.vocabulary import RunMeta, Status

PHASES = ("sweeps", "references", "rounding", "backend_init", "tasks", "assemble")
"""Wall-clock phases of a session, recorded in meta.json."""
TASK_SECONDS = ("compile", "evaluate", "metrics", "write")
"""Where the time inside tasks goes, summed over tasks (and over workers)."""


class SweepError(UsageError):
    """A sweep cannot start or continue as asked (nothing to run, another backend …)."""


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
    scheduler: str | None = None
    """A dask.distributed scheduler (``tcp://host:port``, or ``local:N``) to send the
    references and tasks to; None: this machine's process pools."""
    stream: TextIO | None = field(default=None, compare=False)
    """Where progress goes; None: sys.stderr as it is when the sweep runs."""


# --- phase 1: sweeps and references ---------------------------------------------------------


@dataclass(frozen=True)
class CaseInputs:
    """A case's sweeps in each dtype, the union of their points as float64, where each
    dtype's points sit in that union, and where the same points as a backend that
    flushes the dtype's subnormals reads them sit (``flush_index``)."""

    sweeps: Mapping[str, Sweep]
    union: tuple[np.ndarray, ...]
    index: Mapping[str, np.ndarray]
    flush_index: Mapping[str, np.ndarray]


def case_inputs(case: Case, plan: Plan, dtypes: Sequence[str]) -> CaseInputs:
    """``case``'s sweeps for ``dtypes`` with the plan's sizes, and the union of their points
    and of their flushed points (in order of first appearance, so it does not depend on
    how numpy sorts). The flushed points cost references only where a coordinate is
    subnormal; which backends flush is known only once the backend starts."""
    with np.errstate(over="ignore"):  # thresholds beyond a narrow dtype's range become inf, as meant
        sweeps = {d: make_sweep(case, d, plan.spec(d, len(case.args)), plan.seed) for d in dtypes}
    sets = [sweeps[d].as_float64() for d in dtypes] + [sweeps[d].flushed() for d in dtypes]
    cols = [np.concatenate([s[i] for s in sets]) for i in range(len(case.args))]
    bits = np.stack([c.view(np.uint64) for c in cols], axis=1)
    _, first, inverse = np.unique(bits, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse = rank[inverse.reshape(-1)]
    index, flush_index, start = {}, {}, 0
    for table in (index, flush_index):
        for d in dtypes:
            table[d] = inverse[start : start + len(sweeps[d])]
            start += len(sweeps[d])
    return CaseInputs(sweeps, tuple(c[first[order]] for c in cols), index, flush_index)


def _bar(total: int, desc: str, unit: str, options: Options) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=options.stream or sys.stderr, disable=not options.progress, dynamic_ncols=True, mininterval=0.5)


References = Mapping[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]
"""(case, derivative order, argument) -> (hi, lo) over the case's union of points."""


def compute_references(
    inputs: Mapping[str, CaseInputs],
    keys: Mapping[str, Sequence[tuple[int, str]]],
    pool: Executor | None,
    options: Options,
    max_precision: int = MAX_PRECISION,
    tasks: int = 1,
) -> References:
    """Every reference the tasks need (from the cache where present, else computed in
    ``pool``, each split into about ``tasks`` tasks), each confirmed up to
    ``max_precision`` bits."""
    total = sum(len(inputs[c].union[0]) * len(ks) for c, ks in keys.items())
    jobs = [(name, order, arg) for name, ks in keys.items() for order, arg in ks]
    with _bar(total, "references", "pt", options) as bar:
        bar.set_postfix_str(f"{len(jobs)} references of {len(keys)} cases", refresh=False)
        values = references_many([(get_case(n), o, a or get_case(n).args[0], inputs[n].union) for n, o, a in jobs], pool, bar.update,
                                 max_precision, tasks)
    return dict(zip(jobs, values))


Rounded = Mapping[tuple[str, int, str, str], tuple[np.ndarray, FlushReference]]
"""(case, derivative order, argument, dtype) -> the reference at that dtype's sweep
points, correctly rounded to the dtype: as IEEE, and as a backend that flushes the
dtype's subnormals has it."""


def _round(job: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]) -> tuple[np.ndarray, FlushReference]:
    """(IEEE, flush-aware) rounding of one reference (the second from the reference at
    the flushed inputs)."""
    hi, lo, f_hi, f_lo, dtype = job
    ieee = round_double_double(hi, lo, dtype)
    return ieee, flush_reference(f_hi, f_lo, dtype, ieee)


def round_references(inputs: Mapping[str, CaseInputs], refs: References, tasks: Sequence[Task], pool: Executor | None) -> Rounded:
    """Each reference rounded once per dtype, as IEEE and as a flushing backend would
    have it (exact integer arithmetic, so worth doing once for all the variants and
    transforms that compare against it, in ``pool``)."""
    keys = list(dict.fromkeys((t.case, t.order, t.arg, t.dtype) for t in tasks))
    jobs = []
    for case, order, arg, dtype in keys:
        hi, lo = refs[(case, order, arg)]
        idx, fidx = inputs[case].index[dtype], inputs[case].flush_index[dtype]
        jobs.append((hi[idx], lo[idx], hi[fidx], lo[fidx], dtype))
    results = pool.map(_round, jobs) if pool is not None and len(jobs) > 1 else map(_round, jobs)
    return dict(zip(keys, results))


# --- phase 2: tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """Everything phase 2 needs, tasks in the order they run. Forked evaluation workers
    inherit it (see ``_WORK``)."""

    run: Path
    plan: Plan
    inputs: Mapping[str, CaseInputs]
    refs: References
    rounded: Rounded
    backend: str | None
    tasks: Sequence[Task]

    @functools.cached_property
    def groups(self) -> list[tuple[Task, ...]]:
        """The tasks as evaluated: one group per case x dtype."""
        return task_groups(self.tasks)


@dataclass(frozen=True)
class GroupInput:
    """Everything evaluating one group of tasks (one case x dtype) needs and nothing
    more, so that it can travel to a cluster worker: the dtype's sweep, and per
    (derivative order, argument) the reference at its points and its two roundings."""

    tasks: tuple[Task, ...]
    sweep: Sweep
    refs: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    rounded: Mapping[tuple[int, str], tuple[np.ndarray, FlushReference]]
    backend: str | None
    worst: int
    samples: int


def group_input(work: Work, group: Sequence[Task]) -> GroupInput:
    """The :class:`GroupInput` of ``group`` cut from ``work``."""
    first = group[0]
    inp = work.inputs[first.case]
    idx = inp.index[first.dtype]
    keys = dict.fromkeys((t.order, t.arg) for t in group)
    refs = {k: tuple(a[idx] for a in work.refs[(first.case, *k)]) for k in keys}
    rounded = {k: work.rounded[(first.case, *k, first.dtype)] for k in keys}
    return GroupInput(tuple(group), inp.sweeps[first.dtype], refs, rounded, work.backend, work.plan.worst, work.plan.samples)


Measured = list[tuple[tuple[str, ...], dict[str, Any], dict[str, float]]]
"""Per task of a group: its key, its rows of each table and its info (wall time)."""


def measure_group(g: GroupInput, platform: str, flushes: Mapping[str, bool]) -> tuple[Measured, dict[str, float]]:
    """Evaluate one group (one compiled program: ``evaluate_many``) and measure each
    task against its reference; any failure of the variant (or of measuring it)
    becomes an error row; where the backend ``flushes`` the dtype, points are also
    scored flush-aware. Returns each task's rows and the seconds per step."""
    secs = dict.fromkeys(TASK_SECONDS, 0.0)
    first = g.tasks[0]
    case = get_case(first.case)
    t0 = time.perf_counter()
    try:
        with backends.x64(first.dtype == "float64"):
            outcomes = evaluate_many(case, [(t.variant, t.transform, t.arg or None) for t in g.tasks], first.dtype, g.sweep.points, g.backend)
    except Exception as exc:  # noqa: BLE001 - a failure of the group is every task's error
        where = f"case {first.case!r}, dtype {first.dtype}"
        outcomes = [Outcome("error", f"{where}: {first_line(exc)}")] * len(g.tasks)
    secs["compile"] = sum(o.compile_s for o in outcomes)
    secs["evaluate"] = time.perf_counter() - t0 - secs["compile"]
    out: Measured = []
    for t, outcome in zip(g.tasks, outcomes):
        t1 = time.perf_counter()
        try:
            rounded, flush = g.rounded[(t.order, t.arg)]
            rows = task_rows(t, case, g.sweep, outcome, g.refs[(t.order, t.arg)], platform, rounded=rounded,
                             flush=flush if flushes.get(t.dtype) else None, n_worst=g.worst, n_samples=g.samples)
        except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the others
            where = f"case {t.case!r}, variant {t.variant!r}, transform {t.transform!r}, dtype {t.dtype}"
            rows = task_rows(t, case, g.sweep, Outcome("error", f"{where}: {first_line(exc)}"), None, platform)
        t2 = time.perf_counter()
        secs["metrics"] += t2 - t1
        out.append((t.key, rows, {"wall_s": t2 - t1 + outcome.compile_s + outcome.run_s}))
    return out, secs


def write_measured(run: Path, measured: Measured, secs: dict[str, float]) -> dict[str, float]:
    """Write each task's part (atomic: a task is done once its part exists); ``secs``
    with the writing time added."""
    t0 = time.perf_counter()
    for key, rows, info in measured:
        store.write_part(run, key, rows, info)
    return {**secs, "write": secs.get("write", 0.0) + time.perf_counter() - t0}


def run_group(work: Work, group: Sequence[Task], platform: str, flushes: Mapping[str, bool]) -> dict[str, float]:
    """Evaluate, measure and write one group of tasks; seconds per step."""
    return write_measured(work.run, *measure_group(group_input(work, group), platform, flushes))


_WORK: Work | None = None
"""Phase 2's state, set before evaluation workers fork so that they inherit it."""


def _worker_facts(backend: str | None, dtypes: tuple[str, ...]) -> dict[str, Any]:
    return backends.facts(backend, dtypes)


def _worker_group(i: int, platform: str, flushes: Mapping[str, bool]) -> tuple[int, dict[str, float]]:
    assert _WORK is not None
    return i, run_group(_WORK, _WORK.groups[i], platform, flushes)


def evaluation_workers(options: Options, n_tasks: int) -> int:
    """How many processes evaluate: several only on a CPU backend (one accelerator
    is not shared between processes) and only while this process's JAX is unstarted."""
    n = min(options.workers or os.cpu_count() or 1, n_tasks)
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods() or backends.started():
        return 1
    if options.backend == "cpu":
        return n
    if options.backend is None:
        ok, platform = backends.probe(None)
        return n if ok and platform == "cpu" else 1
    return 1


def run_tasks(work: Work, options: Options, begin: Callable[..., None], cluster: Any = None) -> tuple[dict[str, float], int]:
    """Phase 2: start the backend (``begin(facts)`` is called once its facts are known),
    then run every task (on ``cluster``'s workers when given); returns seconds per step
    (summed) and the number of workers."""
    secs = dict.fromkeys(TASK_SECONDS, 0.0)

    def add(task_secs: dict[str, float]) -> None:
        for k, v in task_secs.items():
            secs[k] += v

    if cluster is not None:
        _run_on_cluster(work, options, begin, cluster, add)
        return secs, len(cluster.workers())
    n = evaluation_workers(options, len(work.tasks))
    if n == 1:
        facts = backends.facts(work.backend, work.plan.dtypes)
        begin(facts)
        with _bar(len(work.tasks), "evaluate", "task", options) as bar:
            for group in work.groups:
                bar.set_postfix_str(str(group[0]), refresh=False)
                add(run_group(work, group, facts["backend"], facts["flushes_subnormals"]))
                bar.update(len(group))
        return secs, 1

    global _WORK
    _WORK = work
    ex = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=worker_init, initargs=(os.getpid(),))
    try:
        facts = ex.submit(_worker_facts, work.backend, work.plan.dtypes).result()
        begin(facts)
        with _bar(len(work.tasks), "evaluate", "task", options) as bar:
            groups = work.groups
            pending = {ex.submit(_worker_group, i, facts["backend"], facts["flushes_subnormals"]) for i in range(len(groups))}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i, task_secs = fut.result()
                    add(task_secs)
                    bar.set_postfix_str(str(groups[i][0]), refresh=False)
                    bar.update(len(groups[i]))
    except BrokenProcessPool:
        raise SweepError(
            f"an evaluation worker died (a variant may have crashed the process); the finished tasks are kept: "
            f"continue with rulelab sweep --resume {work.run.name}, or with --workers 1 to run in one process"
        ) from None
    except BaseException:
        kill_pool(ex)
        raise
    finally:
        _WORK = None
    ex.shutdown(wait=True)
    return secs, n


def _run_on_cluster(work: Work, options: Options, begin: Callable[..., None], cluster: Any, add: Callable[[dict[str, float]], None]) -> None:
    """Phase 2 on a dask cluster: one future per group; the rows come back and are
    written here. Every result must come from a worker with the run's backend facts."""
    from distributed import as_completed

    from rulelab.runs.cluster import same_facts

    per_worker = cluster.facts(work.backend, work.plan.dtypes)
    facts = same_facts(per_worker)
    begin(facts, {"scheduler": cluster.address, "workers": per_worker})
    groups = work.groups
    with _bar(len(work.tasks), "evaluate", "task", options) as bar:
        futures = {cluster.submit_group(group_input(work, g), work.plan.dtypes, options.compile_cache): i for i, g in enumerate(groups)}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                got, (measured, task_secs) = fut.result()
            except Exception as exc:  # noqa: BLE001 - the cluster lost the group (a worker died too often)
                raise SweepError(
                    f"the cluster failed on {groups[i][0].case} ({groups[i][0].dtype}): {first_line(exc)}; the finished tasks are "
                    f"kept: continue with rulelab sweep --resume {work.run.name} --scheduler {cluster.address}"
                ) from None
            if got != facts:
                same_facts({"the run's workers": facts, "a worker that joined during the run": got})
            add(write_measured(work.run, measured, task_secs))
            bar.set_postfix_str(str(groups[i][0]), refresh=False)
            bar.update(len(groups[i]))


# --- runs ----------------------------------------------------------------------------------------------


def start(
    plan: Plan,
    root: str | Path = "results",
    modules: Sequence[str] = (),
    options: Options = Options(),
    on_start: Callable[[Path], None] | None = None,
) -> Path:
    """Run ``plan`` into a new run folder under ``root`` and return the folder.
    ``modules`` names the user modules its cases come from (recorded, so that a resume
    loads them again); ``on_start(run)`` is called once the folder exists."""
    tasks = plan_tasks(plan)
    if not tasks:
        raise SweepError(f"plan {plan.name!r} selects nothing to run: none of the chosen cases has one of its variants")
    size = check_size(plan, options.max_points)
    backends.check(options.backend)
    _check_scheduler(options)
    if options.progress:
        print(f"plan {plan.name!r}: {size}", file=options.stream or sys.stderr)
    run = store.new_run(root)
    meta = RunMeta(
        code=code_fingerprints(tasks),
        run_id=run.name,
        plan=plan.to_dict(),
        started=store.now(),
        plan_text=Path(plan.path).read_text() if plan.path and Path(plan.path).is_file() else None,
        modules=tuple(module_key(m) for m in modules),
        backend_requested=options.backend,
        n_tasks=len(tasks),
        versions=versions(),
        git=git_commit(),
        host=host(),
    )
    store.write_meta(run, meta)
    if on_start:
        on_start(run)
    return _execute(run, meta, plan, tasks, root, options)


def resume(
    run_id: str, root: str | Path = "results", options: Options | None = None, on_start: Callable[[Path], None] | None = None
) -> Path:
    """Continue a run that stopped part-way: load its modules and plan as recorded and
    run only the tasks without a part. A complete run is returned as it is."""
    run = store.open_run(root, run_id)
    meta = store.read_meta(run)
    if meta.status == "complete":
        return run
    options = options or Options()
    requested = meta.backend_requested
    if options.backend is not None and options.backend != requested:
        raise SweepError(f"run {run.name} was started with backend {requested!r}; resume it on the same backend (drop --backend)")
    load_modules(meta.modules)
    plan = plan_from_dict(meta.plan)
    tasks = plan_tasks(plan)
    meta = _check_unchanged(run, meta, tasks)
    options = replace(options, backend=requested)
    backends.check(options.backend)
    _check_scheduler(options)
    if on_start:
        on_start(run)
    return _execute(run, meta, plan, tasks, run.parent.parent, options)


def code_fingerprints(tasks: Sequence[Task]) -> dict[str, str]:
    """A fingerprint of each case's reference and of each variant a run measures."""
    out = {}
    for name, variant in dict.fromkeys((t.case, t.variant) for t in tasks):
        case = get_case(name)
        if f"{name}/reference" not in out:
            out[f"{name}/reference"] = fingerprint(case.reference, *case.derivatives.values(), *((c.note, c.where, c.value) for c in case.conventions))
        out[f"{name}/{variant}"] = fingerprint(case.variants[variant].fn)
    return out


def _check_unchanged(run: Path, meta: RunMeta, tasks: Sequence[Task]) -> RunMeta:
    """Refuse to resume a run whose code or library versions changed since it measured
    some of its tasks: its tables would mix results of two programs. Code that changed
    where nothing was measured yet (a reference fixed after it stopped the run) is
    simply used, and recorded. Returns the meta with the fingerprints now in force."""
    now = code_fingerprints(tasks)
    done = {(k[0], k[1]) for k in store.written(run, [t.key for t in tasks])}
    if not done:
        return replace(meta, code=now, versions=versions())
    measured = {f"{c}/{v}" for c, v in done} | {f"{c}/reference" for c, _ in done}
    changed = [k for k, v in now.items() if meta.code.get(k, v) != v and k in measured]
    moved = [f"{k} {meta.versions.get(k)} -> {v}" for k, v in versions().items() if k in meta.versions and meta.versions[k] != v]
    if changed or moved:
        what = "; ".join(filter(None, [
            f"code changed since the run started: {', '.join(changed)}" if changed else "",
            f"versions changed: {', '.join(moved)}" if moved else "",
        ]))
        raise SweepError(
            f"run {run.name} cannot be resumed without mixing results ({what}); start a new run "
            "(rulelab sweep with the same plan), or restore the code it was started with"
        )
    return replace(meta, code=now)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] += time.perf_counter() - t0


def _execute(run: Path, meta: RunMeta, plan: Plan, tasks: list[Task], root: str | Path, options: Options) -> Path:
    """Phases 1 and 2 for the tasks of ``run`` that have no part, then the tables. A
    session that stops on an error or an interrupt marks the run ``stopped`` (with the
    reason) and says how to resume it; what it finished is kept."""
    record = _Record(replace(meta, status="running", stopped=None))
    if meta.status != "running":
        store.write_meta(run, record.meta)
    try:
        return _execute_session(run, record, plan, tasks, root, options)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else first_line(exc)
        with contextlib.suppress(Exception):
            store.write_meta(run, replace(record.meta, status="stopped", stopped={"at": store.now(), "reason": reason}))
        if isinstance(exc, BrokenReference):
            raise BrokenReference(
                f"{exc}. The run is kept: fix the reference, then rulelab sweep --resume {run.name} --out {root}"
            ) from None
        raise


def _check_scheduler(options: Options) -> None:
    if options.scheduler:
        from rulelab.runs.cluster import check

        check(options.scheduler)


@contextlib.contextmanager
def _cluster(options: Options, modules: Sequence[str], cases: Sequence[str]) -> Iterator[Any]:
    """The dask cluster of ``options.scheduler`` (None without one: dask is not imported)."""
    if not options.scheduler:
        yield None
        return
    from rulelab.runs.cluster import connect

    with connect(options.scheduler, modules, cases) as cluster:
        yield cluster


@dataclass
class _Record:
    """The run's meta as this session last wrote it (the one thing a session updates)."""

    meta: RunMeta


def _execute_session(run: Path, record: _Record, plan: Plan, tasks: list[Task], root: str | Path, options: Options) -> Path:
    t_start = time.perf_counter()
    phases = dict.fromkeys(PHASES, 0.0)
    session: dict[str, Any] = {"started": store.now(), "pid": os.getpid(), "host": socket.gethostname(), "phases": phases}
    keys = [t.key for t in tasks]
    done = store.finished(run, keys)
    todo = [t for t in tasks if t.key not in done]
    session["tasks_before"] = len(done)

    with _timed(phases, "sweeps"):
        dtypes_of: dict[str, dict[str, None]] = {}
        for t in todo:
            dtypes_of.setdefault(t.case, {})[t.dtype] = None
        inputs = {c: case_inputs(get_case(c), plan, sorted(ds, key=plan.dtypes.index)) for c, ds in dtypes_of.items()}
    secs = dict.fromkeys(TASK_SECONDS, 0.0)
    with _cluster(options, record.meta.modules, sorted(dtypes_of)) if todo else contextlib.nullcontext() as cluster:
        with contextlib.nullcontext(cluster.executor) if cluster else reference_pool(options.workers) as pool:
            with _timed(phases, "references"):
                # a pool: 16 tasks per worker, for balance; a cluster: 4, as each is a round trip
                n = 4 * len(cluster.workers()) if cluster else 16 * (options.workers or os.cpu_count() or 1)
                refs = compute_references(inputs, reference_keys(todo), pool, options, plan.max_precision, n)
            with _timed(phases, "rounding"):
                rounded = round_references(inputs, refs, todo, pool)
        if todo:
            session["jax_compilation_cache"] = backends.use_compilation_cache(options.compile_cache)
            work = Work(run, plan, inputs, refs, rounded, options.backend, execution_order(todo))
            t_init = time.perf_counter()

            def begin(facts: dict[str, Any], cluster_facts: dict[str, Any] | None = None) -> None:
                phases["backend_init"] += time.perf_counter() - t_init
                session["backend"] = facts
                if cluster_facts:
                    session["cluster"] = cluster_facts
                first = record.meta.backend or facts
                if facts["backend"] != first["backend"]:
                    raise SweepError(f"run {run.name} ran on {first['backend']}; this session's backend is {facts['backend']}")
                record.meta = replace(record.meta, backend=first, sessions=(*record.meta.sessions, session))
                store.write_meta(run, record.meta)

            t_tasks = time.perf_counter()
            secs, session["workers"] = run_tasks(work, options, begin, cluster)
            phases["tasks"] += time.perf_counter() - t_tasks - phases["backend_init"]
        else:
            record.meta = replace(record.meta, sessions=(*record.meta.sessions, session))

    with _timed(phases, "assemble"):
        parts = store.finished(run, keys)
        tables = store.assemble(run, keys, parts)
    session.update(ended=store.now(), tasks_run=len(todo), wall_s=time.perf_counter() - t_start, task_seconds=secs)
    sessions = record.meta.sessions
    record.meta = replace(
        record.meta,
        phases={k: sum(s.get("phases", {}).get(k, 0.0) for s in sessions) for k in PHASES},
        task_seconds={k: sum(s.get("task_seconds", {}).get(k, 0.0) for s in sessions) for k in TASK_SECONDS},
        tasks={"/".join(k): parts[tuple(k)]["info"].get("wall_s") for k in keys},
        counts={s.value: int((tables["summary"]["status"] == s.value).sum()) for s in (Status.OK, Status.UNSUPPORTED, Status.ERROR)},
        status="complete",
        ended=store.now(),
    )
    store.write_meta(run, record.meta)
    store.set_latest(root, run.name)
    store.remove_parts(run)
    return run
