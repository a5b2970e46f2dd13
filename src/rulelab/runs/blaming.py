"""The phase every sweep ends with: why its failing results fail.

The worst input of each result over 4 ULP or with wrong non-finite values is localized
(``rulelab.scoring.blame``: the operation and source line that lose the digits) where
the results were computed, through the run's executors, and the run gets its
``blame.parquet``. It reads only the run's tables, so a resumed run redoes it whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rulelab import store
from rulelab.runs import lifecycle
from rulelab.runs.executors import Options, Target, progress_bar, run_items
from rulelab.scoring.blame import blame_job, blame_jobs
from rulelab.store.vocabulary import KEYS


def blame_run(session: lifecycle.Session, tables: Mapping[str, Any], dtypes: tuple[str, ...], options: Options) -> None:
    """Localize the worst inputs of every failing result (``scoring.blame``) and write
    the run's blame table; each result is localized where the tasks ran (a process of
    the pool on a CPU backend)."""
    jobs = blame_jobs(tables["summary"], tables["worst"], options.backend)
    rows: list[dict[str, Any]] = []
    with progress_bar(len(jobs), "blame", "result", options) as bar:

        def write(i: int, result: list[dict[str, Any]]) -> None:
            rows.extend(result)
            bar.update(1)

        run_items(blame_job, lambda i: jobs[i], list(range(len(jobs))), Target(options.backend, dtypes, options.compile_cache),
                  write=write, workers=options.workers, describe=lambda i: f"the blame of {jobs[i][0]} {jobs[i][1]} {jobs[i][2]}",
                  resume_hint=f"the tables are kept: continue with {session.resume_command()}")
    rows.sort(key=lambda r: (*(r[k] for k in KEYS), r["rank"]))
    store.write_blame(session.run, rows)
