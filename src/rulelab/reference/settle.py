"""mpmath references confirmed by agreement, one point at a time.

A reference is kept unrounded as a double-double (hi, lo): rounding it to a dtype is then
exact integer arithmetic (``floats.round_double_double``), one rounding, never via a
narrower intermediate.

The pitfall is trusting one evaluation. At a fixed precision, cancellation (``x - lse``
at |x| ~ 2^128 keeps no fractional bit at 128 bits), an exact zero that is really a tiny
number, or a value a hair from a rounding boundary all give a confident wrong answer.
So every reference is confirmed by agreement (Ziv's strategy): it is evaluated at two
precisions and accepted only when both double-doubles agree (the same float64, the low
parts to ``DD_BITS`` bits) and round to the same value in every dtype that can hold the
point; otherwise the precision doubles, up to a cap. Zero, infinity and "undefined" are
confirmed the same way. A point that never settles is *unsettled*: stored as ``(NaN, p)`` with p the
highest precision tried (an undefined point is ``(NaN, 0)``), counted, never scored.

Only mpmath's domain signals (``ZeroDivisionError``, ``ValueError``) and NaN or complex
results mean "undefined here"; any other exception, or a result that is not an mpmath
number, is a broken reference (``rulelab.model.contract``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np
from mpmath.libmp import NoConvergence

from rulelab.core.floats import FORMATS, double_double, float_parts, round_exact
from rulelab.model.case import Case, derivative_label
from rulelab.model.contract import (
    MAX_PRECISION,
    NUMERICAL,
    START_PRECISIONS,
    checked,
    direct,
    guarded,
)
from rulelab.reference.numdiff import derivative as numerical_derivative

DD_BITS = 100
"""Bits of the double-double that two evaluations must agree on (hi exactly, lo to
within 2^-DD_BITS |hi|): the fractional error is computed from them."""


def is_unsettled(hi: Any, lo: Any) -> Any:
    """Where a reference never settled (elementwise on arrays)."""
    return np.isnan(hi) & (np.asarray(lo) != 0)


@functools.lru_cache(maxsize=256)
def _precisions(cap: int, extra: int) -> tuple[int, ...]:
    out = list(dict.fromkeys(min(p + extra, cap) for p in START_PRECISIONS))
    while out[-1] < cap:
        out.append(min(2 * out[-1], cap))
    return tuple(out)


def precisions(cap: int = MAX_PRECISION, point: tuple[float, ...] = ()) -> list[int]:
    """The precisions tried in turn: START_PRECISIONS, raised by the binary exponent of
    the largest finite input (an absolute error at that magnitude is what cancellation
    leaves, as in x - logsumexp(x, …) at x ~ 2^127), then doubling up to ``cap``."""
    extra = max((math.frexp(x)[1] for x in point if math.isfinite(x)), default=0)
    return list(_precisions(cap, max(extra, 0)))


# --- one point ------------------------------------------------------------------------


class Unconverged(Exception):
    """No value at this precision (mpmath gave up); a higher precision may settle it."""


def evaluate_at(case: Case, order: int, arg: str, point: tuple[float, ...], prec: int) -> Any:
    """One evaluation of the reference at ``point`` at ``prec`` bits: an mpf (maybe
    infinite), or None where undefined. Raises :class:`BrokenReference` on a broken
    reference and ``Unconverged`` where mpmath does not converge at this precision."""
    mp = mpmath.mp

    def where() -> str:
        return f"case {case.name!r}, {derivative_label(order, arg)} at {point}"

    def call(fn: Callable[..., Any], *xs: Any) -> Any:
        return checked(fn(mp, *xs), where)

    def value() -> Any:
        with mpmath.workprec(prec):
            xs = [mp.mpf(v) for v in point]
            got = direct(case, order, arg, point, xs, where)
            if got is not NUMERICAL:
                return got
            i = case.args.index(arg)
            if not all(mpmath.isfinite(x) for x in xs):
                return None  # numerical differentiation at an infinite input is meaningless
            first = case.derivatives.get((arg, 1)) if order == 2 else None
            fn, n = (first, 1) if first is not None else (case.reference, order)

            def along(t: Any) -> Any:
                ys = list(xs)
                ys[i] = t
                return call(fn, *ys)

            dom = case.domain[i]
            direction = 1 if point[i] == dom.lo else -1 if point[i] == dom.hi else 0
            return numerical_derivative(along, point[i], n, prec, dom, direction)

    try:
        return guarded(where, value)
    except NoConvergence as exc:
        raise Unconverged(str(exc)) from None


_NARROW = tuple(f for f in FORMATS.values() if f.bits < 64)


def holding_dtypes(point: tuple[float, ...]) -> tuple[Any, ...]:
    """The narrower dtypes whose sweeps can hold ``point`` (each coordinate representable
    in it): only their rounding boundaries need deciding there."""
    def fits(x: float, f: Any) -> bool:
        if x == 0 or not math.isfinite(x):
            return True
        sign, man, exp = float_parts(x)
        return round_exact(sign, man, exp, f) == x

    return tuple(f for f in _NARROW if all(fits(x, f) for x in point))


def _narrow_boundary(hi: float, point: tuple[float, ...]) -> bool:
    """Whether the float64 ``hi`` is a rounding boundary (a midpoint) of a narrower dtype
    that can hold ``point``: values a hair above and below it round apart."""
    sign, man, exp = float_parts(hi)
    if man & ((1 << 28) - 1):  # a boundary of a dtype of <= 24 bits has <= 25 significant bits
        return False
    return any(round_exact(sign, 2 * man + 1, exp - 1, f) != round_exact(sign, 2 * man - 1, exp - 1, f) for f in holding_dtypes(point))


def _near_boundary(hi: float, lo: float, value: Any, err: float, exact_err: Callable[[], Any], point: tuple[float, ...]) -> bool:
    """Whether ``value`` (an mpf whose double-double is (hi, lo), known to within
    ``err``, an upper bound as a float, and within ``exact_err()``, an mpf) could lie on
    either side of a rounding boundary: a float64 midpoint beside hi = RN64(value), or
    hi itself where it is a boundary of a narrower dtype that can hold ``point``. Where the double-double
    cannot tell, exact mpf arithmetic decides: the part of ``value`` that decides the
    rounding may lie far below what a double-double keeps (softplus at 1276 is
    1276 + 2^-1841, and 1276 is a bfloat16 midpoint)."""
    half = math.ulp(hi) / 2
    if (lo < 0) != (hi < 0) and math.frexp(hi)[0] in (0.5, -0.5):
        half /= 2  # below a power of two the spacing halves
    slack = err + math.ulp(half) + 5e-324  # lo is below rounded to 53 bits
    narrow = hi != 0 and _narrow_boundary(hi, point)
    if abs(abs(lo) - half) > slack and not (narrow and abs(lo) <= slack):
        return False  # clear of every boundary: no need for exact arithmetic
    with mpmath.workprec(64):
        err = exact_err()
        below = mpmath.fsub(value, hi, exact=True)
        if below != 0:
            # (compared, not subtracted: below may be 2^-(10^100), too far below half for exact arithmetic)
            mid = half if below > 0 else -half
            if mpmath.fsub(mid, err, exact=True) <= below <= mpmath.fadd(mid, err, exact=True):
                return True
        return narrow and -err <= below <= err


def agree(a: tuple[int, Any, tuple[float, float]], b: tuple[int, Any, tuple[float, float]], point: tuple[float, ...] = ()) -> bool:
    """Whether two evaluations, each (precision, mpf or None, double-double), the second
    at the higher precision, confirm each other: both undefined; or the same float64
    (±0 alike), low parts within 2^-DD_BITS of it, and no rounding boundary of float64
    or of a narrower dtype that can hold ``point`` within the second's error. That error is taken as their difference scaled down by
    the precision gained, and at least 2^-(p-16) relative."""
    (pa, va, da), (pb, vb, db) = a, b
    if va is None or vb is None:
        return va is None and vb is None
    if da[0] != db[0]:
        return False
    if math.isinf(db[0]):
        return True
    diff = abs(da[1] - db[1])
    if diff > max(math.ldexp(abs(da[0]), -DD_BITS), 5e-324):
        return False
    # an upper bound, as a float: hi are equal, so |vb - va| <= |lo_b - lo_a| + 2^-1074
    err = max(math.ldexp(diff + 5e-324, pa - pb), math.ldexp(abs(db[0]), 17 - pb))

    def exact_err() -> Any:
        # |vb - va| rounded to 64 bits, raised by its rounding: an upper bound even where an
        # exact difference would not fit in memory (two values far below float64's range)
        diff = mpmath.fmul(abs(mpmath.fsub(vb, va, prec=64)), 1 + mpmath.ldexp(1, -62), rounding="u")
        return max(mpmath.ldexp(diff, pa - pb), mpmath.ldexp(abs(vb), 16 - pb))

    return not _near_boundary(db[0], db[1], vb, err, exact_err, point)


ZERO_PRECISION = 1536
"""An exact zero must also come out zero at this precision (or the cap): below it, a
value under 2^-1074 (float64's smallest subnormal) beside intermediates near 1 could
still cancel to zero. (A nonzero value too small for float64 is confirmed like any
other: cancellation leaves an error near 2^-prec of the intermediates, not below.)"""


def settle(case: Case, order: int, arg: str, point: tuple[float, ...], max_precision: int = MAX_PRECISION) -> tuple[float, float, int]:
    """(hi, lo, p): the reference at ``point`` confirmed by agreement (in float64 and in
    every narrower dtype that can hold the point), and the precision p of the
    evaluation it settled at; (NaN, 0, p) where undefined, (NaN, p, p) where it
    never settled up to p bits. A value that came out identical at every precision up
    to the cap, on a rounding boundary, is taken as exact (e.g. |x| at a bfloat16
    midpoint): only a part below 2^-cap of it could round it otherwise."""
    previous: tuple[int, Any, tuple[float, float]] | None = None
    first: Any = None
    identical = True
    queue = precisions(max_precision, point)
    prec = queue[0]
    while queue:
        prec = queue.pop(0)
        try:
            value = evaluate_at(case, order, arg, point, prec)
        except Unconverged:
            previous, identical = None, False
            continue
        current = (prec, value, (math.nan, 0.0) if value is None else double_double(value))
        if first is None:
            first = value
        identical = identical and value is not None and value == first
        if previous is not None and agree(previous, current, point):
            if value != 0 or prec >= min(ZERO_PRECISION, max_precision):
                return current[2][0], current[2][1], prec
            zero = min(ZERO_PRECISION, max_precision)  # confirm an exact zero far above
            queue = [zero] + [p for p in precisions(max_precision) if p > zero]
            continue
        previous = current
    if identical and previous is not None:
        return previous[2][0], previous[2][1], prec
    return math.nan, float(prec), prec


def reference_point(case: Case, order: int, arg: str, point: tuple[float, ...], max_precision: int = MAX_PRECISION) -> tuple[float, float]:
    """(hi, lo) of the confirmed reference at ``point``: (NaN, 0) where it is undefined,
    (NaN, p) where it never settled up to p bits."""
    hi, lo, _ = settle(case, order, arg, point, max_precision)
    return hi, lo
