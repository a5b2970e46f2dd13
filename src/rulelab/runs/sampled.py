"""The accuracy sweep: plan -> tasks -> store.

Phase 1 builds every sweep (one per case and dtype) and computes every reference the
plan needs in a process pool, *before* JAX starts its backend (the pool forks, and a
process whose backend runs must not fork). References are taken once per case,
derivative and argument over the union of all dtypes' points (as float64), so one
computation serves every dtype.

Each reference is rounded to a dtype where its group is evaluated, once for every
variant and transform compared against it (exact integer arithmetic); a group served
from the cache of measured results (``result_cache``) is not rounded at all.

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
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rulelab import store
from rulelab.core.errors import first_line
from rulelab.core.fingerprint import fingerprint
from rulelab.core.floats import round_double_double
from rulelab.core.shelf import digest
from rulelab.jaxrun import backend as backends
from rulelab.jaxrun.evaluate import Outcome, evaluate_many
from rulelab.model.case import Case, get_case
from rulelab.model.contract import MAX_PRECISION, BrokenReference
from rulelab.model.inputs import Sweep, make_sweep
from rulelab.model.plan import Plan, plan_from_dict
from rulelab.model.sweep_size import check_size
from rulelab.model.tasks import (
    Task,
    execution_order,
    plan_tasks,
    reference_keys,
    task_groups,
)
from rulelab.reference.compute import reference_pool, references_filled
from rulelab.runs import lifecycle, provisional, result_cache
from rulelab.runs.blaming import blame_run
from rulelab.runs.executors import (
    Options,
    Target,
    check_scheduler,
    cluster_for,
    progress_bar,
    run_items,
)
from rulelab.runs.lifecycle import RunError
from rulelab.scoring.metrics import FlushReference, flush_reference
from rulelab.scoring.rows import task_rows
from rulelab.store.vocabulary import (
    CACHE_RECORDS,
    FAST_TIER_RECORD,
    SAMPLED_PHASES,
    TASK_SECONDS,
    Status,
)

GROUPS_RECORD, BLAME_RECORD = CACHE_RECORDS
"""The session record's keys for the cache of groups and of blame."""

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


References = Mapping[tuple[str, int, str], tuple[np.ndarray, np.ndarray]]
"""(case, derivative order, argument) -> (hi, lo) over the case's union of points."""
Fast = Mapping[tuple[str, int, str], provisional.UnionTier]
"""(case, derivative order, argument) -> where over the union its reference is the fast
tier's, provisional (only references that have such points)."""


def compute_references(
    inputs: Mapping[str, CaseInputs],
    keys: Mapping[str, Sequence[tuple[int, str]]],
    pool: Executor | None,
    options: Options,
    max_precision: int = MAX_PRECISION,
    tasks: int = 1,
    samples: int = 0,
) -> tuple[References, Fast]:
    """Every reference the tasks need (from the cache where present, else, with
    ``options.fast_tier``, provisional where the fast tier settles the point and is worth
    its validation, else computed in ``pool``, each split into about ``tasks`` tasks),
    each confirmed up to ``max_precision`` bits; and where each is provisional.
    ``samples``: the plan's samples per result (their points are always mpmath's)."""
    total = sum(len(inputs[c].union[0]) * len(ks) for c, ks in keys.items())
    jobs = [(name, order, arg) for name, ks in keys.items() for order, arg in ks]
    read = {n: provisional.readers(i.union, i.sweeps, i.index, i.flush_index, samples) for n, i in inputs.items()
            if options.fast_tier and get_case(n).fast_reference}
    fills = [provisional.fill(get_case(n), o, a or get_case(n).args[0], inputs[n].union, read[n], pool, tasks) if n in read else None
             for n, o, a in jobs]
    with progress_bar(total, "references", "pt", options) as bar:
        bar.set_postfix_str(f"{len(jobs)} references of {len(keys)} cases", refresh=False)
        values = references_filled([(get_case(n), o, a or get_case(n).args[0], inputs[n].union) for n, o, a in jobs], fills, pool,
                                   bar.update, max_precision, tasks)
    tiers = {j: provisional.UnionTier.of(p, f) for j, (_, _, p), f in zip(jobs, values, fills)}
    return {j: (hi, lo) for j, (hi, lo, _) in zip(jobs, values)}, {j: t for j, t in tiers.items() if t is not None}


