"""x / (1 + sqrt(x)): a function that is differentiable at 0 (derivative 1) although
autodiff of its formula gives 0 * inf = NaN there."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast
from rulelab.model.case import NONNEGATIVE, Variant, make_case, register


def naive(x: Any) -> Any:
    """x / (1 + sqrt x) as written; autodiff meets x * sqrt'(x) = 0 * inf at 0."""
    return x / (1.0 + jnp.sqrt(x))


def slope(x: Any) -> Any:
    """(sqrt(x) + 2) / (2 (sqrt(x) + 1)^2), written as u (1 + u) / 2 with
    u = 1 / (1 + sqrt x): 1 at 0, and its own derivative (grad2) never forms
    (sqrt(x) + 1)^4, which overflows float32 for x above about 1e19. sqrt(x) is
    computed once, so reverse mode sums its cotangent (-3/2 at 0) before multiplying
    by sqrt'(0) = inf: grad2 at 0 is the one-sided -inf, not inf - inf = NaN."""
    u = 1.0 / (1.0 + jnp.sqrt(x))
    return 0.5 * u * (1.0 + u)


@jax.custom_jvp
def f_jvp(x: Any) -> Any:
    """x / (1 + sqrt x) with the analytic tangent."""
    return naive(x)


@f_jvp.defjvp
def _f_jvp_rule(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    (x,), (t,) = primals, tangents
    return f_jvp(x), slope(x) * t


@jax.custom_jvp
def f_jvps(x: Any) -> Any:
    """The same rule through ``defjvps``."""
    return naive(x)


f_jvps.defjvps(lambda t, ans, x: slope(x) * t)


CASE = register(
    make_case(
        "x_over_1p_sqrt",
        "x / (1 + sqrt(x))",
        ("x",),
        NONNEGATIVE,
        lambda mp, x: x / (1 + mp.sqrt(x)),
        [
            Variant("naive", naive, "autodiff of x / (1 + sqrt x): NaN at 0"),
            Variant("custom_jvp", f_jvp, "defjvp tangent (sqrt x + 2) / (2 (sqrt x + 1)^2) * t"),
            Variant("custom_jvp_defjvps", f_jvps, "the same tangent through defjvps"),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — "
        "enforcing a differentiation convention",
        derivatives={
            ("x", 1): lambda mp, x: (mp.sqrt(x) + 2) / (2 * (mp.sqrt(x) + 1) ** 2),
            # d/dx of the above: -(sqrt x + 3) / (4 sqrt x (sqrt x + 1)^3); -inf at 0 (the
            # one-sided limit: mpmath would raise ZeroDivisionError, read as undefined).
            ("x", 2): lambda mp, x: mp.ninf if x == 0 else -(mp.sqrt(x) + 3) / (4 * mp.sqrt(x) * (mp.sqrt(x) + 1) ** 3),
        },
        fast_reference={("x", 0): _fast.x_over_1p_sqrt, ("x", 1): _fast.x_over_1p_sqrt_d1, ("x", 2): _fast.x_over_1p_sqrt_d2},
        special_points=(0.0,),
        notes="The derivative at 0 is 1 (one-sided), but autodiff of the formula computes "
        "1/(1 + sqrt x) - x sqrt'(x)/(1 + sqrt x)^2 with 0 * inf = NaN at 0.",
    )
)
