"""References: values against mpmath at high precision, derivatives, conventions, the
precision policy and the cache (hits, invalidation, corruption)."""

import math
import warnings

import mpmath
import numpy as np
import pytest

from rulelab.model.case import (
    NONNEGATIVE,
    REALS,
    Convention,
    Variant,
    get_case,
    make_case,
)
from rulelab.reference import cache
from rulelab.reference import compute as RC
from rulelab.reference import settle as R


def softplus_like(name="ref_softplus", derivatives=True):
    d = {("x", 1): lambda mp, x: 1 / (1 + mp.exp(-x)),
         ("x", 2): lambda mp, x: mp.exp(-x) / (1 + mp.exp(-x)) ** 2} if derivatives else {}
    return make_case(name, "log(1+e^x)", ("x",), REALS, lambda mp, x: mp.log1p(mp.exp(x)),
                     [Variant("naive", lambda x: x)], derivatives=d)


def test_values_match_mpmath_at_high_precision(registered):
    case = registered(softplus_like())
    xs = np.array([-100.0, -1.0, 0.0, 0.5, 30.0, 1e10])
    hi, lo = RC.references(case, 0, "", (xs,))
    for x, h, l in zip(xs, hi, lo):
        with mpmath.workprec(600):
            exact = mpmath.log1p(mpmath.exp(mpmath.mpf(x)))
            assert abs(mpmath.mpf(h) + mpmath.mpf(l) - exact) <= abs(exact) * mpmath.mpf(2) ** -104


def test_numerical_derivative_agrees_with_analytic(registered):
    a = registered(softplus_like("ref_a"))
    n = registered(softplus_like("ref_n", derivatives=False))
    xs = np.array([-20.0, -1.5, 0.0, 0.3, 7.0])
    for order in (1, 2):
        ha, _ = RC.references(a, order, "x", (xs,))
        hn, _ = RC.references(n, order, "x", (xs,))
        np.testing.assert_allclose(hn, ha, rtol=1e-14)
    # and the analytic one is the known sigmoid
    h1, _ = RC.references(a, 1, "x", (np.array([0.0, 2.0]),))
    assert h1[0] == 0.5 and h1[1] == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-15)


def test_one_sided_derivative_at_domain_end(registered):
    """x/(1+sqrt x) on [0, inf): the right derivative at 0 is 1 (two-sided would need x < 0)."""
    c = registered(make_case("ref_onesided", "x/(1+sqrt x)", ("x",), NONNEGATIVE,
                             lambda mp, x: x / (1 + mp.sqrt(x)), [Variant("naive", lambda x: x)]))
    hi, _ = RC.references(c, 1, "x", (np.array([0.0, 4.0]),))
    assert hi[0] == pytest.approx(1.0, abs=1e-12)
    assert hi[1] == pytest.approx((2 + 2) / (2 * 9), rel=1e-14)  # (sqrt x + 2)/(2 (sqrt x + 1)^2)


def test_conventions_and_undefined_points(registered):
    c = registered(make_case(
        "ref_sqrt", "sqrt x", ("x",), NONNEGATIVE, lambda mp, x: mp.sqrt(x), [Variant("naive", lambda x: x)],
        derivatives={("x", 1): lambda mp, x: 1 / (2 * mp.sqrt(x))},
        conventions=[Convention("x", 1, lambda x: x == 0, 0.0, "sqrt'(0) := 0")]))
    hi, _ = RC.references(c, 1, "x", (np.array([0.0, 4.0]),))
    assert hi.tolist() == [0.0, 0.25]
    # without a convention mpmath raises at 0: undefined, not a crash
    c2 = registered(make_case("ref_sqrt2", "sqrt x", ("x",), NONNEGATIVE, lambda mp, x: mp.sqrt(x),
                              [Variant("naive", lambda x: x)], derivatives={("x", 1): lambda mp, x: 1 / (2 * mp.sqrt(x))}))
    hi, _ = RC.references(c2, 1, "x", (np.array([0.0]),))
    assert math.isnan(hi[0])
    # a complex result is undefined too
    c3 = registered(make_case("ref_log", "log x", ("x",), REALS, lambda mp, x: mp.log(x), [Variant("naive", lambda x: x)]))
    hi, _ = RC.references(c3, 0, "", (np.array([-1.0, 1.0]),))
    assert math.isnan(hi[0]) and hi[1] == 0.0


