"""An example of studying your own rule: log(cosh x), whose naive form overflows.

Sweep it with the catalog's machinery, no edit to rulelab needed:

    rulelab sweep quick --module examples/logcosh.py --cases logcosh
    rulelab report
"""

import math

import jax
import jax.numpy as jnp

import rulelab


def naive(x):
    return jnp.log(jnp.cosh(x))  # cosh overflows for |x| > ~89 in float32: value inf, grad NaN


@jax.custom_jvp
def stable(x):
    a = jnp.abs(x)
    return a + jnp.log1p(jnp.exp(-2.0 * a)) - math.log(2.0)


@stable.defjvp
def _stable_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return stable(x), jnp.tanh(x) * t  # d/dx log cosh x = tanh x, bounded everywhere


rulelab.register(
    rulelab.make_case(
        name="logcosh",
        formula="log(cosh x)",
        args=("x",),
        domain=rulelab.REALS,
        reference=lambda mp, x: mp.log(mp.cosh(x)),
        derivatives={("x", 1): lambda mp, x: mp.tanh(x), ("x", 2): lambda mp, x: 1 / mp.cosh(x) ** 2},
        variants=[rulelab.Variant("naive", naive), rulelab.Variant("custom_jvp", stable)],
        source="example module shipped with rulelab",
        special_points=[89.4159851],
        notes="cosh overflows past x ~ 89.4 in float32, so the naive value is inf and its gradient NaN.",
    ),
    replace=True,
)
