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
import mpmath
from jax import lax

from rulelab.catalog._stable import (
    div2,
    exact_square,
    exp_neg_half_square,
    exp_small,
    is_zero,
)
from rulelab.model.case import POSITIVE, REALS, Variant, make_case, register

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


# Taylor coefficients of erfcx about 1/4 and 3/4, used on [0, 1): there erfc(x) from
# XLA is up to ~6 ulp off in float32 and 2x erfcx - 2/sqrt(pi) cancels. They come from
# y' = 2xy - 2/sqrt(pi), y^(n+1) = 2x y^(n) + 2n y^(n-1), evaluated once with mpmath.
TAYLOR_CENTERS = (0.25, 0.75)
TAYLOR_DEGREE = 24


def _erfcx_taylor(center: float, degree: int) -> list[float]:
    with mpmath.workprec(200):
        c = mpmath.mpf(center)
        derivs = [mpmath.exp(c * c) * mpmath.erfc(c)]
        derivs.append(2 * c * derivs[0] - 2 / mpmath.sqrt(mpmath.pi))
        for n in range(1, degree):
            derivs.append(2 * c * derivs[n] + 2 * n * derivs[n - 1])
        return [float(d / mpmath.factorial(n)) for n, d in enumerate(derivs)]


_TAYLOR = {c: _erfcx_taylor(c, TAYLOR_DEGREE) for c in TAYLOR_CENTERS}


def _taylor_piece(x: Array, order: int) -> Array:
    """The order-th derivative of erfcx for 0 <= x < 1 from the Taylor polynomial of the
    nearer center (x - 3/4 is exact on [1/2, 1))."""
    upper = x >= 0.5
    h = jnp.where(upper, x - 0.75, x - 0.25)
    out = jnp.zeros_like(x)
    for center in TAYLOR_CENTERS:
        coeffs = _TAYLOR[center]
        # d^order/dh^order of sum a_n h^n: sum a_n n!/(n-order)! h^(n - order)
        scaled = [coeffs[n] * math.perm(n, order) for n in range(order, len(coeffs))]
        p = jnp.zeros_like(x) + scaled[-1]
        for a in reversed(scaled[:-1]):
            p = p * h + a
        out = jnp.where(upper == (center > 0.5), p, out)
    return out


