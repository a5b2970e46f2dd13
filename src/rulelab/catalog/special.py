"""Special functions whose derivatives cancel: erfcx, log_ndtr and lbeta.

Each derivative here is a small difference of large terms when written the
textbook way (2x erfcx(x) - 2/sqrt(pi); phi/Phi near -x; digamma(a) - digamma(a+b)).
The custom rules rewrite each difference so that no two large terms are subtracted:
a continued fraction for the erfc tail, and shifted asymptotic series for
differences of digamma and trigamma values. Every rule is itself a custom_jvp
function, so the second derivative is formed the same way.

Thresholds were measured with JAX 0.10.2 on CPU (float32 subnormals flushed).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jax import lax

from rulelab.case import POSITIVE, REALS, Variant, make_case, register
from rulelab.catalog._stable import div2, exact_square, exp_neg_half_square, exp_small, is_zero

Array = Any

SQRT_PI = math.sqrt(math.pi)
TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)


def _mag(mp: Any, x: Any) -> int:
    return 0 if x == 0 or not mp.isfinite(x) else abs(int(mp.mag(x)))


# --- the erfc tail as a continued fraction --------------------------------------------

CF_THRESHOLD = 1.0  # the fraction is used for x >= 1, where the direct forms start to cancel


def _cf_terms(dtype: Any) -> int:
    """Terms for a relative error below the dtype's epsilon at x = 1."""
    return 200 if jnp.finfo(dtype).bits > 32 else 64


def _cf_tails(x: Array) -> tuple[Array, Array]:
    """``(k1, k2)`` for x >= 1: erfc(x) = e^{-x^2} / sqrt(pi) / (x + k1) with
    k1 = (1/2) / (x + k2), k2 = 1 / (x + (3/2) / (x + 2 / (x + ...))). Every term is
    positive, so nothing cancels (backward recurrence, fixed length)."""
    n = _cf_terms(x.dtype)

    def body(i: Any, t: Array) -> Array:
        half_k = (n - i).astype(x.dtype) * 0.5  # n/2, (n-1)/2, ..., 2/2
        return half_k / (x + t)

    k2 = lax.fori_loop(0, n - 1, body, jnp.zeros_like(x))
    return 0.5 / (x + k2), k2


def _erfcx_value(x: Array) -> Array:
    big = x >= CF_THRESHOLD
    xb = jnp.where(big, x, CF_THRESHOLD)
    xs = jnp.where(big, 0, x)
    k1, _ = _cf_tails(xb)
    hi, lo = exact_square(xs)
    direct = jnp.exp(hi) * exp_small(lo) * lax.erfc(xs)  # e^{x^2} with the square kept exact
    return jnp.where(big, 1 / (SQRT_PI * (xb + k1)), direct)


def _erfcx_d2(x: Array) -> Array:
    """erfcx''(x) = (4x^2 + 2) erfcx - 4x/sqrt(pi) = 2/sqrt(pi) k2 / ((x + k2)(x + k1))."""
    big = x >= CF_THRESHOLD
    xb = jnp.where(big, x, CF_THRESHOLD)
    xs = jnp.where(big, 0, x)
    k1, k2 = _cf_tails(xb)
    tail = TWO_OVER_SQRT_PI * div2(k2, xb + k2, xb + k1)
    direct = (4 * xs * xs + 2) * _erfcx_value(xs) - 2 * TWO_OVER_SQRT_PI * xs
    return jnp.where(big, tail, direct)


@jax.custom_jvp
def erfcx_d1(x: Array) -> Array:
    """erfcx'(x) = 2x erfcx(x) - 2/sqrt(pi) = -2/sqrt(pi) k1 / (x + k1) for x >= 1."""
    big = x >= CF_THRESHOLD
    xb = jnp.where(big, x, CF_THRESHOLD)
    xs = jnp.where(big, 0, x)
    k1, _ = _cf_tails(xb)
    return jnp.where(big, -TWO_OVER_SQRT_PI * k1 / (xb + k1), 2 * xs * _erfcx_value(xs) - TWO_OVER_SQRT_PI)


