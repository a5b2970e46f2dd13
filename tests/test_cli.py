"""The command line: help, ``cases``, mistakes reported as one paragraph with status 2,
and end to end in subprocesses: a user module, a SIGKILLed run resumed, two runs at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import USER_CASES, plan_file, rulelab, tables

from rulelab import store
from rulelab.cli import main

# --- in process ----------------------------------------------------------------------------------


def test_help_lists_subcommands_and_options(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "cases" in out and "sweep" in out
    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    for option in ("--cases", "--variants", "--dtypes", "--transforms", "--backend", "--module", "--resume", "--results", "--workers"):
        assert option in out


def test_cases_lists_catalog_and_user_cases(capsys):
    assert main(["cases", "--module", USER_CASES]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["case", "args", "formula", "variants", "source"]
    line = next(ln for ln in out.splitlines() if ln.startswith("tneg "))
    assert "-x" in line and "exact, off, broken" in line and "rulelab tests" in line
    assert any(ln.startswith("softplus ") for ln in out.splitlines())


def bad_module(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bad_cases.py"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    "args, words",
    [
        (["sweep", "quick", "--cases", "nope"], ["--cases: unknown case 'nope'", "softplus"]),
        (["sweep", "quick", "--dtypes", "float8"], ["unknown dtype 'float8'", "bfloat16"]),
        (["sweep", "no_such_plan"], ["no plan 'no_such_plan'", "quick"]),
        (["sweep", "--resume", "20000101T000000Z-1-abcd", "--results", "{tmp}"], ["no run '20000101T000000Z-1-abcd'"]),
        (["sweep", "quick", "--resume", "x"], ["--resume continues run x exactly as it was planned; drop PLAN"]),
        (["sweep", "quick", "--workers", "0"], ["--workers must be at least 1"]),
        (["sweep", "exhaustive32"], ["exhaustive32 sweeps one case at a time"]),
        (["sweep", "exhaustive32", "--cases", "hypot", "--results", "{tmp}"], ["cases of one argument; 'hypot' has 2"]),
        (["sweep", "exhaustive32", "--cases", "log_ndtr", "--transforms", "grad", "--results", "{tmp}"], ["'log_ndtr' has no fast reference"]),
        (["sweep", "exhaustive32", "--cases", "softplus", "--dtypes", "float16"], ["float32 only"]),
        (["sweep", "--module", "no_such_module_xyz"], ["--module no_such_module_xyz: no file or importable module"]),
        (["cases", "--module", "{tmp}/missing.py"], ["missing.py: no such file"]),
        (["cases", "--module", "{bad}:import rulelab\n\nraise ValueError('no good')\n"], ["failed to import at", "line 3", "ValueError: no good"]),
        (["cases", "--module", "{bad}:def f(:\n"], ["line 1", "SyntaxError"]),
        (["cases", "--module", "{bad}:import rulelab\nrulelab.register(rulelab.make_case('b', 'x', ('x',), rulelab.REALS, lambda mp: 0, {'v': lambda x: x}))\n"],
         ["malformed case", "reference must take (mp, x)"]),
        (["sweep", "{plan}:cases = [\"tneg\"]\nsamples = 0\n", "--module", USER_CASES], ["tiny.toml:2: samples must be an integer >= 1"]),
        (["sweep", "{plan}:cases = [\"tneg\"]\nvariants = [\"exact\"]\n", "--module", USER_CASES, "--backend", "tpu", "--results", "{tmp}"],
         ["backend 'tpu' is not available here"]),
    ],
)  # fmt: skip
def test_mistakes_exit_2_with_one_paragraph(tmp_path, capsys, args, words):
    def expand(a: str) -> str:
        if a.startswith("{bad}:"):
            return bad_module(tmp_path, a.removeprefix("{bad}:"))
        if a.startswith("{plan}:"):
            (tmp_path / "tiny.toml").write_text(a.removeprefix("{plan}:"))
            return str(tmp_path / "tiny.toml")
        return a.replace("{tmp}", str(tmp_path))

    assert main([expand(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, err


def test_unknown_backend_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "quick", "--backend", "abacus"])
    assert info.value.code == 2
    assert "invalid choice: 'abacus'" in capsys.readouterr().err


# --- end to end, in subprocesses ---------------------------------------------------------------------


@pytest.mark.slow
def test_two_sweeps_at_once_of_a_user_module(tmp_path, env):
    plan = plan_file(tmp_path, '"tneg"')
    cmd = [sys.executable, "-m", "rulelab", "sweep", plan, "--module", USER_CASES, "--results", str(tmp_path / "res"), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted((tmp_path / "res" / "accuracy").glob("2*"))
    assert len(runs) == 2
    for (out, _), run in zip(outs, runs):
        assert "tneg" in out and "run folder:" in out
        assert store.read_meta(run).status == "complete"
    a, b = (tables(r) for r in runs)
    for name in store.TABLES:
        pd.testing.assert_frame_equal(a[name], b[name])
    s = a["summary"]
    assert (s[s["variant"] == "exact"]["max_ulp"] == 0).all() and (s[s["variant"] == "off"]["max_ulp"] == 1).all()
    assert (s[s["variant"] == "broken"]["status"] == "error").all()
    assert store.latest(tmp_path / "res") in runs


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_tables_of_an_uninterrupted_one(tmp_path, env):
    plan = plan_file(tmp_path, '"tslow"')
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "rulelab", "sweep", plan, "--module", USER_CASES, "--results", str(out), "--no-progress", "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list(out.glob("accuracy/2*/parts/*.part"))
        if len(parts) >= 4:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(parts) >= 4, "the sweep ended before it could be stopped"
    (run,) = out.glob("accuracy/2*")
    time.sleep(1.0)  # the evaluation workers die with the sweep: no part appears after it
    finished = {p.name: store.read_part(p) for p in (run / "parts").glob("*.part")}
    time.sleep(1.0)
    assert {p.name for p in (run / "parts").glob("*.part")} == set(finished)
    assert 4 <= len(finished) < 18
    assert store.read_meta(run).status == "running"

    resumed = rulelab("sweep", "--resume", run.name, "--results", str(out), "--no-progress", env=env)
    assert resumed.returncode == 0, resumed.stderr
    meta = store.read_meta(run)
    last = meta.sessions[-1]
    assert meta.status == "complete"
    assert (last["tasks_before"], last["tasks_run"]) == (len(finished), 18 - len(finished))
    for part in finished.values():  # recorded as first computed, not recomputed
        assert meta.tasks["/".join(part["key"])] == part["info"]["wall_s"]

    whole = rulelab("sweep", plan, "--module", USER_CASES, "--results", str(tmp_path / "whole"), "--no-progress", env=env)
    assert whole.returncode == 0, whole.stderr
    (other,) = (tmp_path / "whole").glob("accuracy/2*")
    a, b = tables(run), tables(other)
    for name in store.TABLES:
        pd.testing.assert_frame_equal(a[name], b[name])
    assert len(a["summary"]) == 18 and (a["summary"]["status"] == "ok").all()


BROKEN_MODULE = """
import jax.numpy as jnp
import rulelab

