"""The fast reference tier: vectorised float64 references, trusted only as far as measured.

The pitfall: a float64 formula is not a reference. It cancels, overflows or underflows
where mpmath does not, and nothing in its output says so. Sweeping every float32 input,
or every pair of 16-bit inputs, needs one anyway (mpmath at 10-40 us a point is tens of
core-hours per transform), so a case's ``fast_reference`` is measured before use:
against confirmed mpmath references at points in every binade of the dtype (every pair
of binades for a case of two arguments) of each sign, the case's special points and
every point of the cache, its relative error is taken, and the bound used is ``SAFETY``
times the worst seen, never below ``FLOOR``. A fast value then decides a point only when
the whole interval the bound allows rounds to one value of the dtype; elsewhere (a value
near a rounding boundary, a non-finite value, and a tiny value, one float64 may have
computed with gradual underflow, in a binade where the validation did not see the
reference tiny too) mpmath decides.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.errors import UsageError
from rulelab.core.floats import fmt
from rulelab.model.case import Case
from rulelab.reference.cache import load_cache, reference_key
from rulelab.reference.compute import references
from rulelab.reference.settle import is_unsettled

SAFETY = 8.0
"""The bound is this many times the worst relative error the validation saw."""
FLOOR = 2.0**-50
"""The least bound: a few float64 rounding errors of a well-written formula."""
MARGIN_BITS = 12
"""A fast reference whose bound exceeds 2^-(precision + MARGIN_BITS) of the dtype
(2^-36 for float32, 2^-20 for bfloat16) is refused: its values would sit near a rounding
boundary too often to decide points (and it is likely wrong)."""
PER_BINADE = 8
"""Validation points per binade and sign of a one-argument case (one per pair of
binades for two arguments)."""
MAX_ARGS = 2
"""The fast tier validates cases of at most this many arguments (every binade pair)."""
Points = tuple[np.ndarray, ...]
"""One float64 array per argument of the case."""


class FastReferenceError(UsageError):
    """A case has no fast reference for what is asked, or its fast reference failed
    validation; the message names case, derivative and where it is off."""


def max_bound(dtype: Any) -> float:
    """The largest bound accepted for ``dtype`` (see :data:`MARGIN_BITS`)."""
    return 2.0 ** -(fmt(dtype).precision + MARGIN_BITS)


TINY = 2.0**-1000
"""Below this a float64 formula may have lost its relative accuracy to gradual underflow,
so relative errors are measured (and trusted) only above it; below it every dtype swept
rounds to zero, and only the class matters: fast value and reference both tiny."""


def binade_of(x: np.ndarray, dtype: Any) -> np.ndarray:
    """The binade of each value in ``dtype``: floor(log2|x|) for normal numbers, emin - 1
    for subnormals and zero (one bin), emax + 1 for infinities."""
    f = fmt(dtype)
    e = (np.asarray(x).astype(f.dtype).view(f.uint).astype(np.int64) >> (f.precision - 1)) & ((1 << (f.bits - f.precision)) - 1)
    return e - f.emax


def _arg_key(x: np.ndarray, dtype: Any) -> np.ndarray:
    return np.where(np.signbit(x), -1, 1) * 1000 + binade_of(x, dtype) + 2048


def bin_key(points: np.ndarray | Points, dtype: Any = "float32") -> np.ndarray:
    """One integer per point for its signs and binades in ``dtype``, argument by argument
    (12 bits each: sign * 1000 + binade, offset by 2048)."""
    points = (points,) if isinstance(points, np.ndarray) else points
    key = np.zeros(np.shape(points[0]), dtype=np.int64)
    for i, x in enumerate(points):
        key |= _arg_key(np.asarray(x, dtype=np.float64), dtype) << (12 * i)
    return key


def key_bins(key: int, nargs: int) -> list[tuple[int, int]]:
    """The (sign, binade) of each argument that :func:`bin_key` packed in ``key``."""
    out = []
    for i in range(nargs):
        k = ((key >> (12 * i)) & 0xFFF) - 2048
        sign = 1 if k > 0 else -1
        out.append((sign, k - sign * 1000))
    return out


def _where(args: Sequence[str], bins: list[tuple[int, int]], dtype: Any) -> str:
    return ", ".join(f"{a} in {'-' if s < 0 else '+'}binade {b}" for a, (s, b) in zip(args, bins)) + f" ({fmt(dtype).name})"


def fast_function(case: Case, arg: str, order: int) -> Callable[..., Any]:
    """The case's fast reference for a derivative (order 0: the value), or a
    FastReferenceError saying what the case needs."""
    fn = case.fast_reference.get((arg, order))
    if fn is None:
        what = "the value" if order == 0 else f"derivative {order} in {arg}"
        raise FastReferenceError(
            f"case {case.name!r} has no fast reference for {what}: give make_case(..., fast_reference={{({arg!r}, {order}): "
            f"f}}) with f({', '.join(case.args)}) a vectorised float64 numpy function, so every input can be swept"
        )
    return fn


def evaluate_fast(case: Case, arg: str, order: int, points: np.ndarray | Points) -> np.ndarray:
    """The fast reference at ``points`` (one array per argument), as float64."""
    points = (points,) if isinstance(points, np.ndarray) else points
    with np.errstate(all="ignore"):
        xs = [np.asarray(x, dtype=np.float64) for x in points]
        return np.asarray(fast_function(case, arg, order)(*xs), dtype=np.float64) * np.ones(xs[0].shape)


def _binade_values(dtype: Any, per: int, inside: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray]:
    """Per finite binade of ``dtype`` and sign, ``per`` values (mantissas spread evenly,
    the binade's ends included; the subnormals' binade from the least one up)."""
    f = fmt(dtype)
    mant_bits = f.precision - 1
    mant = np.unique(np.linspace(0, (1 << mant_bits) - 1, per).astype(np.int64))
    out = []
    for e in range(0, 2 * f.emax + 1):  # biased exponents of the finite values
        m = np.maximum(mant, 1) if e == 0 else mant
        for sign in (0, 1):
            bits = ((sign << (f.bits - 1)) | (e << mant_bits) | m).astype(f.uint)
            x = bits.view(f.dtype).astype(np.float64)
            x = x[inside(x)]
            if x.size:
                out.append(x)
    return out


def validation_points(case: Case, dtype: Any = "float32") -> Points:
    """Where a fast reference is checked, inside the domain, as float64 arrays: for one
    argument ``PER_BINADE`` values of ``dtype`` in every binade of each sign; for two, a
    value in every pair of such binades (mantissas varying from pair to pair); and in
    every case ±0, the least subnormals, the infinities the domain holds and the case's
    special points."""
    f, nargs = fmt(dtype), len(case.args)
    if nargs > MAX_ARGS:
        raise FastReferenceError(f"case {case.name!r} has {nargs} arguments; the fast tier validates cases of at most {MAX_ARGS}")
    extra = np.array([0.0, -0.0, f.smallest_subnormal, -f.smallest_subnormal, 2 * f.smallest_subnormal, math.inf, -math.inf])
    per_arg = []
    for dom in case.domain:
        inside = lambda x, dom=dom: np.asarray(dom.contains(x), dtype=bool)  # noqa: E731
        bins = _binade_values(dtype, PER_BINADE if nargs == 1 else 1, inside)
        per_arg.append((bins, extra[inside(extra)]))
    if nargs == 1:
        bins, ext = per_arg[0]
        cols: Points = (np.concatenate([*bins, ext]),)
    else:
        (bx, ex), (by, ey) = per_arg
        n, m = len(bx), len(by)
        i, j = np.divmod(np.arange(n * m), m)
        # one value of each binade pair, its position in the binade varying with the pair
        x = _pick(bx, i, (i * 7 + j * 3))
        y = _pick(by, j, (i * 5 + j * 11))
        rx = np.concatenate([b[:1] for b in bx] + [ex])
        ry = np.concatenate([b[:1] for b in by] + [ey])
        gx, gy = np.meshgrid(rx, ry, indexing="ij")  # every extra against a value of every binade
        keep = np.isin(gx, ex) | np.isin(gy, ey)
        cols = (np.concatenate([x, gx[keep]]), np.concatenate([y, gy[keep]]))
    special = [p for p in case.special_points if not any(math.isnan(c) for c in p)]
    cols = tuple(np.concatenate([c, np.array([p[k] for p in special], dtype=np.float64)]) for k, c in enumerate(cols))
    with np.errstate(over="ignore"):  # (a special point beyond the dtype's range becomes an infinity, as the dtype reads it)
        cols = tuple(c.astype(f.dtype).astype(np.float64) if f.name != "float64" else c for c in cols)
    return _inside_unique(case, cols)


def _pick(bins: list[np.ndarray], which: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``bins[which[t]][k[t] % len(bins[which[t]])]`` for every t, without a loop."""
    sizes = np.array([b.size for b in bins])
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.concatenate(bins)[starts[which] + k % sizes[which]]


