"""The fast reference tier and the sweep of every float32 input: validation refuses a
wrong fast reference, points near a rounding boundary go to mpmath, a killed run
resumes to identical tables, and the exhaustive scoring of a few binades classifies
every sampled point as the sampled sweep does."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import (
    assert_aggregate_is_binned,
    assert_same_errors,
    stopped_exhaustive_run,
    tables,
)

import rulelab
from rulelab import store
from rulelab.core.floats import round_double_double
from rulelab.jaxrun.backend import flushes_subnormals
from rulelab.jaxrun.evaluate import evaluate
from rulelab.model.case import get_case, make_case
from rulelab.model.exhaustive_spec import chunks_of_binades
from rulelab.model.inputs import make_sweep
from rulelab.model.plan import load_plan
from rulelab.reference import fast as fastref
from rulelab.reference.compute import references
from rulelab.runs import exhaustive as E
from rulelab.runs import lifecycle
from rulelab.runs.executors import Options
from rulelab.scoring import chunks as C
from rulelab.scoring.binning import bin_index
from rulelab.scoring.metrics import flush_reference, point_errors

ONE = Options(workers=1, progress=False, compile_cache=False)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))


def exp_case(name, fast):
    import jax.numpy as jnp

    case = make_case(name, "e^x", ("x",), rulelab.Interval(-10.0, 10.0), lambda mp, x: mp.exp(x), {"naive": jnp.exp},
                     derivatives={("x", 1): lambda mp, x: mp.exp(x)}, fast_reference={("x", 0): fast, ("x", 1): fast})
    rulelab.register(case)
    return case


def test_validation_refuses_a_fast_reference_off_by_1e_6_in_one_binade():
    def off(x):  # e^x, but 1e-6 too large for 8 <= |x| < 16 (float32 binade 3)
        return np.exp(x) * np.where(np.floor(np.log2(np.abs(x))) == 3, 1 + 1e-6, 1.0)

    good, bad = exp_case("fast_good", np.exp), exp_case("fast_bad", off)
    try:
        v = fastref.validate(good, "x", 0)
        assert v.bound <= 8 * 2.0**-50 * 64 and v.n_points > 2 * 8 * 3  # every binade inside [-10, 10], both signs
        with pytest.raises(fastref.FastReferenceError, match=r"off by 1e-06 relative .*binade 3"):
            fastref.validate(bad, "x", 0)
    finally:
        rulelab.unregister(good.name)
        rulelab.unregister(bad.name)


def test_a_value_near_a_float32_rounding_boundary_is_left_to_mpmath():
    v = fastref.Validation("c", "x", 0, 2.0**-45, 1, 0.0, 0.0, frozenset())
    tie = 1.0 + 2.0**-24  # halfway between 1 and the next float32
    near = tie * (1 + 2.0**-47)  # within the bound of the tie: either rounding is possible
    far = 1.0 + 2.0**-22 + 2.0**-30  # far from any halfway point
    ok = fastref.decided(np.array([tie, near, far, 0.0, np.inf, np.nan]), np.ones(6), v)
    assert ok.tolist() == [False, False, True, False, False, False]
    # a tiny value decides only in a binade where the validation saw tiny references
    tiny = fastref.Validation("c", "x", 0, 2.0**-45, 1, 0.0, 0.0, frozenset(fastref.bin_key(np.array([-200.0])).tolist()))
    assert fastref.decided(np.array([1e-305, 1e-305]), np.array([-200.0, 200.0]), tiny).tolist() == [True, False]
    # above fastref.TINY a value that rounds to zero is decided by its bound, like any other
    assert fastref.decided(np.array([1e-50, -1e-300]), np.array([200.0, 200.0]), tiny).tolist() == [True, True]


def test_a_case_without_a_fast_reference_is_refused_with_what_it_needs():
    with pytest.raises(E.ExhaustiveError, match="has no fast reference for derivative 1"):
        E.check_case(get_case("log_ndtr"), ["grad"])
    with pytest.raises(E.ExhaustiveError, match="cases of one argument"):
        E.check_case(get_case("hypot"), ["value"])


@pytest.mark.parametrize("plan_name, transforms", [("quick", ("value", "grad", "grad2")), ("default", ("value", "grad"))])
@pytest.mark.slow
def test_exhaustive_scoring_classifies_every_plan_point_as_the_sampled_sweep(plan_name, transforms):
    # Every softplus float32 point of the plan, scored as a sampled sweep scores it
    # (mpmath references at each point, metrics.point_errors) and by the exhaustive
    # sweep's scoring (fast tier, mpmath only where it cannot decide, subtraction).
    case = get_case("softplus")
    plan = load_plan(plan_name)
    x = make_sweep(case, "float32", plan.spec("float32", 1), plan.seed).points[0]
    pts = np.unique(x[np.isfinite(x)])
    assert pts.size > (2000 if plan_name == "quick" else 100_000)
    flush = flushes_subnormals("float32", None)
    spec = E.Spec("softplus", tuple(case.variants), transforms)
    scored = {sc.task.key: sc for sc in C.score_points(C.prepare(spec, None, flushes=flush), pts)}
    x64 = pts.astype(np.float64)
    flushed = np.where(np.abs(pts) < np.finfo(np.float32).smallest_normal, np.copysign(0.0, pts), pts).astype(np.float64)
    for t in spec.tasks:
        out = evaluate(case, t.variant, t.transform, t.arg or None, "float32", (pts,))
        hi, lo = references(case, t.order, "x", (x64,))
        fr = flush_reference(*references(case, t.order, "x", (flushed,)), "float32", round_double_double(hi, lo, "float32")) if flush else None
        want = point_errors(out.values, hi, lo, "float32", flush=fr)
        sc = scored[t.key]
        assert np.array_equal(sc.points[0], x64)
        got = sc.point_errors()
        assert got.bucket.tolist() == want.bucket.tolist(), t
        assert np.array_equal(got.dulp, want.dulp, equal_nan=True), t


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "numpy"])
def test_subtracted_scoring_equals_point_errors_point_by_point_and_in_aggregate(fused):
    # Chunks of 2^16 inputs where softplus's results and references take every path:
    # subnormal inputs, a subnormal gradient (x near -100, flushed on CPU), NaN from the
    # naive gradient (x near 100), +inf and the NaNs beside it, exact zeros (x near -1e30),
    # the custom_jvp rule's cancellation (x near -6), and [1, 2). Each is scored by the
    # exhaustive sweep's subtraction and, at every point, by metrics.point_errors.
    case = get_case("softplus")
    spec = E.Spec("softplus", tuple(case.variants), ("value", "grad", "grad2"), chunk_bits=16)
    setup = replace(C.prepare(spec, None, flushes=flushes_subnormals("float32", None)), fused=fused)
    at = [np.float32(v).view(np.uint32) >> 16 for v in (1e-40, -100.0, 100.0, np.inf, -1e30, -6.0, 1.5)]
    seen_general = seen_flushed = 0
    for i in at:
        for sc in C.score_chunk(setup, int(i)):
            ref = sc.ref
            x = sc.points[0]
            if not x.size:  # +inf is outside softplus's domain: the chunk holds nothing to score
                assert C.aggregate(sc, bin_index([x]), None, C.K_WORST).bins == {}
                continue
            want = point_errors(sc.values, ref.hi, ref.lo, "float32", rounded=ref.rounded, flush=ref.flush)
            assert_same_errors(sc.point_errors(), want, (i, sc.task))
            assert_aggregate_is_binned(C.aggregate(sc, bin_index([x]), None, C.K_WORST), x, sc, want, (i, sc.task))
            seen_general += sc.general.size
            seen_flushed += int(want.flushed.sum())
    assert seen_general and (seen_flushed or not setup.flushes)


def test_largest_picks_the_r_largest_values_ties_and_nans_included():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=100_000)
    spread[rng.integers(0, spread.size, 500)] = np.nan
    arrays = [spread, np.full(100_000, 0.25), np.repeat(np.arange(1000), 100), rng.integers(0, 3, 5000), np.array([np.nan, 1.0, 2.0])]
    for v in arrays:
        for r in (1, 7, 20):
            got = C._largest(v, r)
            finite = np.sort(v[~np.isnan(v)] if v.dtype.kind == "f" else v)[::-1]
            assert len(set(got.tolist())) == got.size == min(r, finite.size)
            assert np.array_equal(np.sort(v[got])[::-1], finite[:r])


@pytest.mark.slow
def test_a_killed_exhaustive_run_resumes_to_the_tables_of_an_uninterrupted_one(tmp_path, monkeypatch):
    spec = E.Spec("softplus", ("naive", "stable"), ("grad",), chunk_bits=18, chunks=chunks_of_binades(127, 127, 18))
    whole = E.start(spec, tmp_path / "whole", ONE)
    run = stopped_exhaustive_run(spec, tmp_path / "cut", ONE, monkeypatch, after=3)
    assert store.read_meta(run).status == "stopped" and len(E.done_chunks(run)) == 3
    real_versions = lifecycle.versions
    monkeypatch.setattr(lifecycle, "versions", lambda: {**real_versions(), "jax": "9.9.9"})
    with pytest.raises(lifecycle.RunError, match=r"versions changed: jax .* -> 9\.9\.9"):
        E.resume(run.name, tmp_path / "cut", ONE)
    monkeypatch.setattr(lifecycle, "versions", real_versions)
    resumed = E.resume(run.name, tmp_path / "cut", ONE)
    assert E.resume(run.name, tmp_path / "cut", ONE) == resumed and store.read_meta(resumed).status == "complete"  # complete is final
    a, b = tables(resumed), tables(whole)
    for name in store.TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    meta = store.read_meta(resumed)
    assert meta.status == "complete" and meta.exhaustive["inputs"] == 2 * 2**23
    s = a["summary"].set_index("variant")
    assert (s["n_points"] == 2 * 2**23).all()
    # the stable rule is correctly rounded or 1 ULP off on [1, 2) and (-2, -1]; its worst
    # inputs carry mpmath references
    assert s.loc["stable", "max_ulp"] <= 2 and not math.isnan(a["worst"]["ref_hi"].iloc[0])


@pytest.mark.slow
def test_every_catalog_fast_reference_passes_its_validation():
    checked = []
    for case in rulelab.cases():
        dtype = "float32" if len(case.args) == 1 else "float16"  # (every bfloat16 binade pair: 260k mpmath points a derivative)
        for (arg, order) in case.fast_reference:
            v = fastref.validate(case, arg, order, dtype)
            assert fastref.FLOOR <= v.bound <= fastref.max_bound(dtype) and v.n_points > 1000, (case.name, order)
            checked.append(case.name)
    # the seed and pitfall cases the exhaustive sweep covers
    assert {"softplus", "stable_sqrt", "x_over_1p_sqrt", "newton_sqrt", "sigmoid", "log_sigmoid", "log1mexp", "cbrt_bisection",
            "clip_sin", "logaddexp", "hypot", "norm2", "xlogy"} <= set(checked)
