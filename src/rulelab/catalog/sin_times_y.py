"""sin(x) * y: the JAX documentation's first custom-rule example, in every form the
API offers (defjvp, defjvps, custom_vjp). A control case: nothing goes wrong, so any
difference between variants is the cost or rounding of the rule machinery."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.model.case import REALS, Variant, make_case, register


def naive(x: Any, y: Any) -> Any:
    """sin(x) * y with autodiff."""
    return jnp.sin(x) * y


@jax.custom_jvp
def f_jvp(x: Any, y: Any) -> Any:
    """sin(x) * y with a defjvp rule."""
    return jnp.sin(x) * y


@f_jvp.defjvp
def _f_jvp_rule(primals: tuple[Any, Any], tangents: tuple[Any, Any]) -> tuple[Any, Any]:
    (x, y), (tx, ty) = primals, tangents
    return f_jvp(x, y), jnp.cos(x) * tx * y + jnp.sin(x) * ty


@jax.custom_jvp
def f_jvps(x: Any, y: Any) -> Any:
    """sin(x) * y with one tangent function per argument (defjvps)."""
    return jnp.sin(x) * y


f_jvps.defjvps(
    lambda tx, ans, x, y: jnp.cos(x) * tx * y,
    lambda ty, ans, x, y: jnp.sin(x) * ty,
)


@jax.custom_vjp
def f_vjp(x: Any, y: Any) -> Any:
    """sin(x) * y with a custom_vjp rule."""
    return jnp.sin(x) * y


def _f_fwd(x: Any, y: Any) -> tuple[Any, Any]:
    # Residuals computed from x and y inside fwd, so grad2 differentiates them.
    return f_vjp(x, y), (jnp.cos(x), jnp.sin(x), y)


def _f_bwd(res: tuple[Any, Any, Any], g: Any) -> tuple[Any, Any]:
    cos_x, sin_x, y = res
    return cos_x * g * y, sin_x * g


f_vjp.defvjp(_f_fwd, _f_bwd)


CASE = register(
    make_case(
        "sin_times_y",
        "sin(x) * y",
        ("x", "y"),
        REALS,
        lambda mp, x, y: mp.sin(x) * y,
        [
            Variant("naive", naive, "autodiff of sin(x) * y"),
            Variant("custom_jvp", f_jvp, "defjvp: cos(x) tx y + sin(x) ty"),
            Variant("custom_jvp_defjvps", f_jvps, "defjvps: one tangent function per argument"),
            Variant("custom_vjp", f_vjp, "custom_vjp with residuals (cos x, sin x, y)"),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — TL;DR",
        derivatives={
            ("x", 1): lambda mp, x, y: mp.cos(x) * y,
            ("x", 2): lambda mp, x, y: -mp.sin(x) * y,
            ("y", 1): lambda mp, x, y: mp.sin(x),
            ("y", 2): lambda mp, x, y: mp.mpf(0),
        },
        special_points=((0.0, 1.0), (3.141592653589793, 1.0), (1.5707963267948966, 1.0)),
        notes="Nothing goes wrong naively; the case measures what the rule machinery costs "
        "and checks that all three ways of writing the rule agree. Near multiples of pi the "
        "value is ill-conditioned in x (sin's own rounding, not the rule's).",
    )
)
