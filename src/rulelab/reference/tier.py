"""The fast tier in sampled sweeps: float64 values where they settle what a table shows.

The pitfall: a fast value that settles a point's rounding does not settle its fractional
error, its place among the worst points or the reference a table lists. So a fast value
is only *provisional*. It stands in for mpmath where, in every dtype that reads the
point, the validated bound (:mod:`rulelab.reference.fast`) decides the rounding; never
at a float64 point, a point a plot samples, a special point or one where a convention
applies. The dULPs and buckets it gives are then exact, and a fractional error is off by
at most :func:`frac_margin`, or, where the interval the bound allows holds a power of two
(the dtype's spacing halves there: ``wide``), by at most itself and that margin. The
points whose fractional error could change a table (the worst, the largest fractional
error) are referenced with mpmath after evaluation (``runs.provisional``), so the tables
are those of mpmath alone, bit for bit.

Validating a fast reference costs mpmath points too (thousands per dtype), so the tier
is used only where the points it would spare are at least :data:`WORTH` times those a
validation still has to compute; a validation is cached by the fingerprint of what it
measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np

from rulelab.core.cachedir import cache_dir
from rulelab.core.files import atomic_write
from rulelab.core.fingerprint import fingerprint
from rulelab.core.floats import fmt, ulp
from rulelab.model.case import Case
from rulelab.reference import fast
from rulelab.reference.cache import load_cache, reference_key

WORTH = 2
"""The tier is used where the points it spares are at least this many times the mpmath
points its validations still need."""


def _validation_key(case: Case, arg: str, order: int, dtype: str) -> str:
    """Where a validation is kept: the reference's cache key, the fast function and the
    validation's constants."""
    policy = (fast.SAFETY, fast.FLOOR, fast.MARGIN_BITS, fast.PER_BINADE, fast.TINY, fast.MAX_ARGS)
    digest = fingerprint(fast.fast_function(case, arg, order), fast.validate, fast.validation_points, policy, dtype,
                         str(case.domain), case.special_points)[:20]
    return f"{reference_key(case, order, arg)}-{dtype}-{digest}"


def _validation_path(case: Case, arg: str, order: int, dtype: str) -> Any:
    return cache_dir() / "fast" / f"{_validation_key(case, arg, order, dtype)}.json"


