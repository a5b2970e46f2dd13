"""The exact counterpart of each JAX primitive a variant's program uses, in mpmath.

The pitfall: "exact" evaluation that silently falls back to floating point for an
operation it does not know gives a confident wrong answer about where digits are lost.
So every primitive is one of three kinds, and anything else makes a point *not
localized*, never guessed:

- **arithmetic** (:data:`ARITHMETIC`): an mpmath function applied elementwise (or a
  reduction, a dot product) at the working precision; a domain error (log of a
  negative, 0/0) gives ``None``, "undefined here";
- **structural** (:data:`STRUCTURAL`): moves or selects elements without arithmetic
  (reshape, slice, concatenate, select_n, …). Its exact result is found by applying the
  primitive itself to the *positions* of its inputs' elements and reading the exact
  values at the positions that come out, so no rule is written twice;
- **discrete**: a result that is not floating (a comparison, an integer, a bool) is
  the float program's own, since it decides control flow (the exact evaluation shadows
  the float one and takes the same branches, as FpDebug does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import mpmath
import numpy as np


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    def safe(*xs: Any) -> Any:
        if any(x is None for x in xs):
            return None
        try:
            out = fn(*xs)
        except (ZeroDivisionError, ValueError):
            return None
        if isinstance(out, mpmath.mpc):
            return out.real if out.imag == 0 else None
        return None if mpmath.isnan(out) else out

    return safe


def _logistic(x: Any) -> Any:
    return 1 / (1 + mpmath.exp(-x))


def _round_half_away(x: Any) -> Any:
    return mpmath.sign(x) * mpmath.floor(abs(x) + mpmath.mpf(0.5))


def _rem(a: Any, b: Any) -> Any:
    if b == 0:
        raise ZeroDivisionError
    return a - b * (mpmath.floor(a / b) if a / b >= 0 else mpmath.ceil(a / b))


def _pow(a: Any, b: Any) -> Any:
    if a < 0 and b != int(b):
        raise ValueError("negative base, fractional exponent")
    return mpmath.power(a, b)


def _cbrt(x: Any) -> Any:
    return mpmath.sign(x) * mpmath.cbrt(abs(x))


ELEMENTWISE: dict[str, Callable[..., Any]] = {
    "add": lambda a, b: a + b,
    "add_any": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,  # (an exact zero divisor is undefined: mpmath raises ZeroDivisionError)
    "neg": lambda a: -a,
    "abs": abs,
    "sign": mpmath.sign,
    "max": lambda a, b: max(a, b),
    "min": lambda a, b: min(a, b),
    "exp": mpmath.exp,
    "exp2": lambda a: mpmath.power(2, a),
    "expm1": mpmath.expm1,
    "log": mpmath.log,
    "log1p": mpmath.log1p,
    "sin": mpmath.sin,
    "cos": mpmath.cos,
    "tan": mpmath.tan,
    "tanh": mpmath.tanh,
    "sinh": mpmath.sinh,
    "cosh": mpmath.cosh,
    "asin": mpmath.asin,
    "acos": mpmath.acos,
    "atan": mpmath.atan,
    "asinh": mpmath.asinh,
    "acosh": mpmath.acosh,
    "atanh": mpmath.atanh,
    "erf_inv": mpmath.erfinv,
    "atan2": mpmath.atan2,
    "logistic": _logistic,
    "sqrt": mpmath.sqrt,
    "rsqrt": lambda a: 1 / mpmath.sqrt(a),
    "cbrt": _cbrt,
    "square": lambda a: a * a,
    "pow": _pow,
    "erf": mpmath.erf,
    "erfc": mpmath.erfc,
    "bessel_i0e": lambda a: mpmath.besseli(0, a) * mpmath.exp(-abs(a)),
    "bessel_i1e": lambda a: mpmath.besseli(1, a) * mpmath.exp(-abs(a)),
    "lgamma": lambda a: mpmath.log(abs(mpmath.gamma(a))),
    "digamma": mpmath.digamma,
    "round": _round_half_away,
    "floor": mpmath.floor,
    "ceil": mpmath.ceil,
    "rem": _rem,
    "copy": lambda a: a,
    "copy_p": lambda a: a,
    "stop_gradient": lambda a: a,
    "reduce_precision": lambda a: a,
    "convert_element_type": lambda a: a,
}
"""Primitives computed point by point; ``convert_element_type`` between floats keeps the
exact value (the rounding is what the float program does)."""

TRANSCENDENTAL = frozenset({"exp", "exp2", "expm1", "log", "log1p", "sin", "cos", "tan", "tanh", "sinh", "cosh", "asin", "acos", "atan",
                            "asinh", "acosh", "atanh", "atan2", "logistic", "sqrt", "rsqrt", "cbrt", "pow", "erf", "erfc", "erf_inv",
                            "lgamma", "digamma", "polygamma", "bessel_i0e", "bessel_i1e"})
"""Library functions: a large local error of one of these is the library's inaccuracy."""

