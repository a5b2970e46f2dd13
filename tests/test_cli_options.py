"""The command line's shared options: a closed pipe ends a command quietly, one meaning
of --results and --reports, and the earlier --out still works with a note."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import Spec, rulelab, write_run

from rulelab.cli import EXIT_BROKEN_PIPE, build_parser, main


@pytest.mark.slow
def test_a_closed_pipe_ends_the_command_quietly(env):
    proc = subprocess.Popen([sys.executable, "-m", "rulelab", "cases"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before anything is written, as with `| head -0`
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == EXIT_BROKEN_PIPE == 141
    assert err == b""
    shell = subprocess.run("set -o pipefail; python -m rulelab cases | head -1", shell=True, executable="/bin/bash",
                           capture_output=True, env={**env, "PATH": f"{sys.prefix}/bin:{env.get('PATH', '')}"})
    assert shell.stdout.startswith(b"case") and shell.stdout.count(b"\n") == 1 and shell.stderr == b""


def test_results_and_reports_mean_the_same_in_every_command():
    parser = build_parser()
    sweep = parser.parse_args(["sweep", "quick", "--results", "R"])
    report = parser.parse_args(["report", "--results", "R", "--reports", "H"])
    study = parser.parse_args(["study", "--results", "R", "--reports", "H"])
    assert sweep.results == report.results == study.results == "R" and report.reports == study.reports == "H"
    assert "--out" not in parser._subparsers._group_actions[0].choices["sweep"].format_help()


def test_the_earlier_out_still_works_with_a_note(tmp_path, capsys):
    write_run(tmp_path / "results" / "accuracy" / "r1", [Spec("toy", "naive", "value")])
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "html"), "--workers", "1"]) == 0
    assert (tmp_path / "html" / "index.html").is_file()
    assert "rulelab report --out is now --reports" in capsys.readouterr().err


@pytest.mark.slow
def test_study_backends_are_the_sweeps(env):
    res = rulelab("study", "--backend", "nope", env=env)
    assert res.returncode == 2 and "choose from 'cpu', 'gpu', 'tpu'" in res.stderr
