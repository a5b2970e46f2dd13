"""Helpers shared by the test modules (import them from here, never from a test module).

- command-line runs: :data:`USER_CASES`, :func:`rulelab`, :func:`plan_file`, :func:`tables`;
- synthetic accuracy runs and asv results for the report tests: :class:`Spec`,
  :func:`write_run`, :func:`standard_specs`, :func:`write_asv`, :data:`THRESHOLD`. The
  synthetic store follows the store's schema (meta.json, summary / binned / worst /
  samples parquet) with hand-chosen failures, so tests can assert the exact classes,
  thresholds and messages the report derives from them;
- :data:`SEED`: the seed catalog's cases and their variants;
- :func:`round_mpf`: correct rounding of an mpmath number to a dtype (an oracle used by
  the tests only);
- :func:`assert_same_errors`, :func:`assert_aggregate_is_binned`: an exhaustive sweep's
  chunk scoring against the sampled sweep's point-by-point scoring;
  :func:`stopped_exhaustive_run`: an exhaustive run interrupted after some chunks.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rulelab import store
from rulelab.core.floats import mpf_parts, round_exact
from rulelab.store.vocabulary import Bucket

# --- the command line, in subprocesses ---------------------------------------------------------

USER_CASES = str(Path(__file__).with_name("user_cases.py"))
"""Tiny user cases loaded with ``--module``, as a user's module would be."""


def rulelab(*args: str, env: dict) -> subprocess.CompletedProcess:
    """``python -m rulelab ARGS`` in a subprocess with environment ``env``."""
    return subprocess.run([sys.executable, "-m", "rulelab", *args], capture_output=True, text=True, env=env, timeout=300)


def plan_file(tmp_path: Path, cases: str, transforms: str = '"value", "grad"') -> str:
    """A tiny plan file of ``cases`` (TOML list items) in ``tmp_path``; returns its path."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        f'cases = [{cases}]\ntransforms = [{transforms}]\ndtypes = ["float32", "float16", "bfloat16"]\n'
        "[sweep]\nexhaustive16 = false\nper_binade = 1\n"
    )
    return str(path)


def tables(run: Path) -> dict[str, pd.DataFrame]:
    """A run's tables without their timing columns (what two runs of a plan share)."""
    return {n: store.load_table(run, n).drop(columns=list(store.TIMING_COLUMNS), errors="ignore") for n in store.TABLES}


# --- the seed catalog ----------------------------------------------------------------------------

SEED = {
    "softplus": {"naive", "custom_vjp", "custom_jvp", "custom_jvp_defjvps", "stable", "library"},
    "stable_sqrt": {"naive", "custom_jvp", "custom_jvp_as_published"},
    "x_over_1p_sqrt": {"naive", "custom_jvp", "custom_jvp_defjvps"},
    "clip_sin": {"naive", "custom_vjp"},
    "newton_sqrt": {"naive", "custom_vjp", "library"},
    "sin_times_y": {"naive", "custom_jvp", "custom_jvp_defjvps", "custom_vjp"},
    "point_fun": {"naive", "custom_jvp", "custom_vjp"},
}


# --- correct rounding (a test oracle) ------------------------------------------------------------


def round_mpf(x: Any, dtype: Any) -> float:
    """Correctly round an mpmath ``mpf`` to ``dtype`` (NaN and ±inf pass through)."""
    parts = mpf_parts(x)
    if parts is None:
        return float(x)
    return round_exact(*parts, dtype)


# --- synthetic accuracy runs ---------------------------------------------------------------------

BUCKETS = [b.column for b in Bucket]

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


def spec_tables(spec: Spec) -> dict[str, list[dict[str, Any]]]:
    """The rows of each table (summary, binned, worst, samples) for one ``spec``."""
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
    tables: dict[str, list[dict[str, Any]]] = {name: [] for name in store.TABLES}
    for s in specs:
        for name, rows in spec_tables(s).items():
            tables[name] += rows
    for name, rows in tables.items():
        if name not in skip:
            (pd.DataFrame(rows) if rows else store.empty_table(name)).to_parquet(path / f"{name}.parquet", index=False)
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