@erfcx_d1.defjvp
def _erfcx_d1_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return erfcx_d1(x), t * _erfcx_d2(x)


@jax.custom_jvp
def custom_erfcx(x: Array) -> Array:
    """e^{x^2} erfc(x): continued fraction for x >= 1, e^{x^2} (exact square) erfc(x)
    below; rule :func:`erfcx_d1`."""
    return _erfcx_value(x)


@custom_erfcx.defjvp
def _custom_erfcx_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return custom_erfcx(x), t * erfcx_d1(x)


def naive_erfcx(x: Array) -> Array:
    """exp(x^2) * erfc(x): inf * 0 = NaN once exp overflows and erfc underflows."""
    return jnp.exp(x * x) * jsp.erfc(x)


def _m_erfcx(mp: Any, x: Any) -> Any:
    if x > 1:  # U(1/2, 1/2, x^2) / sqrt(pi): no e^{x^2} whose exponent would need extra bits
        return mp.hyperu(0.5, 0.5, x * x) / mp.sqrt(mp.pi)
    with mp.extraprec(2 * _mag(mp, x) + 10):
        return mp.exp(x * x) * mp.erfc(x)


def _m_erfcx_d1(mp: Any, x: Any) -> Any:
    with mp.extraprec(2 * _mag(mp, x) + 20):
        return 2 * x * _m_erfcx(mp, x) - 2 / mp.sqrt(mp.pi)


def _m_erfcx_d2(mp: Any, x: Any) -> Any:
    with mp.extraprec(3 * _mag(mp, x) + 20):
        return (4 * x * x + 2) * _m_erfcx(mp, x) - 4 * x / mp.sqrt(mp.pi)


register(
    make_case(
        name="erfcx",
        formula="exp(x^2) erfc(x)",
        args=("x",),
        domain=REALS,
        reference=_m_erfcx,
        derivatives={("x", 1): _m_erfcx_d1, ("x", 2): _m_erfcx_d2},
        variants=[
            Variant("naive", naive_erfcx, "exp(x*x) * erfc(x), plain autodiff"),
            Variant("custom_jvp", custom_erfcx, "custom_jvp: continued fraction for x >= 1; rules from its tails"),
            Variant("library", jsp.erfcx, "jax.scipy.special.erfcx (rule 2x erfcx - 2/sqrt(pi))"),
        ],
        source="jax.scipy.special.erfcx; jax-ml/jax#38607 (erfcx returns 0 just below its asymptotic switch)",
        notes=(
            "naive value is inf once exp(x^2) overflows and NaN (inf * 0) once erfc also "
            "underflows: inf from x >= 9.4191036 and NaN from x >= 10.0546 (float32, erfc flushed "
            "below 1.2e-38 from ~9.1945); float16 inf from 3.3320, NaN from 4.0586; bfloat16 like "
            "float32 (9.375 / 10.0625). library grad 2x erfcx - 2/sqrt(pi) cancels: more than 4 ulp "
            "off from x ~ 0.9 and wrong in the leading digit from x ~ 4e3 (float32); the float32 "
            "library value is 0 for 9.1945 <= x < 9.4191 (erfc flushed inside e^{x^2} erfc(x)). "
            "The library computes 16-bit inputs in float32."
        ),
        special_points=(9.4191036, 10.0546, 9.1945, 9.3, 3.332, 4.0586, 9.375, 10.0625, 100.0, 1e4, -9.0, 0.0),
    )
)


# --- log_ndtr --------------------------------------------------------------------------

