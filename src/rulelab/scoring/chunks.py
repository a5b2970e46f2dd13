"""One chunk of an exhaustive sweep (every float32 input of a case of one argument, or
every pair of 16-bit inputs of a case of two): scored point by point, kept as aggregates.

The pitfall: 4M points per chunk, for every variant, are too many to keep and too many
for a scorer that makes dozens of passes over each. So a chunk's references are
prepared once (the fast tier decides where its validated bound allows, mpmath decides
the rest), each variant's dULP is one integer subtraction where the reference is
finite and read alike (``floats.ordered``), and ``metrics.point_errors`` scores only
the rest: non-finite or unsettled references and points a flushing backend reads
otherwise. The per-point work runs as compiled loops (:mod:`rulelab.scoring.kernel`:
one pass for the rounding test, one per result for its counts and worst points), or,
with ``Setup.fused`` off, as the numpy passes the tests hold them to. What leaves the
chunk is its :class:`Aggregate`:
per binade and sign of the argument the binned table follows, the counts per bucket,
the largest dULP and a dULP histogram; for two arguments the same per pair of binades
(the error map); and the worst inputs. ``rulelab.runs.exhaustive`` runs the chunks and
writes them.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rulelab.core.floats import fmt, ordered, round_double_double, ulp
from rulelab.model.case import Case, get_case
from rulelab.model.contract import MAX_PRECISION
from rulelab.model.exhaustive_spec import Spec
from rulelab.model.tasks import Task
from rulelab.reference.fast import (
    TINY,
    Validation,
    decided_rounding,
    decided_tiny,
    evaluate_fast,
)
from rulelab.reference.settle import is_unsettled, reference_point
from rulelab.reference.tier import validated
from rulelab.scoring.binning import (
    CELL_KEYS,
    BinIndex,
    Reduced,
    bin_index,
    cells_frame,
    codes,
    combined,
    from_buckets,
    from_hist,
    reduce,
    reduce_counted,
)
from rulelab.scoring.metrics import (
    HIST_BINS,
    FlushReference,
    PointErrors,
    flush_reference,
    point_errors,
    worst,
    worst_key,
    worst_order,
)
from rulelab.store.vocabulary import BINNED2, CHUNK_SECONDS, KEYS, Bucket


def compiled() -> bool:
    """Whether the per-point passes can run as compiled loops: numba imports (only an
    exhaustive sweep imports it). Without it they run as numpy passes."""
    try:
        from rulelab.scoring import kernel  # noqa: F401
    except ImportError:
        return False
    return True

K_WORST = 20
"""Worst inputs kept per result (the plan's ``worst`` elsewhere)."""
CELLS_KEPT = 32
"""Error-map frames an :class:`Aggregate` keeps before summing them into one (a run's
merge holds a few, not one per chunk: 6 results over 1,024 chunks are millions of rows)."""
_BUCKET_OF = Bucket.of_ulp(np.arange(HIST_BINS))
"""The bucket of each dULP 0 to 1024, and of everything above (the last entry)."""


def chunk_inputs(i: int, chunk_bits: int, dtype: Any = "float32", nargs: int = 1) -> tuple[np.ndarray, ...]:
    """The inputs with bit patterns [i 2^chunk_bits, (i+1) 2^chunk_bits) of ``nargs``
    ``dtype`` values side by side (the first argument's bits highest), one array per
    argument."""
    f = fmt(dtype)
    p = np.arange(1 << chunk_bits, dtype=np.uint64) + (np.uint64(i) << np.uint64(chunk_bits))
    mask = np.uint64((1 << f.bits) - 1)
    return tuple(((p >> np.uint64(f.bits * (nargs - 1 - k))) & mask).astype(f.uint).view(f.dtype) for k in range(nargs))


def _sparse(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(hist)
    return nz.astype(np.int16), hist[nz]


def dense_hist(hist: Any) -> np.ndarray:
    """A dULP histogram as an array of ``HIST_BINS`` counts, from its sparse form (bins,
    counts) as a chunk keeps it."""
    if isinstance(hist, tuple):
        out = np.zeros(HIST_BINS, dtype=np.int64)
        out[hist[0].astype(np.int64)] = hist[1]
        return out
    return hist


@dataclass(frozen=True)
class Aggregate:
    """One result's aggregates over some chunks. Per (sign, binade) of the argument the
    binned table follows: point count, counts per bucket, largest headline and IEEE
    dULP, a dULP histogram (sparse: bins and counts), and the points flushing explains;
    for a case of two arguments the same, without the histogram, per pair of binades
    (``cells``: one frame per chunk, summed every :data:`CELLS_KEPT` frames and at the
    end); overall: NaN and inf among the wrong non-finite, the largest fractional error,
    the worst points (a table) and one sample per binade."""

    bins: dict[tuple[int, float], dict[str, Any]]
    wrong_nan: int = 0
    wrong_inf: int = 0
    max_frac: float = math.nan
    worst: pd.DataFrame | None = None
    samples: pd.DataFrame | None = None
    mpmath_points: int = 0
    cells: tuple[pd.DataFrame, ...] = ()

    def merge(self, other: Aggregate, k: int) -> Aggregate:
        bins = dict(self.bins)
        for key, b in other.bins.items():
            bins[key] = _merge_bin(bins[key], b) if key in bins else b
        w = pd.concat([d for d in (self.worst, other.worst) if d is not None and len(d)], ignore_index=True) if (
            self.worst is not None or other.worst is not None) else None
        s = pd.concat([d for d in (self.samples, other.samples) if d is not None and len(d)], ignore_index=True) if (
            self.samples is not None or other.samples is not None) else None
        if s is not None and len(s):
            s = s.drop_duplicates(["sign", "binade"]).reset_index(drop=True)  # one per binade: the first
        cells = self.cells + other.cells
        if len(cells) > CELLS_KEPT:
            cells = (summed_cells(cells),)
        return Aggregate(bins, self.wrong_nan + other.wrong_nan, self.wrong_inf + other.wrong_inf,
                         float(np.fmax(self.max_frac, other.max_frac)), top(w, k) if w is not None and len(w) else w, s,
                         self.mpmath_points + other.mpmath_points, cells)


def _merge_bin(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": a["count"] + b["count"],
        "buckets": a["buckets"] + b["buckets"],
        "hist": dense_hist(a["hist"]) + dense_hist(b["hist"]),
        "max_ulp": float(np.fmax(a["max_ulp"], b["max_ulp"])),
        "max_ulp_ieee": float(np.fmax(a["max_ulp_ieee"], b["max_ulp_ieee"])),
        "flushed": a["flushed"] + b["flushed"],
    }


def summed_cells(cells: tuple[pd.DataFrame, ...]) -> pd.DataFrame:
    """The per-chunk cells of a result summed per pair of binades (counts added, maxima
    taken), sorted by the signs and binades."""
    keys = list(CELL_KEYS)
    if not cells:
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, (t, _) in BINNED2.items() if c not in KEYS})
    df = pd.concat(cells, ignore_index=True)
    how = {c: ("max" if c.startswith("max_") else "sum") for c in df.columns if c not in keys}
    return df.groupby(keys, sort=True, dropna=False).agg(how).reset_index()


