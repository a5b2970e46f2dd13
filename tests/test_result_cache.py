"""The cache of measured results: served where nothing changed, checked bit for bit,
discarded on a difference, off on request; and the checksummed entries it is kept in."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import tables

from rulelab import store
from rulelab.core.shelf import CacheFileWarning, Shelf
from rulelab.model.plan import parse_plan
from rulelab.report.terminal import run_digest
from rulelab.runs import result_cache, sampled
from rulelab.runs.executors import Options
from rulelab.store.vocabulary import CACHE_RECORDS

PLAN = parse_plan('cases = ["softplus"]\nvariants = ["custom_jvp", "stable"]\ntransforms = ["value", "grad"]\n'
                  'dtypes = ["float32", "bfloat16"]\n[sweep]\nper_binade = 1\n', "p.toml", name="p")
"""Two groups (float32, bfloat16); custom_jvp's gradient fails for large negative x, so
the run has blame rows too."""
OPTIONS = Options(workers=1, progress=False, compile_cache=False)


@pytest.fixture
def cache_on(monkeypatch, tmp_path):
    monkeypatch.delenv(result_cache.NO_CACHE_ENV, raising=False)
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


GROUPS, BLAME = CACHE_RECORDS


def last_session(run):
    return [s for s in store.read_meta(run).sessions if GROUPS in s][-1]


def group_shelves(cache):
    return [Shelf(p) for p in sorted((cache / "results").glob("*/groups"))]


def test_a_second_run_is_served_from_the_cache_with_one_group_checked_and_the_same_tables(cache_on, tmp_path):
    first = sampled.start(PLAN, tmp_path / "r", [], OPTIONS)
    assert last_session(first)[GROUPS] == {"items": 2, "served": 0, "checked": 0, "mismatch": None}
    assert not store.load_blame(first).empty
    second = sampled.start(PLAN, tmp_path / "r", [], OPTIONS)
    record = last_session(second)
    assert record[GROUPS]["served"] + record[GROUPS]["checked"] == 2
    assert record[GROUPS]["checked"] >= 1 and record[GROUPS]["mismatch"] is None
    assert record[BLAME]["served"] + record[BLAME]["checked"] == record[BLAME]["items"] > 0
    a, b = tables(first), tables(second)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    pd.testing.assert_frame_equal(store.load_blame(first), store.load_blame(second))
    said = run_digest(second)
    assert f"cache: {record[GROUPS]['served']} of 2 groups served, {record[GROUPS]['checked']} re-evaluated and identical" in said


def test_a_cached_table_that_differs_from_its_re_evaluation_is_caught_and_recomputed(cache_on, tmp_path, capsys):
    first = sampled.start(PLAN, tmp_path / "r", [], OPTIONS)
    (shelf,) = group_shelves(cache_on)
    keys = sorted({p.stem.rpartition("-")[0] for p in shelf.folder.glob("*.pkl")})
    assert len(keys) == 2
    for key in keys:  # a wrong number in each cached group: whichever is checked is caught
        measured = shelf.load(key)
        summary = measured[0][1]["summary"]
        summary["max_ulp"] = [v + 1 for v in summary["max_ulp"]]
        shelf.save(key, measured)
    second = sampled.start(PLAN, tmp_path / "r", [], OPTIONS)
    said = capsys.readouterr().err
    assert "result cache: the cached groups entry of softplus" in said and "summary column 'max_ulp'" in said
    assert "discarded and recomputed" in said
    assert last_session(second)[GROUPS]["mismatch"]
    a, b = tables(first), tables(second)
    for name in a:  # nothing of the wrong entries reached the run
        pd.testing.assert_frame_equal(a[name], b[name])
    truth = a["summary"].set_index(["case", "variant", "transform", "arg", "dtype"])["max_ulp"]
    for key in keys:  # the cache holds the recomputed results again, not the wrong ones
        for task, rows, _ in shelf.load(key):
            assert rows["summary"]["max_ulp"] == [truth.loc[tuple(task)]]


def test_no_cache_measures_everything_and_keeps_nothing(cache_on, tmp_path, monkeypatch):
    sampled.start(PLAN, tmp_path / "r", [], Options(workers=1, progress=False, compile_cache=False, result_cache=False))
    assert not (cache_on / "results").exists()
    monkeypatch.setenv(result_cache.NO_CACHE_ENV, "1")
    assert not result_cache.enabled(True)
    monkeypatch.setenv(result_cache.NO_CACHE_ENV, "0")
    assert result_cache.enabled(True) and not result_cache.enabled(False)


def test_a_changed_variant_misses_and_an_unchanged_one_is_served(cache_on, tmp_path, registered):
    import rulelab

    def register(k):  # the reference is always 2x; the variant reads k
        registered(rulelab.make_case("tcached", "2 * x", ("x",), rulelab.Interval(-10.0, 10.0), lambda mp, x: 2 * x,
                                     {"naive": lambda x: x * k}, source="test"))

    def run():
        plan = parse_plan('cases = ["tcached"]\ntransforms = ["value"]\ndtypes = ["float32", "bfloat16"]\n[sweep]\nper_binade = 1\n',
                          "p.toml", name="p")
        out = sampled.start(plan, tmp_path / "r", [], OPTIONS)
        return last_session(out)[GROUPS], store.load_table(out, "summary")

    register(2.0)
    assert run()[0]["served"] == 0
    register(2.0)  # another function object, the same code and constants
    stats, summary = run()
    assert stats["served"] + stats["checked"] == 2 and (summary["max_ulp"] == 0).all()
    register(3.0)  # a constant the variant reads: another fingerprint
    stats, summary = run()
    assert stats == {"items": 2, "served": 0, "checked": 0, "mismatch": None}
    assert (summary["max_ulp"] > 0).all()  # measured as 3x, not served from the 2x run


def test_checks_take_at_least_one_hit_and_about_one_in_sixteen():
    assert result_cache.choose_checks([]) == set()
    assert len(result_cache.choose_checks([7], random.Random(1))) == 1
    rng = random.Random(0)
    n = sum(len(result_cache.choose_checks(range(1600), rng)) for _ in range(10))
    assert 800 < n < 1200  # 10 x 1600 / 16 = 1000 expected


def test_table_difference_is_bit_for_bit_and_ignores_timings():
    a = {"summary": {"max_ulp": np.array([1.0, np.nan]), "status": ["ok", "ok"], "compile_s": [0.1, 0.2]}}
    same = {"summary": {"max_ulp": np.array([1.0, np.nan]), "status": ["ok", "ok"], "compile_s": [9.0, 9.0]}}
    assert result_cache.table_difference(a, same) is None
    signed = {"summary": {"max_ulp": np.array([1.0, np.nan]), "status": ["ok", "ok"]}}
    signed["summary"]["max_ulp"][0] = np.nextafter(1.0, 2.0)
    assert result_cache.table_difference(a, signed) == "summary column 'max_ulp'"
    zero = {"t": {"x": np.array([0.0])}}
    assert result_cache.table_difference(zero, {"t": {"x": np.array([-0.0])}}) == "t column 'x'"  # -0.0 is other bits
    assert result_cache.table_difference(a, {"summary": {"status": ["ok", "error"], "max_ulp": a["summary"]["max_ulp"]}}) == "summary column 'status'"


def test_a_corrupt_entry_is_moved_aside_and_not_served(tmp_path):
    shelf = Shelf(tmp_path / "s")
    path = shelf.save("k", {"x": 1})
    assert shelf.load("k") == {"x": 1}
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert shelf.load("k") is None
    assert any(issubclass(w.category, CacheFileWarning) and "corrupt" in str(w.message) for w in caught)
    assert path.with_suffix(".corrupt").exists() and "k" not in shelf


def test_timings_are_kept_until_the_variant_changes_or_retime(cache_on, registered):
    import rulelab
    from rulelab.runs.study import timing_rows
    from rulelab.store.vocabulary import MEASURED_AT

    def register(k):
        return registered(rulelab.make_case("ttimed", "2 * x", ("x",), rulelab.Interval(-10.0, 10.0), lambda mp, x: 2 * x,
                                            {"naive": lambda x: x * k}, source="test"))

    first = timing_rows([register(2.0)])
    assert (first["status"] == "ok").all() and len(first) == 2
    kept = timing_rows([register(2.0)])
    pd.testing.assert_frame_equal(first, kept)  # the same rows, times and dates: nothing re-measured
    # a new measurement: another compile time to the nanosecond (the date has whole seconds only)
    retimed = timing_rows([register(2.0)], retime=True)
    assert (retimed["compile_ms"] != first["compile_ms"]).all() and (retimed[MEASURED_AT] >= first[MEASURED_AT]).all()
    changed = timing_rows([register(3.0)])
    assert (changed["compile_ms"] != retimed["compile_ms"]).all()
    assert (timing_rows([register(3.0)])["compile_ms"] == changed["compile_ms"]).all()
    assert (timing_rows([register(3.0)], cache=False)["compile_ms"] != changed["compile_ms"]).all()