SQRT_HALF = math.sqrt(0.5)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _log_ndtr_value(x: Array) -> Array:
    # x <= 0: Phi(x) = erfcx(u) e^{-x^2/2} / 2 with u = -x/sqrt(2), so
    #         log Phi = log(erfcx(u) / 2) - x^2/2 (both terms negative);
    # x > 0:  log Phi = log1p(-Q), Q = Phi(-x) = erfcx(x/sqrt(2)) e^{-x^2/2} / 2.
    u = -x * SQRT_HALF
    neg = x <= 0
    un = jnp.where(neg, u, 0)
    up = jnp.where(neg, 0, -u)
    lower = jnp.log(0.5 * _erfcx_value(un)) - (0.5 * x) * x  # (x/2) x overflows only with the result
    q = 0.5 * _erfcx_value(up) * exp_neg_half_square(jnp.where(neg, 0, x))
    return jnp.where(neg, lower, jnp.log1p(-q))


def _ndtr_ratio_value(x: Array) -> Array:
    """phi(x) / Phi(x): sqrt(2/pi) / erfcx(u) with u = -x/sqrt(2) for x <= 0, which is
    sqrt(2) (u + k1(u)) in the tail (no overflow of 1 / erfcx); phi / (1 - Q) above 0."""
    u = -x * SQRT_HALF
    neg = x <= 0
    tail = u >= CF_THRESHOLD
    un = jnp.where(neg & ~tail, u, 0)
    ut = jnp.where(tail, u, CF_THRESHOLD)
    k1, _ = _cf_tails(ut)
    xp = jnp.where(neg, 0, x)
    q = 0.5 * _erfcx_value(xp * SQRT_HALF) * exp_neg_half_square(xp)
    upper = INV_SQRT_2PI * exp_neg_half_square(xp) / (1 - q)
    lower = jnp.where(tail, math.sqrt(2) * (ut + k1), SQRT_2_OVER_PI / _erfcx_value(un))
    return jnp.where(neg, lower, upper)


@jax.custom_jvp
def ndtr_ratio(x: Array) -> Array:
    """r(x) = phi(x) / Phi(x) = d/dx log Phi(x). Rule r' = -r (x + r); in the lower tail
    x + r = sqrt(2) k1(u), u = -x/sqrt(2) (continued fraction), so r' = -(u + k1)/(u + k2),
    which neither cancels nor underflows."""
    return _ndtr_ratio_value(x)


@ndtr_ratio.defjvp
def _ndtr_ratio_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    r = ndtr_ratio(x)
    u = -x * SQRT_HALF
    tail = u >= CF_THRESHOLD
    ut = jnp.where(tail, u, CF_THRESHOLD)
    k1, k2 = _cf_tails(ut)
    # tail: r = sqrt(2) (u + k1), x + r = sqrt(2) k1, so r' = -2 (u + k1) k1 = -(u + k1) / (u + k2)
    slope = jnp.where(tail, -(ut + k1) / (ut + k2), -r * (x + r))
    return r, t * slope


@jax.custom_jvp
def custom_log_ndtr(x: Array) -> Array:
    """log Phi(x) through erfcx (no underflow in the lower tail, log1p above 0); rule
    :func:`ndtr_ratio`."""
    return _log_ndtr_value(x)


@custom_log_ndtr.defjvp
def _custom_log_ndtr_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    return custom_log_ndtr(x), t * ndtr_ratio(x)


def naive_log_ndtr(x: Array) -> Array:
    """log(Phi(x)) with Phi(x) = erfc(-x/sqrt(2)) / 2 (what jax.scipy.special.ndtr
    computes; ndtr itself rejects 16-bit inputs), plain autodiff: -inf and a NaN
    gradient once Phi underflows."""
    return jnp.log(0.5 * jsp.erfc(-x * SQRT_HALF))


def library_log_ndtr(x: Array) -> Array:
    """jax.scipy.special.log_ndtr; it rejects 16-bit inputs, so those are computed in
    float32 and rounded back."""
    x = jnp.asarray(x)
    if x.dtype in (jnp.float16, jnp.bfloat16):
        return jsp.log_ndtr(x.astype(jnp.float32)).astype(x.dtype)
    return jsp.log_ndtr(x)


