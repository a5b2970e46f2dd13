"""Every catalog reference, value and derivative, checked against one evaluation at four
times the precision it settled at, on a few hundred points per dtype drawn from the
extremes, subnormals, special points and random binades: the same rounding in every
dtype, and no unsettled point."""

from __future__ import annotations

import numpy as np
import pytest

from rulelab.core.floats import double_double, round_double_double
from rulelab.model import case as M
from rulelab.model.case import cases, get_case
from rulelab.model.inputs import SweepSpec, make_sweep
from rulelab.reference import settle as R

SPEC = SweepSpec(exhaustive16=False, per_binade=1, grid_per_binade=1, grid_stride=24, specials=True)
PER_DTYPE = 120
DTYPES = ("float32", "float16", "bfloat16")



def points(case) -> list[tuple[float, ...]]:
    """Up to PER_DTYPE points of each dtype's sweep: the special points first, then an
    even spread over the rest (extremes and subnormals included)."""
    out: dict[tuple[float, ...], None] = {}
    for dtype in DTYPES:
        with np.errstate(over="ignore"):
            sweep = make_sweep(case, dtype, SPEC, seed=1)
        pts = np.stack([p.astype(np.float64) for p in sweep.points], axis=1)
        idx = np.unique(np.linspace(0, len(pts) - 1, PER_DTYPE).round().astype(np.int64))
        for p in pts[idx]:
            out[tuple(float(v) for v in p)] = None
    return list(out)


def rounded(hi: float, lo: float, point: tuple[float, ...]) -> list[float]:
    """The reference rounded to float64 and to each dtype whose sweeps can hold the
    point, as floats (±0 alike, as in dULP; NaN as a string so that it equals itself)."""
    out = [float(round_double_double(np.array([hi]), np.array([lo]), d)[0]) for d in ("float64", *R.holding_dtypes(point))]
    return [v if v == v else "nan" for v in out]


@pytest.mark.slow
@pytest.mark.parametrize("name", [c.name for c in cases()])
def test_catalog_references_agree_with_four_times_the_precision(name):
    case = get_case(name)
    targets = [(0, case.args[0])] + [(k, a) for a, k in case.derivative_keys()]
    unsettled, wrong = [], []
    for point in points(case):
        for order, arg in targets:
            hi, lo, prec = R.settle(case, order, arg, point)
            if np.isnan(hi) and lo != 0:
                unsettled.append((M.derivative_label(order, arg), point))
                continue
            try:
                check = R.evaluate_at(case, order, arg, point, 4 * prec)
            except R.Unconverged:
                continue
            dd = (np.nan, 0.0) if check is None else double_double(check)
            if rounded(hi, lo, point) != rounded(*dd, point):
                wrong.append((M.derivative_label(order, arg), point, (hi, lo), dd))
    assert not wrong, f"{len(wrong)} references differ from 4x the precision, e.g. {wrong[:3]}"
    assert not unsettled, f"{len(unsettled)} unsettled, e.g. {unsettled[:5]}"