def top(w: pd.DataFrame, k: int) -> pd.DataFrame:
    """The ``k`` worst rows of candidate worst points, ordered as ``metrics.worst`` orders
    points: non-finite classes first, then dULP, then fractional error."""
    codes = w["bucket"].map({b.column: int(b) for b in Bucket}).to_numpy()
    return w.iloc[worst_order(codes, w["dulp"].to_numpy(), w["frac_ulp"].to_numpy())[:k]].reset_index(drop=True)


@dataclass(frozen=True)
class Setup:
    """What every chunk needs: the spec, each (order, arg) reference's validation,
    whether the backend flushes the dtype's subnormals, and whether the per-point passes
    run as compiled loops (``fused``, :mod:`rulelab.scoring.kernel`) or as numpy passes
    (the plain path the tests hold them to)."""

    spec: Spec
    validations: Mapping[tuple[int, str], Validation]
    backend: str | None
    flushes: bool
    max_precision: int = MAX_PRECISION
    fused: bool = True


def prepare(spec: Spec, backend: str | None, flushes: bool, pool: Executor | None = None, tasks: int = 1) -> Setup:
    """The :class:`Setup` of ``spec``: each fast reference validated in the spec's dtype
    (FastReferenceError if one fails), its mpmath references computed in ``pool`` (in
    about ``tasks`` pieces) where not cached, or its validation read back where kept;
    the per-point passes compiled where numba imports (:func:`compiled`)."""
    keys = sorted({(t.order, t.arg or spec.args[0]) for t in spec.tasks})
    validations = {k: validated(get_case(spec.case), k[1], k[0], spec.dtype, pool, tasks) for k in keys}
    return Setup(spec, validations, backend, flushes, fused=compiled())