def _round(job: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]) -> tuple[np.ndarray, FlushReference]:
    """(IEEE, flush-aware) rounding of one reference (the second from the reference at
    the flushed inputs)."""
    hi, lo, f_hi, f_lo, dtype = job
    ieee = round_double_double(hi, lo, dtype)
    return ieee, flush_reference(f_hi, f_lo, dtype, ieee)


# --- phase 2: tasks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """Everything phase 2 needs, tasks in the order they run (forked evaluation workers
    inherit it and cut their group's input from it)."""

    run: Path
    plan: Plan
    inputs: Mapping[str, CaseInputs]
    refs: References
    backend: str | None
    tasks: Sequence[Task]
    fast: Fast = field(default_factory=dict)

    @functools.cached_property
    def groups(self) -> list[tuple[Task, ...]]:
        """The tasks as evaluated: one group per case x dtype."""
        return task_groups(self.tasks)


@dataclass(frozen=True)
class GroupInput:
    """Everything evaluating one group of tasks (one case x dtype) needs and nothing
    more, so that it can travel to a cluster worker: the dtype's sweep, and per
    (derivative order, argument) the reference at its points and at the points as a
    backend that flushes the dtype's subnormals reads them."""

    tasks: tuple[Task, ...]
    sweep: Sweep
    refs: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    flush_refs: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    backend: str | None
    worst: int
    samples: int
    provisional: Mapping[tuple[int, str], provisional.Provisional] = field(default_factory=dict)
    max_precision: int = MAX_PRECISION


def group_input(work: Work, group: Sequence[Task]) -> GroupInput:
    """The :class:`GroupInput` of ``group`` cut from ``work``."""
    first = group[0]
    inp = work.inputs[first.case]
    idx, fidx = inp.index[first.dtype], inp.flush_index[first.dtype]
    keys = dict.fromkeys((t.order, t.arg) for t in group)
    refs = {k: tuple(a[idx] for a in work.refs[(first.case, *k)]) for k in keys}
    flush_refs = {k: tuple(a[fidx] for a in work.refs[(first.case, *k)]) for k in keys}
    tiers = {k: work.fast[(first.case, *k)].group(idx, first.dtype) for k in keys if (first.case, *k) in work.fast}
    return GroupInput(tuple(group), inp.sweeps[first.dtype], refs, flush_refs, work.backend,
                      work.plan.worst, work.plan.samples, {k: p for k, p in tiers.items() if p is not None},
                      work.plan.max_precision)


Measured = list[tuple[tuple[str, ...], dict[str, Any], dict[str, float]]]
"""Per task of a group: its key, its rows of each table and its info (wall time)."""


