"""References that can be trusted: each reproduction of a wrong reference (cancellation
at a fixed precision, an unconfirmed zero, a fixed-step numerical derivative, a stale
cache, a reference computed in double precision, the float64 boundary below a power of
two) checked against the math or an independent mpmath evaluation at 1400 bits."""

from __future__ import annotations

import importlib
import math
import sys

import mpmath
import numpy as np
import pytest
from helpers import round_mpf

import rulelab
from rulelab.core.floats import round_double_double, ulp_distance
from rulelab.model import contract as C
from rulelab.model.case import (
    NONNEGATIVE,
    POSITIVE,
    REALS,
    CaseError,
    Variant,
    get_case,
    make_case,
)
from rulelab.reference import cache
from rulelab.reference import compute as RC
from rulelab.reference import settle as R
from rulelab.scoring.metrics import point_errors, summarize, worst
from rulelab.store.vocabulary import Bucket

BUCKETS = [b.column for b in Bucket]

F32_MAX = float(np.finfo(np.float32).max)


def exact(fn, *xs, prec=1400):
    """An independent evaluation at 1400 bits (no agreement test involved)."""
    with mpmath.workprec(prec):
        return fn(*[mpmath.mpf(x) for x in xs])


def same_rounding(ref: tuple[float, float], true, dtypes=("float64", "float32", "float16", "bfloat16")) -> bool:
    got = [round_double_double(np.array([ref[0]]), np.array([ref[1]]), d)[0] for d in dtypes]
    want = [np.array([round_mpf(true, d)]).astype(round_double_double(np.array([1.0]), np.array([0.0]), d).dtype)[0] for d in dtypes]
    return all(np.array(g).tobytes() == np.array(w).tobytes() or (g == 0 and w == 0) for g, w in zip(got, want))


def naive(*_):
    return 0.0


# 1. cancellation at a fixed precision ----------------------------------------------------------


def test_logaddexp_derivatives_on_the_huge_diagonal_are_one_half_and_one_quarter():
    """By symmetry d/dx log(e^x + e^y) = 1/2 and d2/dx2 = 1/4 on the diagonal, at any x."""
    c = get_case("logaddexp")
    assert R.reference_point(c, 1, "x", (F32_MAX, F32_MAX))[0] == 0.5
    assert R.reference_point(c, 2, "x", (F32_MAX, F32_MAX))[0] == 0.25
    hi, lo = R.reference_point(c, 1, "x", (1e30, 1e30))
    assert hi == 0.5 and abs(lo) <= 2.0 ** -R.DD_BITS
    c3 = get_case("logsumexp3")
    hi, lo = R.reference_point(c3, 1, c3.args[0], (F32_MAX, F32_MAX, F32_MAX))
    assert same_rounding((hi, lo), mpmath.mpf(1) / 3)


# 2. an exact zero is confirmed, not accepted ----------------------------------------------------


def test_softmax_xent_derivative_near_zero_is_not_taken_for_zero():
    c = get_case("softmax_xent")
    point = (-2.81e-38, -2.66e-38, 0.5)
    true = exact(lambda a, b, w: (1 - w) / (1 + mpmath.exp(b - a)) - w / (1 + mpmath.exp(a - b)), *point)
    ref = R.reference_point(c, 1, "a", point)
    assert ref[0] != 0.0 and same_rounding(ref, true)


def test_logaddexp_value_that_rounds_to_a_tiny_negative_number():
    c = get_case("logaddexp")
    point = (-1.1754944e-38, -87.33655)
    true = exact(lambda x, y: mpmath.log(mpmath.exp(x) + mpmath.exp(y)), *point)
    ref = R.reference_point(c, 0, "", point)
    assert ref[0] < 0 and same_rounding(ref, true)


def test_logcosh_of_a_tiny_input_is_its_square_over_two(registered):
    """log cosh x = x^2/2 - x^4/12 + ..., so at 2^-70 it is 2^-141 to 140 bits."""
    c = registered(make_case("ref_logcosh", "log cosh x", ("x",), REALS, lambda mp, x: mp.log(mp.cosh(x)), [Variant("naive", naive)]))
    ref = R.reference_point(c, 0, "", (2.0**-70,))
    assert ref == (2.0**-141, pytest.approx(0.0, abs=2.0**-190))
    assert round_double_double(np.array([ref[0]]), np.array([ref[1]]), "float32")[0] == np.float32(3.587324e-43)


