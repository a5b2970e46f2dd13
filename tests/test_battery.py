"""The bad-input battery: each way a sweep could come out wrong without a word, or end
in a raw traceback, as a user would meet it (in a subprocess where they would see it:
the exit code, one line, no traceback)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import USER_CASES, rulelab

from rulelab import store
from rulelab.model.case import REALS, CaseError, Variant, make_case
from rulelab.reference import cache
from rulelab.reference import compute as RC
from rulelab.runs import lifecycle
from rulelab.runs import sampled as sweep
from rulelab.scoring.metrics import point_errors, summarize


def one_line(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    return lines[-1]


@pytest.mark.slow
def test_an_empty_plan_is_an_error_naming_the_file(tmp_path, env):
    plan = tmp_path / "empty.toml"
    plan.write_text("# nothing yet\n")
    for command in ("check", "sweep"):
        line = one_line(rulelab(command, str(plan), env=env) if command == "sweep" else rulelab("check", str(plan), env=env))
        assert str(plan) in line and "the plan is empty" in line


@pytest.mark.parametrize("domain", [None, "reals", [1.0, 2.0]])
def test_a_bad_domain_names_the_case_and_the_valid_domains(domain):
    with pytest.raises(CaseError, match=r"case 'bad_domain': domain must be an Interval.*rulelab.REALS"):
        make_case("bad_domain", "x", ("x",), domain, lambda mp, x: x, [Variant("naive", lambda x: x)])


def test_float64_metrics_warn_about_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        e = point_errors(np.array([1.7e308, -1.7e308, 1e300]), np.array([-1.7e308, 1.0, 1e-300]), np.zeros(3), "float64")
    assert summarize(e)["max_frac_ulp"] == np.inf


def test_a_cache_file_compacted_away_meanwhile_is_not_corruption(monkeypatch):
    case = make_case("tvanish", "e^x", ("x",), REALS, lambda mp, x: mp.exp(x), [Variant("naive", lambda x: x)])
    RC.references(case, 0, "", (np.array([0.5, 1.5]),))
    folder = cache.cache_dir() / "reference" / cache.reference_key(case, 0, "")
    real_glob = Path.glob

    def glob_with_a_vanished_file(self, pattern):
        found = list(real_glob(self, pattern))
        return [*found, self / "part-0000000000000000.npz"] if self == folder else found

    monkeypatch.setattr(Path, "glob", glob_with_a_vanished_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache.ReferenceCacheWarning)
        assert len(cache.load_cache(cache.reference_key(case, 0, ""))) == 2
    monkeypatch.undo()
    assert not list(folder.glob("*.corrupt"))


@pytest.mark.slow
def test_a_run_id_is_a_name_not_a_path(tmp_path, env):
    line = one_line(rulelab("sweep", "--resume", "../../elsewhere/20260101T000000Z-1-abcd", "--results", str(tmp_path), env=env))
    assert "is not a run id" in line


@pytest.mark.parametrize("where", ["out", "cache", "report"])
@pytest.mark.slow
def test_unwritable_places_get_one_line_naming_the_path(tmp_path, env, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    plan = tmp_path / "tiny.toml"
    plan.write_text('cases = ["tneg"]\ntransforms = ["value"]\ndtypes = ["float16"]\n[sweep]\nexhaustive16 = false\nper_binade = 1\n')
    if where == "report":
        res = rulelab("report", "--results", str(tmp_path), "--reports", str(blocker), env=env)
    elif where == "cache":
        res = rulelab("sweep", str(plan), "--module", USER_CASES, "--results", str(tmp_path / "r"), "--no-progress", env={**env, "RULELAB_CACHE": str(blocker)})
    else:
        res = rulelab("sweep", str(plan), "--module", USER_CASES, "--results", str(blocker), "--no-progress", env=env)
    line = one_line(res)
    assert str(blocker) in line and "cannot use" in line
    if where == "cache":
        assert "--resume" in line, "a run already started says how to continue it"


@pytest.mark.slow
def test_ctrl_c_prints_the_resume_command(tmp_path, env):
    plan = tmp_path / "tiny.toml"
    plan.write_text('cases = ["tslow"]\ntransforms = ["value"]\n[sweep]\nexhaustive16 = false\nper_binade = 1\n')
    proc = subprocess.Popen([sys.executable, "-m", "rulelab", "sweep", str(plan), "--module", USER_CASES, "--results", str(tmp_path / "out"),
                             "--no-progress", "--workers", "1"], stderr=subprocess.PIPE, text=True, env={**env, "RULELAB_TEST_SLOW": "0.5"},
                            # a shell that starts jobs in the background leaves them SIGINT ignored: take Ctrl-C as a terminal does
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out" / "accuracy").glob("2*/parts/*.part")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    (run,) = (tmp_path / "out" / "accuracy").glob("2*")
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"interrupted; the finished tasks are kept: continue with rulelab sweep --resume {run.name}" in err.strip().splitlines()[-1]
    assert store.read_meta(run).status == "stopped"


def test_resume_refuses_changed_library_versions(tmp_path, monkeypatch):
    from rulelab.model.modules import load_module
    from rulelab.model.plan import parse_plan

    load_module(USER_CASES)
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))
    plan = parse_plan('cases = ["tneg"]\ntransforms = ["value"]\ndtypes = ["float16"]\n[sweep]\nexhaustive16 = false\nper_binade = 1\n', "p.toml", name="p")
    real, written = store.write_part, []

    def stop_after_one(*a, **k):
        if written:
            raise KeyboardInterrupt
        written.append(a[1])
        return real(*a, **k)

    monkeypatch.setattr(store, "write_part", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        sweep.start(plan, tmp_path / "out", [USER_CASES], sweep.Options(workers=1, progress=False, compile_cache=False))
    monkeypatch.setattr(store, "write_part", real)
    (run,) = (tmp_path / "out" / "accuracy").glob("2*")
    changed = {**lifecycle.versions(), "jax": "9.9.9"}
    monkeypatch.setattr(lifecycle, "versions", lambda: changed)
    with pytest.raises(lifecycle.RunError, match=r"versions changed: jax .* -> 9\.9\.9"):
        sweep.resume(run.name, tmp_path / "out", sweep.Options(workers=1, progress=False, compile_cache=False))


SLOW_REFERENCE = """
import time
import jax.numpy as jnp
import rulelab

