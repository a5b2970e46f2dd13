"""mpmath references for values and derivatives, confirmed by agreement, with a disk cache.

A reference is kept unrounded as a double-double (hi, lo): rounding it to a dtype is then
exact integer arithmetic (``floats.round_double_double``), one rounding, never via a
narrower intermediate.

The pitfall is trusting one evaluation. At a fixed precision, cancellation (``x - lse``
at |x| ~ 2^128 keeps no fractional bit at 128 bits), an exact zero that is really a tiny
number, or a value a hair from a rounding boundary all give a confident wrong answer.
So every reference is confirmed by agreement (Ziv's strategy): it is evaluated at two
precisions and accepted only when both double-doubles agree (the same float64, the low
parts to ``DD_BITS`` bits) and round to the same value in every dtype that can hold the
point; otherwise the precision doubles, up to a cap. Zero, infinity and "undefined" are
confirmed the same way. A point that never settles is *unsettled*: stored as ``(NaN, p)`` with p the
highest precision tried (an undefined point is ``(NaN, 0)``), counted, never scored.

Only mpmath's domain signals (``ZeroDivisionError``, ``ValueError``) and NaN or complex
results mean "undefined here"; any other exception, or a result that is not an mpmath
number (a Python float computed in double precision, ``None`` from a missing return),
is a broken reference and stops the run with one line naming case, derivative and point.

The cache is keyed by a fingerprint of everything the reference depends on (the code
and constants reachable from it, its derivatives and conventions, the domain, the
precision policy and the mpmath/gmpy2 versions) and by the float64 bits of each input
point, so one computation serves every dtype whose inputs coincide and a cached number
never outlives the code that made it. Cache files carry a checksum in their name; a
corrupt file is moved aside (never deleted) and its points recomputed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mpmath
import numpy as np
from mpmath.libmp import NoConvergence

from rulelab.cachedir import cache_dir
from rulelab.case import Case, get_case
from rulelab.errors import UsageError
from rulelab.fingerprint import fingerprint
from rulelab.floats import FORMATS, double_double, float_parts, round_exact
from rulelab.numdiff import derivative as numerical_derivative
from rulelab.workers import worker_init

POLICY_VERSION = 2
"""Changes whenever the way references are computed or confirmed changes (part of the
cache key)."""
START_PRECISIONS = (128, 160)
"""The first two precisions (bits) every reference is evaluated at; after that each
retry doubles the precision."""
MAX_PRECISION = 2048
"""Default cap on the precision of a retry (a plan's ``max_precision``)."""
DD_BITS = 100
"""Bits of the double-double that two evaluations must agree on (hi exactly, lo to
within 2^-DD_BITS |hi|): the fractional error is computed from them."""
DOMAIN_SIGNALS = (ZeroDivisionError, ValueError)
"""Exceptions by which mpmath (and a reference) says "undefined at this point"."""
CHUNK = 512
"""Fewest points per parallel task (a short sweep still spreads over every worker)."""
MAX_CHUNK = 8 * CHUNK
"""Most points per parallel task: a long sweep goes in fewer, larger tasks, since each
task costs a round trip (milliseconds on a dask cluster, where 512-point tasks cost a
quarter of the time) and a killed run loses at most the tasks in flight."""


def chunk_size(n: int, tasks: int) -> int:
    """Points per task to split ``n`` points into about ``tasks`` tasks, between
    :data:`CHUNK` and :data:`MAX_CHUNK`. Many tasks keep a pool's workers busy to the
    end of each reference (a point's cost varies with its magnitude); on a cluster each
    task costs a round trip, so fewer are better there."""
    return int(min(MAX_CHUNK, max(CHUNK, -(-n // max(tasks, 1)))))


class ReferenceCacheWarning(UserWarning):
    """A cache file was unreadable or failed its checksum; it was moved aside."""


class BrokenReference(UsageError):
    """A reference raised something other than a domain signal, or returned something
    other than an mpmath number; the message names case, derivative and point."""


def derivative_label(order: int, arg: str) -> str:
    """'value', 'd/dx' or 'd2/dx2'."""
    return "value" if order == 0 else f"d/d{arg}" if order == 1 else f"d{order}/d{arg}{order}"


def is_unsettled(hi: Any, lo: Any) -> Any:
    """Where a reference never settled (elementwise on arrays)."""
    return np.isnan(hi) & (np.asarray(lo) != 0)


@functools.lru_cache(maxsize=256)
def _precisions(cap: int, extra: int) -> tuple[int, ...]:
    out = list(dict.fromkeys(min(p + extra, cap) for p in START_PRECISIONS))
    while out[-1] < cap:
        out.append(min(2 * out[-1], cap))
    return tuple(out)


def precisions(cap: int = MAX_PRECISION, point: tuple[float, ...] = ()) -> list[int]:
    """The precisions tried in turn: START_PRECISIONS, raised by the binary exponent of
    the largest finite input (an absolute error at that magnitude is what cancellation
    leaves, as in x - logsumexp(x, …) at x ~ 2^127), then doubling up to ``cap``."""
    extra = max((math.frexp(x)[1] for x in point if math.isfinite(x)), default=0)
    return list(_precisions(cap, max(extra, 0)))


# --- one point ------------------------------------------------------------------------


def _checked(value: Any, what: Callable[[], str]) -> Any:
    """A reference's result as a real mpf, or None where it is undefined (NaN, complex);
    anything that is not an mpmath number computed in the context given is broken."""
    if isinstance(value, mpmath.mpc):
        if value.imag != 0:
            return None
        value = value.real
    elif isinstance(value, int) and not isinstance(value, bool):
        value = mpmath.mpf(value)  # exact
    elif not isinstance(value, mpmath.mpf):
        hint = " (a missing return?)" if value is None else " (computed outside mpmath, at its own precision)" if isinstance(value, float) else ""
        raise BrokenReference(f"{what()} returned {type(value).__name__} {value!r}{hint}; a reference must return an mpmath number computed with the mp it is given")
    if mpmath.isnan(value):
        return None
    return value


class Unconverged(Exception):
    """No value at this precision (mpmath gave up); a higher precision may settle it."""


def evaluate_at(case: Case, order: int, arg: str, point: tuple[float, ...], prec: int) -> Any:
    """One evaluation of the reference at ``point`` at ``prec`` bits: an mpf (maybe
    infinite), or None where undefined. Raises :class:`BrokenReference` on a broken
    reference and ``Unconverged`` where mpmath does not converge at this precision."""
    mp = mpmath.mp

    def where() -> str:
        return f"case {case.name!r}, {derivative_label(order, arg)} at {point}"

    def call(fn: Callable[..., Any], *xs: Any) -> Any:
        return _checked(fn(mp, *xs), where)

    try:
        with mpmath.workprec(prec):
            xs = [mp.mpf(v) for v in point]
            if order == 0:
                return call(case.reference, *xs)
            for conv in case.conventions_for(arg, order):
                if conv.where(*point):
                    return _checked(conv.value_at(mp, *xs), where)
            analytic = case.derivatives.get((arg, order))
            if analytic is not None:
                return call(analytic, *xs)
            i = case.args.index(arg)
            if not all(mpmath.isfinite(x) for x in xs):
                return None  # numerical differentiation at an infinite input is meaningless
            first = case.derivatives.get((arg, 1)) if order == 2 else None
            fn, n = (first, 1) if first is not None else (case.reference, order)

            def along(t: Any) -> Any:
                ys = list(xs)
                ys[i] = t
                return call(fn, *ys)

            dom = case.domain[i]
            direction = 1 if point[i] == dom.lo else -1 if point[i] == dom.hi else 0
            return numerical_derivative(along, point[i], n, prec, dom, direction)
    except BrokenReference:
        raise
    except DOMAIN_SIGNALS:
        return None
    except NoConvergence as exc:
        raise Unconverged(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in the reference
        raise BrokenReference(f"{where()}: {type(exc).__name__}: {exc}") from None


_NARROW = tuple(f for f in FORMATS.values() if f.bits < 64)


def holding_dtypes(point: tuple[float, ...]) -> tuple[Any, ...]:
    """The narrower dtypes whose sweeps can hold ``point`` (each coordinate representable
    in it): only their rounding boundaries need deciding there."""
    def fits(x: float, f: Any) -> bool:
        if x == 0 or not math.isfinite(x):
            return True
        sign, man, exp = float_parts(x)
        return round_exact(sign, man, exp, f) == x

    return tuple(f for f in _NARROW if all(fits(x, f) for x in point))


def _narrow_boundary(hi: float, point: tuple[float, ...]) -> bool:
    """Whether the float64 ``hi`` is a rounding boundary (a midpoint) of a narrower dtype
    that can hold ``point``: values a hair above and below it round apart."""
    sign, man, exp = float_parts(hi)
    if man & ((1 << 28) - 1):  # a boundary of a dtype of <= 24 bits has <= 25 significant bits
        return False
    return any(round_exact(sign, 2 * man + 1, exp - 1, f) != round_exact(sign, 2 * man - 1, exp - 1, f) for f in holding_dtypes(point))


def _near_boundary(hi: float, lo: float, value: Any, err: float, exact_err: Callable[[], Any], point: tuple[float, ...]) -> bool:
    """Whether ``value`` (an mpf whose double-double is (hi, lo), known to within
    ``err``, an upper bound as a float, and within ``exact_err()``, an mpf) could lie on
    either side of a rounding boundary: a float64 midpoint beside hi = RN64(value), or
    hi itself where it is a boundary of a narrower dtype that can hold ``point``. Where the double-double
    cannot tell, exact mpf arithmetic decides: the part of ``value`` that decides the
    rounding may lie far below what a double-double keeps (softplus at 1276 is
    1276 + 2^-1841, and 1276 is a bfloat16 midpoint)."""
    half = math.ulp(hi) / 2
    if (lo < 0) != (hi < 0) and math.frexp(hi)[0] in (0.5, -0.5):
        half /= 2  # below a power of two the spacing halves
    slack = err + math.ulp(half) + 5e-324  # lo is below rounded to 53 bits
    narrow = hi != 0 and _narrow_boundary(hi, point)
    if abs(abs(lo) - half) > slack and not (narrow and abs(lo) <= slack):
        return False  # clear of every boundary: no need for exact arithmetic
    with mpmath.workprec(64):
        err = exact_err()
        below = mpmath.fsub(value, hi, exact=True)
        if below != 0:
            gap = mpmath.fsub(below, half if below > 0 else -half, exact=True)
            if -err <= gap <= err:
                return True
        return narrow and -err <= below <= err


def agree(a: tuple[int, Any, tuple[float, float]], b: tuple[int, Any, tuple[float, float]], point: tuple[float, ...] = ()) -> bool:
    """Whether two evaluations, each (precision, mpf or None, double-double), the second
    at the higher precision, confirm each other: both undefined; or the same float64
    (±0 alike), low parts within 2^-DD_BITS of it, and no rounding boundary of float64
    or of a narrower dtype that can hold ``point`` within the second's error. That error is taken as their difference scaled down by
    the precision gained, and at least 2^-(p-16) relative."""
    (pa, va, da), (pb, vb, db) = a, b
    if va is None or vb is None:
        return va is None and vb is None
    if da[0] != db[0]:
        return False
    if math.isinf(db[0]):
        return True
    diff = abs(da[1] - db[1])
    if diff > max(math.ldexp(abs(da[0]), -DD_BITS), 5e-324):
        return False
    # an upper bound, as a float: hi are equal, so |vb - va| <= |lo_b - lo_a| + 2^-1074
    err = max(math.ldexp(diff + 5e-324, pa - pb), math.ldexp(abs(db[0]), 17 - pb))

    def exact_err() -> Any:
        return max(mpmath.ldexp(abs(mpmath.fsub(vb, va, exact=True)), pa - pb), mpmath.ldexp(abs(vb), 16 - pb))

    return not _near_boundary(db[0], db[1], vb, err, exact_err, point)


ZERO_PRECISION = 1536
"""An exact zero must also come out zero at this precision (or the cap): below it, a
value under 2^-1074 (float64's smallest subnormal) beside intermediates near 1 could
still cancel to zero. (A nonzero value too small for float64 is confirmed like any
other: cancellation leaves an error near 2^-prec of the intermediates, not below.)"""


def settle(case: Case, order: int, arg: str, point: tuple[float, ...], max_precision: int = MAX_PRECISION) -> tuple[float, float, int]:
    """(hi, lo, p): the reference at ``point`` confirmed by agreement (in float64 and in
    every narrower dtype that can hold the point), and the precision p of the
    evaluation it settled at; (NaN, 0, p) where undefined, (NaN, p, p) where it
    never settled up to p bits. A value that came out identical at every precision up
    to the cap, on a rounding boundary, is taken as exact (e.g. |x| at a bfloat16
    midpoint): only a part below 2^-cap of it could round it otherwise."""
    previous: tuple[int, Any, tuple[float, float]] | None = None
    first: Any = None
    identical = True
    queue = precisions(max_precision, point)
    prec = queue[0]
    while queue:
        prec = queue.pop(0)
        try:
            value = evaluate_at(case, order, arg, point, prec)
        except Unconverged:
            previous, identical = None, False
            continue
        current = (prec, value, (math.nan, 0.0) if value is None else double_double(value))
        if first is None:
            first = value
        identical = identical and value is not None and value == first
        if previous is not None and agree(previous, current, point):
            if value != 0 or prec >= min(ZERO_PRECISION, max_precision):
                return current[2][0], current[2][1], prec
            zero = min(ZERO_PRECISION, max_precision)  # confirm an exact zero far above
            queue = [zero] + [p for p in precisions(max_precision) if p > zero]
            continue
        previous = current
    if identical and previous is not None:
        return previous[2][0], previous[2][1], prec
    return math.nan, float(prec), prec


def reference_point(case: Case, order: int, arg: str, point: tuple[float, ...], max_precision: int = MAX_PRECISION) -> tuple[float, float]:
    """(hi, lo) of the confirmed reference at ``point``: (NaN, 0) where it is undefined,
    (NaN, p) where it never settled up to p bits."""
    hi, lo, _ = settle(case, order, arg, point, max_precision)
    return hi, lo


def probe(case: Case) -> None:
    """Evaluate the reference and its analytic derivatives at a few points of the
    domain, so that a reference that raises or returns a non-mpmath number (a Python
    float) is refused where the case is registered, not in the middle of a sweep."""
    picks = []
    for dom in case.domain:
        inside = [x for x in (0.75, -1.25, 2.5, 0.3125, -0.0625, 7.5) if dom.contains(x)]
        if not inside:
            lo, hi = dom.lo, dom.hi
            inside = [(lo + hi) / 2 if math.isfinite(hi - lo) else (lo + 1.0 if math.isfinite(lo) else hi - 1.0)]
        picks.append(inside)
    points = [tuple(p[j % len(p)] for p in picks) for j in range(3)]
    targets = [(0, case.args[0])] + list((o, a) for (a, o) in case.derivatives)
    for point in dict.fromkeys(points):
        for order, arg in targets:
            with contextlib.suppress(Unconverged):
                evaluate_at(case, order, arg, point, 64)


def _compute_chunk(task: tuple[str, int, str, int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    case_name, order, arg, cap, pts = task
    return _chunk(get_case(case_name), order, arg, cap, pts)


def _chunk(case: Case, order: int, arg: str, cap: int, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.array([reference_point(case, order, arg, tuple(float(v) for v in p), cap) for p in pts], dtype=np.float64).reshape(-1, 2)
    return out[:, 0].copy(), out[:, 1].copy()


# --- cache ---------------------------------------------------------------------------


def _library_versions() -> str:
    try:
        import gmpy2

        gmpy = gmpy2.version()
    except ImportError:
        gmpy = "none"
    return f"mpmath {mpmath.__version__} ({mpmath.libmp.BACKEND}), gmpy2 {gmpy}"


def reference_key(case: Case, order: int, arg: str) -> str:
    """Cache key: case name and derivative, and a fingerprint of what the reference
    depends on: the code and constants reachable from the reference, the analytic
    derivatives and conventions used, the domain, the precision policy and the
    mpmath and gmpy2 versions."""
    used: list[Any] = [case.reference]
    if order:
        used += [case.derivatives.get((arg, k)) for k in range(1, order + 1)]
        used += [(c.note, c.where, c.value) for c in case.conventions_for(arg, order)]
        used.append(str(case.domain))
    policy = (POLICY_VERSION, START_PRECISIONS, DD_BITS, ZERO_PRECISION, _library_versions())
    digest = fingerprint(case.name, order, arg if order else "", policy, *used)[:20]
    suffix = f"d{order}_{arg}" if order else "value"
    return f"{case.name}/{suffix}-{digest}"


def _point_bits(points: tuple[np.ndarray, ...]) -> np.ndarray:
    """(n, nargs) uint64 bit patterns of float64 inputs: the cache's point identity."""
    cols = [np.ascontiguousarray(np.asarray(p, dtype=np.float64)).view(np.uint64) for p in points]
    return np.stack(cols, axis=1)


def _checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def load_cache(key: str) -> dict[bytes, tuple[float, float]]:
    """Every cached point of ``key``: {point bits: (hi, lo)}. Corrupt files are moved
    aside with a warning and ignored (their points will be recomputed)."""
    folder = cache_dir() / "reference" / key
    table: dict[bytes, tuple[float, float]] = {}
    if not folder.is_dir():
        return table
    for path in sorted(folder.glob("*.npz")):
        try:
            data = path.read_bytes()
            if _checksum(data) != path.stem.split("-")[-1]:
                raise ValueError("checksum mismatch")
            with np.load(io.BytesIO(data)) as z:
                bits, hi, lo = z["bits"], z["hi"], z["lo"]
            if bits.ndim != 2 or len(bits) != len(hi) or len(hi) != len(lo):
                raise ValueError("inconsistent arrays")
        except FileNotFoundError:
            continue  # merged away by another run's compaction since the listing: not corruption
        except Exception as exc:  # noqa: BLE001 - any unreadable file is set aside
            aside = path.with_suffix(".corrupt")
            with contextlib.suppress(OSError):
                path.replace(aside)
            warnings.warn(
                f"reference cache file {path} is corrupt ({exc}); moved to {aside.name}, its points will be recomputed",
                ReferenceCacheWarning,
                stacklevel=2,
            )
            continue
        for b, h, l in zip(bits, hi, lo):
            table[b.tobytes()] = (float(h), float(l))
    return table


def save_cache(key: str, bits: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> Path | None:
    """Add computed points to the cache atomically (temp file + rename); the file name
    carries the checksum of its content."""
    if len(bits) == 0:
        return None
    folder = cache_dir() / "reference" / key
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, bits=bits, hi=hi, lo=lo)
    data = buf.getvalue()
    path = folder / f"part-{_checksum(data)}.npz"
    tmp = folder / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def compact_cache(key: str, max_files: int = 8) -> None:
    """Merge a key's many small cache files into one (written before the old ones are
    removed, so an interruption loses nothing)."""
    folder = cache_dir() / "reference" / key
    parts = sorted(folder.glob("part-*.npz"))
    if len(parts) <= max_files:
        return
    table = load_cache(key)
    if not table:
        return
    raw = np.frombuffer(b"".join(table.keys()), dtype=np.uint64)
    bits = raw.reshape(len(table), -1)
    vals = np.array(list(table.values()), dtype=np.float64)
    kept = save_cache(key, bits, vals[:, 0], vals[:, 1])
    for p in parts:
        if p != kept:
            with contextlib.suppress(OSError):
                p.unlink()


# --- the public entry point ------------------------------------------------------------


@contextlib.contextmanager
def reference_pool(workers: int | None = None) -> Iterator[Executor | None]:
    """A process pool for reference computation (all cores by default), or None when one
    worker is asked for or processes cannot be forked here. Workers find cases through
    the registry they inherit, so a user's registered cases work too."""
    n = workers or os.cpu_count() or 1
    if n <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield None
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # jax's fork warning: workers only run mpmath
        ex = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"), initializer=worker_init, initargs=(os.getpid(),))
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def references(
    case: Case,
    order: int,
    arg: str,
    points: tuple[np.ndarray, ...],
    pool: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    max_precision: int = MAX_PRECISION,
    tasks: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) arrays of the confirmed reference (value for ``order`` 0, else the
    ``order``-th derivative in ``arg``) at ``points`` (one array per argument): see
    :func:`references_many`."""
    return references_many([(case, order, arg, points)], pool, progress, max_precision, tasks)[0]


@dataclass
class _Pending:
    """One reference being computed: where its points' values go, and its missing points."""

    case: Case
    order: int
    arg: str
    key: str
    bits: np.ndarray
    hi: np.ndarray
    lo: np.ndarray
    miss: np.ndarray
    pts: np.ndarray
    size: int

    def store(self, start: int, h: np.ndarray, l: np.ndarray, progress: Callable[[int], None] | None) -> None:
        sl = self.miss[start : start + self.size]
        self.hi[sl], self.lo[sl] = h, l
        save_cache(self.key, self.bits[sl], h, l)
        if progress:
            progress(len(sl))


def _pending(case: Case, order: int, arg: str, points: tuple[np.ndarray, ...], max_precision: int, size: Callable[[int], int],
             progress: Callable[[int], None] | None) -> _Pending:
    """The reference with its cached points filled in (a cached unsettled point is
    missing again when ``max_precision`` is above the precision it was tried to)."""
    key = reference_key(case, order, arg)
    bits = _point_bits(points)
    n = len(bits)
    hi, lo = np.full(n, np.nan), np.zeros(n)
    cached = load_cache(key)
    missing = []
    for j in range(n):
        hit = cached.get(bits[j].tobytes())
        if hit is None or (math.isnan(hit[0]) and 0 < hit[1] < max_precision):
            missing.append(j)
        else:
            hi[j], lo[j] = hit
    if progress and n - len(missing):
        progress(n - len(missing))
    miss = np.array(missing, dtype=np.int64)
    pts = np.stack([np.asarray(p, dtype=np.float64)[miss] for p in points], axis=1)
    return _Pending(case, order, arg, key, bits, hi, lo, miss, pts, size(len(miss)))


def references_many(
    jobs: Sequence[tuple[Case, int, str, tuple[np.ndarray, ...]]],
    pool: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    max_precision: int = MAX_PRECISION,
    tasks: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The confirmed reference of each (case, order, arg, points) job, from the cache
    where present, the rest computed (in ``pool`` if given, every job's tasks submitted
    at once, so no worker waits for one reference's last task before the next starts)
    and added to the cache as each task finishes. Each job's missing points are split
    into about ``tasks`` tasks (:func:`chunk_size`). ``progress(k)`` is called as k more
    points are done. Raises :class:`BrokenReference` (after saving every finished task)
    when a reference is broken at some point."""
    size = (lambda n: chunk_size(n, tasks)) if pool is not None else (lambda n: CHUNK)
    pending = [_pending(c, o, a, pts, max_precision, size, progress) for c, o, a, pts in jobs]
    try:
        futures: dict[Any, tuple[_Pending, int]] = {}
        for p in pending:
            starts = range(0, len(p.pts), p.size)
            if pool is not None and get_case_safe(p.case.name) is p.case and len(starts) > 1:
                for s in starts:
                    futures[pool.submit(_compute_chunk, (p.case.name, p.order, p.arg, max_precision, p.pts[s : s + p.size]))] = (p, s)
            else:  # a case outside the registry cannot be found by name in a worker
                for s in starts:
                    p.store(s, *_chunk(p.case, p.order, p.arg, max_precision, p.pts[s : s + p.size]), progress)
        failure: BaseException | None = None
        while futures and failure is None:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                p, start = futures.pop(fut)
                if fut.exception() is not None:
                    failure = failure or fut.exception()
                else:
                    p.store(start, *fut.result(), progress)
        for fut in futures:
            fut.cancel()
        if failure is not None:
            raise failure
    finally:
        for p in pending:
            compact_cache(p.key)
    return [(p.hi, p.lo) for p in pending]


def get_case_safe(name: str) -> Case | None:
    try:
        return get_case(name)
    except ValueError:
        return None
