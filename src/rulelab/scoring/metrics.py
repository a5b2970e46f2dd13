"""Errors against the reference: dULP, fractional error, buckets, per-binade aggregates and
worst inputs.

Every point falls in exactly one bucket (:class:`rulelab.store.vocabulary.Bucket`).
Finite results (and infinities that match an infinite rounded reference) are measured
in dULP; non-finite disagreements are classes of their own, never a large number.

Flushing is the backend's, not the rule's: where a backend flushes a dtype's subnormals
(XLA on CPU does for float32 and bfloat16), a point is also scored against the
flush-aware reference, and its headline is the closer of the two. Flushes inside a
computation (an intermediate that underflows) stay the rule's responsibility.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rulelab.core.floats import (
    binade,
    fmt,
    round_double_double,
    to_bits,
    ulp,
    ulp_distance,
)
from rulelab.reference.settle import is_unsettled
from rulelab.store.vocabulary import BINNED, KEYS, ULP_UPPER, Bucket

HIST_BINS = ULP_UPPER[-1] + 2
"""Bins of a dULP histogram: one per dULP 0 to 1024, and one for everything above."""
NONFINITE_DULP = np.inf
"""dULP recorded for points in a non-finite class (so they sort as worst)."""


@dataclass(frozen=True)
class FlushReference:
    """The reference as a backend that flushes subnormals can represent it: the function
    at the inputs as the backend reads them (subnormal inputs as signed zeros), rounded
    to the dtype, a subnormal result flushed to a signed zero (see
    :func:`flush_reference`)."""

    rounded: np.ndarray


@dataclass(frozen=True)
class PointErrors:
    """Per-point errors of one evaluation. The headline: ``dulp`` (float64, inf for
    non-finite classes, NaN for both undefined and unsettled), ``frac`` (fractional
    error against the unrounded reference, NaN where undefined), ``bucket`` (a
    :class:`Bucket` code). Against the IEEE reference alone: ``dulp_ieee`` and
    ``bucket_ieee``; ``flushed`` marks the points where the flush-aware reference is
    strictly closer (the headline then uses it). ``rounded``: the IEEE reference rounded."""

    dulp: np.ndarray
    frac: np.ndarray
    bucket: np.ndarray
    rounded: np.ndarray
    dulp_ieee: np.ndarray
    bucket_ieee: np.ndarray
    flushed: np.ndarray


def _classify(computed: np.ndarray, rounded: np.ndarray, hi: np.ndarray, lo: np.ndarray, f: Any, unsettled: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dulp, frac, bucket) of ``computed`` against one rounded reference."""
    c64 = computed.astype(np.float64)
    r64 = rounded.astype(np.float64)
    c_nan, r_nan = np.isnan(c64), np.isnan(r64) & ~unsettled
    c_fin, r_fin = np.isfinite(c64), np.isfinite(r64)

    both_undefined = c_nan & r_nan
    unexpected_finite = c_fin & ~r_fin & ~unsettled
    same_infinity = ~c_fin & ~c_nan & ~r_fin & ~r_nan & (c64 == r64)
    comparable = (c_fin & r_fin) | same_infinity
    wrong_nonfinite = ~(both_undefined | unexpected_finite | comparable | unsettled)

    dulp = np.full(c64.shape, NONFINITE_DULP)
    dulp[both_undefined | unsettled] = np.nan
    if comparable.any():
        dulp[comparable] = ulp_distance(computed[comparable], rounded[comparable], f).astype(np.float64)

    frac = np.full(c64.shape, np.nan)
    fin = comparable & c_fin & np.isfinite(hi)
    if fin.any():
        with np.errstate(over="ignore"):  # float64 results far from the reference: an inf fraction, as meant
            diff = (c64[fin] - hi[fin]) - lo[fin]
            frac[fin] = np.abs(diff) / ulp(hi[fin], f)
    frac[same_infinity] = 0.0

    bucket = np.full(c64.shape, -1, dtype=np.int8)
    bucket[comparable] = Bucket.of_ulp(dulp[comparable])
    bucket[wrong_nonfinite] = Bucket.WRONG_NONFINITE
    bucket[unexpected_finite] = Bucket.UNEXPECTED_FINITE
    bucket[both_undefined] = Bucket.BOTH_UNDEFINED
    bucket[unsettled] = Bucket.UNSETTLED
    return dulp, frac, bucket


