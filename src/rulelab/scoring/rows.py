"""One task's rows of each result table (see :mod:`rulelab.store`), from what the variant
computed and the reference: summary counts, per-binade aggregates, worst inputs and a
thinned set of points for plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from rulelab.jaxrun.evaluate import Outcome
from rulelab.model.case import Case
from rulelab.model.inputs import Sweep
from rulelab.model.tasks import Task
from rulelab.scoring.binning import cells_table
from rulelab.scoring.metrics import (
    FlushReference,
    binned,
    point_errors,
    summarize,
    worst,
)
from rulelab.store.vocabulary import KEYS, POINT_INPUTS, Bucket, Status

Rows = dict[str, dict[str, Any]]
"""Table name -> column name -> values (all columns of a table the same length)."""


def input_columns(points: Sequence[np.ndarray], idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Input columns in0, in1, in2 (in3 … for more arguments) as float64, NaN where the
    case has fewer arguments; ``idx`` selects points."""
    n = len(points[0]) if idx is None else len(idx)
    cols = {}
    for i in range(max(len(POINT_INPUTS), len(points))):
        if i < len(points):
            x = np.asarray(points[i]).astype(np.float64)
            cols[f"in{i}"] = x if idx is None else x[idx]
        else:
            cols[f"in{i}"] = np.full(n, np.nan)
    return cols


def thin(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` points spread evenly over ``x`` in sorted order (stable,
    so the choice is deterministic)."""
    order = np.argsort(np.asarray(x, dtype=np.float64), kind="stable")
    if len(order) <= k:
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, k).round().astype(np.int64))]


def key_columns(task: Task, backend: str, n: int) -> dict[str, list[str]]:
    """The key columns of ``n`` rows of one task."""
    values = (task.case, task.variant, task.transform, task.arg, task.dtype, backend)
    return {k: [v] * n for k, v in zip(KEYS, values)}


def summary_row(task: Task, case: Case, outcome: Outcome, n_points: int, stats: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The one summary row of a result: its status and what explains it (message, notes,
    the case's conventions for this derivative, compile and run seconds) and, for a
    measured result, the statistics of its points (``metrics.summarize``'s columns and
    the wrong NaN and inf counts), however they were aggregated."""
    conventions = "; ".join(c.note for c in case.conventions_for(task.arg, task.order)) if task.order else ""
    return {
        "status": Status(outcome.status).value,
        "message": outcome.message,
        "n_points": n_points,
        "notes": "; ".join(outcome.notes),
        "conventions": conventions,
        "compile_s": outcome.compile_s,
        "run_s": outcome.run_s,
        **(stats or {}),
    }


def task_rows(
    task: Task,
    case: Case,
    sweep: Sweep,
    outcome: Outcome,
    ref: tuple[np.ndarray, np.ndarray] | None,
    backend: str,
    *,
    rounded: np.ndarray | None = None,
    flush: FlushReference | None = None,
    n_worst: int = 10,
    n_samples: int = 400,
) -> Rows:
    """The rows ``task`` adds to each table. ``ref`` is (hi, lo) at the sweep's points,
    ``rounded`` the same rounded to the task's dtype when already known, ``flush`` the
    flush-aware reference where the backend flushes the dtype. A result that
    is not ``ok`` has a summary row only."""
    if outcome.status != Status.OK or outcome.values is None or ref is None:
        row = summary_row(task, case, outcome, len(sweep))
        return {"summary": {**key_columns(task, backend, 1), **{k: [v] for k, v in row.items()}}, "binned": {}, "binned2": {}, "worst": {}, "samples": {}}
    hi, lo = ref
    values = outcome.values
    errors = point_errors(values, hi, lo, task.dtype, rounded, flush)
    wrong = errors.bucket == Bucket.WRONG_NONFINITE
    wrong_nan = int(np.isnan(values.astype(np.float64)[wrong]).sum())
    row = summary_row(task, case, outcome, len(sweep), {**summarize(errors), "wrong_nan": wrong_nan, "wrong_inf": int(wrong.sum()) - wrong_nan})

    pos = case.args.index(task.arg) if task.arg else 0
    x = sweep.points[pos].astype(np.float64)
    idx = thin(x, n_samples)
    samples = {"points": [p[idx] for p in sweep.points], "computed": values.astype(np.float64)[idx], "ref_hi": hi[idx], "dulp": errors.dulp[idx]}
    cells = cells_table(sweep.points, errors) if len(case.args) == 2 else None
    return result_rows(task, case, backend, row, binned(x, errors), worst(sweep.points, values, hi, lo, errors, k=n_worst), samples, cells)


def result_rows(task: Task, case: Case, backend: str, row: dict[str, Any], b: pd.DataFrame, w: pd.DataFrame, samples: dict[str, Any],
                cells: pd.DataFrame | None = None) -> Rows:
    """The rows of one result in each table, from its summary ``row``, its per-binade
    aggregates ``b`` (``metrics.binned``'s columns), its error map ``cells``
    (``binning.cells_table``'s, for a case of two arguments), its worst points ``w``
    (``metrics.worst``'s) and its samples (input arrays under ``points``, and the
    computed value, reference and dULP at them)."""
    pos = case.args.index(task.arg) if task.arg else 0
    n = len(samples["dulp"])
    return {
        "summary": {**key_columns(task, backend, 1), **{k: [v] for k, v in row.items()}},
        "binned": {
            **key_columns(task, backend, len(b)),
            "binade_of": [case.args[pos]] * len(b),
            **{c: b[c].to_numpy() for c in b.columns},
        },
        "binned2": {} if cells is None else {**key_columns(task, backend, len(cells)), **{c: cells[c].to_numpy() for c in cells.columns}},
        "worst": {
            **key_columns(task, backend, len(w)),
            "rank": np.arange(len(w)),
            **input_columns([w[f"in{i}"].to_numpy() for i in range(len(case.args))]),
            "args": [",".join(case.args)] * len(w),
            **{c: w[c].to_numpy() for c in ("computed", "ref_hi", "ref_lo", "dulp", "dulp_ieee", "flushed", "frac_ulp")},
            "bucket": list(w["bucket"]),
        },
        "samples": {
            **key_columns(task, backend, n),
            **input_columns(samples["points"]),
            **{c: np.asarray(samples[c]) for c in ("computed", "ref_hi", "dulp")},
        },
    }