# --- synthetic asv results -----------------------------------------------------------------------


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


def traced(t: Any) -> Any:
    """The ClosedJaxpr of a cost target's vectorised program, traced on abstract inputs."""
    from rulelab.jaxrun import cost

    return cost.jitted(t).trace(*cost.abstract_inputs(t)).jaxpr


# --- exhaustive sweeps against point-by-point scoring ------------------------------------------


def assert_same_errors(got, want, where):
    for f in ("bucket", "dulp", "dulp_ieee", "bucket_ieee", "flushed", "frac"):
        assert np.array_equal(getattr(got, f), getattr(want, f), equal_nan=f not in ("bucket", "bucket_ieee", "flushed")), (where, f)


def assert_aggregate_is_binned(got, x, sc, want, where):
    """A chunk's aggregates equal the sampled sweep's per-binade table
    (``metrics.binned``, its own sort-based reduction) of the same points, and its worst
    points the sampled sweep's ranking of every point."""
    from rulelab.runs.exhaustive import _median
    from rulelab.scoring.chunks import K_WORST, dense_hist
    from rulelab.scoring.metrics import binned, worst

    b = binned(x, want)
    assert sorted(got.bins) == sorted(zip(b["sign"], b["binade"])), where
    for r in b.itertuples():
        g = got.bins[(r.sign, r.binade)]
        assert g["count"] == r.count and g["flushed"] == r.flushed, where
        assert g["buckets"][Bucket.WRONG_NONFINITE] + g["buckets"][Bucket.UNEXPECTED_FINITE] == r.nonfinite, where
        assert g["buckets"][Bucket.UNSETTLED] == r.unsettled, where
        for name in ("max_ulp", "max_ulp_ieee"):
            assert np.array_equal(g[name], getattr(r, name), equal_nan=True), (where, name)
        assert np.array_equal(_median(dense_hist(g["hist"])), r.median_ulp, equal_nan=True) or r.median_ulp > 1024, where
    wrong = want.bucket == Bucket.WRONG_NONFINITE
    nan = int(np.isnan(sc.values.astype(np.float64)[wrong]).sum())
    assert (got.wrong_nan, got.wrong_inf) == (nan, int(wrong.sum()) - nan), where
    assert np.array_equal(got.max_frac, np.nanmax(want.frac) if (~np.isnan(want.frac)).any() else np.nan, equal_nan=True), where
    ranked = worst(sc.points, sc.values, sc.ref.hi, sc.ref.lo, want, K_WORST)  # every point ranked
    for col in ("dulp", "frac_ulp", "bucket", "in0"):
        assert np.array_equal(got.worst[col].to_numpy(), ranked[col].to_numpy(), equal_nan=col != "bucket"), (where, col)


def stopped_exhaustive_run(spec: Any, root: Path, options: Any, monkeypatch: Any, after: int) -> Path:
    """Start the exhaustive run of ``spec`` under ``root`` and interrupt it (Ctrl-C) as it
    writes its chunk ``after`` + 1; returns the stopped run's folder."""
    import pytest

    from rulelab.runs import exhaustive

    real, written = store.write_bytes, []

    def stop(path: Path, data: bytes) -> None:
        if exhaustive.CHUNKS_DIR in path.parts:
            if len(written) == after:
                raise KeyboardInterrupt
            written.append(path)
        real(path, data)

    monkeypatch.setattr(store, "write_bytes", stop)
    with pytest.raises(KeyboardInterrupt):
        exhaustive.start(spec, root, options)
    monkeypatch.setattr(store, "write_bytes", real)
    (run,) = (root / "accuracy").glob("2*")
    return run
