"""Every finite float32 input of a one-argument case (``rulelab sweep exhaustive32``).

The pitfall: 4,278,190,080 points can neither be stored nor given mpmath references
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

import contextlib
import functools
import math
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.core.errors import UsageError, first_line
from rulelab.core.malloc import keep_freed_memory
from rulelab.core.processes import kill_pool, worker_init
from rulelab.core.provenance import git_commit, host, versions
from rulelab.jaxrun import backend as backends
from rulelab.model.case import DERIVATIVE_ORDER, Case, derivative_label, get_case
from rulelab.model.tasks import Task
from rulelab.reference.settle import reference_point
from rulelab.runs.cluster import check as check_scheduler
from rulelab.runs.cluster import connect, same_facts
from rulelab.runs.sampled import code_fingerprints
from rulelab.scoring.chunks import (
    K_WORST,
    PHASES,
    Aggregate,
    Setup,
    chunk_inputs,
    prepare,
    run_chunk,
)
from rulelab.scoring.metrics import (
    HIST_BINS,
    binned_frame,
)
from rulelab.scoring.rows import result_rows as rows_of
from rulelab.store.vocabulary import Bucket, RunMeta, Status

PLAN = "exhaustive32"
"""The plan name that asks for this sweep."""
N_FINITE = 2**32 - 2**24
"""Finite float32 values: every bit pattern but the 2^24 with an all-ones exponent."""
CHUNK_BITS = 22
"""log2 of the bit patterns per chunk: 4M points, a few hundred MB at most in flight."""
CHUNKS_DIR = "chunks"


class ExhaustiveError(UsageError):
    """The exhaustive sweep cannot run as asked (a case of several arguments, no fast reference …)."""


@dataclass(frozen=True)
class Spec:
    """What one exhaustive run covers: the case's ``variants`` under ``transforms``
    over chunks ``chunks`` of ``chunk_bits`` bit patterns each (all of them by
    default; fewer for a run over some binades)."""

    case: str
    variants: tuple[str, ...]
    transforms: tuple[str, ...]
    chunk_bits: int = CHUNK_BITS
    chunks: tuple[int, ...] = ()

    @property
    def tasks(self) -> list[Task]:
        case = get_case(self.case)
        return [Task(self.case, v, t, "" if t == "value" else case.args[0], "float32") for v in self.variants for t in self.transforms]

    @property
    def chunk_list(self) -> tuple[int, ...]:
        return self.chunks or tuple(range(1 << (32 - self.chunk_bits)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": PLAN, "case": self.case, "variants": list(self.variants), "transforms": list(self.transforms),
                "chunk_bits": self.chunk_bits, "chunks": list(self.chunks), "dtypes": ["float32"], "cases": [self.case]}


def chunks_of_binades(lo: int, hi: int, chunk_bits: int = CHUNK_BITS) -> tuple[int, ...]:
    """The chunks holding every float32 of both signs whose biased exponent field lies in
    [lo, hi] (a run over those binades: 1 to 254 are the normal binades, 0 the
    subnormals and zeros)."""
    per = 1 << (23 - chunk_bits) if chunk_bits <= 23 else None
    if per is None:
        raise ExhaustiveError("chunks of more than 2^23 bit patterns do not follow binades")
    out = []
    for sign in (0, 1):
        for e in range(lo, hi + 1):
            first = ((sign << 31) | (e << 23)) >> chunk_bits
            out.extend(range(first, first + per))
    return tuple(sorted(out))


# --- the run ---------------------------------------------------------------------------------


def chunk_path(run: Path, i: int) -> Path:
    return run / CHUNKS_DIR / f"{i:06d}.pkl"


def done_chunks(run: Path) -> set[int]:
    """Chunks whose aggregates are on disk and readable (a damaged file is redone)."""
    out = set()
    for p in (run / CHUNKS_DIR).glob("*.pkl"):
        try:
            pickle.loads(p.read_bytes())
        except Exception:  # noqa: BLE001 - unreadable: computed again
            continue
        out.add(int(p.stem))
    return out


_SETUP: Setup | None = None


@functools.lru_cache(maxsize=4)
def _facts_here(backend: str | None) -> dict[str, Any]:
    """This process's backend facts for float32 (its backend starts here), once."""
    return backends.facts(backend, ("float32",))


