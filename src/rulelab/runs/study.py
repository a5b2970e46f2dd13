"""`rulelab study`: the main job. A sweep and a quick timing of every variant with the
benchmarks' own measuring code (``rulelab.jaxrun.cost``, in this process: no asv environment or
git checkout needed); the command then writes the HTML report.

The timings go into the run folder as ``timings.parquet`` so the report can show them
beside the accuracy results.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from rulelab import store
from rulelab.core.fingerprint import fingerprint
from rulelab.core.shelf import digest
from rulelab.model.case import Case, get_case
from rulelab.runs import result_cache
from rulelab.runs.executors import Options, progress_bar
from rulelab.store.vocabulary import MEASURED_AT, Status

TIMING_TRANSFORMS: tuple[str, ...] = ("value", "grad")
TIMING_DTYPE = "float32"
TIMING_SIZE = 4096
"""What the quick timing covers: every variant's value and first derivative (in the first
argument) on 4096 float32 points, enough that the call is not pure dispatch."""


def _timing_keys(cases: Sequence[Case], backend: str | None) -> dict[tuple[str, str, str], str]:
    """Each timing's key in the cache: the run's settings and the code that times, the
    case, the variant's fingerprint, the transform and the size."""
    from rulelab.jaxrun import cost

    settings = result_cache.settings_key(backend, fingerprint(cost.target, cost.measure, timing_rows))
    return {(c.name, v, t): digest(settings, c.name, v, fingerprint(c.variants[v].fn), t, c.args[0], TIMING_DTYPE, TIMING_SIZE)
            for c in cases for v in c.variants for t in TIMING_TRANSFORMS}


def timing_rows(cases: Sequence[Case], backend: str | None = None, progress: Callable[[int], None] | None = None,
                cache: bool = True, retime: bool = False) -> pd.DataFrame:
    """One row per case x variant x transform: steady-state time, compile time, op counts
    and temporary memory, measured as the asv benchmarks measure them, and when. A
    transform a variant cannot do is a row with status unsupported; a failure is status
    error. With ``cache``, a timing whose variant code, versions and backend are
    unchanged is taken from the cache unless ``retime``, and every new one is kept."""
    from rulelab.core.errors import first_line
    from rulelab.jaxrun import backend as backends
    from rulelab.jaxrun import cost
    from rulelab.jaxrun.evaluate import is_unsupported

    shelf = result_cache.shelf("timings", backends.facts_here(backend, (TIMING_DTYPE,))) if result_cache.enabled(cache) else None
    keys = _timing_keys(cases, backend) if shelf else {}
    rows: list[dict[str, Any]] = []
    for case in cases:
        for vname in case.variants:
            for transform in TIMING_TRANSFORMS:
                key = keys.get((case.name, vname, transform))
                kept = shelf.load(key) if shelf and key and not retime else None
                if kept is not None:
                    rows.append(kept)
                    if progress:
                        progress(1)
                    continue
                row: dict[str, Any] = dict(case=case.name, variant=vname, transform=transform, arg=case.args[0],
                                           dtype=TIMING_DTYPE, size=TIMING_SIZE, backend=backend or "default")
                try:
                    t = cost.target(case, vname, transform, dtype=TIMING_DTYPE, size=TIMING_SIZE, backend=backend)
                    c = cost.measure(t, repeat=3, min_time=0.01)
                    row.update(status=Status.OK.value, message="", time_s=c.timing.best if c.timing else float("nan"),
                               compile_ms=c.compile_ms, jaxpr_eqns=c.jaxpr_eqns, hlo_ops=c.hlo_ops,
                               temp_bytes=c.memory.temp_bytes if c.memory else None)
                except Exception as exc:  # noqa: BLE001 - recorded, never fatal
                    row.update(status=(Status.UNSUPPORTED if is_unsupported(exc) else Status.ERROR).value, message=first_line(exc))
                row[MEASURED_AT] = store.now()
                if shelf and key:
                    shelf.save(key, row)
                rows.append(row)
                if progress:
                    progress(1)
    df = pd.DataFrame(rows)
    naive = df[(df["variant"] == "naive") & (df["status"] == "ok")].set_index(["case", "transform"])["time_s"]
    key = pd.MultiIndex.from_frame(df[["case", "transform"]])
    df["ratio_to_naive"] = df["time_s"].to_numpy() / naive.reindex(key).to_numpy()
    return df


def run_study(
    plan: str = "quick",
    results: str | Path = "results",
    modules: Sequence[str] = (),
    backend: str | None = None,
    workers: int | None = None,
    timings: bool = True,
    progress: bool = True,
    max_points: int | None = None,
    scheduler: str | None = None,
    cache: bool = True,
    retime: bool = False,
) -> Path:
    """Sweep ``plan`` (on the dask cluster at ``scheduler`` if given) and time every
    variant here; returns the run folder (its report is the caller's to write).
    ``cache`` False measures everything (``result_cache``); ``retime`` re-times every
    variant even where its timing is kept."""
    from rulelab.model.modules import load_modules
    from rulelab.model.plan import load_plan
    from rulelab.model.tasks import plan_tasks
    from rulelab.runs import sampled as sweep

    load_modules(modules)
    p = load_plan(plan)
    options = Options(backend=backend, workers=workers, progress=progress, scheduler=scheduler, result_cache=result_cache.enabled(cache))
    if max_points is not None:
        options = replace(options, max_points=max_points)
    run = sweep.start(p, results, modules, options,
                      on_start=lambda r: print(f"study: sweeping plan {p.name!r} into {r}", file=sys.stderr))
    if timings:
        cases = [get_case(name) for name in dict.fromkeys(t.case for t in plan_tasks(p))]
        total = sum(len(c.variants) for c in cases) * len(TIMING_TRANSFORMS)
        t0 = time.perf_counter()
        with progress_bar(total, "timing", "variant", options) as bar:
            df = timing_rows(cases, backend, progress=bar.update, cache=options.result_cache, retime=retime)
        store.write_timings(run, df)
        print(f"study: timings of {total} variant transforms in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return run

