"""The phase every sweep ends with: why its failing results fail.

The worst inputs of each result over 4 ULP or with wrong non-finite values are localized
(``rulelab.scoring.blame``: the operation and source line that lose the digits) where
the results were computed, through the run's executors, and the run gets its
``blame.parquet``. It reads only the run's tables, so a resumed run redoes it whole.
Where the group a result belongs to has a key in the cache of measured results
(``result_cache``), its blame rows are kept and served under that key too, and checked
the same way.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rulelab import store
from rulelab.core.fingerprint import fingerprint
from rulelab.core.shelf import digest
from rulelab.runs import lifecycle, result_cache
from rulelab.runs.executors import Options, Target, progress_bar, run_items
from rulelab.scoring.blame import Job, blame_job, blame_jobs
from rulelab.store.vocabulary import KEYS

GroupKeys = Mapping[tuple[str, str], str]
"""(case, dtype) -> the key of that group's measured results in the cache."""


def _where_code_lives(modules: Sequence[str]) -> list[str | None]:
    """The files a blame row names lines of: rulelab's, JAX's and the user modules'
    (the same code in another checkout or environment is blamed at other paths)."""
    jax = importlib.util.find_spec("jax")
    return [str(Path(__file__).resolve().parents[1]), jax.origin if jax else None, *modules]


def _job_keys(jobs: Sequence[Job], groups: GroupKeys, modules: Sequence[str]) -> list[str | None]:
    """Each job's cache key: its group's key, the code that blames and where the code
    lives, and the job (its result and inputs); None where its group has no key."""
    code = digest(fingerprint(blame_job), _where_code_lives(modules))
    return [digest(groups[(j[0], j[4])], code, j[:5], j[6:]) if (j[0], j[4]) in groups else None for j in jobs]


def blame_run(session: lifecycle.Session, tables: Mapping[str, Any], dtypes: tuple[str, ...], options: Options,
              groups: GroupKeys | None = None) -> dict[str, Any] | None:
    """Localize the worst inputs of every failing result (``scoring.blame``) and write
    the run's blame table; each result is localized where the tasks ran (a process of
    the pool on a CPU backend). With ``groups``, jobs are served from and kept in the
    cache, a sample of them checked as groups are; returns the cache's record."""
    jobs = blame_jobs(tables["summary"], tables["worst"], options.backend)
    found: dict[int, list[dict[str, Any]]] = {}
    cache = None
    if groups and session.meta.backend:
        cache = result_cache.Use("blame", _job_keys(jobs, groups, session.meta.modules), result_cache.rows_difference)
        found.update(cache.begin(session.meta.backend))
    target = Target(options.backend, dtypes, options.compile_cache)
    with progress_bar(len(jobs), "blame", "result", options, initial=len(found)) as bar:

        def compute(todo: list[int], use: result_cache.Use | None) -> None:
            def write(i: int, result: list[dict[str, Any]]) -> None:
                found[i] = result
                if use is not None:
                    use.record(i, result, f"{jobs[i][0]} {jobs[i][1]} {jobs[i][2]} ({jobs[i][4]})")
                bar.update(1)

            if todo:
                run_items(blame_job, lambda i: jobs[i], todo, target, write=write, workers=options.workers,
                          describe=lambda i: f"the blame of {jobs[i][0]} {jobs[i][1]} {jobs[i][2]}",
                          resume_hint=f"the tables are kept: continue with {session.resume_command()}")

        compute([i for i in range(len(jobs)) if i not in found], cache)
        if cache is not None and cache.mismatch:
            print(cache.mismatch, file=options.stream or sys.stderr)
            again = sorted(cache.recover())
            fill = result_cache.Use("blame", cache.keys, result_cache.rows_difference)
            fill.begin(session.meta.backend)  # (nothing is left to serve: every entry of the backend was discarded)
            compute(again, fill)
    rows = [r for i in sorted(found) for r in found[i]]
    rows.sort(key=lambda r: (*(r[k] for k in KEYS), r["rank"]))
    store.write_blame(session.run, rows)
    return cache.stats() if cache is not None else None
