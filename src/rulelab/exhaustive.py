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
from rulelab.cluster import check as check_scheduler
from rulelab.cluster import connect, same_facts
from rulelab.errors import UsageError
from rulelab.evaluate import first_line
from rulelab.fastref import Validation, decided, evaluate_fast, validate
from rulelab.floats import binade, ordered, round_double_double, ulp
from rulelab.heap import keep_freed_memory
from rulelab.measure import result_rows as rows_of
from rulelab.metrics import (
    HIST_BINS,
    FlushReference,
    PointErrors,
    binned_frame,
    bucket_counts,
    flush_reference,
    point_errors,
    worst,
)
from rulelab.provenance import git_commit, host, versions
from rulelab.reference import (
    MAX_PRECISION,
    derivative_label,
    is_unsettled,
    reference_point,
)
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
    members: list[np.ndarray | slice]
    first: np.ndarray


def bins_of(x: np.ndarray) -> Bins:
    """``x`` (float64, non-empty, in bit order: a chunk's inputs or some of them) grouped
    by sign and binade."""
    if not x.size:
        return Bins([], [], np.array([], dtype=np.int64))
    ends = x[[0, -1]]
    if np.signbit(ends[0]) == np.signbit(ends[1]) and np.all(np.isfinite(ends)) and np.all(ends != 0):
        b = binade(ends)
        if b[0] == b[1]:  # |x| is monotone between the ends: one group
            return Bins([(-1 if np.signbit(ends[0]) else 1, float(b[0]))], [slice(0, x.size)], np.array([0]))
    sign = np.where(np.signbit(x), -1, 1)
    b = binade(x)
    code = sign * 1000.0 + np.nan_to_num(b, neginf=-999.0)  # sign and binade in one sortable number
    order = np.argsort(code, kind="stable")
    starts = np.flatnonzero(np.r_[True, code[order][1:] != code[order][:-1]])
    members = np.split(order, starts[1:])
    keys = [(int(sign[m[0]]), float(b[m[0]])) for m in members]
    return Bins(keys, members, np.array([m[0] for m in members], dtype=np.int64))


def _aggregate(x: np.ndarray, bins: Bins, values: np.ndarray, hi: np.ndarray, lo: np.ndarray, errors: PointErrors, k: int) -> Aggregate:
    """The aggregates of one result at points scored by ``metrics.point_errors`` (those
    :func:`score_chunk` leaves to it: non-finite or unsettled, or flushed differently)."""
    comparable = errors.bucket <= Bucket.ULP_GT_1024
    ieee_ok = errors.bucket_ieee <= Bucket.ULP_GT_1024
    out = {}
    for key, m in zip(bins.keys, bins.members):
        d = errors.dulp[m][comparable[m]]
        di = errors.dulp_ieee[m][ieee_ok[m]]
        out[key] = {
            "count": int(errors.bucket[m].size),
            "buckets": np.bincount(errors.bucket[m].astype(np.int64), minlength=len(Bucket)),
            "hist": np.bincount(np.minimum(d, HIST_BINS - 1).astype(np.int64), minlength=HIST_BINS),
            "max_ulp": float(d.max()) if d.size else math.nan,
            "max_ulp_ieee": float(di.max()) if di.size else math.nan,
            "flushed": int(errors.flushed[m].sum()),
        }
    wrong = errors.bucket == Bucket.WRONG_NONFINITE
    nan = int(np.isnan(values.astype(np.float64)[wrong]).sum())
    frac = errors.frac[~np.isnan(errors.frac)]
    # candidates for the worst: the k largest by class and distance, and k unsettled (metrics.worst orders them)
    rank = np.where(errors.bucket >= Bucket.BOTH_UNDEFINED, -1.0, np.where(errors.bucket >= Bucket.WRONG_NONFINITE, np.inf, errors.dulp))
    cand = np.union1d(_largest(rank, 4 * k), np.flatnonzero(errors.bucket == Bucket.UNSETTLED)[:k])
    w = worst((x[cand],), values[cand], hi[cand], lo[cand], _subset(errors, cand), k=k)
    return Aggregate(out, nan, int(wrong.sum()) - nan, float(frac.max()) if frac.size else math.nan, w)