def chunk_here(setup: Setup, i: int) -> tuple[int, bytes, dict[str, Any]]:
    """Chunk ``i`` of ``setup`` in this process, under this process's backend facts (its
    backend starts here): the chunk, its aggregates pickled, and the facts they ran under."""
    keep_freed_memory()
    facts = _facts_here(setup.backend)
    setup = replace(setup, flushes=bool(facts["flushes_subnormals"].get("float32")))
    return i, pickle.dumps(run_chunk(setup, i), protocol=pickle.HIGHEST_PROTOCOL), facts


def _forked_chunk(i: int) -> tuple[int, bytes, dict[str, Any]]:
    """In a forked worker: chunk ``i`` of the inherited ``_SETUP``."""
    assert _SETUP is not None
    return chunk_here(_SETUP, i)


def _in_pool(setup: Setup, todo: Sequence[int], n: int) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """The chunks on ``n`` forked processes (each adds its own backend's facts to the
    setup it inherits), as they finish."""
    global _SETUP
    _SETUP = setup
    ex = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=worker_init, initargs=(os.getpid(),))
    try:
        pending = {ex.submit(_forked_chunk, i) for i in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                yield fut.result()
    except BaseException:
        kill_pool(ex)
        raise
    finally:
        _SETUP = None
    ex.shutdown(wait=True)


def _on_cluster(setup: Setup, todo: Sequence[int], cluster: Any, run_name: str) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """The chunks on a dask cluster's workers, as they finish (the client writes them)."""
    from distributed import as_completed

    futures = {cluster.submit(chunk_here, setup, i): i for i in todo}
    for fut in as_completed(futures):
        try:
            yield fut.result()
        except Exception as exc:  # noqa: BLE001 - the cluster lost the chunk (a worker died too often)
            raise ExhaustiveError(f"the cluster failed on chunk {futures[fut]}: {first_line(exc)}; the finished chunks are kept: continue "
                                  f"with rulelab sweep --resume {run_name} --scheduler {cluster.address}") from None


def check_case(case: Case, transforms: Sequence[str]) -> None:
    """ExhaustiveError unless the case has one argument and a fast reference for every
    derivative the transforms need."""
    if len(case.args) != 1:
        raise ExhaustiveError(f"{PLAN} sweeps cases of one argument; {case.name!r} has {len(case.args)} ({', '.join(case.args)})")
    need = sorted({DERIVATIVE_ORDER[t] for t in transforms})
    missing = [o for o in need if (case.args[0], o) not in case.fast_reference]
    if missing:
        names = ", ".join("the value" if o == 0 else f"derivative {o}" for o in missing)
        raise ExhaustiveError(
            f"{PLAN}: case {case.name!r} has no fast reference for {names}; give make_case(..., fast_reference={{(arg, order): f}}) "
            "with f a vectorised float64 numpy function (rulelab.reference.fast validates it against mpmath before use)"
        )


def run(spec: Spec | None, root: str | Path = "results", workers: int | None = None, backend: str | None = None,
        progress: bool = True, resume: str | None = None, on_start: Callable[[Path], None] | None = None,
        scheduler: str | None = None, modules: Sequence[str] = ()) -> Path:
    """Run ``spec`` (or resume run ``resume`` as it was planned: its finished chunks are
    kept); returns the run folder. ``scheduler``: a dask scheduler's address (or
    ``local:N``) whose workers take the chunks, with the user ``modules`` loaded."""
    if resume:
        run_dir = store.open_run(root, resume)
        meta = store.read_meta(run_dir)
        spec = Spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.plan.items() if k in Spec.__dataclass_fields__})
        backend = meta.backend_requested
    assert spec is not None
    case = get_case(spec.case)
    check_case(case, spec.transforms)
    if scheduler:
        check_scheduler(scheduler)
    code = code_fingerprints(spec.tasks)
    if resume:
        changed = [k for k, v in code.items() if meta.code.get(k) != v] + [k for k, v in versions().items() if meta.versions.get(k) != v]
        if changed and done_chunks(run_dir):
            raise ExhaustiveError(f"run {run_dir.name} cannot be resumed without mixing results: {', '.join(changed)} changed since it "
                                  f"started; start a new {PLAN} run, or restore the code and versions it was started with")
    else:
        run_dir = store.new_run(root)
        meta = RunMeta(run_id=run_dir.name, plan=spec.to_dict(), started=store.now(), backend_requested=backend, code=code,
                       n_tasks=len(spec.tasks), versions=versions(), git=git_commit(), host=host())
        store.write_meta(run_dir, meta)
    if on_start:
        on_start(run_dir)
    t0 = time.perf_counter()
    try:
        return _run(run_dir, meta, spec, case, root, workers, backend, progress, t0, scheduler, modules)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            store.write_meta(run_dir, replace(store.read_meta(run_dir), status="stopped", stopped={"at": store.now(), "reason": reason}))
        raise


