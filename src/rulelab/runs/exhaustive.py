"""Every finite float32 input of a case of one argument (``rulelab sweep exhaustive32``),
or every pair of finite 16-bit inputs of a case of two (``rulelab sweep exhaustive16``).

The pitfall: 4,278,190,080 points (or 65,280^2 pairs) can neither be stored nor given mpmath references
(tens of core-hours per transform). So the inputs are taken in chunks of consecutive
bit patterns, each scored and reduced to aggregates by ``rulelab.scoring.chunks`` (one
compiled program for every variant and transform, the fast reference tier where its
validated bound decides and mpmath elsewhere, flush-aware scoring as in every sweep).
Here the chunks run, in this process, a local pool or on a Dask cluster, and each
chunk's aggregates become one atomic file, so a killed run loses at most the chunks in
flight and ``--resume`` continues it; at the end the worst inputs are confirmed with
mpmath and the run's tables are those of any sweep (summary, binned, worst, samples).
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.core.floats import all_finite
from rulelab.core.malloc import keep_freed_memory
from rulelab.jaxrun import backend as backends
from rulelab.jaxrun.evaluate import Outcome
from rulelab.model.case import DERIVATIVE_ORDER, Case, derivative_label, get_case
from rulelab.model.exhaustive_spec import (
    CHUNKS_DIR,
    DTYPES16,
    PLAN,
    PLAN16,
    ExhaustiveError,
    Spec,
    plan_of,
)
from rulelab.model.tasks import Task
from rulelab.reference.compute import reference_pool
from rulelab.reference.settle import reference_point
from rulelab.runs import lifecycle
from rulelab.runs.blaming import blame_run
from rulelab.runs.executors import (
    Options,
    Target,
    check_scheduler,
    cluster_for,
    progress_bar,
    run_items,
)
from rulelab.scoring.chunks import (
    K_WORST,
    Aggregate,
    Setup,
    chunk_inputs,
    dense_hist,
    prepare,
    run_chunk,
    summed_cells,
)
from rulelab.scoring.metrics import HIST_BINS, binned_frame
from rulelab.scoring.rows import result_rows, summary_row
from rulelab.store.vocabulary import CHUNK_SECONDS, EXHAUSTIVE_PHASES, Bucket, Status


def chunk_path(run: Path, i: int) -> Path:
    return run / CHUNKS_DIR / f"{i:06d}.pkl"


def done_chunks(run: Path) -> set[int]:
    """Chunks whose aggregates are on disk and readable (a damaged file is redone)."""
    out = set()
    for p in (run / CHUNKS_DIR).glob("*.pkl"):
        try:
            store.read_pickle(p)
        except Exception:  # noqa: BLE001 - unreadable: computed again
            continue
        out.add(int(p.stem))
    return out


def score_chunk(job: tuple[Setup, int], facts: dict[str, Any]) -> bytes:
    """Chunk ``i`` of ``setup`` scored under this process's backend ``facts``: its
    aggregates and seconds per step, pickled."""
    setup, i = job
    keep_freed_memory()
    setup = replace(setup, flushes=bool(facts["flushes_subnormals"].get(setup.spec.dtype)))
    return pickle.dumps(run_chunk(setup, i), protocol=pickle.HIGHEST_PROTOCOL)


def check_case(case: Case, transforms: Sequence[str], dtype: str = "float32") -> None:
    """ExhaustiveError unless the case fits the plan of ``dtype`` (one argument for
    float32, two for a 16-bit dtype) and has a fast reference for every derivative the
    transforms need."""
    if dtype == "float32" and len(case.args) != 1:
        raise ExhaustiveError(f"{PLAN} sweeps cases of one argument; {case.name!r} has {len(case.args)} ({', '.join(case.args)}); "
                              f"a case of two sweeps every pair of 16-bit inputs with {PLAN16} --dtypes bfloat16 or float16")
    if dtype != "float32" and dtype not in DTYPES16:
        raise ExhaustiveError(f"{PLAN16} sweeps {' or '.join(DTYPES16)}, not {dtype}")
    if dtype in DTYPES16 and len(case.args) != 2:
        raise ExhaustiveError(f"{PLAN16} sweeps cases of two arguments; {case.name!r} has {len(case.args)} ({', '.join(case.args)})"
                              + (f"; sweep every float32 input of it with {PLAN}" if len(case.args) == 1 else ""))
    need = sorted({(DERIVATIVE_ORDER[t], a) for t in transforms for a in (case.args[:1] if t == "value" else case.args)})
    missing = [(o, a) for o, a in need if (a, o) not in case.fast_reference]
    if missing:
        names = ", ".join("the value" if o == 0 else f"derivative {o}" + (f" in {a}" if len(case.args) > 1 else "") for o, a in missing)
        raise ExhaustiveError(
            f"{plan_of(dtype)}: case {case.name!r} has no fast reference for {names}; give "
            "make_case(..., fast_reference={(arg, order): f}) with f a vectorised float64 numpy function of the case's arguments "
            "(rulelab.reference.fast validates it against mpmath before use)"
        )


def start(spec: Spec, root: str | Path = "results", options: Options = Options(), modules: Sequence[str] = (),
          on_start: Callable[[Path], None] | None = None) -> Path:
    """Run ``spec`` into a new run folder under ``root``; returns the folder.
    ``modules`` names the user modules its case comes from (loaded on cluster workers,
    recorded for a resume); ``on_start(run)`` is called once the folder exists."""
    check_case(get_case(spec.case), spec.transforms, spec.dtype)
    check_scheduler(options)
    session = lifecycle.create(root, spec.to_dict(), spec.tasks, backend=options.backend, modules=modules)
    return _execute(session, spec, options, on_start)


def resume(run_id: str, root: str | Path = "results", options: Options = Options(), on_start: Callable[[Path], None] | None = None,
           modules: Sequence[str] = ()) -> Path:
    """Continue an exhaustive run as it was planned, with its user modules (and
    ``modules``) loaded; its finished chunks are kept. A complete run is returned as it is."""
    session = lifecycle.reopen(root, run_id, options.backend, modules)
    if session.meta.status == lifecycle.COMPLETE:
        return session.run
    spec = Spec.from_dict(session.meta.plan)
    check_case(get_case(spec.case), spec.transforms, spec.dtype)
    lifecycle.check_unchanged(session, spec.tasks, spec.tasks if done_chunks(session.run) else [])
    options = replace(options, backend=session.meta.backend_requested)
    check_scheduler(options)
    return _execute(session, spec, options, on_start)


def _execute(session: lifecycle.Session, spec: Spec, options: Options, on_start: Callable[[Path], None] | None) -> Path:
    with lifecycle.running(session, on_start):
        return _execute_session(session, spec, options)


def _execute_session(session: lifecycle.Session, spec: Spec, options: Options) -> Path:
    run = session.run
    t0 = time.perf_counter()
    record: dict[str, Any] = {"started": store.now(), "pid": os.getpid()}
    phases = dict.fromkeys(EXHAUSTIVE_PHASES, 0.0)
    t = time.perf_counter()
    workers = 1 if backends.started() else (options.workers or os.cpu_count() or 1)  # (a process whose JAX runs is not forked)
    with reference_pool(workers) as pool:
        base = prepare(spec, options.backend, flushes=False, pool=pool, tasks=16 * workers)
    phases["validation"] = time.perf_counter() - t
    (run / CHUNKS_DIR).mkdir(exist_ok=True)
    chunks = spec.chunk_list
    todo = [i for i in chunks if i not in done_chunks(run)]
    t = time.perf_counter()

    def begin(facts: dict[str, Any], cluster_facts: Any) -> None:
        session.begin(record, facts, cluster_facts)

    with progress_bar(len(chunks), f"{spec.plan} {spec.case} ({spec.dtype})", "chunk", options, initial=len(chunks) - len(todo)) as bar, \
            cluster_for(options, session.meta.modules, (spec.case,)) as cluster:

        def write(i: int, data: bytes) -> None:
            store.write_bytes(chunk_path(run, todo[i]), data)
            bar.update(1)

        record["workers"] = run_items(
            score_chunk, lambda i: (base, todo[i]), list(range(len(todo))), Target(options.backend, (spec.dtype,), options.compile_cache),
            write=write, begin=begin, workers=options.workers, cluster=cluster, describe=lambda i: f"chunk {todo[i]}",
            resume_hint=f"the finished chunks are kept: continue with {session.resume_command(options.scheduler)}",
        )
    facts = session.meta.backend
    phases["chunks"] = time.perf_counter() - t
    t = time.perf_counter()
    case = get_case(spec.case)
    totals, seconds = merged(run, spec)
    for task in spec.tasks:
        store.write_part(run, task.key, aggregate_rows(task, case, totals[task.key], facts["backend"], spec.dtype), {"wall_s": None})
    keys = [task.key for task in spec.tasks]
    tables = store.assemble(run, keys, store.finished(run, keys))
    phases["aggregate"] = time.perf_counter() - t
    t = time.perf_counter()
    blame_run(session, tables, (spec.dtype,), options)
    phases["blame"] = time.perf_counter() - t
    exhaustive = {
        "dtype": spec.dtype,
        "inputs": finite_inputs(spec),
        "scored": {"/".join(t.key): sum(b["count"] for b in totals[t.key].bins.values()) for t in spec.tasks},
        "chunks": len(chunks),
        "validation": {derivative_label(o, a): v.to_dict() for (o, a), v in base.validations.items()},
        # per reference (every task against one reference shares its mpmath points)
        "mpmath_points": {derivative_label(t.order, t.arg or case.args[0]): totals[t.key].mpmath_points for t in spec.tasks},
    }
    record.update(wall_s=time.perf_counter() - t0, phases=phases)
    return lifecycle.complete(session, tables, phases=phases, exhaustive=exhaustive, task_seconds=seconds)


def finite_inputs(spec: Spec) -> int:
    """How many points of finite inputs the spec's chunks hold (whatever the domain)."""
    if not spec.chunks:
        n = all_finite(spec.dtype).size if spec.dtype != "float32" else 2**32 - 2**24
        return n ** (len(spec.args) if spec.dtype != "float32" else 1)
    total = 0
    for i in spec.chunks:
        pts = chunk_inputs(i, spec.chunk_bits, spec.dtype, len(spec.args))
        total += int(np.logical_and.reduce([np.isfinite(p.astype(np.float32)) for p in pts]).sum())
    return total


