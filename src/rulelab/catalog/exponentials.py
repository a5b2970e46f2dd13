"""tanh, expm1 and elu: derivatives JAX writes from a value that has already rounded.

JAX's default JVP of ``tanh`` is 1 - tanh(x)^2, and that of ``expm1`` is expm1(x) + 1
(``jax.nn.elu`` inherits it): once tanh(x) rounds to 1, or expm1(x) to -1, the
derivative is exactly 0 while the true one is e^-2|x| or e^x, a normal number for
another 80 binades of float32. The custom rules compute the derivative from e^-2|x| or
e^x itself. ``lax.tanh`` and ``lax.expm1`` called with ``accuracy=HIGHEST`` switch to
such rules: the ``library_highest`` variants measure JAX's own mode beside them.

Thresholds were measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rulelab.catalog import _fast, _highest
from rulelab.model.case import REALS, Convention, Variant, make_case, register

Array = Any

# --- tanh ------------------------------------------------------------------------------


def naive_tanh(x: Array) -> Array:
    """(e^2x - 1) / (e^2x + 1), plain autodiff: inf / inf = NaN once e^2x overflows."""
    e = jnp.exp(2 * x)
    return (e - 1) / (e + 1)


def _sech(x: Array) -> Array:
    """sech(x) = 2 e^-|x| / (1 + e^-2|x|): neither overflows nor cancels."""
    e = jnp.exp(-jnp.abs(x))
    return 2 * e / (1 + e * e)


@jax.custom_jvp
def _sech2(x: Array) -> Array:
    """sech(x)^2 as sech(x) * sech(x): e^-|x| stays normal while the result does
    (e^-2|x| would be subnormal, and flushed, first). Its own rule
    (-2 tanh(x) sech(x)) sech(x), in that order, keeps the second derivative accurate
    down to where it is subnormal itself."""
    s = _sech(x)
    return s * s


_sech2.defjvps(lambda t, ans, x: t * ((-2 * jnp.tanh(x) * _sech(x)) * _sech(x)))


@jax.custom_jvp
def custom_tanh(x: Array) -> Array:
    """jnp.tanh with the rule sech(x)^2 from e^-|x| (not 1 - tanh^2)."""
    return jnp.tanh(x)


custom_tanh.defjvps(lambda t, ans, x: t * _sech2(x))


register(
    make_case(
        name="tanh",
        formula="tanh(x)",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: mp.tanh(x),
        derivatives={
            ("x", 1): lambda mp, x: mp.sech(x) ** 2,
            ("x", 2): lambda mp, x: -2 * mp.tanh(x) * mp.sech(x) ** 2,
        },
        fast_reference={("x", 0): np.tanh, ("x", 1): _fast.tanh_d1, ("x", 2): _fast.tanh_d2},
        variants=[
            Variant("naive", naive_tanh, "(e^2x - 1) / (e^2x + 1), plain autodiff"),
            Variant("custom_jvp", custom_tanh, "custom_jvp: jnp.tanh, rule sech^2 from e^-|x|, itself with the rule -2 tanh sech^2"),
            Variant("library", jnp.tanh, "jnp.tanh (lax.tanh; default JVP 1 - tanh^2)"),
            *_highest.variants("tanh"),
        ],
        source="the tanh JVP 1 - tanh(x)^2 (jax/_src/lax/lax.py); lax.AccuracyMode (jax 0.6 and later)",
        notes=(
            "Measured (JAX 0.10.2, CPU): library grad is exactly 0 for |x| >= 7.9988117 (float32; XLA's tanh "
            "returns 1 there), >= 4.5078125 (float16), >= 3.46875 (bfloat16); the true derivative at x = 10 is "
            "8.2446e-09 and at 20 1.6993e-17. library_highest grad is 8.244615e-09 at 10 and 1.6993417e-17 at "
            "20 (float32), but exactly 0 again for x >= 43.668274 (float32), >= 5.546875 (float16), >= 43.75 "
            "(bfloat16), where its e^-2|x| is subnormal and flushed while sech(x)^2 is still normal (float32). "
            "naive value and grad are NaN for x >= 44.36142 (float32), >= 5.546875 (float16), >= 44.5 "
            "(bfloat16), where e^2x overflows." + _highest.note("tanh")
        ),
        special_points=(
            7.9988117, 4.5078125, 3.46875, -7.9988117,  # library grad becomes 0 (f32, f16, bf16)
            43.668274, 43.75,  # library_highest grad becomes 0 (f32, bf16)
            44.36142, 5.546875, 44.5,  # naive NaN (f32, f16, bf16)
            10.0, 20.0, 0.0, 1e-4,
        ),
    )
)


# --- expm1 -----------------------------------------------------------------------------


def naive_expm1(x: Array) -> Array:
    """e^x - 1: the subtraction cancels for small |x|."""
    return jnp.exp(x) - 1


@jax.custom_jvp
def custom_expm1(x: Array) -> Array:
    """jnp.expm1 with the rule e^x (not expm1(x) + 1)."""
    return jnp.expm1(x)


custom_expm1.defjvps(lambda t, ans, x: t * jnp.exp(x))


register(
    make_case(
        name="expm1",
        formula="exp(x) - 1",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: mp.expm1(x),
        derivatives={("x", 1): lambda mp, x: mp.exp(x), ("x", 2): lambda mp, x: mp.exp(x)},
        fast_reference={("x", 0): np.expm1, ("x", 1): np.exp, ("x", 2): np.exp},
        variants=[
            Variant("naive", naive_expm1, "exp(x) - 1, plain autodiff"),
            Variant("custom_jvp", custom_expm1, "custom_jvp: jnp.expm1, rule e^x"),
            Variant("library", jnp.expm1, "jnp.expm1 (lax.expm1; default JVP expm1(x) + 1)"),
            *_highest.variants("expm1"),
        ],
        source="jax-ml/jax#39794: the gradient of expm1 is computed as expm1(x) + 1 and cancels to 0",
        notes=(
            "Measured (JAX 0.10.2, CPU): library grad is exactly 0 for x <= -17.32868 (float32), <= -8.3203125 "
            "(float16), <= -6.25 (bfloat16), once expm1(x) rounds to -1; the true derivative at -20 is "
            "2.0611536e-09, and library_highest gives 2.0611537e-09 there (float32). naive value loses the "
            "digits of small |x| to the subtraction: at x = 1e-4 it is 1.00016594e-04, more than 1024 ulp "
            "from 1.00005e-04 (float32)." + _highest.note("expm1")
        ),
        special_points=(-17.32868, -8.3203125, -6.25, -20.0, 1e-4, -1e-4, 0.0, 88.0),
    )
)


# --- elu -------------------------------------------------------------------------------


def naive_elu(x: Array) -> Array:
    """x for x > 0, else e^x - 1: the subtraction cancels for small negative x."""
    return jnp.where(x > 0, x, jnp.exp(x) - 1)


@jax.custom_jvp
def custom_elu(x: Array) -> Array:
    """x for x > 0, else expm1(x) (of the negative part alone, so the unselected branch
    never overflows); rule 1 for x > 0, else e^x."""
    return jnp.where(x > 0, x, jnp.expm1(_negative_part(x)))


def _negative_part(x: Array) -> Array:
    """x where x <= 0, else 0 (a where, not a minimum: min's derivative at 0 is 1/2)."""
    return jnp.where(x > 0, 0, x)


custom_elu.defjvps(lambda t, ans, x: t * jnp.where(x > 0, 1.0, jnp.exp(_negative_part(x))).astype(x.dtype))


def _highest_elu(expm1: Any) -> Any:
    def elu(x: Array) -> Array:
        return jnp.where(x > 0, x, expm1(_negative_part(x)))

    return elu


register(
    make_case(
        name="elu",
        formula="x if x > 0 else exp(x) - 1",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: x if x > 0 else mp.expm1(x),
        derivatives={
            ("x", 1): lambda mp, x: mp.mpf(1) if x > 0 else mp.exp(x),
            ("x", 2): lambda mp, x: mp.mpf(0) if x > 0 else mp.exp(x),
        },
        fast_reference={("x", 0): _fast.elu, ("x", 1): _fast.elu_d1, ("x", 2): _fast.elu_d2},
        conventions=[
            Convention("x", 2, lambda x: x == 0, 1.0,
                       "elu'' jumps from 1 to 0 at x = 0; the x <= 0 branch (e^x = 1) is taken there, as jax.nn.elu does"),
        ],
        variants=[
            Variant("naive", naive_elu, "where(x > 0, x, exp(x) - 1), plain autodiff"),
            Variant("custom_jvp", custom_elu, "custom_jvp: where(x > 0, x, expm1(x)), rule where(x > 0, 1, e^x)"),
            Variant("library", jax.nn.elu, "jax.nn.elu (expm1 of the negative part; its default JVP expm1(x) + 1)"),
            *_highest.variants("expm1", _highest_elu, "where(x > 0, x, lax.expm1(x, accuracy=HIGHEST))"),
        ],
        source="jax-ml/jax#39795 (jax.nn.elu and selu inherit expm1's gradient, #39796; PR #40820)",
        notes=(
            "Measured (JAX 0.10.2, CPU): library grad is exactly 0 for x <= -17.32868 (float32), <= -8.3203125 "
            "(float16), <= -6.25 (bfloat16), as for expm1; library_highest and the custom rule give e^x there. "
            "naive grad is NaN for x >= 88.72284 (float32), >= 11.09375 (float16), >= 89 (bfloat16), where the "
            "unselected e^x overflows and where's derivative forms 0 * inf; naive value loses the digits of "
            "small negative x to e^x - 1." + _highest.note("expm1")
        ),
        special_points=(-17.32868, -8.3203125, -6.25, 88.72284, 11.09375, 89.0, -20.0, -1e-4, 0.0, 1.0),
    )
)