def measure_group(g: GroupInput, facts: Mapping[str, Any]) -> tuple[Measured, dict[str, float]]:
    """Evaluate one group (one compiled program: ``evaluate_many``) and measure each
    task against its reference, on the backend ``facts`` describe; any failure of the
    variant (or of measuring it) becomes an error row; where the backend flushes the
    dtype, points are also scored flush-aware. Returns each task's rows and the seconds
    per step."""
    platform, flushes = facts["backend"], facts["flushes_subnormals"]
    secs = dict.fromkeys(TASK_SECONDS, 0.0)
    first = g.tasks[0]
    case = get_case(first.case)
    t0 = time.perf_counter()
    try:
        with backends.x64(first.dtype == "float64"):
            outcomes = evaluate_many(case, [(t.variant, t.transform, t.arg or None) for t in g.tasks], first.dtype, g.sweep.points, g.backend)
    except Exception as exc:  # noqa: BLE001 - a failure of the group is every task's error
        where = f"case {first.case!r}, dtype {first.dtype}"
        outcomes = [Outcome(Status.ERROR, f"{where}: {first_line(exc)}")] * len(g.tasks)
    secs["compile"] = sum(o.compile_s for o in outcomes)
    secs["evaluate"] = time.perf_counter() - t0 - secs["compile"]
    t1 = time.perf_counter()
    # each reference rounded once to the dtype (exact integer arithmetic), for every variant and transform of the group
    rounded = {k: _round((*g.refs[k], *g.flush_refs[k], first.dtype)) for k in g.refs}
    refs = g.refs
    if g.provisional:  # (mpmath where a provisional reference's fractional error shows)
        refs = provisional.settled(case, g.tasks, outcomes, g.sweep, g.refs, g.provisional, rounded, bool(flushes.get(first.dtype)),
                                   g.worst, g.max_precision)
    secs["metrics"] += time.perf_counter() - t1
    out: Measured = []
    for t, outcome in zip(g.tasks, outcomes):
        t1 = time.perf_counter()
        try:
            ieee, flush = rounded[(t.order, t.arg)]
            rows = task_rows(t, case, g.sweep, outcome, refs[(t.order, t.arg)], platform, rounded=ieee,
                             flush=flush if flushes.get(t.dtype) else None, n_worst=g.worst, n_samples=g.samples)
        except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the others
            where = f"case {t.case!r}, variant {t.variant!r}, transform {t.transform!r}, dtype {t.dtype}"
            rows = task_rows(t, case, g.sweep, Outcome(Status.ERROR, f"{where}: {first_line(exc)}"), None, platform)
        t2 = time.perf_counter()
        secs["metrics"] += t2 - t1
        out.append((t.key, rows, {"wall_s": t2 - t1 + outcome.compile_s + outcome.run_s}))
    return out, secs


def group_keys(work: Work, code: Mapping[str, str], backend: str | None) -> list[str]:
    """Each group's key in the cache of measured results (``result_cache``): the run's
    settings and the code that measures, the group's tasks, the fingerprints of its
    variants and reference, and the bits of its points and of its references (at the
    points, and at the points as a flushing backend reads them)."""
    settings = result_cache.settings_key(backend, fingerprint(measure_group, group_keys))
    keys = []
    for group in work.groups:
        g, first = group_input(work, group), group[0]
        keys.append(digest(
            settings, first.case, first.dtype, [t.key for t in group], get_case(first.case).args,
            code.get(f"{first.case}/reference"), [code.get(f"{first.case}/{t.variant}") for t in group],
            g.worst, g.samples, result_cache.inputs_digest([g.sweep.points, g.refs, g.flush_refs]),
        ))
    return keys


def run_tasks(work: Work, options: Options, begin: Callable[..., None], resume_command: str, cluster: Any = None,
              cache: result_cache.Use | None = None) -> tuple[dict[str, float], int]:
    """Phase 2: every group of tasks evaluated and measured (in this process, forked
    workers or ``cluster``'s), each task's part written here as its group comes back;
    ``begin(facts, cluster_facts)`` is called once the backend's facts are known. With
    ``cache``, the groups it serves are written from it and not computed, and every
    group computed is recorded in it. Returns seconds per step (summed) and the number
    of processes."""
    secs = dict.fromkeys(TASK_SECONDS, 0.0)
    groups = work.groups
    with progress_bar(len(work.tasks), "evaluate", "task", options) as bar:

        def write(i: int, result: tuple[Measured, dict[str, float]], served: bool = False) -> None:
            measured, task_secs = result
            t0 = time.perf_counter()
            for key, rows, info in measured:
                store.write_part(work.run, key, rows, info)
            task_secs["write"] = time.perf_counter() - t0
            for k, v in task_secs.items():
                secs[k] += v
            if cache is not None and not served:
                cache.record(i, measured, f"{groups[i][0].case} ({groups[i][0].dtype})")
            bar.set_postfix_str(str(groups[i][0]), refresh=False)
            bar.update(len(groups[i]))

        def started(facts: dict[str, Any], cluster_facts: Mapping[str, Any] | None = None) -> list[int]:
            begin(facts, cluster_facts)
            if cache is None:
                return []
            hits = cache.begin(facts)
            for i, measured in hits.items():
                write(i, (measured, {}), served=True)
            return list(hits)

        n = run_items(
            measure_group, lambda i: group_input(work, groups[i]), list(range(len(groups))),
            Target(work.backend, work.plan.dtypes, options.compile_cache), write=write, begin=started,
            workers=options.workers, cluster=cluster, describe=lambda i: f"{groups[i][0].case} ({groups[i][0].dtype})",
            resume_hint=f"the finished tasks are kept: continue with {resume_command}",
        )
    return secs, n


