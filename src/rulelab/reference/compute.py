"""References of whole sweeps: from the cache where present, the rest computed in a
process pool (or on a Dask cluster's executor) and added to the cache as each task
finishes, so a killed run loses at most the tasks in flight."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.processes import can_fork, process_pool
from rulelab.model.case import Case, get_case
from rulelab.model.contract import MAX_PRECISION
from rulelab.reference.cache import (
    _point_bits,
    compact_cache,
    load_cache,
    reference_key,
    save_cache,
)
from rulelab.reference.settle import reference_point

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


@contextlib.contextmanager
def reference_pool(workers: int | None = None) -> Iterator[Executor | None]:
    """A process pool for reference computation (all cores by default), or None when one
    worker is asked for or processes cannot be forked here. Workers find cases through
    the registry they inherit, so a user's registered cases work too."""
    n = workers or os.cpu_count() or 1
    if n <= 1 or not can_fork():
        yield None
        return
    ex = process_pool(n)
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
    provisional: np.ndarray

    def store(self, start: int, h: np.ndarray, l: np.ndarray, progress: Callable[[int], None] | None) -> None:
        sl = self.miss[start : start + self.size]
        self.hi[sl], self.lo[sl] = h, l
        save_cache(self.key, self.bits[sl], h, l)
        if progress:
            progress(len(sl))


Fill = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Given the positions a reference's cache lacks, the positions it fills provisionally
and their values (a fast tier's float64 values where they settle what is asked)."""


def _pending(case: Case, order: int, arg: str, points: tuple[np.ndarray, ...], max_precision: int, size: Callable[[int], int],
             progress: Callable[[int], None] | None, fill: Fill | None = None) -> _Pending:
    """The reference with its cached points filled in (a cached unsettled point is
    missing again when ``max_precision`` is above the precision it was tried to), and
    with ``fill``'s provisional values (low parts zero) where it gives them."""
    key = reference_key(case, order, arg)
    bits = _point_bits(points)
    n = len(bits)
    hi, lo = np.full(n, np.nan), np.zeros(n)
    miss = _from_cache(load_cache(key), bits, np.arange(n), hi, lo, max_precision)
    provisional = np.zeros(n, dtype=bool)
    if fill is not None and miss.size:
        at, values = fill(miss)
        if at.size:  # (its validation may have cached some of these points: those are taken as cached)
            at_missing = _from_cache(load_cache(key), bits, at, hi, lo, max_precision)
            keep = np.isin(at, at_missing)
            hi[at[keep]], provisional[at[keep]] = values[keep], True
            miss = miss[~np.isin(miss, at)]
    if progress and n - len(miss):
        progress(n - len(miss))
    pts = np.stack([np.asarray(p, dtype=np.float64)[miss] for p in points], axis=1)
    return _Pending(case, order, arg, key, bits, hi, lo, miss, pts, size(len(miss)), provisional)


def _from_cache(cached: dict[bytes, tuple[float, float]], bits: np.ndarray, at: np.ndarray, hi: np.ndarray, lo: np.ndarray,
                max_precision: int) -> np.ndarray:
    """Fill ``hi``, ``lo`` at positions ``at`` from ``cached``; the positions it lacks (a
    cached unsettled point is lacking when ``max_precision`` is above the precision it
    was tried to)."""
    missing = []
    for j in at.tolist():
        hit = cached.get(bits[j].tobytes())
        if hit is None or (math.isnan(hit[0]) and 0 < hit[1] < max_precision):
            missing.append(j)
        else:
            hi[j], lo[j] = hit
    return np.array(missing, dtype=np.int64)


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
    return [(hi, lo) for hi, lo, _ in references_filled(jobs, [None] * len(jobs), pool, progress, max_precision, tasks)]


def references_filled(
    jobs: Sequence[tuple[Case, int, str, tuple[np.ndarray, ...]]],
    fills: Sequence[Fill | None],
    pool: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    max_precision: int = MAX_PRECISION,
    tasks: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`references_many`, where each job's ``fill`` (if any) gives provisional
    values at some of the points its cache lacks, and mpmath computes the rest: per job
    (hi, lo, where hi is provisional). Provisional values are never cached."""
    size = (lambda n: chunk_size(n, tasks)) if pool is not None else (lambda n: CHUNK)
    pending = [_pending(c, o, a, pts, max_precision, size, progress, fill) for (c, o, a, pts), fill in zip(jobs, fills)]
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
    return [(p.hi, p.lo, p.provisional) for p in pending]


def _compute_chunk(task: tuple[str, int, str, int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    case_name, order, arg, cap, pts = task
    return _chunk(get_case(case_name), order, arg, cap, pts)


def uncached(case: Case, order: int, arg: str, points: tuple[np.ndarray, ...], max_precision: int = MAX_PRECISION) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) of the confirmed reference at ``points`` computed here, neither read from
    nor added to the cache (for a few points in a process that must not write it)."""
    pts = np.stack([np.asarray(p, dtype=np.float64) for p in points], axis=1)
    return _chunk(case, order, arg, max_precision, pts)


def _chunk(case: Case, order: int, arg: str, cap: int, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.array([reference_point(case, order, arg, tuple(float(v) for v in p), cap) for p in pts], dtype=np.float64).reshape(-1, 2)
    return out[:, 0].copy(), out[:, 1].copy()


def get_case_safe(name: str) -> Case | None:
    try:
        return get_case(name)
    except ValueError:
        return None