def merged(run_dir: Path, spec: Spec) -> tuple[dict[tuple[str, ...], Aggregate], dict[str, float]]:
    """Every chunk's aggregates summed per task, and the core-seconds per step summed
    over the chunks (each chunk file read once)."""
    totals: dict[tuple[str, ...], Aggregate] = {}
    seconds = dict.fromkeys(CHUNK_SECONDS, 0.0)
    for i in spec.chunk_list:
        aggs, secs = store.read_pickle(chunk_path(run_dir, i))
        for key, agg in aggs.items():
            totals[key] = totals[key].merge(agg, K_WORST) if key in totals else agg
        for k, v in secs.items():
            seconds[k] += v
    return totals, seconds


def _median(hist: np.ndarray) -> float:
    """Median dULP from a histogram (an upper bound past 1024: that bin is open)."""
    n = int(hist.sum())
    if not n:
        return math.nan
    c = np.cumsum(hist)
    lo, hi = int(np.searchsorted(c, (n - 1) // 2 + 1)), int(np.searchsorted(c, n // 2 + 1))
    return (lo + hi) / 2


def aggregate_rows(task: Task, case: Case, agg: Aggregate, platform: str, dtype: str = "float32") -> dict[str, dict[str, Any]]:
    """One result's rows of each table, from its aggregates; the worst inputs' references
    recomputed with mpmath alone (each confirmed by agreement)."""
    bins = sorted(agg.bins.items())
    hists = [dense_hist(b["hist"]) for _, b in bins]
    buckets = sum((b["buckets"] for _, b in bins), np.zeros(len(Bucket), dtype=np.int64))
    hist = sum(hists, np.zeros(HIST_BINS, dtype=np.int64))
    n = sum(b["count"] for _, b in bins)
    stats = {
        "max_ulp": float(np.nanmax([b["max_ulp"] for _, b in bins])) if any(not math.isnan(b["max_ulp"]) for _, b in bins) else math.nan,
        "median_ulp": _median(hist),
        "max_ulp_ieee": float(np.nanmax([b["max_ulp_ieee"] for _, b in bins])) if any(not math.isnan(b["max_ulp_ieee"]) for _, b in bins) else math.nan,
        "flushed": sum(b["flushed"] for _, b in bins), "max_frac_ulp": agg.max_frac,
        **{b.column: int(buckets[b]) for b in Bucket}, "wrong_nan": agg.wrong_nan, "wrong_inf": agg.wrong_inf,
    }
    what = f"every finite float32 input ({n:,})" if len(case.args) == 1 else f"every pair of finite {dtype} inputs ({n:,})"
    outcome = Outcome(Status.OK, notes=(what,), compile_s=math.nan, run_s=math.nan)
    row = summary_row(task, case, outcome, n, stats)
    b = binned_frame(
        [k[0] for k, _ in bins], [k[1] for k, _ in bins], [v["count"] for _, v in bins], [v["max_ulp"] for _, v in bins],
        [_median(h) for h in hists], [v["max_ulp_ieee"] for _, v in bins],
        [v["buckets"][Bucket.WRONG_NONFINITE] + v["buckets"][Bucket.UNEXPECTED_FINITE] for _, v in bins],
        [v["flushed"] for _, v in bins], [v["buckets"][Bucket.UNSETTLED] for _, v in bins],
    )
    s = agg.samples if agg.samples is not None else pd.DataFrame({c: [] for c in ("computed", "ref_hi", "dulp", *(f"in{i}" for i in range(len(case.args))))})
    samples = {"points": [s[f"in{i}"].to_numpy() for i in range(len(case.args))], "computed": s["computed"], "ref_hi": s["ref_hi"], "dulp": s["dulp"]}
    cells = summed_cells(agg.cells) if len(case.args) == 2 else None
    return result_rows(task, case, platform, row, b, confirm_worst(agg.worst, task, case), samples, cells)


def confirm_worst(w: pd.DataFrame, task: Task, case: Case) -> pd.DataFrame:
    """The worst points with references from mpmath alone (the fast tier decided only the
    rounding of the others): hi and lo replaced where the fast value stood in."""
    inputs = [f"in{i}" for i in range(len(case.args))]
    if w is None or not len(w):
        return pd.DataFrame({c: [] for c in (*inputs, "computed", "ref_hi", "ref_lo", "dulp", "dulp_ieee", "flushed", "frac_ulp", "bucket")})
    w = w.copy()
    refs = [reference_point(case, task.order, task.arg or case.args[0], tuple(float(v) for v in p)) for p in w[inputs].itertuples(index=False)]
    w["ref_hi"], w["ref_lo"] = [r[0] for r in refs], [r[1] for r in refs]
    return w