# For x < -1 the references use Phi(x) = e^{-x^2/2} U(1/2, 1/2, x^2/2) / (2 sqrt(pi)):
# mpmath's ncdf and npdf lose the exponent e^{-x^2/2} once x^2 needs more bits than
# the working precision (|x| > ~1e20 at 150 bits).


def _m_log_ndtr(mp: Any, x: Any) -> Any:
    if x > 0:
        return mp.log1p(-mp.ncdf(-x))
    if x < -1:
        return mp.log(mp.hyperu(0.5, 0.5, x * x / 2) / (2 * mp.sqrt(mp.pi))) - x * x / 2
    return mp.log(mp.ncdf(x))


def _m_ndtr_ratio(mp: Any, x: Any) -> Any:
    if x < -1:
        return mp.sqrt(2) / mp.hyperu(0.5, 0.5, x * x / 2)
    return mp.npdf(x) / mp.ncdf(x)


def _m_ndtr_ratio_d(mp: Any, x: Any) -> Any:
    with mp.extraprec(2 * _mag(mp, x) + 20):
        r = _m_ndtr_ratio(mp, x)
        return -r * (x + r)


register(
    make_case(
        name="log_ndtr",
        formula="log Phi(x)",
        args=("x",),
        domain=REALS,
        reference=_m_log_ndtr,
        derivatives={("x", 1): _m_ndtr_ratio, ("x", 2): _m_ndtr_ratio_d},
        variants=[
            Variant("naive", naive_log_ndtr, "log(erfc(-x/sqrt 2)/2) (ndtr's formula), plain autodiff"),
            Variant("custom_jvp", custom_log_ndtr, "custom_jvp: log Phi via erfcx; rule phi/Phi via its continued fraction"),
            Variant(
                "library",
                library_log_ndtr,
                "jax.scipy.special.log_ndtr (rule exp(logpdf - ans)); float16/bfloat16 upcast to float32 inside",
            ),
        ],
        source="jax.scipy.special.log_ndtr; chainer/chainer#6340 (NaN gradient of log_ndtr in the tail)",
        notes=(
            "naive grad is NaN once ndtr(x) is flushed to 0: x <= -13.0556 (float32; ndtr < 1.2e-38), "
            "<= -5.9023 (float16), <= -13.0625 (bfloat16); the value is -inf there. library grad "
            "exp(logpdf(x) - ans) subtracts two numbers ~x^2/2: more than 4 ulp off from x ~ -30 and "
            "exactly 1 (instead of ~|x|) once they round equal, x <= -5.7e9 in float32. The library "
            "raises TypeError for float16/bfloat16; the library variant upcasts them to float32."
        ),
        special_points=(-13.0556, -5.9023, -13.0625, -20.0, -40.0, -1e4, -1e10, 0.0, 5.0, 10.0),
    )
)


# --- lbeta -----------------------------------------------------------------------------

SHIFT = 16  # arguments below 16 are shifted up by 16 before the asymptotic series
# Bernoulli numbers B_2, B_4, ..., B_18
_BERNOULLI = [1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798]


def _chain_div(h: Array, u: Array, n: int) -> Array:
    """h / u / ... / u (n divisions, in that order; see :func:`div2`)."""
    q = h
    for i in range(n):
        q = q / u if i == n - 1 else jax.lax.optimization_barrier(q / u)
    return q


def _recip_diff(u: Array, h: Array) -> Array:
    """1/u - 1/(u + h) = h / (u (u + h)) for u, h > 0, as (1 / (1 + u/h)) / u: no
    product or sum that could overflow or underflow before the result does."""
    return div2(1, 1 + u / h, u)


