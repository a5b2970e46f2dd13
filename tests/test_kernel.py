"""The compiled loops of an exhaustive chunk (``rulelab.scoring.kernel``) against the
numpy passes they replace: the rounding test decides and rounds exactly as numpy's
casts and ``nextafter`` do, around every rounding boundary of the three formats, and a
chunk's aggregates (binned table, histograms, error map, worst points, samples, NaN and
inf counts, largest fractional error) are identical either way on chunks where results
and references take every path; where numba does not import, chunks run as numpy passes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from rulelab.core.floats import fmt
from rulelab.jaxrun.backend import flushes_subnormals
from rulelab.model.case import get_case
from rulelab.model.exhaustive_spec import Spec
from rulelab.reference import fast as fastref
from rulelab.reference.fast import TINY, Validation, decided_rounding
from rulelab.scoring import chunks as C

DTYPES = ("float32", "bfloat16", "float16")


def _around_every_boundary(dtype: str, rng: np.random.Generator) -> np.ndarray:
    """float64 values at, beside and between the values of ``dtype``: random magnitudes
    over its whole range and past it, every kind of midpoint (ties to even both ways),
    the largest finite value and the overflow threshold, subnormals, zeros, infinities,
    NaN and values below TINY."""
    f = fmt(dtype)
    e = rng.integers(f.emin - f.precision - 4, f.emax + 3, 200_000)
    spread = np.ldexp(rng.random(e.size) + 1.0, e) * rng.choice([-1.0, 1.0], e.size)
    with np.errstate(invalid="ignore"):  # (NaN patterns, cast)
        exact = rng.integers(0, 1 << f.bits, 50_000).astype(f.uint).view(f.dtype).astype(np.float64)
    exact = np.concatenate([exact[np.isfinite(exact)], [f.max_finite, -f.max_finite, f.smallest_normal, 2.0**f.quantum_min]])
    with np.errstate(over="ignore"):
        up = np.nextafter(exact.astype(f.dtype), np.array(np.inf, dtype=f.dtype)).astype(np.float64)
    up = np.where(np.isinf(up), 2.0 ** (f.emax + 1), up)
    mid = (exact + up) / 2
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, TINY, -TINY, TINY / 2, 2.0**-1074, 1e-300, 2.0 ** (f.quantum_min - 1)]
    return np.concatenate([spread, exact, mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf), special])


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_compiled_rounding_test_decides_and_rounds_as_numpy_casts(dtype):
    rng = np.random.default_rng(7)
    x = _around_every_boundary(dtype, rng)
    f = fmt(dtype)
    for bound in (2.0**-50, 2.0 ** -(f.precision + 13)):
        v = Validation("test", "x", 1, bound, 0, 0.0, (0.0,), frozenset(), dtype)
        want_ok, want = decided_rounding(x, x, v)
        got_ok, got, hi = C._decided_fused(x, (x,), v)
        assert np.array_equal(got_ok, want_ok), (dtype, bound)
        assert 0 < got_ok.mean() < 1
        with np.errstate(invalid="ignore"):
            nan = np.isnan(x)
            assert np.array_equal(got.view(f.uint)[~nan], want.view(f.uint)[~nan]), dtype  # a correctly rounded cast, every point
        assert np.isnan(got[nan].astype(np.float64)).all()
        assert np.array_equal(hi, np.where(want_ok, x, np.nan), equal_nan=True)


@pytest.mark.parametrize(("dtype", "nargs"), [("float32", 1), ("bfloat16", 2), ("float16", 2)])
def test_the_tiny_binades_are_looked_up_as_bin_key_finds_them(dtype, nargs):
    # decided_tiny reads a table over the sign and exponent bits; bin_key + isin is the
    # definition it replaces: every kind of value (zeros, subnormals, normals, infinities)
    f = fmt(dtype)
    rng = np.random.default_rng(3)
    with np.errstate(invalid="ignore"):
        values = rng.integers(0, 1 << f.bits, 20_000).astype(f.uint).view(f.dtype).astype(np.float64)
    values = np.concatenate([values[~np.isnan(values)], [0.0, -0.0, np.inf, -np.inf, 2.0**f.quantum_min, -f.max_finite]])
    pts = tuple(rng.permutation(values) for _ in range(nargs))
    keys = fastref.bin_key(pts, dtype)
    tiny = frozenset(rng.choice(np.unique(keys), 200, replace=False).tolist())
    v = Validation("test", "x", 1, 2.0**-40, 0, 0.0, (0.0,) * nargs, tiny, dtype)
    fast = np.full(values.size, 0.0)
    got = fastref.decided_tiny(np.zeros(values.size, dtype=bool), fast, pts, v)
    assert np.array_equal(got, np.isin(keys, np.array(sorted(tiny))))
    assert got.any() and not got.all()


def _assert_same_aggregate(a: C.Aggregate, b: C.Aggregate, where) -> None:
    assert sorted(a.bins) == sorted(b.bins), where
    for key, x in a.bins.items():
        y = b.bins[key]
        assert x["count"] == y["count"] and x["flushed"] == y["flushed"], (where, key)
        assert np.array_equal(x["buckets"], y["buckets"]), (where, key)
        assert np.array_equal(C.dense_hist(x["hist"]), C.dense_hist(y["hist"])), (where, key)
        for name in ("max_ulp", "max_ulp_ieee"):
            assert np.array_equal(x[name], y[name], equal_nan=True), (where, key, name)
    assert (a.wrong_nan, a.wrong_inf, a.mpmath_points) == (b.wrong_nan, b.wrong_inf, b.mpmath_points), where
    assert np.array_equal(a.max_frac, b.max_frac, equal_nan=True), where
    for x, y in ((a.worst, b.worst), (a.samples, b.samples)):
        assert (x is None) == (y is None), where
        if x is not None:
            pd.testing.assert_frame_equal(x, y)
    assert len(a.cells) == len(b.cells)
    for x, y in zip(a.cells, b.cells):
        pd.testing.assert_frame_equal(x, y)


@pytest.mark.slow
@pytest.mark.parametrize(("case", "dtype", "transforms", "starts"), [
    # softplus: subnormal inputs, a flushed subnormal gradient near -100, the naive
    # gradient's NaN near 100, +inf, exact zeros near -1e30, a cancellation near -6, [1, 2)
    ("softplus", "float32", ("value", "grad", "grad2"), (1e-40, -100.0, 100.0, np.inf, -1e30, -6.0, 1.5)),
    # logaddexp, one x against every y: subnormal pairs, exact zeros, both exps overflowing,
    # the value's cancellation band, the naive gradient's NaN, and -inf
    ("logaddexp", "float16", ("value", "grad"), (2.0**-24, 0.0, 6e4, -0.6931, 11.1, -np.inf)),
], ids=["softplus-float32", "logaddexp-float16"])
def test_compiled_and_numpy_chunks_give_identical_aggregates(case, dtype, transforms, starts):
    f = fmt(dtype)
    c = get_case(case)
    spec = Spec(case, tuple(c.variants), transforms, chunk_bits=16, dtype=dtype)
    fused = C.prepare(spec, None, flushes=flushes_subnormals(dtype, None))
    plain = replace(fused, fused=False)
    assert fused.fused
    nargs = len(spec.args)
    for v in starts:
        i = int(np.array(v, dtype=f.dtype).view(f.uint)) << (f.bits * (nargs - 1)) >> spec.chunk_bits
        got, _ = C.run_chunk(fused, i)
        want, _ = C.run_chunk(plain, i)
        assert sorted(got) == sorted(want)
        for key in want:
            _assert_same_aggregate(got[key], want[key], (case, dtype, v, key))


def test_without_numba_the_chunks_run_as_numpy_passes(monkeypatch):
    import sys

    spec = Spec("softplus", ("naive", "stable"), ("value",), chunk_bits=12)
    i = int(np.float32(1.5).view(np.uint32)) >> spec.chunk_bits
    want, _ = C.run_chunk(C.prepare(spec, None, flushes=flushes_subnormals("float32", None)), i)
    monkeypatch.setitem(sys.modules, "numba", None)  # (an import of numba now fails)
    monkeypatch.delitem(sys.modules, "rulelab.scoring.kernel", raising=False)
    monkeypatch.delattr(sys.modules["rulelab.scoring"], "kernel", raising=False)
    assert not C.compiled()
    setup = C.prepare(spec, None, flushes=flushes_subnormals("float32", None))
    assert not setup.fused
    got, _ = C.run_chunk(setup, i)
    for key in want:
        _assert_same_aggregate(got[key], want[key], key)