def bucket_counts(hist: np.ndarray) -> np.ndarray:
    """Points per :class:`Bucket` (indexed by code) from a histogram of dULP 0, 1, ...,
    1024 whose last bin holds everything above (or from a histogram per row: one row of
    counts each): the scored buckets' counts, zero for the rest."""
    hist = np.asarray(hist, dtype=np.int64)
    if hist.shape[-1:] != (HIST_BINS,):
        raise ValueError(f"a dULP histogram has {HIST_BINS} bins (0 to {ULP_UPPER[-1]}, and one above), not {hist.shape[-1:]}")
    out = np.zeros((*hist.shape[:-1], len(Bucket)), dtype=np.int64)
    out[..., : len(ULP_UPPER) + 1] = np.add.reduceat(hist, [0, *(u + 1 for u in ULP_UPPER)], axis=-1)
    return out


def _badness(dulp: np.ndarray, bucket: np.ndarray) -> np.ndarray:
    """A point's distance for choosing between references: its dULP when comparable, 0
    when both are undefined, inf for a non-finite disagreement."""
    return np.where(bucket <= Bucket.ULP_GT_1024, dulp, np.where(bucket == Bucket.BOTH_UNDEFINED, 0.0, np.inf))


def flush_reference(hi: np.ndarray, lo: np.ndarray, dtype: Any, ieee: np.ndarray, rounded_at_flushed: np.ndarray | None = None) -> FlushReference:
    """The flush-aware reference from the reference at the flushed inputs (hi, lo):
    rounded to ``dtype`` (``rounded_at_flushed`` when the caller has that rounding
    already), subnormal results flushed to signed zeros, and the IEEE rounding ``ieee``
    kept where it never settled."""
    f = fmt(dtype)
    r = round_double_double(hi, lo, f) if rounded_at_flushed is None else np.asarray(rounded_at_flushed).astype(f.dtype)
    r64 = r.astype(np.float64)
    sub = np.isfinite(r64) & (r64 != 0) & (np.abs(r64) < f.smallest_normal)
    flushed = np.where(sub, np.copysign(0.0, r64), r64).astype(f.dtype)
    return FlushReference(np.where(is_unsettled(hi, lo), np.asarray(ieee).astype(f.dtype), flushed))


def point_errors(
    computed: np.ndarray,
    ref_hi: np.ndarray,
    ref_lo: np.ndarray,
    dtype: Any,
    rounded: np.ndarray | None = None,
    flush: FlushReference | None = None,
) -> PointErrors:
    """Compare ``computed`` (in ``dtype``) with the reference (hi + lo; (NaN, 0) undefined,
    (NaN, p) unsettled). ``rounded``: the reference already rounded to ``dtype``
    (``round_double_double``), for callers that compare many evaluations against one
    reference; computed when None. ``flush``: where the backend flushes this dtype's
    subnormals, the flush-aware reference; each point's headline is then the closer of
    the two (an unsettled point stays unsettled)."""
    f = fmt(dtype)
    computed = np.asarray(computed).astype(f.dtype)
    hi = np.asarray(ref_hi, dtype=np.float64)
    lo = np.asarray(ref_lo, dtype=np.float64)
    rounded = round_double_double(hi, lo, f) if rounded is None else np.asarray(rounded).astype(f.dtype)
    unsettled = is_unsettled(hi, lo)
    dulp, frac, bucket = _classify(computed, rounded, hi, lo, f, unsettled)
    flushed = np.zeros(dulp.shape, dtype=bool)
    if flush is not None:
        # only where the two references differ can the flush-aware one be closer
        fr = np.asarray(flush.rounded).astype(f.dtype)
        idx = np.flatnonzero((to_bits(fr, f) != to_bits(rounded, f)) & ~unsettled)
        if idx.size:
            fr64 = fr[idx].astype(np.float64)
            f_dulp, f_frac, f_bucket = _classify(computed[idx], fr[idx], fr64, np.zeros_like(fr64), f, np.zeros(idx.size, dtype=bool))
            better = _badness(f_dulp, f_bucket) < _badness(dulp[idx], bucket[idx])
            idx, f_dulp, f_frac, f_bucket = idx[better], f_dulp[better], f_frac[better], f_bucket[better]
            flushed[idx] = True
    if not flushed.any():
        return PointErrors(dulp, frac, bucket, rounded, dulp, bucket, flushed)
    h_dulp, h_frac, h_bucket = dulp.copy(), frac.copy(), bucket.copy()
    h_dulp[idx], h_frac[idx], h_bucket[idx] = f_dulp, f_frac, f_bucket
    return PointErrors(h_dulp, h_frac, h_bucket.astype(np.int8), rounded, dulp, bucket, flushed)


