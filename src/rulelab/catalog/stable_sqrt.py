"""sqrt with the convention sqrt'(0) := 0: a custom_jvp that enforces a derivative
value where the mathematical one is infinite, and a published version whose forward
pass is wrong at 0.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast
from rulelab.model.case import NONNEGATIVE, Convention, Variant, make_case, register


def naive(x: Any) -> Any:
    """jnp.sqrt; its derivative at 0 is +inf (grad2 -inf)."""
    return jnp.sqrt(x)


def _slope(x: Any) -> Any:
    """1 / (2 sqrt x), and 0 at x = 0. The inner select keeps the unselected branch
    finite so that its own derivative (grad2) is 0, not NaN, at 0."""
    zero = x == 0
    safe = jnp.where(zero, 1.0, x)
    return jnp.where(zero, 0.0, 0.5 / jnp.sqrt(safe))


@jax.custom_jvp
def stable_sqrt(x: Any) -> Any:
    """sqrt(x), with sqrt'(0) := 0 and sqrt''(0) := 0."""
    return jnp.sqrt(x)


@stable_sqrt.defjvp
def _stable_sqrt_jvp(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    (x,), (t,) = primals, tangents
    return stable_sqrt(x), _slope(x) * t


@jax.custom_jvp
def published_sqrt(x: Any) -> Any:
    """The published version: it substitutes 1 for x == 0 before the sqrt in the
    forward pass too, so its value at 0 is 1 (a bug this case keeps on purpose)."""
    return jnp.sqrt(jnp.where(x == 0, 1.0, x))


@published_sqrt.defjvp
def _published_sqrt_jvp(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    (x,), (t,) = primals, tangents
    return published_sqrt(x), _slope(x) * t


CASE = register(
    make_case(
        "stable_sqrt",
        "sqrt(x), with sqrt'(0) := 0",
        ("x",),
        NONNEGATIVE,
        lambda mp, x: mp.sqrt(x),
        [
            Variant("naive", naive, "jnp.sqrt differentiated by autodiff (inf at 0)"),
            Variant(
                "custom_jvp",
                stable_sqrt,
                "custom_jvp: tangent 0 at x = 0 (double where), 1/(2 sqrt x) elsewhere; "
                "value sqrt(x) everywhere",
            ),
            Variant(
                "custom_jvp_as_published",
                published_sqrt,
                "the published stable_sqrt: the same tangent, but its forward replaces "
                "x == 0 by 1 before the sqrt, so its VALUE at 0 is 1 instead of 0 (kept "
                "as published so that the value sweep exposes it)",
            ),
        ],
        source="Advanced JAX course (apxml.com), 'Custom JVP rules': stable_sqrt example",
        derivatives={
            ("x", 1): lambda mp, x: 1 / (2 * mp.sqrt(x)),
            ("x", 2): lambda mp, x: -1 / (4 * x * mp.sqrt(x)),
        },
        fast_reference={("x", 0): _fast.sqrt, ("x", 1): _fast.sqrt_d1, ("x", 2): _fast.sqrt_d2},
        conventions=(
            Convention(
                arg="x",
                order=1,
                where=lambda x: x == 0,
                value=0.0,
                note="sqrt'(0) := 0 (the one-sided derivative is +inf)",
            ),
            Convention(
                arg="x",
                order=2,
                where=lambda x: x == 0,
                value=0.0,
                note="sqrt''(0) := 0, the derivative of the rule's tangent 0 at 0 "
                "(the one-sided second derivative is -inf)",
            ),
        ),
        special_points=(0.0,),
        notes="Naively the derivative at 0 is inf (grad2 -inf), and inf times a zero "
        "cotangent downstream turns into NaN. A rule that guards the forward pass with the "
        "same select as the derivative also changes the value at 0.",
    )
)
