"""Reading accuracy runs and asv results (rulelab.report.load), on the synthetic runs
and asv results that :mod:`helpers` builds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import THRESHOLD, Spec, standard_specs, write_asv, write_run
from helpers import spec_tables as _tables

from rulelab.report.load import latest_runs, load_accuracy, load_asv, load_run

# --- tests of rulelab.report.load ----------------------------------------------------------------


def test_load_run_reads_tables_and_meta(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r1", standard_specs())
    info, tables = load_run(run)
    assert info.run_id == "r1" and info.status == "complete" and not info.missing and not info.problems
    s = tables["summary"]
    assert set(s["status"]) == {"ok", "unsupported", "error"}
    assert (s.loc[s["transform"] == "value", "arg"] == "").all()
    assert tables["binned"]["binade"].dtype == np.float64


def test_load_run_names_missing_tables(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r1", standard_specs(), skip=("samples", "worst"))
    info, tables = load_run(run)
    assert set(info.missing) == {"samples.parquet", "worst.parquet"}
    assert tables["samples"].empty and list(tables["samples"].columns)[:6] == ["case", "variant", "transform", "arg", "dtype", "backend"]


def test_load_run_survives_a_corrupt_table(tmp_path: Path) -> None:
    run = write_run(tmp_path / "r1", standard_specs())
    (run / "binned.parquet").write_bytes(b"not parquet")
    info, tables = load_run(run)
    assert any("binned.parquet" in p for p in info.problems)
    assert tables["binned"].empty and not tables["summary"].empty


def test_running_run_reads_finished_parts(tmp_path: Path) -> None:
    store = pytest.importorskip("rulelab.store")
    run = tmp_path / "running"
    run.mkdir()
    (run / "parts").mkdir()
    spec = Spec("toy", "naive", "grad", "x", nan_from=6, first_bad=THRESHOLD)
    tables = {name: pd.DataFrame(rows).to_dict("list") for name, rows in _tables(spec).items()}
    store.write_part(run, ("toy", "naive", "float32"), tables, {"wall_s": 1.0})
    (run / "meta.json").write_text(json.dumps({"run_id": "running", "status": "running", "schema_version": 1}))
    acc = load_accuracy([run])
    assert acc.runs[0].status == "running"
    assert list(acc.summary["variant"]) == ["naive"]
    assert "summary.parquet" not in acc.runs[0].missing


def test_combining_runs_keeps_the_later_run_per_key(tmp_path: Path) -> None:
    old = write_run(tmp_path / "old", [Spec("toy", "naive", "value", ulp=9)], started="2026-01-01T00:00:00+00:00")
    new = write_run(tmp_path / "new", [Spec("toy", "naive", "value", ulp=2), Spec("toy", "library", "value", ulp=0)], started="2026-02-01T00:00:00+00:00")
    acc = load_accuracy([new, old])
    assert len(acc.summary) == 2
    assert float(acc.summary.loc[acc.summary["variant"] == "naive", "max_ulp"].iloc[0]) == 2


def test_latest_runs_picks_newest_per_backend(tmp_path: Path) -> None:
    base = tmp_path / "accuracy"
    write_run(base / "a", [Spec("toy", "naive", "value")], started="2026-01-01")
    write_run(base / "b", [Spec("toy", "naive", "value")], started="2026-01-02")
    write_run(base / "c", [Spec("toy", "naive", "value", backend="gpu")], started="2026-01-01", backend="gpu")
    assert sorted(p.name for p in latest_runs(base)) == ["b", "c"]


def test_latest_runs_passes_over_damaged_newer_runs_and_names_them(tmp_path: Path) -> None:
    base = tmp_path / "accuracy"
    write_run(base / "a", [Spec("toy", "naive", "value")], started="2026-01-01")
    write_run(base / "b", [Spec("toy", "naive", "value")], started="2026-01-02", skip=("worst",))
    write_run(base / "c", [Spec("toy", "naive", "value")], started="2026-01-03", status="stopped")
    (base / "d").mkdir()
    (base / "d" / "meta.json").write_text("{not json")
    told: list[str] = []
    assert [p.name for p in latest_runs(base, warn=told.append)] == ["a"]
    assert len(told) == 3 and any(m.startswith("run d ") and "meta.json unreadable" in m for m in told)
    assert any(m.startswith("run b ") and "worst.parquet is missing" in m and "uses a" in m for m in told)
    assert any(m.startswith("run c ") and "status stopped" in m for m in told)


def test_load_asv_long_form(tmp_path: Path) -> None:
    asv_dir = write_asv(tmp_path)
    bench = load_asv(asv_dir)
    r = bench.results
    assert not bench.problems and not bench.empty
    t = r[r["benchmark"] == "bench_time.toy.time_call"]
    assert len(t) == 3 * 2 * 1 * 2 * 2
    assert set(t["status"]) == {"ok", "skipped", "failed"}
    failed = t[t["status"] == "failed"]
    assert set(failed["variant"]) == {"library"} and set(failed["size"]) == {16} and set(failed["backend"]) == {"cpu"}
    assert set(r.loc[r["group"] == "newton_memory", "case"]) == {"newton"}
    assert {"variant", "transform", "dtype", "size", "backend", "steps"} <= set(bench.param_names)
    assert t["size"].map(type).eq(int).all()


def test_load_asv_absent_or_foreign(tmp_path: Path) -> None:
    assert load_asv(None).empty and load_asv(tmp_path / "nowhere").empty
    d = tmp_path / "asv" / "m"
    d.mkdir(parents=True)
    (d / "abc-env.json").write_text(json.dumps({"version": 1, "results": {}}))
    bench = load_asv(tmp_path / "asv")
    assert bench.empty and any("version" in p for p in bench.problems)
