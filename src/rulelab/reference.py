"""mpmath references for values and derivatives, with a precision policy and a disk cache.

A reference is kept unrounded as a double-double (hi, lo): rounding it to a dtype is then
exact integer arithmetic (``floats.round_double_double``), one rounding, never via a
narrower intermediate. Where the value lies so close to a rounding boundary that the
working precision could decide the wrong side, it is recomputed at a higher precision.

The cache is keyed by case, the source of the reference (so editing it invalidates the
cache), the derivative and the float64 bits of each input point, so one computation
serves every dtype whose inputs coincide. Cache files carry a checksum in their name; a
corrupt file is moved aside (never deleted) and its points recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import mpmath
import numpy as np

from rulelab.case import Case, get_case
from rulelab.floats import double_double

WORKING_PRECISION = 128
"""Bits of working precision for a first evaluation: well above float64's 53."""
RAISED_PRECISION = 320
"""Bits used where the first evaluation is too close to a rounding boundary."""
CHUNK = 512
"""Points per parallel task."""


class ReferenceCacheWarning(UserWarning):
    """A cache file was unreadable or failed its checksum; it was moved aside."""


# --- one point ------------------------------------------------------------------------


def _as_real(x: Any) -> Any:
    """mpmath result -> real mpf, or None where the function is undefined there."""
    if isinstance(x, mpmath.mpc):
        if x.imag != 0:
            return None
        x = x.real
    if not isinstance(x, mpmath.mpf):
        try:
            x = mpmath.mpf(x)
        except (TypeError, ValueError):
            return None
    if mpmath.isnan(x):
        return None
    return x


def _evaluate_once(case: Case, order: int, arg: str, point: tuple[float, ...]) -> Any:
    """The reference at one point at the current mpmath precision; None if undefined."""
    mp = mpmath.mp
    xs = [mp.mpf(v) for v in point]
    if order == 0:
        return _as_real(case.reference(mp, *xs))
    for conv in case.conventions_for(arg, order):
        if conv.where(*point):
            return _as_real(conv.value_at(mp, *xs))
    analytic = case.derivatives.get((arg, order))
    if analytic is not None:
        return _as_real(analytic(mp, *xs))
    i = case.args.index(arg)
    if not all(mpmath.isfinite(x) for x in xs):
        return None  # numerical differentiation at an infinite input is meaningless

    def along(t: Any) -> Any:
        ys = list(xs)
        ys[i] = t
        return case.reference(mp, *ys)

    dom = case.domain[i]
    direction = 0
    if point[i] == dom.lo:
        direction = 1
    elif point[i] == dom.hi:
        direction = -1
    return _as_real(mp.diff(along, xs[i], n=order, direction=direction))


def _near_boundary(hi: float, lo: float, prec: int) -> bool:
    """Whether the exact value could fall on the other side of a rounding boundary of some
    dtype: it is very close to a float64 (a boundary of every narrower dtype) or to a
    float64 midpoint, closer than the working precision can vouch for."""
    if not math.isfinite(hi) or hi == 0.0:
        return False
    eps = math.ldexp(abs(hi), -(prec - 24))
    half_ulp = math.ulp(hi) / 2
    return abs(lo) < eps or abs(abs(lo) - half_ulp) < eps


def reference_point(case: Case, order: int, arg: str, point: tuple[float, ...]) -> tuple[float, float]:
    """(hi, lo) of the reference at ``point`` (NaN, 0 where undefined), with the precision
    raised when the first evaluation is too close to a rounding boundary."""
    value = None
    for prec in (WORKING_PRECISION, RAISED_PRECISION):
        with mpmath.workprec(prec):
            try:
                value = _evaluate_once(case, order, arg, point)
            except (ZeroDivisionError, ValueError, OverflowError):
                value = None  # mpmath: undefined here
        if value is None:
            return math.nan, 0.0
        hi, lo = double_double(value)
        if not _near_boundary(hi, lo, prec):
            break
    return hi, lo


def _compute_chunk(task: tuple[str, int, str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    case_name, order, arg, pts = task
    case = get_case(case_name)
    hi = np.empty(len(pts))
    lo = np.empty(len(pts))
    for j, p in enumerate(pts):
        hi[j], lo[j] = reference_point(case, order, arg, tuple(float(v) for v in p))
    return hi, lo


# --- cache ---------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where references are cached: $RULELAB_CACHE, else ~/.cache/rulelab."""
    env = os.environ.get("RULELAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rulelab"


def _source_of(fn: Any) -> str:
    if fn is None:
        return ""
    try:
        return inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return repr((code.co_code, code.co_consts)) if code else repr(fn)


def reference_key(case: Case, order: int, arg: str) -> str:
    """Cache key: case name, the reference's source (value, analytic derivative and
    conventions that apply), and the derivative asked for."""
    parts = [case.name, str(order), arg if order else "", _source_of(case.reference)]
    if order:
        parts.append(_source_of(case.derivatives.get((arg, order))))
        parts += [_source_of(c.where) + _source_of(c.value) + c.note for c in case.conventions_for(arg, order)]
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]
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
        ex = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork"))
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
) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) arrays of the reference (value for ``order`` 0, else the ``order``-th
    derivative in ``arg``) at ``points`` (one array per argument), from the cache where
    present, the rest computed (in ``pool`` if given) and added to the cache.
    ``progress(k)`` is called as k more points are done."""
    key = reference_key(case, order, arg)
    bits = _point_bits(points)
    n = len(bits)
    hi = np.full(n, np.nan)
    lo = np.zeros(n)
    cached = load_cache(key)
    missing = []
    for j in range(n):
        hit = cached.get(bits[j].tobytes())
        if hit is None:
            missing.append(j)
        else:
            hi[j], lo[j] = hit
    if progress and n - len(missing):
        progress(n - len(missing))
    if missing:
        miss = np.array(missing)
        pts = np.stack([np.asarray(p, dtype=np.float64)[miss] for p in points], axis=1)
        chunks = [pts[s : s + CHUNK] for s in range(0, len(pts), CHUNK)]
        tasks = [(case.name, order, arg, c) for c in chunks]
        fn = _compute_chunk_for(case)
        use_pool = pool is not None and fn is _compute_chunk and len(chunks) > 1
        done = 0
        for c, (h, l) in zip(chunks, pool.map(fn, tasks) if use_pool else map(fn, tasks)):
            sl = miss[done : done + len(c)]
            hi[sl], lo[sl] = h, l
            save_cache(key, bits[sl], h, l)
            done += len(c)
            if progress:
                progress(len(c))
        compact_cache(key)
    return hi, lo


def get_case_safe(name: str) -> Case | None:
    try:
        return get_case(name)
    except ValueError:
        return None


def _compute_chunk_for(case: Case) -> Callable[[tuple[str, int, str, np.ndarray]], tuple[np.ndarray, np.ndarray]]:
    """The chunk function: by registry name (picklable, for pools) when the registry
    holds this case, else a closure over the case itself (in-process only)."""
    if get_case_safe(case.name) is case:
        return _compute_chunk

    def local(task: tuple[str, int, str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        _, order, arg, pts = task
        out = [reference_point(case, order, arg, tuple(float(v) for v in p)) for p in pts]
        return np.array([o[0] for o in out]), np.array([o[1] for o in out])

    return local