def _erfcx_pieces(x: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Masks and safe arguments for the three pieces: x < 0 (direct), [0, 1) (Taylor),
    x >= 1 (continued fraction)."""
    big = x >= CF_THRESHOLD
    mid = (x >= 0) & ~big
    xb = jnp.where(big, x, CF_THRESHOLD)
    xn = jnp.where(x < 0, x, 0)
    xm = jnp.where(mid, x, 0.5)
    return big, mid, xb, xn, xm


def _erfcx_value(x: Array) -> Array:
    big, mid, xb, xn, xm = _erfcx_pieces(x)
    k1, _ = _cf_tails(xb)
    hi, lo = exact_square(xn)
    direct = jnp.exp(hi) * exp_small(lo) * lax.erfc(xn)  # e^{x^2} with the square kept exact
    return jnp.where(big, 1 / (SQRT_PI * (xb + k1)), jnp.where(mid, _taylor_piece(xm, 0), direct))


def _erfcx_d2(x: Array) -> Array:
    """erfcx''(x) = (4x^2 + 2) erfcx - 4x/sqrt(pi): no cancellation for x < 0; Taylor on
    [0, 1); 2/sqrt(pi) k2 / ((x + k2)(x + k1)) for x >= 1."""
    big, mid, xb, xn, xm = _erfcx_pieces(x)
    k1, k2 = _cf_tails(xb)
    tail = TWO_OVER_SQRT_PI * div2(k2, xb + k2, xb + k1)
    direct = (4 * xn * xn + 2) * _erfcx_value(xn) - 2 * TWO_OVER_SQRT_PI * xn
    return jnp.where(big, tail, jnp.where(mid, _taylor_piece(xm, 2), direct))


@jax.custom_jvp
def erfcx_d1(x: Array) -> Array:
    """erfcx'(x) = 2x erfcx(x) - 2/sqrt(pi): direct for x < 0 (no cancellation there),
    Taylor on [0, 1), -2/sqrt(pi) k1 / (x + k1) for x >= 1."""
    big, mid, xb, xn, xm = _erfcx_pieces(x)
    k1, _ = _cf_tails(xb)
    direct = 2 * xn * _erfcx_value(xn) - TWO_OVER_SQRT_PI
    return jnp.where(big, -TWO_OVER_SQRT_PI * k1 / (xb + k1), jnp.where(mid, _taylor_piece(xm, 1), direct))


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
            "Measured (JAX 0.10.2, CPU): naive exp(x^2) erfc(x) is 0 once erfc is flushed, "
            "x in [9.1945496, 9.4192791] (float32), [9.25, 9.375] (bfloat16), and NaN (inf * 0) "
            "from x >= 9.41928 (float32), >= 9.4375 (bfloat16); float16: inf on [3.3320312, "
            "3.9179688], NaN from 3.9199219. The library value is 0 on the same kind of band: "
            "[9.1945496, 9.4192791] (float32), [9.1953125, 9.4140625] (float16), [9.25, 9.375] "
            "(bfloat16) (16-bit inputs are computed in float32), and [26.543258, 26.641748] in float64, "
            "where its grad is then -2/sqrt(pi) = -1.1283792 (true -7.957e-04 at 26.6). Its derivative 2x erfcx - "
            "2/sqrt(pi) cancels: more than 4 ulp off from x ~ 0.8 (float32), 1.16 (float16), "
            "1.21 (bfloat16), more than 10% off from x ~ 672 (float32), 10.2 (float16), 3.03 "
            "(bfloat16). The custom value uses erfc only for x < 0 (XLA's float32 erfc is up "
            "to 7 ulp off on [0, 1)); a Taylor polynomial covers [0, 1)."
        ),
        special_points=(9.1945496, 9.41928, 9.25, 9.4375, 3.3320312, 3.9199219, 0.8, 1.16, 1.21, 672.0, 1e4, -9.0, 0.0,
                        26.543258, 26.6, 26.641748),  # (the float64 band where the library value is 0)
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
    """r(x) = phi(x) / Phi(x) = d/dx log Phi(x). Rule r' = -r (x + r), which cancels for
    x < 0; there it is formed from erfcx instead (u = -x/sqrt(2)): in the tail
    x + r = sqrt(2) k1(u), so r' = -(u + k1)/(u + k2), which neither cancels nor
    underflows."""
    return _ndtr_ratio_value(x)


@ndtr_ratio.defjvp
def _ndtr_ratio_jvp(primals: tuple, tangents: tuple) -> tuple:
    (x,), (t,) = primals, tangents
    r = ndtr_ratio(x)
    u = -x * SQRT_HALF
    tail = u >= CF_THRESHOLD
    ut = jnp.where(tail, u, CF_THRESHOLD)
    k1, k2 = _cf_tails(ut)
    # tail: r = sqrt(2) (u + k1), x + r = sqrt(2) k1, so r' = -2 (u + k1) k1 = -(u + k1) / (u + k2);
    # 0 <= u < 1: r = sqrt(2/pi) / erfcx(u) gives r' = erfcx'(u) / (sqrt(pi) erfcx(u)^2);
    # x > 0: -r (x + r), both terms positive
    um = jnp.where((u >= 0) & ~tail, u, 0.5)
    e_um = _erfcx_value(um)
    middle = erfcx_d1(um) / (SQRT_PI * e_um * e_um)
    slope = jnp.where(tail, -(ut + k1) / (ut + k2), jnp.where(u >= 0, middle, -r * (x + r)))
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
            "Measured (JAX 0.10.2, CPU): naive value is -inf once Phi(x) is 0: x <= -12.949953 "
            "(float32, flushed), <= -5.3476562 (float16), <= -13.0 (bfloat16); its grad is NaN "
            "(0/0) from x <= -13.216395 (float32), <= -5.890625 (float16), <= -13.25 (bfloat16). "
            "library grad exp(logpdf(x) - ans) subtracts two numbers ~x^2/2: 8 ulp off at -10, 358 "
            "at -30, 3.8e3 at -100 (float32), off by more than 50% from x <= -5963 and mostly "
            "exactly 1.0 (instead of ~|x|) from x <= -23171; the 16-bit library variant (computed "
            "in float32) inherits this. jax.scipy.special.log_ndtr and ndtr raise TypeError for "
            "float16/bfloat16."
        ),
        special_points=(-12.949953, -13.216395, -5.3476562, -5.890625, -13.0, -13.25, -30.0, -100.0, -5963.0, -23171.0, -1e10, 0.0, 5.0),
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
            "Measured (JAX 0.10.2, CPU): naive value cancels for a >> b: with b = 1e-3 it is more "
            "than 4 ulp off from a ~ 6.35 (float32), 26.4 (float16), 50.75 (bfloat16). naive and "
            "library gradients digamma(a) - digamma(a + b) cancel: at a = 2 more than 4 ulp off for "
            "b <= 0.355 (float32), 0.249 (float16), 0.045 (bfloat16), and exactly 0 once a + b "
            "rounds to a: b <= 9.6e-8 (float32), 9.4e-4 (float16), 9.3e-5 (bfloat16). The library "
            "value is accurate (scipy's algdiv); its gradient is plain autodiff through it."
        ),
        special_points=((6.35, 1e-3), (26.4, 1e-3), (50.75, 1e-3), (2.0, 0.355), (2.0, 0.249), (2.0, 0.045),
                        (2.0, 9.6e-8), (2.0, 9.4e-4), (2.0, 9.3e-5), (1e6, 1e-3), (8.0, 8.0), (1.0, 1.0)),
    )
)
