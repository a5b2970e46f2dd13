"""Correct rounding and ULP distance, checked against independent conversions and the math."""

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
from helpers import round_mpf
from hypothesis import given, settings
from hypothesis import strategies as st

from rulelab.core import floats as F

NARROW = ["float32", "float16", "bfloat16"]


def neighbours_by_bits(v, dtype):
    """v and its bit-pattern neighbours (the only candidates for correct rounding)."""
    f = F.fmt(dtype)
    b = int(np.array(v).astype(f.dtype).view(f.uint))
    sign = b >> (f.bits - 1)
    mag = b & ((1 << (f.bits - 1)) - 1)
    out = []
    for m in (mag - 1, mag, mag + 1):
        if m < 0:
            continue
        out.append(np.array((sign << (f.bits - 1)) | m, dtype=f.uint).view(f.dtype)[()])
    return out


def oracle_round(q: Fraction, dtype):
    """Independent correct rounding: nearest candidate by exact rational distance, ties
    to the even significand; values past max + half an ulp go to inf."""
    f = F.fmt(dtype)
    mx = Fraction(f.max_finite)
    half_top = Fraction(2) ** (f.emax - f.precision) # half the spacing of the top binade
    if abs(q) >= mx + half_top:
        return math.copysign(math.inf, q)
    guess = float(q)  # within one float64 ulp: neighbours by bits cover the answer
    best = None
    for c in neighbours_by_bits(guess, dtype):
        cf = float(c)
        if not math.isfinite(cf):
            continue
        d = abs(Fraction(cf) - q)
        even = int(np.array(c).astype(f.dtype).view(f.uint)) % 2 == 0
        key = (d, not even)
        if best is None or key < best[0]:
            best = (key, cf)
    return best[1]


def mpf_of(q: Fraction):
    with mpmath.workprec(400):
        return mpmath.mpf(q.numerator) / q.denominator


@pytest.mark.parametrize("dtype", NARROW)
def test_rounding_matches_numpy_for_doubles(dtype):
    """numpy's float64 -> narrow conversion is correctly rounded: an independent source
    for values that are exact in float64."""
    rng = np.random.default_rng(1)
    f = F.fmt(dtype)
    xs = np.concatenate([
        rng.standard_normal(2000) * np.exp2(rng.integers(-160, 130, 2000)),
        np.exp2(rng.uniform(np.log2(f.smallest_subnormal) - 2, np.log2(f.smallest_normal), 500)),
    ])
    for x in xs:
        with np.errstate(over="ignore"):
            expect = float(np.array(x).astype(f.dtype))
        got = round_mpf(mpmath.mpf(float(x)), dtype)
        assert got == expect or (math.isnan(got) and math.isnan(expect)), (x, got, expect)


@pytest.mark.parametrize("dtype", NARROW)
def test_ties_and_either_side(dtype):
    """Exact midpoints go to the even neighbour; a hair either side goes to the nearer."""
    f = F.fmt(dtype)
    rng = np.random.default_rng(2)
    all_vals = F.all_finite(dtype) if f.bits == 16 else np.array(rng.standard_normal(500) * 10, dtype=f.dtype)
    pos = all_vals[(all_vals.astype(np.float64) > 0)]
    picks = pos[rng.integers(0, len(pos) - 1, 400)]
    for a in picks:
        a64 = float(a)
        b = neighbours_by_bits(a, dtype)[-1]
        b64 = float(b)
        if not math.isfinite(b64):
            continue
        mid = (Fraction(a64) + Fraction(b64)) / 2
        tiny = (Fraction(b64) - Fraction(a64)) / 2**70
        for q in (mid, mid - tiny, mid + tiny):
            assert round_mpf(mpf_of(q), dtype) == oracle_round(q, dtype), (a64, q)
        # the midpoint goes to whichever of a, b has an even significand
        even = a64 if int(np.array(a).view(f.uint)) % 2 == 0 else b64
        assert round_mpf(mpf_of(mid), dtype) == even