# 3. a value close to a boundary settles on the right side ---------------------------------------


def test_softmax_xent_close_to_a_subnormal_boundary():
    c = get_case("softmax_xent")
    point = (-2.8101345e-38, -1.7724968e-39, 0.5)
    fns = {
        (0, ""): lambda a, b, w: w * mpmath.log1p(mpmath.exp(b - a)) + (1 - w) * mpmath.log1p(mpmath.exp(a - b)),
        (1, "a"): lambda a, b, w: (1 - w) / (1 + mpmath.exp(b - a)) - w / (1 + mpmath.exp(a - b)),
        (2, "a"): lambda a, b, w: 1 / ((1 + mpmath.exp(b - a)) * (1 + mpmath.exp(a - b))),
    }
    for (order, arg), fn in fns.items():
        assert same_rounding(R.reference_point(c, order, arg, point), exact(fn, *point)), (order, arg)


# 4. numerical derivatives with a relative step ----------------------------------------------------


@pytest.mark.parametrize("x", [2.0**-130, 2.0**-140, 2.0**-1074, 3.0, 2.0**1000])
def test_numerical_derivatives_of_sqrt_near_zero_and_far_away(x):
    c = make_case("ref_sqrt_num", "sqrt x", ("x",), NONNEGATIVE, lambda mp, x: mp.sqrt(x), [Variant("naive", naive)])
    d1 = exact(lambda t: 1 / (2 * mpmath.sqrt(t)), x)
    d2 = exact(lambda t: -1 / (4 * t * mpmath.sqrt(t)), x)
    assert same_rounding(R.reference_point(c, 1, "x", (x,)), d1)
    assert same_rounding(R.reference_point(c, 2, "x", (x,)), d2)


def test_numerical_second_derivative_of_lambert_w_at_a_huge_input():
    """W'' = -W^2 (W + 2) / (x^2 (1 + W)^3)."""
    c = make_case("ref_w", "W(x)", ("x",), POSITIVE, lambda mp, x: mp.lambertw(x).real, [Variant("naive", naive)])
    x = 9e36
    true = exact(lambda t: -mpmath.lambertw(t).real ** 2 * (mpmath.lambertw(t).real + 2) / (t**2 * (1 + mpmath.lambertw(t).real) ** 3), x)
    ref = R.reference_point(c, 2, "x", (x,))
    assert ref[0] < 0 and same_rounding(ref, true)


def test_a_given_first_derivative_is_differentiated_once_for_the_second():
    """log(expm1 y) with only d/dy = e^y / expm1(y): d2/dy2 = -e^y / expm1(y)^2, which at
    y = 1.4e-45 is about -1/y^2 = -5.1e89: -inf in float32, finite in float64."""
    c = make_case("ref_logexpm1", "log(expm1 y)", ("y",), POSITIVE, lambda mp, y: mp.log(mp.expm1(y)), [Variant("naive", naive)],
                  derivatives={("y", 1): lambda mp, y: mp.exp(y) / mp.expm1(y)})
    y = float(np.float32(1.4e-45))
    true = exact(lambda t: -mpmath.exp(t) / mpmath.expm1(t) ** 2, y)
    ref = R.reference_point(c, 2, "y", (y,))
    assert same_rounding(ref, true)
    assert round_double_double(np.array([ref[0]]), np.array([ref[1]]), "float32")[0] == -np.inf


# 5. a cache key that cannot go stale -----------------------------------------------------------


MODULE = """
import rulelab
from rulelab.model.case import REALS, Variant, make_case
SHIFT = {shift}
def _helper(mp, x):
    return mp.exp(x) + {helper}
case = rulelab.register(make_case("ref_stale", "e^x + c", ("x",), REALS,
                        lambda mp, x: _helper(mp, x) + SHIFT, [Variant("naive", lambda x: x)]), replace=True)
"""