def _inside_unique(case: Case, cols: Points) -> Points:
    """The distinct points of ``cols`` inside the case's domain (in bit order)."""
    bits = np.stack([c.view(np.uint64) for c in cols], axis=1)
    bits = bits[np.lexsort(bits.T[::-1])]  # (the order of np.unique(axis=0), without its slow sort of records)
    bits = bits[np.r_[True, (bits[1:] != bits[:-1]).any(axis=1)]]
    cols = tuple(np.ascontiguousarray(bits[:, k]).view(np.float64) for k in range(len(cols)))
    inside = np.ones(cols[0].shape, dtype=bool)
    for dom, c in zip(case.domain, cols):
        inside &= np.asarray(dom.contains(c), dtype=bool)
    return tuple(c[inside] for c in cols)


@dataclass(frozen=True)
class Validation:
    """What validating one fast reference found: the ``bound`` it is trusted to in
    ``dtype``, the points it was checked at, the worst relative error and its input,
    and the binades (:func:`bin_key`) where a tiny fast value (below :data:`TINY`, zero
    included) was confirmed: every reference there is tiny too."""

    case: str
    arg: str
    order: int
    bound: float
    n_points: int
    worst_rel: float
    worst_at: tuple[float, ...]
    tiny_binades: frozenset[int]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        out = {"dtype": self.dtype, "bound": self.bound, "n_points": self.n_points, "worst_rel": self.worst_rel, "worst_at": list(self.worst_at)}
        if len(self.worst_at) == 1:
            return {**out, "tiny_binades": [list(key_bins(k, 1)[0]) for k in sorted(self.tiny_binades)]}
        return {**out, "tiny_binade_pairs": len(self.tiny_binades)}  # (tens of thousands of pairs: counted, not listed)


