"""Numerical derivatives in mpmath (rulelab.reference.numdiff), checked against the math:
closed-form derivatives evaluated by mpmath at far more bits than asked for, exact values
(powers of two, 0, ±1), and the stencil points themselves."""

from __future__ import annotations

import math

import mpmath
import pytest
from mpmath.libmp import NoConvergence

from rulelab.model.case import Interval
from rulelab.reference.numdiff import derivative, step_scale

REALS = Interval()
NONNEG = Interval(0.0, math.inf)
PRECS = (53, 113, 200)


def rel_err(got, want) -> float:
    with mpmath.workprec(1000):
        return float(abs(mpmath.mpf(got) - want) / abs(want))


def exact(f):
    """``f`` evaluated far beyond any precision used here (the independent truth)."""
    with mpmath.workprec(1000):
        return +f()


def recording(f, calls: list):
    """``f`` that records each point it is evaluated at and the working precision."""

    def g(t):
        calls.append((t, mpmath.mp.prec))
        return f(t)

    return g


# --- accuracy against closed forms --------------------------------------------------------------


@pytest.mark.parametrize("prec", PRECS)
def test_first_derivative_of_exp_is_exp(prec):
    got = derivative(mpmath.exp, 0.5, 1, prec, REALS)
    want = exact(lambda: mpmath.exp(mpmath.mpf(0.5)))
    assert rel_err(got, want) <= 2.0 ** -(prec - 2)


@pytest.mark.parametrize("prec", PRECS)
def test_second_derivative_of_sin_is_minus_sin(prec):
    got = derivative(mpmath.sin, 1.0, 2, prec, REALS)
    want = exact(lambda: -mpmath.sin(1))
    assert rel_err(got, want) <= 2.0 ** -(prec - 2)


@pytest.mark.parametrize("x", [-20.0, -1.0, 0.0, 1e-3, 7.25])
def test_derivatives_of_exp_across_magnitudes(x):
    want = exact(lambda: mpmath.exp(mpmath.mpf(x)))
    for n in (1, 2):
        assert rel_err(derivative(mpmath.exp, x, n, 113, REALS), want) <= 2.0**-110, (x, n)


def test_result_is_rounded_to_the_target_precision():
    for prec in PRECS:
        got = derivative(mpmath.exp, 0.5, 1, prec, REALS)
        assert isinstance(got, mpmath.mpf)
        assert got._mpf_[3] <= prec  # bits of the mantissa


# --- the pitfalls of a fixed absolute step ------------------------------------------------------


@pytest.mark.parametrize("prec", PRECS)
def test_sqrt_beside_zero_steps_relative_to_the_point(prec):
    """sqrt'(2^-130) = 1 / (2 * 2^-65) = 2^64: a fixed step would leave the domain."""
    calls: list = []
    got = derivative(recording(mpmath.sqrt, calls), 2.0**-130, 1, prec, NONNEG)
    assert rel_err(got, mpmath.mpf(2) ** 64) <= 2.0 ** -(prec - 2)
    assert all(t > 0 for t, _ in calls)


@pytest.mark.parametrize("prec", PRECS)
def test_log_at_a_huge_point_does_not_lose_the_step(prec):
    """log'(2^100) = 2^-100; with a fixed step x + h == x and the difference is 0."""
    got = derivative(mpmath.log, 2.0**100, 1, prec, NONNEG)
    assert rel_err(got, mpmath.mpf(2) ** -100) <= 2.0 ** -(prec - 2)
    got2 = derivative(mpmath.log, 2.0**100, 2, prec, NONNEG)
    assert rel_err(got2, -(mpmath.mpf(2) ** -200)) <= 2.0 ** -(prec - 2)


def test_stencil_points_are_exact_and_symmetric():
    """x + j h is exact (h a power of two), so the central points are symmetric about x
    to the last bit and the function is evaluated above the target precision."""
    calls: list = []
    x, prec = 0.1, 113
    derivative(recording(mpmath.exp, calls), x, 1, prec, REALS)
    assert len(calls) >= 2
    with mpmath.workprec(2000):
        lo, hi = sorted({t for t, _ in calls[:2]})
        assert lo < x < hi
        assert hi - mpmath.mpf(x) == mpmath.mpf(x) - lo
        step = hi - mpmath.mpf(x)
        assert mpmath.frexp(step)[0] == 0.5  # a power of two
    assert all(p > prec for _, p in calls)


# --- one-sided derivatives at a domain end ------------------------------------------------------


@pytest.mark.parametrize("prec", PRECS)
def test_log_at_one_from_the_right(prec):
    """On [1, inf) only the right is available: log'(1) = 1 and log''(1) = -1."""
    dom = Interval(1.0, math.inf)
    calls: list = []
    got = derivative(recording(mpmath.log, calls), 1.0, 1, prec, dom, direction=+1)
    assert rel_err(got, mpmath.mpf(1)) <= 2.0 ** -(prec - 2)
    assert all(t >= 1 for t, _ in calls)
    assert rel_err(derivative(mpmath.log, 1.0, 2, prec, dom, direction=+1), mpmath.mpf(-1)) <= 2.0 ** -(prec - 2)