def _load(tmp_path, monkeypatch, shift, helper):
    (tmp_path / "stale_cases.py").write_text(MODULE.format(shift=shift, helper=helper))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("stale_cases", None)
    importlib.invalidate_caches()
    return importlib.import_module("stale_cases").case


def test_editing_a_helper_or_a_constant_recomputes_the_points(tmp_path, monkeypatch):
    xs = (np.array([0.0, 1.0]),)
    try:
        base = RC.references(_load(tmp_path, monkeypatch, 0, 0), 0, "", xs)[0]
        assert base[0] == 1.0
        helper = RC.references(_load(tmp_path, monkeypatch, 0, 1), 0, "", xs)[0]
        assert helper[0] == 2.0
        constant = RC.references(_load(tmp_path, monkeypatch, 5, 1), 0, "", xs)[0]
        assert constant[0] == 7.0
    finally:
        rulelab.unregister("ref_stale")
        sys.modules.pop("stale_cases", None)


def test_the_precision_policy_and_mpmath_version_are_in_the_key(monkeypatch):
    c = get_case("softplus")
    key = cache.reference_key(c, 1, "x")
    monkeypatch.setattr(cache, "POLICY_VERSION", cache.POLICY_VERSION + 1)
    assert cache.reference_key(c, 1, "x") != key
    monkeypatch.undo()
    monkeypatch.setattr(mpmath, "__version__", "0.0-test")
    assert cache.reference_key(c, 1, "x") != key


# 6. a reference computed outside mpmath, or broken -----------------------------------------------


def test_a_reference_returning_a_python_float_is_refused_at_register():
    c = make_case("ref_float", "e^x", ("x",), REALS, lambda mp, x: math.exp(float(x)), [Variant("naive", naive)])
    with pytest.raises(CaseError, match="ref_float.*returned float"):
        rulelab.register(c)
    assert "ref_float" not in [k.name for k in rulelab.cases()]


@pytest.mark.parametrize("body, message", [
    (lambda mp, x: mp.exp(x) if x < 100 else float(x), "returned float"),
    (lambda mp, x: mp.exp(x) if x < 100 else None, "missing return"),
    (lambda mp, x: mp.exp(x) if x < 100 else undefined_name, "NameError"),  # noqa: F821
    (lambda mp, x: mp.exp(x) if x < 100 else mpmath.MPContext().mpf(x), "returned mpf"),
])
def test_a_reference_broken_at_some_points_stops_with_one_line(body, message):
    c = make_case("ref_broken", "e^x", ("x",), REALS, body, [Variant("naive", naive)])
    with pytest.raises(C.BrokenReference, match=message) as info:
        RC.references(c, 0, "", (np.array([1.0, 200.0]),))
    text = str(info.value)
    assert "ref_broken" in text and "value" in text and "200.0" in text and "\n" not in text


def test_domain_signals_mean_undefined():
    c = make_case("ref_domain", "1/x", ("x",), REALS, lambda mp, x: 1 / x, [Variant("naive", naive)])
    hi, lo = RC.references(c, 0, "", (np.array([0.0, 2.0]),))
    assert math.isnan(hi[0]) and lo[0] == 0 and hi[1] == 0.5


# 7. dULP exact for float64 ------------------------------------------------------------------------


def test_float64_ulp_distance_across_zero_does_not_wrap():
    """2.0 is 0x4000000000000000: 2^62 steps above 0, and -2.0 as many below."""
    d = ulp_distance(np.array([2.0]), np.array([-2.0]), "float64")
    assert int(d[0]) == 2**63
    e = point_errors(np.array([-2.0]), np.array([2.0]), np.array([0.0]), "float64")
    assert e.dulp[0] == 2.0**63 and BUCKETS[e.bucket[0]] == "ulp_gt_1024"
    assert summarize(e)["max_ulp"] == 2.0**63


# 8. x/(1+sqrt x): its second derivative at 0 is -inf -----------------------------------------------


def test_x_over_1p_sqrt_second_derivative_at_zero_is_minus_infinity():
    c = get_case("x_over_1p_sqrt")
    assert R.reference_point(c, 2, "x", (0.0,)) == (-math.inf, 0.0)


