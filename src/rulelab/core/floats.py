"""Floating-point facts: dtypes, exact 16-bit enumeration, correct rounding of mpmath
numbers to each dtype, and ULP distance in the ordered integer encoding.

Rounding goes directly from an exact binary number to the target format (round half to
even, subnormals at reduced precision, overflow to inf) with integer arithmetic, never
through float64 first: that would double-round for the narrower dtypes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-style binary format: ``precision`` significand bits (hidden bit included),
    normal exponents ``emin..emax``, stored in ``bits`` bits."""

    name: str
    dtype: Any
    bits: int
    precision: int
    emin: int
    emax: int

    @property
    def uint(self) -> type:
        return {16: np.uint16, 32: np.uint32, 64: np.uint64}[self.bits]

    @property
    def int(self) -> type:
        return {16: np.int16, 32: np.int32, 64: np.int64}[self.bits]

    @property
    def quantum_min(self) -> int:
        """Exponent of the smallest subnormal: the finest spacing of the format."""
        return self.emin - self.precision + 1

    @property
    def max_finite(self) -> float:
        return math.ldexp(2 ** self.precision - 1, self.emax - self.precision + 1)

    @property
    def smallest_normal(self) -> float:
        return math.ldexp(1.0, self.emin)

    @property
    def smallest_subnormal(self) -> float:
        return math.ldexp(1.0, self.quantum_min)


FORMATS: dict[str, FloatFormat] = {
    "float64": FloatFormat("float64", np.dtype(np.float64), 64, 53, -1022, 1023),
    "float32": FloatFormat("float32", np.dtype(np.float32), 32, 24, -126, 127),
    "float16": FloatFormat("float16", np.dtype(np.float16), 16, 11, -14, 15),
    "bfloat16": FloatFormat("bfloat16", np.dtype(ml_dtypes.bfloat16), 16, 8, -126, 127),
}
DTYPES: tuple[str, ...] = tuple(FORMATS)
N_FINITE_FLOAT32 = 2**32 - 2**24
"""Finite float32 values: every bit pattern but the 2^24 with an all-ones exponent."""


_FORMAT_OF: dict[Any, FloatFormat] = {k: f for f in FORMATS.values() for k in (f.name, f.dtype, f.dtype.type)}


def fmt(dtype: Any) -> FloatFormat:
    """The :class:`FloatFormat` of a dtype name, numpy dtype or scalar type."""
    if isinstance(dtype, FloatFormat):
        return dtype
    try:
        return _FORMAT_OF[dtype]
    except (KeyError, TypeError):  # (another spelling of a known dtype, or an unhashable one)
        pass
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(FORMATS)}") from None


def all_finite(dtype: Any) -> np.ndarray:
    """Every finite value of a 16-bit dtype, -0 and +0 included, in bit order."""
    f = fmt(dtype)
    if f.bits != 16:
        raise ValueError(f"exhaustive enumeration is for 16-bit dtypes, not {f.name}")
    values = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(f.dtype)
    return values[np.isfinite(values.astype(np.float32))]


def to_bits(x: np.ndarray, dtype: Any) -> np.ndarray:
    """The raw unsigned bit patterns of ``x`` in ``dtype``."""
    f = fmt(dtype)
    return np.ascontiguousarray(np.asarray(x).astype(f.dtype)).view(f.uint)


def from_bits(bits: np.ndarray, dtype: Any) -> np.ndarray:
    f = fmt(dtype)
    return np.ascontiguousarray(np.asarray(bits, dtype=f.uint)).view(f.dtype)


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: Any) -> np.ndarray:
    """dULP: how many representable values of ``dtype`` lie between ``a`` and ``b``
    (0 iff equal, +0 == -0; ±inf are one step past the largest finite value), exact in
    unsigned integers for every dtype (for float64 opposite signs can be 2^63 apart).
    Inputs must not be NaN; use :mod:`rulelab.scoring.metrics` for the classified version."""
    f = fmt(dtype)
    sign = np.uint64(1) << np.uint64(f.bits - 1)
    ba, bb = to_bits(a, f).astype(np.uint64), to_bits(b, f).astype(np.uint64)
    ma, mb = ba & (sign - np.uint64(1)), bb & (sign - np.uint64(1))
    same = ((ba & sign) == (bb & sign)) | (ma == 0) | (mb == 0)
    return np.where(same, np.maximum(ma, mb) - np.minimum(ma, mb), ma + mb)


def ordered(x: np.ndarray, dtype: Any) -> np.ndarray:
    """Values of a format of at most 32 bits as counts of representable values from zero
    (negative below it; +0 and -0 both 0), in the format's signed integer type, so
    that their difference taken in int64 is ``ulp_distance``: prepared once for a
    reference, it scores many evaluations against it by one subtraction each. Inputs
    must not be NaN."""
    f = fmt(dtype)
    if f.bits > 32:
        raise ValueError(f"ordered counts formats of at most 32 bits, not {f.name}")
    b = to_bits(x, f).view(f.int)
    mag = b & f.int((1 << (f.bits - 1)) - 1)
    return np.where(b < 0, -mag, mag)