@pytest.mark.parametrize("prec", PRECS)
def test_log_at_one_from_the_left(prec):
    """On (0, 1] only the left is available; the signs of a backward stencil: log'(1) = 1,
    log''(1) = -1."""
    dom = Interval(0.0, 1.0)
    calls: list = []
    got = derivative(recording(mpmath.log, calls), 1.0, 1, prec, dom, direction=-1)
    assert rel_err(got, mpmath.mpf(1)) <= 2.0 ** -(prec - 2)
    assert all(0 < t <= 1 for t, _ in calls)
    assert rel_err(derivative(mpmath.log, 1.0, 2, prec, dom, direction=-1), mpmath.mpf(-1)) <= 2.0 ** -(prec - 2)


def test_one_sided_stencil_stays_inside_a_narrow_domain():
    """exp on [1, 1 + 2^-20]: the forward points stay inside and exp'(1) = e."""
    dom = Interval(1.0, 1.0 + 2.0**-20)
    calls: list = []
    got = derivative(recording(mpmath.exp, calls), 1.0, 1, 113, dom, direction=+1)
    assert rel_err(got, exact(lambda: mpmath.e)) <= 2.0**-110
    assert all(dom.lo <= t <= dom.hi for t, _ in calls)


def test_sqrt_at_zero_from_the_right_has_no_finite_value_to_settle_on():
    """sqrt'(0+) is infinite: the one-sided quotient grows as the step shrinks with the
    precision, so two precisions disagree (which the caller's confirmation refuses)."""
    a = derivative(mpmath.sqrt, 0.0, 1, 64, NONNEG, direction=+1)
    b = derivative(mpmath.sqrt, 0.0, 1, 128, NONNEG, direction=+1)
    assert a > 2**20 and b > 2**10 * a


# --- where there is no derivative to compute ----------------------------------------------------


def test_a_point_on_a_domain_end_without_a_direction_gives_none():
    assert derivative(mpmath.sqrt, 0.0, 1, 113, NONNEG) is None
    assert derivative(mpmath.log, 1.0, 1, 113, Interval(1.0, math.inf)) is None


def test_a_stencil_point_outside_the_function_domain_gives_none():
    # sqrt of a negative number is complex in mpmath
    assert derivative(mpmath.sqrt, 0.0, 1, 113, REALS) is None
    # log(0) = -inf at the first forward point
    assert derivative(mpmath.log, 0.0, 1, 113, NONNEG, direction=+1) is None
    # the function itself says it is undefined there
    assert derivative(lambda t: None if t < 1 else mpmath.log(t), 1.0, 1, 113, REALS) is None
    assert derivative(lambda t: mpmath.nan, 2.0, 1, 113, REALS) is None


@pytest.mark.parametrize(
    "f, x, n",
    [
        (mpmath.cos, 0.0, 1),  # an even function: the central difference is exactly 0
        (mpmath.sin, 0.0, 2),  # an odd function: sin(h) + sin(-h) - 2 sin(0) = 0
        (lambda t: mpmath.mpf(3), 0.7, 1),
        (lambda t: mpmath.mpf(3), 0.7, 2),
        (lambda t: mpmath.mpf(0), -2.0, 1),
    ],
)
def test_zero_derivatives_are_exactly_zero(f, x, n):
    got = derivative(f, x, n, 113, REALS)
    assert got == 0 and isinstance(got, mpmath.mpf)


def test_a_difference_that_keeps_cancelling_raises_no_convergence():
    """A function that only moves in its last few bits, at whatever precision: the
    difference never has prec digits to spare."""
    with pytest.raises(NoConvergence):
        derivative(lambda t: 1 + 8 * mpmath.eps * mpmath.sign(t), 0.0, 1, 100, REALS)


# --- step_scale ---------------------------------------------------------------------------------


def test_step_scale_is_the_magnitude_one_at_zero_and_bounded_by_the_ends():
    assert step_scale(0.0, REALS, 0) == 1.0
    assert step_scale(-8.0, REALS, 0) == 8.0
    assert step_scale(2.0**-130, NONNEG, 0) == 2.0**-130
    assert step_scale(3.0, Interval(0.0, 4.0), 0) == 1.0  # the upper end is 1 away
    assert step_scale(0.5, Interval(0.0, 4.0), 0) == 0.5
    # one-sided at an end: no further than part of the way to the other end
    assert 0 < step_scale(1.0, Interval(1.0, 2.0), +1) <= 0.5
    assert step_scale(1.0, Interval(1.0, math.inf), +1) == 1.0