def _subset(errors: PointErrors, idx: np.ndarray) -> PointErrors:
    return PointErrors(*(getattr(errors, f)[idx] for f in PointErrors.__dataclass_fields__))


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


@dataclass(frozen=True)
class ChunkReference:
    """One (order, argument) reference over a chunk's points, prepared once for every
    result scored against it: hi + lo, ``rounded`` to float32, the flush-aware
    reference where the backend flushes, and how many points mpmath decided; then
    ``ordered`` (the rounded values counted from zero, ``floats.ordered``: a dULP is one
    subtraction), ``inv_ulp`` (1 / the float32 spacing at hi, a power of two) and
    ``general``: where :func:`metrics.point_errors` scores instead (a reference not
    finite or unsettled, or one a flushing backend reads otherwise)."""

    hi: np.ndarray
    lo: np.ndarray
    rounded: np.ndarray
    flush: FlushReference | None
    mpmath_points: int
    ordered: np.ndarray
    inv_ulp: np.ndarray
    general: np.ndarray


def _reference(setup: Setup, case: Case, order: int, arg: str, x: np.ndarray, secs: dict[str, float]) -> ChunkReference:
    """The reference at ``x``: the fast tier where its validated bound decides the
    rounding, mpmath elsewhere in the domain."""
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
    t = time.perf_counter()
    flush = None
    general = ~np.isfinite(rounded) | is_unsettled(hi, lo)
    if setup.flushes:
        sub = (x != 0) & (np.abs(x) < np.finfo(np.float32).smallest_normal)
        z_hi, z_lo = setup.at_zero[(order, arg)]
        f_hi = np.where(sub, np.where(np.signbit(x), z_hi[1], z_hi[0]), hi)
        f_lo = np.where(sub, np.where(np.signbit(x), z_lo[1], z_lo[0]), lo)
        z = round_double_double(z_hi, z_lo, "float32")  # (the references at +0 and -0)
        f_rounded = np.where(sub, np.where(np.signbit(x), z[1], z[0]), rounded)
        flush = flush_reference(f_hi, f_lo, "float32", rounded, rounded_at_flushed=f_rounded)
        general |= flush.rounded.view(np.uint32) != rounded.view(np.uint32)
    inv_ulp = 1.0 / ulp(np.where(general, 1.0, hi), "float32")
    out = ChunkReference(hi, lo, rounded, flush, int(todo.size), ordered(rounded, "float32"), inv_ulp, general)
    secs["scoring"] += time.perf_counter() - t
    return out


