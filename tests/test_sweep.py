"""The sweep, in process, on tiny user cases whose errors are known exactly."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from helpers import USER_CASES

from rulelab import store
from rulelab.model.inputs import make_sweep
from rulelab.model.modules import load_module
from rulelab.model.plan import parse_plan
from rulelab.model.tasks import execution_order, plan_tasks
from rulelab.report.terminal import run_digest
from rulelab.runs import sampled as sweep
from rulelab.runs.lifecycle import RunError
from rulelab.scoring.rows import thin
from rulelab.store.vocabulary import SAMPLED_PHASES

OPTIONS = sweep.Options(workers=1, progress=False, compile_cache=False)


@pytest.fixture(scope="module", autouse=True)
def user_cases():
    """The test cases, registered as ``--module`` would (once per process)."""
    load_module(USER_CASES)


def tiny_plan(cases: str, dtypes: str = '"float32", "float16", "bfloat16"', extra: str = "") -> object:
    text = f"cases = [{cases}]\ndtypes = [{dtypes}]\n{extra}\n[sweep]\nexhaustive16 = false\nper_binade = 2\ngrid_stride = 2\n"
    return parse_plan(text, "tiny.toml", name="tiny")


@pytest.fixture(scope="module")
def neg_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    plan = tiny_plan('"tneg"', extra='transforms = ["value", "grad", "jvp"]')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RULELAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        run = sweep.start(plan, root, [USER_CASES], OPTIONS)
    return root, run, {name: store.load_table(run, name) for name in store.TABLES}


def test_exact_variant_is_zero_ulp_and_off_by_one_is_one(neg_run):
    _, _, t = neg_run
    s = t["summary"].set_index(["variant", "transform", "dtype"])
    import rulelab

    case = rulelab.get_case("tneg")
    for dtype in ("float32", "float16", "bfloat16"):
        n = len(make_sweep(case, dtype, tiny_plan('"tneg"').spec(dtype, 1)))
        for transform in ("value", "grad", "jvp"):
            exact = s.loc[("exact", transform, dtype)]
            assert exact["status"] == "ok"
            assert (exact["n_points"], exact["exact"], exact["max_ulp"], exact["max_frac_ulp"]) == (n, n, 0, 0)
            off = s.loc[("off", transform, dtype)]
            assert (off["n_points"], off["ulp_1"], off["exact"], off["max_ulp"], off["median_ulp"]) == (n, n, 0, 1, 1)
            assert off["wrong_nonfinite"] == off["unexpected_finite"] == off["both_undefined"] == 0


def test_a_variant_that_raises_is_recorded_and_the_rest_complete(neg_run):
    root, run, t = neg_run
    s = t["summary"]
    broken = s[s["variant"] == "broken"]
    assert len(broken) == 9 and (broken["status"] == "error").all()
    assert broken["message"].str.contains("boom: this variant always fails").all()
    assert broken["message"].str.contains("variant 'broken'").all()
    assert (s[s["variant"] != "broken"]["status"] == "ok").all()
    meta = store.read_meta(run)
    assert meta.status == "complete" and meta.counts == {"ok": 18, "unsupported": 0, "error": 9}
    assert store.latest(root) == run


def test_tables_have_their_documented_shape(neg_run):
    _, run, t = neg_run
    for name, columns in store.TABLES.items():
        assert list(t[name].columns[: len(columns)]) == list(columns), name
    ok = t["summary"][t["summary"]["status"] == "ok"]
    b = t["binned"].groupby(["variant", "transform", "dtype"])["count"].sum()
    for _, row in ok.iterrows():
        assert b[(row["variant"], row["transform"], row["dtype"])] == row["n_points"]
    assert set(t["binned"]["binade_of"]) == {"x"}
    w = t["worst"][t["worst"]["variant"] == "off"]
    assert (w["dulp"] == 1).all() and w["in1"].isna().all() and set(w["args"]) == {"x"}
    samples = t["samples"]
    assert samples.groupby(["variant", "transform", "dtype"]).size().max() <= 400
    for _, g in samples.groupby(["variant", "transform", "dtype"]):
        assert g["in0"].is_monotonic_increasing
    assert set(t["summary"]["arg"]) == {"", "x"}
    assert not (run / "parts").exists()
    meta = store.read_meta(run)
    assert meta.backend["backend"] == "cpu" and "flushes_subnormals" in meta.backend
    assert set(meta.phases) == set(SAMPLED_PHASES) and len(meta.tasks) == 27
    assert {"jax", "jaxlib", "numpy", "mpmath", "rulelab"} <= set(meta.versions)
    assert "tneg" in run_digest(run) and "ERR" in run_digest(run)


def test_several_arguments_and_float64(tmp_path):
    plan = tiny_plan('"tadd"', dtypes='"float16", "float64"')
    run = sweep.start(plan, tmp_path, [USER_CASES], OPTIONS)
    s = store.load_table(run, "summary")
    assert len(s) == (1 + 3 * 2) * 2
    assert (s["status"] == "ok").all() and (s["max_ulp"] == 0).all()
    assert sorted(set(s["arg"])) == ["", "x", "y"]
    b = store.load_table(run, "binned")
    assert set(b[b["arg"] == "y"]["binade_of"]) == {"y"} and set(b[b["arg"] == ""]["binade_of"]) == {"x"}
    samples = store.load_table(run, "samples")
    assert samples["in1"].notna().all() and samples["in2"].isna().all()
    assert not jax.config.jax_enable_x64  # switched on for float64 tasks only
    assert "float64" in store.read_meta(run).backend["flushes_subnormals"]


def test_float64_runs_after_the_narrow_dtypes():
    plan = tiny_plan('"tneg", "tadd"', dtypes='"float64", "float16"')
    order = execution_order(plan_tasks(plan))
    assert [t.dtype for t in order] == sorted((t.dtype for t in order), key=lambda d: d == "float64")
    assert sorted(order, key=str) == sorted(plan_tasks(plan), key=str)


@pytest.mark.slow
def test_resume_after_an_interruption_recomputes_nothing_and_matches(tmp_path, monkeypatch):
    plan = tiny_plan('"tneg"', extra='transforms = ["value", "grad"]')
    whole = sweep.start(plan, tmp_path / "a", [USER_CASES], OPTIONS)

    real = store.write_part
    written: list = []

    def stop_after_five(run, key, rows, info):
        if len(written) == 5:
            raise KeyboardInterrupt
        written.append(key)
        return real(run, key, rows, info)

    monkeypatch.setattr(store, "write_part", stop_after_five)
    with pytest.raises(KeyboardInterrupt):
        sweep.start(plan, tmp_path / "b", [USER_CASES], OPTIONS)
    monkeypatch.setattr(store, "write_part", real)
    (stopped,) = (tmp_path / "b" / "accuracy").glob("2*")
    assert store.read_meta(stopped).status == "stopped"
    assert store.read_meta(stopped).stopped["reason"] == "interrupted"
    before = {k: store.read_part(stopped / "parts" / store.part_name(k)) for k in written}

    resumed = sweep.resume(stopped.name, tmp_path / "b", OPTIONS)
    meta = store.read_meta(resumed)
    assert meta.status == "complete"
    assert [s["tasks_run"] for s in meta.sessions if "tasks_run" in s] == [18 - 5]
    for k, part in before.items():  # the finished tasks kept their first timings
        assert meta.tasks["/".join(k)] == part["info"]["wall_s"]
    for name in store.TABLES:
        a = store.load_table(whole, name).drop(columns=list(store.TIMING_COLUMNS), errors="ignore")
        b = store.load_table(resumed, name).drop(columns=list(store.TIMING_COLUMNS), errors="ignore")
        pd.testing.assert_frame_equal(a, b)


def test_nothing_to_run_is_an_error(tmp_path):
    plan = tiny_plan('"tneg"', extra='variants = ["off"]')
    from dataclasses import replace

    with pytest.raises(RunError, match="selects nothing"):
        sweep.start(replace(plan, cases=("tadd",)), tmp_path, [], OPTIONS)


def test_thin_spreads_evenly_and_keeps_small_sets():
    x = np.arange(1000.0)[::-1]
    idx = thin(x, 10)
    assert len(idx) == 10 and x[idx[0]] == 0 and x[idx[-1]] == 999
    assert np.all(np.diff(x[idx]) > 0)
    assert sorted(thin(x[:5], 10)) == [0, 1, 2, 3, 4]


def _drifting(mp, x):
    """exp(x), except above 32 where it moves with the precision: never settles there."""
    return mp.exp(x) if x <= 32 else mp.exp(x) * (1 + mp.mpf(mp.prec) * mp.mpf(2) ** -60)


def test_unsettled_points_are_counted_listed_and_not_scored(tmp_path, monkeypatch):
    import jax.numpy as jnp

    import rulelab
    from rulelab.report import build_report

    rulelab.register(rulelab.make_case(
        "tdrift", "e^x", ("x",), rulelab.Interval(1.0, 64.0), _drifting, {"naive": jnp.exp},
        derivatives={("x", 1): _drifting}), replace=True)
    try:
        monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))
        plan = tiny_plan('"tdrift"', '"float16", "bfloat16"', 'transforms = ["value", "grad", "grad2"]\nmax_precision = 256')
        run = sweep.start(plan, tmp_path / "results", [], OPTIONS)
        s = store.load_table(run, "summary").set_index(["transform", "dtype"])
        w = store.load_table(run, "worst")
        for dtype in ("float16", "bfloat16"):
            points = make_sweep(rulelab.get_case("tdrift"), dtype, plan.spec(dtype, 1), plan.seed).points[0].astype(float)
            above = int((points > 32).sum())
            assert above > 0
            for transform in ("value", "grad", "grad2"):
                row = s.loc[(transform, dtype)]
                assert row["unsettled"] == above
                assert sum(row[b] for b in ("exact", "ulp_1", "ulp_2_4", "ulp_5_1024", "ulp_gt_1024", "wrong_nonfinite", "unexpected_finite", "both_undefined")) == row["n_points"] - above
            listed = w[(w["dtype"] == dtype) & (w["bucket"] == "unsettled")]
            assert (listed["in0"] > 32).all() and (listed["ref_lo"] == 256).all() and listed["ref_hi"].isna().all()
        index = build_report([run], None, tmp_path / "reports")
        page = (index.parent / "case-tdrift.html").read_text()
        assert "unsettled references" in page and "precisions tried" in page and "to 256 bits" in page
        assert "d/dx: analytic" in page and "d2/dx2: numerical (a difference of the analytic d/dx)" in page
    finally:
        rulelab.unregister("tdrift")
