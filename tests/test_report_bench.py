"""Tests for the benchmark tables of the performance page (rulelab.report.asv_results) on
synthetic asv results."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_asv

from rulelab.report.asv_results import (
    chart_selection,
    commits,
    fmt_unit,
    newest,
    ratio_overview,
    step_param,
    time_table,
    track_table,
)
from rulelab.report.load import load_asv

OLD, NEW = ("a" * 40, 1_700_000_000_000), ("b" * 40, 1_700_100_000_000)


@pytest.fixture
def bench(tmp_path: Path):
    # the newer commit is written first and is 3x slower: only dates decide "newest"
    return load_asv(write_asv(tmp_path, commits=(OLD, NEW), slow=3.0))


def test_newest_commit_per_machine(bench) -> None:
    assert commits(bench.results, "box") == [OLD[0], NEW[0]]
    rows = newest(bench.results)
    assert set(rows["commit"]) == {NEW[0]}


def test_time_table_ratios_to_naive(bench) -> None:
    rows = newest(bench.results)
    t = rows[rows["benchmark"] == "bench_time.toy.time_call"]
    table, constant = time_table(t, ["variant", "transform", "dtype", "size", "backend"])
    assert constant == {"dtype": "float32", "backend": "cpu"}  # gpu was skipped everywhere
    assert table.index.names == ["transform", "size"]
    assert list(table.index) == [("value", 16), ("value", 65536), ("grad", 16), ("grad", 65536)]
    assert list(table.columns) == ["naive", "custom_jvp", "library"]
    assert table.loc[("value", 16), "naive"].text == "3 \u00b5s"
    assert table.loc[("value", 16), "custom_jvp"].text == "6 \u00b5s (2.00\u00d7)"
    failed = table.loc[("grad", 16), "library"]
    assert failed.text == "failed" and failed.cls == "error"


def test_track_table_has_a_column_per_metric(bench) -> None:
    rows = newest(bench.results)
    t = rows[rows["group"] == "toy"]
    t = t[t["type"] == "track"]
    table, constant = track_table(t, ["variant", "transform", "dtype", "backend"])
    assert constant == {"backend": "cpu"}
    assert list(table.columns) == ["compile_ms", "hlo_ops (instructions)", "temp_bytes"]  # units shown where the name lacks them
    assert table.loc[("grad", "float32", "custom_jvp"), "temp_bytes"].text == "16 KiB"
    assert table.index.get_level_values("variant")[0] == "naive"


def test_chart_selection_fixes_other_parameters(bench) -> None:
    rows = newest(bench.results)
    t = rows[rows["benchmark"] == "bench_time.toy.time_call"]
    sel, fixed = chart_selection(t, ["variant", "transform", "dtype", "size", "backend"], ["variant", "transform"])
    assert fixed == {"dtype": "float32", "size": 65536, "backend": "cpu"}
    assert len(sel) == 6  # 3 variants x 2 transforms; the failure was at size 16
    assert set(sel["size"]) == {65536} and set(sel["status"]) == {"ok"}


def test_ratio_overview(bench) -> None:
    table, fixed = ratio_overview(newest(bench.results), list(bench.param_names))
    assert list(table.index) == [("toy", "value"), ("toy", "grad")]
    assert table.loc[("toy", "grad"), "library"].text == "3.00\u00d7" and table.loc[("toy", "grad"), "library"].cls == "slower"
    assert fixed["size"] == 65536


def test_step_param_and_units() -> None:
    assert step_param(["variant", "steps", "backend"]) == "steps"
    assert step_param(["variant", "max_iter"]) == "max_iter"
    assert step_param(["variant", "size"]) is None
    assert [fmt_unit(v, u) for v, u in ((2.5e-9, "seconds"), (3e-3, "seconds"), (2.0, "seconds"), (1536, "bytes"), (3 * 2**20, "bytes"), (12.0, "ms"), (7.0, "instructions"))] == [
        "2.5 ns", "3 ms", "2 s", "1.5 KiB", "3 MiB", "12 ms", "7",
    ]
