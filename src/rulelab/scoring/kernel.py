"""Compiled loops for the per-point passes of an exhaustive chunk: the rounding test of a
fast reference, and one result's dULPs counted per group with its worst points.

The pitfall: each numpy pass over a chunk's 4M points reads and writes arrays of 4M
(a cast, a comparison, a subtraction, a histogram, a mask...), and a chunk made a few
dozen of them per result: memory traffic, not arithmetic, was most of an exhaustive
sweep. Each loop here makes one pass, keeping per point only what it reads. They are
compiled by numba (cached on disk, compiled again when numba or this file changes)
rather than by XLA: a histogram per group and the k worst points with ties to the
earlier one are a loop with a scatter and a branch, which XLA on CPU would run as
scatters and a sort. ``rulelab.scoring.chunks`` keeps its numpy passes as the plain
path, and the tests hold the two to identical aggregates.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numba
import numpy as np

from rulelab.core.floats import FloatFormat, fmt
from rulelab.store.vocabulary import Bucket

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
WRONG = int(Bucket.WRONG_NONFINITE)
"""The bucket of a finite reference's non-finite result (counted here, not scored apart)."""


@numba.njit(**_JIT)
def decide(fast: np.ndarray, bound: float, tiny: float, p: int, emin: int, emax: int, nbits: int, nan_bits: int,
           bits: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, int]:
    """Where the fast values decide the reference rounded to the format (``p``
    significand bits, normal exponents emin..emax): finite, at least ``tiny`` in
    magnitude, and the interval |fast| (1 ± (bound + 2^-50)) strictly between the points
    halfway from the fast value's rounding to its neighbours (past the largest finite
    value, halfway to 2^(emax + 1)): ``fast.decided_rounding``'s test, the interval
    computed in float64 alike and compared in units of the spacing (exact scalings).
    ``bits`` receives each fast value rounded to nearest even in the format (its bit
    pattern; ``nan_bits`` where the fast value is NaN) and ``hi`` the fast value where
    it decides, NaN elsewhere. Also returns how many fast values are below ``tiny`` in
    magnitude."""
    n = fast.size
    n_tiny = 0
    ok = np.zeros(n, dtype=np.bool_)
    xbits = fast.view(np.int64)
    sign = 1 << (nbits - 1)
    inf = (emax - emin + 2) << (p - 1)
    slack = bound + 2.0**-50
    qmin = emin - p + 1
    scale = np.empty(emax - emin + 2)  # 2^-q for every spacing exponent q of the format
    for j in range(scale.size):
        scale[j] = 2.0 ** -(qmin + j)
    for i in range(n):
        hi[i] = np.nan
        xb = xbits[i]
        neg = sign if xb < 0 else 0
        ex = (xb >> 52) & 0x7FF
        if ex == 0x7FF:  # inf or NaN
            bits[i] = nan_bits if (xb & ((1 << 52) - 1)) else (inf | neg)
            continue
        e = ex - 1023
        if e > emax:
            bits[i] = inf | neg
            continue
        if ex == 0:  # zero or a float64 subnormal: far below the format, rounds to zero
            bits[i] = neg
            n_tiny += 1
            continue
        m = (xb & ((1 << 52) - 1)) | (1 << 52)
        q = max(e, emin) - p + 1  # the exponent of the spacing at |x|
        sh = q - e + 52  # x = m 2^(e - 52) = (m >> sh) 2^q + rest
        if sh > 60:
            y = 0
        else:
            y = m >> sh
            rest = m & ((1 << sh) - 1)
            half = 1 << (sh - 1)
            if rest > half or (rest == half and (y & 1)):
                y += 1
        mag = ((max(e, emin) - emin) << (p - 1)) + y
        if mag >= inf:
            bits[i] = inf | neg
            continue
        bits[i] = mag | neg
        ax = abs(fast[i])
        if ax < tiny:
            n_tiny += 1
            continue
        below, above = y - 0.5, y + 0.5  # (in units of 2^q)
        if y == 1 << p:  # rounded up to the next binade's first value
            above = y + 1.0
        elif y == 1 << (p - 1) and e > emin:  # a power of two: half the spacing below
            below = y - 0.25
        width = ax * slack
        s = scale[q - qmin]
        if ((ax - width) * s > below) and ((ax + width) * s < above):
            ok[i] = True
            hi[i] = fast[i]
    return ok, n_tiny


