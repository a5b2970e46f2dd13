"""The fast tier in sampled sweeps: a run that takes provisional references from it has
the tables of a run with mpmath at every point, bit for bit; the points a table shows
are found whatever the fast values' error within the margin; the tier stands in only
where it may, and only where it pays for its validation; a validation is kept."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import tables
from hypothesis import given, settings
from hypothesis import strategies as st

from rulelab import store
from rulelab.model.case import get_case
from rulelab.model.plan import load_plan, with_overrides
from rulelab.reference import fast, tier
from rulelab.reference.cache import load_cache, reference_key
from rulelab.runs import sampled
from rulelab.runs.executors import Options
from rulelab.scoring.metrics import PointErrors, frac_sensitive, summarize, worst_order
from rulelab.store.vocabulary import FAST_TIER_RECORD, Bucket

ONE = Options(workers=1, progress=False, compile_cache=False, result_cache=False)


def _runs(tmp_path, plan):
    """The plan run with the fast tier and with mpmath alone; the first's tier record."""
    with_tier = sampled.start(plan, tmp_path / "tier", options=ONE)
    alone = sampled.start(plan, tmp_path / "mpmath", options=replace(ONE, fast_tier=False))
    return tables(with_tier), tables(alone), store.read_meta(with_tier).sessions[-1].get(FAST_TIER_RECORD, {})


def _assert_same(a, b):
    for name in store.TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


@pytest.mark.slow
def test_the_quick_plans_tables_are_those_of_mpmath_alone(tmp_path, monkeypatch):
    # Every fast reference forced into use (a quick plan is too small to pay for the
    # validations): softplus and sigmoid in every dtype (float64 points stay mpmath's),
    # logaddexp in float16 (two arguments, an error map).
    monkeypatch.setattr(tier, "WORTH", 0)
    quick = load_plan("quick")
    for cases, dtypes in ((["softplus", "sigmoid"], ["float32", "float16", "bfloat16", "float64"]), (["logaddexp"], ["float16"])):
        plan = with_overrides(quick, cases=cases, dtypes=dtypes)
        a, b, used = _runs(tmp_path / cases[0], plan)
        refs = {f"{c}/{k}" for c in cases for k in ("value", "d1_x", "d2_x")}
        assert refs <= set(used) and all(used[r] > 100 for r in refs), used
        assert (a["worst"]["frac_ulp"].notna()).sum() > 100
        _assert_same(a, b)


@pytest.mark.slow
def test_the_default_plans_softplus_float32_tables_are_those_of_mpmath_alone(tmp_path):
    # 130,000 float32 points: the tier pays for its validation here without being forced
    plan = with_overrides(load_plan("default"), cases=["softplus"], dtypes=["float32"], transforms=["value", "grad"])
    with_tier = sampled.start(plan, tmp_path / "tier", options=ONE)
    used = store.read_meta(with_tier).sessions[-1][FAST_TIER_RECORD]
    assert used["softplus/value"] > 100_000 and used["softplus/d1_x"] > 100_000, used
    case = get_case("softplus")
    computed = {o: len(load_cache(reference_key(case, o, "x"))) for o in (0, 1)}
    assert all(0 < n < 30_000 for n in computed.values()), computed  # (mpmath: the validations, samples and undecided points)
    alone = sampled.start(plan, tmp_path / "mpmath", options=replace(ONE, fast_tier=False))
    _assert_same(tables(with_tier), tables(alone))


def _errors(dulp, frac):
    bucket = np.where(np.isnan(dulp), Bucket.UNSETTLED, Bucket.of_ulp(np.nan_to_num(dulp, posinf=0.0)))
    bucket = np.where(np.isinf(dulp), Bucket.WRONG_NONFINITE, bucket).astype(np.int8)
    return PointErrors(dulp, frac, bucket, np.zeros(dulp.size), dulp, bucket, np.zeros(dulp.size, dtype=bool))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.sampled_from([0.0, 1e-9, 2.0**-20, 0.01]))
