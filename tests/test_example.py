"""The README's own-rule example, swept end to end through `rulelab sweep --module`."""

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # each test sweeps the example end to end in a subprocess

ROOT = Path(__file__).resolve().parents[1]

PLAN = """
cases = ["logcosh"]
variants = "all"
transforms = ["value", "grad"]
dtypes = ["float32"]
seed = 0
[sweep]
per_binade = 1
specials = true
"""


def test_example_module_sweeps_and_shows_the_fix(tmp_path):
    plan = tmp_path / "tiny.toml"
    plan.write_text(PLAN)
    res = subprocess.run(
        [sys.executable, "-m", "rulelab", "sweep", str(plan), "--module", str(ROOT / "examples" / "logcosh.py"),
         "--results", str(tmp_path / "results"), "--no-progress", "--workers", "1"],
        capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    [run] = [p for p in (tmp_path / "results" / "accuracy").iterdir() if p.is_dir()]
    s = pd.read_parquet(run / "summary.parquet").set_index(["variant", "transform"])
    # cosh overflows past x = acosh(FLT_MAX) ~ 89.4: naive value inf (reference finite) and grad NaN
    assert math.acosh(3.4028235e38) < 89.5
    assert s.loc[("naive", "value"), "wrong_nonfinite"] > 0
    assert s.loc[("naive", "grad"), "wrong_nonfinite"] > 0
    assert s.loc[("custom_jvp", "grad"), "wrong_nonfinite"] == 0
    assert s.loc[("custom_jvp", "grad"), "max_ulp"] <= 4


def test_study_runs_sweep_timings_and_report(tmp_path):
    plan = tmp_path / "tiny.toml"
    plan.write_text(PLAN)
    res = subprocess.run(
        [sys.executable, "-m", "rulelab", "study", "--plan", str(plan), "--module", str(ROOT / "examples" / "logcosh.py"),
         "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--no-progress", "--workers", "1"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    index = tmp_path / "reports" / "index.html"
    assert f"report: {index}" in res.stdout
    assert "logcosh" in index.read_text()
    [run] = [p for p in (tmp_path / "results" / "accuracy").iterdir() if p.is_dir()]
    t = pd.read_parquet(run / "timings.parquet").set_index(["variant", "transform"])
    assert set(t.index) == {("naive", "value"), ("naive", "grad"), ("custom_jvp", "value"), ("custom_jvp", "grad")}
    assert (t["status"] == "ok").all() and (t["time_s"] > 0).all()
    assert (t.loc[("naive", "grad"), "ratio_to_naive"]) == 1.0
    performance = (tmp_path / "reports" / "performance.html").read_text()
    assert "Quick timings" in performance and "Taken between" in performance
