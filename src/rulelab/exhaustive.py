"""Every finite float32 input of a one-argument case (``rulelab sweep exhaustive32``).

The pitfall: 4,278,190,080 points can neither be stored nor given mpmath references
(tens of core-hours per transform). So the inputs are taken in chunks of consecutive
bit patterns; per chunk, JAX evaluates one compiled program holding every variant and
transform (``evaluate.fused``), the fast reference tier (``rulelab.fastref``, measured
against mpmath before the run) decides each point's float32 reference where its bound
allows and mpmath decides the rest, the points are scored as in every sweep
(``metrics.point_errors``, flush-aware), and only aggregates are kept: per binade and
sign the counts per bucket, the largest dULP and a histogram for the median, and the
worst inputs. Each chunk's aggregates are one atomic file, so a killed run loses at
most the chunks in flight; at the end the worst inputs are confirmed with mpmath and
the run's tables are those of any sweep (summary, binned, worst, samples).
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab import backend as backends
from rulelab import store
from rulelab.case import DERIVATIVE_ORDER, Case, get_case
from rulelab.errors import UsageError
from rulelab.fastref import Validation, decided, evaluate_fast, validate
from rulelab.floats import binade, round_double_double
from rulelab.measure import result_rows as rows_of
from rulelab.metrics import binned_frame, flush_reference, point_errors, worst
from rulelab.provenance import git_commit, host, versions
from rulelab.reference import MAX_PRECISION, derivative_label, reference_point
from rulelab.store.vocabulary import Bucket, RunMeta, Status
from rulelab.sweep import code_fingerprints
from rulelab.tasks import Task
from rulelab.workers import kill_pool, worker_init

PLAN = "exhaustive32"
"""The plan name that asks for this sweep."""
N_FINITE = 2**32 - 2**24
"""Finite float32 values: every bit pattern but the 2^24 with an all-ones exponent."""
CHUNK_BITS = 22
"""log2 of the bit patterns per chunk: 4M points, a few hundred MB at most in flight."""
HIST = 1026
"""dULP histogram bins per binade: 0 to 1024 exactly, and one for everything above."""
K_WORST = 20
"""Worst inputs kept per result (the plan's ``worst`` elsewhere)."""
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


def chunk_inputs(i: int, chunk_bits: int) -> np.ndarray:
    """The float32 values with bit patterns [i 2^chunk_bits, (i+1) 2^chunk_bits)."""
    start = np.uint64(i) << np.uint64(chunk_bits)
    return (np.arange(1 << chunk_bits, dtype=np.uint64) + start).astype(np.uint32).view(np.float32)


# --- one chunk -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """One result's aggregates over some chunks. Per (sign, binade): point count,
    counts per bucket, largest headline and IEEE dULP, a dULP histogram, and the
    points flushing explains; overall: NaN and inf among the wrong non-finite, the
    largest fractional error, the worst points (a table) and one sample per binade."""

    bins: dict[tuple[int, float], dict[str, Any]]
    wrong_nan: int = 0
    wrong_inf: int = 0
    max_frac: float = math.nan
    worst: pd.DataFrame | None = None
    samples: pd.DataFrame | None = None
    mpmath_points: int = 0

    def merge(self, other: Aggregate, k: int) -> Aggregate:
        bins = dict(self.bins)
        for key, b in other.bins.items():
            bins[key] = _merge_bin(bins[key], b) if key in bins else b
        w = pd.concat([d for d in (self.worst, other.worst) if d is not None and len(d)], ignore_index=True) if (
            self.worst is not None or other.worst is not None) else None
        s = pd.concat([d for d in (self.samples, other.samples) if d is not None and len(d)], ignore_index=True) if (
            self.samples is not None or other.samples is not None) else None
        return Aggregate(bins, self.wrong_nan + other.wrong_nan, self.wrong_inf + other.wrong_inf,
                         float(np.fmax(self.max_frac, other.max_frac)), top(w, k) if w is not None and len(w) else w, s,
                         self.mpmath_points + other.mpmath_points)


def _merge_bin(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": a["count"] + b["count"],
        "buckets": a["buckets"] + b["buckets"],
        "hist": a["hist"] + b["hist"],
        "max_ulp": float(np.fmax(a["max_ulp"], b["max_ulp"])),
        "max_ulp_ieee": float(np.fmax(a["max_ulp_ieee"], b["max_ulp_ieee"])),
        "flushed": a["flushed"] + b["flushed"],
    }


def top(w: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` worst rows of candidate worst points, ordered as ``metrics.worst`` orders
    points: non-finite classes first, then dULP, then fractional error."""
    codes = w["bucket"].map({b.column: int(b) for b in Bucket})
    key = np.where(codes >= Bucket.BOTH_UNDEFINED, -1.0, np.where(codes >= Bucket.WRONG_NONFINITE, np.inf, w["dulp"]))
    order = np.lexsort((-np.nan_to_num(w["frac_ulp"].to_numpy(), nan=0.0), -key))
    return w.iloc[order[:k]].reset_index(drop=True)


@dataclass(frozen=True)
class Bins:
    """One chunk's points grouped by sign and binade once, for every result: each
    group's key and the positions of its points, and the first point of each."""

    keys: list[tuple[int, float]]
    members: list[np.ndarray]
    first: np.ndarray


def bins_of(x: np.ndarray) -> Bins:
    sign = np.where(np.signbit(x), -1, 1)
    b = binade(x)
    code = sign * 1000.0 + np.nan_to_num(b, neginf=-999.0)  # sign and binade in one sortable number
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
    members = np.split(order, starts[1:])
    keys = [(int(sign[m[0]]), float(b[m[0]])) for m in members]
    return Bins(keys, members, np.array([m[0] for m in members], dtype=np.int64))


def _subset(errors: Any, idx: np.ndarray) -> Any:
    return type(errors)(*(getattr(errors, f)[idx] for f in errors.__dataclass_fields__))


def _aggregate(x: np.ndarray, bins: Bins, values: np.ndarray, hi: np.ndarray, lo: np.ndarray, errors: Any, mpmath_points: int, k: int) -> Aggregate:
    """The aggregates of one result over one chunk's points."""
    comparable = errors.bucket <= Bucket.ULP_GT_1024
    ieee_ok = errors.bucket_ieee <= Bucket.ULP_GT_1024
    out = {}
    for key, m in zip(bins.keys, bins.members):
        d = errors.dulp[m][comparable[m]]
        di = errors.dulp_ieee[m][ieee_ok[m]]
        out[key] = {
            "count": int(m.size),
            "buckets": np.bincount(errors.bucket[m].astype(np.int64), minlength=len(Bucket)),
            "hist": np.bincount(np.minimum(d, HIST - 1).astype(np.int64), minlength=HIST),
            "max_ulp": float(d.max()) if d.size else math.nan,
            "max_ulp_ieee": float(di.max()) if di.size else math.nan,
            "flushed": int(errors.flushed[m].sum()),
        }
    wrong = errors.bucket == Bucket.WRONG_NONFINITE
    nan = int(np.isnan(values.astype(np.float64)[wrong]).sum())
    frac = errors.frac[~np.isnan(errors.frac)]
    # candidates for the worst: the k largest by class and distance, and k unsettled (metrics.worst orders them)
    rank = np.where(errors.bucket >= Bucket.BOTH_UNDEFINED, -1.0, np.where(errors.bucket >= Bucket.WRONG_NONFINITE, np.inf, errors.dulp))
    cand = np.argpartition(-rank, min(4 * k, rank.size - 1))[: 4 * k] if rank.size > 4 * k else np.arange(rank.size)
    cand = np.union1d(cand, np.flatnonzero(errors.bucket == Bucket.UNSETTLED)[:k])
    w = worst((x[cand],), values[cand], hi[cand], lo[cand], _subset(errors, cand), k=k)
    f = bins.first
    samples = pd.DataFrame({"in0": x[f], "computed": values.astype(np.float64)[f], "ref_hi": hi[f], "dulp": errors.dulp[f]})
    return Aggregate(out, nan, int(wrong.sum()) - nan, float(frac.max()) if frac.size else math.nan, w, samples, mpmath_points)


@dataclass(frozen=True)
class Setup:
    """What every chunk needs: the spec, each (order, arg) reference's validation, the
    references at ±0 (a flushing backend reads a subnormal input as zero), and whether
    the backend flushes float32."""

    spec: Spec
    validations: Mapping[tuple[int, str], Validation]
    at_zero: Mapping[tuple[int, str], tuple[np.ndarray, np.ndarray]]
    backend: str | None
    flushes: bool
    max_precision: int = MAX_PRECISION


def prepare(spec: Spec, backend: str | None, flushes: bool) -> Setup:
    """The :class:`Setup` of ``spec``: each fast reference validated (FastReferenceError
    if one fails), and the references at ±0."""
    case = get_case(spec.case)
    keys = sorted({(t.order, t.arg or case.args[0]) for t in spec.tasks})
    at_zero = {}
    for k in keys:
        pts = [reference_point(case, k[0], k[1], (z,)) if case.domain[0].contains(z) else (math.nan, 0.0) for z in (0.0, -0.0)]
        at_zero[k] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return Setup(spec, {k: validate(case, k[1], k[0]) for k in keys}, at_zero, backend, flushes)


@functools.lru_cache(maxsize=4)
def _program(case_name: str, jobs: tuple[tuple[str, str], ...]) -> Callable[..., Any]:
    """One compiled program per process holding every job (built once, reused per chunk)."""
    from rulelab.evaluate import fused

    case = get_case(case_name)
    return fused([(case.variants[v].fn, t, 0) for v, t in jobs], 1, f"{case_name}_exhaustive")


PHASES = ("jax", "fast_reference", "rounding_test", "mpmath", "scoring", "aggregation")
"""Where a chunk's time goes, summed over chunks into the run's meta.json."""


def _reference(setup: Setup, case: Case, order: int, arg: str, x: np.ndarray, secs: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(hi, lo, rounded to float32, points mpmath decided) at ``x``: the fast tier where
    its validated bound decides the rounding, mpmath elsewhere in the domain."""
    v = setup.validations[(order, arg)]
    t = time.perf_counter()
    fast = evaluate_fast(case, arg, order, x)
    secs["fast_reference"] += time.perf_counter() - t
    t = time.perf_counter()
    ok = decided(fast, x, v)
    secs["rounding_test"] += time.perf_counter() - t
    t = time.perf_counter()
    inside = np.asarray(case.domain[0].contains(x), dtype=bool)
    hi = np.where(ok, fast, np.nan)
    lo = np.zeros_like(hi)
    rounded = np.where(ok, fast, np.nan).astype(np.float32)
    todo = np.flatnonzero(~ok & inside)
    for j in todo:
        hi[j], lo[j] = reference_point(case, order, arg, (float(x[j]),), setup.max_precision)
    if todo.size:
        rounded[todo] = round_double_double(hi[todo], lo[todo], "float32")
    secs["mpmath"] += time.perf_counter() - t
    return hi, lo, rounded, int(todo.size)


@dataclass(frozen=True)
class Scored:
    """One result over one chunk, point by point (in-domain finite inputs ``x``)."""

    task: Task
    x: np.ndarray
    values: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    errors: Any
    mpmath_points: int


def score_chunk(setup: Setup, i: int, secs: dict[str, float] | None = None) -> Iterator[Scored]:
    """Every task scored over chunk ``i``: one compiled program evaluates the chunk for
    each task, each (order, argument) reference is decided once (fast tier, else
    mpmath) and scored as every sweep scores (``metrics.point_errors``, flush-aware)."""
    import jax

    spec = setup.spec
    case = get_case(spec.case)
    x32 = chunk_inputs(i, spec.chunk_bits)
    # every value but NaN that the domain holds: the finite inputs, and ±inf where the domain includes them
    keep = ~np.isnan(x32) & np.asarray(case.domain[0].contains(x32.astype(np.float64)), dtype=bool)
    program = _program(spec.case, tuple((t.variant, t.transform) for t in spec.tasks))
    device = jax.devices(setup.backend)[0] if setup.backend else jax.devices()[0]
    xd = jax.device_put(x32, device)
    x = x32[keep].astype(np.float64)
    refs: dict[tuple[int, str], Any] = {}
    secs = dict.fromkeys(PHASES, 0.0) if secs is None else secs
    for k, t in enumerate(spec.tasks):
        t0 = time.perf_counter()
        values = np.asarray(program(np.int32(k), xd))[keep]
        secs["jax"] += time.perf_counter() - t0
        key = (t.order, t.arg or case.args[0])
        if key not in refs:
            hi, lo, rounded, n_mp = _reference(setup, case, t.order, key[1], x, secs)
            flush = None
            if setup.flushes:
                sub = (x != 0) & (np.abs(x) < np.finfo(np.float32).smallest_normal)
                z_hi, z_lo = setup.at_zero[key]
                f_hi = np.where(sub, np.where(np.signbit(x), z_hi[1], z_hi[0]), hi)
                f_lo = np.where(sub, np.where(np.signbit(x), z_lo[1], z_lo[0]), lo)
                f_rounded = rounded.copy()
                if sub.any():
                    f_rounded[sub] = round_double_double(f_hi[sub], f_lo[sub], "float32")
                flush = flush_reference(f_hi, f_lo, "float32", rounded, rounded_at_flushed=f_rounded)
            refs[key] = (hi, lo, rounded, flush, n_mp)
        hi, lo, rounded, flush, n_mp = refs[key]
        t0 = time.perf_counter()
        errors = point_errors(values, hi, lo, "float32", rounded=rounded, flush=flush)
        secs["scoring"] += time.perf_counter() - t0
        yield Scored(t, x, values, hi, lo, errors, n_mp)


def run_chunk(setup: Setup, i: int) -> tuple[dict[tuple[str, ...], Aggregate], dict[str, float]]:
    """Aggregates of every task over chunk ``i``, and the seconds per phase."""
    out: dict[tuple[str, ...], Aggregate] = {}
    secs = dict.fromkeys(PHASES, 0.0)
    bins = None
    for sc in score_chunk(setup, i, secs):
        t0 = time.perf_counter()
        bins = bins or bins_of(sc.x)
        out[sc.task.key] = _aggregate(sc.x, bins, sc.values, sc.hi, sc.lo, sc.errors, sc.mpmath_points, K_WORST)
        secs["aggregation"] += time.perf_counter() - t0
    return out, secs


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


def _with_facts(setup: Setup) -> tuple[Setup, dict[str, Any]]:
    """``setup`` with this process's backend facts (its backend starts here) filled in."""
    facts = backends.facts(setup.backend, ("float32",))
    return replace(setup, flushes=bool(facts["flushes_subnormals"].get("float32"))), facts


_IN_WORKER: tuple[Setup, dict[str, Any]] | None = None
"""In a forked worker: the inherited ``_SETUP`` with the worker's facts, made once."""


def _worker_chunk(i: int) -> tuple[int, bytes, dict[str, Any]]:
    """In a forked worker: chunk ``i`` of the inherited ``_SETUP``, and the facts it ran under."""
    global _IN_WORKER
    assert _SETUP is not None
    if _IN_WORKER is None:
        _IN_WORKER = _with_facts(_SETUP)
    setup, facts = _IN_WORKER
    return i, pickle.dumps(run_chunk(setup, i), protocol=pickle.HIGHEST_PROTOCOL), facts


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
            "with f a vectorised float64 numpy function (rulelab.fastref validates it against mpmath before use)"
        )


def run(spec: Spec | None, root: str | Path = "results", workers: int | None = None, backend: str | None = None,
        progress: bool = True, resume: str | None = None, on_start: Callable[[Path], None] | None = None) -> Path:
    """Run ``spec`` (or resume run ``resume`` as it was planned: its finished chunks are
    kept); returns the run folder."""
    if resume:
        run_dir = store.open_run(root, resume)
        meta = store.read_meta(run_dir)
        spec = Spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.plan.items() if k in Spec.__dataclass_fields__})
        backend = meta.backend_requested
    assert spec is not None
    case = get_case(spec.case)
    check_case(case, spec.transforms)
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
        return _run(run_dir, meta, spec, case, root, workers, backend, progress, t0)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            store.write_meta(run_dir, replace(store.read_meta(run_dir), status="stopped", stopped={"at": store.now(), "reason": reason}))
        raise


