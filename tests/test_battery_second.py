"""The second bad-input battery: what a new user tried from a fresh clone, each as the
user sees it (a subprocess: its exit status, its last line on stderr, no traceback), and
the data checked where the old behaviour was silent."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import USER_CASES, Spec, plan_file, rulelab, tables, write_run

from rulelab import store

pytestmark = pytest.mark.slow

ONE_CASE = """
import jax, jax.numpy as jnp, numpy as np, rulelab

def host(x):
    if np.any(x > 2.0):
        raise ValueError("host function refuses x > 2")
    return np.asarray(x)

def callback(x):
    return jax.pure_callback(host, jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), x, vmap_method="expand_dims")

def no_return(x):
    y = x + 1.0

rulelab.register(rulelab.make_case(
    name="bi2", formula="x", args=("x",), domain=rulelab.REALS, reference=lambda mp, x: x,
    variants=[rulelab.Variant("naive", lambda x: 1.0 * x), rulelab.Variant("positive", lambda x: x > 0),
              rulelab.Variant("count", lambda x: jnp.int32(3)), rulelab.Variant("callback", callback),
              rulelab.Variant("no_return", no_return)],
), replace=True)
"""


def last_line(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def user_module(tmp_path: Path) -> str:
    path = tmp_path / "bi2_case.py"
    path.write_text(ONE_CASE)
    return str(path)


def one_plan(tmp_path: Path, transforms: str) -> str:
    path = tmp_path / "bi2.toml"
    path.write_text(f'cases = ["bi2"]\ntransforms = [{transforms}]\ndtypes = ["float32"]\n[sweep]\nper_binade = 1\n')
    return str(path)


def summary_of(results: Path) -> dict[tuple[str, str], tuple[str, str]]:
    (run,) = (results / "accuracy").glob("2*")
    s = tables(run)["summary"]
    return {(r.variant, r.transform): (r.status, r.message) for r in s.itertuples()}


# 1: a complete run is not changed by a resume ---------------------------------------------------


def test_resuming_a_complete_exhaustive_run_changes_nothing_and_says_so(tmp_path, env):
    out = tmp_path / "x"
    first = rulelab("sweep", "exhaustive32", "--cases", "softplus", "--variants", "naive", "--transforms", "grad", "--exponents", "127", "127",
                    "--results", str(out), "--no-progress", env=env)
    assert first.returncode == 0, first.stderr
    (run,) = (out / "accuracy").glob("2*")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    again = rulelab("sweep", "--resume", run.name, "--results", str(out), "--no-progress", env=env)
    assert again.returncode == 0 and "Traceback" not in again.stderr
    assert last_line(again) == f"rulelab sweep: run {run.name} is complete; nothing to resume"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert store.read_meta(run).status == "complete"


# 2-4: exponents are checked before a run folder exists ------------------------------------------


@pytest.mark.parametrize("lo, hi", [(300, 400), (135, 120), (-1, 3), (255, 255)])
def test_exponents_outside_the_finite_binades_are_refused(tmp_path, env, lo, hi):
    out = tmp_path / "x"
    res = rulelab("sweep", "exhaustive32", "--cases", "softplus", "--exponents", str(lo), str(hi), "--results", str(out), env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert last_line(res) == (f"rulelab sweep: --exponents {lo} {hi}: give biased float32 exponents LO <= HI from 0 (subnormals and zeros) "
                              "to 254 (the largest finite binade; 127 is [1, 2))")
    assert not out.exists()


# 5 and 10 (None): one bad variant is its own error, not its case's -------------------------------


def test_a_variant_returning_a_bool_an_int_or_nothing_is_the_only_error(tmp_path, env):
    out = tmp_path / "r"
    res = rulelab("sweep", one_plan(tmp_path, '"value", "jvp"'), "--module", user_module(tmp_path), "--variants", "naive,positive,count,no_return",
                  "--results", str(out), "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    s = summary_of(out)
    assert s[("naive", "value")][0] == s[("naive", "jvp")][0] == "ok"
    assert s[("positive", "value")] == ("error", "case 'bi2', variant 'positive', transform 'value', dtype float32: "
                                                 "returned bool; a variant must return the input's floating dtype")
    assert s[("count", "value")][1].endswith("returned int32; a variant must return the input's floating dtype")
    assert s[("positive", "jvp")][1].endswith("returned float0 (the derivative of a non-float output); a variant must return the input's floating dtype")
    assert s[("no_return", "value")][1].endswith("returned None (a missing return?); a variant must return one scalar of the input's floating dtype")


# 6: stderr closed mid-sweep ----------------------------------------------------------------------


def test_a_closed_stderr_stops_the_run_resumably_and_quietly(tmp_path, env):
    out = tmp_path / "r"
    plan = plan_file(tmp_path, '"tslow"')
    cmd = f"set -o pipefail; {sys.executable} -m rulelab sweep {plan} --module {USER_CASES} --results {out} --workers 1 2>&1 | head -1"
    res = subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 141 and res.stdout.count("\n") == 1 and res.stderr == ""
    (run,) = (out / "accuracy").glob("2*")
    meta = store.read_meta(run)
    assert meta.status == "stopped" and meta.stopped["reason"] == "the output was closed (broken pipe)"
    resumed = rulelab("sweep", "--resume", run.name, "--results", str(out), "--no-progress", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert store.read_meta(run).status == "complete"


# 7: a port that is not a dask scheduler ---------------------------------------------------------


def test_a_port_that_is_not_a_dask_scheduler_is_refused_before_a_run_exists(tmp_path, env):
    pytest.importorskip("distributed")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = tmp_path / "r"
    try:
        t0 = time.monotonic()
        res = rulelab("sweep", "quick", "--cases", "softplus", "--scheduler", f"tcp://127.0.0.1:{server.server_port}", "--results", str(out), env=env)
        waited = time.monotonic() - t0
    finally:
        server.shutdown()
    assert res.returncode == 2 and "Traceback" not in res.stderr and waited < 60
    assert f"port {server.server_port} answers but is not a dask scheduler" in last_line(res)
    assert not out.exists()


# 8: no results folder ---------------------------------------------------------------------------


def test_a_report_of_a_results_folder_that_does_not_exist_is_an_error(tmp_path, env):
    res = rulelab("report", "--results", str(tmp_path / "no" / "such"), "--reports", str(tmp_path / "html"), env=env)
    assert res.returncode == 2 and last_line(res) == (
        f"rulelab report: no results folder at {tmp_path / 'no' / 'such'}; run a sweep first (rulelab sweep quick), or give --results DIR")
    assert not (tmp_path / "html").exists()


# 9: a host callback that raises -----------------------------------------------------------------


def test_a_raising_host_callback_is_one_line_in_the_summary_and_none_on_the_terminal(tmp_path, env):
    out = tmp_path / "r"
    res = rulelab("sweep", one_plan(tmp_path, '"value"'), "--module", user_module(tmp_path), "--variants", "naive,callback",
                  "--results", str(out), "--no-progress", "--workers", "1", env=env)
    assert res.returncode == 0 and "Traceback" not in res.stderr and "pure_callback failed" not in res.stderr
    status, message = summary_of(out)[("callback", "value")]
    assert status == "error" and message.endswith("ValueError: host function refuses x > 2")
    assert summary_of(out)[("naive", "value")][0] == "ok"


# 10: the small ones -----------------------------------------------------------------------------


def test_a_table_unknown_to_plans_is_named_with_its_line(tmp_path, env):
    plan = tmp_path / "p.toml"
    plan.write_text('cases = ["softplus"]\n\n[extra]\nx = 1\n')
    res = rulelab("check", str(plan), env=env)
    assert res.returncode == 2 and last_line(res).startswith(f"rulelab check: {plan}:3: unknown key 'extra'; valid keys: ")


def test_a_negative_point_limit_is_not_called_too_large(tmp_path, env):
    res = rulelab("sweep", "quick", "--max-points", "-5", "--results", str(tmp_path / "r"), env=env)
    assert res.returncode == 2 and last_line(res) == "rulelab sweep: --max-points must be a positive number of points, got -5"


def test_exponents_with_a_sampled_plan_are_refused(tmp_path, env):
    res = rulelab("sweep", "quick", "--exponents", "120", "130", "--results", str(tmp_path / "r"), env=env)
    assert res.returncode == 2 and "--exponents chooses binades of exhaustive32" in last_line(res)
    assert not (tmp_path / "r").exists()


def test_more_workers_than_cores_are_capped_and_said(tmp_path, env):
    import os

    res = rulelab("sweep", plan_file(tmp_path, '"tneg"', '"value"'), "--module", USER_CASES, "--workers", "1000", "--results", str(tmp_path / "r"),
                  "--no-progress", env=env)
    cores = os.cpu_count() or 1
    assert res.returncode == 0, res.stderr
    assert f"note: --workers 1000 is more than this machine's {cores} cores; using {cores}" in res.stderr
    (run,) = (tmp_path / "r" / "accuracy").glob("2*")
    assert store.read_meta(run).sessions[-1]["workers"] <= cores


def test_a_report_during_a_sweep_names_the_run_it_uses(tmp_path, env):
    results = tmp_path / "results"
    done = write_run(results / "accuracy" / "20260101T000000Z-1-aaaa", [Spec("toy", "naive", "value")], started="2026-01-01")
    running = results / "accuracy" / "20260102T000000Z-2-bbbb"
    running.mkdir(parents=True)
    meta = {"run_id": running.name, "schema_version": store.SCHEMA_VERSION, "plan": {"name": "quick"}, "started": "2026-01-02", "status": "running"}
    (running / "meta.json").write_text(json.dumps(meta))
    res = rulelab("report", "--results", str(results), "--reports", str(tmp_path / "html"), "--workers", "1", env=env)
    assert res.returncode == 0, res.stderr
    warning = [ln for ln in res.stderr.splitlines() if running.name in ln]
    assert warning and warning[0].endswith(f"; the report uses {done.name}")


def test_a_broken_stdout_is_not_called_an_unwritable_folder(env):
    res = subprocess.run(f"{sys.executable} -m rulelab cases | head -c 10", shell=True, executable="/bin/bash", capture_output=True, text=True, env=env)
    assert "cannot use" not in res.stderr and "choose a writable folder" not in res.stderr and res.stderr == ""

