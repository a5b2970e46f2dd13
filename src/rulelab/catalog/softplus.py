"""softplus = log(1 + e^x): the JAX documentation's numerical-stability example.

The naive gradient evaluates e^x / (1 + e^x), which is inf / inf = NaN once e^x
overflows; the published custom rules rewrite the derivative as a sigmoid.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast
from rulelab.model.case import REALS, Variant, make_case, register


def naive(x: Any) -> Any:
    """log(1 + e^x) as written; autodiff differentiates it term by term."""
    return jnp.log(1.0 + jnp.exp(x))


def stable_sigmoid(x: Any) -> Any:
    """1 / (1 + e^-x) through e^-|x| <= 1, so neither branch of the select (nor its
    derivative) overflows and grad2 stays finite and accurate in both tails."""
    z = jnp.exp(jnp.where(x >= 0, -x, x))
    return jnp.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


@jax.custom_vjp
def softplus_vjp(x: Any) -> Any:
    """Naive forward; backward g * sigmoid(x) with JAX's logistic."""
    return naive(x)


def _vjp_fwd(x: Any) -> tuple[Any, Any]:
    return naive(x), x


def _vjp_bwd(x: Any, g: Any) -> tuple[Any]:
    return (g * jax.nn.sigmoid(x),)


softplus_vjp.defvjp(_vjp_fwd, _vjp_bwd)


@jax.custom_jvp
def softplus_jvp(x: Any) -> Any:
    """Naive forward; tangent (1 - 1/(1 + e^x)) * t as published."""
    return naive(x)


@softplus_jvp.defjvp
def _softplus_jvp_rule(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    (x,), (t,) = primals, tangents
    return softplus_jvp(x), (1.0 - 1.0 / (1.0 + jnp.exp(x))) * t


@jax.custom_jvp
def softplus_jvps(x: Any) -> Any:
    """The published rule again, given through ``defjvps``."""
    return naive(x)


softplus_jvps.defjvps(lambda t, ans, x: (1.0 - 1.0 / (1.0 + jnp.exp(x))) * t)


@jax.custom_jvp
def softplus_stable(x: Any) -> Any:
    """max(x, 0) + log1p(e^-|x|): no overflow and no cancellation in either tail."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus_stable.defjvp
def _softplus_stable_rule(primals: tuple[Any], tangents: tuple[Any]) -> tuple[Any, Any]:
    (x,), (t,) = primals, tangents
    return softplus_stable(x), stable_sigmoid(x) * t


def _d2(mp: Any, x: Any) -> Any:
    # sigmoid'(x) = e^-|x| / (1 + e^-|x|)^2: even in x, and free of the cancellation
    # in s * (1 - s) for large |x|.
    z = mp.exp(-abs(x))
    return z / (1 + z) ** 2


CASE = register(
    make_case(
        "softplus",
        "log(1 + exp(x))",
        ("x",),
        REALS,
        lambda mp, x: mp.log1p(mp.exp(x)),
        [
            Variant("naive", naive, "jnp.log(1 + jnp.exp(x)) differentiated by autodiff"),
            Variant(
                "custom_vjp",
                softplus_vjp,
                "naive forward; custom_vjp backward g * jax.nn.sigmoid(x)",
            ),
            Variant(
                "custom_jvp",
                softplus_jvp,
                "naive forward; defjvp tangent (1 - 1/(1 + e^x)) * t as published "
                "(its own derivative, hence grad2, is inf/inf = NaN once e^x overflows)",
            ),
            Variant("custom_jvp_defjvps", softplus_jvps, "the published rule through defjvps"),
            Variant(
                "stable",
                softplus_stable,
                "max(x, 0) + log1p(exp(-|x|)) with a custom_jvp tangent sigmoid(x) * t "
                "computed through e^-|x|",
            ),
            Variant("library", jax.nn.softplus, "jax.nn.softplus"),
        ],
        source="JAX docs: Custom derivative rules for JAX-transformable Python functions — "
        "numerical stability (log1pexp)",
        derivatives={
            ("x", 1): lambda mp, x: 1 / (1 + mp.exp(-x)),
            ("x", 2): _d2,
        },
        fast_reference={("x", 0): _fast.softplus, ("x", 1): _fast.sigmoid, ("x", 2): _fast.sigmoid_d1},
        special_points=(
            # First input whose e^x overflows (measured with XLA on CPU): from here the
            # naive value is inf and the naive gradient (and grad2 of the published
            # custom_jvp rules) NaN.
            88.72283935546875,  # float32
            11.09375,  # float16
            89.0,  # bfloat16 (88.5 is the last finite one)
            709.7827128933841,  # float64
            # Smallest input whose naive value is nonzero: below it 1 + e^x rounds to 1.
            -16.635530471801758,  # float32
            -7.62109375,  # float16
            -5.53125,  # bfloat16
            -36.7368005696771,  # float64
        ),
        notes="Naively, e^x overflows for large x, so the value is inf and the gradient "
        "e^x / (1 + e^x) is inf/inf = NaN; for negative x, 1 + e^x rounds to 1 and the "
        "value loses every digit. The published rules fix only the gradient.",
    )
)