def _pow_diff(x: Array, h: Array, m: int) -> Array:
    """x^-m - (x + h)^-m for x, h > 0, as x^-m (1 - (1 + h/x)^-m) without cancellation."""
    return x ** (-m) * -jnp.expm1(-m * jnp.log1p(h / x))


def _shifted(x: Array) -> tuple[Array, Array]:
    """(X, shift): X = x + 16 where x < 16 (the terms k < 16 are then summed
    explicitly), X = x otherwise (x + 16 could overflow in float16)."""
    shift = x < SHIFT
    return jnp.where(shift, x + SHIFT, x), shift


def _sum_shift(shift: Array, x: Array, term: Any, start: Array) -> Array:
    """start + sum_{k<16} term(x + k) where shift is set (else start), smallest terms first."""
    total = start
    for k in reversed(range(SHIFT)):
        total = total + jnp.where(shift, term(x + k), 0)
    return total


def _digamma_diff_general(x: Array, h: Array) -> Array:
    """digamma(x) - digamma(x + h): -log1p(h/X) - (1/X - 1/(X+h))/2 - sum B_2k/(2k) (X^-2k -
    (X+h)^-2k) at X >= 16, minus the shifted terms 1/(x+k) - 1/(x+k+h); all terms negative."""
    big, shift = _shifted(x)
    out = -jnp.log1p(h / big) - 0.5 * _recip_diff(big, h)
    for k, b in enumerate(_BERNOULLI, start=1):
        out = out - (b / (2 * k)) * _pow_diff(big, h, 2 * k)
    return _sum_shift(shift, x, lambda u: -_recip_diff(u, h), out)


def _trigamma_diff_general(x: Array, h: Array) -> Array:
    """trigamma(x) - trigamma(x + h), term by term as above (all terms positive)."""
    big, shift = _shifted(x)
    out = _recip_diff(big, h) + 0.5 * _pow_diff(big, h, 2)
    for k, b in enumerate(_BERNOULLI, start=1):
        out = out + b * _pow_diff(big, h, 2 * k + 1)
    # 1/u^2 - 1/v^2 = (1/u - 1/v) (1/u + 1/v)
    return _sum_shift(shift, x, lambda u: _recip_diff(u, h) * (1 / u + 1 / (u + h)), out)


def _h_trigamma(x: Array, h: Array) -> Array:
    """h * trigamma(x), formed so that h / x^2 neither underflows nor overflows early."""
    big, shift = _shifted(x)
    inv = 1 / big
    series = 1 + 0.5 * inv
    for k, b in enumerate(_BERNOULLI, start=1):
        series = series + b * inv ** (2 * k)
    return _sum_shift(shift, x, lambda u: _chain_div(h, u, 2), (h / big) * series)


def _h_tetragamma(x: Array, h: Array) -> Array:
    """-h * polygamma(2, x) (positive), formed like :func:`_h_trigamma`."""
    big, shift = _shifted(x)
    inv = 1 / big
    series = inv + inv * inv
    for k, b in enumerate(_BERNOULLI, start=1):
        series = series + (2 * k + 1) * b * inv ** (2 * k + 1)
    return _sum_shift(shift, x, lambda u: 2 * _chain_div(h, u, 3), (h / big) * series)