def _cached_points(key: str, nargs: int) -> Points:
    cached = load_cache(key)
    if not cached:
        return tuple(np.zeros(0) for _ in range(nargs))
    bits = np.frombuffer(b"".join(cached), dtype=np.uint64).reshape(len(cached), -1)
    if bits.shape[1] != nargs:
        return tuple(np.zeros(0) for _ in range(nargs))
    return tuple(np.ascontiguousarray(bits[:, k]).view(np.float64) for k in range(nargs))


def validate(case: Case, arg: str, order: int, dtype: Any = "float32", pool: Executor | None = None, tasks: int = 1) -> Validation:
    """Measure the case's fast reference against confirmed mpmath references (computed
    in ``pool`` where missing from the cache) at :func:`validation_points` and every
    cached point within ``dtype``'s range; FastReferenceError naming the binades where
    its bound exceeds :func:`max_bound`."""
    f, nargs = fmt(dtype), len(case.args)
    small = TINY
    cached = _cached_points(reference_key(case, order, arg), nargs)
    within = np.ones(cached[0].shape, dtype=bool)
    for c in cached:
        within &= ~np.isnan(c) & (np.abs(c) <= f.max_finite) | np.isinf(c)
    pts = validation_points(case, f)
    pts = tuple(np.concatenate([p, c]) for p, c in zip(pts, _tiny_corners(case, arg, order, f, pts)))
    points = _inside_unique(case, tuple(np.concatenate([p, c[within]]) for p, c in zip(pts, cached)))
    hi, lo = references(case, order, arg, points, pool, tasks=tasks)
    fast = evaluate_fast(case, arg, order, points)
    settled = ~is_unsettled(hi, lo) & ~np.isnan(hi)
    ref = hi + lo
    with np.errstate(all="ignore"):
        tiny_ref, tiny_fast = np.abs(ref) < small, np.abs(fast) < small
        # a non-finite fast value never decides a point (mpmath does), so it is not scored
        scored = settled & np.isfinite(ref) & np.isfinite(fast) & ~(tiny_ref & tiny_fast)
        rel = np.where(scored, np.abs(fast - ref) / np.maximum(np.abs(ref), small), 0.0)
    rel = np.where(np.isnan(rel), np.inf, rel)
    i = int(np.argmax(rel)) if rel.size else 0
    worst = float(rel[i]) if rel.size else 0.0
    at = tuple(float(p[i]) for p in points) if rel.size else (0.0,) * nargs
    bound = max(SAFETY * worst, FLOOR)
    what = "the value" if order == 0 else f"derivative {order} in {arg}"
    keys = bin_key(points, f)
    if bound > max_bound(f):
        where = ", ".join(f"{a} = {v!r}" for a, v in zip(case.args, at))
        raise FastReferenceError(
            f"case {case.name!r}: the fast reference for {what} is off by {worst:.3g} relative at {where} "
            f"({_where(case.args, key_bins(int(keys[i]), nargs), f)}), more than {max_bound(f) / SAFETY:.3g}; fix it, or sweep "
            "that derivative with mpmath alone"
        )
    tiny_keys = frozenset(set(keys[tiny_fast].tolist()) - set(keys[tiny_fast & ~(tiny_ref & settled)].tolist()))
    return Validation(case.name, arg, order, bound, int(points[0].size), worst, at, tiny_keys, f.name)


