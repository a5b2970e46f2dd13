"""The fast reference tier: vectorised float64 references, trusted only as far as measured.

The pitfall: a float64 formula is not a reference. It cancels, overflows or underflows
where mpmath does not, and nothing in its output says so. Sweeping every float32 input
needs one anyway (mpmath at 10-40 us a point is tens of core-hours per transform), so
a case's ``fast_reference`` is measured before use: against confirmed mpmath references
at points in every float32 binade of each sign, the case's special points and every
point of the cache, its relative error is taken, and the bound used is ``SAFETY`` times
the worst seen, never below ``FLOOR``. A fast value then decides a point only when the
whole interval the bound allows rounds to one float32 value; elsewhere (a value near a
rounding boundary, a non-finite value, and a tiny value, one that rounds to zero, in a
binade where the validation did not see the reference tiny too) mpmath decides.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.errors import UsageError
from rulelab.model.case import Case
from rulelab.reference.cache import load_cache, reference_key
from rulelab.reference.compute import references
from rulelab.reference.settle import is_unsettled

SAFETY = 8.0
"""The bound is this many times the worst relative error the validation saw."""
FLOOR = 2.0**-50
"""The least bound: a few float64 rounding errors of a well-written formula."""
MAX_BOUND = 2.0**-36
"""A fast reference whose bound exceeds this is refused: its values would sit near a
float32 rounding boundary too often to decide points (and it is likely wrong)."""
PER_BINADE = 8
"""Validation points per float32 binade and sign."""
TINY = 2.0**-151
"""Below this a value rounds to a float32 zero whatever its relative error (below one
half): there only the class matters, fast and reference both tiny."""


class FastReferenceError(UsageError):
    """A case has no fast reference for what is asked, or its fast reference failed
    validation; the message names case, derivative and where it is off."""


def binade32(x: np.ndarray) -> np.ndarray:
    """The float32 binade of each input: floor(log2|x|) for normal numbers, -127 for
    subnormals and zero (one bin), 128 for infinities."""
    e = (np.asarray(x, dtype=np.float32).view(np.uint32) >> 23) & 0xFF
    return e.astype(np.int64) - 127


def fast_function(case: Case, arg: str, order: int) -> Callable[..., Any]:
    """The case's fast reference for a derivative (order 0: the value), or a
    FastReferenceError saying what the case needs."""
    fn = case.fast_reference.get((arg, order))
    if fn is None:
        what = "the value" if order == 0 else f"derivative {order} in {arg}"
        raise FastReferenceError(
            f"case {case.name!r} has no fast reference for {what}: give make_case(..., fast_reference={{({arg!r}, {order}): "
            "f}) with f a vectorised float64 numpy function, so every float32 input can be swept"
        )
    return fn


def evaluate_fast(case: Case, arg: str, order: int, x: np.ndarray) -> np.ndarray:
    """The fast reference at ``x`` (float64), as float64."""
    with np.errstate(all="ignore"):
        return np.asarray(fast_function(case, arg, order)(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def validation_points(case: Case) -> np.ndarray:
    """``PER_BINADE`` float32 values in every binade of each sign (mantissas spread
    evenly, the binade's ends included), ±0, the least subnormals and the case's special
    points, inside the domain, as float64."""
    exps = np.arange(1, 255, dtype=np.uint32)
    mant = np.linspace(0, (1 << 23) - 1, PER_BINADE).astype(np.uint32)
    bits = (exps[:, None] << 23 | mant[None, :]).ravel()
    sub = np.array([1, 2, 3, 1 << 10, (1 << 22) + 1, (1 << 23) - 1], dtype=np.uint32)
    pos = np.concatenate([bits, sub, [0]]).view(np.float32).astype(np.float64)
    x = np.concatenate([pos, -pos, [p[0] for p in case.special_points if np.isfinite(p[0])]])
    x = np.unique(x.astype(np.float32).astype(np.float64))
    return x[np.asarray(case.domain[0].contains(x), dtype=bool)]


def bin_key(x: np.ndarray) -> np.ndarray:
    """One integer per (sign, float32 binade) of the inputs: sign * 1000 + binade32."""
    return np.where(np.signbit(x), -1, 1) * 1000 + binade32(x)


@dataclass(frozen=True)
class Validation:
    """What validating one fast reference found: the ``bound`` it is trusted to, the
    points it was checked at, the worst relative error and its input, and the input
    binades (:func:`bin_key`) where a tiny fast value (below :data:`TINY`, zero
    included) was confirmed: every reference there is tiny too."""

    case: str
    arg: str
    order: int
    bound: float
    n_points: int
    worst_rel: float
    worst_at: float
    tiny_binades: frozenset[int]

    def to_dict(self) -> dict[str, Any]:
        return {"bound": self.bound, "n_points": self.n_points, "worst_rel": self.worst_rel, "worst_at": self.worst_at,
                "tiny_binades": [(1 if k > 0 else -1, k - (1000 if k > 0 else -1000)) for k in sorted(self.tiny_binades)]}


def validate(case: Case, arg: str, order: int, pool: Executor | None = None, tasks: int = 1) -> Validation:
    """Measure the case's fast reference against confirmed mpmath references (computed
    in ``pool`` where missing from the cache) at :func:`validation_points` and every
    cached point; FastReferenceError when its bound exceeds ``MAX_BOUND``."""
    key = reference_key(case, order, arg)
    cached = load_cache(key)
    cached_x = np.array([np.frombuffer(b, dtype=np.uint64)[0] for b in cached], dtype=np.uint64).view(np.float64) if cached else np.zeros(0)
    x = np.unique(np.concatenate([validation_points(case), cached_x[np.isfinite(cached_x) & (np.abs(cached_x) <= np.finfo(np.float32).max)]]))
    x = x[np.asarray(case.domain[0].contains(x), dtype=bool)]
    hi, lo = references(case, order, arg, (x,), pool, tasks=tasks)
    fast = evaluate_fast(case, arg, order, x)
    settled = ~is_unsettled(hi, lo) & ~np.isnan(hi)
    ref = hi + lo
    with np.errstate(all="ignore"):
        tiny_ref, tiny_fast = np.abs(ref) < TINY, np.abs(fast) < TINY
        # a non-finite fast value never decides a point (mpmath does), so it is not scored
        scored = settled & np.isfinite(ref) & np.isfinite(fast) & ~(tiny_ref & tiny_fast)
        rel = np.where(scored, np.abs(fast - ref) / np.maximum(np.abs(ref), TINY), 0.0)
    rel = np.where(np.isnan(rel), np.inf, rel)
    i = int(np.argmax(rel)) if rel.size else 0
    worst = float(rel[i]) if rel.size else 0.0
    bound = max(SAFETY * worst, FLOOR)
    what = "the value" if order == 0 else f"derivative {order} in {arg}"
    if bound > MAX_BOUND:
        raise FastReferenceError(
            f"case {case.name!r}: the fast reference for {what} is off by {worst:.3g} relative at {arg} = {x[i]!r} "
            f"(float32 binade {int(binade32(x[i:i + 1])[0])}), more than {MAX_BOUND / SAFETY:.3g}; fix it, or sweep that "
            "derivative with mpmath alone"
        )
    key = bin_key(x)
    tiny = frozenset(set(key[tiny_fast].tolist()) - set(key[tiny_fast & ~(tiny_ref & settled)].tolist()))
    return Validation(case.name, arg, order, bound, int(x.size), worst, float(x[i]) if x.size else 0.0, tiny)


def decided(fast: np.ndarray, x: np.ndarray, v: Validation) -> np.ndarray:
    """Where the fast values decide the float32 reference: finite and not tiny with the
    whole interval ``fast * (1 ± bound)`` (widened by a float64 ulp) rounding to one
    float32 value, or tiny in a binade where the validation saw only tiny references."""
    fast = np.asarray(fast, dtype=np.float64)
    with np.errstate(all="ignore"):
        width = np.abs(fast) * v.bound
        lo = np.nextafter(fast - width, -np.inf).astype(np.float32)
        hi = np.nextafter(fast + width, np.inf).astype(np.float32)
    tiny = np.abs(fast) < TINY
    ok = np.isfinite(fast) & ~tiny & (lo == hi)
    if tiny.any() and v.tiny_binades:
        ok |= tiny & np.isin(bin_key(x), np.array(sorted(v.tiny_binades)))
    return ok
