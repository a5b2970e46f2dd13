"""Where a study's time goes: ``rulelab study`` cold and warm, and ``rulelab report`` alone.

Run from the repository root (any checkout; ``--python`` picks the interpreter that has
it installed)::

    python bench/phases.py                    # quick plan: cold, warm, report
    python bench/phases.py --plan default --runs warm

Each run gets a fresh results folder; "cold" also gets a fresh ``RULELAB_CACHE`` (no
references, no compiled programs), "warm" reuses the cold run's cache. Prints wall
seconds per command, the sweep's phases and, inside the tasks, the core-seconds of
compilation and evaluation (summed over worker processes), as recorded in the run's
meta.json, then the seconds of the study's timings and of its report. Wall-clock numbers depend on the machine and its load: compare only numbers
taken in one sitting. This is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def newest_meta(results: Path) -> dict:
    """meta.json of the newest run under ``results``."""
    metas = sorted((results / "accuracy").glob("*/meta.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(metas[-1].read_text()) if metas else {}


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Wall seconds of ``cmd``; its output goes to ``log``; a failure stops the script."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc:
        sys.exit(f"{' '.join(cmd)} exited {rc}; see {log}")
    return wall


def describe(label: str, wall: float, meta: dict) -> None:
    phases = {k: round(v, 1) for k, v in (meta.get("phases") or {}).items()}
    secs = {k: round(v, 1) for k, v in (meta.get("task_seconds") or {}).items()}
    print(f"{label}: {wall:.1f} s wall")
    if phases:
        print(f"  sweep phases (s): {phases}")
        print(f"  inside tasks (core-s): {secs}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", default="quick", help="plan name or TOML path (default: quick)")
    ap.add_argument("--runs", nargs="+", default=["cold", "warm", "report"], choices=["cold", "warm", "report"],
                    help="what to run, in order (default: cold warm report)")
    ap.add_argument("--python", default=sys.executable, help="interpreter with rulelab installed")
    ap.add_argument("--work", default=None, help="folder for caches, results and logs (default: a new temporary one)")
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="rulelab-phases-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RULELAB_CACHE": str(work / "cache")}
    print(f"plan {args.plan}; work folder {work}")
    for i, what in enumerate(args.runs):
        results, reports = work / f"results{i}", work / f"reports{i}"
        if what == "report":
            last = work / f"results{i - 1}" if i else Path("results")
            wall = timed([args.python, "-m", "rulelab", "report", "--results", str(last), "--reports", str(reports)], env, work / f"{i}-report.log")
            describe("report", wall, {})
            continue
        if what == "cold":
            env["RULELAB_CACHE"] = str(work / f"cache{i}")
        cmd = [args.python, "-m", "rulelab", "study", "--plan", args.plan, "--results", str(results), "--reports", str(reports), "--no-progress"]
        wall = timed(cmd, env, work / f"{i}-{what}.log")
        describe(f"study {what}", wall, newest_meta(results))
        after_sweep(work / f"{i}-{what}.log")
        if what == "cold":
            compile_per_case(results)


def after_sweep(log: Path) -> None:
    """The study's phases after its sweep, as its log states them: the timings and the report."""
    for line in log.read_text().splitlines():
        if line.startswith("study: timings of") or (line.startswith("report: ") and line.endswith(" s)")):
            print(f"  {line}")


def compile_per_case(results: Path) -> None:
    """The compile seconds of the newest run under ``results`` per case, most first."""
    import pandas as pd

    runs = sorted((results / "accuracy").glob("*/summary.parquet"), key=lambda p: p.stat().st_mtime)
    if runs:
        per_case = pd.read_parquet(runs[-1]).groupby("case")["compile_s"].sum().sort_values(ascending=False)
        print("  compile core-s per case: " + ", ".join(f"{c} {s:.1f}" for c, s in per_case.items()))


if __name__ == "__main__":
    main()
