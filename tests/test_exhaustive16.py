"""Every pair of 16-bit inputs of a case of two arguments (``rulelab sweep exhaustive16``):
the chunks hold every pair once, a chunk's scoring and aggregates equal point-by-point
scoring (subnormal pairs, overflow of both arguments, exact zeros, a cancellation band,
NaN results), the fast tier rounds as mpmath does, the error map counts every point
once, a killed run resumes to identical tables, and the command line refuses what it
cannot sweep with the command that can."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from helpers import (
    assert_aggregate_is_binned,
    assert_same_errors,
    rulelab,
    stopped_exhaustive_run,
    tables,
)

from rulelab import store
from rulelab.core.floats import round_double_double
from rulelab.jaxrun.backend import flushes_subnormals
from rulelab.model.case import get_case
from rulelab.model.exhaustive_spec import Spec
from rulelab.reference import fast as fastref
from rulelab.reference.compute import references
from rulelab.runs import exhaustive as E
from rulelab.runs.executors import Options
from rulelab.scoring import chunks as C
from rulelab.scoring.binning import bin_index, cells_table
from rulelab.scoring.metrics import point_errors
from rulelab.store.vocabulary import Bucket

ONE = Options(workers=1, progress=False, compile_cache=False)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    # one reference cache for the module: the validations of the fast tier are shared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RULELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def f16(*values):
    return [int(np.float16(v).view(np.uint16)) for v in values]


def test_the_chunks_hold_every_pair_once():
    x, y = C.chunk_inputs(0x3C00, 16, "float16", 2)  # one x (1.0), every y bit pattern
    assert (x.view(np.uint16) == 0x3C00).all() and np.array_equal(y.view(np.uint16), np.arange(2**16, dtype=np.uint16))
    x, y = C.chunk_inputs(5, 20, "bfloat16", 2)  # 16 consecutive x patterns, each against every y
    assert np.array_equal(np.unique(x.view(np.uint16)), np.arange(80, 96)) and np.bincount(y.view(np.uint16)).max() == 16
    spec = Spec("logaddexp", ("naive",), ("grad",), dtype="bfloat16")
    assert len(spec.chunk_list) == 2**32 >> spec.chunk_bits and [t.arg for t in spec.tasks] == ["x", "y"]
    assert E.finite_inputs(spec) == 65280**2  # 2^16 patterns less 2 x 128 infinities and NaNs, squared
    assert E.finite_inputs(Spec("logaddexp", ("naive",), ("grad",), chunk_bits=16, chunks=(0x3C00, 0x7C00), dtype="float16")) == 63488


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False], ids=["compiled", "numpy"])
def test_two_argument_chunks_score_as_point_errors_and_round_as_mpmath(fused):
    # float16 logaddexp, one x against every y in each chunk: x the least subnormal (subnormal
    # pairs), 0 (exact zeros), 6e4 (both exps overflow when y is large too), -0.6931 (the
    # band where e^x + e^y = 1 and the value cancels to 0) and 11.1 (the naive gradient's NaN)
    case = get_case("logaddexp")
    spec = Spec("logaddexp", tuple(case.variants), ("value", "grad"), chunk_bits=16, dtype="float16")
    setup = replace(C.prepare(spec, None, flushes=flushes_subnormals("float16", None)), fused=fused)
    rng = np.random.default_rng(1)
    seen = dict.fromkeys(("not_subtracted", "nan", "zero_ref", "subnormal_pair"), 0)
    for i in [1, *f16(0.0, 6e4, -0.6931, 11.1)]:
        scored = list(C.score_chunk(setup, i))
        index, cells = bin_index([scored[0].points[0]]), bin_index(scored[0].points)
        checked_refs = set()
        for sc in scored:
            ref, (x, y) = sc.ref, sc.points
            want = point_errors(sc.values, ref.hi, ref.lo, "float16", rounded=ref.rounded, flush=ref.flush)
            assert_same_errors(sc.point_errors(), want, (i, sc.task))
            pos = 0 if sc.task.arg != "y" else 1
            assert_aggregate_is_binned(C.aggregate(sc, bin_index([sc.points[pos]]) if pos else index, cells, C.K_WORST),
                                       sc.points[pos], sc, want, (i, sc.task))
            # the error map: every point in one cell, the cells' maxima and failures those of the points
            m = C.aggregate(sc, index, cells, C.K_WORST).cells[0]
            with np.errstate(divide="ignore"):
                bx, by = np.floor(np.log2(np.abs(x))), np.floor(np.log2(np.abs(y)))
            frame = pd.DataFrame({"sign0": np.where(np.signbit(x), -1, 1), "b0": bx, "sign1": np.where(np.signbit(y), -1, 1),
                                  "b1": by, "d": np.where(want.bucket <= Bucket.ULP_GT_1024, want.dulp, np.nan),
                                  "bad": np.isin(want.bucket, (Bucket.WRONG_NONFINITE, Bucket.UNEXPECTED_FINITE))})
            g = frame.groupby(["sign0", "b0", "sign1", "b1"]).agg(count=("d", "size"), max_ulp=("d", "max"), bad=("bad", "sum"))
            assert m["count"].sum() == x.size and len(m) == len(g), (i, sc.task)
            got = m.set_index(["sign0", "binade0", "sign1", "binade1"]).sort_index()
            assert np.array_equal(got["count"].to_numpy(), g["count"].to_numpy())
            assert np.array_equal(got["max_ulp"].to_numpy(), g["max_ulp"].to_numpy(), equal_nan=True)
            assert np.array_equal((got["wrong_nonfinite"] + got["unexpected_finite"]).to_numpy(), g["bad"].to_numpy())
            key = (sc.task.order, sc.task.arg or "x")
            if key not in checked_refs:  # where the fast tier decided, mpmath rounds alike
                checked_refs.add(key)
                at = rng.choice(x.size, 300, replace=False)
                hi, lo = references(case, key[0], key[1], (x[at], y[at]))
                assert np.array_equal(round_double_double(hi, lo, "float16"), ref.rounded[at], equal_nan=True), (i, key)
            seen["not_subtracted"] += int((want.bucket > Bucket.ULP_GT_1024).sum())
            seen["nan"] += int(np.isnan(sc.values.astype(np.float64)).sum())
            seen["zero_ref"] += int((ref.rounded == 0).sum())
            seen["subnormal_pair"] += int(((np.abs(x) < 2.0**-14) & (np.abs(y) < 2.0**-14) & (x != 0) & (y != 0)).sum())
    assert all(seen.values()), seen


@pytest.mark.slow
def test_the_fast_tier_classifies_the_default_plans_bfloat16_pairs_as_the_sampled_sweep():
    # every bfloat16 pair of the default plan for logaddexp and hypot, scored as the
    # sampled sweep scores it (mpmath at each point) and by the exhaustive scoring
    from rulelab.jaxrun.evaluate import evaluate
    from rulelab.model.inputs import make_sweep
    from rulelab.model.plan import load_plan

    plan = load_plan("default")
    for name in ("logaddexp", "hypot"):
        case = get_case(name)
        pts = make_sweep(case, "bfloat16", plan.spec("bfloat16", 2), plan.seed).points
        bits = np.unique(np.stack([p.view(np.uint16) for p in pts], axis=1), axis=0)
        pts = tuple(np.ascontiguousarray(bits[:, k]).view(pts[0].dtype) for k in range(2))
        assert pts[0].size > 1000
        spec = Spec(name, tuple(case.variants), ("grad",), dtype="bfloat16")
        scored = list(C.score_points(C.prepare(spec, None, flushes=False), pts))
        for sc in scored:
            t = sc.task
            assert np.array_equal(sc.points[0], pts[0].astype(np.float64))  # (no pair is outside the domain)
            out = evaluate(case, t.variant, t.transform, t.arg, "bfloat16", pts)
            want = point_errors(out.values, *references(case, t.order, t.arg, tuple(p.astype(np.float64) for p in pts)), "bfloat16")
            got = sc.point_errors()
            assert got.bucket.tolist() == want.bucket.tolist(), t
            assert np.array_equal(got.dulp, want.dulp, equal_nan=True), t
        assert sum(sc.ref.mpmath_points for sc in scored) < pts[0].size  # the fast tier decided most points


@pytest.mark.slow
def test_a_killed_two_argument_run_resumes_to_the_tables_of_an_uninterrupted_one(tmp_path, monkeypatch):
    spec = Spec("hypot", ("naive", "library"), ("grad",), chunk_bits=16, chunks=tuple(f16(-3.0, 1e-7, 0.0, 2.0, 300.0)), dtype="float16")
    whole = E.start(spec, tmp_path / "whole", ONE)
    run = stopped_exhaustive_run(spec, tmp_path / "cut", ONE, monkeypatch, after=2)
    resumed = E.resume(run.name, tmp_path / "cut", ONE)
    a, b = tables(resumed), tables(whole)
    for name in store.TABLES:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    s, m = a["summary"], a["binned2"]
    assert (s["n_points"] == 5 * 63488).all() and set(s["arg"]) == {"x", "y"}
    # the map counts every point once, and its worst cell is the result's max dULP
    per = m.groupby(["variant", "arg"]).agg(n=("count", "sum"), top=("max_ulp", "max"))
    for r in s.itertuples():
        assert per.loc[(r.variant, r.arg), "n"] == r.n_points and per.loc[(r.variant, r.arg), "top"] == r.max_ulp
    meta = store.read_meta(resumed)
    v = meta.exhaustive["validation"]["d/dx"]
    assert meta.exhaustive["dtype"] == "float16" and v["dtype"] == "float16" and isinstance(v["tiny_binade_pairs"], int)
    # the report: the run's facts name the pairs, the case page draws an error map per derivative
    from rulelab.report.build import build_report
    from rulelab.report.pages import case_file

    index = build_report([resumed], None, tmp_path / "reports", workers=1)
    page = (index.parent / case_file("hypot")).read_text()
    assert page.count("error map over x and y in float16") == 2 and "every pair of finite float16 inputs of 5 chunks" in index.read_text()


def test_the_command_line_refuses_what_it_cannot_sweep_and_names_what_can(tmp_path, env):
    r = rulelab("sweep", "exhaustive16", "--cases", "hypot", "--results", str(tmp_path), env=env)
    assert r.returncode == 2 and "--dtypes bfloat16 or float16" in r.stderr
    r = rulelab("sweep", "exhaustive16", "--cases", "softplus", "--dtypes", "bfloat16", "--results", str(tmp_path), env=env)
    assert r.returncode == 2 and "cases of two arguments" in r.stderr and "exhaustive32" in r.stderr
    r = rulelab("sweep", "exhaustive32", "--cases", "hypot", "--results", str(tmp_path), env=env)
    assert r.returncode == 2 and "exhaustive16" in r.stderr
    r = rulelab("sweep", "exhaustive16", "--cases", "logsumexp3", "--dtypes", "float16", "--results", str(tmp_path), env=env)
    assert r.returncode == 2 and "has 3" in r.stderr


def test_validation_names_the_pair_of_binades_where_a_two_argument_fast_reference_is_off():
    import rulelab as rl

    def off(x, y):  # hypot, 1e-4 too large where x is in [2, 4) and y in [1/4, 1/2)
        return np.hypot(x, y) * np.where((np.floor(np.log2(np.abs(x))) == 1) & (np.floor(np.log2(np.abs(y))) == -2), 1 + 1e-4, 1.0)

    case = rl.make_case("hypot_off", "hypot", ("x", "y"), (rl.Interval(-8.0, 8.0), rl.Interval(-8.0, 8.0)),
                        lambda mp, x, y: mp.hypot(x, y), {"naive": lambda x, y: (x * x + y * y) ** 0.5},
                        fast_reference={("x", 0): off})
    rl.register(case)
    try:
        with pytest.raises(fastref.FastReferenceError, match=r"x in [+-]binade 1, y in [+-]binade -2 \(float16\)"):
            fastref.validate(case, "x", 0, "float16")
    finally:
        rl.unregister(case.name)
    assert fastref.max_bound("bfloat16") == 2.0**-20 and fastref.max_bound("float32") == 2.0**-36
    assert cells_table((np.array([1.0]), np.array([2.0])), point_errors(np.array([1.0], np.float16), np.array([1.0]), np.array([0.0]), "float16"))["count"].tolist() == [1]


def test_merging_many_chunks_sums_their_error_maps_as_summing_them_once():
    # a run merges chunk after chunk, summing the error-map frames every CELLS_KEPT; the
    # sum (counts added, maxima taken, NaN where a cell has no comparable point) is the
    # same as one sum over every frame, and the merged aggregate holds a few frames only
    rng = np.random.default_rng(5)
    keys = [(s0, b0, s1, b1) for s0 in (-1.0, 1.0) for b0 in (-np.inf, -3.0, 0.0) for s1 in (-1.0, 1.0) for b1 in (-np.inf, 2.0, 7.0)]
    frames = []
    for _ in range(3 * C.CELLS_KEPT + 5):
        rows = [keys[j] for j in rng.choice(len(keys), 10, replace=False)]
        points = rng.integers(1, 100, len(rows))
        top = np.where(rng.random(len(rows)) < 0.3, np.nan, rng.integers(0, 50, len(rows)).astype(float))
        empty = C.summed_cells(())  # (the error map's columns and types)
        frame = pd.DataFrame({c: pd.Series(np.zeros(len(rows)), dtype=empty[c].dtype) for c in empty.columns})
        frame[list(C.CELL_KEYS)] = np.array(rows)
        frame["count"], frame["max_ulp"], frame["max_ulp_ieee"] = points, top, top
        frames.append(frame)
    merged = C.Aggregate({}, cells=(frames[0],))
    for f in frames[1:]:
        merged = merged.merge(C.Aggregate({}, cells=(f,)), C.K_WORST)
    assert len(merged.cells) <= C.CELLS_KEPT
    pd.testing.assert_frame_equal(C.summed_cells(merged.cells), C.summed_cells(tuple(frames)), check_exact=True)
    want = pd.concat(frames).groupby(list(C.CELL_KEYS))["count"].sum()
    assert np.array_equal(C.summed_cells(merged.cells)["count"].to_numpy(), want.to_numpy())