def run_cached(work: Work, options: Options, begin: Callable[..., None], session: lifecycle.Session,
               cluster: Any = None) -> tuple[dict[str, float], int, result_cache.Use | None]:
    """:func:`run_tasks` with the cache of measured results (unless ``options`` turn it
    off): unchanged groups served, a sample of them re-evaluated, and on a difference
    the served groups computed again. Returns seconds per step, processes, the cache's use."""
    resume = session.resume_command(options.scheduler)
    if not result_cache.enabled(options.result_cache):
        return (*run_tasks(work, options, begin, resume, cluster), None)
    cache = result_cache.Use("groups", group_keys(work, session.meta.code, options.backend), result_cache.measured_difference)
    secs, n = run_tasks(work, options, begin, resume, cluster, cache)
    if cache.mismatch:
        print(cache.mismatch, file=options.stream or sys.stderr)
        again = sorted(cache.recover())
        redo = replace(work, tasks=[t for i in again for t in work.groups[i]])
        fill = result_cache.Use("groups", [cache.keys[i] for i in again], result_cache.measured_difference)
        more, _ = run_tasks(redo, options, lambda *a: None, resume, cluster, fill)
        secs = {k: secs[k] + more[k] for k in secs}
    return secs, n, cache


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
        raise RunError(f"plan {plan.name!r} selects nothing to run: none of the chosen cases has one of its variants")
    size = check_size(plan, options.max_points)
    backends.check(options.backend)
    check_scheduler(options)
    if options.progress:
        print(f"plan {plan.name!r}: {size}", file=options.stream or sys.stderr)
    session = lifecycle.create(
        root, plan.to_dict(), tasks, backend=options.backend, modules=modules,
        plan_text=Path(plan.path).read_text() if plan.path and Path(plan.path).is_file() else None,
    )
    return _execute(session, plan, tasks, options, on_start)


def resume(
    run_id: str, root: str | Path = "results", options: Options | None = None, on_start: Callable[[Path], None] | None = None,
    modules: Sequence[str] = (),
) -> Path:
    """Continue a run that stopped part-way: load its modules (and ``modules``) and its
    plan as recorded and run only the tasks without a part. A complete run is returned
    as it is."""
    options = options or Options()
    session = lifecycle.reopen(root, run_id, options.backend, modules)
    if session.meta.status == lifecycle.COMPLETE:
        return session.run
    plan = plan_from_dict(session.meta.plan)
    tasks = plan_tasks(plan)
    done = {tuple(k) for k in store.written(session.run, [t.key for t in tasks])}
    lifecycle.check_unchanged(session, tasks, [t for t in tasks if t.key in done])
    options = replace(options, backend=session.meta.backend_requested)
    backends.check(options.backend)
    check_scheduler(options)
    return _execute(session, plan, tasks, options, on_start)