@functools.lru_cache(maxsize=4)
def _program(case_name: str, jobs: tuple[tuple[str, str, int], ...], nargs: int) -> Callable[..., Any]:
    """One compiled program per process holding every job (built once, reused per chunk)."""
    from rulelab.jaxrun.evaluate import fused

    case = get_case(case_name)
    return fused([(case.variants[v].fn, t, a) for v, t, a in jobs], nargs, f"{case_name}_exhaustive")


@dataclass(frozen=True)
class ChunkReference:
    """One (order, argument) reference over a chunk's points, prepared once for every
    result scored against it: hi + lo, ``rounded`` to the dtype, the flush-aware
    reference where the backend flushes, and how many points mpmath decided; then
    ``ordered`` (the rounded values counted from zero, ``floats.ordered``: a dULP is one
    subtraction), ``general``: where :func:`metrics.point_errors` scores instead (a
    reference not finite or unsettled, or one a flushing backend reads otherwise; a mask,
    and ``general_at``, its positions) and, for the numpy passes, ``inv_ulp`` (1 / the
    dtype's spacing at hi, a power of two)."""

    hi: np.ndarray
    lo: np.ndarray
    rounded: np.ndarray
    flush: FlushReference | None
    mpmath_points: int
    ordered: np.ndarray
    general: np.ndarray
    general_at: np.ndarray
    inv_ulp: np.ndarray | None = None