STRUCTURAL = frozenset({
    "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "transpose", "slice", "rev", "concatenate", "pad", "select_n",
    "dynamic_slice", "dynamic_update_slice", "gather", "scatter", "stack", "unstack", "split", "device_put", "optimization_barrier",
})
"""Primitives that only move or choose elements."""


NOT_LOCALIZED = frozenset({"eigh", "scatter-add"})
"""Primitives known to have no exact counterpart yet: a point whose program runs one is
"not localized (primitive …)", counted and shown, never guessed. (An exact eigh would
have to choose each eigenvector's sign as the float one did; scatter-add appears in the
same programs, transposing the indexing of eigh's results.)"""

AS_COMPUTED = frozenset({"bitcast_convert_type", "iota", "nextafter"})
"""Primitives whose floating result is a fact of the float format, not an approximation
(bits reinterpreted, an index counted, the next float): the exact value is the computed one."""


def exact_scalar(x: Any) -> Any:
    """A float (or numpy scalar) as an exact mpf; NaN is undefined."""
    v = float(x)
    return None if math.isnan(v) else mpmath.mpf(v)


def lift(values: np.ndarray) -> np.ndarray:
    """An array of floats as an object array of exact mpf."""
    arr = np.asarray(values)
    out = np.empty(arr.shape, dtype=object)
    for idx, v in np.ndenumerate(arr.astype(np.float64)):
        out[idx] = exact_scalar(v)
    return out


def elementwise(name: str, args: Sequence[np.ndarray], params: dict[str, Any]) -> np.ndarray:
    """The exact elementwise result of primitive ``name`` (broadcast like numpy)."""
    if name == "integer_pow":
        fn = _guard(lambda a: mpmath.power(a, params["y"]))
    elif name == "polygamma":
        fn = _guard(lambda m, a: mpmath.polygamma(int(m), a))
    elif name == "clamp":
        fn = _guard(lambda lo, x, hi: min(max(x, lo), hi))
    else:
        fn = _guard(ELEMENTWISE[name])
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=object) for a in args])
    out = np.empty(arrays[0].shape, dtype=object)
    for idx in np.ndindex(out.shape):
        out[idx] = fn(*(a[idx] for a in arrays))
    return out


def _reduce(values: np.ndarray, axes: Sequence[int], combine: Callable[[Any, Any], Any]) -> np.ndarray:
    moved = np.moveaxis(np.asarray(values, dtype=object), list(axes), list(range(-len(axes), 0)))
    keep = moved.shape[: moved.ndim - len(axes)]
    flat = moved.reshape(*keep, -1)
    out = np.empty(keep, dtype=object)
    for idx in np.ndindex(keep):
        acc = None
        for v in flat[idx]:
            acc = v if acc is None else (None if v is None else combine(acc, v))
            if acc is None:
                break
        out[idx] = acc
    return out


def reduction(name: str, value: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """reduce_sum / reduce_max / reduce_min over ``params['axes']``, exactly."""
    combine = {"reduce_sum": lambda a, b: a + b, "reduce_max": max, "reduce_min": min}[name]
    return _reduce(value, params["axes"], combine)


def dot_general(lhs: np.ndarray, rhs: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """``dot_general`` exactly (contraction and batch dimensions as lax names them)."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lhs, rhs = np.asarray(lhs, dtype=object), np.asarray(rhs, dtype=object)
    l_free = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    r_free = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    lt = np.transpose(lhs, [*lb, *l_free, *lc])
    rt = np.transpose(rhs, [*rb, *r_free, *rc])
    nb, nl, nr = len(lb), len(l_free), len(r_free)
    shape = lt.shape[:nb] + lt.shape[nb : nb + nl] + rt.shape[nb : nb + nr]
    out = np.empty(shape, dtype=object)
    for idx in np.ndindex(shape):
        b, i, j = idx[:nb], idx[nb : nb + nl], idx[nb + nl :]
        a_vec, b_vec = np.asarray(lt[b + i], dtype=object).reshape(-1), np.asarray(rt[b + j], dtype=object).reshape(-1)
        if any(x is None for x in a_vec) or any(x is None for x in b_vec):
            out[idx] = None
        else:
            out[idx] = mpmath.fsum(x * y for x, y in zip(a_vec, b_vec))
    return out


ARITHMETIC = frozenset({*ELEMENTWISE, "integer_pow", "polygamma", "clamp", "reduce_sum", "reduce_max", "reduce_min", "dot_general"})
"""Every primitive with an exact implementation here."""


def arithmetic(name: str, args: Sequence[np.ndarray], params: dict[str, Any]) -> np.ndarray:
    """The exact result of arithmetic primitive ``name`` on exact ``args``."""
    if name in ("reduce_sum", "reduce_max", "reduce_min"):
        return reduction(name, args[0], params)
    if name == "dot_general":
        return dot_general(args[0], args[1], params)
    return elementwise(name, args, params)
