"""Tests for the report's accuracy tables (rulelab.report.tables, classes, html)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from helpers import Spec, standard_specs, write_run

from rulelab.report import html
from rulelab.report.load import load_accuracy
from rulelab.report.styles import row_class
from rulelab.report.tables import (
    compare_matrix,
    facts_table,
    fmt_ulp,
    matrix,
    summary_groups,
    summary_table,
    support_matrix,
    worst_table,
)


@pytest.fixture
def acc(tmp_path: Path):
    return load_accuracy([write_run(tmp_path / "run", standard_specs())])


def test_row_class_by_status_and_worst_bucket() -> None:
    assert row_class({"status": "error", "wrong_nonfinite": 3}) == "error"
    assert row_class({"status": "unsupported"}) == "unsupported"
    assert row_class({"status": "ok", "exact": 5, "ulp_2_4": 1}) == "ulp_2_4"
    assert row_class({"status": "ok", "exact": 5, "ulp_gt_1024": 1, "wrong_nonfinite": 1}) == "wrong_nonfinite"
    assert row_class({"status": "ok", "exact": 5, "ulp_1": float("nan")}) == "exact"


def test_fmt_ulp() -> None:
    assert [fmt_ulp(v) for v in (0.0, 3.0, 9999.0, 2e6, float("nan"), float("inf"))] == ["0", "3", "9999", "2.0e6", "-", "inf"]


def test_matrix_classes_each_cell_by_its_worst_bucket(acc) -> None:
    grad = matrix(acc.summary, "grad", "float32", "cpu", href=lambda c, a: f"{c}.html#{a}")
    assert list(grad.columns) == ["naive", "custom_jvp", "library"]
    assert list(grad.index) == ["toy", "pair d/dx", "pair d/dy"]
    nan_cell = grad.loc["toy", "naive"]
    assert nan_cell.cls == "wrong_nonfinite"
    assert nan_cell.text == "2 · 486 non-finite"
    assert nan_cell.href == "toy.html#x"
    assert grad.loc["toy", "custom_jvp"].cls == "ulp_1"
    assert grad.loc["toy", "library"].cls == "ulp_2_4"
    assert grad.loc["pair d/dy", "naive"].cls == "ulp_5_1024"
    assert grad.loc["pair d/dx", "library"].cls == "missing"
    jvp = matrix(acc.summary, "jvp", "float32", "cpu")
    assert jvp.loc["toy", "custom_jvp"].cls == "unsupported"
    assert "forward-mode" in jvp.loc["toy", "custom_jvp"].title
    assert matrix(acc.summary, "grad2", "bfloat16", "cpu").loc["toy", "library"].cls == "error"
    value = matrix(acc.summary, "value", "float32", "cpu")
    assert list(value.index) == ["toy", "pair"]
    assert value.loc["toy", "naive"].cls == "ulp_gt_1024" and value.loc["toy", "library"].cls == "exact"


def test_support_matrix(acc) -> None:
    s = acc.summary[acc.summary["case"] == "toy"]
    m = support_matrix(s)
    assert list(m.columns) == ["value", "grad d/dx", "jvp d/dx", "grad2 d/dx"]
    assert m.loc["custom_jvp", "jvp d/dx"].text == "unsupported"
    assert m.loc["library", "grad2 d/dx"].cls == "error"
    assert m.loc["naive", "grad d/dx"].text == "ok"
    assert m.loc["naive", "grad2 d/dx"].cls == "missing"


def test_support_matrix_names_dtypes_that_disagree(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r", [Spec("toy", "naive", "grad", "x", dtype="float32"), Spec("toy", "naive", "grad", "x", dtype="bfloat16", status="error", message="bad")])
    m = support_matrix(load_accuracy([run]).summary)
    assert m.loc["naive", "grad d/dx"].text == "ok (float32); error (bfloat16)"
    assert m.loc["naive", "grad d/dx"].cls == "error"


def test_summary_groups_carry_conventions_per_argument(acc) -> None:
    s = acc.summary[acc.summary["case"] == "pair"]
    groups = summary_groups(s)
    assert [(t, a) for t, a, _ in groups] == [("value", ""), ("grad", "x"), ("grad", "y")]
    assert groups[1][2] == "" and "d/dy = 0 at (0, 0)" in groups[2][2]


def test_summary_table_colours_max_ulp_and_nonzero_buckets(acc) -> None:
    s = acc.summary[acc.summary["case"] == "toy"]
    t = summary_table(s, "grad", "x")
    assert t.index.names == ["dtype", "variant"]
    row = t.loc[("float32", "naive")]
    assert row["max ULP"].cls == "wrong_nonfinite" and row["max ULP"].text == "2"
    assert row["wrong non-finite"].text == "486" and row["wrong non-finite"].cls == "wrong_nonfinite"
    assert row["exact"].cls == ""
    assert [d for d, _ in t.index] == ["float32"] * 3 + ["bfloat16"] * 3
    unsupported = summary_table(s, "jvp", "x").loc[("float32", "custom_jvp")]
    assert unsupported["status"].cls == "unsupported" and "forward-mode" in unsupported["notes"].text


def test_worst_table_names_arguments(acc) -> None:
    w = acc.worst[(acc.worst["case"] == "toy") & (acc.worst["transform"] == "grad") & (acc.worst["dtype"] == "float32")]
    t = worst_table(w, k=2)
    assert list(t.index.get_level_values(0)) == ["naive", "naive", "custom_jvp", "library"]
    first = t.iloc[0]
    assert first["input"].text.startswith("x = ") and first["bucket"].cls == "wrong_nonfinite" and first["computed"].text == "nan"


def test_facts_table_shows_backend_and_ftz(acc) -> None:
    f = facts_table(acc.runs)
    assert f.loc["backend", "run"].text == "cpu"
    assert f.loc["flushes subnormals", "run"].text == "float32: yes, bfloat16: yes"
    assert "jax 0.10.2" in f.loc["versions", "run"].text


def test_compare_matrix_marks_exactly_the_changed_pairs(tmp_path: Path) -> None:
    base = standard_specs()
    changed = []
    for s in base:
        if (s.case, s.variant, s.transform, s.dtype) == ("toy", "naive", "grad", "float32"):
            s = replace(s, nan_from=None, ulp=1)  # fixed: class and text change
        elif (s.case, s.variant, s.transform, s.dtype) == ("toy", "library", "grad", "float32"):
            s = replace(s, ulp=4)  # same class (2-4 ULP), larger max dULP
        changed.append(s)
    changed = [s for s in changed if not (s.case == "pair" and s.arg == "y" and s.dtype == "float32")]  # missing in B
    a = load_accuracy([write_run(tmp_path / "a", base)]).summary
    b = load_accuracy([write_run(tmp_path / "b", changed)]).summary
    t, n = compare_matrix(a, b, "grad", "float32", "cpu")
    assert n == 3
    marked = {(row, col) for row in t.index for col in t.columns if "changed" in t.loc[row, col].cls.split()}
    assert marked == {
        ("toy", ("naive", "A")), ("toy", ("naive", "B")),
        ("toy", ("library", "A")), ("toy", ("library", "B")),
        ("pair d/dy", ("naive", "A")), ("pair d/dy", ("naive", "B")),
    }
    assert t.loc["pair d/dy", ("naive", "B")].cls.startswith("missing")
    _, same = compare_matrix(a, b, "grad", "bfloat16", "cpu")
    assert same == 0


def test_html_table_renders_cells_and_two_level_headers() -> None:
    df = pd.DataFrame([[html.Cell("<b>", "exact", "tip", "x.html"), 2.5]], index=pd.Index(["r"], name="case"), columns=pd.MultiIndex.from_tuples([("v", "A"), ("v", "B")]))
    out = html.table(df, cls="matrix")
    assert '<td class="exact" title="tip"><a href="x.html">&lt;b&gt;</a></td>' in out
    assert '<th colspan="2">v</th>' in out and "<td>2.5</td>" in out and '<th rowspan="2">case</th>' in out


def test_the_terminal_table_takes_the_worst_argument_and_sums_the_non_finite_counts():
    from rulelab.report.terminal import table

    nan = float("nan")

    def row(transform, arg, status="ok", max_ulp=nan, wrong_nan=0.0, dtype="float32"):
        return {"case": "c", "variant": "v", "dtype": dtype, "transform": transform, "arg": arg, "status": status,
                "max_ulp": max_ulp, "wrong_nan": wrong_nan, "wrong_inf": 0.0, "unexpected_finite": 0.0, "unsettled": 0.0}

    summary = pd.DataFrame([
        row("value", "", "error"),
        row("grad", "x", max_ulp=3.0, wrong_nan=2.0), row("grad", "y", max_ulp=7.0, wrong_nan=1.0),
        row("jvp", "x", "unsupported"),
        row("grad2", "x"), row("grad2", "y", "unsupported"),
        row("value", "", max_ulp=123456.0, dtype="bfloat16"),
    ])
    lines = table(summary, ("value", "grad", "jvp", "grad2")).splitlines()
    assert lines[0].split() == ["case", "variant", "dtype", "value", "grad", "jvp", "grad2"]
    assert lines[2].split() == ["c", "v", "float32", "ERR", "7", "NaN×3", "unsup", "-", "(unsup)"]
    assert lines[3].split() == ["bfloat16", "1.2e5"]  # case and variant written once per block; no other transform ran
