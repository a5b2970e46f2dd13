"""Errors against the reference: dULP, fractional error, buckets, per-binade aggregates and
worst inputs.

Every point falls in exactly one bucket. Finite results (and infinities that match an
infinite rounded reference) are measured in dULP; non-finite disagreements are classes
of their own, never a large number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rulelab.floats import binade, fmt, round_double_double, ulp, ulp_distance
from rulelab.reference import is_unsettled

BUCKETS: tuple[str, ...] = (
    "exact",
    "ulp_1",
    "ulp_2_4",
    "ulp_5_1024",
    "ulp_gt_1024",
    "wrong_nonfinite",
    "unexpected_finite",
    "both_undefined",
    "unsettled",
)
"""Bucket names, best first: 0 ULP, 1, 2–4, 5–2^10, >2^10, a non-finite result where
the reference is finite (or the wrong non-finite), a finite result where the reference is
not, both undefined (NaN and NaN), and unsettled (the reference never settled up to the
precision cap: not scored, see :mod:`rulelab.reference`)."""
UNSETTLED = BUCKETS.index("unsettled")

NONFINITE_DULP = np.inf
"""dULP recorded for points in a non-finite class (so they sort as worst)."""


@dataclass(frozen=True)
class PointErrors:
    """Per-point errors of one evaluation: ``dulp`` (float64, inf for non-finite classes,
    NaN for both undefined), ``frac`` (fractional error against the unrounded reference,
    NaN where undefined), ``bucket`` (index into BUCKETS) and the rounded reference."""

    dulp: np.ndarray
    frac: np.ndarray
    bucket: np.ndarray
    rounded: np.ndarray


def point_errors(
    computed: np.ndarray, ref_hi: np.ndarray, ref_lo: np.ndarray, dtype: Any, rounded: np.ndarray | None = None
) -> PointErrors:
    """Compare ``computed`` (in ``dtype``) with the reference (hi + lo; (NaN, 0) undefined,
    (NaN, p) unsettled).
    ``rounded``: the reference already rounded to ``dtype`` (``round_double_double``), for
    callers that compare many evaluations against one reference; computed when None."""
    f = fmt(dtype)
    computed = np.asarray(computed).astype(f.dtype)
    rounded = round_double_double(ref_hi, ref_lo, f) if rounded is None else np.asarray(rounded).astype(f.dtype)
    c64 = computed.astype(np.float64)
    r64 = rounded.astype(np.float64)
    unsettled = is_unsettled(np.asarray(ref_hi, dtype=np.float64), ref_lo)
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
    fin = comparable & c_fin & np.isfinite(ref_hi)
    if fin.any():
        diff = (c64[fin] - ref_hi[fin]) - ref_lo[fin]
        frac[fin] = np.abs(diff) / ulp(ref_hi[fin], f)
    frac[same_infinity] = 0.0

    bucket = np.full(c64.shape, -1, dtype=np.int8)
    d = dulp
    bucket[comparable & (d == 0)] = 0
    bucket[comparable & (d == 1)] = 1
    bucket[comparable & (d >= 2) & (d <= 4)] = 2
    bucket[comparable & (d >= 5) & (d <= 1024)] = 3
    bucket[comparable & (d > 1024)] = 4
    bucket[wrong_nonfinite] = 5
    bucket[unexpected_finite] = 6
    bucket[both_undefined] = 7
    bucket[unsettled] = UNSETTLED
    return PointErrors(dulp, frac, bucket, rounded)


def summarize(errors: PointErrors) -> dict[str, Any]:
    """One summary row: counts per bucket, max / median dULP over comparable points,
    max fractional error."""
    comparable = errors.bucket <= 4
    d = errors.dulp[comparable]
    row: dict[str, Any] = {
        "n_points": int(errors.bucket.size),
        "max_ulp": float(d.max()) if d.size else np.nan,
        "median_ulp": float(np.median(d)) if d.size else np.nan,
        "max_frac_ulp": float(np.nanmax(errors.frac)) if np.isfinite(errors.frac).any() else np.nan,
    }
    counts = np.bincount(errors.bucket.astype(np.int64), minlength=len(BUCKETS))
    row.update({name: int(c) for name, c in zip(BUCKETS, counts)})
    return row


def worst_bucket(row: dict[str, Any]) -> str:
    """The most severe bucket with any points (for colouring a cell)."""
    severity = ("wrong_nonfinite", "unexpected_finite", "ulp_gt_1024", "ulp_5_1024", "ulp_2_4", "ulp_1", "exact", "unsettled", "both_undefined")
    for name in severity:
        if row.get(name, 0):
            return name
    return "exact"


def binned(x: np.ndarray, errors: PointErrors) -> pd.DataFrame:
    """Aggregates per binade and sign of the inputs ``x`` (float64): count, max and median
    dULP, and how many points fell in non-finite classes. Rows sorted by sign, then
    binade. (Plain numpy: a sweep calls this once per result, where a pandas groupby
    would dominate its time.)"""
    x = np.asarray(x, dtype=np.float64)
    sign = np.where(np.signbit(x), -1, 1).astype(np.int64)
    b = binade(x)
    comparable = np.where(errors.bucket <= 4, errors.dulp, np.nan)
    nonfinite = np.isin(errors.bucket, (5, 6)).astype(np.int64)
    unsettled = (errors.bucket == UNSETTLED).astype(np.int64)
    keep = ~np.isnan(b)  # (NaN inputs have no binade; a groupby drops them too)
    sign, b, comparable, nonfinite, unsettled = sign[keep], b[keep], comparable[keep], nonfinite[keep], unsettled[keep]
    columns = ("sign", "binade", "count", "max_ulp", "median_ulp", "nonfinite", "unsettled")
    if not b.size:
        return pd.DataFrame({c: np.array([], dtype=np.float64 if c in ("binade", "max_ulp", "median_ulp") else np.int64) for c in columns})
    order = np.lexsort((comparable, b, sign))  # within a group, NaN (not comparable) last
    sign, b, comparable, nonfinite, unsettled = sign[order], b[order], comparable[order], nonfinite[order], unsettled[order]
    starts = np.flatnonzero(np.r_[True, (sign[1:] != sign[:-1]) | (b[1:] != b[:-1])])
    count = np.diff(np.r_[starts, b.size])
    valid = np.add.reduceat((~np.isnan(comparable)).astype(np.int64), starts)
    has = valid > 0
    lo_i = starts + np.maximum(valid - 1, 0) // 2
    hi_i = starts + np.maximum(valid, 1) // 2
    hi_i = np.where(has, hi_i, starts)
    median = np.where(has, (comparable[lo_i] + comparable[hi_i]) / 2, np.nan)
    top = np.where(has, comparable[starts + np.maximum(valid - 1, 0)], np.nan)
    return pd.DataFrame(
        {
            "sign": sign[starts],
            "binade": b[starts],
            "count": count.astype(np.int64),
            "max_ulp": top,
            "median_ulp": median,
            "nonfinite": np.add.reduceat(nonfinite, starts).astype(np.int64),
            "unsettled": np.add.reduceat(unsettled, starts).astype(np.int64),
        }
    )


def worst(inputs: tuple[np.ndarray, ...], computed: np.ndarray, ref_hi: np.ndarray, ref_lo: np.ndarray, errors: PointErrors, k: int = 10) -> pd.DataFrame:
    """The ``k`` worst points: non-finite classes first, then by dULP and fractional error;
    then up to ``k`` points whose reference is unsettled (listed, not ranked). Inputs as
    float64 columns ``in0, in1, …``."""
    scored = errors.bucket < 7
    order_key = np.where(~scored, -1.0, np.where(errors.bucket >= 5, np.inf, errors.dulp))
    frac = np.nan_to_num(errors.frac, nan=0.0)
    idx = np.lexsort((-frac, -order_key))[:k]
    idx = np.concatenate([idx[scored[idx]], np.flatnonzero(errors.bucket == UNSETTLED)[:k]])
    data: dict[str, Any] = {f"in{i}": np.asarray(x, dtype=np.float64)[idx] for i, x in enumerate(inputs)}
    data.update(
        computed=np.asarray(computed).astype(np.float64)[idx],
        ref_hi=np.asarray(ref_hi)[idx],
        ref_lo=np.asarray(ref_lo)[idx],
        dulp=errors.dulp[idx],
        frac_ulp=errors.frac[idx],
        bucket=[BUCKETS[b] for b in errors.bucket[idx]],
    )
    return pd.DataFrame(data)