def reference(mp, x):
    {body}

rulelab.register(rulelab.make_case(
    name="user_broken", formula="e^x", args=("x",), domain=rulelab.Interval(1.0, 1024.0),
    reference=reference, variants={{"naive": jnp.exp}}))
"""


def broken_module(tmp_path: Path, body: str) -> str:
    path = tmp_path / "broken_cases.py"
    path.write_text(BROKEN_MODULE.format(body=body))
    return str(path)


@pytest.mark.slow
def test_a_reference_computed_in_double_precision_is_refused_by_check(tmp_path, env):
    module = broken_module(tmp_path, "import math\n    return math.exp(float(x))")
    res = rulelab("check", "--module", module, env=env)
    assert res.returncode == 2, res.stderr
    assert "user_broken" in res.stderr and "returned float" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_a_reference_broken_mid_sweep_stops_with_one_line_and_resumes_once_fixed(tmp_path, env):
    module = broken_module(tmp_path, "return mp.exp(x) if x < 100 else mp.exp(x) + undefined_name")
    plan = plan_file(tmp_path, '"user_broken"', '"value"')
    out = tmp_path / "out"
    res = rulelab("sweep", plan, "--module", module, "--results", str(out), "--no-progress", env=env)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "concurrent.futures" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert "user_broken" in line and "value at (" in line and "NameError" in line and "--resume" in line
    (run,) = (out / "accuracy").glob("2*")
    meta = store.read_meta(run)
    assert meta.status == "stopped" and "NameError" in meta.stopped["reason"]
    broken_module(tmp_path, "return mp.exp(x)")
    res = rulelab("sweep", "--resume", run.name, "--results", str(out), "--no-progress", env=env)
    assert res.returncode == 0, res.stderr
    summary = store.load_table(run, "summary")
    assert store.read_meta(run).status == "complete" and len(summary) == 3
    assert (summary["unsettled"] == 0).all() and (summary["max_ulp"] <= 1).all()


def test_report_names_a_damaged_newer_run_and_builds_from_the_intact_one(tmp_path, capsys):
    from helpers import Spec, write_run

    base = tmp_path / "results" / "accuracy"
    write_run(base / "good", [Spec("toy", "naive", "value")], started="2026-01-01")
    write_run(base / "newer", [Spec("toy", "naive", "value")], started="2026-01-02", skip=("summary",))
    assert main(["report", "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "run newer is passed over (summary.parquet is missing" in err and "the report uses good" in err
    assert "good" in (tmp_path / "reports" / "index.html").read_text()


@pytest.mark.slow
def test_resume_after_editing_a_variant_refuses_and_names_it(tmp_path, env, monkeypatch):
    """A run of examples/logcosh.py stopped after measuring its rule, the rule then
    edited: resuming would mix results of two programs, so it is refused, naming the
    variant."""
    from rulelab.model.plan import parse_plan
    from rulelab.runs import sampled as sweep

    example = Path(__file__).resolve().parents[1] / "examples" / "logcosh.py"
    module = tmp_path / "my_logcosh.py"
    module.write_text(example.read_text())
    from rulelab.model.modules import load_module

    load_module(str(module))
    plan = parse_plan('cases = ["logcosh"]\ntransforms = ["value"]\n[sweep]\nexhaustive16 = false\nper_binade = 1\n', "p.toml", name="p")
    real, written = store.write_part, []

    def stop_after_the_rule(run, key, rows, info):
        if any(k[1] == "custom_jvp" for k in written):
            raise KeyboardInterrupt
        written.append(key)
        return real(run, key, rows, info)

    monkeypatch.setattr(store, "write_part", stop_after_the_rule)
    monkeypatch.setenv("RULELAB_CACHE", env["RULELAB_CACHE"])
    with pytest.raises(KeyboardInterrupt):
        sweep.start(plan, tmp_path / "out", [str(module)], sweep.Options(workers=1, progress=False, compile_cache=False))
    (run,) = (tmp_path / "out" / "accuracy").glob("2*")
    assert store.read_meta(run).status == "stopped"
    module.write_text(module.read_text().replace("- math.log(2.0)", "- math.log(2.0) + 1.0"))
    res = rulelab("sweep", "--resume", run.name, "--results", str(tmp_path / "out"), "--no-progress", env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "code changed since the run started: logcosh/custom_jvp" in res.stderr
    assert "logcosh/naive" not in res.stderr and "logcosh/reference" not in res.stderr
    assert len(list((run / "parts").glob("*.part"))) == len(written), "nothing was recomputed or lost"