def _decide(setup: Setup, case: Case, order: int, arg: str, pts: tuple[np.ndarray, ...],
            secs: dict[str, float], in_domain: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(hi, lo, rounded, points mpmath decided) of the reference at ``pts`` (all in the
    case's domain if ``in_domain``): the fast tier where its validated bound decides the
    rounding, mpmath elsewhere in the domain."""
    dtype = setup.spec.dtype
    v = setup.validations[(order, arg)]
    t = time.perf_counter()
    fast = evaluate_fast(case, arg, order, pts)
    secs["fast_reference"] += time.perf_counter() - t
    t = time.perf_counter()
    if setup.fused:
        ok, rounded, hi = _decided_fused(fast, pts, v)
    else:
        ok, rounded = decided_rounding(fast, pts, v)
        hi = np.where(ok, fast, np.nan)
    secs["rounding_test"] += time.perf_counter() - t
    t = time.perf_counter()
    lo = np.zeros(hi.shape)
    todo = np.flatnonzero(~ok)
    rounded[todo] = np.nan  # (the fast values decide the others: a correctly rounded cast)
    if not in_domain:
        inside = np.ones(todo.size, dtype=bool)
        for dom, x in zip(case.domain, pts):
            inside &= np.asarray(dom.contains(x[todo]), dtype=bool)
        todo = todo[inside]
    for j in todo:
        hi[j], lo[j] = reference_point(case, order, arg, tuple(float(x[j]) for x in pts), setup.max_precision)
    if todo.size:
        rounded[todo] = round_double_double(hi[todo], lo[todo], dtype)
    secs["mpmath"] += time.perf_counter() - t
    return hi, lo, rounded, int(todo.size)


def _decided_fused(fast: np.ndarray, pts: tuple[np.ndarray, ...], v: Validation) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``fast.decided_rounding`` in one compiled pass (``kernel.decide``), and the fast
    values where they decide (NaN elsewhere)."""
    from rulelab.scoring import kernel

    f = fmt(v.dtype)
    fast = np.ascontiguousarray(fast, dtype=np.float64)
    bits, hi = np.empty(fast.size, dtype=f.uint), np.empty(fast.size)
    nan_bits = int(np.array(np.nan, dtype=f.dtype).view(f.uint))
    ok, n_tiny = kernel.decide(fast, v.bound, TINY, *kernel.format_args(f), f.bits, nan_bits, bits, hi)
    if n_tiny:
        tiny = np.flatnonzero(~ok)
        ok = decided_tiny(ok, fast, pts, v)
        tiny = tiny[ok[tiny]]
        hi[tiny] = fast[tiny]
    return ok, bits.view(f.dtype), hi


def _flushed_reading(pts: tuple[np.ndarray, ...], dtype: Any) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The points a backend that flushes ``dtype``'s subnormals reads otherwise (a
    subnormal coordinate: positions), and those points as it reads them (signed zeros)."""
    tiny = fmt(dtype).smallest_normal
    near = np.flatnonzero(np.logical_or.reduce([np.abs(x) < tiny for x in pts]))  # (zeros too)
    sub = [(x[near] != 0) & (np.abs(x[near]) < tiny) for x in pts]
    keep = np.logical_or.reduce(sub)
    where = near[keep]
    return where, tuple(np.where(s[keep], np.copysign(0.0, x[where]), x[where]) for s, x in zip(sub, pts))


def _subnormal(x: np.ndarray) -> np.ndarray:
    """Where values of a format of at most 32 bits are subnormal (from their bits)."""
    f = fmt(x.dtype)
    mag = x.view(f.uint) & f.uint((1 << (f.bits - 1)) - 1)
    return (mag != 0) & (mag < f.uint(1 << (f.precision - 1)))


def _reference(setup: Setup, case: Case, order: int, arg: str, pts: tuple[np.ndarray, ...], secs: dict[str, float]) -> ChunkReference:
    """The reference at ``pts`` (:func:`_decide`), and where the backend flushes, at the
    points as it reads them (decided once per distinct flushed point)."""
    dtype = setup.spec.dtype
    hi, lo, rounded, n_mpmath = _decide(setup, case, order, arg, pts, secs, in_domain=True)
    t = time.perf_counter()
    flush = None
    general = ~np.isfinite(rounded)
    nan = np.flatnonzero(np.isnan(hi))
    general[nan[is_unsettled(hi[nan], lo[nan])]] = True
    if setup.flushes:
        # the flush-aware reference differs from the IEEE one only where an input or the
        # reference is subnormal: decided there (once per distinct flushed point)
        where, read = _flushed_reading(pts, dtype)
        at = np.union1d(where, np.flatnonzero(_subnormal(rounded)))
        f_hi, f_lo, f_rounded = hi[at], lo[at], rounded[at]
        if where.size:
            bits = np.stack([x.view(np.uint64) for x in read], axis=1)
            uniq, inverse = np.unique(bits, axis=0, return_inverse=True)
            u_pts = tuple(np.ascontiguousarray(uniq[:, k]).view(np.float64) for k in range(len(pts)))
            secs["scoring"] += time.perf_counter() - t
            u_hi, u_lo, u_rounded, n = _decide(setup, case, order, arg, u_pts, secs)
            t = time.perf_counter()
            n_mpmath += n
            inverse, pos = inverse.reshape(-1), np.searchsorted(at, where)
            f_hi[pos], f_lo[pos], f_rounded[pos] = u_hi[inverse], u_lo[inverse], u_rounded[inverse]
        flushed = rounded.copy()
        flushed[at] = flush_reference(f_hi, f_lo, dtype, rounded[at], rounded_at_flushed=f_rounded).rounded
        flush = FlushReference(flushed)
        bits_of = fmt(dtype).uint
        general[at] |= flushed[at].view(bits_of) != rounded[at].view(bits_of)
    inv_ulp = None if setup.fused else 1.0 / ulp(np.where(general, 1.0, hi), dtype)
    out = ChunkReference(hi, lo, rounded, flush, n_mpmath, ordered(rounded, dtype), general, np.flatnonzero(general), inv_ulp)
    secs["scoring"] += time.perf_counter() - t
    return out


@dataclass(frozen=True)
class Scored:
    """One result over one chunk's in-domain inputs ``points`` (float64, one array per
    argument), scored against ``ref``: :func:`metrics.point_errors` at the points of
    ``general`` (indices, in ``errors``), one subtraction of counts elsewhere (``dulp``
    at every point for the numpy passes, which also take non-finite results as general;
    None for the compiled ones, which count those apart and subtract in the loop)."""

    task: Task
    points: tuple[np.ndarray, ...]
    values: np.ndarray
    ref: ChunkReference
    dulp: np.ndarray | None
    general: np.ndarray
    errors: PointErrors

    def frac(self, idx: np.ndarray | None = None) -> np.ndarray:
        """The fractional error against hi + lo at the points ``idx`` (every point if None;
        meaningless at the general points)."""
        sel = slice(None) if idx is None else idx
        inv = self.ref.inv_ulp
        if inv is None:
            hi = self.ref.hi[sel]
            inv = 1.0 / ulp(np.where(self.ref.general[sel], 1.0, hi), self.values.dtype)
        else:
            inv = inv[sel]
        with np.errstate(over="ignore", invalid="ignore"):
            frac = self.values[sel].astype(np.float64)
            frac -= self.ref.hi[sel]
            frac -= self.ref.lo[sel]
            np.abs(frac, out=frac)
            frac *= inv
        return frac

    def at(self, idx: np.ndarray, frac: np.ndarray | None = None) -> PointErrors:
        """The errors at the points ``idx`` as ``metrics.point_errors`` gives them: the
        subtracted dULPs (with ``frac``, :meth:`frac` at every point, where already
        known), the wrong non-finite results where the reference is finite, and the
        general points'."""
        idx = np.asarray(idx, dtype=np.int64)
        dtype = self.values.dtype
        if self.dulp is None:
            with np.errstate(invalid="ignore"):
                d = np.abs(ordered(self.values[idx], dtype).astype(np.int64) - self.ref.ordered[idx])
        else:
            d = self.dulp[idx]
        dulp, bucket = d.astype(np.float64), _BUCKET_OF[np.minimum(d, HIST_BINS - 1)]
        fr = self.frac(idx) if frac is None else frac[idx]
        wrong = ~np.isfinite(self.values[idx].astype(np.float64))
        dulp[wrong], fr[wrong], bucket[wrong] = np.inf, np.nan, Bucket.WRONG_NONFINITE
        flushed = np.zeros(idx.size, dtype=bool)
        dulp_ieee, bucket_ieee = dulp.copy(), bucket.copy()
        g = np.minimum(np.searchsorted(self.general, idx), max(self.general.size - 1, 0))
        hit = (self.general[g] == idx) if self.general.size else np.zeros(idx.size, dtype=bool)
        e, j = self.errors, g[hit]
        dulp[hit], fr[hit], bucket[hit], dulp_ieee[hit], bucket_ieee[hit], flushed[hit] = (
            e.dulp[j], e.frac[j], e.bucket[j], e.dulp_ieee[j], e.bucket_ieee[j], e.flushed[j])
        return PointErrors(dulp, fr, bucket, self.ref.rounded[idx], dulp_ieee, bucket_ieee, flushed)

    def point_errors(self) -> PointErrors:
        """Every point's errors (:meth:`at` every point)."""
        return self.at(np.arange(self.values.size))