def cached_validation(case: Case, arg: str, order: int, dtype: str) -> fast.Validation | None:
    """The validation kept for this fast reference in ``dtype``, or None (none kept, or
    one that does not read back: it is then validated again)."""
    try:
        d = json.loads(_validation_path(case, arg, order, dtype).read_text())
        return fast.Validation(d["case"], d["arg"], d["order"], float(d["bound"]), int(d["n_points"]), float(d["worst_rel"]),
                               tuple(float(x) for x in d["worst_at"]), frozenset(int(k) for k in d["tiny_binades"]), d["dtype"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def validated(case: Case, arg: str, order: int, dtype: str, pool: Executor | None = None, tasks: int = 1) -> fast.Validation:
    """:func:`fast.validate`, kept on disk: a second call with the same fast function,
    reference and validation policy reads it back."""
    kept = cached_validation(case, arg, order, dtype)
    if kept is not None:
        return kept
    v = fast.validate(case, arg, order, dtype, pool, tasks)
    d = {"case": v.case, "arg": v.arg, "order": v.order, "bound": v.bound, "n_points": v.n_points, "worst_rel": v.worst_rel,
         "worst_at": list(v.worst_at), "tiny_binades": sorted(v.tiny_binades), "dtype": v.dtype}
    path = _validation_path(case, arg, order, dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(d).encode())
    return v


def validation_cost(case: Case, arg: str, order: int, dtype: str) -> int:
    """The mpmath points validating this fast reference in ``dtype`` would compute now:
    none where the validation is kept, else its points the reference cache lacks."""
    if cached_validation(case, arg, order, dtype) is not None:
        return 0
    pts = fast.validation_points(case, dtype)
    cached = load_cache(reference_key(case, order, arg))
    if not cached:
        return int(pts[0].size)
    row = np.dtype((np.void, 8 * len(pts)))  # (a point's bits as one item, as the cache keys them)
    bits = np.ascontiguousarray(np.stack([np.ascontiguousarray(p).view(np.uint64) for p in pts], axis=1)).view(row).ravel()
    have = np.frombuffer(b"".join(cached), dtype=row)
    return int((~np.isin(bits, have)).sum())


def frac_margin(dtype: Any, bound: float) -> float:
    """How far (in ULP of ``dtype``) a fractional error against a provisional reference
    can be from the one against mpmath's: the bound, relative to the reference, is at
    most 2^p spacings of it (twice that, and the float64 arithmetic's own rounding)."""
    return 2.0 ** (fmt(dtype).precision + 1) * bound * (1 + 2.0**-40) + 2.0**-60


def usable(case: Case, arg: str, order: int) -> bool:
    """Whether the case has a fast reference for this derivative that the tier can use."""
    return (arg, order) in case.fast_reference and len(case.args) <= fast.MAX_ARGS


class FastFill:
    """A reference's fill (``compute.Fill``): at the positions the cache lacks, the fast
    values where they settle every dtype that reads the point (``uses``: dtype -> mask
    over the points), never at ``exact`` positions. Validates lazily, only when worth it
    (:data:`WORTH`); ``bounds`` then holds each narrow dtype's validated bound, and
    ``wide`` (a mask over the points) where the dtype's spacing changes inside the
    interval a provisional value's bound allows."""

    def __init__(self, case: Case, arg: str, order: int, points: tuple[np.ndarray, ...], uses: Mapping[str, np.ndarray],
                 exact: np.ndarray, pool: Executor | None = None, tasks: int = 1) -> None:
        self.case, self.arg, self.order, self.points = case, arg, order, points
        self.uses, self.exact, self.pool, self.tasks = uses, exact, pool, tasks
        self.bounds: dict[str, float] = {}
        self.wide = np.zeros(len(points[0]), dtype=bool)

    def __call__(self, miss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        none = (np.zeros(0, dtype=np.int64), np.zeros(0))
        narrow = [d for d, u in self.uses.items() if fmt(d).bits < 64 and u[miss].any()]
        if not narrow:
            return none
        spared, cost = int((~self.exact[miss]).sum()), 0
        for d in narrow:  # (stopping at the first dtype past what the tier would spare)
            cost += validation_cost(self.case, self.arg, self.order, d)
            if spared < WORTH * cost:
                return none
        try:
            vs = {d: validated(self.case, self.arg, self.order, d, self.pool, self.tasks) for d in narrow}
        except fast.FastReferenceError:
            return none  # (a fast reference that fails its validation is not used: mpmath decides every point)
        pts = tuple(np.asarray(p, dtype=np.float64)[miss] for p in self.points)
        phi = fast.evaluate_fast(self.case, self.arg, self.order, pts)
        ok = ~self.exact[miss] & _inside(self.case, pts) & ~_conventional(self.case, self.arg, self.order, pts)
        for d, u in self.uses.items():
            at = np.flatnonzero(u[miss] & ok)
            if fmt(d).bits == 64:
                ok[at] = False
            elif at.size:
                ok[at] = fast.decided(phi[at], tuple(p[at] for p in pts), vs[d])
                self.wide[miss[at]] |= ~_one_spacing(phi[at], vs[d])
        self.bounds = {d: v.bound for d, v in vs.items()}
        self.wide[miss[~ok]] = False
        return miss[ok], phi[ok]


def _inside(case: Case, pts: tuple[np.ndarray, ...]) -> np.ndarray:
    inside = np.ones(pts[0].shape, dtype=bool)
    for dom, x in zip(case.domain, pts):
        inside &= np.asarray(dom.contains(x), dtype=bool)
    for p in case.special_points:  # (compared as floats: -0.0 is 0.0, as in the case's own tuple)
        inside &= ~np.logical_and.reduce([x == c for x, c in zip(pts, p)])
    return inside


def _conventional(case: Case, arg: str, order: int, pts: tuple[np.ndarray, ...]) -> np.ndarray:
    """Where one of the case's conventions defines the derivative (mpmath gives it)."""
    conventions = case.conventions_for(arg, order) if order else []
    if not conventions:
        return np.zeros(pts[0].shape, dtype=bool)
    return np.array([any(c.where(*p) for c in conventions) for p in zip(*(x.tolist() for x in pts))], dtype=bool)


def _one_spacing(phi: np.ndarray, v: fast.Validation) -> np.ndarray:
    """Where the dtype's spacing is the same over the whole interval phi·(1 ± bound): a
    fractional error is then off by no more than :func:`frac_margin` (elsewhere the
    spacing may be half or twice the one at phi)."""
    w = np.abs(phi) * (v.bound + 2.0**-50)
    with np.errstate(all="ignore"):
        return (ulp(np.abs(phi) - w, v.dtype) == ulp(np.abs(phi) + w, v.dtype)) | (np.abs(phi) < fast.TINY)
