"""Vectorised float64 references for the fast tier (``Case.fast_reference``).

Each is written so that float64 neither overflows nor cancels where the float32 inputs
reach: exponentials only of -|x|, log1p and expm1 where their arguments are small, and
products instead of quotients of overflowing terms. They are never trusted as they
stand: ``rulelab.reference.fast`` measures each against mpmath before a run uses it.
"""

from __future__ import annotations

import numpy as np

LN2 = float(np.log(2.0))


def sigmoid(x: np.ndarray) -> np.ndarray:
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def sigmoid_d1(x: np.ndarray) -> np.ndarray:
    """s(x) s(-x) = e^-|x| / (1 + e^-|x|)^2 (even, no cancellation)."""
    z = np.exp(-np.abs(x))
    return z / (1.0 + z) ** 2


def sigmoid_d2(x: np.ndarray) -> np.ndarray:
    return -sigmoid_d1(x) * np.tanh(x / 2.0)


def softplus(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -softplus(-x)


def neg_sigmoid_d1(x: np.ndarray) -> np.ndarray:
    return -sigmoid_d1(x)


def sigmoid_of_minus(x: np.ndarray) -> np.ndarray:
    return sigmoid(-x)


def sqrt_d1(x: np.ndarray) -> np.ndarray:
    return 0.5 / np.sqrt(x)


def sqrt_d2(x: np.ndarray) -> np.ndarray:
    return -0.25 / (x * np.sqrt(x))


def x_over_1p_sqrt(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.sqrt(x))


def x_over_1p_sqrt_d1(x: np.ndarray) -> np.ndarray:
    r = np.sqrt(x)
    return (r + 2.0) / (2.0 * (r + 1.0) ** 2)


def x_over_1p_sqrt_d2(x: np.ndarray) -> np.ndarray:
    r = np.sqrt(x)
    return -(r + 3.0) / (4.0 * r * (r + 1.0) ** 3)


def log1mexp(x: np.ndarray) -> np.ndarray:
    """log(1 - e^-x), x > 0: log(-expm1(-x)) below ln 2, log1p(-e^-x) above (Maechler)."""
    return np.where(x < LN2, np.log(-np.expm1(-np.minimum(x, LN2))), np.log1p(-np.exp(-np.maximum(x, LN2))))


def log1mexp_d1(x: np.ndarray) -> np.ndarray:
    return 1.0 / np.expm1(x)


def log1mexp_d2(x: np.ndarray) -> np.ndarray:
    """-e^x / expm1(x)^2 as -1 / (expm1(x) (1 - e^-x)): no inf / inf for large x."""
    return -1.0 / (np.expm1(x) * -np.expm1(-x))


def cbrt_d1(t: np.ndarray) -> np.ndarray:
    return 1.0 / (3.0 * np.cbrt(np.abs(t)) ** 2)


def cbrt_d2(t: np.ndarray) -> np.ndarray:
    return -2.0 * np.sign(t) / (9.0 * np.cbrt(np.abs(t)) ** 5)


sqrt = np.sqrt
cbrt = np.cbrt
"""Correctly rounded in float64 (sqrt) or within an ulp (cbrt): the values themselves."""


def tanh_d1(x: np.ndarray) -> np.ndarray:
    """sech(x)^2 as (2 e^-|x| / (1 + e^-2|x|))^2."""
    z = np.exp(-np.abs(x))
    return (2.0 * z / (1.0 + z * z)) ** 2


def tanh_d2(x: np.ndarray) -> np.ndarray:
    return -2.0 * np.tanh(x) * tanh_d1(x)


def elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


def elu_d1(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0)))


def elu_d2(x: np.ndarray) -> np.ndarray:
    """0 for x > 0, e^x for x <= 0 (the convention at 0: the left branch)."""
    return np.where(x > 0, 0.0, np.exp(np.minimum(x, 0.0)))


def entr(x: np.ndarray) -> np.ndarray:
    safe = np.where(x == 0, 1.0, x)
    return np.where(x == 0, 0.0, -x * np.log(safe))


def entr_d2(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(x == 0, -np.inf, -1.0 / np.where(x == 0, 1.0, x))


# --- two arguments -------------------------------------------------------------------------


def logaddexp(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """max + log1p(e^-|x - y|): no overflow, and x - y is exact or irrelevant for 16-bit
    inputs (their exponents differ by more than 40 only where e^-|x - y| is negligible)."""
    return np.maximum(x, y) + np.log1p(np.exp(-np.abs(x - y)))


def logaddexp_dx(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d/dx = sigmoid(x - y)."""
    return sigmoid(x - y)


def logaddexp_dy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return sigmoid(y - x)


def logaddexp_d2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """d2/dx2 = d2/dy2 = s(x - y) s(y - x)."""
    return sigmoid_d1(x - y)


hypot = np.hypot
"""Within an ulp in float64, scaled: no overflow or underflow of the squares."""


def hypot_dx(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x / np.hypot(x, y)


def hypot_dy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y / np.hypot(x, y)


def hypot_dxx(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y^2 / h^3 as (y / h)^2 / h: no overflow of the cube."""
    h = np.hypot(x, y)
    return (y / h) ** 2 / h


def hypot_dyy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    h = np.hypot(x, y)
    return (x / h) ** 2 / h


def xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def xlogy_dx(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.log(y) + 0.0 * x


def xlogy_dy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.where(x == 0, 0.0, x / np.where(x == 0, 1.0, y))


def xlogy_dyy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-x / y^2 as -(x / y) / y: no overflow of the square."""
    return np.where(x == 0, 0.0, -(x / np.where(x == 0, 1.0, y)) / np.where(x == 0, 1.0, y))


def zero2(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.zeros(np.broadcast(x, y).shape)
