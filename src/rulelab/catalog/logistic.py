"""The logistic family: sigmoid, log-sigmoid and binary cross-entropy with logits.

All three are ratios and logarithms of 1 + e^-x. Written the obvious way they
overflow (e^-x for very negative x), cancel (1 - sigmoid(x) for large x) or meet
0 * log 0. The custom rules express every derivative through sigmoid(x) and
sigmoid(-x), each computed from e^-|x|, which neither overflows nor cancels.

Thresholds below were measured with JAX 0.10.2 on CPU (XLA rounds 16-bit
arithmetic to the 16-bit type after every operation and flushes float32
subnormals to zero).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast, _highest
from rulelab.catalog._stable import sigmoid as stable_sigmoid
from rulelab.catalog._stable import sigmoid_minus
from rulelab.catalog._stable import softplus as stable_softplus
from rulelab.model.case import REALS, Interval, Variant, make_case, register

Array = Any


def _msig(mp: Any, x: Any) -> Any:
    return 1 / (1 + mp.exp(-x))


# --- sigmoid ---------------------------------------------------------------------------


def naive_sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) under plain autodiff: exp(-x) overflows for very negative x,
    and the backward pass then forms inf / inf."""
    return 1 / (1 + jnp.exp(-x))


def custom_sigmoid(x: Array) -> Array:
    """Sigmoid from e^-|x| with the rule sigmoid(x) * sigmoid(-x)."""
    return stable_sigmoid(x)


register(
    make_case(
        name="sigmoid",
        formula="1 / (1 + exp(-x))",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: _msig(mp, x),
        derivatives={
            ("x", 1): lambda mp, x: _msig(mp, x) * _msig(mp, -x),
            ("x", 2): lambda mp, x: -_msig(mp, x) * _msig(mp, -x) * mp.tanh(x / 2),
        },
        fast_reference={("x", 0): _fast.sigmoid, ("x", 1): _fast.sigmoid_d1, ("x", 2): _fast.sigmoid_d2},
        variants=[
            Variant("naive", naive_sigmoid, "1 / (1 + exp(-x)), plain autodiff"),
            Variant("custom_jvp", custom_sigmoid, "custom_jvp: s(x) * s(-x), each from exp(-|x|)"),
            Variant("library", jax.nn.sigmoid, "jax.nn.sigmoid (lax.logistic; default JVP s * (1 - s))"),
            *_highest.variants("logistic"),
        ],
        source=(
            "jax-ml/jax#40385 and #40342: grad(jax.nn.sigmoid) is exactly 0 for large x, because "
            "lax.logistic's default JVP is s * (1 - s)"
        ),
        notes=(
            "Measured (JAX 0.10.2, CPU): library grad is exactly 0 once sigmoid(x) rounds to 1: "
            "x >= 16.635532 (float32), >= 7.625 (float16), >= 5.5625 (bfloat16); it is more than "
            "4 ulp off from x ~ 1.9 (float32), 2.7 (float16), 3.0 (bfloat16) because 1 - s cancels. "
            "naive grad is NaN once exp(-x) overflows: x <= -88.72284 (float32), <= -11.09375 "
            "(float16), <= -89 (bfloat16). library_highest grad is 2.0611537e-09 at x = 20 (float32); in "
            "float64 at x = 40 the library grad is 0 and library_highest 4.2483543e-18 (jax-ml/jax#40342)."
            + _highest.note("logistic")
        ),
        special_points=(
            16.635532, 7.625, 5.5625,  # library grad becomes exactly 0 (f32, f16, bf16)
            40.0,  # float64: library grad 0, library_highest 4.25e-18 (#40342)
            -88.72284, -11.09375, -89.0,  # naive grad becomes NaN (f32, f16, bf16)
            0.0, 2.0, 20.0, -20.0,
        ),
    )
)


# --- log_sigmoid -----------------------------------------------------------------------


def naive_log_sigmoid(x: Array) -> Array:
    """-log(1 + exp(-x)) under plain autodiff: -inf for very negative x, NaN gradient."""
    return -jnp.log(1 + jnp.exp(-x))


def custom_log_sigmoid(x: Array) -> Array:
    """-softplus(-x) with the rule sigmoid(-x); its own derivative -s(x) s(-x) is again
    a custom rule, so grad2 is safe."""
    return -stable_softplus(-x)