def _run(run_dir: Path, meta: RunMeta, spec: Spec, case: Case, root: str | Path, workers: int | None, backend: str | None,
         progress: bool, t0: float, scheduler: str | None, modules: Sequence[str]) -> Path:
    from tqdm import tqdm

    phases: dict[str, float] = {}
    t = time.perf_counter()
    base = prepare(spec, backend, flushes=False)
    validations = base.validations
    phases["validation"] = time.perf_counter() - t
    facts: dict[str, Any] = {}
    (run_dir / CHUNKS_DIR).mkdir(exist_ok=True)
    todo = [i for i in spec.chunk_list if i not in done_chunks(run_dir)]
    n = min(workers or os.cpu_count() or 1, max(len(todo), 1))
    t = time.perf_counter()
    session: dict[str, Any] = {}
    with tqdm(total=len(spec.chunk_list), initial=len(spec.chunk_list) - len(todo), desc=f"{PLAN} {spec.case}", unit="chunk",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar, (
            connect(scheduler, modules, (spec.case,)) if scheduler else contextlib.nullcontext()) as cluster:
        if cluster is not None:
            per_worker = cluster.facts(backend, ("float32",))
            facts = same_facts(per_worker)
            n = len(per_worker)
            session["cluster"] = {"scheduler": cluster.address, "workers": per_worker}
            chunks = _on_cluster(base, todo, cluster, run_dir.name)
        else:
            chunks = (chunk_here(base, i) for i in todo) if n == 1 or backends.started() else _in_pool(base, todo, n)
        for i, data, got in chunks:
            facts = facts or got
            if got != facts:
                raise ExhaustiveError(f"the workers' backends differ: {got} against {facts}; one run uses workers of one kind")
            store.write_bytes(chunk_path(run_dir, i), data)
            bar.update(1)
    facts = facts or _facts_here(backend)  # (every chunk was done before)
    phases["chunks"] = time.perf_counter() - t
    t = time.perf_counter()
    totals = merged(run_dir, spec)
    for task in spec.tasks:
        store.write_part(run_dir, task.key, result_rows(task, case, totals[task.key], facts["backend"]), {"wall_s": None})
    keys_ = [task.key for task in spec.tasks]
    tables = store.assemble(run_dir, keys_, store.finished(run_dir, keys_))
    phases["aggregate"] = time.perf_counter() - t
    n_inputs = sum(int(np.isfinite(chunk_inputs(i, spec.chunk_bits)).sum()) for i in spec.chunk_list) if spec.chunks else N_FINITE
    exhaustive = {
        "inputs": n_inputs,
        "chunks": len(spec.chunk_list),
        "validation": {derivative_label(o, a): v.to_dict() for (o, a), v in validations.items()},
        # per reference (every task against one reference shares its mpmath points)
        "mpmath_points": {derivative_label(t.order, t.arg or case.args[0]): totals[t.key].mpmath_points for t in spec.tasks},
    }
    meta = store.read_meta(run_dir)
    session = {"started": meta.started, "pid": os.getpid(), "wall_s": time.perf_counter() - t0, "phases": phases, "workers": n, **session}
    meta = replace(meta, backend=meta.backend or facts, sessions=(*meta.sessions, session), phases=phases, exhaustive=exhaustive,
                   task_seconds=chunk_seconds(run_dir, spec),
                   counts={s.value: int((tables["summary"]["status"] == s.value).sum()) for s in (Status.OK, Status.UNSUPPORTED, Status.ERROR)},
                   status="complete", ended=store.now())
    store.write_meta(run_dir, meta)
    store.set_latest(root, run_dir.name)
    store.remove_parts(run_dir)
    return run_dir


def merged(run_dir: Path, spec: Spec) -> dict[tuple[str, ...], Aggregate]:
    """Every chunk's aggregates summed per task."""
    totals: dict[tuple[str, ...], Aggregate] = {}
    for i in spec.chunk_list:
        aggs, _ = pickle.loads(chunk_path(run_dir, i).read_bytes())
        for key, agg in aggs.items():
            totals[key] = totals[key].merge(agg, K_WORST) if key in totals else agg
    return totals


def chunk_seconds(run_dir: Path, spec: Spec) -> dict[str, float]:
    """Core-seconds per phase summed over the run's chunks."""
    out = dict.fromkeys(PHASES, 0.0)
    for i in spec.chunk_list:
        for k, v in pickle.loads(chunk_path(run_dir, i).read_bytes())[1].items():
            out[k] += v
    return out


def _median(hist: np.ndarray) -> float:
    """Median dULP from a histogram (an upper bound past 1024: that bin is open)."""
    n = int(hist.sum())
    if not n:
        return math.nan
    c = np.cumsum(hist)
    lo, hi = int(np.searchsorted(c, (n - 1) // 2 + 1)), int(np.searchsorted(c, n // 2 + 1))
    return (lo + hi) / 2


def result_rows(task: Task, case: Case, agg: Aggregate, platform: str) -> dict[str, dict[str, Any]]:
    """One result's rows of each table, from its aggregates; the worst inputs' references
    recomputed with mpmath alone (each confirmed by agreement)."""
    bins = sorted(agg.bins.items())
    buckets = sum((b["buckets"] for _, b in bins), np.zeros(len(Bucket), dtype=np.int64))
    hist = sum((b["hist"] for _, b in bins), np.zeros(HIST_BINS, dtype=np.int64))
    n = sum(b["count"] for _, b in bins)
    row = {
        "status": Status.OK.value, "message": "", "n_points": n, "notes": f"every finite float32 input ({n:,})", "conventions": "",
        "max_ulp": float(np.nanmax([b["max_ulp"] for _, b in bins])) if any(not math.isnan(b["max_ulp"]) for _, b in bins) else math.nan,
        "median_ulp": _median(hist),
        "max_ulp_ieee": float(np.nanmax([b["max_ulp_ieee"] for _, b in bins])) if any(not math.isnan(b["max_ulp_ieee"]) for _, b in bins) else math.nan,
        "flushed": sum(b["flushed"] for _, b in bins), "max_frac_ulp": agg.max_frac,
        **{b.column: int(buckets[b]) for b in Bucket}, "wrong_nan": agg.wrong_nan, "wrong_inf": agg.wrong_inf,
        "compile_s": math.nan, "run_s": math.nan,
    }
    b = binned_frame(
        [k[0] for k, _ in bins], [k[1] for k, _ in bins], [v["count"] for _, v in bins], [v["max_ulp"] for _, v in bins],
        [_median(v["hist"]) for _, v in bins], [v["max_ulp_ieee"] for _, v in bins],
        [v["buckets"][Bucket.WRONG_NONFINITE] + v["buckets"][Bucket.UNEXPECTED_FINITE] for _, v in bins],
        [v["flushed"] for _, v in bins], [v["buckets"][Bucket.UNSETTLED] for _, v in bins],
    )
    s = agg.samples
    samples = {"points": [s["in0"].to_numpy()], "computed": s["computed"], "ref_hi": s["ref_hi"], "dulp": s["dulp"]}
    return rows_of(task, case, platform, row, b, confirm_worst(agg.worst, task, case), samples)


def confirm_worst(w: pd.DataFrame, task: Task, case: Case) -> pd.DataFrame:
    """The worst points with references from mpmath alone (the fast tier decided only the
    rounding of the others): hi and lo replaced where the fast value stood in."""
    if w is None or not len(w):
        return pd.DataFrame({c: [] for c in ("in0", "computed", "ref_hi", "ref_lo", "dulp", "dulp_ieee", "flushed", "frac_ulp", "bucket")})
    w = w.copy()
    refs = [reference_point(case, task.order, task.arg or case.args[0], (float(x),)) for x in w["in0"]]
    w["ref_hi"], w["ref_lo"] = [r[0] for r in refs], [r[1] for r in refs]
    return w