def _scored_max(dulp: np.ndarray, bucket: np.ndarray) -> float:
    d = dulp[bucket <= Bucket.ULP_GT_1024]
    return float(d.max()) if d.size else np.nan


def summarize(errors: PointErrors) -> dict[str, Any]:
    """One summary row: counts per bucket, max / median dULP over comparable points
    (headline and IEEE-only), how many points flushing explains, max fractional error."""
    d = errors.dulp[errors.bucket <= Bucket.ULP_GT_1024]
    row: dict[str, Any] = {
        "n_points": int(errors.bucket.size),
        "max_ulp": float(d.max()) if d.size else np.nan,
        "median_ulp": float(np.median(d)) if d.size else np.nan,
        "max_ulp_ieee": _scored_max(errors.dulp_ieee, errors.bucket_ieee),
        "flushed": int(errors.flushed.sum()),
        "max_frac_ulp": float(np.nanmax(errors.frac)) if (~np.isnan(errors.frac)).any() else np.nan,
    }
    counts = np.bincount(errors.bucket.astype(np.int64), minlength=len(Bucket))
    row.update({b.column: int(counts[b]) for b in Bucket})
    return row


def binned(x: np.ndarray, errors: PointErrors) -> pd.DataFrame:
    """Aggregates per binade and sign of the inputs ``x`` (float64): count, max and median
    dULP (headline), max dULP against the IEEE reference, and how many points were
    non-finite, flushed or unsettled. Rows sorted by sign, then binade. (Plain numpy: a
    sweep calls this once per result, where a pandas groupby would dominate its time.)"""
    x = np.asarray(x, dtype=np.float64)
    sign = np.where(np.signbit(x), -1, 1).astype(np.int64)
    b = binade(x)
    comparable = np.where(errors.bucket <= Bucket.ULP_GT_1024, errors.dulp, np.nan)
    ieee = np.where(errors.bucket_ieee <= Bucket.ULP_GT_1024, errors.dulp_ieee, np.nan)
    counted = {
        "nonfinite": np.isin(errors.bucket, (Bucket.WRONG_NONFINITE, Bucket.UNEXPECTED_FINITE)),
        "flushed": errors.flushed,
        Bucket.UNSETTLED.column: errors.bucket == Bucket.UNSETTLED,
    }
    keep = ~np.isnan(b)  # (NaN inputs have no binade; a groupby drops them too)
    sign, b, comparable, ieee = sign[keep], b[keep], comparable[keep], ieee[keep]
    counted = {k: v[keep].astype(np.int64) for k, v in counted.items()}
    if not b.size:
        return pd.DataFrame({c: np.array([], dtype=np.float64 if c in ("binade", "max_ulp", "median_ulp", "max_ulp_ieee") else np.int64)
                             for c in ("sign", "binade", "count", "max_ulp", "median_ulp", "max_ulp_ieee", *counted)})
    order = np.lexsort((comparable, b, sign))  # within a group, NaN (not comparable) last
    sign, b, comparable, ieee = sign[order], b[order], comparable[order], ieee[order]
    counted = {k: v[order] for k, v in counted.items()}
    starts = np.flatnonzero(np.r_[True, (sign[1:] != sign[:-1]) | (b[1:] != b[:-1])])
    count = np.diff(np.r_[starts, b.size])
    valid = np.add.reduceat((~np.isnan(comparable)).astype(np.int64), starts)
    has = valid > 0
    lo_i = starts + np.maximum(valid - 1, 0) // 2
    hi_i = starts + np.maximum(valid, 1) // 2
    hi_i = np.where(has, hi_i, starts)
    median = np.where(has, (comparable[lo_i] + comparable[hi_i]) / 2, np.nan)
    top = np.where(has, comparable[starts + np.maximum(valid - 1, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        top_ieee = np.fmax.reduceat(ieee, starts)
    return binned_frame(sign[starts], b[starts], count, top, median, top_ieee, *(np.add.reduceat(v, starts) for v in counted.values()))


def binned_frame(*columns: Any) -> pd.DataFrame:
    """Per-binade aggregates as :func:`binned` returns them, one row per sign and binade,
    from arrays computed elsewhere (a sweep of every input sums them over chunks), given
    in the order of the binned table's own columns (``vocabulary.BINNED`` after the keys
    and ``binade_of``: sign, binade, count, max and median dULP, IEEE max, non-finite,
    flushed, unsettled)."""
    own = [c for c in BINNED if c not in KEYS and c != "binade_of"]
    if len(columns) != len(own):
        raise ValueError(f"binned_frame takes {len(own)} columns ({', '.join(own)}), got {len(columns)}")
    return pd.DataFrame({c: np.asarray(a).astype(BINNED[c][0]) for c, a in zip(own, columns)})


def worst_key(bucket: np.ndarray, dulp: np.ndarray) -> np.ndarray:
    """How bad each point is, larger worse: inf for the non-finite classes, the dULP for
    scored points, -1 for unscored ones (both undefined, unsettled)."""
    return np.where(bucket >= Bucket.BOTH_UNDEFINED, -1.0, np.where(bucket >= Bucket.WRONG_NONFINITE, np.inf, dulp))


def worst_order(bucket: np.ndarray, dulp: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Positions from worst to best by :func:`worst_key`, ties by fractional error."""
    return np.lexsort((-np.nan_to_num(frac, nan=0.0), -worst_key(bucket, dulp)))


def worst(inputs: tuple[np.ndarray, ...], computed: np.ndarray, ref_hi: np.ndarray, ref_lo: np.ndarray, errors: PointErrors, k: int = 10) -> pd.DataFrame:
    """The ``k`` worst points: non-finite classes first, then by dULP and fractional error;
    then up to ``k`` points whose reference is unsettled (listed, not ranked). Inputs as
    float64 columns ``in0, in1, …``."""
    scored = errors.bucket < Bucket.BOTH_UNDEFINED
    idx = worst_order(errors.bucket, errors.dulp, errors.frac)[:k]
    idx = np.concatenate([idx[scored[idx]], np.flatnonzero(errors.bucket == Bucket.UNSETTLED)[:k]])
    data: dict[str, Any] = {f"in{i}": np.asarray(x, dtype=np.float64)[idx] for i, x in enumerate(inputs)}
    data.update(
        computed=np.asarray(computed).astype(np.float64)[idx],
        ref_hi=np.asarray(ref_hi)[idx],
        ref_lo=np.asarray(ref_lo)[idx],
        dulp=errors.dulp[idx],
        dulp_ieee=errors.dulp_ieee[idx],
        flushed=errors.flushed[idx],
        frac_ulp=errors.frac[idx],
        bucket=[Bucket(b).column for b in errors.bucket[idx]],
    )
    return pd.DataFrame(data)


def frac_sensitive(errors: PointErrors, k: int, margin: np.ndarray | float) -> np.ndarray:
    """Positions whose reference must be exact for :func:`worst` (``k`` rows) and
    :func:`summarize` to be exact when each fractional error may be off by up to its
    ``margin`` (ULP; a provisional reference, ``reference.tier``): the ``k`` worst; the
    points tied with the last of them in :func:`worst_key` that could still rank among
    the shown ones of that key; and those that could still have the largest fractional
    error."""
    key = worst_key(errors.bucket, errors.dulp)
    frac = np.nan_to_num(errors.frac, nan=0.0)
    m = np.broadcast_to(np.asarray(margin, dtype=np.float64), frac.shape)
    measured = ~np.isnan(errors.frac)  # (a non-finite class has none: its ties go by position)
    top = worst_order(errors.bucket, errors.dulp, errors.frac)[:k]
    out = [top]
    if top.size and key[top[-1]] >= 0 and measured[top[-1]]:  # (an unscored point is listed, not ranked)
        last = key[top[-1]]
        tied = (key == last) & measured
        shown = int((key[top] == last).sum())
        floor = np.sort(frac[tied] - m[tied])[-shown]  # the least a shown point's exact error can be
        out.append(np.flatnonzero(tied & (frac + m >= floor)))
    if measured.any():
        floor = np.max(frac[measured] - m[measured])
        out.append(np.flatnonzero(measured & (frac + m >= floor)))
    return np.unique(np.concatenate(out))