# 9. float64 just below a power of two ----------------------------------------------------------------


def test_just_below_a_power_of_two_rounds_down():
    """1 - 2^-54 - 2^-200 lies below the midpoint 1 - 2^-54 of [1 - 2^-53, 1]."""
    c = make_case("ref_below2", "1 - 2^-54 - 2^-200", ("x",), REALS,
                  lambda mp, x: 1 - mp.mpf(2) ** -54 - mp.mpf(2) ** -200, [Variant("naive", naive)])
    hi, _ = R.reference_point(c, 0, "", (1.0,))
    assert hi == 1 - 2.0**-53 == 0.9999999999999999


# unsettled: a result of its own ------------------------------------------------------------------------


def _noisy(mp, x):
    """A value that moves with the precision at every precision: it never settles."""
    return 1 + mp.mpf(mp.prec) * mp.mpf(2) ** -60


def test_a_point_that_never_settles_is_unsettled_counted_and_not_scored():
    c = make_case("ref_noisy", "noise", ("x",), REALS, lambda mp, x: _noisy(mp, x) if x > 0 else mp.exp(x), [Variant("naive", naive)])
    hi, lo = RC.references(c, 0, "", (np.array([-1.0, 1.0]),), max_precision=512)
    assert hi[0] == pytest.approx(math.exp(-1.0)) and lo[0] != 0
    assert math.isnan(hi[1]) and lo[1] == 512
    e = point_errors(np.array([np.float32(0.1), np.float32(123.0)]), hi, lo, "float32")
    assert [BUCKETS[b] for b in e.bucket] == ["ulp_gt_1024", "unsettled"]
    row = summarize(e)
    assert row["unsettled"] == 1 and row["ulp_gt_1024"] == 1 and row["max_ulp"] == e.dulp[0]
    w = worst((np.array([-1.0, 1.0]),), np.array([0.1, 123.0]), hi, lo, e, k=1)
    assert list(w["bucket"]) == ["ulp_gt_1024", "unsettled"] and w["ref_lo"].iloc[1] == 512


def test_an_unsettled_cached_point_is_retried_under_a_higher_cap():
    calls = []
    c = make_case("ref_retry", "noise", ("x",), REALS, lambda mp, x: (calls.append(mp.prec), _noisy(mp, x))[1], [Variant("naive", naive)])
    RC.references(c, 0, "", (np.array([1.0]),), max_precision=256)
    assert max(calls) == 256
    calls.clear()
    RC.references(c, 0, "", (np.array([1.0]),), max_precision=256)
    assert calls == [], "served from the cache"
    hi, lo = RC.references(c, 0, "", (np.array([1.0]),), max_precision=1024)
    assert max(calls) == 1024 and lo[0] == 1024


def test_a_zero_from_cancellation_is_not_confirmed_by_two_close_precisions():
    """log cosh(2^-100) = 2^-201 (to 200 bits): 0 at both 128 and 192 bits, whose cosh
    rounds to 1; the zero check at a far higher precision finds it."""
    c = make_case("ref_logcosh0", "log cosh x", ("x",), REALS, lambda mp, x: mp.log(mp.cosh(x)), [Variant("naive", naive)])
    hi, lo = R.reference_point(c, 0, "", (2.0**-100,))
    assert hi == 2.0**-201
    # a true zero is still zero
    assert R.reference_point(c, 0, "", (0.0,)) == (0.0, 0.0)


def test_only_the_dtypes_that_can_hold_a_point_need_deciding():
    """logaddexp(-7388, y) = y + e^-7388 with y = 283 * 2^-24, a float16 value and a
    bfloat16 midpoint: the tail, 2^-10659, is out of reach of the precision cap, but
    -7388 is no bfloat16 value, so only float16 (and float64) roundings are needed."""
    c = get_case("logaddexp")
    y = 283 * 2.0**-24
    hi, lo = R.reference_point(c, 0, "", (-7388.0, y))
    assert hi == y and same_rounding((hi, lo), mpmath.mpf(y), ("float64", "float16"))