def _score(task: Task, pts: tuple[np.ndarray, ...], values: np.ndarray, ref: ChunkReference, dtype: Any, fused: bool) -> Scored:
    if fused:
        dulp, g = None, ref.general_at
    else:
        dulp = np.subtract(ordered(values, dtype), ref.ordered, dtype=np.int64)  # (meaningless at the general points)
        np.abs(dulp, out=dulp)
        g = np.flatnonzero(ref.general | ~np.isfinite(values))
    flush = FlushReference(ref.flush.rounded[g]) if ref.flush is not None else None
    errors = point_errors(values[g], ref.hi[g], ref.lo[g], dtype, rounded=ref.rounded[g], flush=flush)
    return Scored(task, pts, values, ref, dulp, g, errors)


def score_chunk(setup: Setup, i: int, secs: dict[str, float] | None = None) -> Iterator[Scored]:
    """Every task scored over chunk ``i`` (:func:`score_points` of its inputs)."""
    spec = setup.spec
    return score_points(setup, chunk_inputs(i, spec.chunk_bits, spec.dtype, len(spec.args)), secs)


def score_points(setup: Setup, inputs: np.ndarray | tuple[np.ndarray, ...], secs: dict[str, float] | None = None) -> Iterator[Scored]:
    """Every task scored at ``inputs`` (values of the spec's dtype, one array per argument;
    points with a NaN or outside the domain dropped): one compiled program evaluates
    them for each task, each (order, argument) reference is decided once (fast tier,
    else mpmath) and every point scored as every sweep scores it
    (``metrics.point_errors``, flush-aware), by a subtraction where result and
    reference are finite and read alike."""
    import jax

    spec = setup.spec
    case = get_case(spec.case)
    f = fmt(spec.dtype)
    inputs = tuple(np.asarray(x, dtype=f.dtype) for x in ((inputs,) if isinstance(inputs, np.ndarray) else inputs))
    keep = np.ones(inputs[0].shape, dtype=bool)
    with np.errstate(invalid="ignore"):  # (signalling NaNs, cast)
        x64 = tuple(x.astype(np.float64) for x in inputs)
    for dom, x in zip(case.domain, x64):
        keep &= ~np.isnan(x) & np.asarray(dom.contains(x), dtype=bool)
    every = bool(keep.all())
    program = _program(spec.case, tuple((t.variant, t.transform, spec.args.index(t.arg) if t.arg else 0) for t in spec.tasks), len(spec.args))
    device = jax.devices(setup.backend)[0] if setup.backend else jax.devices()[0]
    xd = [jax.device_put(x, device) for x in inputs]
    pts = x64 if every else tuple(x[keep] for x in x64)
    refs: dict[tuple[int, str], ChunkReference] = {}
    secs = dict.fromkeys(CHUNK_SECONDS, 0.0) if secs is None else secs
    for k, t in enumerate(spec.tasks):
        t0 = time.perf_counter()
        values = np.asarray(program(np.int32(k), *xd))
        values = values if every else values[keep]
        secs["jax"] += time.perf_counter() - t0
        key = (t.order, t.arg or spec.args[0])
        if key not in refs:
            refs[key] = _reference(setup, case, t.order, key[1], pts, secs)
        t0 = time.perf_counter()
        scored = _score(t, pts, values, refs[key], spec.dtype, setup.fused)
        secs["scoring"] += time.perf_counter() - t0
        yield scored


