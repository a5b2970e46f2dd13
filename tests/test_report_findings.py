"""Tests for the report's findings (rulelab.report.findings): thresholds, regions and
the variants named as fine, from synthetic runs whose failures are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import THRESHOLD, Spec, standard_specs, write_run

from rulelab.report.findings import Finding, findings, fmt_x, region
from rulelab.report.load import load_accuracy


def _binned(rows: list[tuple[int, float, int]]) -> pd.DataFrame:
    """(sign, binade, nonfinite) rows of one variant, 4 points each."""
    return pd.DataFrame([{"sign": s, "binade": b, "count": 4, "nonfinite": n, "max_ulp": 1.0} for s, b, n in rows])


def test_nan_gradient_finding_names_threshold_and_fine_variants(tmp_path: Path) -> None:
    acc = load_accuracy([write_run(tmp_path / "run", standard_specs())])
    found = findings(acc)
    nonfinite = [f for f in found if f.kind == "nonfinite"]
    assert len(nonfinite) == 1
    f = nonfinite[0]
    assert (f.case, f.variant, f.transform) == ("toy", "naive", "grad")
    assert f.text.startswith("toy naive: grad NaN for x \u2265 88.72 in float32 (486 of 1184 points)")
    assert "x \u2265 89 in bfloat16" in f.text
    assert f.text.endswith("fine there: custom_jvp, library")
    assert found[0] is f  # most severe first


def test_threshold_falls_back_to_the_binade_without_points(tmp_path: Path) -> None:
    spec = Spec("toy", "naive", "grad", "x", nan_from=10, first_bad=None)
    acc = load_accuracy([write_run(tmp_path / "run", [spec, Spec("toy", "stable", "grad", "x")], skip=("worst", "samples"))])
    (f,) = [f for f in findings(acc) if f.kind == "nonfinite"]
    assert "x \u2265 1024 (from binade [1024, 2048)) in float32" in f.text and "stable (\u2264 1 ULP there)" in f.text


def test_no_variant_fine_is_said(tmp_path: Path) -> None:
    specs = [Spec("toy", v, "grad", "x", nan_from=6, first_bad=THRESHOLD) for v in ("naive", "other")]
    acc = load_accuracy([write_run(tmp_path / "run", specs)])
    texts = [f.text for f in findings(acc) if f.kind == "nonfinite"]
    assert len(texts) == 2 and all(t.endswith("no other variant is fine there") for t in texts)


def test_inaccurate_error_and_unsupported_findings(tmp_path: Path) -> None:
    acc = load_accuracy([write_run(tmp_path / "run", standard_specs())])
    found = findings(acc)
    kinds = [f.kind for f in found]
    assert kinds == sorted(kinds, key=["nonfinite", "inaccurate", "error", "unsupported"].index)
    inaccurate = [f.text for f in found if f.kind == "inaccurate"]
    assert any(t.startswith("toy naive: value off by more than 1024 ULP for x \u2264 -24 in float32") and t.endswith("within 4 ULP there: library") for t in inaccurate)
    (error,) = [f.text for f in found if f.kind == "error"]
    assert error == "toy library: grad2 raised an error in float32, bfloat16: ValueError: boom"
    (unsupported,) = [f for f in found if f.kind == "unsupported"]
    assert unsupported.variant == "custom_jvp" and unsupported.transform == "jvp"


def test_clean_run_has_no_findings(tmp_path: Path) -> None:
    acc = load_accuracy([write_run(tmp_path / "run", [Spec("toy", "naive", "value"), Spec("toy", "naive", "grad", "x", ulp=3)])])
    assert findings(acc) == []


def test_region_both_signs_from_the_same_threshold() -> None:
    rows = [(s, float(b), 4 if b >= 3 else 0) for s in (1, -1) for b in range(-2, 8)]
    b = _binned(rows)
    reg = region(b, b["nonfinite"] > 0, np.array([]), "x")
    assert reg is not None and reg.phrase == "|x| \u2265 8 (from binade [8, 16))"


def test_region_zero_only_and_an_interior_range() -> None:
    rows = [(1, -math.inf, 4)] + [(1, float(b), 0) for b in range(-3, 5)]
    b = _binned(rows)
    reg = region(b, b["nonfinite"] > 0, np.array([]), "a")
    assert reg is not None and reg.phrase == "a = 0"
    rows = [(1, float(b), 4 if 2 <= b <= 3 else 0) for b in range(-3, 8)]
    b = _binned(rows)
    reg = region(b, b["nonfinite"] > 0, np.array([5.0, 6.5, 12.0]), "y")
    assert reg is not None and reg.phrase == "y in [5, 16)"
    assert reg.binades == frozenset({(1, 2.0), (1, 3.0)})


def test_region_reaching_float64s_top_binade_ends_at_inf() -> None:
    # a float64 control fails in every binade from 2^1000 up, but not at inf: its range
    # ends where float64's top binade [2^1023, 2^1024) does
    rows = [(1, float(b), 4 if b >= 1000 else 0) for b in range(990, 1024)] + [(1, math.inf, 0)]
    b = _binned(rows)
    reg = region(b, b["nonfinite"] > 0, np.array([]), "x")
    assert reg is not None and reg.phrase == "x in [2^1000, inf)"
    rows = [(1, float(b), 4 if b == 1023 else 0) for b in range(1020, 1024)]
    b = _binned(rows)
    assert region(b, b["nonfinite"] > 0, np.array([]), "x").phrase == "x ≥ 2^1023 (from binade [2^1023, inf))"


def test_region_negative_tail_uses_the_smallest_failing_magnitude() -> None:
    rows = [(-1, float(b), 4 if b >= 4 else 0) for b in range(0, 9)] + [(1, float(b), 0) for b in range(0, 9)]
    b = _binned(rows)
    reg = region(b, b["nonfinite"] > 0, np.array([-17.5, -16.75, -300.0, 20.0]), "x")
    assert reg is not None and reg.phrase == "x \u2264 -16.75"
    assert region(b, b["nonfinite"] < 0, np.array([]), "x") is None


def test_fmt_x() -> None:
    assert [fmt_x(v) for v in (88.72283935546875, 2.0**-126, 0.0, 1024.0)] == ["88.72", "2^-126", "0", "1024"]


def test_the_overview_groups_findings_per_case() -> None:
    from rulelab.report.pages import _findings_by_case

    found = [Finding("nonfinite", "a", f"v{i}", "grad", f"a {i}") for i in range(5)] + [Finding("error", "b", "v", "grad", "b 0")]
    text = _findings_by_case(found, per_case=2)
    assert text.count("<b>") == 2 and text.index(">a<") < text.index(">b<")
    assert text.count('<span class="badge') == 3 and "</a> 1</li>" in text and "</a> 2</li>" not in text and "3 more on" in text
