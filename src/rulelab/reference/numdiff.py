"""Numerical derivatives in mpmath for cases that give no analytic one.

The pitfall: a fixed absolute step (``mpmath.diff``'s default is 2^-(prec+10)) is too
large beside a tiny input (sqrt' at 2^-130 comes out wrong, below the step it steps
out of the domain) and vanishes under the working precision beside a huge one
(x + h == x, so the difference is 0). Here the step is relative to the point's
magnitude and its distance to a domain end, one-sided at a domain end, and the working
precision is raised by the bits the difference cancels, measured, not assumed. The
result is then confirmed like any other reference (two precisions must agree, see
:mod:`rulelab.reference.settle`), which also catches a step too large for the function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import mpmath
from mpmath.libmp import NoConvergence

from rulelab.model.case import Interval

GUARD_BITS = 32
"""Bits kept beyond the target precision after cancellation."""
MAX_RETRIES = 5
"""Times the working precision is raised for one difference before giving up (a
difference that stays exactly 0 is then taken as a zero derivative, to be confirmed)."""

# Finite-difference stencils, all of second-order accuracy: (offsets in steps,
# coefficients, derivative order); the derivative is sum(c * f(x + k h)) / h^n.
_CENTRAL = {1: ((-1, 1), (-0.5, 0.5)), 2: ((-1, 0, 1), (1, -2, 1))}
_FORWARD = {1: ((0, 1, 2), (-1.5, 2, -0.5)), 2: ((0, 1, 2, 3), (2, -5, 4, -1))}


def step_scale(x: float, domain: Interval, direction: int) -> float:
    """The length over which the function is assumed to vary at ``x``: |x| (1 at 0),
    no more than the distance to a domain end the stencil must not cross."""
    s = abs(x) if x != 0 and math.isfinite(x) else 1.0
    if direction == 0:
        for end in (domain.lo, domain.hi):
            if math.isfinite(end):
                s = min(s, abs(x - end))
    else:  # one-sided at an end: stay clear of the other end too
        if math.isfinite(domain.hi - domain.lo):
            s = min(s, (domain.hi - domain.lo) / 4)
    return s


def derivative(f: Callable[[Any], Any], x: float, n: int, prec: int, domain: Interval, direction: int = 0) -> Any:
    """The ``n``-th derivative (1 or 2) of ``f`` (an mpmath function of one variable) at
    ``x``, aimed at ``prec`` correct bits; ``direction`` +1/-1 for a one-sided stencil at
    a domain end. Returns an mpf (rounded to ``prec`` bits), or None where ``f`` is
    undefined or infinite at a stencil point; raises ``NoConvergence`` where the
    difference keeps cancelling. The caller confirms the result."""
    offsets, coeffs = (_FORWARD if direction else _CENTRAL)[n]
    if direction < 0:
        offsets = tuple(-k for k in offsets)
        coeffs = tuple(c * (-1) ** n for c in coeffs)
    s = step_scale(x, domain, direction)
    if s == 0:
        return None  # a point on a domain end the stencil cannot leave
    # second-order stencils: truncation error ~ (h/s)^2, so h = s 2^-k with 2k > prec
    k = prec // 2 + 16
    e = math.frexp(s)[1] - 1 - k  # h = 2^e, a power of two: x + j h is exact
    span = (math.frexp(abs(x))[1] if x != 0 else e) - e + 60  # bits to hold x + j h exactly
    work = max(prec + n * k + GUARD_BITS, span)
    for _ in range(MAX_RETRIES):
        with mpmath.workprec(work):
            h = mpmath.ldexp(1, e)
            xm = mpmath.mpf(x)
            values = [f(xm + j * h) for j in offsets]
            if any(v is None for v in values):
                return None
            values = [mpmath.mpmathify(v) for v in values]
            if any(isinstance(v, mpmath.mpc) or mpmath.isnan(v) for v in values):
                return None
            if any(mpmath.isinf(v) for v in values):
                return None
            total = mpmath.fsum(c * v for c, v in zip(coeffs, values))
            biggest = max(abs(v) for v in values)
            if total == 0:
                if biggest == 0:
                    return mpmath.mpf(0)
                work *= 2  # complete cancellation: no digit of the difference is known yet
                continue
            lost = int(mpmath.log(biggest / abs(total), 2)) + 1 if biggest > abs(total) else 0
            if work >= prec + lost + GUARD_BITS:
                with mpmath.workprec(prec):
                    return +(total / h**n)
            work = max(work * 2, prec + lost + 2 * GUARD_BITS)
    if total == 0:
        return mpmath.mpf(0)
    raise NoConvergence(f"the difference still cancels at {work} bits")