def _rescaled(fn: Any, x: Array, h: Array) -> Array:
    """fn(x, h), which is linear in h, evaluated at h * 2^k and scaled back where h and
    the result are tiny, so that partial terms are not flushed to zero."""
    scale = 2.0 ** (jnp.finfo(x.dtype).maxexp // 2)
    plain = fn(x, h)
    tiny = (h < 1 / scale) & (jnp.abs(plain) < 1 / scale)
    lifted = fn(x, jnp.where(tiny, h * scale, h)) / scale
    return jnp.where(tiny, lifted, plain)


def _linear_regime(x: Array, h: Array) -> Array:
    """Where h < x * eps, x + h rounds to x and psi(x) - psi(x + h) = -h psi'(x) to
    within eps; the linear term also avoids summing terms that would underflow."""
    return h < x * float(jnp.finfo(x.dtype).eps)


def _trigamma_diff(x: Array, h: Array) -> Array:
    return jnp.where(_linear_regime(x, h), _rescaled(_h_tetragamma, x, h), _trigamma_diff_general(x, h))


@jax.custom_jvp
def digamma_diff(x: Array, h: Array) -> Array:
    """digamma(x) - digamma(x + h) for x, h > 0, summed without cancellation (every
    term negative); -h trigamma(x) where h < x eps. Rule: d/dx = trigamma(x) -
    trigamma(x + h), formed the same way; d/dh = -trigamma(x + h)."""
    return jnp.where(_linear_regime(x, h), -_rescaled(_h_trigamma, x, h), _digamma_diff_general(x, h))


def _digamma_diff_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x, h), (tx, th) = primals, tangents
    out = jnp.zeros_like(x)
    if not is_zero(tx):
        out = out + tx * _trigamma_diff(x, h)
    if not is_zero(th):
        out = out - th * jsp.polygamma(1, x + h)
    return digamma_diff(x, h), out


digamma_diff.defjvp(_digamma_diff_jvp, symbolic_zeros=True)


_LGAMMA_CORR = [1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156, -3617 / 122400]


def _lgamma_corr(x: Array) -> Array:
    """lgamma(x) - ((x - 1/2) log x - x + log(2 pi)/2) for x >= 8 (Stirling series)."""
    inv = 1 / x
    inv2 = inv * inv
    s = jnp.zeros_like(x) + _LGAMMA_CORR[-1]
    for c in reversed(_LGAMMA_CORR[:-1]):
        s = s * inv2 + c
    return s * inv


def _stirling_log_term(small: Array, big: Array) -> Array:
    """(big - 1/2) log1p(small / big) as small * log1p(q)/q - log1p(q)/2, q = small/big,
    which stays right when q underflows (the product tends to small, not 0)."""
    q = small / big
    l1p = jnp.log1p(q)
    ratio = jnp.where(q < float(jnp.finfo(q.dtype).eps), 1, l1p / jnp.where(q == 0, 1, q))
    return small * ratio - 0.5 * l1p


def _lbeta_value(a: Array, b: Array) -> Array:
    big = jnp.maximum(a, b)
    small = jnp.minimum(a, b)
    # both < 8: the direct sum (XLA's lgamma is accurate there)
    direct = lax.lgamma(a) + lax.lgamma(b) - lax.lgamma(a + b)
    # big >= 8 > small: lgamma(small) + [lgamma(big) - lgamma(big + small)] by Stirling:
    # -(big - 1/2) log1p(small/big) + small - small log(big + small) + corr differences
    bs = jnp.where(big >= 8, big, 8)
    ss = jnp.where(big >= 8, small, 1)
    log_sum = jnp.log(bs) + jnp.log1p(ss / bs)  # log(big + small) without overflow
    diff = (ss - _stirling_log_term(ss, bs)) - ss * log_sum
    diff = diff + (_lgamma_corr(bs) - _lgamma_corr(bs + ss))
    one_big = lax.lgamma(ss) + diff
    # both >= 8: the symmetric Stirling form, every log term negative
    s8 = jnp.where(small >= 8, small, 8)
    both = (
        0.5 * math.log(2 * math.pi)
        - _stirling_log_term(s8, bs)
        - (s8 - 0.5) * jnp.log1p(bs / s8)
        - 0.5 * (jnp.log(bs) + jnp.log1p(s8 / bs))
        + (_lgamma_corr(bs) + _lgamma_corr(s8) - _lgamma_corr(bs + s8))
    )
    return jnp.where(big < 8, direct, jnp.where(small < 8, one_big, both))