register(
    make_case(
        name="log_sigmoid",
        formula="-log(1 + exp(-x))",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: -mp.log1p(mp.exp(-x)),
        derivatives={
            ("x", 1): lambda mp, x: _msig(mp, -x),
            ("x", 2): lambda mp, x: -_msig(mp, x) * _msig(mp, -x),
        },
        fast_reference={("x", 0): _fast.log_sigmoid, ("x", 1): _fast.sigmoid_of_minus, ("x", 2): _fast.neg_sigmoid_d1},
        variants=[
            Variant("naive", naive_log_sigmoid, "-log(1 + exp(-x)), plain autodiff"),
            Variant("custom_jvp", custom_log_sigmoid, "custom_jvp: -softplus(-x), rule sigmoid(-x)"),
            Variant("library", jax.nn.log_sigmoid, "jax.nn.log_sigmoid (-logaddexp(-x, 0))"),
        ],
        source=(
            "jax-ml/jax#2140 (log_sigmoid gradient) and #40383 (second derivative of "
            "jax.nn.log_sigmoid is 0 for very negative x)"
        ),
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value is -inf and grad NaN once exp(-x) overflows: "
            "x <= -88.72284 (float32), <= -11.09375 (float16), <= -89 (bfloat16); naive value is "
            "exactly 0 once 1 + e^-x rounds to 1: x >= 16.635532 (float32), >= 7.625 (float16), "
            ">= 5.5625 (bfloat16). library grad2 is exactly 0 for x <= -14.556091 (float32), "
            "<= -6.2382812 (float16), <= -4.15625 (bfloat16): logaddexp's rule exp(x1 - out) "
            "differentiates to a difference that cancels."
        ),
        special_points=(
            -88.72284, -11.09375, -89.0,  # naive -inf / NaN (f32, f16, bf16)
            16.635532, 7.625, 5.5625,  # naive value exactly 0 (f32, f16, bf16)
            -14.556091, -6.2382812, -4.15625,  # library grad2 exactly 0 (f32, f16, bf16)
            0.0,
        ),
    )
)


# --- binary cross-entropy with logits ---------------------------------------------------


def naive_bce(z: Array, y: Array) -> Array:
    """-(y log s + (1 - y) log(1 - s)) with s = 1 / (1 + exp(-z)): log 0 and 0 * log 0
    once s rounds to 0 or 1."""
    s = 1 / (1 + jnp.exp(-z))
    return -(y * jnp.log(s) + (1 - y) * jnp.log(1 - s))


def library_bce(z: Array, y: Array) -> Array:
    """The loss from jax.nn.log_sigmoid (what optax's sigmoid_binary_cross_entropy does)."""
    return -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))


@jax.custom_jvp
def custom_bce(z: Array, y: Array) -> Array:
    """y softplus(-z) + (1 - y) softplus(z): two non-negative terms, no cancellation.
    Rule: d/dz = (1 - y) s(z) - y s(-z), d/dy = -z (exactly)."""
    return y * stable_softplus(-z) + (1 - y) * stable_softplus(z)


@custom_bce.defjvp
def _custom_bce_jvp(primals: tuple, tangents: tuple) -> tuple:
    (z, y), (tz, ty) = primals, tangents
    dz = sigmoid_minus(z, jnp.zeros_like(z), y)  # (1 - y) s(z) - y s(-z) without cancellation
    return custom_bce(z, y), tz * dz - ty * z


register(
    make_case(
        name="bce_with_logits",
        formula="-(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z)))",
        args=("z", "y"),
        domain=(REALS, Interval(0.0, 1.0)),
        reference=lambda mp, z, y: y * mp.log1p(mp.exp(-z)) + (1 - y) * mp.log1p(mp.exp(z)),
        derivatives={
            ("z", 1): lambda mp, z, y: (1 - y) * _msig(mp, z) - y * _msig(mp, -z),
            ("z", 2): lambda mp, z, y: _msig(mp, z) * _msig(mp, -z),
            ("y", 1): lambda mp, z, y: -z,
            ("y", 2): lambda mp, z, y: mp.mpf(0),
        },
        variants=[
            Variant("naive", naive_bce, "-(y log s + (1-y) log(1-s)), s = 1/(1+exp(-z)), plain autodiff"),
            Variant("custom_jvp", custom_bce, "custom_jvp: y softplus(-z) + (1-y) softplus(z)"),
            Variant("library", library_bce, "-(y log_sigmoid(z) + (1-y) log_sigmoid(-z)) with jax.nn.log_sigmoid"),
        ],
        source="optax.sigmoid_binary_cross_entropy; TensorFlow sigmoid_cross_entropy_with_logits",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value and z-gradient are NaN with y = 1 (0 * log 0) "
            "once 1 - s rounds to 0: z >= 16.635532 (float32), >= 7.625 (float16), >= 5.5625 "
            "(bfloat16); with y = 0 the value is NaN or inf once s is 0: z <= -87.33655 (float32, "
            "s flushed), <= -11.09375 (float16), <= -87.5 (bfloat16). The library form is finite. "
            "Near the minimum z = logit(y) the z-derivative crosses 0 and every variant loses "
            "relative accuracy there (the custom rule is exact at the zero for y = 1/2)."
        ),
        special_points=(
            (16.635532, 1.0), (7.625, 1.0), (5.5625, 1.0),
            (-87.33655, 0.0), (-11.09375, 0.0), (-87.5, 0.0),
            (30.0, 1.0), (-30.0, 0.0), (0.0, 0.5), (30.0, 0.5),
        ),
    )
)