def slow(mp, x):
    time.sleep(0.05)  # a chunk of 512 points takes 25 s: longer than the test waits
    return mp.exp(x)

rulelab.register(rulelab.make_case("tslowref", "e^x", ("x",), rulelab.REALS, slow, {"naive": jnp.exp}))
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
@pytest.mark.slow
def test_reference_workers_die_with_a_killed_sweep(tmp_path, env):
    module = tmp_path / "slow_reference.py"
    module.write_text(SLOW_REFERENCE)
    proc = subprocess.Popen([sys.executable, "-m", "rulelab", "sweep", "quick", "--module", str(module), "--cases", "tslowref",
                             "--dtypes", "float32", "--results", str(tmp_path / "out"), "--no-progress", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = _children(proc.pid)
    assert len(workers) >= 2, "the reference pool did not start"
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "reference workers outlived their parent"


def test_compare_with_a_run_missing_a_table_says_so_and_counts_no_differences(tmp_path, capsys):
    from helpers import Spec, write_run

    from rulelab.cli import main

    base = tmp_path / "results" / "accuracy"
    write_run(base / "a", [Spec("toy", "naive", "value")], started="2026-01-01")
    write_run(base / "b", [Spec("toy", "naive", "value")], started="2026-01-02", skip=("summary",))
    assert main(["report", "a", "--compare", "a", "b", "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "rep"), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "run b given to --compare is not whole (summary.parquet is missing" in err
    page = (tmp_path / "rep" / "compare.html").read_text()
    assert "cannot be compared" in page and "has no summary.parquet" in page and "differ in class" not in page


@pytest.mark.slow
def test_a_plan_too_large_is_refused_before_it_runs_with_its_estimate(tmp_path, env):
    plan = tmp_path / "big.toml"
    plan.write_text('cases = ["softplus"]\n[sweep.float32]\nper_binade = 100000000\n')
    for res in (rulelab("check", str(plan), env=env), rulelab("sweep", str(plan), "--results", str(tmp_path / "out"), env=env)):
        line = one_line(res)
        assert "too large" in line and "softplus in float32" in line and "--max-points" in line
        largest = int(line.split("the largest ")[1].split(" ")[0].replace(",", ""))
        assert 2 * 0x7F7FFFFF <= largest < 2 * 0x7F7FFFFF + 100  # every nonzero finite float32, and the specials
    assert not (tmp_path / "out").exists(), "nothing was started"


def test_the_size_estimate_bounds_every_sweep_of_the_quick_plan():
    from rulelab.model.case import get_case
    from rulelab.model.inputs import estimate_points, make_sweep
    from rulelab.model.plan import load_plan

    plan = load_plan("quick")
    for name in plan.cases:
        case = get_case(name)
        for dtype in plan.dtypes:
            spec = plan.spec(dtype, len(case.args))
            with np.errstate(over="ignore"):
                n = len(make_sweep(case, dtype, spec, plan.seed))
            assert n <= estimate_points(case, dtype, spec) <= 4 * n + 1000, (name, dtype)


def _message(action) -> str:
    """The message of what ``action`` raises (or returns, for a message builder)."""
    try:
        out = action()
    except Exception as exc:  # noqa: BLE001 - the message is what is checked
        return str(exc)
    return str(out)


def _battery_messages(tmp: Path) -> dict[str, str]:
    """The messages of the battery, produced in process where that is cheap."""
    import errno

    from helpers import Spec, write_run

    import rulelab
    from rulelab.cli import os_problem
    from rulelab.model.exhaustive_spec import chunks_of_binades
    from rulelab.model.plan import parse_plan
    from rulelab.model.sweep_size import check_size
    from rulelab.report.load import latest_runs

    def passed_over() -> str:
        told: list[str] = []
        write_run(tmp / "acc" / "a", [Spec("toy", "naive", "value")], started="2026-01-01")
        write_run(tmp / "acc" / "b", [Spec("toy", "naive", "value")], started="2026-01-02", status="stopped")
        latest_runs(tmp / "acc", warn=told.append)
        return "; ".join(told)

    broken = make_case("tmsg", "e^x", ("x",), REALS, lambda mp, x: mp.exp(x) if x < 2 else undefined_name, [Variant("naive", lambda x: x)])  # noqa: F821
    return {
        "the plan is empty": _message(lambda: parse_plan("", "empty.toml")),
        "is too large": _message(lambda: check_size(parse_plan('cases = ["softplus"]\n[sweep]\nper_binade = 100000000\n', "big.toml"))),
        "domain must be an Interval": _message(lambda: make_case("tmsg", "x", ("x",), None, lambda mp, x: x, [Variant("naive", lambda x: x)])),
        "returned float": _message(lambda: rulelab.register(make_case("tmsg", "x", ("x",), REALS, lambda mp, x: float(x), [Variant("naive", lambda x: x)]))),
        "NameError": _message(lambda: RC.references(broken, 0, "", (np.array([3.0]),))),
        "cannot use": os_problem(OSError(errno.ENOTDIR, "Not a directory", str(tmp / "a_file"))),
        "is not a run id": _message(lambda: store.open_run(tmp, "../elsewhere")),
        "is passed over": passed_over(),
        "cannot be resumed without mixing results": _source_has("cannot be resumed without mixing results"),
        "the finished tasks are kept": _source_has("the finished tasks are kept"),
        "given to --compare is not whole": _source_has("given to --compare is not whole"),
        "give biased float32 exponents LO <= HI": _message(lambda: chunks_of_binades(300, 400)),
        "--exponents chooses binades of exhaustive32": _cli(["sweep", "quick", "--exponents", "1", "2", "--results", str(tmp / "x")]),
        "a variant must return the input's floating dtype": _source_has("a variant must return the input's floating dtype"),
        "returned None (a missing return?)": _source_has("returned None (a missing return?)"),
        "answers but is not a dask scheduler": _source_has("answers but is not a dask scheduler"),
        "no results folder at": _cli(["report", "--results", str(tmp / "no" / "such")]),
        "is more than this machine's": _cli(["sweep", "quick", "--workers", "100000", "--exponents", "1", "2"]),
        "is complete; nothing to resume": _source_has("is complete; nothing to resume"),
    }


def _cli(argv: list[str]) -> str:
    """What the command writes on stderr for ``argv`` (a mistake found before it runs)."""
    import contextlib
    import io

    from rulelab.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        main(argv)
    return err.getvalue()


def _source_has(text: str) -> str:
    """``text`` when a message template in the source writes it (for messages whose
    scenario is too slow to replay here; their own tests above produce them)."""
    source = "\n".join(p.read_text() for p in (Path(__file__).resolve().parents[1] / "src" / "rulelab").rglob("*.py"))
    return text if text in source else ""


def test_the_troubleshooting_table_quotes_messages_the_battery_produces(tmp_path):
    """Each message the README's troubleshooting table quotes is one the code writes."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in table.splitlines() if r.startswith("| ") and not r.startswith("| symptom") and "---" not in r]
    quoted = [q for r in rows for q in r.split("|")[2].split("`")[1::2] if q != "--resume"]
    assert len(rows) >= 12 and len(quoted) >= 11
    produced = _battery_messages(tmp_path)
    for q in quoted:
        assert q in produced, f"the README quotes {q!r}, which the battery does not produce here"
        assert q in produced[q], f"{q!r} is not in the message: {produced[q]!r}"


def test_a_full_disk_mid_run_is_one_line_and_the_run_stays_resumable(tmp_path, monkeypatch, capsys):
    import errno

    from rulelab.cli import main

    plan = tmp_path / "tiny.toml"
    plan.write_text('cases = ["tneg"]\ntransforms = ["value"]\n[sweep]\nexhaustive16 = false\nper_binade = 1\n')
    monkeypatch.setenv("RULELAB_CACHE", str(tmp_path / "cache"))
    real, written = store.write_part, []

    def disk_fills(run, key, rows, info):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device", str(run / "parts"))
        written.append(key)
        return real(run, key, rows, info)

    monkeypatch.setattr(store, "write_part", disk_fills)
    assert main(["sweep", str(plan), "--module", USER_CASES, "--results", str(tmp_path / "out"), "--no-progress", "--workers", "1"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    (run,) = (tmp_path / "out" / "accuracy").glob("2*")
    assert "No space left on device" in line and "free some space" in line and f"--resume {run.name}" in line
    monkeypatch.setattr(store, "write_part", real)
    assert main(["sweep", "--resume", run.name, "--results", str(tmp_path / "out"), "--no-progress", "--workers", "1"]) == 0
    assert store.read_meta(run).status == "complete"
