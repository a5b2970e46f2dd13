"""Sweeps reach every binade, respect domains, and are deterministic."""

import math

import numpy as np
import pytest

from rulelab.core import floats as F
from rulelab.model.case import (
    NONNEGATIVE,
    POSITIVE,
    REALS,
    Interval,
    Variant,
    make_case,
)
from rulelab.model.inputs import SweepSpec, make_sweep, per_binade, special_points


def toy(args=("x",), domain=REALS, points=()):
    return make_case("toy_inputs", "x", args, domain, lambda mp, *a: a[0],
                     [Variant("naive", lambda *a: a[0])], special_points=points)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_per_binade_reaches_every_binade_both_signs(dtype):
    f = F.fmt(dtype)
    v = per_binade(dtype, 3, REALS, seed=1).astype(np.float64)
    expected = set(range(f.quantum_min, f.emax + 1))
    assert set(F.binade(v[v > 0]).astype(int)) == expected
    assert set(F.binade(-v[v < 0]).astype(int)) == expected
    assert np.isfinite(v).all()


def test_per_binade_is_deterministic_and_seeded():
    a = per_binade("float32", 4, REALS, seed=7)
    b = per_binade("float32", 4, REALS, seed=7)
    c = per_binade("float32", 4, REALS, seed=8)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(a.view(np.uint32), c.view(np.uint32))


def test_domains_are_respected():
    v = per_binade("float32", 4, POSITIVE).astype(np.float64)
    assert (v > 0).all()
    s = make_sweep(toy(domain=NONNEGATIVE), "bfloat16")
    x = s.points[0].astype(np.float64)
    assert (x >= 0).all() and (x == 0).any() and np.isfinite(x).all()
    # every non-negative finite bfloat16 value (with +0 and -0, which compare >= 0) is there
    allv = F.all_finite("bfloat16").astype(np.float64)
    assert len(s) == int((allv >= 0).sum())


def test_exhaustive_16_bit_sweep_has_every_value():
    s = make_sweep(toy(), "float16")
    assert len(s) == F.all_finite("float16").size


def test_special_points_and_thresholds():
    sp = special_points("float32", REALS, (88.72,)).astype(np.float64)
    t = float(np.float32(88.72))
    for v in (0.0, 1.0, -1.0, F.fmt("float32").max_finite, 2.0**-149, 2.0**-126, t,
              float(np.nextafter(np.float32(t), np.float32(np.inf)))):
        assert v in sp
    assert np.signbit(sp[sp == 0]).any() and (~np.signbit(sp[sp == 0])).any()
    ext = special_points("float32", Interval(-math.inf, math.inf, lo_closed=True), (-math.inf,)).astype(np.float64)
    assert -math.inf in ext and math.inf not in ext


def test_grid_for_two_arguments_includes_special_pairs():
    case = toy(args=("x", "y"), domain=(REALS, POSITIVE), points=[(0.0, 1e-30)])
    s = make_sweep(case, "float32", SweepSpec(grid_per_binade=1, grid_stride=16))
    x, y = (p.astype(np.float64) for p in s.points)
    assert (y > 0).all() and (x < 0).any() and (x > 0).any()
    assert ((x == 0) & (y == np.float32(1e-30))).any()
    nx, ny = len(np.unique(s.points[0].view(np.uint32))), len(np.unique(s.points[1].view(np.uint32)))
    assert len(s) >= (nx - 3) * (ny - 3)  # a full grid, not a diagonal