def _tiny_corners(case: Case, arg: str, order: int, dtype: Any, pts: Points) -> Points:
    """For two arguments: the corners of each pair of binades (each argument's least and
    largest magnitude there) where the fast value is tiny while at the pair's validation
    point it is not. Where a function falls below :data:`TINY` inside a pair of binades,
    these put the tiny part of the pair to the test, so that it can be trusted as tiny
    (its points otherwise all go to mpmath)."""
    if len(case.args) != 2:
        return tuple(np.zeros(0) for _ in pts)
    ends = []
    for dom in case.domain:
        bins = _binade_values(dtype, 2, lambda x, dom=dom: np.asarray(dom.contains(x), dtype=bool))
        ends.append([b[[0, -1]] for b in bins])
    corners = [[], []]
    for ex in ends[0]:
        for ey in ends[1]:
            gx, gy = np.meshgrid(ex, ey, indexing="ij")
            corners[0].append(gx.ravel())
            corners[1].append(gy.ravel())
    cx, cy = np.concatenate(corners[0]), np.concatenate(corners[1])
    small_corner = np.abs(evaluate_fast(case, arg, order, (cx, cy))) < TINY
    small_point = np.abs(evaluate_fast(case, arg, order, pts)) < TINY
    seen = np.isin(bin_key((cx, cy), dtype), bin_key(pts, dtype)[small_point])
    keep = small_corner & ~seen
    return cx[keep], cy[keep]