@pytest.mark.parametrize("dtype", NARROW)
def test_subnormal_outputs_and_overflow(dtype):
    f = F.fmt(dtype)
    s = Fraction(f.smallest_subnormal)
    # half the smallest subnormal is a tie between 0 and it: goes to 0 (even); a hair above goes up
    assert round_mpf(mpf_of(s / 2), dtype) == 0.0
    assert round_mpf(mpf_of(s / 2 + s / 2**80), dtype) == f.smallest_subnormal
    assert round_mpf(mpf_of(3 * s / 2), dtype) == 2 * f.smallest_subnormal  # tie -> even (2s)
    assert round_mpf(mpf_of(Fraction(f.smallest_normal) - s / 4), dtype) == f.smallest_normal
    # overflow: max + half an ulp (a tie, odd max) rounds to inf; just below stays max
    half_top = Fraction(2) ** (f.emax - f.precision)
    assert round_mpf(mpf_of(Fraction(f.max_finite) + half_top), dtype) == math.inf
    assert round_mpf(mpf_of(Fraction(f.max_finite) + half_top - half_top / 2**40), dtype) == f.max_finite
    assert round_mpf(mpf_of(-Fraction(f.max_finite) - half_top), dtype) == -math.inf
    assert round_mpf(mpmath.mpf(2) ** -100000, dtype) == 0.0
    assert round_mpf(mpmath.mpf(2) ** 100000, dtype) == math.inf


