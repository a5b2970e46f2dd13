"""Sweeps: the input points of one case in one dtype.

Exhaustive for 16-bit dtypes, sampled per binade for float32/float64 (every binade from
the smallest subnormal to the largest finite, both signs where the domain allows), the
special points (zeros, extremes, ±1 and the case's own thresholds with their neighbours),
and grids for cases of several arguments. Deterministic for a given seed.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulelab.core.floats import FloatFormat, all_finite, fmt, from_bits
from rulelab.model.case import Case, Interval


@dataclass(frozen=True)
class SweepSpec:
    """How to sample one dtype. ``per_binade``: samples per binade and sign for 1-D sweeps
    of dtypes too wide to enumerate (and of 16-bit ones when ``exhaustive16`` is off);
    ``grid_per_binade`` / ``grid_stride``: samples per binade and every how many binades,
    for each axis of a grid (several arguments); ``specials``: add the special points."""

    exhaustive16: bool = True
    per_binade: int = 16
    grid_per_binade: int = 1
    grid_stride: int = 4
    specials: bool = True


@dataclass(frozen=True)
class Sweep:
    """The inputs of one case in one dtype: one array per argument, all the same length."""

    case: str
    dtype: str
    points: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return int(self.points[0].size)

    def as_float64(self) -> tuple[np.ndarray, ...]:
        return tuple(p.astype(np.float64) for p in self.points)

    def flushed(self) -> tuple[np.ndarray, ...]:
        """The points as a backend that flushes this dtype's subnormals reads them: every
        subnormal coordinate a zero of its sign (float64)."""
        tiny = fmt(self.dtype).smallest_normal
        out = []
        for p in self.as_float64():
            sub = (p != 0) & (np.abs(p) < tiny)
            out.append(np.where(sub, np.copysign(0.0, p), p))
        return tuple(out)


def binade_edges(f: FloatFormat) -> list[tuple[int, int]]:
    """For each binade [2^k, 2^(k+1)) of positive finite values, its half-open range of
    bit patterns, from the smallest subnormal's binade up to the largest finite one."""
    edges = []
    for k in range(f.quantum_min, f.emax + 1):
        lo = int(np.array(math.ldexp(1.0, k)).astype(f.dtype).view(f.uint))
        hi = int(np.array(math.ldexp(1.0, k + 1) if k < f.emax else math.inf).astype(f.dtype).view(f.uint))
        edges.append((lo, hi))
    return edges


def _rng(seed: int, *keys: Any) -> np.random.Generator:
    """A generator that depends on the seed and the keys only (stable across runs)."""
    return np.random.default_rng([seed, zlib.crc32(repr(keys).encode())])


def per_binade(dtype: Any, count: int, domain: Interval, seed: int = 0, stride: int = 1, key: str = "") -> np.ndarray:
    """``count`` values drawn uniformly (by bit pattern) from every ``stride``-th binade
    of each sign, kept where ``domain`` holds; whole binades when they hold fewer."""
    f = fmt(dtype)
    rng = _rng(seed, key, f.name, count, stride)
    sign_bit = 1 << (f.bits - 1)
    chunks = []
    for lo, hi in binade_edges(f)[::stride]:
        if hi - lo <= count:
            bits = np.arange(lo, hi, dtype=np.uint64)
        else:
            bits = np.unique(rng.integers(lo, hi, size=count, dtype=np.uint64, endpoint=False))
        chunks.append(bits)
        chunks.append(bits | np.uint64(sign_bit))
    bits = np.concatenate(chunks).astype(f.uint)
    values = from_bits(bits, f)
    return np.sort(values[domain.contains(values.astype(np.float64))])


def special_points(dtype: Any, domain: Interval, thresholds: tuple[float, ...] = ()) -> np.ndarray:
    """Zeros, smallest subnormal and normal, largest finite, ±1, and each threshold with
    its neighbours in ``dtype``, both signs, within ``domain``. Infinities only when the
    domain includes them."""
    f = fmt(dtype)
    base = [0.0, f.smallest_subnormal, f.smallest_normal, f.max_finite, 1.0]
    vals: list[Any] = []
    for v in base:
        vals += [v, -v]
    for t in thresholds:
        if math.isfinite(t):
            tv = np.array(t).astype(f.dtype)
            vals += [tv, np.nextafter(tv, tv.dtype.type(math.inf)), np.nextafter(tv, tv.dtype.type(-math.inf))]
        else:
            vals.append(t)
    arr = np.array([np.array(v).astype(f.dtype) for v in vals], dtype=f.dtype)
    arr = arr[domain.contains(arr.astype(np.float64))]
    # unique by bit pattern so that -0 and +0 both stay
    _, idx = np.unique(arr.view(f.uint), return_index=True)
    return arr[np.sort(idx)]


