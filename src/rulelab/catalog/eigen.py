"""The largest eigenvalue of a symmetric 2x2 matrix [[a, b], [b, c]].

lambda = m + r with m = (a + c)/2 and r = hypot((a - c)/2, b). Through
``jnp.linalg.eigh`` its derivative is v v^T for the eigenvector v of lambda, which is
right where the eigenvalues are far apart and wrong near a degenerate pair: where b is
below the rounding of a and c the computed eigenvectors are the unit vectors, and the
derivative comes out (0, 0, 1) where the true one is (1/2, 1, 1/2). The custom rule
takes the derivative from the closed form, (1 + cos)/2, sin, (1 - cos)/2 with
cos = d/r and sin = b/r, each written so that it does not cancel.

The matrix is scaled by a power of two first (the eigenvalue scales with it, cos and
sin do not), so that r does not overflow and d is not a flushed subnormal. Where m < 0,
m + r cancels, and lambda = det / (m - r) instead, det = ac - b^2 from exact products
(as LAPACK's dlaev2 takes the smaller eigenvalue from the larger one).

At a degenerate pair (a = c, b = 0) lambda is not differentiable (the vertex of a cone):
the case defines its derivative as the mean of the two eigenvalues', (1/2, 0, 1/2).
Measured with JAX 0.10.2 on CPU.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rulelab.catalog._stable import two_product
from rulelab.model.case import REALS, Convention, Variant, make_case, register

Array = Any


def naive_eigh_max(a: Array, b: Array, c: Array) -> Array:
    """The last eigenvalue jnp.linalg.eigh returns, under plain autodiff (v v^T)."""
    return jnp.linalg.eigh(jnp.array([[a, b], [b, c]]))[0][-1]


def library_eigh_max(a: Array, b: Array, c: Array) -> Array:
    """The last of jnp.linalg.eigvalsh."""
    return jnp.linalg.eigvalsh(jnp.array([[a, b], [b, c]]))[-1]


_SCALES = {  # dtype: (above this the entries are scaled by the next, below this by the last)
    "float16": (2.0**4, 2.0**-9, 2.0**-4, 2.0**10),
    "float64": (2.0**500, 2.0**-524, 2.0**-500, 2.0**520),
}
_SCALES_8_BIT_EXPONENT = (2.0**56, 2.0**-68, 2.0**-60, 2.0**64)  # float32 and bfloat16


def _scale(a: Array, b: Array, c: Array) -> Array:
    """A power of two k for which the products and sums of k*a, k*b and k*c neither
    overflow nor, unless the entries are all tiny, fall to subnormals."""
    dtype = jnp.asarray(a).dtype
    high, down, low, up = _SCALES.get(jnp.dtype(dtype).name, _SCALES_8_BIT_EXPONENT)
    big = jnp.maximum(jnp.maximum(jnp.abs(a), jnp.abs(b)), jnp.abs(c))
    k = jnp.where(big > high, down, jnp.where(big < low, up, 1.0))
    return k.astype(dtype)


def _parts(a: Array, b: Array, c: Array) -> tuple[Array, ...]:
    """The scaled entries, k, m = (a + c)/2, d = (a - c)/2 and r = hypot(d, b), scaled."""
    k = _scale(a, b, c)
    a, b, c = a * k, b * k, c * k
    d = (a - c) / 2
    return a, b, c, k, (a + c) / 2, d, jnp.hypot(d, b)


@jax.custom_jvp
def custom_eigh_max(a: Array, b: Array, c: Array) -> Array:
    """m + r where m >= 0; det / (m - r) where m < 0; both of the scaled matrix."""
    a, b, c, k, m, _, r = _parts(a, b, c)
    ac, ac_err = two_product(a, c)
    bb, bb_err = two_product(b, b)
    det = (ac - bb) + (ac_err - bb_err)
    below = m - r
    return jnp.where(m >= 0, m + r, det / jnp.where(below == 0, 1, below)) / k


@custom_eigh_max.defjvp
def _custom_eigh_max_jvp(primals: tuple, tangents: tuple) -> tuple:
    a0, b0, c0 = primals
    _, b, _, _, _, d, r = _parts(a0, b0, c0)
    # a = c exactly: cos = 0 and sin = sign(b) however small b is after scaling
    level = a0 == c0
    degenerate = level & (b0 == 0)
    safe = jnp.where(r == 0, 1, r)
    cos = jnp.where(level, 0, d / safe)
    sin = jnp.where(level, jnp.sign(b0), b / safe)
    # (1 + cos)/2 cancels where d < 0 and |b| << |d|: there it is b^2 / (2 r (r - d)),
    # sin * b / (2 (r - d)); (1 - cos)/2 likewise where d > 0
    up = jnp.where(level | (d >= 0), (1 + cos) / 2, sin * (b / jnp.where(r - d == 0, 1, 2 * (r - d))))
    down = jnp.where(level | (d <= 0), (1 - cos) / 2, sin * (b / jnp.where(r + d == 0, 1, 2 * (r + d))))
    grads = (jnp.where(degenerate, 0.5, up), jnp.where(degenerate, 0.0, sin), jnp.where(degenerate, 0.5, down))
    return custom_eigh_max(*primals), sum(t * g for t, g in zip(tangents, grads))


def _m_parts(mp: Any, a: Any, b: Any, c: Any) -> tuple[Any, Any]:
    d = (a - c) / 2
    return d, mp.hypot(d, b)


def _m_d1(which: str) -> Any:
    def d1(mp: Any, a: Any, b: Any, c: Any) -> Any:
        d, r = _m_parts(mp, a, b, c)
        if r == 0:
            raise ZeroDivisionError("a degenerate pair: not differentiable (the case's convention applies)")
        return {"a": (1 + d / r) / 2, "b": b / r, "c": (1 - d / r) / 2}[which]

    return d1


def _m_d2(which: str) -> Any:
    def d2(mp: Any, a: Any, b: Any, c: Any) -> Any:
        d, r = _m_parts(mp, a, b, c)  # r == 0: ZeroDivisionError, undefined
        return {"a": b * b / (4 * r**3), "b": d * d / r**3, "c": b * b / (4 * r**3)}[which]

    return d2


def _degenerate(a: float, b: float, c: float) -> bool:
    return a == c and b == 0


_MEAN = "at a degenerate pair (a = c, b = 0), the mean of the two eigenvalues' derivatives"

register(
    make_case(
        name="eigh_max",
        formula="largest eigenvalue of [[a, b], [b, c]] = (a + c)/2 + hypot((a - c)/2, b)",
        args=("a", "b", "c"),
        domain=REALS,
        reference=lambda mp, a, b, c: (a + c) / 2 + _m_parts(mp, a, b, c)[1],
        derivatives={**{(x, 1): _m_d1(x) for x in "abc"}, **{(x, 2): _m_d2(x) for x in "abc"}},
        conventions=[
            Convention("a", 1, _degenerate, 0.5, f"1/2 {_MEAN}"),
            Convention("b", 1, _degenerate, 0.0, f"0 {_MEAN}"),
            Convention("c", 1, _degenerate, 0.5, f"1/2 {_MEAN}"),
        ],
        variants=[
            Variant("naive", naive_eigh_max, "jnp.linalg.eigh(...)[0][-1], plain autodiff"),
            Variant("custom_jvp", custom_eigh_max, "custom_jvp: closed form of the scaled matrix, rule from cos = d/r and sin = b/r"),
            Variant("library", library_eigh_max, "jnp.linalg.eigvalsh(...)[-1]"),
        ],
        source="jax-ml/jax#669, #4646 and #10527: eigh's gradient at and near degenerate eigenvalues",
        notes=(
            "Measured (JAX 0.10.2, CPU): the NaN of the reports is gone; at a degenerate pair eigh and "
            "eigvalsh give the gradient (0, 0, 1), one eigenvalue's, where the case's convention is the mean "
            "(1/2, 0, 1/2). Near one they are wrong: at (1, 1e-20, 1) they give (0, 0, 1) where the true "
            "gradient is (1/2, 1, 1/2), since b is far below the rounding of a and c and the computed "
            "eigenvectors are the unit vectors (float32). jnp.linalg.eigh and eigvalsh refuse float16 and "
            "bfloat16 on CPU (Unsupported dtype): those results are errors."
        ),
        # (few distinct values per argument: a three-argument sweep crosses each with the others' grids)
        special_points=((1.0, 0.0, 1.0), (1.0, 1e-20, 1.0), (0.0, 0.0, 0.0), (2.0, 1.0, 0.0), (1.0, 0.0, 1.0000001), (0.0, 1e-20, -2.0)),
    )
)
