"""Careful scalar building blocks shared by the catalog's custom-rule variants.

Everything here is elementwise, keeps the input dtype (only weak-typed Python
constants) and, where it has a custom rule, can be differentiated again without
NaNs: the rules are written in terms of other functions that have rules of their
own, so ``grad(grad(f))`` never differentiates through a ``where`` whose other
branch is infinite. The module name starts with an underscore so the catalog does
not import it as a case module.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

Array = Any


def is_zero(t: Any) -> bool:
    """Whether a tangent handed to a ``symbolic_zeros=True`` rule is a symbolic zero."""
    return isinstance(t, SymbolicZero)


def two_diff(a: Array, b: Array) -> tuple[Array, Array]:
    """``(d, e)`` with ``d = fl(a - b)`` and ``a - b = d + e`` exactly (Knuth's
    branch-free two-sum; needs round-to-nearest per operation, which XLA keeps for
    16-bit types too). ``e`` is set to 0 where ``d`` is not finite."""
    d = a - b
    a_virtual = d + b  # the part of d that came from a
    b_virtual = a_virtual - d  # the part of d that came from b
    e = (a - a_virtual) + (b_virtual - b)
    return d, jnp.where(jnp.isfinite(d), e, 0)


def div2(a: Array, b: Array, c: Array) -> Array:
    """a / b / c in that order. XLA rewrites (a / b) / c into a / (b * c), whose
    product can underflow or overflow where the quotient does not; the barrier keeps
    the first quotient."""
    return jax.lax.optimization_barrier(a / b) / c


def _split_factor(dtype: Any) -> float:
    """Veltkamp's splitting constant 2^ceil(p/2) + 1 for the dtype's precision p."""
    p = int(jnp.finfo(dtype).nmant) + 1
    return float(2 ** ((p + 1) // 2) + 1)


def exact_square(x: Array) -> tuple[Array, Array]:
    """``(hi, lo)`` with ``hi = fl(x*x)`` and ``x*x = hi + lo`` exactly (Dekker's
    product), so that ``exp(-x*x/2)`` can be computed without the relative error
    ``x^2 * eps`` that rounding the square would cause. Beyond sqrt(max) the square
    overflows anyway and ``lo`` is 0."""
    x = jnp.asarray(x)
    fi = jnp.finfo(x.dtype)
    c = _split_factor(x.dtype)
    limit = float(np.sqrt(float(fi.max)) / 2)  # keeps c*x and hi*hi finite
    ok = jnp.abs(x) < limit
    xs = jnp.where(ok, x, 0)
    t = c * xs
    hi_part = t - (t - xs)
    lo_part = xs - hi_part
    sq = x * x
    err = ((hi_part * hi_part - sq) + 2 * hi_part * lo_part) + lo_part * lo_part
    return sq, jnp.where(ok, err, 0)


def two_product(x: Array, y: Array) -> tuple[Array, Array]:
    """``(p, e)`` with ``p = fl(x*y)`` and ``x*y = p + e`` exactly (Dekker's product with
    Veltkamp's split); ``e`` is 0 where a factor is too large to split or p is not finite."""
    dtype = jnp.asarray(x).dtype
    c = _split_factor(dtype)
    limit = float(np.sqrt(float(jnp.finfo(dtype).max)) / 2)
    ok = (jnp.abs(x) < limit) & (jnp.abs(y) < limit)
    xs, ys = jnp.where(ok, x, 0), jnp.where(ok, y, 0)
    tx, ty = c * xs, c * ys
    xh, yh = tx - (tx - xs), ty - (ty - ys)
    xl, yl = xs - xh, ys - yh
    p = x * y
    e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
    return p, jnp.where(ok & jnp.isfinite(p), e, 0)


def exp_small(e: Array) -> Array:
    """exp(e) for |e| <= 1/4 by its Taylor polynomial (error below 1e-5 relative), for
    correction factors: XLA rewrites exp(a) * exp(b) into exp(a + b), which would round
    the correction away. Larger |e| (a remainder that large only occurs where the main
    factor is 0 or inf) is clipped so that 0 * inf cannot arise."""
    e = jnp.clip(e, -0.25, 0.25)
    return 1 + e * (1 + e * (0.5 + e * (1 / 6 + e / 24)))


def exp_neg_half_square(x: Array) -> Array:
    """``exp(-x^2/2)`` to a few ulp for every x (the square is kept exact)."""
    hi, lo = exact_square(x)
    return jnp.exp(-0.5 * hi) * exp_small(-0.5 * lo)


# --- logistic family ------------------------------------------------------------------


@jax.custom_jvp
def sigmoid(x: Array) -> Array:
    """1 / (1 + e^-x) without overflow; derivative sigmoid(x) * sigmoid(-x), never 1 - s."""
    e = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1 / (1 + e), e / (1 + e))


@sigmoid.defjvp
def _sigmoid_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return sigmoid(x), t * dsigmoid(x)