@dataclass(frozen=True)
class Scored:
    """One result over one chunk's in-domain inputs ``x``: ``dulp`` at every point outside
    ``general`` (int64, one subtraction), and :func:`metrics.point_errors` at the points
    of ``general`` (indices: a non-finite result or reference, an unsettled one, or a
    flushed reading), in ``errors``."""

    task: Task
    x: np.ndarray
    values: np.ndarray
    ref: ChunkReference
    dulp: np.ndarray
    general: np.ndarray
    errors: PointErrors

    def at(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bucket codes, headline dULP) at the points ``idx``, as
        ``metrics.point_errors`` gives them."""
        idx = np.asarray(idx, dtype=np.int64)
        bucket, dulp = Bucket.of_ulp(self.dulp[idx]), self.dulp[idx].astype(np.float64)
        g = np.minimum(np.searchsorted(self.general, idx), max(self.general.size - 1, 0))
        hit = (self.general[g] == idx) if self.general.size else np.zeros(idx.size, dtype=bool)
        bucket[hit], dulp[hit] = self.errors.bucket[g[hit]], self.errors.dulp[g[hit]]
        return bucket, dulp


def _score(task: Task, x: np.ndarray, values: np.ndarray, ref: ChunkReference) -> Scored:
    general = ref.general | ~np.isfinite(values)
    dulp = np.subtract(ordered(values, "float32"), ref.ordered, dtype=np.int64)  # (meaningless at the general points)
    np.abs(dulp, out=dulp)
    g = np.flatnonzero(general)
    flush = FlushReference(ref.flush.rounded[g]) if ref.flush is not None else None
    errors = point_errors(values[g], ref.hi[g], ref.lo[g], "float32", rounded=ref.rounded[g], flush=flush)
    return Scored(task, x, values, ref, dulp, g, errors)


def score_chunk(setup: Setup, i: int, secs: dict[str, float] | None = None) -> Iterator[Scored]:
    """Every task scored over chunk ``i`` (:func:`score_points` of its inputs)."""
    return score_points(setup, chunk_inputs(i, setup.spec.chunk_bits), secs)


def score_points(setup: Setup, x32: np.ndarray, secs: dict[str, float] | None = None) -> Iterator[Scored]:
    """Every task scored at the float32 inputs ``x32`` (NaN and inputs outside the domain
    dropped): one compiled program evaluates them for each task, each (order,
    argument) reference is decided once (fast tier, else mpmath) and every point scored
    as every sweep scores it (``metrics.point_errors``, flush-aware), by a subtraction
    where result and reference are finite and read alike."""
    import jax

    spec = setup.spec
    case = get_case(spec.case)
    x32 = np.asarray(x32, dtype=np.float32)
    with np.errstate(invalid="ignore"):  # (signalling NaNs, cast)
        keep = ~np.isnan(x32) & np.asarray(case.domain[0].contains(x32.astype(np.float64)), dtype=bool)
    program = _program(spec.case, tuple((t.variant, t.transform) for t in spec.tasks))
    device = jax.devices(setup.backend)[0] if setup.backend else jax.devices()[0]
    xd = jax.device_put(x32, device)
    x = x32[keep].astype(np.float64)
    refs: dict[tuple[int, str], ChunkReference] = {}
    secs = dict.fromkeys(PHASES, 0.0) if secs is None else secs
    for k, t in enumerate(spec.tasks):
        t0 = time.perf_counter()
        values = np.asarray(program(np.int32(k), xd))[keep]
        secs["jax"] += time.perf_counter() - t0
        key = (t.order, t.arg or case.args[0])
        if key not in refs:
            refs[key] = _reference(setup, case, t.order, key[1], x, secs)
        t0 = time.perf_counter()
        scored = _score(t, x, values, refs[key])
        secs["scoring"] += time.perf_counter() - t0
        yield scored


def _aggregate_scored(sc: Scored, bins: Bins, k: int) -> Aggregate:
    """The aggregates of one result over one chunk: counts, histogram and maxima straight
    from the subtracted dULPs, the general points through :func:`_aggregate`."""
    if not sc.x.size:  # (a chunk of NaNs and infinities outside the domain)
        return Aggregate({})
    ok = np.ones(sc.x.size, dtype=bool)
    ok[sc.general] = False
    d = np.where(ok, sc.dulp, -1)  # -1: left to the general scorer
    with np.errstate(over="ignore", invalid="ignore"):
        frac = sc.values.astype(np.float64)
        frac -= sc.ref.hi
        frac -= sc.ref.lo
        np.abs(frac, out=frac)
        frac *= sc.ref.inv_ulp
    out = {}
    total = np.zeros(HIST_BINS, dtype=np.int64)
    for key, m in zip(bins.keys, bins.members):
        dm = d if len(bins.keys) == 1 else d[m]
        hist = np.bincount(np.minimum(dm, HIST_BINS - 1) + 1, minlength=HIST_BINS + 1)[1:]
        total += hist
        top_ = float(dm.max())
        n = int(hist.sum())
        if n:
            out[key] = {"count": n, "buckets": bucket_counts(hist), "hist": hist, "max_ulp": top_, "max_ulp_ieee": top_, "flushed": 0}
    agg = Aggregate(out, max_frac=float(np.max(frac, where=ok, initial=-np.inf)) if ok.any() else math.nan,
                    worst=_worst_subtracted(sc, d, total, frac, k), samples=_samples(sc, bins), mpmath_points=sc.ref.mpmath_points)
    if not sc.general.size:
        return agg
    g = sc.general
    return agg.merge(_aggregate(sc.x[g], bins_of(sc.x[g]), sc.values[g], sc.ref.hi[g], sc.ref.lo[g], sc.errors, k), k)


def _worst_subtracted(sc: Scored, d: np.ndarray, hist: np.ndarray, frac: np.ndarray, k: int) -> pd.DataFrame | None:
    """The ``k`` worst of the subtracted points (``d`` their dULP, -1 elsewhere; ``hist``
    their histogram), by dULP and then fractional error, as ``metrics.worst`` orders
    them; the threshold read from the histogram, not from sorting the chunk."""
    above_hist = np.cumsum(hist[::-1])[::-1]  # points at or above each dULP 0 ... 1024, 1025+
    if not above_hist[0]:
        return None
    if above_hist[0] <= k:
        cand = np.flatnonzero(d >= 0)
    else:
        if above_hist[-1] >= k:  # the k-th largest dULP is above 1024: select among those only
            big = d[d >= HIST_BINS - 1]
            t = big[_largest(big, k)].min()
        else:
            t = int(np.flatnonzero(above_hist >= k)[-1])  # the k-th largest dULP
        above = np.flatnonzero(d > t)
        at = np.flatnonzero(d == t)
        r = k - above.size
        if at.size > r:
            at = at[_largest(frac[at], r)]
        cand = np.concatenate([above, at])
    dulp = sc.dulp[cand].astype(np.float64)
    bucket = Bucket.of_ulp(sc.dulp[cand])
    errors = PointErrors(dulp, frac[cand], bucket, sc.ref.rounded[cand], dulp, bucket, np.zeros(cand.size, dtype=bool))
    return worst((sc.x[cand],), sc.values[cand], sc.ref.hi[cand], sc.ref.lo[cand], errors, k=k)


def _largest(v: np.ndarray, r: int) -> np.ndarray:
    """Positions of the ``r`` largest of ``v`` (NaN never among them; fewer if there are
    fewer numbers; ties at the r-th taken in order). A threshold from every 64th value
    first: the r-th largest of those is at most the r-th largest of all, so only the
    values above it are ranked, and the rest taken from those equal to it."""
    number = ~np.isnan(v) if v.dtype.kind == "f" else np.ones(v.size, dtype=bool)
    sample = v[::64][number[::64]]
    if sample.size <= r:
        pool = np.flatnonzero(number)
        return pool[np.argpartition(-v[pool], r - 1)[:r]] if pool.size > r else pool
    t = np.partition(sample, sample.size - r)[sample.size - r]
    above = np.flatnonzero(v > t)
    if above.size >= r:
        return above[np.argpartition(-v[above], r - 1)[:r]]
    return np.concatenate([above, np.flatnonzero(v == t)[: r - above.size]])


def _samples(sc: Scored, bins: Bins) -> pd.DataFrame:
    """One point per binade (its first): input, result, reference and dULP."""
    f = bins.first
    return pd.DataFrame({"in0": sc.x[f], "computed": sc.values.astype(np.float64)[f], "ref_hi": sc.ref.hi[f],
                         "dulp": sc.at(f)[1]})


def run_chunk(setup: Setup, i: int) -> tuple[dict[tuple[str, ...], Aggregate], dict[str, float]]:
    """Aggregates of every task over chunk ``i``, and the seconds per phase."""
    out: dict[tuple[str, ...], Aggregate] = {}
    secs = dict.fromkeys(PHASES, 0.0)
    bins = None
    for sc in score_chunk(setup, i, secs):
        t0 = time.perf_counter()
        bins = bins or bins_of(sc.x)
        out[sc.task.key] = _aggregate_scored(sc, bins, K_WORST)
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
            "with f a vectorised float64 numpy function (rulelab.fastref validates it against mpmath before use)"
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
