"""One chunk of an exhaustive float32 sweep: scored point by point, kept as aggregates.

The pitfall: 4M points per chunk, for every variant, are too many to keep and too many
for a scorer that makes dozens of passes over each. So a chunk's references are
prepared once (the fast tier decides where its validated bound allows, mpmath decides
the rest), each variant's dULP is one integer subtraction where result and reference
are finite and read alike (``floats.ordered``), and ``metrics.point_errors`` scores
only the rest: non-finite results or references, unsettled references, and points a
flushing backend reads otherwise. What leaves the chunk is its :class:`Aggregate`:
per binade and sign the counts per bucket, the largest dULP and a dULP histogram, and
the worst inputs. ``rulelab.runs.exhaustive`` runs the chunks and writes them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rulelab.core.floats import binade, ordered, round_double_double, ulp
from rulelab.model.case import Case, get_case
from rulelab.model.contract import MAX_PRECISION
from rulelab.model.exhaustive_spec import Spec
from rulelab.model.tasks import Task
from rulelab.reference.fast import Validation, decided, evaluate_fast, validate
from rulelab.reference.settle import is_unsettled, reference_point
from rulelab.scoring.metrics import (
    HIST_BINS,
    FlushReference,
    PointErrors,
    bucket_counts,
    flush_reference,
    point_errors,
    worst,
    worst_key,
    worst_order,
)
from rulelab.store.vocabulary import CHUNK_SECONDS, Bucket

K_WORST = 20
"""Worst inputs kept per result (the plan's ``worst`` elsewhere)."""


def chunk_inputs(i: int, chunk_bits: int) -> np.ndarray:
    """The float32 values with bit patterns [i 2^chunk_bits, (i+1) 2^chunk_bits)."""
    start = np.uint64(i) << np.uint64(chunk_bits)
    return (np.arange(1 << chunk_bits, dtype=np.uint64) + start).astype(np.uint32).view(np.float32)


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
    codes = w["bucket"].map({b.column: int(b) for b in Bucket}).to_numpy()
    return w.iloc[worst_order(codes, w["dulp"].to_numpy(), w["frac_ulp"].to_numpy())[:k]].reset_index(drop=True)


@dataclass(frozen=True)
class Bins:
    """One chunk's points grouped by sign and binade once, for every result: each
    group's key and the positions of its points, and the first point of each."""

    keys: list[tuple[int, float]]
    members: list[np.ndarray | slice]
    first: np.ndarray


def bins_of(x: np.ndarray) -> Bins:
    """``x`` (float64, in bit order: a chunk's inputs or some of them) grouped
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
    :func:`score_points` leaves to it: non-finite or unsettled, or flushed differently)."""
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
    cand = np.union1d(_largest(worst_key(errors.bucket, errors.dulp), 4 * k), np.flatnonzero(errors.bucket == Bucket.UNSETTLED)[:k])
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
    from rulelab.jaxrun.evaluate import fused

    case = get_case(case_name)
    return fused([(case.variants[v].fn, t, 0) for v, t in jobs], 1, f"{case_name}_exhaustive")




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
    rounded = hi.astype(np.float32)  # (the fast values decide these roundings: no double rounding)
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
    secs = dict.fromkeys(CHUNK_SECONDS, 0.0) if secs is None else secs
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
    secs = dict.fromkeys(CHUNK_SECONDS, 0.0)
    bins = None
    for sc in score_chunk(setup, i, secs):
        t0 = time.perf_counter()
        bins = bins or bins_of(sc.x)
        out[sc.task.key] = _aggregate_scored(sc, bins, K_WORST)
        secs["aggregation"] += time.perf_counter() - t0
    return out, secs
