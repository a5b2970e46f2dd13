"""Log-domain sums: logaddexp, a three-term logsumexp, a masked two-class
cross-entropy and log1mexp.

Log-domain code meets -inf on purpose (log 0 marks a masked entry), so these cases
admit -inf as an input where it is meaningful. Where every entry is -inf the
gradient is a convention: the custom rules return the softmax of equal entries
(1/n each, and 1/n * (1 - 1/n) for the second derivative), the limit along the
diagonal, which keeps the identity sum_i d/dx_i = 1 that holds everywhere else.

Thresholds were measured with JAX 0.10.2 on CPU (16-bit arithmetic rounded after
every operation; float32 subnormals flushed to zero).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog import _fast
from rulelab.catalog._stable import (
    is_zero,
    logsumexp,
    sigmoid_minus,
    softplus_of_sum,
    two_diff,
)
from rulelab.model.case import Convention, Interval, Variant, make_case, register

Array = Any

# Reals together with -inf (log 0); +inf stays outside.
LOG_DOMAIN = Interval(-math.inf, math.inf, lo_closed=True, hi_closed=False)


def _all_neg_inf(*args: float) -> bool:
    return all(a == -math.inf for a in args)


def _mlse(mp: Any, *v: Any) -> Any:
    return mp.log(mp.fsum(mp.exp(a) for a in v))


def _msoft(mp: Any, i: int, *v: Any) -> Any:
    """exp(v_i - lse(v)); NaN (undefined) where every entry is -inf."""
    if all(a == mp.ninf for a in v):
        raise ValueError("every entry is -inf")
    return mp.exp(v[i] - _mlse(mp, *v))


def _msoft2(mp: Any, i: int, *v: Any) -> Any:
    p = _msoft(mp, i, *v)
    others = mp.fsum(_msoft(mp, j, *v) for j in range(len(v)) if j != i)
    return p * others


def _uniform_conventions(args: tuple[str, ...]) -> list[Convention]:
    n = len(args)
    out = []
    for a in args:
        out.append(Convention(a, 1, _all_neg_inf, 1.0 / n, f"every entry -inf: d/d{a} = 1/{n} (diagonal limit)"))
        out.append(
            Convention(a, 2, _all_neg_inf, (n - 1) / n**2, f"every entry -inf: d2/d{a}2 = {n - 1}/{n * n} (diagonal limit)")
        )
    return out


# --- logaddexp -------------------------------------------------------------------------


def naive_logaddexp(x: Array, y: Array) -> Array:
    """log(exp(x) + exp(y)): overflows, and its gradient is inf / inf."""
    return jnp.log(jnp.exp(x) + jnp.exp(y))


def custom_logaddexp(x: Array, y: Array) -> Array:
    """max + log1p(exp(-|x - y|)) with the rounding of x - y compensated; rule: the
    two-entry softmax, (1/2, 1/2) at (-inf, -inf)."""
    return logsumexp(jnp.stack([x, y]))


register(
    make_case(
        name="logaddexp",
        formula="log(exp(x) + exp(y))",
        args=("x", "y"),
        domain=LOG_DOMAIN,
        reference=lambda mp, x, y: _mlse(mp, x, y),
        derivatives={
            ("x", 1): lambda mp, x, y: _msoft(mp, 0, x, y),
            ("x", 2): lambda mp, x, y: _msoft2(mp, 0, x, y),
            ("y", 1): lambda mp, x, y: _msoft(mp, 1, x, y),
            ("y", 2): lambda mp, x, y: _msoft2(mp, 1, x, y),
        },
        conventions=_uniform_conventions(("x", "y")),
        fast_reference={("x", 0): _fast.logaddexp, ("x", 1): _fast.logaddexp_dx, ("y", 1): _fast.logaddexp_dy,
                        ("x", 2): _fast.logaddexp_d2, ("y", 2): _fast.logaddexp_d2},
        variants=[
            Variant("naive", naive_logaddexp, "log(exp(x) + exp(y)), plain autodiff"),
            Variant("custom_jvp", custom_logaddexp, "custom_jvp: shifted log1p form, softmax rule with -inf handling"),
            Variant("library", jnp.logaddexp, "jax.numpy.logaddexp (custom_jvp exp(x - out))"),
        ],
        source="jax-ml/jax#1624 (logaddexp/logsumexp and -inf); jax-ml/jax#6811 (NaN gradients at all -inf)",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value is inf on the diagonal x = y >= 88.029694 "
            "(float32), >= 10.398438 (float16), >= 88.5 (bfloat16), and its grad NaN once one exp "
            "overflows (x >= 88.72284, 11.09375, 89 with y = 0); value -inf and grad NaN once both "
            "exps vanish: x = y <= -87.33655 (float32, flushed), <= -17.34375 (float16), <= -87.5 "
            "(bfloat16). library grad is NaN at (-inf, -inf). library grad on the diagonal is "
            "exp(x - fl(x + log 2)), not 1/2, once |x| >= 2^22 (float32): exactly 1.0 for "
            "x = y >= 16777216 (float32), >= 2048 (float16), >= 256 (bfloat16) and e.g. 0.368 at "
            "-2^24. Convention at (-inf, -inf): d/dx = d/dy = 1/2, second derivatives 1/4."
        ),
        special_points=(
            (-math.inf, -math.inf), (-math.inf, 0.0), (0.0, -math.inf), (0.0, 0.0),
            (88.029694, 88.029694), (10.398438, 10.398438), (88.5, 88.5),
            (-87.33655, -87.33655), (-17.34375, -17.34375), (-87.5, -87.5),
            (16777216.0, 16777216.0), (2048.0, 2048.0), (256.0, 256.0), (0.7, -80.3),
        ),
    )
)


# --- logsumexp3 ------------------------------------------------------------------------


def naive_logsumexp3(x: Array, y: Array, z: Array) -> Array:
    """log(exp(x) + exp(y) + exp(z)), plain autodiff."""
    return jnp.log(jnp.exp(x) + jnp.exp(y) + jnp.exp(z))


def custom_logsumexp3(x: Array, y: Array, z: Array) -> Array:
    """Shifted, compensated log-sum-exp with a softmax rule; 1/3 each where all are -inf."""
    return logsumexp(jnp.stack([x, y, z]))


def library_logsumexp3(x: Array, y: Array, z: Array) -> Array:
    """jax.nn.logsumexp of the three entries."""
    return jax.nn.logsumexp(jnp.stack([x, y, z]))


register(
    make_case(
        name="logsumexp3",
        formula="log(exp(x) + exp(y) + exp(z))",
        args=("x", "y", "z"),
        domain=LOG_DOMAIN,
        reference=lambda mp, x, y, z: _mlse(mp, x, y, z),
        derivatives={
            **{(a, 1): (lambda i: lambda mp, x, y, z: _msoft(mp, i, x, y, z))(i) for i, a in enumerate("xyz")},
            **{(a, 2): (lambda i: lambda mp, x, y, z: _msoft2(mp, i, x, y, z))(i) for i, a in enumerate("xyz")},
        },
        conventions=_uniform_conventions(("x", "y", "z")),
        variants=[
            Variant("naive", naive_logsumexp3, "log(sum(exp)), plain autodiff"),
            Variant("custom_jvp", custom_logsumexp3, "custom_jvp: shifted log1p form; softmax rule, 1/3 at all -inf"),
            Variant("library", library_logsumexp3, "jax.nn.logsumexp of the stacked entries"),
        ],
        source="jax-ml/jax#6811: gradients of logsumexp are NaN when every entry is -inf (masked rows)",
        notes=(
            "Measured (JAX 0.10.2, CPU): library value at (-inf, -inf, -inf) is -inf (right) but "
            "grad, jvp and grad2 are NaN in every dtype; with one finite entry they are finite. "
            "library value loses the tail: log(1 + e^y + e^z) is formed with log, not log1p, so "
            "(0, -20, -20) gives exactly 0 (true 4.1e-9); its grad2 p(1 - p) cancels. naive "
            "overflows like logaddexp (max >= 88.72284 float32, >= 11.09375 float16, >= 89 "
            "bfloat16) and is NaN at all -inf. Convention at all -inf: d/dx_i = 1/3, d2 = 2/9."
        ),
        special_points=(
            (-math.inf, -math.inf, -math.inf),
            (-math.inf, -math.inf, 0.0),
            (-math.inf, 0.0, 0.0),
            (0.0, 0.0, 0.0),
            (88.72284, 0.0, 0.0), (11.09375, 0.0, 0.0), (89.0, 0.0, 0.0),
            (0.0, -20.0, -20.0),
        ),
    )
)


# --- masked two-class softmax cross-entropy ---------------------------------------------


def naive_softmax_xent(a: Array, b: Array, w: Array) -> Array:
    """-(w log p_a + (1 - w) log p_b) with p = jax.nn.softmax([a, b]): log 0 once a
    probability underflows, and 0 * (-inf) at a masked class."""
    p = jax.nn.softmax(jnp.stack([a, b]))
    return -(w * jnp.log(p[0]) + (1 - w) * jnp.log(p[1]))


def library_softmax_xent(a: Array, b: Array, w: Array) -> Array:
    """-(w ls_a + (1 - w) ls_b) with ls = jax.nn.log_softmax([a, b]) (optax's
    softmax_cross_entropy formula)."""
    ls = jax.nn.log_softmax(jnp.stack([a, b]))
    return -(w * ls[0] + (1 - w) * ls[1])


@jax.custom_jvp
def custom_softmax_xent(a: Array, b: Array, w: Array) -> Array:
    """w softplus(b - a) + (1 - w) softplus(a - b), a term with zero weight being 0
    even where its softplus is inf (a masked class); the rounding of a - b is
    compensated so the tail e^(b - a) keeps its relative accuracy."""
    d, e = two_diff(a, b)
    # a - b overflows only when the loss is w (b - a) or (1 - w) (a - b): form it as
    # a difference of products, which overflows only if the loss does
    gap = jnp.isinf(d) & jnp.isfinite(a) & jnp.isfinite(b)
    first = jnp.where(gap & (d < 0), w * b - w * a, w * softplus_of_sum(-d, -e))
    second = jnp.where(gap & (d > 0), (1 - w) * a - (1 - w) * b, (1 - w) * softplus_of_sum(d, e))
    return jnp.where(w == 0, 0, first) + jnp.where(w == 1, 0, second)


def _xent_jvp(primals: tuple, tangents: tuple) -> tuple:
    # symbolic zeros: the w-partial b - a is -inf at a masked class, and a zero
    # w-tangent must not turn it into NaN when only a or b is differentiated.
    (a, b, w), (ta, tb, tw) = primals, tangents
    d, e = two_diff(a, b)
    g = sigmoid_minus(d, e, w)  # (1 - w) s(a - b) - w s(b - a)
    out = jnp.zeros_like(d)
    if not is_zero(ta):
        out = out + ta * g
    if not is_zero(tb):
        out = out - tb * g
    if not is_zero(tw):
        out = out - tw * d
    return custom_softmax_xent(a, b, w), out


custom_softmax_xent.defjvp(_xent_jvp, symbolic_zeros=True)


def _mxent(mp: Any, a: Any, b: Any, w: Any) -> Any:
    if a == mp.ninf and b == mp.ninf:
        raise ValueError("both classes masked")
    first = 0 if w == 0 else w * mp.log1p(mp.exp(b - a))
    second = 0 if w == 1 else (1 - w) * mp.log1p(mp.exp(a - b))
    return first + second


def _mxent_da(mp: Any, a: Any, b: Any, w: Any) -> Any:
    if a == mp.ninf and b == mp.ninf:
        raise ValueError("both classes masked")
    return (1 - w) / (1 + mp.exp(b - a)) - w / (1 + mp.exp(a - b))


def _mxent_d2(mp: Any, a: Any, b: Any, w: Any) -> Any:
    if a == mp.ninf and b == mp.ninf:
        raise ValueError("both classes masked")
    return 1 / ((1 + mp.exp(b - a)) * (1 + mp.exp(a - b)))


register(
    make_case(
        name="softmax_xent",
        formula="-(w log softmax(a, b)_0 + (1 - w) log softmax(a, b)_1)",
        args=("a", "b", "w"),
        domain=(LOG_DOMAIN, LOG_DOMAIN, Interval(0.0, 1.0)),
        reference=_mxent,
        derivatives={
            ("a", 1): _mxent_da,
            ("a", 2): _mxent_d2,
            ("b", 1): lambda mp, a, b, w: -_mxent_da(mp, a, b, w),
            ("b", 2): _mxent_d2,
            ("w", 1): lambda mp, a, b, w: b - a,
            ("w", 2): lambda mp, a, b, w: mp.mpf(0),
        },
        variants=[
            Variant("naive", naive_softmax_xent, "log of jax.nn.softmax, plain autodiff"),
            Variant("custom_jvp", custom_softmax_xent,
                    "custom_jvp (symbolic zeros): weighted softplus of the logit gap, 0-weight terms dropped"),
            Variant("library", library_softmax_xent, "jax.nn.log_softmax weighted by the labels (optax formula)"),
        ],
        source="optax.softmax_cross_entropy with masked logits (-inf); jax-ml/jax#23842 (masked logsumexp NaN)",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive and library values are NaN at a masked class with "
            "weight 0, (a, -inf, w = 1): 0 * (-inf); naive gradients are NaN there too (the "
            "library's are finite). naive is NaN (w = 1) or inf (w < 1) once p_b underflows: "
            "a - b >= 87.33655 (float32, flushed), >= 17.34375 (float16), >= 87.5 (bfloat16). "
            "Near the minimum a - b = logit(w) the logit-derivative crosses 0 and relative accuracy "
            "is lost by every variant. Forward mode with an explicit zero w-tangent at a masked "
            "class is NaN for any custom_jvp (the w-partial is -inf)."
        ),
        special_points=(
            (0.0, -math.inf, 1.0), (5.0, -math.inf, 1.0), (-math.inf, 0.0, 0.0),
            (0.0, -87.33655, 1.0), (0.0, -17.34375, 1.0), (0.0, -87.5, 1.0),
            (0.0, -20.0, 1.0), (3.0, -90.0, 0.25), (0.0, 0.0, 0.5),
        ),
    )
)


# --- log1mexp --------------------------------------------------------------------------


def naive_log1mexp(x: Array) -> Array:
    """log(1 - exp(-x)): cancels for small x (-inf once exp(-x) rounds to 1)."""
    return jnp.log(1 - jnp.exp(-x))


@jax.custom_jvp
def _inv_expm1(x: Array) -> Array:
    """1 / expm1(x) = e^-x / (1 - e^-x), without overflow for large x; rule -g(1 + g)."""
    return jnp.exp(-x) / -jnp.expm1(-x)


@_inv_expm1.defjvp
def _inv_expm1_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    g = _inv_expm1(x)
    return g, t * (-g * (1 + g))


@jax.custom_jvp
def custom_log1mexp(x: Array) -> Array:
    """Maechler's two-branch log1mexp with the rule 1 / expm1(x) (a custom function
    itself, so grad2 neither overflows nor forms inf / inf)."""
    return jnp.where(x < math.log(2), jnp.log(-jnp.expm1(-x)), jnp.log1p(-jnp.exp(-x)))


@custom_log1mexp.defjvp
def _custom_log1mexp_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return custom_log1mexp(x), t * _inv_expm1(x)


register(
    make_case(
        name="log1mexp",
        formula="log(1 - exp(-x))",
        args=("x",),
        domain=Interval(0.0, math.inf, lo_closed=False),
        reference=lambda mp, x: mp.log(-mp.expm1(-x)),
        derivatives={
            ("x", 1): lambda mp, x: 1 / mp.expm1(x),
            ("x", 2): lambda mp, x: -mp.exp(x) / mp.expm1(x) ** 2,
        },
        fast_reference={("x", 0): _fast.log1mexp, ("x", 1): _fast.log1mexp_d1, ("x", 2): _fast.log1mexp_d2},
        variants=[
            Variant("naive", naive_log1mexp, "log(1 - exp(-x)), plain autodiff"),
            Variant("custom_jvp", custom_log1mexp, "custom_jvp: two-branch value, rule 1/expm1(x) with its own rule"),
            Variant("library", jax.nn.log1mexp, "jax.nn.log1mexp (rule g / expm1(x))"),
        ],
        source="jax.nn.log1mexp (jax-ml/jax#30811); Maechler, Accurately computing log(1 - exp(-|a|))",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value is -inf (grad inf) once exp(-x) rounds to 1: "
            "x <= 2.9802322e-08 (float32), <= 0.00024414062 (float16), <= 0.001953125 (bfloat16), "
            "and cancels well above that; it is exactly 0 once 1 - e^-x rounds to 1: x >= 17.32868 "
            "(float32), >= 8.3203125 (float16), >= 6.25 (bfloat16). library grad2 "
            "-e^x / expm1(x)^2 is exactly 0 on [43.668274, 88.72283] (float32), [5.5507812, "
            "11.085938] (float16), [43.75, 88.5] (bfloat16), and NaN (inf / inf) from 88.72284, "
            "11.09375, 89 on."
        ),
        special_points=(
            2.9802322e-08, 0.00024414062, 0.001953125,  # naive -inf (f32, f16, bf16)
            43.668274, 5.5507812, 43.75,  # library grad2 becomes 0
            88.72284, 11.09375, 89.0,  # library grad2 becomes NaN
            17.32868, 1.0,
        ),
    )
)