@contextlib.contextmanager
def _timed(phases: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    finally:
        phases[name] += time.perf_counter() - t0


def _execute(session: lifecycle.Session, plan: Plan, tasks: list[Task], options: Options, on_start: Callable[[Path], None] | None) -> Path:
    """Phases 1 and 2 for the tasks of the run that have no part, then the tables."""
    try:
        with lifecycle.running(session, on_start):
            return _execute_session(session, plan, tasks, options)
    except BrokenReference as exc:
        raise BrokenReference(
            f"{exc}. The run is kept: fix the reference, then {session.resume_command()}"
        ) from None


def _execute_session(session: lifecycle.Session, plan: Plan, tasks: list[Task], options: Options) -> Path:
    run = session.run
    t_start = time.perf_counter()
    phases = dict.fromkeys(SAMPLED_PHASES, 0.0)
    record: dict[str, Any] = {"started": store.now(), "pid": os.getpid(), "host": socket.gethostname(), "phases": phases}
    keys = [t.key for t in tasks]
    done = store.finished(run, keys)
    todo = [t for t in tasks if t.key not in done]
    record["tasks_before"] = len(done)

    with _timed(phases, "sweeps"):
        dtypes_of: dict[str, dict[str, None]] = {}
        for t in todo:
            dtypes_of.setdefault(t.case, {})[t.dtype] = None
        inputs = {c: case_inputs(get_case(c), plan, sorted(ds, key=plan.dtypes.index)) for c, ds in dtypes_of.items()}
    secs = dict.fromkeys(TASK_SECONDS, 0.0)
    cached_groups = None  # (the cache keys of the groups run now, for the blame's)
    with cluster_for(options, session.meta.modules, sorted(dtypes_of)) if todo else contextlib.nullcontext() as cluster:
        # (a process whose JAX has started, a notebook's or a test's, is not forked: references are computed in it)
        ref_workers = 1 if backends.started() else options.workers
        with contextlib.nullcontext(cluster.executor) if cluster else reference_pool(ref_workers) as pool:
            with _timed(phases, "references"):
                # a pool: 16 tasks per worker, for balance; a cluster: 4, as each is a round trip
                n = 4 * len(cluster.workers()) if cluster else 16 * (options.workers or os.cpu_count() or 1)
                refs, fast = compute_references(inputs, reference_keys(todo), pool, options, plan.max_precision, n, plan.samples)
                record[FAST_TIER_RECORD] = {f"{c}/{f'd{o}_{a}' if o else 'value'}": int(t.mask.sum()) for (c, o, a), t in fast.items()}
        if todo:
            record["jax_compilation_cache"] = backends.use_compilation_cache(options.compile_cache)
            work = Work(run, plan, inputs, refs, options.backend, execution_order(todo), fast)
            t_init = time.perf_counter()

            def begin(facts: dict[str, Any], cluster_facts: Mapping[str, Any] | None = None) -> None:
                phases["backend_init"] += time.perf_counter() - t_init
                session.begin(record, facts, cluster_facts)

            t_tasks = time.perf_counter()
            secs, record["workers"], cache = run_cached(work, options, begin, session, cluster)
            if cache is not None:
                record[GROUPS_RECORD] = cache.stats()
                cached_groups = {(g[0].case, g[0].dtype): k for g, k in zip(work.groups, cache.keys)}
            phases["tasks"] += time.perf_counter() - t_tasks - phases["backend_init"]
        else:
            session.add_session(record)

    with _timed(phases, "assemble"):
        parts = store.finished(run, keys)
        tables = store.assemble(run, keys, parts)
    with _timed(phases, "blame"):
        stats = blame_run(session, tables, tuple(plan.dtypes), options, cached_groups)
        if stats is not None:
            record[BLAME_RECORD] = stats
    record.update(ended=store.now(), tasks_run=len(todo), wall_s=time.perf_counter() - t_start, task_seconds=secs)
    sessions = session.meta.sessions
    return lifecycle.complete(
        session, tables,
        phases={k: sum(s.get("phases", {}).get(k, 0.0) for s in sessions) for k in SAMPLED_PHASES},
        task_seconds={k: sum(s.get("task_seconds", {}).get(k, 0.0) for s in sessions) for k in TASK_SECONDS},
        tasks={"/".join(k): parts[tuple(k)]["info"].get("wall_s") for k in keys},
    )
