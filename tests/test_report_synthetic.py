"""Synthetic accuracy runs and asv results for the report tests, and the tests of
reading them (rulelab.report.load).

The synthetic store follows the store's schema (meta.json, summary / binned / worst /
samples parquet) with hand-chosen failures, so tests can assert the exact classes,
thresholds and messages the report derives from them. Other report test modules
import the builders from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rulelab import store
from rulelab.store.vocabulary import Bucket

BUCKETS = [b.column for b in Bucket]
from rulelab.report.load import latest_runs, load_accuracy, load_asv, load_run

THRESHOLD = 88.72283935546875
"""First float32 input where the synthetic naive gradient is NaN (binade 6: [64, 128))."""


@dataclass(frozen=True)
class Spec:
    """One synthetic result. ``ulp``: dULP of every comparable point; ``nan_from``: the
    binade (positive inputs) from which results are NaN, first failing input
    ``first_bad``; ``big_below``: negative binade from which |x| up dULP is 2e6."""

    case: str
    variant: str
    transform: str
    arg: str = ""
    dtype: str = "float32"
    backend: str = "cpu"
    status: str = "ok"
    message: str = ""
    ulp: float = 1.0
    nan_from: float | None = None
    first_bad: float | None = None
    big_from: float | None = None
    conventions: str = ""
    args: tuple[str, ...] = ("x",)


LO, HI, PER_BIN = -20, 127, 4


def _tables(spec: Spec) -> dict[str, list[dict[str, Any]]]:
    key = {k: getattr(spec, k) for k in ("case", "variant", "transform", "arg", "dtype", "backend")}
    out: dict[str, list[dict[str, Any]]] = {"summary": [], "binned": [], "worst": [], "samples": []}
    row: dict[str, Any] = {**key, "status": spec.status, "message": spec.message, "notes": "", "conventions": spec.conventions, "compile_s": 0.01, "run_s": 0.001}
    if spec.status != "ok":
        row.update({"n_points": 0, "max_ulp": math.nan, "median_ulp": math.nan, "max_frac_ulp": math.nan, **{b: 0 for b in BUCKETS}})
        out["summary"].append(row)
        return out
    counts = {b: 0 for b in BUCKETS}
    bucket_of = "exact" if spec.ulp == 0 else "ulp_1" if spec.ulp == 1 else "ulp_2_4" if spec.ulp <= 4 else "ulp_5_1024" if spec.ulp <= 1024 else "ulp_gt_1024"
    max_ulp = 0.0
    binade_of = spec.arg or spec.args[0]
    for sign in (-1, 1):
        for b in range(LO, HI + 1):
            nonfinite = PER_BIN if spec.nan_from is not None and sign > 0 and b > spec.nan_from else 0
            if spec.nan_from is not None and sign > 0 and b == spec.nan_from:
                nonfinite = PER_BIN // 2  # the threshold lies inside this binade
            big = spec.big_from is not None and sign < 0 and b >= spec.big_from
            ulp = 2e6 if big else spec.ulp
            comparable = PER_BIN - nonfinite
            counts["wrong_nonfinite"] += nonfinite
            counts["ulp_gt_1024" if big else bucket_of] += comparable
            if comparable:
                max_ulp = max(max_ulp, ulp)
            out["binned"].append({**key, "binade_of": binade_of, "sign": sign, "binade": float(b), "count": PER_BIN, "max_ulp": ulp if comparable else math.nan, "median_ulp": ulp if comparable else math.nan, "nonfinite": nonfinite})
            x = sign * 1.5 * 2.0**b
            bad = nonfinite == PER_BIN
            out["samples"].append({**key, "in0": x, "in1": math.nan, "in2": math.nan, "computed": math.nan if bad else float(b), "ref_hi": float(b), "dulp": math.inf if bad else ulp})
    n = sum(counts.values())
    row.update({"n_points": n, "max_ulp": max_ulp, "median_ulp": spec.ulp, "max_frac_ulp": spec.ulp + 0.5, **counts, "wrong_nan": counts["wrong_nonfinite"], "wrong_inf": 0})
    out["summary"].append(row)
    worst_inputs: list[tuple[float, float, float, str]] = []
    if spec.nan_from is not None:
        first = spec.first_bad if spec.first_bad is not None else 2.0**spec.nan_from
        worst_inputs += [(x, math.nan, math.inf, "wrong_nonfinite") for x in (first * 4, first, first * 1.01)]
    if spec.big_from is not None:
        worst_inputs.append((-(2.0 ** (spec.big_from + 1)), 1.0, 2e6, "ulp_gt_1024"))
    worst_inputs.append((1.5, 0.75, spec.ulp, bucket_of))
    for rank, (x, computed, dulp, bucket) in enumerate(worst_inputs):
        out["worst"].append({**key, "rank": rank, "in0": x, "in1": math.nan, "in2": math.nan, "args": ",".join(spec.args), "computed": computed, "ref_hi": 0.75, "ref_lo": 0.0, "dulp": dulp, "frac_ulp": 0.5, "bucket": bucket})
    return out


def write_run(path: Path, specs: Sequence[Spec], *, status: str = "complete", run_id: str | None = None, started: str = "2026-01-01T00:00:00+00:00", skip: Sequence[str] = (), backend: str = "cpu") -> Path:
    """Write a synthetic run folder from ``specs``; ``skip`` names tables not written."""
    path.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {"summary": [], "binned": [], "worst": [], "samples": []}
    for s in specs:
        for name, rows in _tables(s).items():
            tables[name] += rows
    for name, rows in tables.items():
        if name not in skip:
            pd.DataFrame(rows).to_parquet(path / f"{name}.parquet", index=False)
    meta = {
        "run_id": run_id or path.name,
        "schema_version": store.SCHEMA_VERSION,
        "plan": {"name": "synthetic"},
        "versions": {"jax": "0.10.2", "jaxlib": "0.10.2", "numpy": np.__version__, "mpmath": "1.4.1", "rulelab": "0.1.0"},
        "backend": {"backend": backend, "device_kind": "cpu", "jax": "0.10.2", "jaxlib": "0.10.2", "x64": False, "flushes_subnormals": {"float32": True, "bfloat16": True}},
        "git_commit": "0123456789abcdef0123",
        "host": "testhost",
        "started": started,
        "finished": "" if status == "running" else started,
        "status": status,
    }
    if "meta" not in skip:
        (path / "meta.json").write_text(json.dumps(meta))
    return path


def standard_specs() -> list[Spec]:
    """A toy softplus-like case with a NaN gradient above THRESHOLD (naive), variants
    fine there, an inaccurate naive value, an unsupported and an error result, and a
    two-argument case with a convention."""
    specs: list[Spec] = []
    for dtype in ("float32", "bfloat16"):
        specs += [
            Spec("toy", "naive", "value", dtype=dtype, ulp=1, big_from=4),
            Spec("toy", "custom_jvp", "value", dtype=dtype, ulp=1, big_from=4),
            Spec("toy", "library", "value", dtype=dtype, ulp=0),
            Spec("toy", "naive", "grad", "x", dtype=dtype, ulp=2, nan_from=6, first_bad=THRESHOLD if dtype == "float32" else 89.0),
            Spec("toy", "custom_jvp", "grad", "x", dtype=dtype, ulp=1),
            Spec("toy", "library", "grad", "x", dtype=dtype, ulp=3),
            Spec("toy", "naive", "jvp", "x", dtype=dtype, ulp=2),
            Spec("toy", "custom_jvp", "jvp", "x", dtype=dtype, status="unsupported", message="can't apply forward-mode autodiff (jvp) to a custom_vjp function."),
            Spec("toy", "library", "grad2", "x", dtype=dtype, status="error", message="ValueError: boom"),
            Spec("pair", "naive", "value", dtype=dtype, ulp=1, args=("x", "y")),
            Spec("pair", "naive", "grad", "x", dtype=dtype, ulp=1, args=("x", "y")),
            Spec("pair", "naive", "grad", "y", dtype=dtype, ulp=7, args=("x", "y"), conventions="xlogy(0, y) = 0 for every y, so d/dy = 0 at (0, 0)"),
        ]
    return specs


# --- asv ---------------------------------------------------------------------------------------


def _asv_entry(values: list[Any], params: list[list[Any]], started: int) -> list[Any]:
    return [values, [[repr(v) for v in axis] for axis in params], "0" * 64, started, 1.0]


def write_asv(root: Path, commits: Sequence[tuple[str, int]] = (("a" * 40, 1_700_000_000_000),), machine: str = "box", *, slow: float = 1.0) -> Path:
    """Synthetic asv 0.6 results: bench_time/bench_track for ``toy`` (variants naive,
    custom_jvp, library; one value failed, one skipped) and a solver suite for
    ``newton`` with a ``steps`` parameter, at each of ``commits``."""
    asv_dir = root / "asv"
    (asv_dir / machine).mkdir(parents=True, exist_ok=True)
    variants = ["naive", "custom_jvp", "library"]
    time_params = [variants, ["value", "grad"], ["float32"], [16, 65536], ["cpu", "gpu"]]
    track_params = [variants, ["value", "grad"], ["float32", "bfloat16"], ["cpu", "gpu"]]
    step_params = [["naive", "custom_vjp"], [2, 4, 8], ["grad"], ["cpu", "gpu"]]
    benchmarks: dict[str, Any] = {"version": 2}

    def bench(name: str, kind: str, unit: str, params: list[list[Any]], names: list[str]) -> None:
        benchmarks[name] = {"name": name, "type": kind, "unit": unit, "param_names": names, "params": [[repr(v) for v in axis] for axis in params], "version": "0" * 64}

    bench("bench_time.toy.time_call", "time", "seconds", time_params, ["variant", "transform", "dtype", "size", "backend"])
    for m, unit in (("track_compile_ms", "ms"), ("track_hlo_ops", "instructions"), ("track_temp_bytes", "bytes")):
        bench(f"bench_track.toy.{m}", "track", unit, track_params, ["variant", "transform", "dtype", "backend"])
    bench("bench_solvers.newton.time_call", "time", "seconds", step_params, ["variant", "steps", "transform", "backend"])
    bench("bench_solvers.newton_memory.track_temp_bytes", "track", "bytes", step_params, ["variant", "steps", "transform", "backend"])
    (asv_dir / "benchmarks.json").write_text(json.dumps(benchmarks))
    (asv_dir / machine / "machine.json").write_text(json.dumps({"machine": machine, "cpu": "Synthetic CPU", "num_cpu": "2", "os": "Linux", "ram": "1", "arch": "x86_64", "version": 1}))
    import itertools

    for i, (commit, date) in enumerate(commits):
        scale = slow if i == len(commits) - 1 else 1.0
        results: dict[str, Any] = {}
        vals = []
        for v, t, d, n, b in itertools.product(*time_params):
            if b == "gpu":
                vals.append(math.nan)  # skipped: no such backend
            elif v == "library" and t == "grad" and n == 16:
                vals.append(None)  # failed
            else:
                vals.append(scale * 1e-6 * (1 + variants.index(v)) * (2 if t == "grad" else 1) * (n / 16) ** 0.5)
        results["bench_time.toy.time_call"] = _asv_entry(vals, time_params, date)
        for m, base in (("track_compile_ms", 20.0), ("track_hlo_ops", 30), ("track_temp_bytes", 4096)):
            vals = [math.nan if b == "gpu" else base * (1 + variants.index(v)) * (2 if t == "grad" else 1) for v, t, d, b in itertools.product(*track_params)]
            results[f"bench_track.toy.{m}"] = _asv_entry(vals, track_params, date)
        vals = [math.nan if b == "gpu" else 1e-5 * s * (1 if v == "naive" else 0.5) for v, s, t, b in itertools.product(*step_params)]
        results["bench_solvers.newton.time_call"] = _asv_entry(vals, step_params, date)
        vals = [math.nan if b == "gpu" else (1024 * s if v == "naive" else 1024) for v, s, t, b in itertools.product(*step_params)]
        results["bench_solvers.newton_memory.track_temp_bytes"] = _asv_entry(vals, step_params, date)
        doc = {
            "commit_hash": commit, "env_name": "existing-py", "date": date, "params": {"machine": machine}, "python": "3.11",
            "requirements": {}, "env_vars": {},
            "result_columns": ["result", "params", "version", "started_at", "duration", "stats_ci_99_a", "stats_ci_99_b", "stats_q_25", "stats_q_75", "stats_number", "stats_repeat", "samples", "profile"],
            "results": results, "durations": {}, "version": 2,
        }
        # asv writes NaN for skipped benchmarks and null for failed ones
        (asv_dir / machine / f"{commit[:8]}-existing-py.json").write_text(json.dumps(doc))
    return asv_dir


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