@pytest.mark.parametrize("dtype", NARROW)
def test_random_wide_values_match_oracle(dtype):
    """Values with far more than 53 bits, normal and subnormal, against the rational oracle."""
    rng = np.random.default_rng(3)
    f = F.fmt(dtype)
    for _ in range(600):
        e = int(rng.integers(f.quantum_min - 3, f.emax + 1))
        man = int(rng.integers(1, 2**62)) * 2**40 + int(rng.integers(0, 2**40))
        q = Fraction(man, 2**102) * Fraction(2) ** e * (1 if rng.random() < 0.5 else -1)
        assert round_mpf(mpf_of(q), dtype) == oracle_round(q, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_double_rounding_is_avoided(dtype):
    """x just above a narrow-format midpoint but within half a float64 ulp of it: via
    float64 it would land exactly on the midpoint and go to even (down). Directly it
    must go up."""
    f = F.fmt(dtype)
    one_ulp = Fraction(2) ** (1 - f.precision)
    q = 1 + one_ulp / 2 + Fraction(1, 2**60)
    via_double = float(np.array(float(q)).astype(f.dtype))
    direct = round_mpf(mpf_of(q), dtype)
    assert via_double == 1.0  # the trap is real
    assert direct == float(1 + one_ulp)
    # same through the double-double path the references use
    hi, lo = F.double_double(mpf_of(q))
    assert hi == 1 + float(one_ulp) / 2 and lo > 0
    assert float(F.round_double_double(np.array([hi]), np.array([lo]), dtype)[0]) == float(1 + one_ulp)


def test_rounding_agrees_with_mpmath_in_normal_range():
    """mpmath rounding to p bits (round-half-even, unbounded exponent) is a second
    independent source in the normal range."""
    rng = np.random.default_rng(4)
    for dtype in NARROW:
        f = F.fmt(dtype)
        for _ in range(300):
            with mpmath.workprec(200):
                x = mpmath.mpf(rng.standard_normal()) * mpmath.pi * mpmath.mpf(2) ** int(rng.integers(-60, 60))
            with mpmath.workprec(f.precision):
                y = +x
            if abs(y) >= f.smallest_normal and abs(y) <= f.max_finite:
                assert round_mpf(x, dtype) == float(y)


def test_double_double_is_exact_to_106_bits():
    with mpmath.workprec(300):
        x = mpmath.pi
        hi, lo = F.double_double(x)
        err = abs(x - mpmath.mpf(hi) - mpmath.mpf(lo))
        assert err <= abs(x) * mpmath.mpf(2) ** -105
    assert hi == math.pi and abs(lo) <= math.ulp(hi) / 2


def test_all_finite_counts():
    # 2^16 patterns minus those with the exponent field all ones (inf and NaN)
    assert F.all_finite("bfloat16").size == 2**16 - 2 * 2**7
    assert F.all_finite("float16").size == 2**16 - 2 * 2**10
    assert np.isfinite(F.all_finite("float16").astype(np.float32)).all()


def test_ulp_spacing():
    assert F.ulp(np.array([1.0]), "float32")[0] == 2.0**-23
    assert F.ulp(np.array([0.0]), "float32")[0] == 2.0**-149
    assert F.ulp(np.array([1.0]), "bfloat16")[0] == 2.0**-7
    assert F.ulp(np.array([65504.0]), "float16")[0] == 32.0


@pytest.mark.parametrize("dtype", NARROW + ["float64"])
def test_nextafter_is_one_ulp(dtype):
    f = F.fmt(dtype)
    vals = np.array([0.0, -0.0, 1.0, -1.0, f.smallest_subnormal, f.max_finite], dtype=np.float64).astype(f.dtype)
    bits = vals.view(f.uint).astype(np.uint64)
    up = F.from_bits((bits + 1).astype(f.uint), dtype)
    d = F.ulp_distance(vals, up, dtype)
    # +0 -> smallest subnormal is 1; -0 -> bit pattern +1 is -smallest subnormal: also 1
    assert (d == 1).all()
    assert F.ulp_distance(np.array([0.0]).astype(f.dtype), np.array([-0.0]).astype(f.dtype), dtype)[0] == 0
    # across zero: -s to +s is 2 steps
    s = np.array([f.smallest_subnormal]).astype(f.dtype)
    assert F.ulp_distance(s, -s, dtype)[0] == 2


floats32 = st.floats(width=32, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(floats32, floats32)
def test_ulp_symmetry_and_zero(a, b):
    A, B = np.array([a], np.float32), np.array([b], np.float32)
    assert F.ulp_distance(A, B, "float32")[0] == F.ulp_distance(B, A, "float32")[0]
    assert (F.ulp_distance(A, B, "float32")[0] == 0) == (a == b)


@settings(max_examples=300, deadline=None)
@given(floats32, floats32, floats32)
def test_ulp_monotone_in_second_argument(a, b, c):
    b, c = sorted([b, c])
    if a <= b:
        A = np.array([a], np.float32)
        assert F.ulp_distance(A, np.array([b], np.float32), "float32")[0] <= F.ulp_distance(A, np.array([c], np.float32), "float32")[0]


@settings(max_examples=200, deadline=None)
@given(st.floats(width=16, allow_nan=False, allow_infinity=False), st.floats(width=16, allow_nan=False, allow_infinity=False))
def test_ulp_distance_counts_values_between(a, b):
    """dULP is the number of float16 values in (min, max], counted by enumeration."""
    allv = F.all_finite("float16").astype(np.float64)
    uniq = np.unique(allv)  # +0 and -0 collapse
    lo, hi = min(a, b), max(a, b)
    expect = int(((uniq > lo) & (uniq <= hi)).sum())
    got = F.ulp_distance(np.array([a], np.float16), np.array([b], np.float16), "float16")[0]
    assert got == expect


@settings(max_examples=200, deadline=None)
@given(st.floats(width=16, allow_nan=False), st.floats(width=16, allow_nan=False))
def test_ordered_difference_counts_the_values_between(a, b):
    """|ordered(a) - ordered(b)| is the number of float16 values in (min, max], counted by
    enumeration (infinities one step past the largest finite value)."""
    allv = np.r_[np.unique(F.all_finite("float16").astype(np.float64)), -np.inf, np.inf]
    lo, hi = min(a, b), max(a, b)
    expect = int(((allv > lo) & (allv <= hi)).sum())
    o = F.ordered(np.array([a, b], np.float16), "float16").astype(np.int64)
    assert abs(o[0] - o[1]) == expect


@settings(max_examples=300, deadline=None)
@given(floats32, floats32)
def test_ordered_difference_is_the_float32_ulp_distance(a, b):
    A, B = np.array([a], np.float32), np.array([b], np.float32)
    d = np.subtract(F.ordered(A, "float32"), F.ordered(B, "float32"), dtype=np.int64)
    assert abs(int(d[0])) == int(F.ulp_distance(A, B, "float32")[0])


def test_ordered_refuses_float64():
    with pytest.raises(ValueError, match="at most 32 bits"):
        F.ordered(np.array([1.0]), "float64")
