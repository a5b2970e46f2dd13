"""Elementary functions with a removable singularity: xlogy, entr and sinc.

Both are defined at a point where the obvious formula is 0 * log 0 or 0 / 0, and
JAX differentiates the obvious formula. The custom rules use the double-where
pattern (the rule never evaluates the singular expression at the special point,
not even in an unselected branch) so that a second derivative is still finite.

Thresholds were measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from rulelab.catalog import _fast
from rulelab.catalog._stable import is_zero
from rulelab.model.case import (
    NONNEGATIVE,
    REALS,
    Convention,
    Variant,
    make_case,
    register,
)

Array = Any

# --- xlogy -----------------------------------------------------------------------------


def naive_xlogy(x: Array, y: Array) -> Array:
    """x * log(y), plain autodiff: NaN value and gradients at (0, 0)."""
    return x * jnp.log(y)


def _xlogy_value(x: Array, y: Array) -> Array:
    safe_y = jnp.where(x == 0, 1, y)
    return jnp.where(x == 0, 0, x * jnp.log(safe_y))


@jax.custom_jvp
def _x_over_y(x: Array, y: Array) -> Array:
    """x / y, defined as 0 where x == 0 (double where: y is replaced before dividing).
    Rule: d/dy = -(x / y) / y, which underflows or overflows only with the result
    (the default -x / y**2 loses y**2 first)."""
    safe_y = jnp.where(x == 0, 1, y)
    return jnp.where(x == 0, 0, x / safe_y)


@_x_over_y.defjvp
def _x_over_y_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, y), (tx, ty) = primals, tangents
    q = _x_over_y(x, y)
    safe_y = jnp.where(x == 0, 1, y)
    return q, tx / safe_y - ty * jnp.where(x == 0, 0, q / safe_y)


@jax.custom_jvp
def custom_jvp_xlogy(x: Array, y: Array) -> Array:
    """x log y with xlogy(0, y) = 0; rule d/dx = log y, d/dy = x / y (0 where x == 0).
    Symbolic zeros keep an undifferentiated argument from contributing 0 * log 0."""
    return _xlogy_value(x, y)


def _xlogy_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, y), (tx, ty) = primals, tangents
    out = jnp.zeros_like(x)
    if not is_zero(tx):
        out = out + tx * jnp.log(y)
    if not is_zero(ty):
        out = out + ty * _x_over_y(x, y)
    return custom_jvp_xlogy(x, y), out


custom_jvp_xlogy.defjvp(_xlogy_jvp, symbolic_zeros=True)


@jax.custom_vjp
def custom_vjp_xlogy(x: Array, y: Array) -> Array:
    """The same rule as a VJP: the two cotangents are formed separately, so a -inf
    partial in x never meets a zero cotangent of y (no forward mode)."""
    return _xlogy_value(x, y)


def _xlogy_fwd(x: Array, y: Array) -> tuple:
    return _xlogy_value(x, y), (x, y)


def _xlogy_bwd(res: tuple, g: Array) -> tuple:
    x, y = res
    return g * jnp.log(y), g * _x_over_y(x, y)


custom_vjp_xlogy.defvjp(_xlogy_fwd, _xlogy_bwd)


def _m_xlogy(mp: Any, x: Any, y: Any) -> Any:
    return mp.mpf(0) if x == 0 else x * mp.log(y)


def _m_xlogy_dy(mp: Any, x: Any, y: Any) -> Any:
    return mp.mpf(0) if x == 0 else x / y  # y == 0, x != 0: ZeroDivisionError (undefined)


def _m_xlogy_dyy(mp: Any, x: Any, y: Any) -> Any:
    return mp.mpf(0) if x == 0 else -x / y**2


register(
    make_case(
        name="xlogy",
        formula="x * log(y), 0 where x == 0",
        args=("x", "y"),
        domain=(REALS, NONNEGATIVE),
        reference=_m_xlogy,
        derivatives={
            ("x", 1): lambda mp, x, y: mp.log(y),
            ("x", 2): lambda mp, x, y: mp.mpf(0),
            ("y", 1): _m_xlogy_dy,
            ("y", 2): _m_xlogy_dyy,
        },
        fast_reference={("x", 0): _fast.xlogy, ("x", 1): _fast.xlogy_dx, ("x", 2): _fast.zero2,
                        ("y", 1): _fast.xlogy_dy, ("y", 2): _fast.xlogy_dyy},
        conventions=[
            Convention("y", 1, lambda x, y: x == 0 and y == 0, 0.0,
                       "xlogy(0, y) = 0 for every y, so d/dy = 0 at (0, 0) (the limit along x = 0)"),
            Convention("y", 2, lambda x, y: x == 0 and y == 0, 0.0,
                       "xlogy(0, y) = 0 for every y, so d2/dy2 = 0 at (0, 0)"),
        ],
        variants=[
            Variant("naive", naive_xlogy, "x * log(y), plain autodiff"),
            Variant("custom_jvp", custom_jvp_xlogy, "custom_jvp (symbolic zeros): log y and x/y, double where at x == 0"),
            Variant("custom_vjp", custom_vjp_xlogy, "custom_vjp: separate cotangents log y and x/y (0 where x == 0)"),
            Variant("library", jsp.xlogy, "jax.scipy.special.xlogy (custom_jvp x_dot log y + y_dot x / y)"),
        ],
        source="jax-ml/jax#15709 (NaN from the xlogy rule at x = 0); jax.scipy.special.xlogy",
        notes=(
            "Convention: xlogy(0, y) = 0 for all y >= 0, so d/dy and d2/dy2 are 0 on x == 0, "
            "including (0, 0); d/dx = log y is -inf at y = 0 (the true one-sided value), d2/dx2 = 0. "
            "naive value is NaN at (0, 0) (0 * -inf) and its y-gradient NaN there; library value is 0 "
            "but grad_y and grad2_y at (0, 0) are NaN (x / y = 0 / 0). The same holds in every dtype: "
            "the failure is at the point, not past a threshold. Forward mode with an explicit zero "
            "x-tangent (jax.jvp(f, (x, y), (0, 1))) is NaN at (0, 0) for every custom_jvp "
            "formulation, since 0 * log 0 is NaN; closing over x avoids it."
        ),
        special_points=((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (0.0, 1e-30), (1e-30, 0.0), (2.0, 3.0)),
    )
)


# --- entr ------------------------------------------------------------------------------


def naive_entr(x: Array) -> Array:
    """-x log x, plain autodiff: 0 * -inf = NaN at x = 0, and its derivatives too."""
    return -x * jnp.log(x)


@jax.custom_jvp
def custom_entr(x: Array) -> Array:
    """-x log x, 0 at x = 0 (double where: log never sees 0); rule -(log x + 1), +inf at 0."""
    return jnp.where(x == 0, 0, -x * jnp.log(jnp.where(x == 0, 1, x)))


custom_entr.defjvps(lambda t, ans, x: -t * (jnp.log(x) + 1))


register(
    make_case(
        name="entr",
        formula="-x log x, 0 at x = 0",
        args=("x",),
        domain=NONNEGATIVE,
        reference=lambda mp, x: mp.mpf(0) if x == 0 else -x * mp.log(x),
        derivatives={
            ("x", 1): lambda mp, x: mp.inf if x == 0 else -mp.log(x) - 1,  # the one-sided limit at 0
            ("x", 2): lambda mp, x: -mp.inf if x == 0 else -1 / x,
        },
        # (no fast first derivative: -(log x + 1) cancels near x = 1/e in float64 as well, beyond the fast tier's bound)
        fast_reference={("x", 0): _fast.entr, ("x", 2): _fast.entr_d2},
        variants=[
            Variant("naive", naive_entr, "-x * log(x), plain autodiff"),
            Variant("custom_jvp", custom_entr, "custom_jvp: double where at 0, rule -(log x + 1)"),
            Variant("library", jsp.entr, "jax.scipy.special.entr (fixed in PR #15737: its gradient at 0 is +inf)"),
        ],
        source="jax-ml/jax#15709 (the gradient of jax.scipy.special.entr at 0 was NaN; PR #15737 made it inf)",
        notes=(
            "The derivative at 0 is the one-sided limit: entr'(0) = +inf and entr''(0) = -inf. Measured (JAX 0.10.2, "
            "CPU): naive value, grad and grad2 are NaN at x = 0 (0 * -inf) in every dtype; the library value is "
            "-0, its grad +inf and grad2 -inf there, the true one-sided values; at x = -0 the grad2 of both "
            "the library and the custom rule is -1 / -0 = +inf. Near x = 1/e the derivative -(log x + 1) "
            "crosses 0 and every variant loses its relative accuracy there (log x + 1 cancels)."
        ),
        special_points=(0.0, 1e-30, 1e-7, 1.0, 0.36787944117144233, 1e30),
    )
)


# --- sinc ------------------------------------------------------------------------------


def naive_sinc(x: Array) -> Array:
    """sin(pi x) / (pi x): NaN at 0 (0 / 0), and its gradient too."""
    return jnp.sin(math.pi * x) / (math.pi * x)


def _reduce_half(x: Array) -> tuple[Array, Array]:
    """``(r, s)``: r = x - 2 round(x / 2) in [-1, 1] exactly, and s in [-1/2, 1/2] with
    sin(pi s) = sin(pi r) (s = +-1 - r where |r| > 1/2, exact by Sterbenz)."""
    r = x - 2 * jnp.round(x / 2)
    s = jnp.where(r > 0.5, 1 - r, jnp.where(r < -0.5, -1 - r, r))
    return r, s


def sinpi(x: Array) -> Array:
    """sin(pi x) with an exact argument reduction (0 at every integer)."""
    _, s = _reduce_half(x)
    return jnp.sin(math.pi * s)


def cospi(x: Array) -> Array:
    """cos(pi x) with an exact argument reduction (0 at every half-integer)."""
    r, _ = _reduce_half(x)
    a = jnp.abs(r)
    # cos(pi a) = sin(pi (1/2 - a)); 1/2 - a is exact for a >= 1/4
    return jnp.where(a < 0.25, jnp.cos(math.pi * a), jnp.sin(math.pi * (0.5 - a)))


# sinc'(x) = pi * y * P(y^2) with y = pi x, P(u) = sum_j (-1)^(j+1) 2 (j+1) / (2j+3)! u^j
_DSINC_COEFFS = [(-1) ** (j + 1) * 2 * (j + 1) / math.factorial(2 * j + 3) for j in range(12)]


def _dsinc_series(x: Array) -> Array:
    y = math.pi * x
    u = y * y
    p = jnp.zeros_like(u) + _DSINC_COEFFS[-1]
    for c in reversed(_DSINC_COEFFS[:-1]):
        p = p * u + c
    return math.pi * y * p


def _sinc_value(x: Array) -> Array:
    safe = jnp.where(x == 0, 1, x)
    return jnp.where(x == 0, 1, sinpi(safe) / (math.pi * safe))


# sinc''(x) = pi^2 Q(y^2) with Q(u) = sum_j (2j + 1) c_j u^j (c_j as above)
_D2SINC_COEFFS = [(2 * j + 1) * c for j, c in enumerate(_DSINC_COEFFS)]


def _d2sinc_series(x: Array) -> Array:
    y = math.pi * x
    u = y * y
    q = jnp.zeros_like(u) + _D2SINC_COEFFS[-1]
    for c in reversed(_D2SINC_COEFFS[:-1]):
        q = q * u + c
    return math.pi**2 * q


@jax.custom_jvp
def dsinc(x: Array) -> Array:
    """sinc'(x): Maclaurin series for |x| < 1/2 (where (cos - sinc) / x cancels), the
    closed form with exact reduction beyond. Rule: sinc'' = -pi^2 sinc - 2 sinc' / x
    (series near 0), which never forms x**2."""
    small = jnp.abs(x) < 0.5
    xs = jnp.where(small, x, 0)
    xb = jnp.where(small, 1, x)
    return jnp.where(small, _dsinc_series(xs), (cospi(xb) - _sinc_value(xb)) / xb)


@dsinc.defjvp
def _dsinc_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    d1 = dsinc(x)
    small = jnp.abs(x) < 0.5
    xs = jnp.where(small, x, 0)
    xb = jnp.where(small, 1, x)
    d2 = jnp.where(small, _d2sinc_series(xs), -(math.pi**2) * _sinc_value(xb) - 2 * (dsinc(xb) / xb))
    return d1, t * d2


@jax.custom_jvp
def custom_sinc(x: Array) -> Array:
    """sinpi(x) / (pi x) (1 at 0) with the rule :func:`dsinc`."""
    return _sinc_value(x)


@custom_sinc.defjvp
def _custom_sinc_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return custom_sinc(x), t * dsinc(x)


def _m_sinc(mp: Any, x: Any) -> Any:
    return mp.mpf(1) if x == 0 else mp.sinpi(x) / (mp.pi * x)


def _m_dsinc(mp: Any, x: Any) -> Any:
    if x == 0:
        return mp.mpf(0)
    if abs(x) < 0.5:  # the closed form cancels; sum the Maclaurin series instead
        y = mp.pi * x
        return mp.pi * mp.nsum(lambda k: (-1) ** k * 2 * k * y ** (2 * k - 1) / mp.factorial(2 * k + 1), [1, mp.inf])
    return (mp.cospi(x) - mp.sinpi(x) / (mp.pi * x)) / x


def _m_d2sinc(mp: Any, x: Any) -> Any:
    y = mp.pi * x
    if abs(x) < 0.5:
        return mp.pi**2 * mp.nsum(
            lambda k: (-1) ** k * 2 * k * (2 * k - 1) * y ** (2 * k - 2) / mp.factorial(2 * k + 1), [1, mp.inf]
        )
    return -(mp.pi**2) * mp.sinpi(x) / y - 2 * _m_dsinc(mp, x) / x


register(
    make_case(
        name="sinc",
        formula="sin(pi x) / (pi x), 1 at 0",
        args=("x",),
        domain=REALS,
        reference=_m_sinc,
        derivatives={("x", 1): _m_dsinc, ("x", 2): _m_d2sinc},
        variants=[
            Variant("naive", naive_sinc, "sin(pi x) / (pi x), plain autodiff"),
            Variant("custom_jvp", custom_sinc, "custom_jvp: exact pi-reduction; series rule for |x| < 1/2"),
            Variant("library", jnp.sinc, "jax.numpy.sinc (Maclaurin rule only at x == 0)"),
        ],
        source="jax-ml/jax#34139 and #40629: jnp.sinc's gradient cancels near 0",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value and grad are NaN at x = 0 only. library grad "
            "is exact at 0 but uses (cos(pi x) - sinc(x)) / x just beside it: more than 4 ulp off "
            "for almost every 0 < |x| < 0.333 (float32), < 0.303 (float16), < 0.275 (bfloat16); "
            "at x = 1e-3 it is ~1.2e5 ulp off in float32. Both naive and library evaluate "
            "sin(pi * x) with a rounded pi * x, so near every nonzero integer the value has a large "
            "relative error (exactly representable integers give ~1e-8 instead of 0); the custom "
            "variant reduces x exactly. Every variant loses relative accuracy near the zeros of "
            "sinc' (x ~ 1.43, 2.46, ...)."
        ),
        special_points=(0.0, 1e-3, 0.01, 0.1, 0.275, 0.303, 0.333, 1.0, 2.5, -3.0, 1e4),
    )
)