def aggregate(sc: Scored, index: BinIndex, cells: BinIndex | None, k: int) -> Aggregate:
    """The aggregates of one result over one chunk: per group of ``index`` (the binned
    table's binades) and of ``cells`` (pairs of binades, for two arguments: the error
    map), the worst ``k`` points and a sample per binade. The subtracted dULPs are
    counted from one histogram per group (in one compiled loop, or numpy passes, as
    ``sc`` was scored); the general points, few, as every sweep counts them."""
    if not sc.values.size:  # (a chunk of NaNs and inputs outside the domain)
        return Aggregate({})
    r, maps, nan, inf, top_frac, worst_points = (_counted_fused if sc.dulp is None else _counted_numpy)(sc, index, cells, k)
    e = sc.errors
    wrong = e.bucket == Bucket.WRONG_NONFINITE
    n_nan = int(np.isnan(sc.values[sc.general][wrong].astype(np.float64)).sum())
    top_frac = np.fmax(top_frac, np.max(e.frac, where=~np.isnan(e.frac), initial=-np.inf))
    bins = {key: {"count": int(r.count[j]), "buckets": r.buckets[j], "hist": _sparse(r.hist[j]), "max_ulp": float(r.max_ulp[j]),
                  "max_ulp_ieee": float(r.max_ulp_ieee[j]), "flushed": int(r.flushed[j])} for j, key in enumerate(index.keys)}
    first = index.first
    samples = pd.DataFrame({**{f"in{i}": p[first] for i, p in enumerate(sc.points)}, "computed": sc.values[first].astype(np.float64),
                            "ref_hi": sc.ref.hi[first], "dulp": sc.at(first).dulp,
                            "sign": [key[0] for key in index.keys], "binade": [key[1] for key in index.keys]})
    mine = np.union1d(_largest(worst_key(e.bucket, e.dulp), k), np.flatnonzero(e.bucket == Bucket.UNSETTLED)[:k])
    cand = np.union1d(worst_points, sc.general[mine])
    w = worst(tuple(p[cand] for p in sc.points), sc.values[cand], sc.ref.hi[cand], sc.ref.lo[cand], sc.at(cand), k=k)
    return Aggregate(bins, nan + n_nan, inf + int(wrong.sum()) - n_nan, float(top_frac) if np.isfinite(top_frac) else math.nan, w,
                     samples, sc.ref.mpmath_points, maps)