def ulp(x: np.ndarray, dtype: Any) -> np.ndarray:
    """The spacing of ``dtype`` at magnitude |x| (float64): 2^(max(e, emin) - p + 1) with
    e = floor(log2|x|); at 0 the subnormal spacing. For |x| beyond the largest finite
    value, the spacing of the top binade."""
    f = fmt(dtype)
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        _, e = np.frexp(ax)  # ax = m * 2^e with 0.5 <= m < 1, so floor(log2 ax) = e - 1
    e = np.where(ax > 0, e.astype(np.int64) - 1, f.emin)
    e = np.where(np.isinf(ax), f.emax, e)
    e = np.clip(e, f.emin, f.emax)
    return np.ldexp(1.0, (e - f.precision + 1).astype(np.int32))


def binade(x: np.ndarray) -> np.ndarray:
    """floor(log2|x|) as float64: -inf for zero, +inf for infinite, NaN for NaN."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    out = np.full(ax.shape, np.nan)
    finite_nonzero = np.isfinite(ax) & (ax > 0)
    _, e = np.frexp(np.where(finite_nonzero, ax, 1.0))
    out[finite_nonzero] = (e - 1)[finite_nonzero]
    out[ax == 0] = -np.inf
    out[np.isinf(ax)] = np.inf
    return out


# --- correct rounding of exact binary numbers ------------------------------------------


def round_exact(sign: int, man: int, exp: int, dtype: Any) -> float:
    """Round the exact number (-1)^sign * man * 2^exp (``man`` >= 0 an integer) to
    ``dtype``, round half to even with gradual underflow and overflow to inf. The
    result is returned as a Python float that is exactly representable in ``dtype``."""
    f = fmt(dtype)
    if man == 0:
        return -0.0 if sign else 0.0
    top = exp + man.bit_length() - 1  # floor(log2 |x|)
    if top < f.quantum_min - 1:  # below half the smallest subnormal: rounds to zero
        return -0.0 if sign else 0.0
    if top > f.emax:
        return -math.inf if sign else math.inf
    q = max(top - f.precision + 1, f.quantum_min)  # exponent of the target's spacing here
    if exp >= q:
        n = man << (exp - q)
    else:
        shift = q - exp
        n = man >> shift
        rem = man - (n << shift)
        half = 1 << (shift - 1)
        if rem > half or (rem == half and (n & 1)):
            n += 1
    if n == 0:
        return -0.0 if sign else 0.0
    q_top = f.emax - f.precision + 1  # spacing exponent of the top binade
    if q >= q_top and (n << (q - q_top)) > 2**f.precision - 1:
        return -math.inf if sign else math.inf
    value = math.ldexp(float(n), q)  # n < 2^(p+1) <= 2^54 and q >= -1074: exact
    return -value if sign else value


def mpf_parts(x: Any) -> tuple[int, int, int] | None:
    """(sign, man, exp) of a finite mpmath mpf, or None for inf/nan."""
    s, man, exp, _bc = x._mpf_
    if not man and exp:  # mpmath encodes inf/nan with man == 0 and a special exp
        return None
    return s, int(man), int(exp)


def double_double(x: Any) -> tuple[float, float]:
    """(hi, lo) float64s with hi = RN64(x) and lo = RN64(x - hi): the unrounded value
    to about 106 bits. Non-finite x gives (x, 0)."""
    parts = mpf_parts(x)
    if parts is None:
        return float(x), 0.0
    sign, man, exp = parts
    hi = round_exact(sign, man, exp, "float64")
    if math.isinf(hi):
        return hi, 0.0
    # x - hi exactly, as an integer times a power of two
    hs, hm, he = float_parts(hi)
    e = min(exp, he)
    diff = ((-1) ** sign) * (man << (exp - e)) - ((-1) ** hs) * (hm << (he - e))
    lo = round_exact(1 if diff < 0 else 0, abs(diff), e, "float64")
    return hi, lo


def float_parts(v: float) -> tuple[int, int, int]:
    """(sign, man, exp) of a finite Python float, exact."""
    m, e = math.frexp(v)
    sign = 1 if math.copysign(1.0, v) < 0 else 0
    man = int(abs(m) * (1 << 53))
    return sign, man, e - 53


def round_double_double(hi: np.ndarray, lo: np.ndarray, dtype: Any) -> np.ndarray:
    """Correctly round the exact sums hi + lo to ``dtype`` (an array of that dtype).
    NaN stays NaN, ±inf stays ±inf."""
    f = fmt(dtype)
    hi = np.asarray(hi, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    if f.name == "float64":
        return hi.copy()
    out = np.empty(hi.shape, dtype=np.float64)
    flat_hi, flat_lo, flat_out = hi.ravel(), lo.ravel(), out.ravel()
    for i in range(flat_hi.size):
        h, l = float(flat_hi[i]), float(flat_lo[i])
        if not math.isfinite(h):
            flat_out[i] = h
            continue
        if h == 0.0:
            flat_out[i] = h
            continue
        hs, hm, he = float_parts(h)
        if l == 0.0:
            flat_out[i] = round_exact(hs, hm, he, f)
            continue
        ls, lm, le = float_parts(l)
        e = min(he, le)
        total = ((-1) ** hs) * (hm << (he - e)) + ((-1) ** ls) * (lm << (le - e))
        flat_out[i] = round_exact(1 if total < 0 else 0, abs(total), e, f)
    return out.astype(f.dtype)