def test_the_points_a_table_shows_are_found_whatever_the_error_within_the_margin(seed, k, margin):
    # True fractional errors with many ties in dULP (and some exactly equal), the same
    # points off by up to the margin either way: with the true error put back at the
    # points frac_sensitive names, the k worst (in order) and the largest fractional
    # error are the true ones.
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    dulp = rng.integers(0, 3, n).astype(np.float64)
    dulp[rng.random(n) < 0.05] = np.nan  # unsettled
    dulp[rng.random(n) < 0.1] = np.inf  # a wrong NaN or inf: no fractional error
    true = np.round(rng.random(n) * 0.5 + dulp, 2)
    true[~np.isfinite(dulp)] = np.nan
    off = true + rng.uniform(-margin, margin, n)
    need = frac_sensitive(_errors(dulp, off), k, margin)
    patched = off.copy()
    patched[need] = true[need]
    want, got = _errors(dulp, true), _errors(dulp, patched)
    assert worst_order(got.bucket, got.dulp, got.frac)[:k].tolist() == worst_order(want.bucket, want.dulp, want.frac)[:k].tolist()
    np.testing.assert_equal(summarize(got)["max_frac_ulp"], summarize(want)["max_frac_ulp"])  # (NaN where none is measured)


def test_the_tier_stands_in_only_where_it_may(monkeypatch):
    monkeypatch.setattr(tier, "WORTH", 0)
    case = get_case("softplus")
    x = np.array([0.75, -3.5, 12.0, 1e-30, 5.0, 7.25, 100.0, -20.0])
    n = x.size
    uses = {"float32": np.ones(n, dtype=bool), "float64": np.zeros(n, dtype=bool)}
    uses["float64"][4] = True  # a float64 point needs mpmath's double-double
    exact = np.zeros(n, dtype=bool)
    exact[5] = True  # a sampled point: its reference is listed
    f = tier.FastFill(case, "x", 1, (x,), uses, exact)
    at, values = f(np.arange(n))
    assert 4 not in at and 5 not in at and {0, 1, 2, 6, 7} <= set(at.tolist())
    assert f.wide[6] and not f.wide[[0, 1, 2, 7]].any()  # (sigmoid(100) rounds to 1.0, where the spacing halves)
    assert np.array_equal(values, fast.evaluate_fast(case, "x", 1, (x[at],)))
    assert set(f.bounds) == {"float32"} and fast.FLOOR <= f.bounds["float32"] <= fast.max_bound("float32")
    # only the positions asked about are filled
    at, _ = f(np.array([1, 2]))
    assert set(at.tolist()) <= {1, 2}


def test_the_tier_is_not_used_where_its_validation_costs_more_than_it_spares():
    case = get_case("softplus")
    x = np.linspace(-10, 10, 50)
    f = tier.FastFill(case, "x", 0, (x,), {"float32": np.ones(x.size, dtype=bool)}, np.zeros(x.size, dtype=bool))
    at, _ = f(np.arange(x.size))
    assert at.size == 0 and f.bounds == {}
    assert tier.cached_validation(case, "x", 0, "float32") is None  # (and nothing was validated)
    assert tier.validation_cost(case, "x", 0, "float32") > tier.WORTH * x.size


def test_a_validation_is_kept_and_a_corrupt_one_is_made_again():
    case = get_case("stable_sqrt")
    v = tier.validated(case, "x", 0, "float16")
    assert tier.cached_validation(case, "x", 0, "float16") == v and tier.validation_cost(case, "x", 0, "float16") == 0
    tier._validation_path(case, "x", 0, "float16").write_text("{not json")
    assert tier.cached_validation(case, "x", 0, "float16") is None
    assert tier.validated(case, "x", 0, "float16") == v


def test_the_ties_of_a_non_finite_class_need_no_reference():
    # 1000 wrong NaN results tie as the worst; their order is by position whatever the
    # reference, so only the 10 shown and the largest fractional error's points need one
    dulp = np.r_[np.full(1000, np.inf), np.arange(50.0)]
    frac = np.r_[np.full(1000, np.nan), np.arange(50.0) + 0.25]
    need = frac_sensitive(_errors(dulp, frac), 10, 2.0**-30)
    assert need.tolist() == [*range(10), 1049]