Counted = tuple[Reduced, tuple[pd.DataFrame, ...], int, int, float, np.ndarray]
"""What a result's subtracted points give: per group of the index and of the cells, the
wrong NaN and inf among them, their largest fractional error and their worst positions."""


def _counted_fused(sc: Scored, index: BinIndex, cells: BinIndex | None, k: int) -> Counted:
    """:data:`Counted` from one compiled loop (``kernel.count``), the general points added."""
    from rulelab.scoring import kernel

    f = fmt(sc.values.dtype)
    ref = sc.ref
    lut = kernel.decoder(f.dtype)
    (hist, top, wrong, cell_buckets, cell_top, top_frac, nan, inf, worst_pos, nonfinite_pos) = kernel.count(
        sc.values if not lut.size else np.zeros(0, dtype=np.float32), lut, sc.values.view(f.int), ref.ordered, ref.general,
        ref.hi, ref.lo, index.idx, len(index), cells.idx if cells is not None else index.idx, len(cells) if cells is not None else 0,
        kernel.inverse_spacings(f.dtype), *kernel.format_args(f), _BUCKET_OF, len(Bucket), k)
    r = _with_general(index, from_hist(hist, top, wrong), sc)
    maps = (cells_frame(cells, _with_general(cells, from_buckets(cell_buckets, cell_top), sc)),) if cells is not None else ()
    found = np.concatenate([worst_pos, nonfinite_pos])
    return r, maps, nan, inf, top_frac, found[found >= 0]


def _counted_numpy(sc: Scored, index: BinIndex, cells: BinIndex | None, k: int) -> Counted:
    """:data:`Counted` from numpy passes over every point, the general points added."""
    d = sc.dulp.copy()
    d[sc.general] = -1  # (left to the general scorer)
    r = _with_general(index, reduce_counted(index, d), sc)
    frac = sc.frac()
    top_frac = np.max(frac, where=d >= 0, initial=-np.inf)
    maps = (cells_frame(cells, _with_general(cells, reduce_counted(cells, d), sc)),) if cells is not None else ()
    return r, maps, 0, 0, top_frac, _worst_subtracted(d, frac, k)


