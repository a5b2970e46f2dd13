"""Points grouped by the signs and binades of some of their coordinates, and reduced per
group without sorting.

The pitfall: a chunk of an exhaustive sweep holds 4M points and every result is reduced
over it; a sort per result (or a pandas groupby) costs more than evaluating the variant.
So each point's group is found once per chunk from a dense code (sign and binade of
each coordinate) and every reduction is a ``bincount`` or a ``maximum.at`` over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from rulelab.core.floats import binade
from rulelab.scoring.metrics import HIST_BINS, PointErrors, bucket_counts
from rulelab.store.vocabulary import BINNED2, Bucket

_SPAN = 4096
"""Codes per sign of a coordinate: its binade offset by 2048 (any float64's fits), 0 for
zero, ``_SPAN - 2`` for infinity, ``_SPAN - 1`` for NaN."""


def codes(x: np.ndarray) -> np.ndarray:
    """The sign and binade of each value as one code (equal codes, one group), from the
    float64 exponent field (``floats.binade`` only for float64 subnormals)."""
    bits = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    e = ((bits >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    mant = bits & np.uint64((1 << 52) - 1)
    code = e + 1025  # a normal float64's binade e - 1023, offset by 2048
    code[e == 0] = 0
    code[e == 0x7FF] = np.where(mant[e == 0x7FF] == 0, _SPAN - 2, _SPAN - 1)
    sub = (e == 0) & (mant != 0)
    if sub.any():
        code[sub] = binade(np.asarray(x, dtype=np.float64)[sub]).astype(np.int64) + 2048
    return (bits >> np.uint64(63)).astype(np.int64) * _SPAN + code


def _decode(code: int) -> tuple[int, float]:
    sign, b = (-1 if code >= _SPAN else 1), code % _SPAN
    return sign, (-np.inf if b == 0 else np.inf if b == _SPAN - 2 else np.nan if b == _SPAN - 1 else float(b - 2048))


@dataclass(frozen=True)
class BinIndex:
    """Each point's group (``idx``, 0 to ``len(keys) - 1``), each group's key (sign and
    binade of each coordinate, as the binned table spells them: -1 or 1, and
    floor(log2|x|), -inf for zero) and the position of its first point."""

    keys: list[tuple[float, ...]]
    idx: np.ndarray
    first: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def bin_index(coords: Sequence[np.ndarray]) -> BinIndex:
    """The groups of points by sign and binade of each of ``coords`` (float64 arrays of one
    length), in order of sign and binade of the first coordinate, then the next."""
    n = int(np.shape(coords[0])[0])
    dense = np.zeros(n, dtype=np.int64)
    present = []
    for c in coords:
        code = codes(c)
        here = np.flatnonzero(np.bincount(code, minlength=2 * _SPAN))
        lut = np.zeros(2 * _SPAN, dtype=np.int64)
        lut[here] = np.arange(here.size)
        dense = dense * max(here.size, 1) + lut[code] if len(coords) > 1 else lut[code]
        present.append(here)
    sizes = tuple(max(p.size, 1) for p in present)
    used = np.flatnonzero(np.bincount(dense, minlength=1)) if n else np.zeros(0, dtype=np.int64)
    if used.size == int(np.prod(sizes)):
        idx = dense
    else:
        lut = np.zeros(int(np.prod(sizes)), dtype=np.int64)
        lut[used] = np.arange(used.size)
        idx = lut[dense]
    first = np.full(used.size, n, dtype=np.int64)
    np.minimum.at(first, idx, np.arange(n))
    parts = np.unravel_index(used, sizes) if n else [np.zeros(0, dtype=np.int64)] * len(coords)
    keys = [tuple(v for k, p in enumerate(present) for v in _decode(int(p[part[k]]))) for part in zip(*[q.tolist() for q in parts])]
    keys = [tuple(float(v) if i % 2 else int(v) for i, v in enumerate(k)) for k in keys]
    return BinIndex(keys, idx, first)


@dataclass(frozen=True)
class Reduced:
    """Per group: points, points per bucket (``len(Bucket)`` columns), the largest headline
    and IEEE dULP over comparable points (NaN if none), the points flushing explains,
    and, where asked, a dULP histogram (``HIST_BINS`` columns, the last open)."""

    count: np.ndarray
    buckets: np.ndarray
    max_ulp: np.ndarray
    max_ulp_ieee: np.ndarray
    flushed: np.ndarray
    hist: np.ndarray | None = None


def _group_max(index: BinIndex, values: np.ndarray) -> np.ndarray:
    """Per group the largest of ``values`` (-1 where a point is not counted), NaN if none."""
    if len(index) == 1:
        out = np.array([values.max(initial=-1.0)])
    else:
        out = np.full(len(index), -1.0)
        np.maximum.at(out, index.idx, values)
    return np.where(out < 0, np.nan, out)


def _per_group(index: BinIndex, values: np.ndarray, n: int) -> np.ndarray:
    """Per group, how many points have each of the values 0 to n - 1 (a groups x n array)."""
    if len(index) == 1:
        return np.bincount(values, minlength=n).reshape(1, n)
    return np.bincount(index.idx * n + values, minlength=len(index) * n).reshape(len(index), n)


def reduce(index: BinIndex, dulp: np.ndarray, bucket: np.ndarray, dulp_ieee: np.ndarray, bucket_ieee: np.ndarray,
           flushed: np.ndarray, hist: bool = False) -> Reduced:
    """Per-group aggregates of per-point errors (``metrics.PointErrors``' fields: dULP as
    float64, inf or NaN outside the scored buckets)."""
    g = len(index)
    headline = np.where(bucket <= Bucket.ULP_GT_1024, dulp, -1.0)
    with np.errstate(invalid="ignore"):
        differs = np.flatnonzero((bucket_ieee != bucket) | ((dulp_ieee != dulp) & ~np.isnan(dulp)))
    top = _group_max(index, headline)
    if differs.size:
        ieee = headline.copy()
        ieee[differs] = np.where(bucket_ieee[differs] <= Bucket.ULP_GT_1024, dulp_ieee[differs], -1.0)
        top_ieee = _group_max(index, ieee)
    else:
        top_ieee = top
    count = np.bincount(index.idx, minlength=g) if g > 1 else np.array([index.idx.size])
    buckets = _per_group(index, bucket.astype(np.intp), len(Bucket))
    marked = np.flatnonzero(flushed)
    h = _per_group(index, (np.minimum(headline, HIST_BINS - 1) + 1).astype(np.intp), HIST_BINS + 1)[:, 1:] if hist else None
    return Reduced(count, buckets, top, top_ieee, np.bincount(index.idx[marked], minlength=g), h)


def reduce_counted(index: BinIndex, d: np.ndarray) -> Reduced:
    """Per-group aggregates of integer dULPs ``d`` of points in the scored buckets (-1 for
    a point not counted here), from one histogram per group: counts per bucket and the
    largest dULP read from it (exactly, past its open last bin)."""
    g = len(index)
    h = _per_group(index, np.minimum(d, HIST_BINS - 1) + 1, HIST_BINS + 1)[:, 1:]
    top = np.where(h.sum(axis=1) > 0, HIST_BINS - 1 - np.argmax(h[:, ::-1] > 0, axis=1), -1).astype(np.float64)
    if h[:, -1].any():  # past the open bin: the exact largest
        big = np.flatnonzero(d >= HIST_BINS - 1)
        exact = np.full(g, -1.0)
        np.maximum.at(exact, index.idx[big] if g > 1 else np.zeros(big.size, dtype=np.intp), d[big].astype(np.float64))
        top = np.where(h[:, -1] > 0, exact, top)
    return from_hist(h, top)


def from_hist(h: np.ndarray, top: np.ndarray, wrong: np.ndarray | None = None) -> Reduced:
    """Per-group aggregates from a dULP histogram per group ``h`` (``HIST_BINS`` columns),
    the largest dULP per group (``top``, negative where none) and, where given, the wrong
    non-finite results per group."""
    buckets = bucket_counts(h)
    if wrong is not None:
        buckets[:, Bucket.WRONG_NONFINITE] = wrong
    return replace(from_buckets(buckets, top), hist=h)


def from_buckets(buckets: np.ndarray, top: np.ndarray) -> Reduced:
    """Per-group aggregates from the points per bucket and the largest dULP per group
    (``top``, negative where none); no histogram."""
    top = np.where(top < 0, np.nan, top).astype(np.float64)
    return Reduced(buckets.sum(axis=1), buckets, top, top, np.zeros(buckets.shape[0], dtype=np.int64))


def combined(a: Reduced, b: Reduced) -> Reduced:
    """The aggregates of two sets of points over the same groups."""
    hist = a.hist + b.hist if a.hist is not None and b.hist is not None else None
    return Reduced(a.count + b.count, a.buckets + b.buckets, np.fmax(a.max_ulp, b.max_ulp), np.fmax(a.max_ulp_ieee, b.max_ulp_ieee),
                   a.flushed + b.flushed, hist)


CELL_KEYS = ("sign0", "binade0", "sign1", "binade1")
"""The key columns of the error map (``vocabulary.BINNED2``)."""


def cells_table(points: Sequence[np.ndarray], errors: PointErrors) -> pd.DataFrame:
    """The error map of a result of a case of two arguments: per pair of (sign, binade)
    of its arguments, the points, the counts per bucket, the largest headline and IEEE
    dULP and the points flushing explains (``vocabulary.BINNED2``'s columns after the
    keys)."""
    index = bin_index([np.asarray(p, dtype=np.float64) for p in points])
    return cells_frame(index, reduce(index, errors.dulp, errors.bucket, errors.dulp_ieee, errors.bucket_ieee, errors.flushed))


def cells_frame(index: BinIndex, r: Reduced) -> pd.DataFrame:
    """The error map's rows from per-pair aggregates ``r`` over ``index`` (pairs of binades)."""
    keys = np.array(index.keys, dtype=np.float64).reshape(-1, 4)
    data = {c: keys[:, i] for i, c in enumerate(CELL_KEYS)}
    data.update(count=r.count, max_ulp=r.max_ulp, max_ulp_ieee=r.max_ulp_ieee, flushed=r.flushed, **{b.column: r.buckets[:, b] for b in Bucket})
    return pd.DataFrame({c: np.asarray(data[c]).astype(BINNED2[c][0]) for c in BINNED2 if c in data})
