"""Euclidean length in two dimensions: norm2 (the origin) and hypot (the extremes).

sqrt(x^2 + y^2) has gradient (x, y) / r, which is 0 / 0 at the origin, and whose
squared intermediate overflows or underflows far inside the float range. Both
cases use the same custom rule: the unit vector (x, y) / r is formed from the
scaled ratio min/max, never from x^2 + y^2, and is itself a custom_jvp function,
so the Hessian (y^2, -xy; -xy, x^2) / r^3 comes out as products of unit-vector
components divided by r, without cancellation or NaN.

Convention: the gradient and the second derivative at the origin are 0 (the
function is even, so 0 is the only choice that keeps the gradient odd).

Thresholds were measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast
from rulelab.model.case import REALS, Convention, Variant, make_case, register

Array = Any


def _ratio(x: Array, y: Array) -> tuple[Array, Array, Array]:
    """(m, r, root): m = max(|x|, |y|), r = min/max (0 at the origin), root = sqrt(1 + r^2)."""
    ax, ay = jnp.abs(x), jnp.abs(y)
    m = jnp.maximum(ax, ay)
    safe_m = jnp.where(m == 0, 1, m)
    r = jnp.minimum(ax, ay) / safe_m
    return m, r, jnp.sqrt(1 + r * r)


def _norm_value(x: Array, y: Array) -> Array:
    m, _, root = _ratio(x, y)
    return m * root


def _unit_value(x: Array, y: Array) -> tuple[Array, Array]:
    m, _, root = _ratio(x, y)
    safe_m = jnp.where(m == 0, 1, m)
    return (x / safe_m) / root, (y / safe_m) / root


@jax.custom_jvp
def unit(x: Array, y: Array) -> tuple[Array, Array]:
    """(x, y) / r without forming r^2, (0, 0) at the origin. Rule:
    d(ux) = uy (uy dx - ux dy) / r, d(uy) = ux (ux dy - uy dx) / r (0 at the origin)."""
    return _unit_value(x, y)


@unit.defjvp
def _unit_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, y), (tx, ty) = primals, tangents
    ux, uy = unit(x, y)
    n = norm2(x, y)
    safe_n = jnp.where(n == 0, 1, n)
    dux = jnp.where(n == 0, 0, uy * (uy * tx - ux * ty) / safe_n)
    duy = jnp.where(n == 0, 0, ux * (ux * ty - uy * tx) / safe_n)
    return (ux, uy), (dux, duy)


@jax.custom_jvp
def norm2(x: Array, y: Array) -> Array:
    """max(|x|, |y|) sqrt(1 + (min/max)^2) with the rule ux dx + uy dy (0 at the origin)."""
    return _norm_value(x, y)


@norm2.defjvp
def _norm2_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, y), (tx, ty) = primals, tangents
    ux, uy = unit(x, y)
    return norm2(x, y), ux * tx + uy * ty


def naive_norm2(x: Array, y: Array) -> Array:
    """sqrt(x*x + y*y), plain autodiff: 0/0 at the origin; x*x over/underflows."""
    return jnp.sqrt(x * x + y * y)


def library_norm2(x: Array, y: Array) -> Array:
    """jax.numpy.linalg.norm of the stacked pair."""
    return jnp.linalg.norm(jnp.stack([x, y]))


def scaled_hypot(x: Array, y: Array) -> Array:
    """max * sqrt(1 + (min/max)^2) under plain autodiff (the usual overflow-safe value;
    its gradient still squares max in d(min/max) = -min/max^2)."""
    return _norm_value(x, y)


def _m_norm(mp: Any, x: Any, y: Any) -> Any:
    return mp.hypot(x, y)


def _m_dx(mp: Any, x: Any, y: Any) -> Any:
    return x / mp.hypot(x, y)  # 0/0 at the origin: undefined (a convention covers it)


def _m_dxx(mp: Any, x: Any, y: Any) -> Any:
    r = mp.hypot(x, y)
    return (y / r) ** 2 / r


def _at_origin(x: float, y: float) -> bool:
    return x == 0 and y == 0


_ORIGIN_CONVENTIONS = [
    Convention(a, k, _at_origin, 0.0, f"the {'gradient' if k == 1 else 'second derivative'} at the origin is 0")
    for a in ("x", "y")
    for k in (1, 2)
]

_DERIVATIVES = {
    ("x", 1): _m_dx,
    ("x", 2): _m_dxx,
    ("y", 1): lambda mp, x, y: _m_dx(mp, y, x),
    ("y", 2): lambda mp, x, y: _m_dxx(mp, y, x),
}

_FAST = {("x", 0): _fast.hypot, ("x", 1): _fast.hypot_dx, ("y", 1): _fast.hypot_dy,
         ("x", 2): _fast.hypot_dxx, ("y", 2): _fast.hypot_dyy}
"""Both cases are sqrt(x^2 + y^2): one fast reference (0/0 at the origin, where mpmath
and the conventions decide)."""

register(
    make_case(
        name="norm2",
        formula="sqrt(x^2 + y^2)",
        args=("x", "y"),
        domain=REALS,
        reference=_m_norm,
        derivatives=_DERIVATIVES,
        conventions=_ORIGIN_CONVENTIONS,
        fast_reference=_FAST,
        variants=[
            Variant("naive", naive_norm2, "sqrt(x*x + y*y), plain autodiff"),
            Variant("custom_jvp", norm2, "custom_jvp: scaled value, unit-vector rule (itself custom), 0 at the origin"),
            Variant("library", library_norm2, "jax.numpy.linalg.norm of [x, y]"),
        ],
        source="jax-ml/jax#3058, #26248 and PR #39792: the gradient of jnp.linalg.norm is NaN at 0",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive and library grad and grad2 are NaN at the origin "
            "(0/0), in every dtype. naive value overflows to inf once x*x does: |x| >= 1.8446744e19 "
            "(float32), >= 256 (float16), >= 1.8446744e19 (bfloat16), and is 0 once x*x underflows: "
            "|x| <= 1.0842021e-19 (float32, flushed), <= 0.00017261505 (float16), <= 1.079967e-19 "
            "(bfloat16) (with y = 0). Convention: gradient and second derivative 0 at (0, 0)."
        ),
        special_points=(
            (0.0, 0.0), (0.0, 1.0), (1e-30, 0.0), (3.0, 4.0),
            (1.8446744e19, 0.0), (256.0, 0.0), (1.0842021e-19, 0.0), (0.00017261505, 0.0), (1.079967e-19, 0.0),
        ),
    )
)

register(
    make_case(
        name="hypot",
        formula="hypot(x, y) = sqrt(x^2 + y^2)",
        args=("x", "y"),
        domain=REALS,
        reference=_m_norm,
        derivatives=_DERIVATIVES,
        conventions=_ORIGIN_CONVENTIONS,
        fast_reference=_FAST,
        variants=[
            Variant("naive", scaled_hypot, "max * sqrt(1 + (min/max)^2), plain autodiff"),
            Variant("custom_jvp", norm2, "custom_jvp: scaled value, unit-vector rule (itself custom)"),
            Variant("library", jnp.hypot, "jax.numpy.hypot (scaled value, plain autodiff)"),
        ],
        source="jax.numpy.hypot; jax-ml/jax PR #4893 (overflow-safe hypot, gradient left to autodiff)",
        notes=(
            "Measured (JAX 0.10.2, CPU) at (x, x/2), true d/dx = 2/sqrt(5): the value is "
            "overflow-safe, but autodiff of max * sqrt(1 + (min/max)^2) forms max^2 in "
            "d(min/max) = -min/max^2. The library gradient is wrong once max^2 overflows, "
            "x >= 9.2233731e18 (float32), >= 256 (float16), >= 9.2954296e18 (bfloat16) (1.118 "
            "instead of 0.894: the min/max term is lost), and once it underflows, x <= 1.0842021e-19 "
            "(float32), <= 0.00390625 (float16), <= 1.079967e-19 (bfloat16), where it is -inf "
            "(1e-30 in float32). At ties |x| == |y| autodiff of max/min splits the derivative. "
            "Convention: 0 at the origin."
        ),
        special_points=(
            (0.0, 0.0), (1e-30, 5e-31), (1e30, 5e29), (3e38, 1e38),
            (9.2233731e18, 4.6116865e18), (256.0, 128.0), (9.2954296e18, 4.6477148e18),
            (1.0842021e-19, 5.4210105e-20), (0.00390625, 0.001953125), (3.0, 4.0),
        ),
    )
)
