"""The reference contract: what a case's mpmath reference must return, and how it is run.

The pitfall: a reference that computes in Python floats (``math.log1p(x)``) or forgets
to return looks fine at a glance and poisons every number measured against it. A
reference takes the ``mp`` context it is given and returns an mpmath number; only
mpmath's domain signals and NaN or complex results mean "undefined here". Any other
exception or result is a :class:`BrokenReference`, refused where the case is registered
(:func:`probe`) and, should it slip through, where it is evaluated.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import mpmath
from mpmath.libmp import NoConvergence

from rulelab.core.errors import UsageError
from rulelab.model.case import Case, derivative_label

START_PRECISIONS = (128, 160)
"""The first two precisions (bits) every reference is evaluated at; after that each
retry doubles the precision."""
MAX_PRECISION = 2048
"""Default cap on the precision of a retry (a plan's ``max_precision``)."""
DOMAIN_SIGNALS = (ZeroDivisionError, ValueError)
"""Exceptions by which mpmath (and a reference) says "undefined at this point"."""
NUMERICAL = object()
"""Returned by :func:`direct` where a derivative has no expression: it is taken numerically."""


class BrokenReference(UsageError):
    """A reference raised something other than a domain signal, or returned something
    other than an mpmath number; the message names case, derivative and point."""


def checked(value: Any, what: Callable[[], str]) -> Any:
    """A reference's result as a real mpf, or None where it is undefined (NaN, complex);
    anything that is not an mpmath number computed in the context given is broken."""
    if isinstance(value, mpmath.mpc):
        if value.imag != 0:
            return None
        value = value.real
    elif isinstance(value, int) and not isinstance(value, bool):
        value = mpmath.mpf(value)  # exact
    elif not isinstance(value, mpmath.mpf):
        hint = " (a missing return?)" if value is None else " (computed outside mpmath, at its own precision)" if isinstance(value, float) else ""
        raise BrokenReference(f"{what()} returned {type(value).__name__} {value!r}{hint}; a reference must return an mpmath number computed with the mp it is given")
    if mpmath.isnan(value):
        return None
    return value


def direct(case: Case, order: int, arg: str, point: tuple[float, ...], xs: Sequence[Any], what: Callable[[], str]) -> Any:
    """The value (``order`` 0), a convention's value where one applies, or the analytic
    derivative at ``xs`` (``point`` as mpf), checked; :data:`NUMERICAL` where the case
    gives no expression for the derivative."""
    mp = mpmath.mp
    if order == 0:
        return checked(case.reference(mp, *xs), what)
    for conv in case.conventions_for(arg, order):
        if conv.where(*point):
            return checked(conv.value_at(mp, *xs), what)
    analytic = case.derivatives.get((arg, order))
    if analytic is not None:
        return checked(analytic(mp, *xs), what)
    return NUMERICAL


def guarded(what: Callable[[], str], thunk: Callable[[], Any]) -> Any:
    """``thunk()`` (an evaluation of a reference) read by the contract: a domain signal
    means "undefined here" (None); mpmath's ``NoConvergence`` passes through (a higher
    precision may settle it), as does a :class:`BrokenReference`; anything else is a
    BrokenReference naming ``what()``."""
    try:
        return thunk()
    except (BrokenReference, NoConvergence):  # (BrokenReference is a ValueError, like the domain signals)
        raise
    except DOMAIN_SIGNALS:
        return None
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in the reference
        raise BrokenReference(f"{what()}: {type(exc).__name__}: {exc}") from None


def probe(case: Case) -> None:
    """Evaluate the reference and its analytic derivatives at a few points of the
    domain, so that a reference that raises or returns a non-mpmath number (a Python
    float) is refused where the case is registered, not in the middle of a sweep."""
    picks = []
    for dom in case.domain:
        inside = [x for x in (0.75, -1.25, 2.5, 0.3125, -0.0625, 7.5) if dom.contains(x)]
        if not inside:
            lo, hi = dom.lo, dom.hi
            inside = [(lo + hi) / 2 if math.isfinite(hi - lo) else (lo + 1.0 if math.isfinite(lo) else hi - 1.0)]
        picks.append(inside)
    points = [tuple(p[j % len(p)] for p in picks) for j in range(3)]
    targets = [(0, case.args[0])] + list((o, a) for (a, o) in case.derivatives)
    for point in dict.fromkeys(points):
        for order, arg in targets:
            def what(order: int = order, arg: str = arg, point: tuple[float, ...] = point) -> str:
                return f"case {case.name!r}, {derivative_label(order, arg)} at {point}"

            with mpmath.workprec(64), contextlib.suppress(NoConvergence):
                guarded(what, lambda: direct(case, order, arg, point, [mpmath.mp.mpf(v) for v in point], what))