@numba.njit(**_JIT)
def count(values: np.ndarray, lut: np.ndarray, vbits: np.ndarray, ref_ordered: np.ndarray, skip: np.ndarray,
          hi: np.ndarray, lo: np.ndarray, group: np.ndarray, ngroups: int, cell: np.ndarray,
          ncells: int, inv_ulp: np.ndarray, p: int, emin: int, emax: int, bucket_of: np.ndarray, nbuckets: int,
          k: int) -> tuple:
    """One result's points outside ``skip`` (where the reference is finite, settled and
    read alike by a flushing backend): each result's dULP against the rounded reference
    (``ref_ordered``: counted from zero, ``floats.ordered``) by one subtraction of its
    own count (from its bits ``vbits``), or a wrong non-finite result.

    Per group (``group``, or one group when ``ngroups`` is 1): a dULP histogram (the
    last bin open), the largest dULP (-1 if none) and the wrong non-finite results; per
    cell (``cell``, the error map, when ``ncells``): points per bucket and the largest
    dULP; overall: the largest fractional error, the wrong NaN and inf, the ``k`` worst
    finite points (positions, dULP and fractional error; ties to the earlier point) and
    the first ``k`` wrong non-finite ones. A value is ``values[i]`` or, where ``lut`` is
    not empty, ``lut`` at its 16 bits; its fractional error |value - hi - lo| / ulp(hi)
    with 1 / ulp from ``inv_ulp`` at hi's binade clipped to emin..emax."""
    nbins = bucket_of.size
    hist = np.zeros((ngroups, nbins), dtype=np.int64)
    top = np.full(ngroups, -1, dtype=np.int64)
    wrong = np.zeros(ngroups, dtype=np.int64)
    cells = np.zeros((max(ncells, 1), nbuckets), dtype=np.int64)
    cell_top = np.full(max(ncells, 1), -1, dtype=np.int64)
    worst_pos = np.full(k, -1, dtype=np.int64)
    worst_d = np.full(k, -1, dtype=np.int64)
    worst_f = np.full(k, -np.inf)
    nonfinite_pos = np.full(k, -1, dtype=np.int64)
    n_nan = 0
    n_inf = 0
    max_frac = -np.inf
    hi_bits = hi.view(np.int64)
    magmask = (1 << (vbits.itemsize * 8 - 1)) - 1
    infmag = (emax - emin + 2) << (p - 1)
    use_lut = lut.size > 0
    kd, kf = np.int64(-1), -np.inf  # the k-th worst so far
    flat = hist.ravel()
    for i in range(vbits.size):
        if skip[i]:
            continue
        g = group[i] if ngroups > 1 else 0
        c = cell[i] if ncells > 0 else 0
        b = np.int64(vbits[i])
        mag = b & magmask
        if mag >= infmag:  # inf or NaN where the reference is finite
            if mag > infmag:
                n_nan += 1
            else:
                n_inf += 1
            wrong[g] += 1
            if ncells > 0:
                cells[c, WRONG] += 1
            if n_nan + n_inf <= k:
                nonfinite_pos[n_nan + n_inf - 1] = i
            continue
        d = abs((-mag if b < 0 else mag) - np.int64(ref_ordered[i]))
        flat[g * nbins + min(d, nbins - 1)] += 1
        if d > top[g]:
            top[g] = d
        if ncells > 0:
            cells[c, bucket_of[min(d, nbins - 1)]] += 1
            if d > cell_top[c]:
                cell_top[c] = d
        v = lut[vbits[i] & 0xFFFF] if use_lut else np.float64(values[i])
        e = ((hi_bits[i] >> 52) & 0x7FF) - 1023
        e = min(max(e, emin), emax)
        frac = abs((v - hi[i]) - lo[i]) * inv_ulp[e - emin]
        if frac > max_frac:
            max_frac = frac
        if d > kd or (d == kd and frac > kf):
            j = k - 1
            while j > 0 and (d > worst_d[j - 1] or (d == worst_d[j - 1] and frac > worst_f[j - 1])):
                worst_pos[j], worst_d[j], worst_f[j] = worst_pos[j - 1], worst_d[j - 1], worst_f[j - 1]
                j -= 1
            worst_pos[j], worst_d[j], worst_f[j] = i, d, frac
            kd, kf = worst_d[k - 1], worst_f[k - 1]
    return hist, top, wrong, cells, cell_top, max_frac, n_nan, n_inf, worst_pos, nonfinite_pos


@lru_cache(maxsize=8)
def decoder(dtype: Any) -> np.ndarray:
    """Every 16-bit pattern of ``dtype`` as its float64 value (empty for wider formats,
    whose values the loops read directly)."""
    f = fmt(dtype)
    if f.bits != 16:
        return np.zeros(0)
    with np.errstate(invalid="ignore"):  # (NaN patterns)
        return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(f.dtype).astype(np.float64)


@lru_cache(maxsize=8)
def inverse_spacings(dtype: Any) -> np.ndarray:
    """1 / the spacing of ``dtype`` in each binade emin..emax (powers of two, exact)."""
    f = fmt(dtype)
    return np.array([math.ldexp(1.0, f.precision - 1 - e) for e in range(f.emin, f.emax + 1)])


def format_args(f: FloatFormat) -> tuple[int, int, int]:
    """(precision, emin, emax): how the loops know a format."""
    return f.precision, f.emin, f.emax