def test_exact_values_keep_lo_zero(registered):
    c = registered(make_case("ref_exact", "sqrt x", ("x",), NONNEGATIVE, lambda mp, x: mp.sqrt(x), [Variant("naive", lambda x: x)]))
    hi, lo = RC.references(c, 0, "", (np.array([4.0, 2.0**-148]),))
    assert hi.tolist() == [2.0, 2.0**-74] and lo.tolist() == [0.0, 0.0]


def test_agreement_raises_the_precision_near_a_boundary(registered):
    """A value within 2^-110 of a double: both start precisions see it, and it settles."""
    seen = []
    c = registered(make_case("ref_near", "1 + x*2^-110", ("x",), REALS,
                             lambda mp, x: (seen.append(mp.prec), 1 + x * mp.mpf(2) ** -110)[1],
                             [Variant("naive", lambda x: x)]))
    hi, lo = RC.references(c, 0, "", (np.array([1.0]),))
    assert set(R.precisions(point=(1.0,))[:2]) <= set(seen)
    assert hi[0] == 1.0 and lo[0] == 2.0**-110


def test_a_value_far_below_float64s_range_settles_without_exact_arithmetic_on_it(registered):
    # e^-(x^2) at x = 3.3e69 is 2^-(1.6e139): it rounds to +0 in every format, and
    # comparing it with a float64 midpoint must not subtract it exactly (10^139 bits);
    # the log of the normal CDF there (-Q(x)) rounds to -0.
    tiny = registered(make_case("ref_gauss", "e^-(x^2)", ("x",), REALS, lambda mp, x: mp.exp(-x * x), [Variant("naive", lambda x: x)]))
    assert R.reference_point(tiny, 0, "x", (3.308708549638099e69,)) == (0.0, 0.0)
    hi, lo = R.reference_point(get_case("log_ndtr"), 0, "x", (3.308708549638099e69,))
    assert hi == 0 and math.copysign(1, hi) == -1 and lo == 0


def test_cache_hit_and_invalidation(registered, monkeypatch):
    case = registered(softplus_like("ref_cache"))
    xs = (np.array([0.5, 1.5, 2.5]),)
    first = RC.references(case, 1, "x", xs)
    monkeypatch.setattr(RC, "reference_point", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = RC.references(case, 1, "x", xs)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    # a different reference source has a different key
    other = softplus_like("ref_cache")
    other = make_case("ref_cache", "log(1+e^x)", ("x",), REALS, lambda mp, x: mp.log(1 + mp.exp(x)), [Variant("naive", lambda x: x)])
    assert cache.reference_key(other, 0, "") != cache.reference_key(case, 0, "")


def test_corrupt_cache_file_is_set_aside_and_recomputed(registered):
    case = registered(softplus_like("ref_corrupt"))
    xs = (np.array([0.5, 1.5]),)
    good = RC.references(case, 0, "", xs)
    folder = cache.cache_dir() / "reference" / cache.reference_key(case, 0, "")
    [f] = list(folder.glob("*.npz"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = RC.references(case, 0, "", xs)
    assert any("corrupt" in str(x.message) and "ref_corrupt" in str(x.message) for x in w)
    assert np.array_equal(good[0], again[0])
    assert list(folder.glob("*.corrupt")), "the corrupt file is kept aside, not deleted"


def test_pool_gives_the_same_as_serial(registered):
    case = registered(softplus_like("ref_pool"))
    xs = (np.linspace(-50, 50, 2 * RC.CHUNK + 7),)
    with RC.reference_pool(2) as pool:
        par = RC.references(case, 2, "x", xs, pool)
    ser = [R.reference_point(case, 2, "x", (float(x),)) for x in xs[0]]
    assert np.array_equal(par[0], np.array([s[0] for s in ser]))
    assert np.array_equal(par[1], np.array([s[1] for s in ser]))


def test_task_size_splits_into_the_tasks_asked_within_bounds():
    assert RC.chunk_size(8000, 32) == RC.CHUNK  # a short reference: the smallest task
    assert RC.chunk_size(64000, 32) == 2000
    assert RC.chunk_size(10**7, 8) == RC.MAX_CHUNK
    assert RC.chunk_size(64001, 32) * 32 >= 64001  # rounded up: never a 33rd task for a remainder
