"""The modified Bessel function I0 and its scaled form i0e = e^-|x| I0(x).

JAX computes ``i0`` as e^|x| i0e(x) and differentiates that product: the two terms of
its derivative, sign(x) e^|x| i0e(x) and e^|x| (i1e(x) - sign(x) i0e(x)), are each
about I0(x) and cancel to I1(x), which is x/2 near 0. So the derivative loses every
digit near 0, and at 0 the derivative of |x| (1) makes it 1 where I1(0) = 0. The
custom rule is I1 itself. ``i0e`` multiplied out as e^-|x| I0(x) overflows in I0 first.

Thresholds were measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from rulelab.model.case import REALS, Convention, Variant, make_case, register

Array = Any

# --- i0 --------------------------------------------------------------------------------


def naive_i0(x: Array) -> Array:
    """e^|x| i0e(x), as jax.scipy.special.i0 computes it, under plain autodiff."""
    return jnp.exp(jnp.abs(x)) * jsp.i0e(x)


@jax.custom_jvp
def custom_i0(x: Array) -> Array:
    """jax.scipy.special.i0 with the rule I1(x) (jax.scipy.special.i1)."""
    return jsp.i0(x)


custom_i0.defjvps(lambda t, ans, x: t * jsp.i1(x))


def _m_i0_d2(mp: Any, x: Any) -> Any:
    """I0'' = I1' = I0 - I1 / x, 1/2 at 0."""
    return mp.mpf(1) / 2 if x == 0 else mp.besseli(0, x) - mp.besseli(1, x) / x


register(
    make_case(
        name="i0",
        formula="I0(x), the modified Bessel function of the first kind",
        args=("x",),
        domain=REALS,
        reference=lambda mp, x: mp.besseli(0, x),
        derivatives={("x", 1): lambda mp, x: mp.besseli(1, x), ("x", 2): _m_i0_d2},
        variants=[
            Variant("naive", naive_i0, "exp(|x|) * i0e(x), plain autodiff"),
            Variant("custom_jvp", custom_i0, "custom_jvp: jax.scipy.special.i0, rule I1(x)"),
            Variant("library", jsp.i0, "jax.scipy.special.i0 (e^|x| i0e(x), differentiated as a product)"),
        ],
        source="jax-ml/jax#11479 and #40627, #40628: derivatives of i0 and i0e near 0 (PR #40640)",
        notes=(
            "Measured (JAX 0.10.2, CPU): library grad is 1.0000001 at x = 0 (true I1(0) = 0, the derivative of |x| "
            "at 0 is taken as 1), 0 at x = 1e-8 (true 5e-9) and 5.0008297e-05 at 1e-4 (true 5.0000000e-05, "
            "float32): its two terms, each about I0(x), cancel to I1(x); in float16 and bfloat16 it is more "
            "than 4 ulp off at x = 0.01, 0.05 and 0.1, and sporadically up to 0.41. Its grad2 at 0 is 1.5 (true 1/2). The custom rule is as "
            "accurate as jax.scipy.special.i1 (5 ulp at x = 7.93, float32)."
        ),
        special_points=(0.0, 1e-30, 1e-8, 1e-4, 0.01, 0.05, 0.1, 0.41, 1.0, 7.93, -1e-4, 80.0),
    )
)


# --- i0e -------------------------------------------------------------------------------


def naive_i0e(x: Array) -> Array:
    """e^-|x| I0(x) multiplied out: I0 overflows while the product is still near 1/sqrt(2 pi x)."""
    return jnp.exp(-jnp.abs(x)) * jsp.i0(x)


def _m_i0e(mp: Any, x: Any) -> Any:
    return mp.exp(-abs(x)) * mp.besseli(0, x)


def _m_i0e_d1(mp: Any, x: Any) -> Any:
    """e^-|x| (I1(x) - sign(x) I0(x)); 0 at the kink x = 0 (mpmath's sign(0) is 0)."""
    return mp.exp(-abs(x)) * (mp.besseli(1, x) - mp.sign(x) * mp.besseli(0, x))


def _m_i0e_d2(mp: Any, x: Any) -> Any:
    """e^-|x| (2 I0 - 2 sign(x) I1 - I1 / x): 3/2 on both sides of 0."""
    if x == 0:
        return mp.mpf(3) / 2
    return mp.exp(-abs(x)) * (2 * mp.besseli(0, x) - 2 * mp.sign(x) * mp.besseli(1, x) - mp.besseli(1, x) / x)


register(
    make_case(
        name="i0e",
        formula="exp(-|x|) I0(x)",
        args=("x",),
        domain=REALS,
        reference=_m_i0e,
        derivatives={("x", 1): _m_i0e_d1, ("x", 2): _m_i0e_d2},
        conventions=[
            Convention("x", 1, lambda x: x == 0, 0.0, "i0e has a kink at 0 (one-sided derivatives -1 and 1): 0, their mean, as JAX's sign(0) = 0 gives"),
            Convention("x", 2, lambda x: x == 0, 1.5, "i0e'' tends to 3/2 from both sides of the kink at 0"),
        ],
        variants=[
            Variant("naive", naive_i0e, "exp(-|x|) * i0(x), plain autodiff"),
            Variant("library", jsp.i0e, "jax.scipy.special.i0e (rule i1e(x) - sign(x) i0e(x))"),
        ],
        source="jax-ml/jax#11479 and #40627: derivatives of i0e near 0 (PR #40640)",
        notes=(
            "Measured (JAX 0.10.2, CPU): naive value is NaN for x >= 88.725235 (float32), >= 17.34375 "
            "(float16), >= 89 (bfloat16): I0 overflows to inf and e^-|x| is 0 there. library grad at 0 is 0 "
            "(the mean of the one-sided -1 and 1) and its grad2 there 0.5, where both one-sided limits are 1.5. "
            "For large |x| its rule i1e(x) - sign(x) i0e(x) cancels: at x = 32180922 (float32) the grad is "
            "+7.3e-12 where the true one is -1.09e-12."
        ),
        special_points=(0.0, 1e-30, 1e-4, 1.0, 88.725235, 17.34375, 89.0, 100.0, -1e-4),
    )
)