def decided(fast: np.ndarray, points: np.ndarray | Points, v: Validation) -> np.ndarray:
    """Where the fast values decide the reference rounded to ``v.dtype``: finite and not
    tiny with the whole interval ``fast * (1 ± bound)`` (widened by a few float64 ulps)
    strictly between the rounding boundaries around the fast value's rounding, or tiny
    in a binade where the validation saw only tiny references."""
    return decided_rounding(fast, points, v)[0]


def _boundaries(r: np.ndarray, f: Any) -> tuple[np.ndarray, np.ndarray]:
    """The points halfway from each value ``r`` of format ``f`` to its neighbours below
    and above (float64, exact); past the largest finite value, halfway to 2^(emax + 1)."""
    beyond = math.ldexp(1.0, f.emax + 1)
    r64 = r.astype(np.float64)
    out = []
    for way in (-np.inf, np.inf):
        n = np.nextafter(r, np.array(way, dtype=f.dtype)).astype(np.float64)
        out.append((r64 + np.where(np.isinf(n) & np.isfinite(r64), np.copysign(beyond, n), n)) / 2)
    return out[0], out[1]


def decided_rounding(fast: np.ndarray, points: np.ndarray | Points, v: Validation) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decided`, and the fast values rounded to ``v.dtype`` (a correctly rounded
    cast: where decided, the reference's rounding)."""
    f = fmt(v.dtype)
    fast = np.asarray(fast, dtype=np.float64)
    with np.errstate(all="ignore"):
        r = fast.astype(f.dtype)
        below, above = _boundaries(r, f)
        width = np.abs(fast) * (v.bound + 2.0**-50)  # (and a few float64 ulps: the rounding of these operations)
        lo, hi = fast - width, fast + width
        small = np.abs(fast) < TINY
        ok = np.isfinite(fast) & ~small & (lo > below) & (hi < above)
    return decided_tiny(ok, fast, points, v), r


def decided_tiny(ok: np.ndarray, fast: np.ndarray, points: np.ndarray | Points, v: Validation) -> np.ndarray:
    """``ok`` (where the fast values above :data:`TINY` decide) with the tiny fast values
    decided where their binade's are (``v.tiny_binades``)."""
    if not v.tiny_binades:
        return ok
    at = np.flatnonzero(np.abs(fast) < TINY)
    if at.size:
        pts = (points,) if isinstance(points, np.ndarray) else points
        ok[at] = _tiny_table(v, len(pts))[_sign_exponent(tuple(np.asarray(p)[at] for p in pts), v.dtype)]
    return ok


def _sign_exponent(points: Points, dtype: Any) -> np.ndarray:
    """One integer per point: the sign and exponent bits of each coordinate in ``dtype``,
    the first argument's highest (what :func:`bin_key` reads, as a table index)."""
    f = fmt(dtype)
    width = f.bits - f.precision + 1
    code = np.zeros(np.shape(points[0]), dtype=np.int64)
    for x in points:
        code = (code << width) | (np.asarray(x).astype(f.dtype).view(f.uint) >> (f.precision - 1)).astype(np.int64)
    return code


@functools.lru_cache(maxsize=16)
def _tiny_table(v: Validation, nargs: int) -> np.ndarray:
    """For every :func:`_sign_exponent` code of ``nargs`` coordinates, whether its binades
    are among ``v.tiny_binades``: a lookup per point, not a search."""
    f = fmt(v.dtype)
    signs_exponents = np.arange(1 << (f.bits - f.precision + 1))
    first = (signs_exponents << (f.precision - 1)).astype(f.uint).view(f.dtype).astype(np.float64)  # ±0, ±2^e, ±inf
    grid = np.meshgrid(*([first] * nargs), indexing="ij")
    return np.isin(bin_key(tuple(g.ravel() for g in grid), v.dtype), np.fromiter(v.tiny_binades, dtype=np.int64))