@jax.custom_jvp
def dsigmoid(x: Array) -> Array:
    """sigmoid'(x) = sigmoid(x) * sigmoid(-x); its rule -sigmoid'(x) * tanh(x/2) avoids
    the cancellation sigmoid(-x) - sigmoid(x) near 0."""
    return sigmoid(x) * sigmoid(-x)


@dsigmoid.defjvp
def _dsigmoid_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    d = dsigmoid(x)
    return d, t * (-d * jnp.tanh(x / 2))


@jax.custom_jvp
def softplus(x: Array) -> Array:
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|); derivative sigmoid(x)."""
    return jnp.maximum(x, 0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return softplus(x), t * sigmoid(x)


def softplus_of_sum(d: Array, e: Array) -> Array:
    """softplus(d + e) for a rounded difference d and its small exact remainder e
    (from :func:`two_diff`): softplus(d) + sigmoid(d) * e. In the tail softplus is
    e^d, whose relative error would otherwise be |d| * eps."""
    return softplus(d) + sigmoid(d) * e


def sigmoid_of_sum(d: Array, e: Array) -> Array:
    """sigmoid(d + e) for a rounded difference d and its remainder e."""
    return sigmoid(d) * (1 + sigmoid(-d) * e)


@jax.custom_jvp
def sigmoid_minus(d: Array, e: Array, w: Array) -> Array:
    """sigmoid(d + e) - w for w in [0, 1], the logit-gradient of a cross-entropy.

    In the tails it is (1 - w) sigmoid(d) - w sigmoid(-d), which does not cancel for
    w = 0 or 1; for |d| < 1 it is sigmoid(+-d) ((1 - 2w) -+ w' expm1(-+d)), which is
    exact at its zero when w = 1/2. Rule: d/dd = sigmoid'(d), d/dw = -1."""
    tail = (1 - w) * sigmoid_of_sum(d, e) - w * sigmoid_of_sum(-d, -e)
    dn = jnp.where(jnp.abs(d) < 1, d, 0)
    near = jnp.where(
        dn >= 0,
        sigmoid(dn) * ((1 - 2 * w) - w * jnp.expm1(-dn)),
        sigmoid(-dn) * ((1 - 2 * w) + (1 - w) * jnp.expm1(dn)),
    )
    return jnp.where(jnp.abs(d) < 1, near, tail)


@sigmoid_minus.defjvp
def _sigmoid_minus_jvp(primals: tuple, tangents: tuple) -> tuple:
    (d, e, w), (td, te, tw) = primals, tangents
    slope = dsigmoid(d) * (1 - jnp.tanh(d / 2) * e)  # sigmoid'(d + e)
    return sigmoid_minus(d, e, w), (td + te) * slope - tw


# --- log-sum-exp over a short vector ----------------------------------------------------


def _shifted(v: Array) -> tuple[Array, Array, Array]:
    """``(m, e, k)``: the maximum m (finite), e_i = exp(v_i - m) with the rounding of
    v_i - m compensated, and the index k of the maximum. A vector whose entries are
    all -inf is treated as all zeros (the diagonal limit), so e is uniform there."""
    empty = jnp.all(v == -jnp.inf)
    v = jnp.where(empty, 0, v)
    m = jnp.max(v)
    m = jnp.where(jnp.isfinite(m), m, 0)
    d, err = two_diff(v, m)
    # |err| <= ulp(d) / 2; it exceeds 1/4 only where exp(d) is 0 anyway
    e = jnp.exp(d) * exp_small(err)
    return m, e, jnp.argmax(v)


@jax.custom_jvp
def logsumexp(v: Array) -> Array:
    """log(sum(exp(v))) of a short 1-D vector: exact shift by the maximum, log1p of
    the other terms, -inf when every entry is -inf. Derivative :func:`softmax`."""
    n = v.shape[0]
    _, e, k = _shifted(v)
    rest = jnp.sum(jnp.where(jnp.arange(n) == k, 0, e))
    top = jnp.max(v)
    return top + jnp.log1p(rest)


@logsumexp.defjvp
def _logsumexp_jvp(primals: tuple, tangents: tuple) -> tuple:
    (v,), (t,) = primals, tangents
    return logsumexp(v), jnp.sum(softmax(v) * t)


@jax.custom_jvp
def softmax(v: Array) -> Array:
    """exp(v_i) / sum_j exp(v_j) of a short vector, uniform where every entry is -inf."""
    _, e, _ = _shifted(v)
    return e / jnp.sum(e)


@softmax.defjvp
def _softmax_jvp(primals: tuple, tangents: tuple) -> tuple:
    # dp_i = p_i * sum_{j != i} p_j (t_i - t_j): the diagonal term p_i * (1 - p_i)
    # is formed as p_i * sum_{j != i} p_j, which does not cancel when p_i ~ 1.
    (v,), (t,) = primals, tangents
    p = softmax(v)
    n = v.shape[0]
    off = jnp.where(jnp.eye(n, dtype=bool), 0, p[None, :])
    return p, p * (t * jnp.sum(off, axis=1) - off @ t)