@jax.custom_jvp
def custom_lbeta(a: Array, b: Array) -> Array:
    """log B(a, b) by Stirling differences for large arguments; rule
    d/da = digamma(a) - digamma(a + b) via :func:`digamma_diff`."""
    return _lbeta_value(a, b)


def _custom_lbeta_jvp(primals: tuple, tangents: tuple) -> tuple:
    # symbolic zeros: an undifferentiated argument contributes nothing, not 0 * inf
    (a, b), (ta, tb) = primals, tangents
    out = jnp.zeros_like(a)
    if not is_zero(ta):
        out = out + ta * digamma_diff(a, b)
    if not is_zero(tb):
        out = out + tb * digamma_diff(b, a)
    return custom_lbeta(a, b), out


custom_lbeta.defjvp(_custom_lbeta_jvp, symbolic_zeros=True)


def naive_lbeta(a: Array, b: Array) -> Array:
    """gammaln(a) + gammaln(b) - gammaln(a + b), plain autodiff."""
    return jsp.gammaln(a) + jsp.gammaln(b) - jsp.gammaln(a + b)


def _beta_prec(mp: Any, a: Any, b: Any) -> int:
    """Extra bits for lgamma(a) - lgamma(a + b) and digamma differences, which cancel
    about log2(max / min) bits."""
    if not (mp.isfinite(a) and mp.isfinite(b)) or a == 0 or b == 0:
        return 40
    return 40 + abs(int(mp.mag(a)) - int(mp.mag(b)))


def _m_lbeta(mp: Any, a: Any, b: Any) -> Any:
    with mp.extraprec(_beta_prec(mp, a, b)):
        return mp.loggamma(a) + mp.loggamma(b) - mp.loggamma(a + b)


def _m_lbeta_da(mp: Any, a: Any, b: Any) -> Any:
    with mp.extraprec(_beta_prec(mp, a, b)):
        return mp.digamma(a) - mp.digamma(a + b)


def _m_lbeta_daa(mp: Any, a: Any, b: Any) -> Any:
    with mp.extraprec(_beta_prec(mp, a, b)):
        return mp.psi(1, a) - mp.psi(1, a + b)


register(
    make_case(
        name="lbeta",
        formula="log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b)",
        args=("a", "b"),
        domain=(POSITIVE, POSITIVE),
        reference=_m_lbeta,
        derivatives={
            ("a", 1): _m_lbeta_da,
            ("a", 2): _m_lbeta_daa,
            ("b", 1): lambda mp, a, b: _m_lbeta_da(mp, b, a),
            ("b", 2): lambda mp, a, b: _m_lbeta_daa(mp, b, a),
        },
        variants=[
            Variant("naive", naive_lbeta, "gammaln(a) + gammaln(b) - gammaln(a + b), plain autodiff"),
            Variant("custom_jvp", custom_lbeta, "custom_jvp: Stirling differences; digamma differences shifted, no cancellation"),
            Variant("library", jsp.betaln, "jax.scipy.special.betaln (scipy's algdiv for max >= 8; plain autodiff)"),
        ],
        source="jax.scipy.special.betaln; jax-ml/jax#40653 (betaln wrong when min/max is subnormal)",
        notes=(
            "naive value cancels for a >> b: lgamma(a) - lgamma(a + b) ~ -b digamma(a) is formed from "
            "two numbers ~a log a (float32: (1e4, 1e-3) is already hundreds of ulp off); its "
            "a-gradient digamma(a) - digamma(a + b) is 0 once a + b rounds to a (b < a * 2^-24 in "
            "float32). The library value is accurate but its gradient is plain autodiff through "
            "algdiv; see the measured errors in the report."
        ),
        special_points=((1e4, 1e-3), (1e6, 1e-3), (1e6, 1.0), (100.0, 0.5), (8.0, 8.0), (1.0, 1.0), (0.5, 0.5), (30.0, 1e-6)),
    )
)