def _with_general(index: BinIndex, r: Reduced, sc: Scored) -> Reduced:
    """The aggregates ``r`` of the subtracted points, per group of ``index``, and the general ones'."""
    if not sc.general.size:
        return r
    e = sc.errors
    sub = BinIndex(index.keys, index.idx[sc.general], index.first)
    return combined(r, reduce(sub, e.dulp, e.bucket, e.dulp_ieee, e.bucket_ieee, e.flushed, hist=r.hist is not None))


def _worst_subtracted(d: np.ndarray, frac: np.ndarray, k: int) -> np.ndarray:
    """The positions of the ``k`` worst subtracted points (``d`` >= 0), as
    ``metrics.worst`` ranks them: the k-th largest dULP found without sorting the chunk,
    ties at it taken by fractional error."""
    big = _largest(d, k)
    if big.size:
        t = d[big].min()
        above = np.flatnonzero(d > t)
        at = np.flatnonzero(d == t)
        r = k - above.size
        if at.size > r:
            at = at[_largest(frac[at], r)]
        big = np.concatenate([above, at])
    return big


def _largest(v: np.ndarray, r: int) -> np.ndarray:
    """Positions of the ``r`` largest of ``v`` (NaN never among them; fewer if there are
    fewer numbers; ties at the r-th taken in order). A threshold from every 64th value
    first: the r-th largest of those is at most the r-th largest of all, so only the
    values above it are ranked, and the rest taken from those equal to it."""
    number = ~np.isnan(v) if v.dtype.kind == "f" else np.ones(v.size, dtype=bool)
    sample = v[::64][number[::64]]
    if sample.size <= r:
        pool = np.flatnonzero(number)
        return pool[np.argsort(-v[pool], kind="stable")[:r]] if pool.size > r else pool
    t = np.partition(sample, sample.size - r)[sample.size - r]
    above = np.flatnonzero(v > t)
    if above.size >= r:
        return above[np.argsort(-v[above], kind="stable")[:r]]
    return np.concatenate([above, np.flatnonzero(v == t)[: r - above.size]])


def _first_index(x: np.ndarray) -> BinIndex:
    """The groups of a chunk's first argument, which runs through consecutive bit patterns
    of one sign: one group when its ends share a binade (its magnitude is monotone)."""
    ends = codes(x[[0, -1]]) if x.size else np.zeros(0)
    if x.size and ends[0] == ends[-1]:
        return BinIndex(bin_index([x[:1]]).keys, np.zeros(x.size, dtype=np.intp), np.array([0]))
    return bin_index([x])


def run_chunk(setup: Setup, i: int) -> tuple[dict[tuple[str, ...], Aggregate], dict[str, float]]:
    """Aggregates of every task over chunk ``i``, and the seconds per phase."""
    out: dict[tuple[str, ...], Aggregate] = {}
    secs = dict.fromkeys(CHUNK_SECONDS, 0.0)
    indexes: dict[int, BinIndex] = {}
    cells = None
    args = setup.spec.args
    for sc in score_chunk(setup, i, secs):
        t0 = time.perf_counter()
        pos = args.index(sc.task.arg) if sc.task.arg else 0
        if 0 not in indexes:
            indexes[0] = _first_index(sc.points[0])
        if pos not in indexes:
            indexes[pos] = bin_index([sc.points[pos]])
        if len(args) == 2 and cells is None:
            if 1 not in indexes:
                indexes[1] = bin_index([sc.points[1]])
            x, y = indexes[0], indexes[1]  # (one group of x: the pairs are y's groups)
            cells = BinIndex([x.keys[0] + k for k in y.keys], y.idx, y.first) if len(x) == 1 else bin_index(sc.points)
        out[sc.task.key] = aggregate(sc, indexes[pos], cells, K_WORST)
        secs["aggregation"] += time.perf_counter() - t0
    return out, secs