def axis_values(case: Case, i: int, dtype: Any, spec: SweepSpec, seed: int, grid: bool) -> np.ndarray:
    """The values one argument takes: exhaustive or per-binade, plus specials."""
    f = fmt(dtype)
    domain = case.domain[i]
    if grid:
        vals = per_binade(f, spec.grid_per_binade, domain, seed, spec.grid_stride, key=f"{case.name}:{case.args[i]}")
    elif f.bits == 16 and spec.exhaustive16:
        allv = all_finite(f)
        vals = allv[domain.contains(allv.astype(np.float64))]
    else:
        vals = per_binade(f, spec.per_binade, domain, seed, 1, key=f"{case.name}:{case.args[i]}")
    if spec.specials:
        thresholds = tuple(p[i] for p in case.special_points)
        extra = special_points(f, domain, thresholds)
        vals = np.concatenate([vals, extra])
    return vals


def estimate_points(case: Case, dtype: Any, spec: SweepSpec) -> int:
    """An upper bound on ``len(make_sweep(case, dtype, spec))``, without making it: what
    a plan would cost is known before any memory is spent on it."""
    f = fmt(dtype)
    binades = [(k, hi - lo) for k, (lo, hi) in zip(range(f.quantum_min, f.emax + 1), binade_edges(f))]
    def axis(i: int, grid: bool) -> int:
        specials = 10 + 3 * len({p[i] for p in case.special_points}) if spec.specials else 0
        if not grid and f.bits == 16 and spec.exhaustive16:
            return 2**16 + specials
        dom = case.domain[i]
        count, stride = (spec.grid_per_binade, spec.grid_stride) if grid else (spec.per_binade, 1)
        total = 0
        for k, size in binades[::stride]:  # binade k holds [2^k, 2^(k+1)) and its negative
            low, high = math.ldexp(1.0, k), math.ldexp(1.0, k + 1) if k < 1023 else math.inf
            signs = int(dom.hi >= low and dom.lo < high) + int(dom.lo <= -low and dom.hi > -high)
            total += signs * min(count, size)
        return total + specials

    if len(case.args) == 1:
        return axis(0, grid=False)
    return math.prod(axis(i, grid=True) for i in range(len(case.args))) + (len(case.special_points) if spec.specials else 0)


def make_sweep(case: Case, dtype: Any, spec: SweepSpec = SweepSpec(), seed: int = 0) -> Sweep:
    """The inputs of ``case`` in ``dtype``: a 1-D sweep for one argument, else the grid of
    every argument's values plus the case's special points as given (their exact
    combinations). Points are unique by bit pattern and in a deterministic order."""
    f = fmt(dtype)
    n = len(case.args)
    if n == 1:
        cols = [axis_values(case, 0, f, spec, seed, grid=False)]
    else:
        axes = [axis_values(case, i, f, spec, seed, grid=True) for i in range(n)]
        mesh = np.meshgrid(*axes, indexing="ij")
        cols = [m.ravel() for m in mesh]
        if spec.specials and case.special_points:
            sp = np.array(case.special_points, dtype=np.float64)
            for i in range(n):
                cols[i] = np.concatenate([cols[i], sp[:, i].astype(f.dtype)])
    cols = [np.asarray(c, dtype=f.dtype) for c in cols]
    keep = np.ones(cols[0].shape, dtype=bool)
    for i, c in enumerate(cols):
        keep &= case.domain[i].contains(c.astype(np.float64))
    cols = [c[keep] for c in cols]
    # unique by the bit patterns of all coordinates, keeping first occurrence order sorted
    key = np.stack([c.view(f.uint).astype(np.uint64) for c in cols], axis=1)
    _, idx = np.unique(key, axis=0, return_index=True)
    idx = np.sort(idx)
    return Sweep(case.name, f.name, tuple(c[idx] for c in cols))