def _run(run_dir: Path, meta: RunMeta, spec: Spec, case: Case, root: str | Path, workers: int | None, backend: str | None,
         progress: bool, t0: float) -> Path:
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
    global _SETUP
    with tqdm(total=len(spec.chunk_list), initial=len(spec.chunk_list) - len(todo), desc=f"{PLAN} {spec.case}", unit="chunk",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        if n == 1 or backends.started():
            setup, facts = _with_facts(base)
            for i in todo:
                store.write_bytes(chunk_path(run_dir, i), pickle.dumps(run_chunk(setup, i), protocol=pickle.HIGHEST_PROTOCOL))
                bar.update(1)
        else:
            _SETUP = base  # the workers fork with it and add their backend's facts
            ex = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork"), initializer=worker_init, initargs=(os.getpid(),))
            try:
                facts = ex.submit(backends.facts, backend, ("float32",)).result()
                pending = {ex.submit(_worker_chunk, i) for i in todo}
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        i, data, got = fut.result()
                        if got != facts:
                            raise ExhaustiveError(f"the workers' backends differ: {got} against {facts}")
                        store.write_bytes(chunk_path(run_dir, i), data)
                        bar.update(1)
            except BaseException:
                kill_pool(ex)
                raise
            finally:
                _SETUP = None
            ex.shutdown(wait=True)
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
    session = {"started": meta.started, "pid": os.getpid(), "wall_s": time.perf_counter() - t0, "phases": phases, "workers": n}
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
    hist = sum((b["hist"] for _, b in bins), np.zeros(HIST, dtype=np.int64))
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
